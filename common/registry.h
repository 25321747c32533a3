/*
 * registry.h - the certificate registry inside the spine database: which
 * certificates were issued (ns.cert_issued), which revoked (ns.cert_revoked),
 * and which serials bind each phone number.  The spine derives it from the
 * events it appends, in the same transaction; the verifier and telctl read
 * it read-only, and `telctl verify` checks it against the events.
 *
 * certs:  serial -> msgpack map {"cert": bin (signed blob), "revoked": bool,
 *                                "revoked_at": uint (Unix s, 0 if not)}
 * phones: E.164  -> serial (duplicates sorted)
 */
#ifndef TG_REGISTRY_H
#define TG_REGISTRY_H

#include <lmdb.h>
#include <stdbool.h>

#include "cert.h"
#include "msg.h"
#include "spinedb.h"
#include "util.h"

struct registry_entry {
    struct cert cert;
    struct cert_blob blob;
    bool revoked;
    uint64_t revoked_at;
};

/* Event data helpers used by telctl to build the ns.* events. */
#define REGISTRY_EV_ISSUED "ns.cert_issued"
#define REGISTRY_EV_REVOKED "ns.cert_revoked"

/* Writer side (spine): update certs/phones for an ns.cert_issued or
 * ns.cert_revoked event inside the spine's write txn; other types are
 * ignored.  -1 with err when the event data is malformed (the caller then
 * rejects the whole message). */
int registry_apply_event(const struct spinedb *db, MDB_txn *txn, const struct tg_event *e,
                         char *err) TG_MUST_CHECK;

/* Check an ns.* event's data before it is appended (no database access). */
int registry_event_check(const struct tg_event *e, char *err) TG_MUST_CHECK;

/* Reader side.  Returns 0 and fills *out, 1 if there is no such serial,
 * -1 with err. */
int registry_get(const struct spinedb *db, MDB_txn *txn, const char *serial,
                 struct registry_entry *out, char *err) TG_MUST_CHECK;

/* Called per entry; return 0 to go on, 1 to stop, -1 to abort. */
typedef int (*registry_fn)(void *arg, const struct registry_entry *e);

/* Every certificate binding phone (in serial order). */
int registry_by_phone(const struct spinedb *db, MDB_txn *txn, const char *phone,
                      registry_fn fn, void *arg, char *err) TG_MUST_CHECK;
/* Every certificate (in serial order). */
int registry_foreach(const struct spinedb *db, MDB_txn *txn, registry_fn fn, void *arg,
                     char *err) TG_MUST_CHECK;

/*
 * Verification (spinedb_verify, for `telctl verify`): the registry rebuilt in
 * memory from the events, exactly as registry_apply_event wrote it, then
 * compared with certs and phones both ways.  Memory: one small entry per
 * certificate (serial, hash of its certificate, revocation), none per event.
 * Where the spine took revoked_at from its clock (an ns.cert_revoked without
 * data.revoked_at), the stored value must be within 60 s of the event's time.
 */
struct registry_replay;

/* An empty replay; the caller owns it (registry_replay_free). */
struct registry_replay *registry_replay_new(void);
/* Free *r and NULL it; NULL is a no-op. */
void registry_replay_free(struct registry_replay **r);

/* Apply event seq, of the given type, with canonical bytes canon[0..len) that
 * the chain walk has checked, in log order; other types are skipped.
 * Returns 0, or 1 with err (seq named) for an ns.* event the spine cannot
 * have applied: data it refuses, or a revocation of a serial no earlier
 * event issued. */
int registry_replay_event(struct registry_replay *r, uint64_t seq, const char *type, const uint8_t *canon,
                          size_t len, char *err) TG_MUST_CHECK;

/* Compare the replay with certs and phones inside txn (once, after the last
 * event).  Returns 0 when they hold exactly what the events say; 1 on the
 * first difference, with err naming it and *seq the event it concerns (0 for
 * an entry no event explains); -1 with err on a database error. */
int registry_replay_compare(struct registry_replay *r, const struct spinedb *db, MDB_txn *txn, uint64_t *seq,
                            char *err) TG_MUST_CHECK;

#endif
