/*
 * main.c - the ingress process: receives Telnyx webhooks over HTTP, makes
 * them durable in the journal and hands them to the verifiers; re-publishes
 * or parks what the spine does not acknowledge (protocol.md section 6).
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>

#include "ingress_http.h"
#include "ingress_journal.h"
#include "ingress_metrics.h"
#include "ingress_redeliver.h"
#include "ingress_sig.h"
#include "journal.h"
#include "log.h"
#include "stage.h"

#define RESTART_GRACE_MS 1000   /* the spine's first PROGRESS may acknowledge them first */
#define PROGRESS_RCVHWM 100000  /* PROGRESS reports buffered between writer ticks */

static struct ingress_metrics metrics;

/*
 * Records journaled above the saved low mark may never have been
 * acknowledged: track them again, first due RESTART_GRACE_MS from now.
 * Also keeps jseqs above the saved mark so none is handed out twice.
 */
static struct ingress_redeliver *tracker_load(const struct tg_config *cfg, const char *jdir,
                                              const char *progress_path, uint64_t *next_jseq)
{
    char err[ERR_LEN];
    uint64_t low = 0;
    size_t added = 0;

    if (ingress_redeliver_progress_load(progress_path, &low, err) != 0) {
        log_error("%s; re-reading the whole journal", err);
        low = 0;
    }
    if (*next_jseq <= low)      /* the mark covers skipped jseqs, or the files were pruned */
        *next_jseq = low + 1;
    struct ingress_redeliver *tr = ingress_redeliver_new((uint64_t)cfg->redeliver_after_ms,
                                                         (uint32_t)cfg->max_attempts);
    if (ingress_redeliver_scan(tr, jdir, low, tg_mono_ms() + RESTART_GRACE_MS, &added, err) != 0)
        log_fatal("journal scan: %s", err);
    if (added)
        log_info("journal: %zu record(s) above the saved low mark %llu are re-published unless "
                 "the spine acknowledges them within %d ms", added, (unsigned long long)low,
                 RESTART_GRACE_MS);
    return tr;
}

/* Counters for `telctl status`: the lag is the unacknowledged webhooks. */
static void status_write(struct stage *st, struct ingress_metrics *m)
{
    char c[320];
    uint64_t accepted = atomic_load(&m->requests[INGRESS_PATH_WEBHOOK][0]);
    snprintf(c, sizeof c, "{\"accepted\":%llu,\"journaled\":%llu,\"unacknowledged\":%llu,"
             "\"republished\":%llu,\"parked\":%llu,\"shed\":%llu,\"journal_files\":%llu}",
             (unsigned long long)accepted, (unsigned long long)atomic_load(&m->journal_records),
             (unsigned long long)atomic_load(&m->unacked), (unsigned long long)atomic_load(&m->republished),
             (unsigned long long)atomic_load(&m->parked), (unsigned long long)atomic_load(&m->journal_shed),
             (unsigned long long)atomic_load(&m->journal_files));
    stage_status_write(st, c, false);
}

