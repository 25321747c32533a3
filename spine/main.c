/*
 * spine - the sole writer of the hash-chained event log.  Collects RESULT,
 * OUTCOME and APPEND messages, commits them in batches, then publishes the
 * committed events and progress and forwards new commands to the actuator.
 */
#include "log.h"
#include "msg.h"
#include "spine_store.h"
#include "stage.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 1000
/* Messages buffered per sender while the spine commits (~3 KB each); more
 * wait in the senders' queues, the journal and the actuator. */
#define SPINE_RCVHWM 256
#define UNMAP_MS 10              /* spinedb_unmap_pages period while committing */
#define UNMAP_EVERY_READS 64     /* ... and within a flush of deferred commands */
#define RESEND_MAX 1000          /* outbox commands re-sent per tick */
/* Outbox keys of commands the actuator could not take yet (its queue was
 * full), sent as soon as it can; beyond this many, the re-send timer
 * (command_resend_ms) picks them up. */
#define DEFERRED_MAX 65536
#define STOP_DRAIN_MS 3000       /* time allowed to drain on SIGTERM */
/* A committed batch waits at most this long for the next commit to make it
 * durable (finish_batch) before it is synced on its own. */
#define HOLD_MS 20
/* OUTCOMEs alone wait at most this long for a RESULT to share their commit
 * (take_input). */
#define OUTCOME_LINGER_MS 20

struct spine {
    struct stage st;
    struct spine_store *store;
    void *pull, *events_pub, *progress_pub, *actuator;
    struct spine_input *batch;  /* received, not yet committed: [0, n_in) */
    size_t batch_max, n_in;
    uint64_t linger_until;      /* OUTCOMEs alone are committed by then */
    struct spine_output out;
    /* A committed batch whose events and acknowledgement wait for the next
     * commit to make it durable (see finish_batch), with the progress report
     * encoded at its commit. */
    struct spine_output held;
    uint64_t held_commit;
    uint64_t held_until;        /* synced and published by then at the latest */
    msgpack_sbuffer held_progress;
    bool holding;
    bool actuator_blocked;
    uint64_t *deferred;         /* ring of outbox keys, oldest at d_head */
    size_t d_head, d_len;
    uint64_t batches, messages;
    uint64_t db_work;           /* commits and outbox reads: each maps database pages */
    /* Encoding buffer reused for every message sent (msgpack-c's first write
     * into a fresh buffer allocates 8 KiB). */
    msgpack_sbuffer wire;
};

/* Receive and decode messages without blocking, appending to the inputs
 * not yet committed until batch_max.  Returns how many were added. */
static size_t drain(struct spine *sp)
{
    size_t added = 0;
    char err[ERR_LEN];
    while (sp->n_in < sp->batch_max) {
        zmq_msg_t m;
        enum stage_recv_result r = stage_recv(sp->pull, &m, "spine_endpoint");
        if (r == STAGE_RECV_NONE)
            break;
        if (r == STAGE_RECV_DROPPED)
            continue;
        if (spine_input_decode(zmq_msg_data(&m), zmq_msg_size(&m), &sp->batch[sp->n_in], err) != 0) {
            log_error("dropped a malformed message: %s", err);
        } else {
            sp->n_in++;
            added++;
        }
        zmq_msg_close(&m);
    }
    return added;
}

/*
 * Tell the ingress what is processed: after a batch, the jseqs its RESULTs
 * carried (acked, new or repeated); once a second, the low watermark and the
 * first done jseqs above it.  A lost report only delays an acknowledgement:
 * the ingress re-publishes, and the repeat is acknowledged again.  The
 * report reflects the store as it is now, so it is encoded right after the
 * batch's commit and sent once that commit is durable.
 */
static void progress_encode(struct spine *sp, const struct spine_output *batch, msgpack_sbuffer *sb)
{
    struct msg_progress p;
    spine_store_progress(sp->store, &p, batch ? 0 : SPINE_PROGRESS_DONE_MAX);
    if (batch && batch->n_acked) {
        free(p.done);
        p.done = xcalloc(batch->n_acked, sizeof *p.done);
        memcpy(p.done, batch->acked, batch->n_acked * sizeof *p.done);
        p.n_done = batch->n_acked;
    }
    msg_progress_encode(sb, &p);
    msg_progress_free(&p);
}

