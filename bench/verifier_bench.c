/*
 * verifier_bench.c - verifier benchmark.  `inproc`: decisions per second of
 * the real call flow with the certificate policy, for the token path and the
 * registry path, in this one process, next to raw
 * crypto_sign_verify_detached per second.  `scale`: N real bin/verifier
 * processes fed WEBHOOK messages on verifier_endpoint, RESULTs counted on
 * spine_endpoint (both bound here; no spine may run).  Prints one JSON
 * object on stdout.  Run by bench/run.py.
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>
#include <zmq.h>

#include "bench_common.h"
#include "cert.h"
#include "config.h"
#include "keyfile.h"
#include "log.h"
#include "msg.h"
#include "verifier_certs.h"
#include "verifier_flow.h"
#include "verifier_webhook.h"

#define VB_CALLS 1000               /* distinct webhooks per path, cycled */
#define VB_SLICES 10                /* interleaved measurement slices (vb_inproc) */
#define VB_MAX_PROCS 16
#define VB_WARMUP_PER_PROC 50
#define VB_RECV_TIMEOUT_MS 30000
#define VB_STOP_WAIT_MS 5000

extern char **environ;

struct vb_opts {
    const char *conf, *mode, *cert_file, *holder_key, *from, *to, *verifier_bin;
    double seconds;
    long procs, count;
};

struct vb_bodies {
    char *body[VB_CALLS];
    size_t len[VB_CALLS];
};

static void vb_usage(void)
{
    fprintf(stderr,
            "usage: verifier_bench -c CONF inproc CERT_JSON HOLDER_KEY FROM TO SECONDS\n"
            "       verifier_bench -c CONF scale CERT_JSON HOLDER_KEY FROM TO VERIFIER_BIN PROCS COUNT\n"
            "  CERT_JSON: output of telctl cert issue (FROM must be one of its phones);\n"
            "  HOLDER_KEY: the holder's secret key file (telctl keygen)\n");
    exit(2);
}

/* A fresh token for from/to from the certificate JSON and the holder key. */
static int vb_token(const struct vb_opts *o, char tok[TOKEN_MAX_LEN + 1], char *err)
{
    json_error_t je;
    json_t *j = json_load_file(o->cert_file, 0, &je);
    const char *b64 = j ? json_string_value(json_object_get(j, "cert")) : NULL;
    uint8_t raw[CERT_MAX_BYTES], sk[CERT_SK_BYTES], pk[CERT_PK_BYTES];
    size_t rawlen = 0;
    struct cert c;
    struct cert_blob blob;
    int rc = -1;

    if (!b64)
        tg_err(err, "%s: no \"cert\" string (expected telctl cert issue output)", o->cert_file);
    else if (tg_b64_decode(b64, strlen(b64), raw, sizeof raw, &rawlen) != 0)
        tg_err(err, "%s: \"cert\" is not base64", o->cert_file);
    else if (cert_decode(raw, rawlen, &c, &blob, err) == 0 &&
             keyfile_read_secret(o->holder_key, sk, pk, err) == 0) {
        rc = token_make(&blob, sk, o->from, o->to, tg_now_ms() / 1000, tok, err);
        sodium_memzero(sk, sizeof sk);
    }
    json_decref(j);
    return rc;
}

static void vb_make_bodies(const struct vb_opts *o, const char *tag, const char *token, const char *att,
                           struct vb_bodies *b)
{
    char body[8192], id[64], ccid[64];
    for (size_t i = 0; i < VB_CALLS; i++) {
        snprintf(id, sizeof id, "%s-%08zx-4000-8000-%012zx", tag, i, i);
        snprintf(ccid, sizeof ccid, "bench-%s-%zu", tag, i);
        struct bench_call c = {.id = id, .ccid = ccid, .from = o->from, .to = o->to, .token = token,
                               .attestation = att};
        b->len[i] = bench_webhook_body(&c, BENCH_BODY_BYTES, body, sizeof body);
        if (b->len[i] == 0)
            log_fatal("webhook body does not fit");
        b->body[i] = xstrndup(body, b->len[i]);
    }
}

