/*
 * loadgen.c - HTTP load generator for the telgate benchmarks: POSTs
 * pre-signed Telnyx call.initiated webhooks to an ingress (or the reference
 * server), closed-loop for throughput or open-loop at a fixed rate for
 * latency, optionally with the Call Control API sink for end-to-end latency.
 * Prints one JSON object on stdout.  Run by bench/run.py.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <sodium.h>

#include "api_sink.h"
#include "bench_common.h"
#include "util.h"

#define LG_MAX_CONNS 1024
#define LG_MAX_REQUESTS 2000000
#define LG_IO_TIMEOUT_S 10
#define LG_RESP_MAX 16384
#define SINK_THREADS 96           /* Call Control API sink workers */

struct lg_opts {
    uint16_t port, sink_port;
    int conns;
    bool keepalive;
    double rate;                /* 0 = closed loop */
    double duration_s;
    size_t max_requests;
    const char *seed_file;
    const char *run;
    double sink_wait_s;
    size_t body_bytes;
};

struct lg_req {
    char *buf;                  /* whole HTTP request */
    size_t len;
};

struct lg {
    struct lg_opts o;
    struct lg_req *reqs;
    size_t n;
    uint64_t *sched_ns;         /* [n] when request i was due (open) or sent (closed) */
    uint64_t *lat_ns;           /* [n] response time from sched_ns */
    uint16_t *status;           /* [n] 0 = not sent or failed */
    _Atomic size_t next;
    uint64_t t0_ns, deadline_ns;
    _Atomic uint64_t errors;
};

static int lg_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = LG_IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Close without TIME_WAIT (RST), so new-connection runs do not exhaust
 * ephemeral ports. */
static void lg_close(int *fd)
{
    if (*fd < 0)
        return;
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(*fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(*fd);
    *fd = -1;
}

/* Send one request and read one whole response.  Returns the HTTP status,
 * or -1 on a connection error; *close_after when the server ends the
 * connection. */
static int lg_exchange(int fd, const struct lg_req *r, bool *close_after)
{
    char resp[LG_RESP_MAX + 1];
    size_t got = 0;

    if (tg_write_all(fd, r->buf, r->len) != 0)
        return -1;
    char *hdr_end = NULL;
    while (!hdr_end) {
        if (got == LG_RESP_MAX)
            return -1;
        ssize_t k = recv(fd, resp + got, LG_RESP_MAX - got, 0);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)k;
        resp[got] = '\0';
        hdr_end = strstr(resp, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t body_len = 0;
    *close_after = false;
    for (char *line = strstr(resp, "\r\n"); line && line < hdr_end; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "Content-Length:", 15) == 0)
            body_len = strtoul(h + 15, NULL, 10);
        else if (strncasecmp(h, "Connection:", 11) == 0 && strcasestr(h, "close") &&
                 strcasestr(h, "close") < strstr(h, "\r\n"))
            *close_after = true;
    }
    size_t have = got - (size_t)(hdr_end + 4 - resp);
    while (have < body_len) {
        char sink[4096];
        size_t want = body_len - have < sizeof sink ? body_len - have : sizeof sink;
        ssize_t k = recv(fd, sink, want, 0);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            return -1;
        }
        have += (size_t)k;
    }
    return status;
}

static void *lg_worker(void *arg)
{
    struct lg *g = arg;
    int fd = -1;

    for (;;) {
        size_t i = atomic_fetch_add(&g->next, 1);
        if (i >= g->n)
            break;
        uint64_t due;
        if (g->o.rate > 0) {
            due = g->t0_ns + (uint64_t)((double)i * 1e9 / g->o.rate);
            bench_sleep_until_ns(due);
        } else {
            due = tg_mono_ns();
            if (due >= g->deadline_ns)
                break;
        }
        g->sched_ns[i] = due;
        int status = -1;
        bool close_after = false;
        for (int attempt = 0; attempt < 2 && status < 0; attempt++) {
            /* A kept-alive connection the server closed in between: retry once. */
            bool fresh = fd < 0;
            if (fd < 0 && (fd = lg_connect(g->o.port)) < 0)
                break;
            status = lg_exchange(fd, &g->reqs[i], &close_after);
            if (status < 0) {
                lg_close(&fd);
                if (fresh)
                    break;
            }
        }
        if (status < 0) {
            atomic_fetch_add(&g->errors, 1);
            continue;
        }
        g->lat_ns[i] = tg_mono_ns() - due;
        g->status[i] = (uint16_t)status;
        if (close_after || !g->o.keepalive)
            lg_close(&fd);
    }
    lg_close(&fd);
    return NULL;
}

