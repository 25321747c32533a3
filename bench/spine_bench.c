/*
 * spine_bench.c - spine benchmark: applies batches of RESULT messages (made
 * by the real call flow from call.initiated webhooks) to a fresh spine store
 * with durable commits, then, as the reference, appends values of the same
 * sizes in the same per-commit counts to a bare LMDB database.  Prints one
 * JSON object on stdout.  Run by bench/run.py.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>
#include <sodium.h>

#include "bench_common.h"
#include "config.h"
#include "log.h"
#include "msg.h"
#include "spine_store.h"
#include "verifier_flow.h"
#include "verifier_webhook.h"

#define SB_MAX_MESSAGES 200000
#define SB_MAX_COMMITS (SB_MAX_MESSAGES + 1)

/* What the spine committed, commit by commit: the reference repeats it. */
struct sb_trace {
    size_t *events_per_commit;
    size_t n_commits;
    size_t *value_len;          /* per event: 32-byte hash + canonical bytes */
    size_t n_events;
};

static void sb_usage(void)
{
    fprintf(stderr, "usage: spine_bench -c CONF DIR MESSAGES PER_COMMIT SECONDS\n"
                    "  DIR: empty scratch directory; RESULTs made from MESSAGES call.initiated\n"
                    "  webhooks, applied PER_COMMIT at a time for at most SECONDS\n");
    exit(2);
}

/* Encode and decode through the real codec, as the spine receives them. */
static void sb_make_inputs(const struct tg_config *cfg, size_t n, struct spine_input *in)
{
    char body[4096], id[64], ccid[64], err[ERR_LEN];
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "sb-%08zx-4000-8000-%012zx", i, i);
        snprintf(ccid, sizeof ccid, "bench-sb-%zu", i);
        struct bench_call c = {.id = id, .ccid = ccid, .from = "+13125550100", .to = "+13125550199"};
        size_t len = bench_webhook_body(&c, 0, body, sizeof body);
        struct verifier_webhook wh;
        struct msg_result res;
        if (len == 0 || verifier_webhook_parse(body, len, &wh, err) != 0 ||
            verifier_flow_run(cfg, NULL, NULL, &wh, tg_now_us(), &res, err) != 0)
            log_fatal("cannot make RESULT %zu: %s", i, err);
        res.jseq = i + 1;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msg_result_encode(&sb, &res);
        if (spine_input_decode(sb.data, sb.size, &in[i], err) != 0)
            log_fatal("RESULT %zu does not decode: %s", i, err);
        msgpack_sbuffer_destroy(&sb);
        msg_result_free(&res);
        verifier_webhook_free(&wh);
    }
}

static int sb_run_spine(const char *dir, const struct spine_input *in, size_t n, size_t per_commit,
                        double seconds, struct sb_trace *tr, size_t *msgs, double *elapsed, char *err)
{
    struct spine_store *s = NULL;
    struct spine_output out;
    memset(&out, 0, sizeof out);
    if (spine_store_open(&s, dir, "bench.x", 60000, err) != 0)
        return -1;
    uint64_t t0 = tg_mono_ns(), deadline = t0 + (uint64_t)(seconds * 1e9);
    size_t i = 0;
    uint64_t prev = 0;
    while (i < n && tg_mono_ns() < deadline) {
        size_t k = n - i < per_commit ? n - i : per_commit;
        spine_output_reset(&out);
        if (spine_store_apply(s, in + i, k, &out, err) != 0)
            goto fail;
        /* As the spine does while input keeps coming (finish_batch in
         * spine/main.c): each commit's data sync makes the previous commit
         * durable, and only the last batch needs a sync of its own. */
        if (prev && !spine_store_durable(s, prev))
            log_fatal("commit %" PRIu64 " is not durable after the next one", prev);
        prev = spine_store_last_commit(s);
        tr->events_per_commit[tr->n_commits++] = out.n_events;
        for (size_t e = 0; e < out.n_events; e++)
            tr->value_len[tr->n_events++] = EVENT_HASH_BYTES + out.events[e].len;
        i += k;
        if ((i == n || tg_mono_ns() >= deadline) && spine_store_sync(s, err) != 0)
            goto fail;
    }
    *elapsed = (double)(tg_mono_ns() - t0) / 1e9;
    *msgs = i;
    spine_output_free(&out);
    spine_store_close(&s);
    return 0;
fail:
    spine_output_free(&out);
    spine_store_close(&s);
    return -1;
}

#define SB_CHECK(rc, what)                                                  \
    do {                                                                    \
        if ((rc) != 0) {                                                    \
            tg_err(err, "%s: %s", (what), mdb_strerror(rc));                \
            goto fail;                                                      \
        }                                                                   \
    } while (0)