static void vb_free_bodies(struct vb_bodies *b)
{
    for (size_t i = 0; i < VB_CALLS; i++)
        free(b->body[i]);
}

/* One decision: parse + flow + policy.  Returns the method ("token",
 * "registry") of a verified call, or the rejection reason. */
static void vb_decide(const struct tg_config *cfg, const struct verifier_policy *p, const char *body, size_t len,
                      char *verdict, size_t cap)
{
    char err[ERR_LEN];
    struct verifier_webhook wh;
    struct msg_result res;
    if (verifier_webhook_parse(body, len, &wh, err) != 0 ||
        verifier_flow_run(cfg, NULL, p, &wh, tg_now_us(), &res, err) != 0)
        log_fatal("benchmark webhook not processed: %s", err);
    if (verdict) {
        snprintf(verdict, cap, "none");
        for (size_t e = 0; e < res.n_events; e++)
            if (strcmp(res.events[e].type, "tel.call_verified") == 0)
                snprintf(verdict, cap, "verified");
            else if (strcmp(res.events[e].type, "tel.call_rejected") == 0)
                snprintf(verdict, cap, "rejected");
    }
    msg_result_free(&res);
    verifier_webhook_free(&wh);
}

/* Decisions or verifies made and the time they took, summed over slices. */
struct vb_count {
    uint64_t n, ns;
};

static double vb_per_s(const struct vb_count *c)
{
    return c->ns ? (double)c->n / ((double)c->ns / 1e9) : 0;
}

/* Decide the calls of b, round robin, for about seconds; add to *c. */
static void vb_decide_for(const struct tg_config *cfg, const struct verifier_policy *p,
                          const struct vb_bodies *b, double seconds, struct vb_count *c)
{
    uint64_t t0 = tg_mono_ns(), end = t0 + (uint64_t)(seconds * 1e9), n = c->n, now;
    do {
        for (int k = 0; k < 64; k++, n++)
            vb_decide(cfg, p, b->body[n % VB_CALLS], b->len[n % VB_CALLS], NULL, 0);
        now = tg_mono_ns();
    } while (now < end);
    c->n = n;
    c->ns += now - t0;
}

/* The reference: one Ed25519 signature over a 128-byte message. */
struct vb_raw {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sig[crypto_sign_BYTES], msg[128];
};

static void vb_raw_init(struct vb_raw *r)
{
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    randombytes_buf(r->msg, sizeof r->msg);
    crypto_sign_keypair(r->pk, sk);
    crypto_sign_detached(r->sig, NULL, r->msg, sizeof r->msg, sk);
    sodium_memzero(sk, sizeof sk);
}

/* Verify the reference signature for about seconds; add to *c. */
static void vb_raw_verify_for(const struct vb_raw *r, double seconds, struct vb_count *c)
{
    uint64_t t0 = tg_mono_ns(), end = t0 + (uint64_t)(seconds * 1e9), n = 0, now;
    do {
        for (int k = 0; k < 64; k++, n++)
            if (crypto_sign_verify_detached(r->sig, r->msg, sizeof r->msg, r->pk) != 0)
                log_fatal("reference signature does not verify");
        now = tg_mono_ns();
    } while (now < end);
    c->n += n;
    c->ns += now - t0;
}