int main(int argc, char **argv)
{
    struct stage st;
    struct ingress_sig_key key;
    const struct ingress_sig_key *keyp = NULL;
    char err[ERR_LEN];

    stage_init(&st, "ingress", argc, argv);
    const struct tg_config *cfg = &st.cfg;

    bool have_key = cfg->telnyx_public_key && *cfg->telnyx_public_key;
    if (have_key && ingress_sig_key_parse(cfg->telnyx_public_key, &key, err) != 0) {
        fprintf(stderr, "ingress: configuration error: telnyx_public_key: %s\n", err);
        exit(2);
    }
    if (!cfg->allow_unsigned_webhooks) {
        if (!have_key) {
            fprintf(stderr, "ingress: configuration error: telnyx_public_key is not set; refusing "
                            "to accept unverified webhooks (set allow_unsigned_webhooks = true "
                            "to run without signature checks)\n");
            exit(2);
        }
        keyp = &key;
    } else {
        log_always(LOG_WARN, "allow_unsigned_webhooks = true: webhook signatures are NOT verified%s",
                   have_key ? " (telnyx_public_key is ignored)" : "");
    }

    /* One ingress per data directory: it alone writes the journal and binds
     * verifier_endpoint. */
    stage_claim_or_exit(&st);
    ingress_metrics_init(&metrics);
    char *jdir = xasprintf("%s/%s", cfg->data_dir, JOURNAL_SUBDIR);
    if (tg_mkdir_p(jdir, err) != 0)
        log_fatal("journal directory: %s", err);

    /* 64 request threads would each get a malloc arena (up to 8 per core),
     * every one keeping its own freed memory: two arenas hold the RSS at
     * what is in use, and the lock is short (a body and an answer each). */
    mallopt(M_ARENA_MAX, 2);
    /* Claim the port first: a second ingress must not touch the journal or
     * the verifier endpoint of a running one. */
    mg_init_library(0);
    struct ingress_http *http = NULL;
    struct ingress_http_opts ho = {
        .listen = cfg->http_listen,
        .threads = cfg->http_threads,
        .request_timeout_ms = cfg->http_request_timeout_ms,
        .max_body_bytes = cfg->max_body_bytes,
        .tolerance_s = cfg->signature_tolerance_s,
        .key = keyp,
        .metrics = &metrics,
    };
    if (ingress_http_start(&ho, &http, err) != 0) {
        log_error("%s", err);
        fprintf(stderr, "ingress: %s\n", err);
        exit(1);
    }

    uint64_t next_jseq = 0;
    if (journal_recover(jdir, &next_jseq, err) != 0)
        log_fatal("journal recovery: %s", err);
    char *progress_path = xasprintf("%s/%s", jdir, INGRESS_REDELIVER_PROGRESS_FILE);
    char *parked_dir = xasprintf("%s/%s", jdir, INGRESS_REDELIVER_PARKED_DIR);
    struct ingress_redeliver *tracker = tracker_load(cfg, jdir, progress_path, &next_jseq);
    /* The last batch before a crash may have been published but not synced:
     * never hand its jseqs out again (a batch is at most the queue). */
    next_jseq += INGRESS_JOURNAL_MAX_QUEUE;
    void *sub = stage_socket(&st, ZMQ_SUB, cfg->progress_endpoint, false, PROGRESS_RCVHWM);
    if (zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0)
        log_fatal("subscribe to %s: %s", cfg->progress_endpoint, zmq_strerror(zmq_errno()));
    struct ingress_journal *journal = NULL;
    struct ingress_journal_opts jo = {
        .dir = jdir,
        .next_jseq = next_jseq,
        .max_file_bytes = (uint64_t)cfg->journal_max_bytes,
        .push = stage_socket(&st, ZMQ_PUSH, cfg->verifier_endpoint, true, 0),
        .metrics = &metrics,
        .tracker = tracker,
        .progress_sub = sub,
        .spine_push = stage_socket(&st, ZMQ_PUSH, cfg->spine_endpoint, false, 0),
        .actor = cfg->namespace_,
        .progress_path = progress_path,
        .parked_dir = parked_dir,
        .redeliver_after_ms = (uint64_t)cfg->redeliver_after_ms,
        .retention_s = cfg->journal_retention_s,
    };
    if (ingress_journal_start(&jo, &journal, err) != 0)
        log_fatal("journal: %s", err);
    ingress_http_attach(http, journal);
    log_info("listening on %s, journal %s (next jseq %llu), verifiers at %s, signatures %s",
             cfg->http_listen, jdir, (unsigned long long)next_jseq, cfg->verifier_endpoint,
             keyp ? "verified" : "NOT verified");

    zmq_pollitem_t none[1];
    while (!st.stopping) {
        if (stage_poll(&st, none, 0, STAGE_STATUS_PERIOD_MS) < 0)
            log_fatal("poll: %s", zmq_strerror(zmq_errno()));
        stage_heap_trim(&st, true);     /* the work happens in the HTTP and journal threads */
        status_write(&st, &metrics);
    }

    ingress_http_stop(&http);       /* finishes the requests in flight */
    ingress_journal_stop(&journal); /* finishes its batch, closes the socket */
    mg_exit_library();
    log_info("stopped");
    free(progress_path);
    free(parked_dir);
    free(jdir);
    stage_fini(&st);
    return 0;
}