static void progress_send(struct spine *sp, const msgpack_sbuffer *sb)
{
    if (stage_send(sp->progress_pub, sb->data, sb->size, ZMQ_DONTWAIT) != 0)
        log_warn("publish progress: %s", zmq_strerror(errno));
}

static void publish_progress(struct spine *sp, const struct spine_output *batch)
{
    msgpack_sbuffer_clear(&sp->wire);
    progress_encode(sp, batch, &sp->wire);
    progress_send(sp, &sp->wire);
}

static void publish_events(struct spine *sp, const struct spine_output *out)
{
    for (size_t i = 0; i < out->n_events; i++) {
        const struct spine_committed *e = &out->events[i];
        msgpack_sbuffer_clear(&sp->wire);
        event_full_pack_own(&sp->wire, e->canon, e->len, e->hash);
        if (stage_send(sp->events_pub, e->type, strlen(e->type), ZMQ_SNDMORE | ZMQ_DONTWAIT) != 0 ||
            stage_send(sp->events_pub, sp->wire.data, sp->wire.size, ZMQ_DONTWAIT) != 0)
            log_warn("event %" PRIu64 " not published: %s", e->seq, zmq_strerror(errno));
    }
}

/* Try to hand one command to the actuator: 0 sent, -1 not now (full queue or error). */
static int command_send(struct spine *sp, const struct tg_command *cmd)
{
    msgpack_sbuffer_clear(&sp->wire);
    msg_command_encode(&sp->wire, cmd);
    int rc = stage_send(sp->actuator, sp->wire.data, sp->wire.size, ZMQ_DONTWAIT);
    if (rc != 0 && errno != EAGAIN)
        log_error("send command %s: %s", cmd->command_id, zmq_strerror(errno));
    return rc;
}

static void deferred_push(struct spine *sp, uint64_t okey)
{
    if (sp->d_len == DEFERRED_MAX)
        return;                 /* the re-send timer will find it in the outbox */
    sp->deferred[(sp->d_head + sp->d_len++) % DEFERRED_MAX] = okey;
}

/* Send deferred commands, oldest first, while the actuator takes them.  A
 * command whose outcome arrived meanwhile is no longer in the outbox. */
static void deferred_flush(struct spine *sp)
{
    char err[ERR_LEN];
    size_t read = 0;
    if (sp->d_len)
        sp->db_work++;
    while (sp->d_len) {
        /* Each command read maps a page of the outbox: a backlog of
         * thousands would map megabytes before the loop's next unmap. */
        if (++read % UNMAP_EVERY_READS == 0)
            spinedb_unmap_pages(spine_store_db(sp->store));
        struct tg_command cmd;
        int found = spine_store_outbox_get(sp->store, sp->deferred[sp->d_head], &cmd, err);
        if (found < 0)
            log_error("deferred command: %s", err);
        if (found == 1) {
            int rc = command_send(sp, &cmd);
            tg_command_free(&cmd);
            if (rc != 0)
                break;
        }
        sp->d_head = (sp->d_head + 1) % DEFERRED_MAX;
        sp->d_len--;
    }
    if (sp->actuator_blocked && sp->d_len == 0) {
        log_info("actuator accepting commands again");
        sp->actuator_blocked = false;
    }
}

/* Forward commands; what the actuator cannot take now waits, in order, in
 * the deferred ring (and in any case in the outbox). */
static void send_commands(struct spine *sp, const struct tg_command *cmds, size_t n)
{
    size_t deferred = 0;
    deferred_flush(sp);
    for (size_t i = 0; i < n; i++) {
        if (sp->d_len == 0 && command_send(sp, &cmds[i]) == 0)
            continue;
        deferred_push(sp, cmds[i].outbox_key);
        deferred++;
    }
    if (deferred && !sp->actuator_blocked)
        log_warn("actuator not accepting commands; %zu waiting for it", deferred);
    if (deferred)
        sp->actuator_blocked = true;
}

/* Publish the held batch, syncing first unless a later commit already made
 * it durable. */
static void release_held(struct spine *sp)
{
    char err[ERR_LEN];
    if (!sp->holding)
        return;
    if (!spine_store_durable(sp->store, sp->held_commit) && spine_store_sync(sp->store, err) != 0) {
        log_error("%s: batch not published nor acknowledged (the ingress re-publishes it)", err);
    } else {
        publish_events(sp, &sp->held);
        progress_send(sp, &sp->held_progress);
    }
    spine_output_reset(&sp->held);
    msgpack_sbuffer_clear(&sp->held_progress);
    sp->holding = false;
}

