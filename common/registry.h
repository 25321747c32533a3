/*
 * registry.h - the certificate registry inside the spine database: which
 * certificates were issued (ns.cert_issued), which revoked (ns.cert_revoked),
 * and which serials bind each phone number.  The spine derives it from the
 * events it appends, in the same transaction; the verifier and telctl read
 * it read-only.
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

#endif
