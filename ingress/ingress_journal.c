/*
 * ingress_journal.c - group-commit journal writer and publication of
 * journaled webhooks to the verifiers (see ingress_journal.h).  Used by the
 * ingress.
 *
 * Threads: any number of CivetWeb workers call ingress_journal_append(); one
 * writer thread owns the dump file and the PUSH socket.  A waiter lives on
 * its caller's stack:
 *
 *   QUEUED --writer takes batch--> (written, fdatasync) --> DURABLE (0)
 *      |                                   \--> FAILED (-1, batch error)
 *      \--waited > max_wait_ms when taken--> FAILED (-1, "overloaded")
 *
 * After a durable batch the writer encodes one WEBHOOK message per record
 * (before waking the waiters, whose records die with their stack frame),
 * wakes them, then sends the messages without blocking; what cannot be sent
 * (no verifier, high-water mark) waits in a bounded in-memory list and is
 * retried on every cycle.
 */
#include "ingress_journal.h"
#include "log.h"
#include "msg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#define WRITER_RETRY_MS 100     /* wake-up period while messages are pending */

enum waiter_state { W_QUEUED, W_DURABLE, W_FAILED };

struct waiter {
    const struct journal_record *rec;
    uint64_t enq_ms;            /* monotonic */
    uint64_t jseq;
    enum waiter_state state;
    char err[ERR_LEN];
    struct waiter *next;
};

struct pending {
    struct pending *next;
    size_t len;
    uint8_t data[];
};

struct ingress_journal {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* writer: queue non-empty or stopping */
    pthread_cond_t done;        /* waiters: some state changed */
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
    bool must_rotate;           /* current file may hold a partial record */
    uint64_t next_jseq;
    uint64_t max_file_bytes;
    size_t max_queue;
    uint64_t max_wait_ms;
    void *push;
    struct pending *p_head, *p_tail;
    size_t p_count;
    bool p_dropping;            /* logged the overflow, until it drains */
    struct ingress_metrics *m;
};

static int file_open(struct ingress_journal *j, uint64_t first_jseq, char *err)
{
    char name[JOURNAL_NAME_LEN];
    struct stat st;

    journal_file_name(first_jseq, name);
    char *path = xasprintf("%s/%s", j->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
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
    if (j->fd >= 0)
        close(j->fd);
    j->fd = fd;
    j->file_size = (uint64_t)st.st_size;
    j->must_rotate = false;
    log_debug("journal: writing %s", path);
    free(path);
    return 0;
}

/* ---- publication (writer thread) ---- */

static void pending_push(struct ingress_journal *j, const uint8_t *data, size_t len)
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
                     "(they stay in the journal)", INGRESS_JOURNAL_MAX_PENDING);
        j->p_dropping = true;
    }
    struct pending *p = xmalloc(sizeof *p + len);
    p->next = NULL;
    p->len = len;
    memcpy(p->data, data, len);
    if (j->p_tail)
        j->p_tail->next = p;
    else
        j->p_head = p;
    j->p_tail = p;
    j->p_count++;
}

/* Send pending messages in order until the socket would block. */
static void pending_flush(struct ingress_journal *j)
{
    while (j->push && j->p_head) {
        struct pending *p = j->p_head;
        if (zmq_send(j->push, p->data, p->len, ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                log_error("journal: send to verifiers: %s", zmq_strerror(errno));
            break;
        }
        j->p_head = p->next;
        if (!j->p_head)
            j->p_tail = NULL;
        free(p);
        j->p_count--;
        atomic_fetch_add(&j->m->published, 1);
    }
    if (j->p_count == 0)
        j->p_dropping = false;
    atomic_store(&j->m->publish_pending, j->p_count);
}

/* ---- batches (writer thread) ---- */

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
 * Write and sync one batch.  Sets each waiter's jseq (0 and w->err when the
 * record cannot be encoded); states are left to the caller, which changes
 * them under the lock.  Returns 0 when the batch is durable, -1 with err.
 */
static int batch_write(struct ingress_journal *j, struct waiter *batch, char *err)
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
        r.jseq = jseq;
        if (journal_record_encode(&sb, &r, why) != 0) {
            w->jseq = 0;
            snprintf(w->err, sizeof w->err, "%s", why);
            continue;
        }
        w->jseq = jseq++;
        n++;
    }
    if (n == 0) {
        msgpack_sbuffer_destroy(&sb);
        return 0;
    }

    int rc = 0;
    if (tg_write_all(j->fd, sb.data, sb.size) != 0) {
        rc = tg_err(err, "journal write: %s", strerror(errno));
    } else {
        uint64_t t0 = tg_mono_ns();
        if (fdatasync(j->fd) != 0)
            rc = tg_err(err, "journal fdatasync: %s", strerror(errno));
        ingress_metrics_hist_observe(&j->m->fsync_latency, tg_mono_ns() - t0);
    }
    if (rc != 0) {
        /* Leave no partial record behind; if even that fails, burn the
         * jseqs and continue in a new file so every jseq stays unique. */
        if (ftruncate(j->fd, (off_t)j->file_size) != 0) {
            log_error("journal: cannot truncate after a failed write (%s); "
                      "starting a new file", strerror(errno));
            j->must_rotate = true;
            j->next_jseq = jseq;
        }
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    j->file_size += sb.size;
    j->next_jseq = jseq;
    msgpack_sbuffer_destroy(&sb);
    return 0;
}

