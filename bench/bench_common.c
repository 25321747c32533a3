/*
 * bench_common.c - shared benchmark pieces (see bench_common.h): webhook
 * bodies, percentiles, clocks.  Linked into every bench/ program.
 */
#include "bench_common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

size_t bench_webhook_body(const struct bench_call *c, size_t pad_to, char *out, size_t cap)
{
    char now[TG_RFC3339_LEN];
    char headers[1024] = "[]";
    char att[160] = "";

    tg_rfc3339(tg_now_us(), now);
    if (c->token)
        snprintf(headers, sizeof headers, "[{\"name\":\"X-Namespace-Token\",\"value\":\"%s\"}]", c->token);
    if (c->attestation)
        snprintf(att, sizeof att,
                 "\"shaken_stir_attestation\":\"%s\",\"shaken_stir_validated\":true,", c->attestation);
    /* The fields a real call.initiated carries that the gate does not read. */
    const char *filler =
        "\"calling_party_type\":\"pstn\",\"offered_codecs\":\"PCMU,PCMA,G722,G729,OPUS,VP8,H264\","
        "\"connection_codecs\":\"PCMU,PCMA\",\"caller_id_name\":\"BENCHMARK CALLER\","
        "\"connection_id\":\"1684641123236054244\",\"state\":\"parked\",\"tags\":[\"bench\"],"
        "\"sip_headers\":[{\"name\":\"User-Agent\",\"value\":\"Telnyx SIP/2.0 load generator\"},"
        "{\"name\":\"P-Asserted-Identity\",\"value\":\"<sip:+13125550100@sip.telnyx.com>\"}],"
        "\"start_time\":\"";
    int n = snprintf(out, cap,
                     "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"%s\",\"occurred_at\":\"%s\","
                     "\"payload\":{\"call_control_id\":\"%s\",\"call_leg_id\":\"leg-%s\","
                     "\"call_session_id\":\"sess-%s\",\"client_state\":null,\"direction\":\"incoming\","
                     "\"from\":\"%s\",\"to\":\"%s\",%s\"custom_headers\":%s,%s%s\"},"
                     "\"record_type\":\"event\"},\"meta\":{\"attempt\":1,"
                     "\"delivered_to\":\"http://127.0.0.1/webhooks/telnyx\"",
                     c->id, now, c->ccid, c->id, c->id, c->from, c->to, att, headers, filler, now);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    size_t len = (size_t)n;
    /* Pad inside meta with a string field so the body stays a valid envelope. */
    const char *pad_key = ",\"pad\":\"";
    size_t fixed = len + strlen(pad_key) + 3;   /* pad key, closing quote and braces */
    if (pad_to > fixed) {
        size_t pad = pad_to - fixed;
        if (len + strlen(pad_key) + pad + 3 >= cap)
            return 0;
        memcpy(out + len, pad_key, strlen(pad_key));
        len += strlen(pad_key);
        for (size_t i = 0; i < pad; i++)
            out[len++] = (char)('a' + i % 26);
        out[len++] = '"';
    }
    if (len + 2 >= cap)
        return 0;
    out[len++] = '}';
    out[len++] = '}';
    out[len] = '\0';
    return len;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pick_ms(const uint64_t *v, size_t n, double q)
{
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)v[i < n ? i : n - 1] / 1e6;
}

void bench_pct_compute(uint64_t *lat_ns, size_t n, struct bench_pct *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n == 0)
        return;
    qsort(lat_ns, n, sizeof *lat_ns, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat_ns[i];
    out->mean_ms = sum / (double)n / 1e6;
    out->p50_ms = pick_ms(lat_ns, n, 0.50);
    out->p99_ms = pick_ms(lat_ns, n, 0.99);
    out->p999_ms = pick_ms(lat_ns, n, 0.999);
    out->max_ms = (double)lat_ns[n - 1] / 1e6;
}

void bench_pct_json(FILE *f, const char *key, const struct bench_pct *p)
{
    fprintf(f, "\"%s\": {\"n\": %zu, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, "
               "\"max_ms\": %.3f, \"mean_ms\": %.3f}",
            key, p->n, p->p50_ms, p->p99_ms, p->p999_ms, p->max_ms, p->mean_ms);
}

void bench_sleep_until_ns(uint64_t t_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000u), .tv_nsec = (long)(t_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}