/* The same values, the same number per commit, into one bare database. */
static int sb_run_raw(const char *dir, const struct sb_trace *tr, double *elapsed, char *err)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    size_t maxlen = 0;
    for (size_t e = 0; e < tr->n_events; e++)
        if (tr->value_len[e] > maxlen)
            maxlen = tr->value_len[e];
    uint8_t *val = xcalloc(1, maxlen + 1);
    for (size_t b = 0; b < maxlen; b++)
        val[b] = (uint8_t)(b * 131 + 7);

    SB_CHECK(mdb_env_create(&env), "mdb_env_create");
    mdb_env_set_maxdbs(env, 2);
    SB_CHECK(mdb_env_set_mapsize(env, SPINEDB_MAP_SIZE), "mdb_env_set_mapsize");
    SB_CHECK(mdb_env_open(env, dir, 0, 0640), "mdb_env_open");
    SB_CHECK(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    SB_CHECK(mdb_dbi_open(txn, "events", MDB_CREATE, &dbi), "mdb_dbi_open");
    SB_CHECK(mdb_txn_commit(txn), "mdb_txn_commit");
    txn = NULL;

    uint64_t t0 = tg_mono_ns(), seq = 0;
    size_t e = 0;
    for (size_t c = 0; c < tr->n_commits; c++) {
        SB_CHECK(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        for (size_t k = 0; k < tr->events_per_commit[c]; k++, e++) {
            uint8_t key[8];
            seq++;
            for (int b = 0; b < 8; b++)
                key[b] = (uint8_t)(seq >> (56 - 8 * b));
            MDB_val mk = {sizeof key, key}, mv = {tr->value_len[e], val};
            SB_CHECK(mdb_put(txn, dbi, &mk, &mv, MDB_APPEND), "mdb_put");
        }
        SB_CHECK(mdb_txn_commit(txn), "mdb_txn_commit");
        txn = NULL;
    }
    *elapsed = (double)(tg_mono_ns() - t0) / 1e9;
    mdb_env_close(env);
    free(val);
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (env)
        mdb_env_close(env);
    free(val);
    return -1;
}

int main(int argc, char **argv)
{
    struct tg_config cfg;
    char err[ERR_LEN];
    int64_t n, per_commit;

    log_init("spine_bench");
    if (argc != 7 || strcmp(argv[1], "-c") != 0 ||
        tg_parse_i64(argv[4], 1, SB_MAX_MESSAGES, &n) != 0 ||
        tg_parse_i64(argv[5], 1, 4096, &per_commit) != 0)
        sb_usage();
    double seconds = atof(argv[6]);
    if (seconds <= 0 || seconds > 120)
        sb_usage();
    if (config_load(&cfg, argv[2], err) != 0) {
        fprintf(stderr, "spine_bench: %s\n", err);
        return 2;
    }
    log_set_level(LOG_WARN);
    /* As every stage does (stage_init): without it libsodium keeps its
     * portable BLAKE2b instead of the vectorised one, and the event hash
     * would cost the benchmark more than it costs the spine. */
    if (sodium_init() < 0)
        log_fatal("libsodium failed to initialise");
    char *store_dir = xasprintf("%s/store", argv[3]);
    char *raw_dir = xasprintf("%s/raw", argv[3]);
    if (tg_mkdir_p(store_dir, err) != 0 || tg_mkdir_p(raw_dir, err) != 0) {
        fprintf(stderr, "spine_bench: %s\n", err);
        return 1;
    }

    struct spine_input *in = xcalloc((size_t)n, sizeof *in);
    sb_make_inputs(&cfg, (size_t)n, in);
    struct sb_trace tr = {
        .events_per_commit = xcalloc((size_t)n + 1, sizeof(size_t)),
        .value_len = xcalloc((size_t)n * 8 + 1, sizeof(size_t)),
    };
    size_t msgs = 0;
    double t_spine = 0, t_raw = 0;
    if (sb_run_spine(store_dir, in, (size_t)n, (size_t)per_commit, seconds, &tr, &msgs, &t_spine, err) != 0 ||
        sb_run_raw(raw_dir, &tr, &t_raw, err) != 0) {
        fprintf(stderr, "spine_bench: %s\n", err);
        return 1;
    }
    size_t bytes = 0;
    for (size_t e = 0; e < tr.n_events; e++)
        bytes += tr.value_len[e];
    printf("{\"messages\": %zu, \"per_commit\": %lld, \"commits\": %zu, \"events\": %zu, "
           "\"mean_event_bytes\": %.0f, \"spine_s\": %.3f, \"spine_events_per_s\": %.1f, "
           "\"spine_messages_per_s\": %.1f, \"raw_s\": %.3f, \"raw_events_per_s\": %.1f}\n",
           msgs, (long long)per_commit, tr.n_commits, tr.n_events,
           tr.n_events ? (double)bytes / (double)tr.n_events : 0.0, t_spine,
           t_spine > 0 ? (double)tr.n_events / t_spine : 0.0, t_spine > 0 ? (double)msgs / t_spine : 0.0,
           t_raw, t_raw > 0 ? (double)tr.n_events / t_raw : 0.0);

    for (int64_t i = 0; i < n; i++)
        spine_input_free(&in[i]);
    free(in);
    free(tr.events_per_commit);
    free(tr.value_len);
    free(store_dir);
    free(raw_dir);
    config_free(&cfg);
    return 0;
}
