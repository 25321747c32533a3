/*
 * ingress_journal.c - group-commit journal writer and publication of
 * journaled webhooks to the verifiers (see ingress_journal.h).  Used by the
 * ingress.
 *
 * Threads: any number of CivetWeb workers call ingress_journal_append(); one
 * writer thread owns the dump file and the PUSH socket.  A waiter lives on
 * its caller's stack and sleeps on its own semaphore, which the writer posts
 * once the waiter's state is final (one wake-up per waiter, no herd of
 * threads re-taking the queue lock after a broadcast):
 *
 *   QUEUED --writer takes batch--> (written, fdatasync) --> DURABLE (0)
 *      |                                   \--> FAILED (-1, batch error)
 *      \--waited > max_wait_ms when taken--> FAILED (-1, "overloaded")
 *
 * Once a batch is written (before its fdatasync) the writer encodes one
 * WEBHOOK message per record, records where each one lives in the tracker
 * and sends the messages without blocking, so the verifiers work while the
 * disk syncs; then it syncs and wakes the waiters, who answer 200 only now.
 * What cannot be sent (no verifier, high-water mark) waits, in order, in a
 * bounded in-memory list and then as bare jseqs read back from the journal
 * (see unsent_push), retried on every cycle.  A record may thus be
 * processed although its sync then fails or the ingress dies first: the
 * sender got no 200 and re-delivers, and the spine de-duplicates by webhook.
 * The jseqs of such a batch are never handed out again (protocol.md §6):
 * after a failed sync they are skipped, after a restart the first
 * INGRESS_JOURNAL_MAX_QUEUE are (at most one batch, of at most that many
 * records, is ever unsynced).
 *
 * Between batches, and at least every WRITER_TICK_MS (WRITER_BACKLOG_TICK_MS
 * while webhooks wait for a verifier), the writer publishes what waits and
 * runs the recovery side (redeliver_tick): it drains the spine's PROGRESS reports
 * from its SUB socket into the tracker, re-publishes or parks what is due,
 * saves the low mark and prunes processed dump files.  Everything touching
 * the tracker and the three sockets happens in this one thread.
 *
 * Pre-filled files: when a write makes a file longer, its fdatasync must
 * also commit the new size and blocks to the file system's own journal (on
 * ext4 one more disk write and a wake-up of its journal thread, per batch).
 * So the writer keeps zeros written ahead of its records (prefill, after a
 * batch's waiters are woken) and writes each batch over them; most syncs
 * then flush data pages only.  Readers take an all-zero rest of a file as
 * its end (journal.h).  The zeros are cut off when the file is rotated or
 * closed, and by recovery after a crash.
 */
#include "ingress_journal.h"
#include "log.h"
#include "msg.h"
#include "stage.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#define WRITER_TICK_MS 100          /* wake-up period between batches */
#define WRITER_BACKLOG_TICK_MS 5    /* ... while webhooks wait for a verifier */
#define WRITER_SLICE_NS 100000      /* the writer's scheduler slice (stage_thread_short_slice) */
#define REDELIVER_ROUND_MS 250      /* re-publication rounds */
#define REDELIVER_ROUND_MAX 2000    /* records looked at per round */
#define REDELIVER_PARK_MAX 64       /* parks (file + fsync) per round */
#define PROGRESS_SAVE_MS 1000       /* low mark saved at most this often */
#define PRUNE_MS 10000              /* dump file deletion checks */
#define PROGRESS_DRAIN_MAX 10000    /* PROGRESS messages taken per tick */
#define SPINE_SILENT_MS 3000        /* no PROGRESS this long: spine is down */

enum waiter_state { W_QUEUED, W_DURABLE, W_FAILED };

struct waiter {
    const struct journal_record *rec;
    uint64_t enq_ms;            /* monotonic */
    uint64_t jseq;
    uint64_t off;               /* where its record starts in the file */
    uint32_t len;               /* record length, header included */
    enum waiter_state state;
    char err[ERR_LEN];
    sem_t wake;                 /* posted once its state is final */
    struct waiter *next;
};

struct pending {
    struct pending *next;
    uint64_t jseq;
    size_t len;
    uint8_t data[];
};

struct ingress_journal {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* writer: queue non-empty or stopping */
    struct waiter *head, *tail; /* queue, under mu */
    size_t qlen;
    bool stopping;
    bool failed;                /* last batch failed; reason in health */
    char health[ERR_LEN];
    pthread_t thread;

    /* writer thread only */
    char *dir;
    int fd;
    uint64_t file_size;         /* bytes of good records in the current file */
    uint64_t filled;            /* zeros from file_size up to here (prefill) */
    bool must_rotate;           /* current file may hold a partial record */
    uint64_t next_jseq;
    uint64_t max_file_bytes;
    size_t max_queue;
    uint64_t max_wait_ms;
    int (*sync)(int fd);
    void *push;
    struct pending *p_head, *p_tail;
    size_t p_count;
    bool p_dropping;            /* logged the overflow, until it drains */
    uint64_t *unsent;           /* ring of jseqs published from the journal, not memory */
    size_t u_head, u_len;
    struct ingress_metrics *m;