/*
 * After a batch's commit: events and acknowledgements go out only once the
 * commit is durable.  The batch is held, not synced: the next commit's data
 * sync makes it durable for free (spine_store_durable), so a commit costs
 * one sync, not two, as long as the next one comes within HOLD_MS; after
 * that the held batch is synced and published on its own (main loop).
 */
static void finish_batch(struct spine *sp)
{
    release_held(sp);           /* durable now if this commit wrote anything */
    struct spine_output t = sp->held;
    sp->held = sp->out;
    sp->out = t;
    sp->held_commit = spine_store_last_commit(sp->store);
    sp->held_until = tg_mono_ms() + HOLD_MS;
    progress_encode(sp, &sp->held, &sp->held_progress);
    sp->holding = true;
}

/* Commit the inputs received so far, forward their commands, hold their
 * events until durable. */
static void commit_batch(struct spine *sp)
{
    char err[ERR_LEN];
    size_t n = sp->n_in;
    sp->batches++;
    sp->db_work++;
    sp->messages += n;
    if (spine_store_apply(sp->store, sp->batch, n, &sp->out, err) != 0)
        log_error("batch partly applied: %s", err);
    /* Commands first, once the commit's data pages are synced: they are what
     * a caller waits for, and re-deciding them after a power cut that undoes
     * the commit yields the same command_ids (protocol.md 6.1). */
    send_commands(sp, sp->out.commands, sp->out.n_commands);
    log_debug("batch: %zu messages, %zu events, %zu commands", n, sp->out.n_events, sp->out.n_commands);
    finish_batch(sp);
    for (size_t i = 0; i < n; i++)
        spine_input_free(&sp->batch[i]);
    sp->n_in = 0;
    spine_output_reset(&sp->out);
}

/*
 * Receive what is waiting and commit it, unless it is only OUTCOMEs: those
 * wait up to OUTCOME_LINGER_MS to share the commit (and its data sync) of
 * the next RESULT.  Nobody waits on an outcome's commit: the command went
 * out long before, and if the spine dies first the outbox still holds the
 * command, so it is re-sent and the actuator repeats its outcome.  flush:
 * commit whatever was received.  Returns the number of messages received.
 */
static size_t take_input(struct spine *sp, bool flush)
{
    size_t before = sp->n_in, added = drain(sp);
    if (sp->n_in == 0) {
        release_held(sp);
        return 0;
    }
    if (before == 0)
        sp->linger_until = tg_mono_ms() + OUTCOME_LINGER_MS;
    if (flush || !spine_inputs_may_wait(sp->batch, sp->n_in, sp->batch_max,
                                        tg_mono_ms() >= sp->linger_until))
        commit_batch(sp);
    return added;
}

/* Counters for `telctl status`. */
static void status_write(struct spine *sp)
{
    struct spinedb_head head;
    struct msg_progress p;
    char c[256];
    spine_store_head(sp->store, &head);
    spine_store_progress(sp->store, &p, 0);
    snprintf(c, sizeof c, "{\"head_seq\":%" PRIu64 ",\"outbox\":%ld,\"journal_low\":%" PRIu64
             ",\"batches\":%" PRIu64 ",\"messages\":%" PRIu64 "}", head.seq,
             spine_store_outbox_count(sp->store), p.low, sp->batches, sp->messages);
    msg_progress_free(&p);
    stage_status_write(&sp->st, c, false);
}

static void resend_outbox(struct spine *sp)
{
    struct tg_command *cmds;
    size_t n;
    char err[ERR_LEN];
    if (sp->d_len)
        return;     /* the actuator is backed up; re-send once it has taken what waits */
    sp->db_work++;
    if (spine_store_outbox_due(sp->store, tg_now_ms(), RESEND_MAX, &cmds, &n, err) != 0) {
        log_error("outbox scan: %s", err);
        return;
    }
    if (n)
        log_info("re-sending %zu commands that have no outcome yet", n);
    if (n)
        spinedb_unmap_pages(spine_store_db(sp->store));     /* up to RESEND_MAX pages read */
    send_commands(sp, cmds, n);
    for (size_t i = 0; i < n; i++)
        tg_command_free(&cmds[i]);
    free(cmds);
}

