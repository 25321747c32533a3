/*
 * event.h - telgate events: deterministic ids, the canonical encoding that is
 * hashed and stored, the hash chain, and the JSON / published forms
 * (protocol.md section 5).  Used by the verifier (ids), the spine (encoding,
 * hashing) and telctl (parsing, JSON, verify).
 */
#ifndef TG_EVENT_H
#define TG_EVENT_H

#include <msgpack.h>
#include <stdint.h>

#include "msg.h"
#include "util.h"

#define EVENT_HASH_BYTES 32
#define EVENT_ID_LEN 33          /* 32 hex digits + NUL */
#define COMMAND_ID_LEN 37        /* UUID text + NUL */

/* id = hex(BLAKE2b-128(key "|" step)).  key: Telnyx data.id or another
 * stable identifier; step: which step of its processing. */
void event_id(const char *key, const char *step, char out[EVENT_ID_LEN]);
/* UUID-shaped (version 8, RFC 9562 "custom") id derived from BLAKE2b of
 * webhook_id "|" action: stable across retries and re-processing. */
void command_id_make(const char *webhook_id, const char *action, char out[COMMAND_ID_LEN]);

/* Append the canonical bytes of e with the spine-assigned fields to sb.
 * time: the commit time as tg_rfc3339 formats it. */
void event_canon_encode(msgpack_sbuffer *sb, const struct tg_event *e, uint64_t seq,
                        const char *time, const uint8_t prev_hash[EVENT_HASH_BYTES]);
/* hash = BLAKE2b-256(canonical bytes). */
void event_hash(const uint8_t *canon, size_t len, uint8_t out[EVENT_HASH_BYTES]);

/* Fields of a canonical event needed to walk the chain and filter. */
struct event_view {
    uint64_t seq;
    uint8_t prev_hash[EVENT_HASH_BYTES];
    char type[128];
};
/* Parse canonical bytes: checks they are exactly the 12-key map of
 * protocol.md in order.  0 ok, -1 with err. */
int event_canon_parse(const uint8_t *canon, size_t len, struct event_view *v, char *err) TG_MUST_CHECK;

/* The published / printed form: the canonical map plus "hash".
 * event_full_pack appends msgpack to sb; event_to_json returns a JSON object
 * (one line, no newline) the caller frees.  -1 with err if canon is bad. */
int event_full_pack(msgpack_sbuffer *sb, const uint8_t *canon, size_t len,
                    const uint8_t hash[EVENT_HASH_BYTES], char *err) TG_MUST_CHECK;
/* The same published form without re-parsing, for canonical bytes this
 * process made itself with event_canon_encode (the spine after a commit):
 * the map header grows by one and "hash" is appended.  Bytes from elsewhere
 * (the database, the wire) go through event_full_pack, which checks them. */
void event_full_pack_own(msgpack_sbuffer *sb, const uint8_t *canon, size_t len,
                         const uint8_t hash[EVENT_HASH_BYTES]);
int event_to_json(const uint8_t *canon, size_t len, const uint8_t hash[EVENT_HASH_BYTES],
                  char **out, char *err) TG_MUST_CHECK;

#endif