    /* recovery side (writer thread only) */
    uint64_t cur_file;          /* first jseq (name) of the file being written */
    struct ingress_redeliver *tr;
    void *sub, *spine;
    char *actor, *progress_path, *parked_dir;
    int64_t retention_s;
    uint64_t after_ms;
    uint64_t next_round_ms, next_save_ms, next_prune_ms;    /* monotonic */
    uint64_t last_progress_ms;  /* monotonic; 0 = never heard */
    uint64_t started_ms;
    bool spine_silent;          /* logged that the spine stopped reporting */
    uint64_t saved_low;
    bool save_failed, park_failed;
    int rd_fd;                  /* cached read descriptor of dump file rd_file */
    uint64_t rd_file;
};

/* Close the current file, without the zeros after its last record. */
static void file_close(struct ingress_journal *j)
{
    if (j->fd < 0)
        return;
    if (j->filled > j->file_size && ftruncate(j->fd, (off_t)j->file_size) != 0)
        log_warn("journal: cannot cut the zeros after the last record (%s); readers stop at them",
                 strerror(errno));
    close(j->fd);
    j->fd = -1;
    j->filled = 0;
}

static int file_open(struct ingress_journal *j, uint64_t first_jseq, char *err)
{
    char name[JOURNAL_NAME_LEN];
    struct stat st;

    journal_file_name(first_jseq, name);
    char *path = xasprintf("%s/%s", j->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        tg_err(err, "open %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (fstat(fd, &st) != 0 || journal_dir_sync(j->dir, err) != 0) {
        if (err[0] == '\0')
            tg_err(err, "fstat %s: %s", path, strerror(errno));
        close(fd);
        free(path);
        return -1;
    }
    file_close(j);
    j->fd = fd;
    j->file_size = (uint64_t)st.st_size;    /* recovery cut any zeros off */
    j->filled = j->file_size;
    j->must_rotate = false;
    if (j->cur_file != first_jseq && st.st_size == 0)
        atomic_fetch_add(&j->m->journal_files, 1);
    j->cur_file = first_jseq;
    log_debug("journal: writing %s", path);
    free(path);
    return 0;
}

/* ---- publication (writer thread) ---- */

static int record_read(struct ingress_journal *j, const struct ingress_redeliver_entry *e,
                       struct journal_record *rec, char *err);

/* Publication order: the pending list (messages in memory), then the
 * unsent ring (jseqs whose records are read back from the journal when
 * their turn comes).  Once INGRESS_JOURNAL_MAX_PENDING messages wait in
 * memory, new records only join the ring, so a slow pipeline costs the
 * ingress 8 bytes per waiting webhook and they still go out in order as soon
 * as the verifiers take them.  Beyond the ring (or without a tracker) the
 * record is left to the re-delivery timer. */
static bool unsent_push(struct ingress_journal *j, uint64_t jseq)
{
    if (!j->tr || j->u_len == INGRESS_JOURNAL_MAX_UNSENT)
        return false;
    j->unsent[(j->u_head + j->u_len++) % INGRESS_JOURNAL_MAX_UNSENT] = jseq;
    return true;
}

static void unsent_pop(struct ingress_journal *j)
{
    j->u_head = (j->u_head + 1) % INGRESS_JOURNAL_MAX_UNSENT;
    j->u_len--;
}

/*
 * Send the journaled record rec (tracked as e) to the verifiers without
 * blocking, as its next attempt, and note it published at now.  0 sent, -1
 * not (the socket is full, or an error, logged with what: "send" or
 * "re-publish").
 */
static int publish_record(struct ingress_journal *j, const struct ingress_redeliver_entry *e,
                          const struct journal_record *rec, uint64_t now, const char *what)
{
    msgpack_sbuffer sb;
    struct msg_webhook m = {
        .jseq = e->jseq, .recv_us = rec->recv_us, .attempt = e->attempts + 1,
        .body = rec->body, .body_len = rec->body_len,
    };
    msgpack_sbuffer_init(&sb);
    msg_webhook_encode(&sb, &m);
    int rc = stage_send(j->push, sb.data, sb.size, ZMQ_DONTWAIT);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        if (errno != EAGAIN)
            log_error("journal: %s to verifiers: %s", what, zmq_strerror(errno));
        return -1;
    }
    ingress_redeliver_published(j->tr, e->jseq, now);
    atomic_fetch_add(&j->m->published, 1);
    return 0;
}

