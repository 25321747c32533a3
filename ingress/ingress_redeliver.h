/*
 * ingress_redeliver.h - the ingress's record of journaled webhooks the spine
 * has not acknowledged yet, and what re-publication and parking need around
 * it (protocol.md section 6): the saved low mark, the journal scan on start,
 * parked copies and the tel.webhook_parked RESULT.  Used by the ingress's
 * journal writer thread, which is the only thread touching a tracker.
 */
#ifndef INGRESS_REDELIVER_H
#define INGRESS_REDELIVER_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "util.h"

#define INGRESS_REDELIVER_PROGRESS_FILE "progress"  /* in DATA_DIR/journal */
#define INGRESS_REDELIVER_PARKED_DIR "parked"       /* in DATA_DIR/journal */
#define INGRESS_REDELIVER_PARK_EVENT "tel.webhook_parked"

/* Where one unacknowledged record lives and how often it was published.
 * Metadata only: the body is re-read from the journal when needed. */
struct ingress_redeliver_entry {
    uint64_t jseq;
    uint64_t file;          /* first jseq of its dump file (the file's name) */
    uint64_t offset;        /* byte offset of the record in that file */
    uint32_t len;           /* record length, header included */
    uint32_t attempts;      /* WEBHOOK publications so far */
    bool parked;            /* copied to parked/, park RESULT sent */
    uint64_t due_ms;        /* when it must be looked at again */
};

/* What the caller should do with a due record. */
enum ingress_redeliver_action {
    INGRESS_REDELIVER_NONE,         /* nothing is due */
    INGRESS_REDELIVER_PUBLISH,      /* publish again with attempt + 1 */
    INGRESS_REDELIVER_PARK,         /* max_attempts reached: park it */
    INGRESS_REDELIVER_PARK_RESEND,  /* parked, still unacknowledged: re-send the park RESULT */
};

struct ingress_redeliver;

/*
 * New empty tracker.  A publication or park not acknowledged within
 * after_ms is due again; a record published max_attempts times (>= 1) and
 * due again is to be parked.  Caller owns it (ingress_redeliver_free).
 *
 * Storage: entries in an array ordered by jseq (jseqs are added in
 * increasing order), acknowledged ones dropped from the front or marked dead
 * and compacted away; look-ups by binary search.  Due times sit in a FIFO
 * that is ordered by time because every re-arm uses now + after_ms, so the
 * due check only looks at its head.  Every operation is O(log n) or
 * amortised O(1); 72-96 bytes per tracked record: an entry and a due-time
 * item, and a second item until the one of its addition, made stale by its
 * publication, reaches the FIFO's head.
 */
struct ingress_redeliver *ingress_redeliver_new(uint64_t after_ms, uint32_t max_attempts);
/* Free and NULL *r (no-op on NULL). */
void ingress_redeliver_free(struct ingress_redeliver **r);

/*
 * Track one record, due at e->due_ms, with e->attempts and e->parked as
 * given.  e->jseq must be larger than every jseq added before.
 * 0 ok, -1 with err (jseq 0 or not increasing; nothing is added).
 */
int ingress_redeliver_add(struct ingress_redeliver *r, const struct ingress_redeliver_entry *e,
                          char *err) TG_MUST_CHECK;

/* Number of tracked (unacknowledged) records. */
size_t ingress_redeliver_count(const struct ingress_redeliver *r);

/* Bytes its arrays hold (72-96 per tracked record; they grow with a backlog
 * and shrink by half whenever a quarter of them is in use). */
size_t ingress_redeliver_bytes(const struct ingress_redeliver *r);

/* Copy the entry of jseq into *out; false when it is not tracked. */
bool ingress_redeliver_find(const struct ingress_redeliver *r, uint64_t jseq,
                            struct ingress_redeliver_entry *out);

/* Acknowledge every record with jseq <= low; returns how many were dropped. */
size_t ingress_redeliver_ack_low(struct ingress_redeliver *r, uint64_t low);
/* Acknowledge one record; true when it was tracked. */
bool ingress_redeliver_ack(struct ingress_redeliver *r, uint64_t jseq);
/* Apply a spine PROGRESS report (low, then done[]); returns records dropped. */
size_t ingress_redeliver_ack_progress(struct ingress_redeliver *r, const struct msg_progress *p);