/* Encode a WEBHOOK message for every durable record of batch. */
static void batch_publish_prepare(struct ingress_journal *j, struct waiter *batch)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (struct waiter *w = batch; w; w = w->next) {
        if (w->jseq == 0)
            continue;
        struct msg_webhook m = {
            .jseq = w->jseq, .recv_us = w->rec->recv_us, .attempt = 1,
            .body = w->rec->body, .body_len = w->rec->body_len,
        };
        sb.size = 0;
        msg_webhook_encode(&sb, &m);
        if (j->push)
            pending_push(j, (const uint8_t *)sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void *writer_main(void *arg)
{
    struct ingress_journal *j = arg;
    char err[ERR_LEN];

    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->head && !j->stopping) {
            if (j->p_count == 0) {
                pthread_cond_wait(&j->work, &j->mu);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += WRITER_RETRY_MS * 1000000L;
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
        bool shed = false;
        struct waiter *keep = NULL, **kt = &keep;
        for (struct waiter *w = batch, *next; w; w = next) {
            next = w->next;     /* a shed waiter may return as soon as we unlock */
            if (now - w->enq_ms > j->max_wait_ms) {
                w->state = W_FAILED;
                snprintf(w->err, sizeof w->err, "overloaded: waited %" PRIu64 " ms for the journal",
                         now - w->enq_ms);
                atomic_fetch_add(&j->m->journal_shed, 1);
                shed = true;
            } else {
                w->next = NULL;
                *kt = w;
                kt = &w->next;
            }
        }
        batch = keep;
        if (shed)
            pthread_cond_broadcast(&j->done);
        pthread_mutex_unlock(&j->mu);

        /* Waiters that are still QUEUED stay blocked until we broadcast, so
         * their records are safe to read here without the lock. */
        size_t n = 0;
        for (struct waiter *w = batch; w; w = w->next)
            n++;
        int rc = n ? batch_write(j, batch, err) : 0;
        if (n && rc == 0) {
            batch_publish_prepare(j, batch);
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
        pthread_cond_broadcast(&j->done);
        pthread_mutex_unlock(&j->mu);

        pending_flush(j);
        /* Re-publication of journaled webhooks the spine has not confirmed
         * (driven by its PROGRESS stream on progress_endpoint) will be added
         * here: the writer thread owns the PUSH socket and is the only place
         * that may send on it. */
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);

    pending_flush(j);
    if (j->p_count)
        log_warn("journal: %zu journaled webhooks not yet handed to a verifier at shutdown",
                 j->p_count);
    return NULL;
}

int ingress_journal_start(const struct ingress_journal_opts *opts, struct ingress_journal **out,
                          char *err)
{
    struct ingress_journal *j = xcalloc(1, sizeof *j);
    pthread_condattr_t ca;

    j->fd = -1;
    j->dir = xstrdup(opts->dir);
    j->next_jseq = opts->next_jseq ? opts->next_jseq : 1;
    j->max_file_bytes = opts->max_file_bytes;
    j->max_queue = opts->max_queue ? opts->max_queue : INGRESS_JOURNAL_MAX_QUEUE;
    j->max_wait_ms = opts->max_wait_ms ? opts->max_wait_ms : INGRESS_JOURNAL_MAX_WAIT_MS;
    j->push = opts->push;
    j->m = opts->metrics;
    err[0] = '\0';
    if (file_open(j, j->next_jseq, err) != 0)
        goto fail;

    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&j->done, NULL);
    int rc = pthread_create(&j->thread, NULL, writer_main, j);
    if (rc != 0) {
        tg_err(err, "pthread_create: %s", strerror(rc));
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->work);
        pthread_cond_destroy(&j->done);
        goto fail;
    }
    *out = j;
    return 0;
fail:
    if (j->fd >= 0)
        close(j->fd);
    if (j->push)
        zmq_close(j->push);
    free(j->dir);
    free(j);
    return -1;
}

int ingress_journal_append(struct ingress_journal *j, const struct journal_record *rec,
                           uint64_t *jseq_out, char *err)
{
    struct waiter w = {.rec = rec, .state = W_QUEUED};

    pthread_mutex_lock(&j->mu);
    if (j->stopping) {
        pthread_mutex_unlock(&j->mu);
        return tg_err(err, "shutting down");
    }
    if (j->qlen >= j->max_queue) {
        pthread_mutex_unlock(&j->mu);
        atomic_fetch_add(&j->m->journal_shed, 1);
        return tg_err(err, "overloaded: %zu webhooks already wait for the journal", j->max_queue);
    }
    w.enq_ms = tg_mono_ms();    /* under the lock: never older than the head */
    if (j->head && w.enq_ms - j->head->enq_ms > j->max_wait_ms) {
        uint64_t age = w.enq_ms - j->head->enq_ms;
        pthread_mutex_unlock(&j->mu);
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
    while (w.state == W_QUEUED)
        pthread_cond_wait(&j->done, &j->mu);
    pthread_mutex_unlock(&j->mu);

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
    if (j->fd >= 0)
        close(j->fd);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->work);
    pthread_cond_destroy(&j->done);
    free(j->dir);
    free(j);
    *jp = NULL;
}