/* Can the PUSH socket take a message now (a verifier has room)? */
static bool push_writable(struct ingress_journal *j)
{
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(j->push, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLOUT);
}

/* Publish from the ring while the socket takes messages.  The writer tries
 * every WRITER_BACKLOG_TICK_MS, also while no verifier runs at all: no
 * record is read back unless the socket has room for one. */
static void unsent_flush(struct ingress_journal *j)
{
    char err[ERR_LEN];
    if (!j->push || !j->u_len || !push_writable(j))
        return;
    while (j->u_len) {
        uint64_t jseq = j->unsent[j->u_head];
        struct ingress_redeliver_entry e;
        struct journal_record rec;
        if (!ingress_redeliver_find(j->tr, jseq, &e)) {
            unsent_pop(j);          /* acknowledged meanwhile (a re-delivery got there) */
            continue;
        }
        if (record_read(j, &e, &rec, err) != 0) {
            log_error("journal: record %" PRIu64 " cannot be read back (%s); left to re-delivery",
                      jseq, err);
            unsent_pop(j);
            continue;
        }
        int rc = publish_record(j, &e, &rec, tg_mono_ms(), "send");
        journal_record_free(&rec);
        if (rc != 0)
            break;
        unsent_pop(j);
    }
}

static void pending_push(struct ingress_journal *j, uint64_t jseq, const uint8_t *data, size_t len)
{
    if (j->p_count >= INGRESS_JOURNAL_MAX_PENDING) {
        struct pending *old = j->p_head;
        j->p_head = old->next;
        if (!j->p_head)
            j->p_tail = NULL;
        free(old);
        j->p_count--;
        atomic_fetch_add(&j->m->publish_dropped, 1);
        if (!j->p_dropping)
            log_warn("journal: %d webhooks await a verifier; dropping the oldest from memory "
                     "(they stay in the journal and are re-published when due)",
                     INGRESS_JOURNAL_MAX_PENDING);
        j->p_dropping = true;
    }
    struct pending *p = xmalloc(sizeof *p + len);
    p->next = NULL;
    p->jseq = jseq;
    p->len = len;
    memcpy(p->data, data, len);
    if (j->p_tail)
        j->p_tail->next = p;
    else
        j->p_head = p;
    j->p_tail = p;
    j->p_count++;
}

/* Send pending messages, then the unsent ring, in order until the socket
 * would block. */
static void pending_flush(struct ingress_journal *j)
{
    while (j->push && j->p_head) {
        struct pending *p = j->p_head;
        if (stage_send(j->push, p->data, p->len, ZMQ_DONTWAIT) != 0) {
            if (errno != EAGAIN)
                log_error("journal: send to verifiers: %s", zmq_strerror(errno));
            break;
        }
        j->p_head = p->next;
        if (!j->p_head)
            j->p_tail = NULL;
        if (j->tr)
            ingress_redeliver_published(j->tr, p->jseq, tg_mono_ms());
        free(p);
        j->p_count--;
        atomic_fetch_add(&j->m->published, 1);
    }
    if (!j->p_head)
        unsent_flush(j);
    if (j->p_count == 0 && j->u_len == 0)
        j->p_dropping = false;
    atomic_store(&j->m->publish_pending, j->p_count + j->u_len);
}

/* ---- batches (writer thread) ---- */

/* Wake every waiter of list; each returns (and its frame dies) at once. */
static void waiters_wake(struct waiter *list)
{
    for (struct waiter *w = list, *next; w; w = next) {
        next = w->next;
        sem_post(&w->wake);
    }
}

static void batch_fail(struct waiter *batch, const char *reason)
{
    for (struct waiter *w = batch; w; w = w->next) {
        if (w->state != W_QUEUED)
            continue;
        w->state = W_FAILED;
        snprintf(w->err, sizeof w->err, "%s", reason);
    }
}

/*
 * Cut the file back to its last good record after a failed write or sync.
 * The batch's jseqs (up to after) may be handed out again only if nobody saw
 * them (reuse) and the cut worked; if even the cut fails, writing continues
 * in a new file so no partial record is ever followed by another.
 */
static void batch_unwrite(struct ingress_journal *j, bool reuse, uint64_t after)
{
    j->filled = j->file_size;
    if (ftruncate(j->fd, (off_t)j->file_size) != 0) {
        log_error("journal: cannot truncate after a failed write (%s); starting a new file",
                  strerror(errno));
        j->must_rotate = true;
        reuse = false;
    }
    if (!reuse)
        j->next_jseq = after;
}

/*
 * Write one batch to the dump file, without syncing it.  Sets each waiter's
 * jseq (0 and w->err when the record cannot be encoded); states are left to
 * the caller, which changes them under the lock.  Returns the bytes written
 * (0 when nothing could be encoded), or -1 with err; a failed write leaves no
 * partial record behind and its jseqs are handed out again (nobody saw them).
 */
