/*
 * spinedb.h - the spine's LMDB environment (protocol.md section 4): opening
 * it read-write (the spine, sole writer) or read-only (telctl), the head
 * record, reading and walking events, and the verification that `telctl
 * verify` runs (hash chain, head record, certificate registry).  Used by
 * spine and telctl.
 *
 * Lifetimes: every pointer into the database handed out here (hash, canonical
 * bytes) points into LMDB's map and is valid only until the transaction it
 * was read in ends; copy what must outlive it.  Never carry an open
 * environment across fork().
 */
#ifndef TG_SPINEDB_H
#define TG_SPINEDB_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "util.h"

#define SPINEDB_MAP_SIZE (8ull << 30)   /* 8 GiB of address space */

struct spinedb {
    MDB_env *env;            /* NULL: read-only open of a missing db (empty log) */
    bool readonly;
    MDB_dbi events;          /* seq u64 BE -> hash(32) || canonical bytes */
    MDB_dbi ids;             /* event id -> seq u64 BE */
    MDB_dbi webhooks;        /* Telnyx data.id -> seq of its first event, u64 BE */
    MDB_dbi jseq;            /* jseq u64 BE -> empty (processed) */
    MDB_dbi outbox;          /* command_id -> command map (msgpack) */
    MDB_dbi meta;            /* "head" -> last seq u64 BE || last hash(32) */
    MDB_dbi certs;           /* serial -> certificate record (msgpack, see registry.h) */
    MDB_dbi phones;          /* E.164 -> serial (MDB_DUPSORT: several per number) */
    uintptr_t map_lo, map_hi; /* the writer's map, once found (it never moves) */
};

/* Last appended event: seq 0 and an all-zero hash for an empty log. */
struct spinedb_head {
    uint64_t seq;
    uint8_t hash[EVENT_HASH_BYTES];
};

/* Encode / decode a u64 as 8 big-endian bytes (keys sort numerically). */
void spinedb_u64_put(uint64_t v, uint8_t out[8]);
uint64_t spinedb_u64_get(const void *in8);

/*
 * Open DATA_DIR/spine.  readonly=false (the spine): creates the directory and
 * every sub-database if missing.  readonly=true (telctl): MDB_RDONLY; a
 * missing directory or database is an empty log, not an error (db->env is
 * then NULL and every reader below reports no events).
 * Returns 0 and a handle the caller owns (spinedb_close), or -1 with err.
 */
int spinedb_open(struct spinedb **out, const char *data_dir, bool readonly, char *err) TG_MUST_CHECK;
/* Close the environment and free the handle; NULLs *db.  NULL is a no-op. */
void spinedb_close(struct spinedb **db);

/*
 * Drop the database pages this process has mapped from its page tables
 * (madvise MADV_DONTNEED over the used part of the map).  LMDB reads through
 * a shared, read-only file mapping, so the pages stay in the page cache and
 * the next access maps them again with a minor fault; nothing is lost.  Why:
 * every commit moves the trees' top pages to new places in the file, so a
 * long-running reader maps a little more of the file with each look-up and
 * its RSS (what monitoring and the OOM killer's score see) climbs towards
 * the database size.  Verifiers call this once a second, the spine every
 * 10 ms while it works.  No-op without a map.
 */
void spinedb_unmap_pages(struct spinedb *db);

/*
 * Keep zeros written past the end of the data file (the writer, between
 * transactions; no-op for a reader): tg_zeros_ahead, never past the map
 * size.  A commit whose new pages make the file longer must also commit the
 * new size and blocks to the file system's own journal with its data sync;
 * over zeros already written it syncs data pages only.  LMDB never reads
 * past its last page, and these writes only ever extend the file, so no
 * page LMDB wrote is touched.
 */
void spinedb_prefill(struct spinedb *db);

/*
 * fdatasync the database file, from any process (a read-only descriptor
 * will do): a reader that saw a commit makes it durable even before the
 * spine synced its meta page (MDB_NOMETASYNC).  0, or -1 with err.
 */
int spinedb_sync_file(const struct spinedb *db, char *err) TG_MUST_CHECK;

/* Begin a read-only transaction (adopting a map grown by the writer); the
 * caller ends it with mdb_txn_abort.  0 or -1 with err. */
int spinedb_txn_begin_ro(const struct spinedb *db, MDB_txn **txn, char *err) TG_MUST_CHECK;

/*
 * For one-shot readers (telctl): open DATA_DIR/spine read-only and begin a
 * read transaction.  *txn is NULL when there is no database yet (an empty
 * log).  0, or -1 with err and nothing left open.  End with spinedb_read_end.
 */