static int lg_read_seed(const char *path, uint8_t sk[crypto_sign_SECRETKEYBYTES], char *err)
{
    char *text = NULL;
    size_t len = 0, n = 0;
    uint8_t seed[64], pk[crypto_sign_PUBLICKEYBYTES];

    if (tg_read_file(path, 1024, &text, &len, err) != 0)
        return -1;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    int rc = tg_b64_decode(text, len, seed, sizeof seed, &n);
    free(text);
    if (rc != 0 || n != crypto_sign_SEEDBYTES)
        return tg_err(err, "%s: not the base64 of a 32-byte Ed25519 seed", path);
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
    return 0;
}

/* Build and sign every request before the timed run. */
static void lg_prepare(struct lg *g, const uint8_t sk[crypto_sign_SECRETKEYBYTES])
{
    char body[8192], id[96], ccid[96], ts[24];
    uint8_t sig[crypto_sign_BYTES];
    size_t mcap = sizeof body + sizeof ts + 2;
    unsigned char *msg = xmalloc(mcap);

    snprintf(ts, sizeof ts, "%llu", (unsigned long long)(tg_now_ms() / 1000));
    for (size_t i = 0; i < g->n; i++) {
        snprintf(id, sizeof id, "%s-%08zx-4000-8000-%012zx", g->o.run, i, i);
        snprintf(ccid, sizeof ccid, API_SINK_CCID_PREFIX "%s-%zu", g->o.run, i);
        struct bench_call c = {.id = id, .ccid = ccid, .from = "+13125550100", .to = "+13125550199"};
        size_t blen = bench_webhook_body(&c, g->o.body_bytes, body, sizeof body);
        if (blen == 0) {
            fprintf(stderr, "loadgen: webhook body does not fit %zu bytes\n", sizeof body);
            exit(1);
        }
        int ml = snprintf((char *)msg, mcap, "%s|", ts);
        memcpy(msg + ml, body, blen);
        crypto_sign_detached(sig, NULL, msg, (size_t)ml + blen, sk);
        char *sig64 = tg_b64_encode(sig, sizeof sig);
        g->reqs[i].buf = xasprintf("POST /webhooks/telnyx HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   "User-Agent: telnyx-webhooks\r\nContent-Type: application/json\r\n"
                                   "telnyx-signature-ed25519: %s\r\ntelnyx-timestamp: %s\r\n"
                                   "Content-Length: %zu\r\n%s\r\n%.*s",
                                   sig64, ts, blen, g->o.keepalive ? "" : "Connection: close\r\n",
                                   (int)blen, body);
        g->reqs[i].len = strlen(g->reqs[i].buf);
        free(sig64);
    }
    free(msg);
}

static void lg_usage(void)
{
    fprintf(stderr,
            "usage: loadgen --port P --seed-file F [--conns C] [--keepalive 0|1] [--rate R]\n"
            "               [--duration S] [--max N] [--sink-port Q] [--sink-wait S] [--run TAG]\n"
            "               [--body-bytes B]\n"
            "  --rate 0 (default): closed loop, C connections back to back for S seconds\n"
            "  --rate R: open loop, R*S requests sent on a fixed schedule over C connections;\n"
            "            latency is measured from the scheduled send time\n"
            "  --sink-port: serve the Call Control API sink there and report end-to-end latency\n");
    exit(2);
}