static ssize_t batch_write(struct ingress_journal *j, struct waiter *batch, char *err)
{
    msgpack_sbuffer sb;
    uint64_t jseq = j->next_jseq;
    size_t n = 0;
    char why[ERR_LEN];

    err[0] = '\0';
    if (j->fd < 0 || j->must_rotate || j->file_size >= j->max_file_bytes) {
        if (file_open(j, jseq, err) != 0)
            return -1;
    }
    msgpack_sbuffer_init(&sb);
    for (struct waiter *w = batch; w; w = w->next) {
        struct journal_record r = *w->rec;
        size_t before = sb.size;
        r.jseq = jseq;
        if (journal_record_encode(&sb, &r, why) != 0) {
            w->jseq = 0;
            snprintf(w->err, sizeof w->err, "%s", why);
            continue;
        }
        w->off = j->file_size + before;
        w->len = (uint32_t)(sb.size - before);
        w->jseq = jseq++;
        n++;
    }
    ssize_t written = (ssize_t)sb.size;
    if (n > 0 && tg_pwrite_all(j->fd, sb.data, sb.size, j->file_size) != 0) {
        tg_err(err, "journal write: %s", strerror(errno));
        batch_unwrite(j, true, jseq);
        written = -1;
    }
    msgpack_sbuffer_destroy(&sb);
    return n > 0 ? written : 0;
}

/*
 * Make the batch written by batch_write durable.  Its records may already be
 * published, so on failure their jseqs are skipped, not reused: the tracker
 * forgets them and the next record gets the jseq after the batch.
 */
static int batch_sync(struct ingress_journal *j, struct waiter *batch, size_t bytes, char *err)
{
    uint64_t after = j->next_jseq;
    for (struct waiter *w = batch; w; w = w->next)
        if (w->jseq >= after)
            after = w->jseq + 1;

    uint64_t t0 = tg_mono_ns();
    int rc = j->sync(j->fd);
    ingress_metrics_hist_observe(&j->m->fsync_latency, tg_mono_ns() - t0);
    if (rc == 0) {
        j->file_size += bytes;
        j->next_jseq = after;
        return 0;
    }
    tg_err(err, "journal fdatasync: %s", strerror(errno));
    for (struct waiter *w = batch; j->tr && w; w = w->next)
        if (w->jseq != 0)
            ingress_redeliver_drop(j->tr, w->jseq);
    batch_unwrite(j, false, after);
    return -1;
}

/*
 * Keep zeros written after the records of the current file (see the top of
 * this file; tg_zeros_ahead), up to max_file_bytes, with their write-back
 * started now so that the next batch's sync need not wait for it.  A
 * failure (e.g. the disk is full) only costs speed; the next batch's write
 * reports the error.
 */
static void prefill(struct ingress_journal *j)
{
    if (j->fd < 0 || j->must_rotate)
        return;
    if (j->filled < j->file_size)
        j->filled = j->file_size;
    j->filled = tg_zeros_ahead(j->fd, j->file_size, j->filled, j->max_file_bytes);
}

/* Encode a WEBHOOK message for every written record of batch and start
 * tracking it (unpublished until the message is actually sent). */
