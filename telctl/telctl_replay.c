/*
 * telctl_replay.c - `telctl replay [--into DATA_DIR] FILE...` (SPEC section 7):
 * feeds journal dump files through the running pipeline again, or through the
 * verifier logic into a separate spine database.  Used by telctl.
 *
 * Live: telctl binds a PUSH socket at replay_endpoint, where every verifier's
 * PULL is also connected, and sends each record as a WEBHOOK with jseq 0 (not
 * a journal record of this ingress, so the spine marks nothing) and attempt 1.
 * The spine drops webhooks it already processed (by data.id), so replaying
 * what is processed adds nothing.
 *
 * --into: in-process, with this configuration's numbers file and the live
 * installation's certificates (read-only), at the current time; the RESULTs
 * are applied with the spine's own store, so DATA_DIR/spine has the live
 * format.  Events carry the replay time (the store stamps them), decisions
 * are those of the current policy and clock (a token older than 60 s fails
 * its freshness check), and commands stay in that database's outbox: nothing
 * is ever sent to Telnyx from here.
 */
#include "log.h"
#include "msg.h"
#include "numbers.h"
#include "spinedb.h"
#include "stage.h"
#include "telctl.h"
#include "../spine/spine_store.h"
#include "../verifier/verifier_certs.h"
#include "../verifier/verifier_flow.h"
#include "../verifier/verifier_webhook.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#define CMD "replay"
#define REPLAY_CONNECT_TIMEOUT_MS 5000      /* first verifier must connect within */
#define REPLAY_SEND_TIMEOUT_MS 5000         /* later sends: verifiers stopped taking */
#define REPLAY_LINGER_MS 10000              /* hand-over of what is queued at the end */
#define REPLAY_WAIT_MIN_MS 10000            /* waiting for the spine to record the ids */
#define REPLAY_WAIT_MAX_MS 120000
#define REPLAY_WAIT_PER_1000_MS 2000
#define REPLAY_POLL_MS 100
#define REPLAY_BATCH 256                    /* RESULTs per spine_store_apply */

/* State shared by both modes: the source, the progress line and counters. */
struct replay_run {
    struct replay_source *src;
    struct replay_progress progress;
    size_t done;            /* records read so far (progress) */
    size_t unusable;        /* bodies that are not Telnyx webhooks */
};

static void run_open(struct replay_run *r, char **files, size_t n)
{
    memset(r, 0, sizeof *r);
    bool tty = isatty(STDERR_FILENO) == 1;
    replay_progress_init(&r->progress, stderr, tty, tty ? replay_source_count(files, n) : 0);
    replay_source_open(&r->src, files, n);
}

static void run_close(struct replay_run *r)
{
    replay_source_close(&r->src);
}

