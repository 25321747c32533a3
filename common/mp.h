/*
 * mp.h - thin helpers over msgpack-c: packing strings and nil-able strings,
 * looking up map keys and reading typed fields with checks.  No telgate
 * knowledge.  Objects returned point into the unpacked zone / input buffer and
 * live as long as both do.
 */
#ifndef TG_MP_H
#define TG_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* Pack a NUL-terminated string, or nil when s is NULL. */
void mp_pack_cstr(msgpack_packer *pk, const char *s);
void mp_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* Pack "key" then the string value (nil when NULL). */
void mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
void mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value);
void mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);

/* Value for key in a map object, or NULL when absent / obj not a map. */
const msgpack_object *mp_map_get(const msgpack_object *map, const char *key);

/* Typed getters: 0 ok, -1 if absent or of the wrong type (err names key).
 * mp_get_str returns a NUL-terminated copy the caller owns; when nil_ok and
 * the value is nil (or absent), *out is NULL. */
int mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, char *err) TG_MUST_CHECK;
int mp_get_bool(const msgpack_object *map, const char *key, bool *out, char *err) TG_MUST_CHECK;
int mp_get_str(const msgpack_object *map, const char *key, bool nil_ok, char **out, char *err) TG_MUST_CHECK;
/* bin or str bytes, not copied: valid while the unpacked object lives. */
int mp_get_bytes(const msgpack_object *map, const char *key, const char **ptr, size_t *len, char *err) TG_MUST_CHECK;

/* Unpack exactly one object filling all of buf; -1 with err otherwise.
 * On success the caller must msgpack_unpacked_destroy(up). */
int mp_unpack_exact(const void *buf, size_t len, msgpack_unpacked *up, char *err) TG_MUST_CHECK;

/* Append obj as JSON text to a growable string (*s, *len, *cap).  Maps with
 * str keys become objects, bin becomes base64. */
void mp_to_json(const msgpack_object *obj, char **s, size_t *len, size_t *cap);

#endif