static void batch_publish_prepare(struct ingress_journal *j, struct waiter *batch)
{
    msgpack_sbuffer sb;
    char err[ERR_LEN];
    uint64_t now = tg_mono_ms();
    msgpack_sbuffer_init(&sb);
    for (struct waiter *w = batch; w; w = w->next) {
        if (w->jseq == 0)
            continue;
        if (j->tr) {
            /* Re-armed when actually sent; if it is dropped from the
             * pending list instead, a round publishes it once due. */
            struct ingress_redeliver_entry e = {
                .jseq = w->jseq, .file = j->cur_file, .offset = w->off, .len = w->len,
                .due_ms = now + j->after_ms,
            };
            if (ingress_redeliver_add(j->tr, &e, err) != 0)
                log_panic("journal: tracker: %s", err);
        }
        if (!j->push)
            continue;
        if ((j->u_len || j->p_count >= INGRESS_JOURNAL_MAX_PENDING) && unsent_push(j, w->jseq))
            continue;
        struct msg_webhook m = {
            .jseq = w->jseq, .recv_us = w->rec->recv_us, .attempt = 1,
            .body = w->rec->body, .body_len = w->rec->body_len,
        };
        sb.size = 0;
        msg_webhook_encode(&sb, &m);
        pending_push(j, w->jseq, (const uint8_t *)sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* ---- recovery side (writer thread) ---- */

/* Read the tracked record e from its dump file (descriptor cached). */
static int record_read(struct ingress_journal *j, const struct ingress_redeliver_entry *e,
                       struct journal_record *rec, char *err)
{
    if (j->rd_fd < 0 || j->rd_file != e->file) {
        char name[JOURNAL_NAME_LEN];
        if (j->rd_fd >= 0)
            close(j->rd_fd);
        journal_file_name(e->file, name);
        char *path = xasprintf("%s/%s", j->dir, name);
        j->rd_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (j->rd_fd < 0) {
            tg_err(err, "open %s: %s", path, strerror(errno));
            free(path);
            return -1;
        }
        free(path);
        j->rd_file = e->file;
    }
    char why[ERR_LEN];
    if (journal_record_pread(j->rd_fd, e->offset, e->len, rec, why) != 0) {
        char name[JOURNAL_NAME_LEN];
        journal_file_name(e->file, name);
        return tg_err(err, "%s: %s", name, why);
    }
    if (rec->jseq != e->jseq) {
        tg_err(err, "record at offset %" PRIu64 " has jseq %" PRIu64 ", expected %" PRIu64,
               e->offset, rec->jseq, e->jseq);
        journal_record_free(rec);
        return -1;
    }
    return 0;
}

/* Apply every PROGRESS report waiting on the SUB socket. */
static void progress_drain(struct ingress_journal *j, uint64_t now)
{
    char err[ERR_LEN];
    for (int i = 0; j->sub && i < PROGRESS_DRAIN_MAX; i++) {
        zmq_msg_t m;
        enum stage_recv_result r = stage_recv(j->sub, &m, "journal: progress stream");
        if (r == STAGE_RECV_NONE)
            break;
        if (r == STAGE_RECV_DROPPED)
            continue;
        struct msg_progress p;
        int type = 0;
        if (msg_type_of(zmq_msg_data(&m), zmq_msg_size(&m), &type, err) != 0 ||
                   type != MSG_PROGRESS) {
            if (type != 0)
                tg_err(err, "message type %d", type);
            log_error("journal: dropped a bad message on the progress stream: %s", err);
        } else if (msg_progress_decode(zmq_msg_data(&m), zmq_msg_size(&m), &p, err) != 0) {
            log_error("journal: dropped a malformed PROGRESS: %s", err);
        } else {
            size_t acked = ingress_redeliver_ack_progress(j->tr, &p);
            log_debug("journal: PROGRESS low %" PRIu64 ", %zu done: %zu acknowledged, %zu left",
                      p.low, p.n_done, acked, ingress_redeliver_count(j->tr));
            msg_progress_free(&p);
            atomic_fetch_add(&j->m->progress_received, 1);
            if (j->spine_silent)
                log_info("journal: the spine reports progress again; re-publication resumes");
            j->spine_silent = false;
            j->last_progress_ms = now;
        }
        zmq_msg_close(&m);
    }
}

/* Park a poison record (first time) or re-send its park RESULT.  Returns 0
 * when the round may go on, -1 when it should stop (file not writable). */
static int park_one(struct ingress_journal *j, const struct ingress_redeliver_entry *e,
                    const struct journal_record *rec, bool first, uint64_t now)
{
    char err[ERR_LEN];
    char *path = NULL;
    if (first) {
        if (ingress_redeliver_park_write(j->parked_dir, e->jseq, rec->body, rec->body_len, &path,
                                         err) != 0) {
            if (!j->park_failed)
                log_error("journal: cannot park record %" PRIu64 ": %s; retrying", e->jseq, err);
            j->park_failed = true;
            return -1;
        }
        j->park_failed = false;
    } else {
        path = xasprintf("%s/%" PRIu64 ".json", j->parked_dir, e->jseq);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    ingress_redeliver_park_encode(&sb, e->jseq, e->attempts, rec->body, rec->body_len, j->actor,
                                  path);
    if (j->spine && stage_send(j->spine, sb.data, sb.size, ZMQ_DONTWAIT) != 0 && errno != EAGAIN)
        log_error("journal: send park RESULT for record %" PRIu64 ": %s", e->jseq,
                  zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
    ingress_redeliver_parked(j->tr, e->jseq, now);
    if (first) {
        atomic_fetch_add(&j->m->parked, 1);
        log_error("journal: webhook record %" PRIu64 " parked after %" PRIu32
                  " unacknowledged publications: %s (event tel.webhook_parked)",
                  e->jseq, e->attempts, path);
    }
    free(path);
    return 0;
}

/* One re-publication round: publish or park what is due, oldest first. */
static void redeliver_round(struct ingress_journal *j, uint64_t now)
{
    char err[ERR_LEN];
    size_t sent = 0, parks = 0;

    if (j->p_count > 0 || j->u_len > 0)
        return;     /* first publications still wait for a verifier */
    uint64_t since = j->last_progress_ms ? j->last_progress_ms : j->started_ms;
    if (j->last_progress_ms == 0 || now - j->last_progress_ms > SPINE_SILENT_MS) {
        if (!j->spine_silent && now - since > SPINE_SILENT_MS &&
            ingress_redeliver_count(j->tr) > 0) {
            log_warn("journal: no progress report from the spine for %" PRIu64 " ms; "
                     "re-publication and parking paused", now - since);
            j->spine_silent = true;
        }
        return;
    }
    for (int i = 0; i < REDELIVER_ROUND_MAX && parks < REDELIVER_PARK_MAX; i++) {
        struct ingress_redeliver_entry e;
        enum ingress_redeliver_action act = ingress_redeliver_due(j->tr, now, &e);
        if (act == INGRESS_REDELIVER_NONE)
            break;
        struct journal_record rec;
        if (record_read(j, &e, &rec, err) != 0) {
            log_error("journal: record %" PRIu64 " cannot be re-read (%s); it is no longer "
                      "re-published", e.jseq, err);
            ingress_redeliver_drop(j->tr, e.jseq);
            continue;
        }
        int stop = 0;
        if (act == INGRESS_REDELIVER_PUBLISH) {
            if (publish_record(j, &e, &rec, now, "re-publish") != 0) {
                stop = 1;
            } else {
                atomic_fetch_add(&j->m->republished, 1);
                sent++;
            }
        } else {
            stop = park_one(j, &e, &rec, act == INGRESS_REDELIVER_PARK, now);
            parks++;
        }
        journal_record_free(&rec);
        if (stop)
            break;
    }
    if (sent)
        log_info("journal: re-published %zu unacknowledged webhook(s); %zu still unacknowledged",
                 sent, ingress_redeliver_count(j->tr));
}

/* Tell the spine our low mark, so it can stop waiting for jseqs that were
 * skipped (SETTLED; sent every time: the spine may have restarted). */
static void settled_send(struct ingress_journal *j, uint64_t low)
{
    msgpack_sbuffer sb;
    struct msg_settled m = {.low = low};
    if (!j->spine)
        return;
    msgpack_sbuffer_init(&sb);
    msg_settled_encode(&sb, &m);
    if (stage_send(j->spine, sb.data, sb.size, ZMQ_DONTWAIT) != 0 && errno != EAGAIN)
        log_warn("journal: send low mark to the spine: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
}

static void progress_save(struct ingress_journal *j)
{
    char err[ERR_LEN];
    uint64_t low = ingress_redeliver_low(j->tr, j->next_jseq - 1);
    settled_send(j, low);
    if (low == j->saved_low)
        return;
    if (ingress_redeliver_progress_save(j->progress_path, low, err) != 0) {
        if (!j->save_failed)
            log_error("journal: saving the low mark: %s", err);
        j->save_failed = true;
        return;
    }
    if (j->save_failed)
        log_info("journal: low mark saved again");
    j->save_failed = false;
    j->saved_low = low;
}

static void prune(struct ingress_journal *j)
{
    char err[ERR_LEN];
    size_t deleted = 0, remaining = 0;
    uint64_t low = ingress_redeliver_low(j->tr, j->next_jseq - 1);
    int rc = journal_prune(j->dir, j->cur_file, low, j->retention_s,
                           (int64_t)(tg_now_ms() / 1000), &deleted, &remaining, err);
    if (rc != 0)
        log_error("journal: deleting processed dump files: %s", err);
    if (deleted) {
        if (j->rd_fd >= 0) {    /* it may point at a deleted file */
            close(j->rd_fd);
            j->rd_fd = -1;
        }
        atomic_fetch_add(&j->m->journal_files_deleted, deleted);
        log_info("journal: deleted %zu processed dump file(s) (every jseq <= %" PRIu64
                 " acknowledged)", deleted, low);
    }
    if (rc == 0 || deleted)
        atomic_store(&j->m->journal_files, remaining);
}

/* Everything the writer does between batches for acknowledgement,
 * re-publication, the saved low mark and the journal's lifecycle. */
static void redeliver_tick(struct ingress_journal *j, bool final)
{
    if (!j->tr)
        return;
    uint64_t now = tg_mono_ms();
    progress_drain(j, now);
    if (!final && now >= j->next_round_ms) {
        redeliver_round(j, now);
        j->next_round_ms = now + REDELIVER_ROUND_MS;
    }
    if (final || now >= j->next_save_ms) {
        progress_save(j);
        j->next_save_ms = now + PROGRESS_SAVE_MS;
    }
    if (!final && now >= j->next_prune_ms) {
        if (j->retention_s >= 0)
            prune(j);
        j->next_prune_ms = now + PRUNE_MS;
    }
    atomic_store(&j->m->unacked, ingress_redeliver_count(j->tr));
}

static void *writer_main(void *arg)
{
    struct ingress_journal *j = arg;
    char err[ERR_LEN];

    /* Every request waits on this thread: have it run as soon as it wakes. */
    stage_thread_short_slice(WRITER_SLICE_NS);
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->head && !j->stopping) {
            if (j->p_count == 0 && !j->tr) {
                pthread_cond_wait(&j->work, &j->mu);
                continue;
            }
            /* What waits for a verifier goes out as soon as one has room,
             * not a whole tick later. */
            long tick_ms = j->p_count || j->u_len ? WRITER_BACKLOG_TICK_MS : WRITER_TICK_MS;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += tick_ms * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&j->work, &j->mu, &ts) == ETIMEDOUT)
                break;
        }
        if (!j->head && j->stopping)
            break;

        /* Take the whole queue; shed what waited too long to be useful. */
        struct waiter *batch = j->head;
        j->head = j->tail = NULL;
        j->qlen = 0;
        atomic_store(&j->m->journal_queue_depth, 0);
        uint64_t now = tg_mono_ms();
        struct waiter *keep = NULL, **kt = &keep, *shed = NULL, **st = &shed;
        for (struct waiter *w = batch, *next; w; w = next) {
            next = w->next;
            w->next = NULL;
            if (now - w->enq_ms > j->max_wait_ms) {
                w->state = W_FAILED;
                snprintf(w->err, sizeof w->err, "overloaded: waited %" PRIu64 " ms for the journal",
                         now - w->enq_ms);
                atomic_fetch_add(&j->m->journal_shed, 1);
                *st = w;
                st = &w->next;
            } else {
                *kt = w;
                kt = &w->next;
            }
        }
        batch = keep;
        pthread_mutex_unlock(&j->mu);
        waiters_wake(shed);

        /* Waiters stay blocked until waiters_wake, so their records are
         * safe to read here without the lock. */
        size_t n = 0;
        for (struct waiter *w = batch; w; w = w->next)
            n++;
        ssize_t bytes = n ? batch_write(j, batch, err) : 0;
        int rc = bytes < 0 ? -1 : 0;
        if (bytes > 0) {
            /* Verifiers start on the batch while the disk syncs it. */
            batch_publish_prepare(j, batch);
            pending_flush(j);
            rc = batch_sync(j, batch, (size_t)bytes, err);
            if (rc == 0)
                atomic_fetch_add(&j->m->journal_batches, 1);
        }

        pthread_mutex_lock(&j->mu);
        if (n && rc != 0) {
            batch_fail(batch, err);
            atomic_fetch_add(&j->m->journal_failed_batches, 1);
            if (!j->failed)
                log_error("journal: %s; answering 503 until a write succeeds", err);
            j->failed = true;
            snprintf(j->health, sizeof j->health, "%s", err);
        } else if (n) {
            size_t ok = 0;
            for (struct waiter *w = batch; w; w = w->next) {
                if (w->jseq != 0) {
                    w->state = W_DURABLE;
                    ok++;
                } else {
                    w->state = W_FAILED;    /* could not be encoded; err set */
                }
            }
            atomic_fetch_add(&j->m->journal_records, ok);
            if (j->failed)
                log_info("journal: writes succeed again");
            j->failed = false;
            j->health[0] = '\0';
        }
        pthread_mutex_unlock(&j->mu);
        waiters_wake(batch);

        prefill(j);
        pending_flush(j);
        redeliver_tick(j, false);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);

    pending_flush(j);
    redeliver_tick(j, true);
    if (j->p_count)
        log_warn("journal: %zu journaled webhooks not yet handed to a verifier at shutdown",
                 j->p_count);
    return NULL;
}

/* Release the recovery side (sockets, tracker, read descriptor). */
static void recovery_free(struct ingress_journal *j)
{
    if (j->sub)
        zmq_close(j->sub);
    if (j->spine)
        zmq_close(j->spine);
    j->sub = j->spine = NULL;
    if (j->rd_fd >= 0)
        close(j->rd_fd);
    j->rd_fd = -1;
    ingress_redeliver_free(&j->tr);
    free(j->actor);
    free(j->progress_path);
    free(j->parked_dir);
    j->actor = j->progress_path = j->parked_dir = NULL;
}

int ingress_journal_start(const struct ingress_journal_opts *opts, struct ingress_journal **out,
                          char *err)
{
    struct ingress_journal *j = xcalloc(1, sizeof *j);
    pthread_condattr_t ca;

    j->fd = -1;
    j->dir = xstrdup(opts->dir);
    j->unsent = xcalloc(INGRESS_JOURNAL_MAX_UNSENT, sizeof *j->unsent);
    j->next_jseq = opts->next_jseq ? opts->next_jseq : 1;
    j->max_file_bytes = opts->max_file_bytes;
    /* A batch is at most the queue; the restart gap relies on it. */
    j->max_queue = opts->max_queue && opts->max_queue < INGRESS_JOURNAL_MAX_QUEUE
                       ? opts->max_queue : INGRESS_JOURNAL_MAX_QUEUE;
    j->max_wait_ms = opts->max_wait_ms ? opts->max_wait_ms : INGRESS_JOURNAL_MAX_WAIT_MS;
    j->sync = opts->sync ? opts->sync : fdatasync;
    j->push = opts->push;
    j->m = opts->metrics;
    j->rd_fd = -1;
    if (opts->push && opts->tracker) {
        j->tr = opts->tracker;
        j->sub = opts->progress_sub;
        j->spine = opts->spine_push;
        j->actor = xstrdup(opts->actor ? opts->actor : "");
        j->progress_path = opts->progress_path ? xstrdup(opts->progress_path)
                                               : xasprintf("%s/%s", opts->dir, INGRESS_REDELIVER_PROGRESS_FILE);
        j->parked_dir = opts->parked_dir ? xstrdup(opts->parked_dir)
                                         : xasprintf("%s/%s", opts->dir, INGRESS_REDELIVER_PARKED_DIR);
        j->retention_s = opts->retention_s;
        j->after_ms = opts->redeliver_after_ms;
        j->saved_low = UINT64_MAX;      /* save once at start */
        j->started_ms = tg_mono_ms();
    } else {
        struct ingress_redeliver *tr = opts->tracker;
        ingress_redeliver_free(&tr);
        if (opts->progress_sub)
            zmq_close(opts->progress_sub);
        if (opts->spine_push)
            zmq_close(opts->spine_push);
    }
    err[0] = '\0';
    if (file_open(j, j->next_jseq, err) != 0)
        goto fail;

    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->work, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&j->thread, NULL, writer_main, j);
    if (rc != 0) {
        tg_err(err, "pthread_create: %s", strerror(rc));
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->work);
        goto fail;
    }
    *out = j;
    return 0;
fail:
    if (j->fd >= 0)
        close(j->fd);
    if (j->push)
        zmq_close(j->push);
    recovery_free(j);
    free(j->unsent);
    free(j->dir);
    free(j);
    return -1;
}