static double lg_num(const char *name, const char *v, double min, double max)
{
    char *end = NULL;
    double d = strtod(v, &end);
    if (!end || *end || d < min || d > max) {
        fprintf(stderr, "loadgen: %s: '%s' is not a number in [%g, %g]\n", name, v, min, max);
        exit(2);
    }
    return d;
}

static void lg_parse(int argc, char **argv, struct lg_opts *o)
{
    static const struct option longs[] = {
        {"port", 1, 0, 'p'}, {"conns", 1, 0, 'c'}, {"keepalive", 1, 0, 'k'}, {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'}, {"max", 1, 0, 'm'}, {"seed-file", 1, 0, 's'}, {"sink-port", 1, 0, 'q'},
        {"sink-wait", 1, 0, 'w'}, {"run", 1, 0, 'R'}, {"body-bytes", 1, 0, 'b'}, {0, 0, 0, 0},
    };
    *o = (struct lg_opts){.conns = 16, .keepalive = true, .duration_s = 5, .max_requests = 100000,
                          .run = "r", .sink_wait_s = 10, .body_bytes = BENCH_BODY_BYTES};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'p': o->port = (uint16_t)lg_num("--port", optarg, 1, 65535); break;
        case 'c': o->conns = (int)lg_num("--conns", optarg, 1, LG_MAX_CONNS); break;
        case 'k': o->keepalive = lg_num("--keepalive", optarg, 0, 1) != 0; break;
        case 'r': o->rate = lg_num("--rate", optarg, 0, 1e6); break;
        case 'd': o->duration_s = lg_num("--duration", optarg, 0.1, 120); break;
        case 'm': o->max_requests = (size_t)lg_num("--max", optarg, 1, LG_MAX_REQUESTS); break;
        case 's': o->seed_file = optarg; break;
        case 'q': o->sink_port = (uint16_t)lg_num("--sink-port", optarg, 1, 65535); break;
        case 'w': o->sink_wait_s = lg_num("--sink-wait", optarg, 0, 60); break;
        case 'R': o->run = optarg; break;
        case 'b': o->body_bytes = (size_t)lg_num("--body-bytes", optarg, 0, 6000); break;
        default: lg_usage();
        }
    }
    if (optind != argc || !o->port || !o->seed_file)
        lg_usage();
}

/* Wait (bounded by sink_wait_s) until every accepted call's answer reached
 * the sink; collect the end-to-end latencies.  Returns how many are missing. */