static int vb_inproc(const struct vb_opts *o, const struct tg_config *cfg, const char *token)
{
    char err[ERR_LEN], v_tok[32], v_reg[32];
    struct verifier_certs *vc = NULL;
    struct vb_bodies tok, reg;

    if (verifier_certs_open(&vc, cfg, err) != 0) {
        fprintf(stderr, "verifier_bench: %s\n", err);
        return 1;
    }
    const struct verifier_policy *p = verifier_certs_policy(vc);
    vb_make_bodies(o, "vbt", token, NULL, &tok);
    vb_make_bodies(o, "vbr", NULL, "A", &reg);
    /* Both paths must end in a verified call, or the figures mean nothing. */
    vb_decide(cfg, p, tok.body[0], tok.len[0], v_tok, sizeof v_tok);
    vb_decide(cfg, p, reg.body[0], reg.len[0], v_reg, sizeof v_reg);
    if (strcmp(v_tok, "verified") != 0 || strcmp(v_reg, "verified") != 0) {
        fprintf(stderr, "verifier_bench: set-up wrong: token call %s, registry call %s (want verified)\n",
                v_tok, v_reg);
        return 1;
    }
    /* Interleaved slices: a change of the machine's speed during the run
     * (other virtual machines on the host) weighs on all three alike, so
     * the ratios hold even when the absolute rates drift. */
    struct vb_raw ref;
    struct vb_count raw = {0}, c_tok = {0}, c_reg = {0};
    vb_raw_init(&ref);
    double slice = o->seconds / VB_SLICES;
    for (int i = 0; i < VB_SLICES; i++) {
        vb_raw_verify_for(&ref, slice, &raw);
        vb_decide_for(cfg, p, &tok, slice, &c_tok);
        vb_decide_for(cfg, p, &reg, slice, &c_reg);
    }
    printf("{\"token_per_s\": %.1f, \"token_n\": %llu, \"registry_per_s\": %.1f, \"registry_n\": %llu, "
           "\"raw_verify_per_s\": %.1f, \"seconds\": %.1f, \"slices\": %d}\n",
           vb_per_s(&c_tok), (unsigned long long)c_tok.n, vb_per_s(&c_reg), (unsigned long long)c_reg.n,
           vb_per_s(&raw), o->seconds, VB_SLICES);
    vb_free_bodies(&tok);
    vb_free_bodies(&reg);
    verifier_certs_close(&vc);
    return 0;
}

