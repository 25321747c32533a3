/*
 * ingress_journal.h - the ingress's durable journal writer with group commit
 * (protocol.md section 3) and the publication of journaled webhooks to the
 * verifiers (protocol.md section 2.1).  Used by the ingress: CivetWeb worker
 * threads append, one writer thread owns the file and the PUSH socket.
 */
#ifndef INGRESS_JOURNAL_H
#define INGRESS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ingress_metrics.h"
#include "ingress_redeliver.h"
#include "journal.h"
#include "util.h"

#define INGRESS_JOURNAL_MAX_QUEUE 8192      /* waiting records before shedding */
#define INGRESS_JOURNAL_MAX_WAIT_MS 1000    /* oldest waiter age before shedding */
/* Unsent WEBHOOK messages kept in memory (~1.7 KB each); later ones wait
 * in the journal alone and are read back from disk in their turn, so a slow
 * pipeline costs the ingress no more than a few MB. */
#define INGRESS_JOURNAL_MAX_PENDING 1024
/* Further webhooks waiting for a verifier, kept as jseqs (8 bytes each) and
 * read back from the journal in turn; beyond it, the re-delivery timer. */
#define INGRESS_JOURNAL_MAX_UNSENT 65536

struct ingress_journal_opts {
    const char *dir;            /* DATA_DIR/journal, already recovered */
    uint64_t next_jseq;         /* from journal_recover() */
    uint64_t max_file_bytes;    /* rotate when the current file reaches this */
    size_t max_queue;           /* 0: INGRESS_JOURNAL_MAX_QUEUE */
    uint64_t max_wait_ms;       /* 0: INGRESS_JOURNAL_MAX_WAIT_MS */
    void *push;                 /* bound ZMQ_PUSH socket to the verifiers, or NULL
                                   (no publication); ownership is taken: only the
                                   writer thread uses and closes it */
    struct ingress_metrics *metrics;  /* required; must outlive the journal */

    /* Acknowledgement, re-publication and parking (protocol.md section 6).
     * Active when push and tracker are set; the writer thread owns all of
     * it (ZeroMQ sockets are not thread-safe), so no lock is involved. */
    struct ingress_redeliver *tracker; /* records already journaled but not yet
                                          acknowledged (from the start-up scan);
                                          ownership is taken, freed on stop */
    void *progress_sub;         /* ZMQ_SUB connected to progress_endpoint and
                                   subscribed to everything, or NULL; taken */
    void *spine_push;           /* ZMQ_PUSH connected to spine_endpoint for park
                                   RESULTs, or NULL; taken */
    const char *actor;          /* actor of tel.webhook_parked events (namespace) */
    const char *progress_path;  /* where the low mark is saved */
    const char *parked_dir;     /* where poison records are copied */
    uint64_t redeliver_after_ms;    /* the tracker's after_ms, for new records */
    int64_t retention_s;        /* delete processed dump files this much older; <0: never */

    int (*sync)(int fd);        /* NULL: fdatasync; tests inject failures */
};

struct ingress_journal;

/*
 * With a tracker, the writer thread also, between batches (about every
 * 100 ms): applies the spine's PROGRESS reports from progress_sub;
 * every ~250 ms re-publishes records due again (attempt + 1) or parks those
 * published max_attempts times (copy to parked_dir, tel.webhook_parked
 * RESULT to spine_push, re-sent until acknowledged) -- but only while the
 * spine reports, so a stopped spine does not get healthy records parked;
 * at most once a second saves the low mark to progress_path when it moved;
 * every ~10 s deletes dump files that are fully acknowledged and older
 * than retention_s.
 *
 * Open the first dump file (named by next_jseq; the directory is fsynced) and
 * start the writer thread.  0 and *out, or -1 with err (the push socket is
 * then closed).  Stop with ingress_journal_stop().
 */
int ingress_journal_start(const struct ingress_journal_opts *opts, struct ingress_journal **out,
                          char *err) TG_MUST_CHECK;

/*
 * Make one record durable: queue it and block until the writer's batch that
 * holds it was written and fdatasync'ed.  rec->jseq is ignored; the record is
 * only read and must stay valid until the call returns (the caller keeps
 * ownership).  Thread-safe.
 * Returns 0 and *jseq_out, or -1 with err when the record is NOT durable:
 * "overloaded" (queue full or writer stalled; nothing was queued), a write
 * or sync error of its batch, or shutdown in progress.  The caller answers
 * 503 so that Telnyx re-delivers.
 */
int ingress_journal_append(struct ingress_journal *j, const struct journal_record *rec,
                           uint64_t *jseq_out, char *err) TG_MUST_CHECK;

/* 0 when webhooks can be accepted, else -1 with the reason in reason
 * (last write/sync error until a batch succeeds again, or overload). */
int ingress_journal_health(struct ingress_journal *j, char *reason) TG_MUST_CHECK;

/*
 * Stop: refuse new appends, let the writer finish what is queued, try once
 * more to send pending messages, close the socket and the file, join the
 * thread, free and NULL *j.  No-op on NULL.
 */
void ingress_journal_stop(struct ingress_journal **j);

#endif