static size_t lg_collect_e2e(const struct lg *g, const struct api_sink *sink, uint64_t *e2e, size_t *n_e2e)
{
    size_t accepted = 0, arrived = 0;
    uint64_t deadline = tg_mono_ns() + (uint64_t)(g->o.sink_wait_s * 1e9);
    for (size_t i = 0; i < g->n; i++)
        accepted += g->status[i] == 200;
    for (;;) {
        arrived = 0;
        for (size_t i = 0; i < g->n; i++)
            arrived += g->status[i] == 200 && api_sink_arrival_ns(sink, i) != 0;
        if (arrived == accepted || tg_mono_ns() >= deadline)
            break;
        struct timespec ts = {.tv_nsec = 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *n_e2e = 0;
    for (size_t i = 0; i < g->n; i++) {
        uint64_t a = api_sink_arrival_ns(sink, i);
        if (g->status[i] == 200 && a)
            e2e[(*n_e2e)++] = a > g->sched_ns[i] ? a - g->sched_ns[i] : 0;
    }
    return accepted - arrived;
}

int main(int argc, char **argv)
{
    struct lg g;
    char err[ERR_LEN];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];

    memset(&g, 0, sizeof g);
    lg_parse(argc, argv, &g.o);
    if (sodium_init() < 0) {
        fprintf(stderr, "loadgen: sodium_init failed\n");
        return 1;
    }
    if (lg_read_seed(g.o.seed_file, sk, err) != 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 2;
    }
    g.n = g.o.max_requests;
    if (g.o.rate > 0) {
        double want = g.o.rate * g.o.duration_s;
        if (want < (double)g.n)
            g.n = (size_t)want;
    }
    g.reqs = xcalloc(g.n, sizeof *g.reqs);
    g.sched_ns = xcalloc(g.n, sizeof *g.sched_ns);
    g.lat_ns = xcalloc(g.n, sizeof *g.lat_ns);
    g.status = xcalloc(g.n, sizeof *g.status);
    lg_prepare(&g, sk);
    sodium_memzero(sk, sizeof sk);

    struct api_sink *sink = NULL;
    /* CivetWeb holds a thread per keep-alive connection: the sink needs more
     * threads than the actuator keeps connections (64), or the surplus waits
     * for a keep-alive timeout, as it would not at Telnyx. */
    if (g.o.sink_port && api_sink_start(g.o.sink_port, SINK_THREADS, g.n, &sink, err) != 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 1;
    }

    pthread_t th[LG_MAX_CONNS];
    g.t0_ns = tg_mono_ns() + 50 * 1000 * 1000;   /* let every thread get ready */
    g.deadline_ns = g.t0_ns + (uint64_t)(g.o.duration_s * 1e9);
    for (int i = 0; i < g.o.conns; i++)
        if (pthread_create(&th[i], NULL, lg_worker, &g) != 0) {
            fprintf(stderr, "loadgen: pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < g.o.conns; i++)
        pthread_join(th[i], NULL);
    uint64_t t_end = tg_mono_ns();

    size_t sent = 0, s200 = 0, s503 = 0, other = 0, first = g.n, last = 0;
    uint64_t *ok_lat = xcalloc(g.n, sizeof *ok_lat);
    for (size_t i = 0; i < g.n; i++) {
        if (!g.sched_ns[i])
            continue;
        if (i < first)
            first = i;
        last = i;
        sent++;
        if (g.status[i] == 200)
            ok_lat[s200++] = g.lat_ns[i];
        else if (g.status[i] == 503)
            s503++;
        else if (g.status[i])
            other++;
    }
    double elapsed = (double)(t_end - g.t0_ns) / 1e9;
    struct bench_pct resp;
    bench_pct_compute(ok_lat, s200, &resp);

    printf("{\"mode\": \"%s\", \"keepalive\": %s, \"conns\": %d, \"rate\": %.0f, \"body_bytes\": %zu, "
           "\"prepared\": %zu, \"sent\": %zu, \"ok\": %zu, \"shed_503\": %zu, \"other_status\": %zu, "
           "\"errors\": %llu, \"elapsed_s\": %.3f, \"ok_per_s\": %.1f, ",
           g.o.rate > 0 ? "open" : "closed", g.o.keepalive ? "true" : "false", g.o.conns, g.o.rate,
           g.o.body_bytes, g.n, sent, s200, s503, other, (unsigned long long)atomic_load(&g.errors),
           elapsed, elapsed > 0 ? (double)s200 / elapsed : 0.0);
    bench_pct_json(stdout, "response", &resp);
    if (g.o.rate > 0 && sent > 0) {
        /* How late the schedule ran: sender lateness hides nothing, it is in the latency. */
        double span = (double)(g.sched_ns[last] - g.sched_ns[first]) / 1e9;
        printf(", \"offered_per_s\": %.1f", span > 0 ? (double)sent / span : 0.0);
    }
    if (sink) {
        uint64_t *e2e = xcalloc(g.n, sizeof *e2e);
        size_t n_e2e = 0;
        size_t missing = lg_collect_e2e(&g, sink, e2e, &n_e2e);
        struct bench_pct pe;
        bench_pct_compute(e2e, n_e2e, &pe);
        printf(", ");
        bench_pct_json(stdout, "e2e", &pe);
        printf(", \"e2e_missing\": %zu, \"sink_commands\": %llu", missing,
               (unsigned long long)api_sink_commands(sink));
        free(e2e);
        api_sink_stop(&sink);
    }
    printf("}\n");
    fflush(stdout);

    for (size_t i = 0; i < g.n; i++)
        free(g.reqs[i].buf);
    free(g.reqs);
    free(g.sched_ns);
    free(g.lat_ns);
    free(g.status);
    free(ok_lat);
    return 0;
}