static void vb_stop_children(pid_t *pids, long n)
{
    for (long i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    uint64_t end = tg_mono_ms() + VB_STOP_WAIT_MS;
    for (long i = 0; i < n; i++) {
        while (pids[i] > 0) {
            int st;
            if (waitpid(pids[i], &st, WNOHANG) == pids[i])
                pids[i] = 0;
            else if (tg_mono_ms() >= end) {
                kill(pids[i], SIGKILL);
                waitpid(pids[i], &st, 0);
                pids[i] = 0;
            } else
                usleep(10000);
        }
    }
}

/* Send count WEBHOOKs (cycling over b) while collecting RESULTs; returns the
 * number of RESULTs received within the timeout. */
static long vb_pump(void *push, void *pull, const struct vb_bodies *b, long count, uint64_t *jseq)
{
    long sent = 0, got = 0;
    uint64_t deadline = tg_mono_ms() + VB_RECV_TIMEOUT_MS;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    while (got < count && tg_mono_ms() < deadline) {
        zmq_pollitem_t it[2] = {{.socket = pull, .events = ZMQ_POLLIN},
                                {.socket = push, .events = sent < count ? ZMQ_POLLOUT : 0}};
        if (zmq_poll(it, 2, 100) < 0 && errno != EINTR)
            break;
        while (sent < count && (it[1].revents & ZMQ_POLLOUT)) {
            struct msg_webhook m = {.jseq = ++*jseq, .recv_us = tg_now_us(), .attempt = 1,
                                    .body = (uint8_t *)b->body[sent % VB_CALLS],
                                    .body_len = b->len[sent % VB_CALLS]};
            sb.size = 0;
            msg_webhook_encode(&sb, &m);
            if (zmq_send(push, sb.data, sb.size, ZMQ_DONTWAIT) < 0)
                break;
            sent++;
        }
        char buf[65536];
        while (zmq_recv(pull, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
            got++;
    }
    msgpack_sbuffer_destroy(&sb);
    return got;
}

static int vb_scale(const struct vb_opts *o, const struct tg_config *cfg, const char *token)
{
    struct vb_bodies tok;
    pid_t pids[VB_MAX_PROCS] = {0};
    void *zctx = zmq_ctx_new();
    void *push = zmq_socket(zctx, ZMQ_PUSH), *pull = zmq_socket(zctx, ZMQ_PULL);
    int zero = 0, linger = 0;
    zmq_setsockopt(push, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(pull, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(pull, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(push, cfg->verifier_endpoint) != 0 || zmq_bind(pull, cfg->spine_endpoint) != 0) {
        fprintf(stderr, "verifier_bench: bind %s / %s: %s (is a spine or ingress running?)\n",
                cfg->verifier_endpoint, cfg->spine_endpoint, zmq_strerror(errno));
        return 1;
    }
    vb_make_bodies(o, "vbs", token, NULL, &tok);
    for (long i = 0; i < o->procs; i++) {
        char *args[] = {(char *)o->verifier_bin, "-c", (char *)o->conf, NULL};
        if (posix_spawn(&pids[i], o->verifier_bin, NULL, NULL, args, environ) != 0) {
            fprintf(stderr, "verifier_bench: cannot start %s\n", o->verifier_bin);
            vb_stop_children(pids, o->procs);
            return 1;
        }
    }
    usleep(500000);     /* let every verifier connect before PUSH spreads work */
    uint64_t jseq = 0;
    long warm = VB_WARMUP_PER_PROC * o->procs;
    long got_warm = vb_pump(push, pull, &tok, warm, &jseq);
    uint64_t t0 = tg_mono_ns();
    long got = vb_pump(push, pull, &tok, o->count, &jseq);
    double el = (double)(tg_mono_ns() - t0) / 1e9;
    vb_stop_children(pids, o->procs);
    printf("{\"procs\": %ld, \"count\": %ld, \"results\": %ld, \"warmup_results\": %ld, \"elapsed_s\": %.3f, "
           "\"decisions_per_s\": %.1f}\n",
           o->procs, o->count, got, got_warm, el, el > 0 ? (double)got / el : 0.0);
    vb_free_bodies(&tok);
    zmq_close(push);
    zmq_close(pull);
    zmq_ctx_term(zctx);
    return got == o->count && got_warm == warm ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct vb_opts o = {0};
    struct tg_config cfg;
    char err[ERR_LEN], token[TOKEN_MAX_LEN + 1];

    log_init("verifier_bench");
    if (argc < 9 || strcmp(argv[1], "-c") != 0)
        vb_usage();
    o.conf = argv[2];
    o.mode = argv[3];
    o.cert_file = argv[4];
    o.holder_key = argv[5];
    o.from = argv[6];
    o.to = argv[7];
    if (strcmp(o.mode, "inproc") == 0 && argc == 9) {
        o.seconds = atof(argv[8]);
        if (o.seconds <= 0 || o.seconds > 60)
            vb_usage();
    } else if (strcmp(o.mode, "scale") == 0 && argc == 11) {
        int64_t v;
        o.verifier_bin = argv[8];
        if (tg_parse_i64(argv[9], 1, VB_MAX_PROCS, &v) != 0)
            vb_usage();
        o.procs = (long)v;
        if (tg_parse_i64(argv[10], 1, 10000000, &v) != 0)
            vb_usage();
        o.count = (long)v;
    } else {
        vb_usage();
    }
    if (sodium_init() < 0)
        log_fatal("sodium_init failed");
    if (config_load(&cfg, o.conf, err) != 0) {
        fprintf(stderr, "verifier_bench: %s\n", err);
        return 2;
    }
    log_set_level(LOG_WARN);
    if (vb_token(&o, token, err) != 0) {
        fprintf(stderr, "verifier_bench: token: %s\n", err);
        return 1;
    }
    int rc = strcmp(o.mode, "inproc") == 0 ? vb_inproc(&o, &cfg, token) : vb_scale(&o, &cfg, token);
    config_free(&cfg);
    return rc;
}