int ingress_journal_append(struct ingress_journal *j, const struct journal_record *rec,
                           uint64_t *jseq_out, char *err)
{
    struct waiter w = {.rec = rec, .state = W_QUEUED};
    sem_init(&w.wake, 0, 0);

    pthread_mutex_lock(&j->mu);
    if (j->stopping) {
        pthread_mutex_unlock(&j->mu);
        sem_destroy(&w.wake);
        return tg_err(err, "shutting down");
    }
    if (j->qlen >= j->max_queue) {
        pthread_mutex_unlock(&j->mu);
        sem_destroy(&w.wake);
        atomic_fetch_add(&j->m->journal_shed, 1);
        return tg_err(err, "overloaded: %zu webhooks already wait for the journal", j->max_queue);
    }
    w.enq_ms = tg_mono_ms();    /* under the lock: never older than the head */
    if (j->head && w.enq_ms - j->head->enq_ms > j->max_wait_ms) {
        uint64_t age = w.enq_ms - j->head->enq_ms;
        pthread_mutex_unlock(&j->mu);
        sem_destroy(&w.wake);
        atomic_fetch_add(&j->m->journal_shed, 1);
        return tg_err(err, "overloaded: the journal writer is %" PRIu64 " ms behind", age);
    }
    if (j->tail)
        j->tail->next = &w;
    else
        j->head = &w;
    j->tail = &w;
    j->qlen++;
    atomic_store(&j->m->journal_queue_depth, j->qlen);
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->mu);
    while (sem_wait(&w.wake) != 0)
        ;                       /* EINTR */
    sem_destroy(&w.wake);

    if (w.state != W_DURABLE)
        return tg_err(err, "%s", w.err);
    *jseq_out = w.jseq;
    return 0;
}

int ingress_journal_health(struct ingress_journal *j, char *reason)
{
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    if (j->stopping) {
        rc = tg_err(reason, "shutting down");
    } else if (j->failed) {
        rc = tg_err(reason, "%s", j->health);
    } else if (j->head) {
        uint64_t age = tg_mono_ms() - j->head->enq_ms;
        if (age > j->max_wait_ms)
            rc = tg_err(reason, "overloaded: the journal writer is %" PRIu64 " ms behind", age);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void ingress_journal_stop(struct ingress_journal **jp)
{
    if (!jp || !*jp)
        return;
    struct ingress_journal *j = *jp;
    pthread_mutex_lock(&j->mu);
    j->stopping = true;
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);

    while (j->p_head) {
        struct pending *p = j->p_head;
        j->p_head = p->next;
        free(p);
    }
    if (j->push)
        zmq_close(j->push);
    file_close(j);
    recovery_free(j);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->work);
    free(j->unsent);
    free(j->dir);
    free(j);
    *jp = NULL;
}
