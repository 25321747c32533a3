/*
 * event.c - event ids, canonical encoding and hashing (protocol.md section 5).
 */
#include "event.h"
#include "log.h"
#include "mp.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const canon_keys[] = {
    "seq", "time", "type", "actor", "id", "webhook_id", "call_control_id",
    "call_session_id", "from", "to", "data", "prev_hash",
};
#define CANON_NKEYS ARRAY_LEN(canon_keys)

static void keyed_digest(const char *key, const char *step, uint8_t *out, size_t outlen)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, outlen);
    crypto_generichash_update(&st, (const uint8_t *)key, strlen(key));
    crypto_generichash_update(&st, (const uint8_t *)"|", 1);
    crypto_generichash_update(&st, (const uint8_t *)step, strlen(step));
    crypto_generichash_final(&st, out, outlen);
}

void event_id(const char *key, const char *step, char out[EVENT_ID_LEN])
{
    uint8_t d[16];
    keyed_digest(key, step, d, sizeof d);
    tg_hex(d, sizeof d, out);
}

void command_id_make(const char *webhook_id, const char *action, char out[COMMAND_ID_LEN])
{
    uint8_t d[16];
    char h[33];
    keyed_digest(webhook_id, action, d, sizeof d);
    d[6] = (uint8_t)((d[6] & 0x0f) | 0x80);   /* version 8 */
    d[8] = (uint8_t)((d[8] & 0x3f) | 0x80);   /* RFC 9562 variant */
    tg_hex(d, sizeof d, h);
    snprintf(out, COMMAND_ID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

/*
 * The canonical form is exactly what msgpack-c packs (a fixmap, each string
 * in its smallest form, seq as the smallest unsigned integer, NULL as nil).
 * The spine encodes every event it commits, so the bytes are written in
 * one pass into one reserved stretch of sb instead of ~50 packer calls;
 * event_test checks the result against msgpack-c byte for byte.
 */
static size_t canon_str_size(size_t n)
{
    return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
}

static uint8_t *put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t n)
{
    if (n < 32)
        *p++ = (uint8_t)(0xa0 | n);
    else if (n < 256)
        p = put_be((*p = 0xd9, p + 1), n, 1);
    else if (n < 65536)
        p = put_be((*p = 0xda, p + 1), n, 2);
    else
        p = put_be((*p = 0xdb, p + 1), n, 4);
    memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_key(uint8_t *p, size_t i)
{
    return put_str(p, canon_keys[i], strlen(canon_keys[i]));
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    if (v < 128) {
        *p = (uint8_t)v;
        return p + 1;
    }
    if (v < 256)
        return put_be((*p = 0xcc, p + 1), v, 1);
    if (v < 65536)
        return put_be((*p = 0xcd, p + 1), v, 2);
    if (v < 4294967296ull)
        return put_be((*p = 0xce, p + 1), v, 4);
    return put_be((*p = 0xcf, p + 1), v, 8);
}

void event_canon_encode(msgpack_sbuffer *sb, const struct tg_event *e, uint64_t seq,
                        const char *time, const uint8_t prev_hash[EVENT_HASH_BYTES])
{
    /* The string fields: canon_keys[1] ("time") to canon_keys[9] ("to");
     * seq comes before them, data and prev_hash after. */
    const char *strs[] = {time, e->type, e->actor, e->id, e->webhook_id, e->call_control_id,
                          e->call_session_id, e->from, e->to};
    _Static_assert(sizeof strs / sizeof strs[0] + 3 == CANON_NKEYS, "canon_keys and strs disagree");
    size_t lens[sizeof strs / sizeof strs[0]];
    char ph[2 * EVENT_HASH_BYTES + 1];
    size_t need = 1 + 9 /* seq */ + canon_str_size(2 * EVENT_HASH_BYTES) +
                  (e->data && e->data_len ? e->data_len : 1);
    for (size_t i = 0; i < CANON_NKEYS; i++)
        need += canon_str_size(strlen(canon_keys[i]));
    for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
        lens[i] = strs[i] ? strlen(strs[i]) : 0;
        need += strs[i] ? canon_str_size(lens[i]) : 1;     /* nil */
    }
    if (sb->alloc - sb->size < need) {
        size_t cap = sb->alloc ? sb->alloc : 1024;
        while (cap - sb->size < need)
            cap *= 2;
        sb->data = xrealloc(sb->data, cap);
        sb->alloc = cap;
    }
    tg_hex(prev_hash, EVENT_HASH_BYTES, ph);

    uint8_t *p = (uint8_t *)sb->data + sb->size;
    size_t k = 0;
    *p++ = (uint8_t)(0x80 | CANON_NKEYS);
    p = put_u64(put_key(p, k++), seq);
    for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
        p = put_key(p, k++);
        if (strs[i])
            p = put_str(p, strs[i], lens[i]);
        else
            *p++ = 0xc0;
    }
    p = put_key(p, k++);                    /* data */
    if (e->data && e->data_len) {
        memcpy(p, e->data, e->data_len);    /* raw msgpack map */
        p += e->data_len;
    } else {
        *p++ = 0x80;                        /* empty map */
    }
    p = put_str(put_key(p, k++), ph, 2 * EVENT_HASH_BYTES);
    sb->size = (size_t)(p - (uint8_t *)sb->data);
}