/*
 * Low mark: every journaled jseq <= it is acknowledged.  That is one below
 * the smallest tracked jseq, or journaled_upto (the last jseq handed out)
 * when nothing is tracked.
 */
uint64_t ingress_redeliver_low(const struct ingress_redeliver *r, uint64_t journaled_upto);

/*
 * The oldest due record at now_ms, copied into *out, with what to do about
 * it; INGRESS_REDELIVER_NONE when nothing is due.  Does not change the
 * record: the caller reports what it did with ingress_redeliver_published()
 * or ingress_redeliver_parked(), or leaves it due (e.g. the socket is full)
 * and asks again later.
 */
enum ingress_redeliver_action ingress_redeliver_due(struct ingress_redeliver *r, uint64_t now_ms,
                                                    struct ingress_redeliver_entry *out);

/* jseq was published (again): attempts + 1, due at now_ms + after_ms.
 * Returns the new attempt count, 0 when jseq is not tracked. */
uint32_t ingress_redeliver_published(struct ingress_redeliver *r, uint64_t jseq, uint64_t now_ms);

/* jseq was parked, or its park RESULT re-sent: marked parked, due at
 * now_ms + after_ms.  false when jseq is not tracked. */
bool ingress_redeliver_parked(struct ingress_redeliver *r, uint64_t jseq, uint64_t now_ms);

/* Stop tracking jseq without an acknowledgement (its record cannot be read
 * any more).  false when it was not tracked. */
bool ingress_redeliver_drop(struct ingress_redeliver *r, uint64_t jseq);

/* ---- around the tracker ---- */

/*
 * Read the saved low mark from path (one decimal number and a newline).
 * A missing file is low 0 (re-read the whole journal).  0 ok, -1 with err
 * when the file exists but cannot be read or does not hold a number.
 */
int ingress_redeliver_progress_load(const char *path, uint64_t *low, char *err) TG_MUST_CHECK;

/* Save low to path atomically: write path.tmp, fsync, rename, fsync the
 * directory.  0 ok, -1 with err (path is then unchanged). */
int ingress_redeliver_progress_save(const char *path, uint64_t low, char *err) TG_MUST_CHECK;

/*
 * Track every good record of the journal directory dir with jseq > low,
 * oldest first, unpublished (attempts 0) and due at due_ms.  Files whose
 * whole range is <= low are skipped without reading.  A file whose reading
 * stops early (it was recovered before, so only a new fault) is logged and
 * the records read so far are kept; a record whose jseq is not above the
 * ones already tracked is logged and skipped.  *added gets the number
 * tracked.  0 ok, -1 with err (the directory cannot be listed).
 */
int ingress_redeliver_scan(struct ingress_redeliver *r, const char *dir, uint64_t low,
                           uint64_t due_ms, size_t *added, char *err) TG_MUST_CHECK;

/*
 * Copy a poison record's raw body to dir/<jseq>.json (dir is created if
 * missing): written to a temporary name, fsynced, renamed, directory
 * fsynced.  *path_out gets the final path (caller frees).  0 ok, -1 with err.
 */
int ingress_redeliver_park_write(const char *dir, uint64_t jseq, const uint8_t *body, size_t len,
                                 char **path_out, char *err) TG_MUST_CHECK;

/*
 * Append to sb the RESULT that records a parked record: jseq, webhook_id
 * "parked:<data.id>" ("parked:jseq:<n>" when the body has no usable
 * data.id), one tel.webhook_parked event by actor, id
 * event_id(<data.id or "jseq:<n>">, "parked"), webhook_id data.id, call
 * fields from data.payload when present, data {jseq, attempts, event_type,
 * file}; no commands.  body is only read and may be anything (it is parsed
 * leniently with jansson).  Deterministic: the same input gives the same
 * bytes, so a repeat is harmless.
 */
void ingress_redeliver_park_encode(msgpack_sbuffer *sb, uint64_t jseq, uint32_t attempts,
                                   const uint8_t *body, size_t len, const char *actor,
                                   const char *file);

#endif