int main(int argc, char **argv)
{
    struct spine sp;
    char err[ERR_LEN];
    struct spinedb_head head;

    memset(&sp, 0, sizeof sp);
    stage_init(&sp.st, "spine", argc, argv);
    const struct tg_config *cfg = &sp.st.cfg;
    stage_claim_or_exit(&sp.st);   /* the sole writer of the event log (SPEC 1) */
    if (spine_store_open(&sp.store, cfg->data_dir, cfg->namespace_, (uint64_t)cfg->command_resend_ms, err) != 0)
        log_fatal("%s", err);
    sp.batch_max = (size_t)cfg->spine_batch_max;
    sp.batch = xcalloc(sp.batch_max, sizeof *sp.batch);
    sp.deferred = xcalloc(DEFERRED_MAX, sizeof *sp.deferred);
    sp.pull = stage_socket(&sp.st, ZMQ_PULL, cfg->spine_endpoint, true, SPINE_RCVHWM);
    sp.events_pub = stage_socket(&sp.st, ZMQ_PUB, cfg->events_endpoint, true, 0);
    sp.progress_pub = stage_socket(&sp.st, ZMQ_PUB, cfg->progress_endpoint, true, 0);
    sp.actuator = stage_socket(&sp.st, ZMQ_PUSH, cfg->actuator_endpoint, false, 0);

    sp.db_work = 1;             /* opening read the watermark and the outbox */
    spine_store_head(sp.store, &head);
    log_info("started: head seq %" PRIu64 ", %ld commands in the outbox", head.seq,
             spine_store_outbox_count(sp.store));

    uint64_t next_tick = tg_mono_ms(), next_unmap = next_tick, unmapped_work = 0;
    while (!sp.st.stopping) {
        uint64_t now = tg_mono_ms();
        if (now >= next_tick) {
            release_held(&sp);  /* the watermark below must be durable */
            resend_outbox(&sp);
            publish_progress(&sp, NULL);
            status_write(&sp);
            next_tick = now + TICK_MS;
        }
        zmq_pollitem_t items[] = {
            {.socket = sp.pull, .events = ZMQ_POLLIN},
            {.socket = sp.actuator, .events = ZMQ_POLLOUT},     /* only while commands wait */
        };
        uint64_t wake = next_tick;
        if (sp.holding && sp.held_until < wake)
            wake = sp.held_until;
        if (sp.n_in && sp.linger_until < wake)
            wake = sp.linger_until;
        int rc = stage_poll(&sp.st, items, sp.d_len ? 2 : 1, wake > now ? (long)(wake - now) : 0);
        if (rc < 0)
            log_fatal("poll: %s", zmq_strerror(errno));
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN))
            take_input(&sp, false);
        if (sp.n_in && tg_mono_ms() >= sp.linger_until)
            commit_batch(&sp);
        if (sp.holding && tg_mono_ms() >= sp.held_until)
            release_held(&sp);
        if (sp.d_len && (items[1].revents & ZMQ_POLLOUT))
            deferred_flush(&sp);
        /* Often under load: each commit maps megabytes of moved tree pages. */
        if (sp.db_work != unmapped_work && tg_mono_ms() >= next_unmap) {
            spinedb_unmap_pages(spine_store_db(sp.store));
            unmapped_work = sp.db_work;
            next_unmap = tg_mono_ms() + UNMAP_MS;
        }
    }

    /* Finish what is already received, within the shutdown budget. */
    uint64_t deadline = tg_mono_ms() + STOP_DRAIN_MS;
    while (tg_mono_ms() < deadline && take_input(&sp, true) > 0)
        ;
    release_held(&sp);
    publish_progress(&sp, NULL);

    spine_store_head(sp.store, &head);
    zmq_close(sp.pull);
    zmq_close(sp.events_pub);
    zmq_close(sp.progress_pub);
    zmq_close(sp.actuator);
    spine_output_free(&sp.out);
    spine_output_free(&sp.held);
    msgpack_sbuffer_destroy(&sp.held_progress);
    msgpack_sbuffer_destroy(&sp.wire);
    free(sp.batch);
    free(sp.deferred);
    spine_store_close(&sp.store);
    log_info("stopped: head seq %" PRIu64, head.seq);
    stage_fini(&sp.st);
    return 0;
}