void event_hash(const uint8_t *canon, size_t len, uint8_t out[EVENT_HASH_BYTES])
{
    crypto_generichash(out, EVENT_HASH_BYTES, canon, len, NULL, 0);
}

/* Unpack canonical bytes and check their shape. */
static int canon_unpack(const uint8_t *canon, size_t len, msgpack_unpacked *up, char *err)
{
    if (mp_unpack_exact(canon, len, up, err) != 0)
        return -1;
    const msgpack_object *o = &up->data;
    if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != CANON_NKEYS)
        goto bad;
    for (size_t i = 0; i < CANON_NKEYS; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != strlen(canon_keys[i]) ||
            memcmp(k->via.str.ptr, canon_keys[i], k->via.str.size) != 0)
            goto bad;
    }
    return 0;
bad:
    msgpack_unpacked_destroy(up);
    return tg_err(err, "event is not in canonical form");
}

int event_canon_parse(const uint8_t *canon, size_t len, struct event_view *v, char *err)
{
    msgpack_unpacked up;
    if (canon_unpack(canon, len, &up, err) != 0)
        return -1;
    const msgpack_object *o = &up.data;
    const msgpack_object *type = mp_map_get(o, "type"), *ph = mp_map_get(o, "prev_hash");
    int rc = -1;
    char hex[2 * EVENT_HASH_BYTES + 1];
    if (mp_get_u64(o, "seq", &v->seq, err) != 0)
        goto out;
    if (!type || type->type != MSGPACK_OBJECT_STR || type->via.str.size >= sizeof v->type) {
        tg_err(err, "event type missing or too long");
        goto out;
    }
    memcpy(v->type, type->via.str.ptr, type->via.str.size);
    v->type[type->via.str.size] = '\0';
    if (!ph || ph->type != MSGPACK_OBJECT_STR || ph->via.str.size != 2 * EVENT_HASH_BYTES) {
        tg_err(err, "event prev_hash missing or malformed");
        goto out;
    }
    memcpy(hex, ph->via.str.ptr, 2 * EVENT_HASH_BYTES);
    hex[2 * EVENT_HASH_BYTES] = '\0';
    if (tg_unhex(hex, v->prev_hash, EVENT_HASH_BYTES) != 0) {
        tg_err(err, "event prev_hash is not hex");
        goto out;
    }
    rc = 0;
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* Pack the canonical map's entries plus "hash" as one map. */
static void pack_full(msgpack_packer *pk, const msgpack_object *o, const uint8_t hash[EVENT_HASH_BYTES])
{
    char hex[2 * EVENT_HASH_BYTES + 1];
    tg_hex(hash, EVENT_HASH_BYTES, hex);
    msgpack_pack_map(pk, o->via.map.size + 1);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        msgpack_pack_object(pk, o->via.map.ptr[i].key);
        msgpack_pack_object(pk, o->via.map.ptr[i].val);
    }
    mp_pack_kv_str(pk, "hash", hex);
}

int event_full_pack(msgpack_sbuffer *sb, const uint8_t *canon, size_t len,
                    const uint8_t hash[EVENT_HASH_BYTES], char *err)
{
    msgpack_unpacked up;
    if (canon_unpack(canon, len, &up, err) != 0)
        return -1;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_full(&pk, &up.data, hash);
    msgpack_unpacked_destroy(&up);
    return 0;
}

void event_full_pack_own(msgpack_sbuffer *sb, const uint8_t *canon, size_t len,
                         const uint8_t hash[EVENT_HASH_BYTES])
{
    /* 12 keys: a fixmap header byte; 13 still is one. */
    if (len == 0 || canon[0] != (0x80 | CANON_NKEYS))
        log_panic("event_full_pack_own: not canonical bytes of this process");
    msgpack_packer pk;
    char hex[2 * EVENT_HASH_BYTES + 1];
    const char header = (char)(0x80 | (CANON_NKEYS + 1));
    msgpack_sbuffer_write(sb, &header, 1);
    msgpack_sbuffer_write(sb, (const char *)canon + 1, len - 1);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    tg_hex(hash, EVENT_HASH_BYTES, hex);
    mp_pack_kv_str(&pk, "hash", hex);
}

/* JSON for a full (published) msgpack event map; caller frees. */
static int event_full_to_json(const void *buf, size_t len, char **out, char *err)
{
    msgpack_unpacked up;
    if (mp_unpack_exact(buf, len, &up, err) != 0)
        return -1;
    if (up.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&up);
        return tg_err(err, "event is not a map");
    }
    char *s = NULL;
    size_t slen = 0, cap = 0;
    mp_to_json(&up.data, &s, &slen, &cap);
    msgpack_unpacked_destroy(&up);
    *out = s;
    return 0;
}

int event_to_json(const uint8_t *canon, size_t len, const uint8_t hash[EVENT_HASH_BYTES],
                  char **out, char *err)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (event_full_pack(&sb, canon, len, hash, err) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    int rc = event_full_to_json(sb.data, sb.size, out, err);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

