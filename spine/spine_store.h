/*
 * spine_store.h - the spine's write side: applies batches of RESULT, OUTCOME
 * and APPEND messages to the LMDB log in one durable transaction each, keeps
 * the outbox of commands awaiting an outcome and the journal watermark.
 * Used by the spine process only (the sole writer).
 */
#ifndef SPINE_STORE_H
#define SPINE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "msg.h"
#include "spinedb.h"
#include "util.h"

/* At most this many done jseqs above the watermark are reported. */
#define SPINE_PROGRESS_DONE_MAX 1024

struct spine_store;

/* One decoded message from the spine's PULL socket. */
struct spine_input {
    int type;                       /* MSG_RESULT, MSG_OUTCOME, MSG_APPEND or MSG_SETTLED */
    union {
        struct msg_result result;
        struct msg_outcome outcome;
        struct msg_append append;
        struct msg_settled settled;
    } u;
};

/*
 * Decode one frame into in and check what the database needs beyond the
 * codec (non-empty ids and keys within LMDB's key size, event types short
 * enough for event_canon_parse).  0 ok (free with spine_input_free), -1 with
 * err for any other message type or malformation (in is left empty).
 */
int spine_input_decode(const void *buf, size_t len, struct spine_input *in, char *err) TG_MUST_CHECK;
void spine_input_free(struct spine_input *in);
/* Name of a message type for logs ("RESULT", ...). */
const char *spine_input_name(int type);
/*
 * May the n inputs received so far (max fit in a batch) wait for more
 * before they are committed?  Only while all are OUTCOMEs (nobody waits on
 * an outcome's commit; protocol.md 6.1), the batch is not full and their
 * time to wait has not run out (expired).
 */
bool spine_inputs_may_wait(const struct spine_input *in, size_t n, size_t max, bool expired);

/* An event committed by spine_store_apply, to publish.  Owns type and canon. */
struct spine_committed {
    uint64_t seq;
    uint8_t hash[EVENT_HASH_BYTES];
    char *type;
    uint8_t *canon;
    size_t len;
};

/* What a call to spine_store_apply committed: events to publish and new
 * commands to forward to the actuator, in commit order.  Zero-initialise;
 * the struct owns everything in it. */
struct spine_output {
    struct spine_committed *events;
    size_t n_events, cap_events;
    struct tg_command *commands;
    size_t n_commands, cap_commands;
    uint64_t *acked;                /* jseqs of the RESULTs applied, for the ingress */
    size_t n_acked, cap_acked;
};
/* Free the contents but keep the arrays for reuse. */
void spine_output_reset(struct spine_output *out);
/* Free everything; the struct is zeroed. */
void spine_output_free(struct spine_output *out);

/*
 * Open (creating if needed) the database under data_dir, read the head, the
 * journal watermark and the outbox.  actor: the operator namespace, actor of
 * tel.command events (copied).  resend_ms: how long a command waits for its
 * outcome before it is due again.  0 and a store the caller owns, or -1 with
 * err.
 */
int spine_store_open(struct spine_store **out, const char *data_dir, const char *actor, uint64_t resend_ms,
                     char *err) TG_MUST_CHECK;
/* Close the database and free the store; NULLs *s. */
void spine_store_close(struct spine_store **s);

/*
 * Apply in[0..n) in one write transaction and commit it: its data pages are
 * synced, its meta page written but not synced (MDB_NOMETASYNC), so it
 * survives a crash of the process at once, and a power cut once
 * spine_store_sync (or the next apply) returned.  RESULT: unless its webhook_id is already recorded, append
 * its events (skipping ids already present), queue its commands in the
 * outbox (skipping command ids present), record the webhook; in every case
 * mark its jseq done.  OUTCOME: append the tel.command event (unless present)
 * and remove the command from the outbox.  APPEND: append its events
 * (skipping ids present).
 * If the batch cannot be committed, it is logged and retried one message per
 * transaction; a message that still fails is logged and dropped.
 * Committed events and new commands are appended to out (caller owns out).
 * Returns 0 when everything was applied, -1 with err when at least one
 * message was dropped (out still holds what was committed).
 */
int spine_store_apply(struct spine_store *s, const struct spine_input *in, size_t n, struct spine_output *out,
                      char *err);

/* Make every commit durable (sync the meta page).  0, or -1 with err. */
int spine_store_sync(struct spine_store *s, char *err) TG_MUST_CHECK;

/*
 * Commits are numbered (LMDB transaction ids).  spine_store_last_commit: the
 * number of the newest commit (after spine_store_apply, the one holding its
 * output).  spine_store_durable: is commit n durable?  True after
 * spine_store_sync, and for every commit but the newest once a later commit
 * wrote anything: that commit's data sync also flushed the earlier meta
 * pages.  So under load the spine needs no meta sync of its own
 * (protocol.md 4).
 */
uint64_t spine_store_last_commit(const struct spine_store *s);
bool spine_store_durable(const struct spine_store *s, uint64_t commit);

/* The current head (last committed seq and hash). */
void spine_store_head(const struct spine_store *s, struct spinedb_head *h);

/*
 * Journal progress: p->low is the highest n such that every jseq 1..n is
 * done, p->done the done jseqs above it in increasing order (at most max).
 * Caller frees with msg_progress_free.
 */
void spine_store_progress(const struct spine_store *s, struct msg_progress *p, size_t max);

/*
 * Commands in the outbox queued at least resend_ms before now_ms and not
 * (re)sent within the last resend_ms, at most max of them; they are marked
 * as sent at now_ms.  Commands committed by spine_store_apply count as sent
 * at their commit.  *cmds (n entries) is owned by the caller: free each with
 * tg_command_free, then the array.  0 or -1 with err (database error).
 */
int spine_store_outbox_due(struct spine_store *s, uint64_t now_ms, size_t max, struct tg_command **cmds,
                           size_t *n, char *err) TG_MUST_CHECK;

/* The outbox entry okey: 1 and *cmd (free with tg_command_free), 0 when it
 * is gone (its outcome is recorded), -1 with err. */
int spine_store_outbox_get(struct spine_store *s, uint64_t okey, struct tg_command *cmd, char *err)
    TG_MUST_CHECK;

/* Number of commands in the outbox (-1 on a database error). */
long spine_store_outbox_count(struct spine_store *s);

/* The underlying database (for read-only helpers such as spinedb_verify). */
struct spinedb *spine_store_db(struct spine_store *s);

#endif