int spinedb_read_begin(const char *data_dir, struct spinedb **db, MDB_txn **txn, char *err) TG_MUST_CHECK;
/* Abort txn (if any) and close *db. */
void spinedb_read_end(struct spinedb **db, MDB_txn *txn);

/* The `webhooks` index key: occurred_us (u64 big-endian) then the Telnyx
 * data.id, in buf (SPINEDB_WEBHOOK_KEY_MAX bytes); ids longer than fit are
 * refused by the spine before they get here.  The returned value points into buf. */
#define SPINEDB_WEBHOOK_KEY_MAX 511
MDB_val spinedb_webhook_key(uint64_t occurred_us, const char *webhook_id, uint8_t buf[SPINEDB_WEBHOOK_KEY_MAX]);

/* Whether a webhook (occurred_us, webhook_id) was processed, inside txn.
 * An absent database or an id too long for a key knows nothing.  0 or -1. */
int spinedb_webhook_known(const struct spinedb *db, MDB_txn *txn, uint64_t occurred_us, const char *webhook_id,
                          bool *known, char *err) TG_MUST_CHECK;

/* Text of an LMDB return code with context into err; returns -1. */
int spinedb_err(char *err, const char *what, int rc);

/* Read the head inside txn (zeros when the log is empty).  0 or -1 with err. */
int spinedb_head_get(const struct spinedb *db, MDB_txn *txn, struct spinedb_head *h, char *err) TG_MUST_CHECK;
/* Write the head inside a write txn.  0 or -1 with err. */
int spinedb_head_put(const struct spinedb *db, MDB_txn *txn, const struct spinedb_head *h, char *err) TG_MUST_CHECK;

/*
 * Get event seq inside txn.  Returns 0 with *hash / *canon / *len pointing
 * into the map (valid until txn ends), 1 if there is no such event, -1 with
 * err on a database error or a value too short to hold a hash.
 */
int spinedb_event_get(const struct spinedb *db, MDB_txn *txn, uint64_t seq, const uint8_t **hash,
                      const uint8_t **canon, size_t *len, char *err) TG_MUST_CHECK;

/* Called for each event; pointers are valid only during the call.
 * Return 0 to continue, 1 to stop early, -1 to abort (fill err). */
typedef int (*spinedb_event_fn)(void *arg, uint64_t seq, const uint8_t *hash, const uint8_t *canon,
                                size_t len, char *err);

/* Walk events with seq >= from_seq in order, in one read transaction.
 * 0 when done or stopped, -1 with err (database error or callback abort). */
int spinedb_events_foreach(const struct spinedb *db, uint64_t from_seq, spinedb_event_fn fn, void *arg,
                           char *err) TG_MUST_CHECK;

/* What spinedb_verify found wrong. */
enum spinedb_verify_failure {
    SPINEDB_VERIFY_OK = 0,
    SPINEDB_VERIFY_CHAIN,       /* an event is bad or missing: bad_seq is the first */
    SPINEDB_VERIFY_HEAD,        /* the events are intact, the head record is wrong */
    SPINEDB_VERIFY_REGISTRY,    /* certs / phones do not follow from the events */
};

/* Result of spinedb_verify. */
struct spinedb_verify_report {
    uint64_t n_events;                 /* events checked and found good */
    uint8_t head[EVENT_HASH_BYTES];    /* hash of the last good event */
    enum spinedb_verify_failure failure;
    uint64_t bad_seq;                  /* CHAIN: the first bad seq; REGISTRY: the
                                        * event the difference concerns (0 when
                                        * none explains it); HEAD: 0 */
};

/*
 * Verify the whole database in one read transaction:
 *   chain     from seq 1: seq gap-free, canonical bytes parse and carry the
 *             key's seq, prev_hash equals the previous hash, stored hash
 *             equals the recomputed BLAKE2b, and no event missing below the
 *             seq the head record names;
 *   head      the head record names the last event and its hash;
 *   registry  certs and phones hold exactly what the ns.cert_issued /
 *             ns.cert_revoked events made the spine write (registry.h).
 * Returns 0 if all is intact (empty log included); 1 if not, with
 * rep->failure saying which check failed first in that order, rep->bad_seq,
 * and err one line saying what is wrong; -1 with err when the database could
 * not be read.
 */
int spinedb_verify(const struct spinedb *db, struct spinedb_verify_report *rep, char *err) TG_MUST_CHECK;

#endif
