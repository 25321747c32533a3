/*
 * api_sink.c - Telnyx Call Control API stand-in for benchmarks (see
 * api_sink.h).  Used by bench/loadgen in end-to-end runs.
 */
#include "api_sink.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>

struct api_sink {
    struct mg_context *ctx;
    _Atomic uint64_t *arrival;      /* [n] first answer, tg_mono_ns */
    size_t n;
    _Atomic uint64_t commands;
};

/* Index of "bench-<run>-<index>" (the digits after the last '-'), or -1. */
static long ccid_index(const char *ccid, size_t len)
{
    size_t plen = strlen(API_SINK_CCID_PREFIX);
    if (len <= plen || memcmp(ccid, API_SINK_CCID_PREFIX, plen) != 0)
        return -1;
    size_t i = len;
    while (i > 0 && ccid[i - 1] >= '0' && ccid[i - 1] <= '9')
        i--;
    if (i == len || i == 0 || ccid[i - 1] != '-' || len - i > 12)
        return -1;
    long v = 0;
    for (; i < len; i++)
        v = v * 10 + (ccid[i] - '0');
    return v;
}

static int on_command(struct mg_connection *c, void *arg)
{
    struct api_sink *s = arg;
    uint64_t now = tg_mono_ns();
    const struct mg_request_info *ri = mg_get_request_info(c);
    char buf[4096];

    while (mg_read(c, buf, sizeof buf) > 0)
        ;
    atomic_fetch_add(&s->commands, 1);
    /* /v2/calls/{ccid}/actions/{action} */
    const char *p = strstr(ri->local_uri, "/calls/");
    const char *a = p ? strstr(p + 7, "/actions/") : NULL;
    if (!p || !a || strcmp(ri->request_method, "POST") != 0) {
        mg_send_http_error(c, 404, "not a call control command");
        return 404;
    }
    if (strcmp(a + 9, "answer") == 0) {
        long i = ccid_index(p + 7, (size_t)(a - (p + 7)));
        if (i >= 0 && (size_t)i < s->n) {
            uint64_t zero = 0;
            atomic_compare_exchange_strong(&s->arrival[i], &zero, now);
        }
    }
    static const char ok[] = "{\"data\":{\"result\":\"ok\"}}";
    mg_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
              sizeof ok - 1, ok);
    return 200;
}

int api_sink_start(uint16_t port, int threads, size_t n, struct api_sink **out, char *err)
{
    char listen[32], nthreads[16];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)port);
    snprintf(nthreads, sizeof nthreads, "%d", threads);
    const char *options[] = {
        "listening_ports", listen, "num_threads", nthreads, "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000", "request_timeout_ms", "5000", NULL,
    };
    struct api_sink *s = xcalloc(1, sizeof *s);
    s->n = n;
    s->arrival = xcalloc(n ? n : 1, sizeof *s->arrival);
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    s->ctx = mg_start(&cb, s, options);
    if (!s->ctx) {
        free(s->arrival);
        free(s);
        return tg_err(err, "api sink: cannot serve HTTP on %s", listen);
    }
    mg_set_request_handler(s->ctx, "/", on_command, s);
    *out = s;
    return 0;
}

uint64_t api_sink_arrival_ns(const struct api_sink *s, size_t i)
{
    return i < s->n ? atomic_load(&s->arrival[i]) : 0;
}

uint64_t api_sink_commands(const struct api_sink *s)
{
    return atomic_load(&s->commands);
}

void api_sink_stop(struct api_sink **s)
{
    if (!*s)
        return;
    mg_stop((*s)->ctx);
    free((*s)->arrival);
    free(*s);
    *s = NULL;
}