/* A line on stderr that does not collide with the progress line. */
static void run_report(struct replay_run *r, const char *fmt, ...) TG_PRINTF(2, 3);
static void run_report(struct replay_run *r, const char *fmt, ...)
{
    va_list ap;
    replay_progress_clear(&r->progress);
    fprintf(stderr, "telctl " CMD ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/*
 * After the run: files that could not be opened or are corrupt (a torn tail
 * of the last file is not: a crash leaves one) fail the replay, even though
 * the good records before the damage were replayed.  Says so on stderr and
 * returns true in that case.
 */
static bool run_files_failed(const struct replay_stats *st)
{
    if (st->files_failed)
        fprintf(stderr, "telctl " CMD ": %zu file(s) could not be opened\n", st->files_failed);
    if (st->corrupt)
        fprintf(stderr, "telctl " CMD ": %zu file(s) corrupt: their records before the damage were replayed, "
                "the rest of each was not\n", st->corrupt);
    return st->files_failed || st->corrupt;
}

/*
 * Next usable record with its parsed webhook: 1 and *rec, *wh (caller frees
 * both), or 0 when every file was read.  Problems (files, torn and corrupt
 * records, bodies that are no webhook) are reported and skipped.
 */
static int run_next(struct replay_run *r, struct journal_record *rec, struct verifier_webhook *wh)
{
    char err[ERR_LEN];
    const char *path = NULL;

    for (;;) {
        enum replay_status st = replay_source_next(r->src, rec, &path, err);
        if (st == REPLAY_DONE)
            return 0;
        if (st == REPLAY_PROBLEM) {
            run_report(r, "%s", err);
            continue;
        }
        r->done++;
        replay_progress_update(&r->progress, r->done, tg_mono_ms());
        if (verifier_webhook_parse(rec->body, rec->body_len, wh, err) != 0) {
            run_report(r, "%s: record jseq %llu skipped: not a Telnyx webhook: %s", path,
                       (unsigned long long)rec->jseq, err);
            r->unusable++;
            journal_record_free(rec);
            continue;
        }
        return 1;
    }
}

/* Same, in a read transaction of its own; an absent database knows nothing. */
static int webhook_known_ro(const struct spinedb *db, uint64_t occurred, const char *id, bool *known, char *err)
{
    MDB_txn *txn;
    *known = false;
    if (!db->env)
        return 0;
    if (spinedb_txn_begin_ro(db, &txn, err) != 0)
        return -1;
    int rc = spinedb_webhook_known(db, txn, occurred, id, known, err);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- live: through the running pipeline ---- */

/* A webhook as the spine's `webhooks` index knows it. */
struct replay_id {
    uint64_t occurred;
    char *id;
};

struct id_list {
    struct replay_id *v;
    size_t n, cap;
};

static void id_list_add(struct id_list *l, uint64_t occurred, const char *id)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (struct replay_id){occurred, xstrdup(id)};
}

static int cmp_id(const void *a, const void *b)
{
    const struct replay_id *x = a, *y = b;
    if (x->occurred != y->occurred)
        return x->occurred < y->occurred ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void id_list_unique(struct id_list *l)
{
    size_t w = 0;
    if (l->n)
        qsort(l->v, l->n, sizeof *l->v, cmp_id);
    for (size_t i = 0; i < l->n; i++) {
        if (w && cmp_id(&l->v[w - 1], &l->v[i]) == 0)
            free(l->v[i].id);
        else
            l->v[w++] = l->v[i];
    }
    l->n = w;
}

static void id_list_free(struct id_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].id);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/*
 * Poll the live spine (read-only) until every id of l is recorded or
 * timeout_ms passes; recorded ids are removed from l.  0 (l then holds what
 * is still missing), or -1 with err on a database error.
 */
static int ids_wait(const struct tg_config *cfg, struct id_list *l, uint64_t timeout_ms, char *err)
{
    struct spinedb *db = NULL;
    uint64_t deadline = tg_mono_ms() + timeout_ms;
    int rc = 0;

    while (l->n) {
        if (!db || !db->env) {
            spinedb_close(&db);
            if (spinedb_open(&db, cfg->data_dir, true, err) != 0)
                return -1;
        }
        if (db->env) {
            MDB_txn *txn;
            if (spinedb_txn_begin_ro(db, &txn, err) != 0) {
                rc = -1;
                break;
            }
            size_t w = 0;
            for (size_t i = 0; i < l->n; i++) {
                bool known = false;
                if (rc == 0 && spinedb_webhook_known(db, txn, l->v[i].occurred, l->v[i].id, &known, err) != 0)
                    rc = -1;
                if (known)
                    free(l->v[i].id);
                else
                    l->v[w++] = l->v[i];
            }
            l->n = w;
            mdb_txn_abort(txn);
            if (rc)
                break;
        }
        if (!l->n || tg_mono_ms() >= deadline)
            break;
        struct timespec ts = {0, REPLAY_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    spinedb_close(&db);
    return rc;
}

/* Remove the socket file of an ipc:// endpoint this process bound, so the
 * verifiers' reconnection attempts find nothing rather than a stale file. */
static void endpoint_unlink(const char *endpoint)
{
    struct stat st;
    const char *path = strncmp(endpoint, "ipc://", 6) == 0 ? endpoint + 6 : NULL;
    if (path && *path != '@' && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
}

static int replay_live_claimed(const struct tg_config *cfg, char **files, size_t n_files)
{
    char err[ERR_LEN];
    struct spinedb *db = NULL;
    struct replay_run r;
    struct id_list pending = {0};
    struct journal_record rec;
    struct verifier_webhook wh;
    size_t sent = 0, already = 0;
    int rc = TELCTL_EXIT_OK;

    if (spinedb_open(&db, cfg->data_dir, true, err) != 0)
        return telctl_fail(CMD, "%s", err);
    void *ctx = zmq_ctx_new();
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int one = 1, linger = REPLAY_LINGER_MS, tmo = REPLAY_CONNECT_TIMEOUT_MS;
    /* IMMEDIATE: queue only to verifiers that completed the handshake, so a
     * blocking send with a timeout is the wait for the first verifier. */
    zmq_setsockopt(push, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(push, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    /* The stages create DATA_DIR/run; replaying before any of them ran
     * must still fail for the right reason (no verifier), not the path. */
    if (strncmp(cfg->replay_endpoint, "ipc://", 6) == 0) {
        char *dir = xstrdup(cfg->replay_endpoint + 6), *slash = strrchr(dir, '/');
        char merr[ERR_LEN];
        if (slash && slash != dir) {
            *slash = '\0';
            if (tg_mkdir_p(dir, merr) != 0)
                log_warn("%s", merr);
        }
        free(dir);
    }
    if (zmq_bind(push, cfg->replay_endpoint) != 0) {
        rc = telctl_fail(CMD, "bind %s: %s (is the pipeline running under this data_dir?)",
                         cfg->replay_endpoint, zmq_strerror(errno));
        zmq_close(push);
        zmq_ctx_term(ctx);
        spinedb_close(&db);
        return rc;
    }

    run_open(&r, files, n_files);
    while (rc == TELCTL_EXIT_OK && run_next(&r, &rec, &wh)) {
        bool known = false;
        uint64_t occurred = verifier_webhook_occurred_us(&wh);
        if (webhook_known_ro(db, occurred, wh.id, &known, err) != 0)
            rc = telctl_fail(CMD, "%s", err);
        if (known)
            already++;
        else
            id_list_add(&pending, occurred, wh.id);

        struct msg_webhook m = {.jseq = 0, .recv_us = rec.recv_us, .attempt = 1,
                                .body = rec.body, .body_len = rec.body_len};
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msg_webhook_encode(&sb, &m);
        if (rc == TELCTL_EXIT_OK && zmq_send(push, sb.data, sb.size, 0) < 0) {
            replay_progress_clear(&r.progress);
            if (sent == 0)
                rc = telctl_fail(CMD, "no verifier connected to %s within %d s (are verifiers running?)",
                                 cfg->replay_endpoint, REPLAY_CONNECT_TIMEOUT_MS / 1000);
            else
                rc = telctl_fail(CMD, "verifiers stopped taking records after %zu: %s", sent,
                                 zmq_strerror(errno));
        } else if (rc == TELCTL_EXIT_OK) {
            sent++;
            if (sent == 1) {
                tmo = REPLAY_SEND_TIMEOUT_MS;
                zmq_setsockopt(push, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
            }
        }
        msgpack_sbuffer_destroy(&sb);
        verifier_webhook_free(&wh);
        journal_record_free(&rec);
    }
    spinedb_close(&db);
    /* Linger: closing waits (bounded) until what is queued is handed over. */
    zmq_close(push);
    zmq_ctx_term(ctx);
    endpoint_unlink(cfg->replay_endpoint);
    replay_progress_finish(&r.progress, r.done);

    const struct replay_stats *st = replay_source_stats(r.src);
    if (rc == TELCTL_EXIT_OK) {
        id_list_unique(&pending);
        size_t n_ids = pending.n;
        uint64_t wait_ms = REPLAY_WAIT_MIN_MS + (uint64_t)n_ids * REPLAY_WAIT_PER_1000_MS / 1000;
        if (wait_ms > REPLAY_WAIT_MAX_MS)
            wait_ms = REPLAY_WAIT_MAX_MS;
        if (ids_wait(cfg, &pending, wait_ms, err) != 0)
            rc = telctl_fail(CMD, "%s", err);
        printf("replayed %zu records from %zu files (%zu already processed)\n", sent, st->files, already);
        if (rc == TELCTL_EXIT_OK && pending.n == 0 && n_ids) {
            printf("all %zu new webhooks are now in the spine\n", n_ids);
        } else if (rc == TELCTL_EXIT_OK && pending.n) {
            printf("%zu of %zu new webhooks are in the spine\n", n_ids - pending.n, n_ids);
            rc = telctl_fail(CMD, "%zu replayed webhooks not in the spine after %llu s (first: %s); "
                             "is the spine running?", pending.n, (unsigned long long)(wait_ms / 1000),
                             pending.v[0].id);
        }
    }
    if (st->torn || st->corrupt || r.unusable)
        fprintf(stderr, "telctl " CMD ": skipped: %zu torn and %zu corrupt file tails, %zu unusable records\n",
                st->torn, st->corrupt, r.unusable);
    if (run_files_failed(st))
        rc = TELCTL_EXIT_FAIL;
    id_list_free(&pending);
    run_close(&r);
    return rc;
}

/* ---- --into: through the verifier logic into a separate spine ---- */

struct into_ctx {
    struct spine_store *store;
    struct spine_input batch[REPLAY_BATCH];
    size_t n;
    struct spine_output out;
    size_t events, commands, duplicates, failed, dropped;
};

static int into_flush(struct into_ctx *c, char *err)
{
    int rc = 0;
    if (!c->n)
        return 0;
    if (spine_store_apply(c->store, c->batch, c->n, &c->out, err) != 0) {
        c->dropped++;
        rc = -1;
    }
    c->events += c->out.n_events;
    c->commands += c->out.n_commands;
    spine_output_reset(&c->out);
    for (size_t i = 0; i < c->n; i++)
        spine_input_free(&c->batch[i]);
    c->n = 0;
    return rc;
}

/* Whether webhook id is already in the --into database or the pending batch. */
static int into_duplicate(struct into_ctx *c, uint64_t occurred, const char *id, bool *dup, char *err)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->batch[i].u.result.occurred_us == occurred && strcmp(c->batch[i].u.result.webhook_id, id) == 0) {
            *dup = true;
            return 0;
        }
    return webhook_known_ro(spine_store_db(c->store), occurred, id, dup, err);
}

static int replay_into_claimed(const struct tg_config *cfg, const char *into, char **files,
                               size_t n_files)
{
    char err[ERR_LEN];
    struct numbers *numbers = NULL;
    struct verifier_certs *vc = NULL;
    struct into_ctx c;
    struct replay_run r;
    struct journal_record rec;
    struct verifier_webhook wh;
    size_t replayed = 0;
    int rc = TELCTL_EXIT_OK;

    bool explicit_numbers = strcmp(cfg->numbers_file, NUMBERS_DEFAULT_FILE) != 0;
    if (numbers_load(cfg->numbers_file, explicit_numbers, &numbers, err) != 0)
        return telctl_usage(CMD, "numbers_file: %s", err);
    if (verifier_certs_open(&vc, cfg, err) != 0) {
        numbers_free(&numbers);
        return telctl_usage(CMD, "configuration error: %s", err);
    }
    memset(&c, 0, sizeof c);
    if (spine_store_open(&c.store, into, cfg->namespace_, (uint64_t)cfg->command_resend_ms, err) != 0) {
        verifier_certs_close(&vc);
        numbers_free(&numbers);
        return telctl_fail(CMD, "%s", err);
    }
    const struct verifier_policy *policy = verifier_certs_policy(vc);

    run_open(&r, files, n_files);
    while (rc == TELCTL_EXIT_OK && run_next(&r, &rec, &wh)) {
        bool dup = false;
        replayed++;
        if (into_duplicate(&c, verifier_webhook_occurred_us(&wh), wh.id, &dup, err) != 0) {
            rc = telctl_fail(CMD, "%s", err);
        } else if (dup) {
            c.duplicates++;
        } else {
            struct spine_input *in = &c.batch[c.n];
            memset(in, 0, sizeof *in);
            in->type = MSG_RESULT;
            if (verifier_flow_run(cfg, numbers, policy, &wh, tg_now_us(), &in->u.result, err) != 0) {
                /* As a verifier does: the webhook counts as processed, with no events. */
                run_report(&r, "webhook %s (jseq %llu) not processable: %s", wh.id,
                           (unsigned long long)rec.jseq, err);
                memset(&in->u.result, 0, sizeof in->u.result);
                in->u.result.webhook_id = xstrdup(wh.id);
                in->u.result.occurred_us = verifier_webhook_occurred_us(&wh);
                c.failed++;
            }
            in->u.result.jseq = 0;
            if (++c.n == REPLAY_BATCH && into_flush(&c, err) != 0)
                run_report(&r, "%s", err);
        }
        verifier_webhook_free(&wh);
        journal_record_free(&rec);
    }
    if (into_flush(&c, err) != 0)
        run_report(&r, "%s", err);
    replay_progress_finish(&r.progress, r.done);

    const struct replay_stats *st = replay_source_stats(r.src);
    if (rc == TELCTL_EXIT_OK) {
        printf("replayed %zu records into %s: %zu events, %zu commands not executed (no actuator), "
               "%zu duplicates\n", replayed, into, c.events, c.commands, c.duplicates);
        printf("events carry the replay time; see them with: TEL_DATA_DIR=%s telctl events\n", into);
    }
    if (st->torn || st->corrupt || r.unusable || c.failed)
        fprintf(stderr, "telctl " CMD ": skipped: %zu torn and %zu corrupt file tails, %zu unusable "
                "records, %zu webhooks not processable\n", st->torn, st->corrupt, r.unusable, c.failed);
    if (c.dropped) {
        fprintf(stderr, "telctl " CMD ": %zu batches could not be fully written to %s/spine\n",
                c.dropped, into);
        rc = TELCTL_EXIT_FAIL;
    }
    if (run_files_failed(st))
        rc = TELCTL_EXIT_FAIL;
    spine_output_free(&c.out);
    spine_store_close(&c.store);
    verifier_certs_close(&vc);
    numbers_free(&numbers);
    run_close(&r);
    return rc;
}


/* One live replay per data directory at a time: it binds replay_endpoint. */
static int replay_live(const struct tg_config *cfg, char **files, size_t n_files)
{
    char err[ERR_LEN];
    int lockfd;
    if (telctl_data_dir_check(cfg, CMD) != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;            /* the pipeline runs under an existing one */
    if (stage_claim(cfg->data_dir, "replay", &lockfd, err) != 0)
        return telctl_fail(CMD, "%s", err);
    int rc = replay_live_claimed(cfg, files, n_files);
    close(lockfd);
    return rc;
}

/* The spine store under --into has one writer, like any spine's: not the
 * live data_dir, and neither a spine nor another replay running on it. */
static int replay_into(const struct tg_config *cfg, const char *into, char **files, size_t n_files)
{
    char err[ERR_LEN];
    bool same = false;
    int lockfd;
    if (tg_mkdir_p(into, err) != 0)
        return telctl_fail(CMD, "--into: %s", err);
    if (replay_dir_same(into, cfg->data_dir, &same, err) != 0)
        return telctl_fail(CMD, "--into: %s", err);
    if (same)
        return telctl_usage(CMD, "--into %s is the live data_dir; the running spine is its only writer "
                            "(choose another directory)", into);
    if (stage_claim(into, "spine", &lockfd, err) != 0)
        return telctl_fail(CMD, "--into: %s", err);
    int rc = replay_into_claimed(cfg, into, files, n_files);
    close(lockfd);
    return rc;
}

int telctl_replay(const struct tg_config *cfg, int argc, char **argv)
{
    const char *into = NULL;
    char **files = xcalloc((size_t)argc, sizeof *files);
    size_t n = 0;
    bool opts_done = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (!opts_done && a[0] == '-' && a[1] != '\0') {
            int r = telctl_opt(argc, argv, &i, "--into", &into);
            if (r < 0 || (r == 1 && !*into)) {
                free(files);
                return telctl_usage(CMD, "--into needs a DATA_DIR");
            }
            if (r == 0) {
                free(files);
                return telctl_usage(CMD, "unknown option '%s'", a);
            }
            continue;
        }
        files[n++] = argv[i];
    }
    if (n == 0) {
        free(files);
        return telctl_usage(CMD, "no journal dump FILE given (e.g. DATA_DIR/journal/*.dump)");
    }
    int rc = into ? replay_into(cfg, into, files, n) : replay_live(cfg, files, n);
    free(files);
    return rc;
}
