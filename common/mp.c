/*
 * mp.c - msgpack-c helpers shared by every process (see mp.h).
 */
#include "mp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mp_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    if (s)
        mp_pack_strn(pk, s, strlen(s));
    else
        msgpack_pack_nil(pk);
}

void mp_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    mp_pack_cstr(pk, key);
    mp_pack_cstr(pk, value);
}

void mp_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value)
{
    mp_pack_cstr(pk, key);
    msgpack_pack_uint64(pk, value);
}

void mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    mp_pack_cstr(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

const msgpack_object *mp_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, char *err)
{
    const msgpack_object *o = mp_map_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return tg_err(err, "field '%s': missing or not an unsigned integer", key);
    *out = o->via.u64;
    return 0;
}

int mp_get_bool(const msgpack_object *map, const char *key, bool *out, char *err)
{
    const msgpack_object *o = mp_map_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return tg_err(err, "field '%s': missing or not a boolean", key);
    *out = o->via.boolean;
    return 0;
}

int mp_get_str(const msgpack_object *map, const char *key, bool nil_ok, char **out, char *err)
{
    const msgpack_object *o = mp_map_get(map, key);
    if ((!o || o->type == MSGPACK_OBJECT_NIL) && nil_ok) {
        *out = NULL;
        return 0;
    }
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return tg_err(err, "field '%s': missing or not a string", key);
    if (memchr(o->via.str.ptr, '\0', o->via.str.size))
        return tg_err(err, "field '%s': contains NUL", key);
    *out = xstrndup(o->via.str.ptr, o->via.str.size);
    return 0;
}

int mp_get_bytes(const msgpack_object *map, const char *key, const char **ptr, size_t *len, char *err)
{
    const msgpack_object *o = mp_map_get(map, key);
    if (o && o->type == MSGPACK_OBJECT_BIN) {
        *ptr = o->via.bin.ptr;
        *len = o->via.bin.size;
        return 0;
    }
    if (o && o->type == MSGPACK_OBJECT_STR) {
        *ptr = o->via.str.ptr;
        *len = o->via.str.size;
        return 0;
    }
    return tg_err(err, "field '%s': missing or not bytes", key);
}

static uint64_t be_get(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * Do the sizes the headers in buf declare fit in buf?  msgpack-c allocates
 * an array or map for its declared count before it reads the elements, so
 * a few hostile bytes (a token, a frame) declaring 2^32 elements made it ask
 * for ~100 GB.  Every element takes at least one byte, so a count larger
 * than the bytes left is refused here, before any allocation; nothing valid
 * is refused.  Only the first object is walked (trailing bytes are
 * msgpack_unpack_next's to report).
 */
static bool sizes_fit(const uint8_t *p, size_t len)
{
    /* Header size, and the width of its length field, for 0xc4..0xdf. */
    static const uint8_t head[32] = {2, 3, 5, 3, 4, 6, 5, 9, 2, 3, 5, 9, 2, 3, 5, 9,
                                     3, 4, 6, 10, 18, 2, 3, 5, 3, 5, 3, 5, 0, 0, 0, 0};
    size_t i = 0;
    uint64_t pending = 1;           /* objects still to walk */
    while (pending > 0) {
        if (i >= len || pending > len - i)
            return false;
        pending--;
        uint8_t b = p[i];
        uint64_t n = 0, children = 0;
        size_t h = 1;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8f) {
            children = 2 * (uint64_t)(b & 0x0f);
        } else if (b <= 0x9f) {
            children = b & 0x0f;
        } else if (b <= 0xbf) {
            n = b & 0x1f;
        } else if (b == 0xc1) {
            return false;           /* never used */
        } else {
            h = head[b - 0xc4];
            if (i + h > len)
                return false;
            switch (b) {
            case 0xc4: case 0xc5: case 0xc6:                /* bin 8/16/32 */
            case 0xd9: case 0xda: case 0xdb:                /* str 8/16/32 */
                n = be_get(p + i + 1, (int)h - 1);
                break;
            case 0xc7: case 0xc8: case 0xc9:                /* ext 8/16/32: length, type */
                n = be_get(p + i + 1, (int)h - 2);
                break;
            case 0xdc: case 0xdd:                           /* array 16/32 */
                children = be_get(p + i + 1, (int)h - 1);
                break;
            case 0xde: case 0xdf:                           /* map 16/32 */
                children = 2 * be_get(p + i + 1, (int)h - 1);
                break;
            default:                                        /* numbers, fixext */
                break;
            }
        }
        i += h;
        if (i > len || n > len - i || children > len - i)
            return false;
        i += (size_t)n;
        pending += children;
    }
    return true;
}

int mp_unpack_exact(const void *buf, size_t len, msgpack_unpacked *up, char *err)
{
    size_t off = 0;
    msgpack_unpacked_init(up);
    if (!sizes_fit(buf, len))
        return tg_err(err, "not a complete msgpack object");
    msgpack_unpack_return r = msgpack_unpack_next(up, buf, len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(up);
        return tg_err(err, "not a complete msgpack object");
    }
    if (off != len) {
        msgpack_unpacked_destroy(up);
        return tg_err(err, "%zu trailing bytes after msgpack object", len - off);
    }
    return 0;
}

static void sb_append(char **s, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (*len + n + 1 > c)
            c *= 2;
        *s = xrealloc(*s, c);
        *cap = c;
    }
    memcpy(*s + *len, p, n);
    *len += n;
    (*s)[*len] = '\0';
}

static void json_string(const char *p, size_t n, char **s, size_t *len, size_t *cap)
{
    sb_append(s, len, cap, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_append(s, len, cap, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_append(s, len, cap, esc, 6);
        } else {
            sb_append(s, len, cap, (const char *)&p[i], 1);
        }
    }
    sb_append(s, len, cap, "\"", 1);
}

void mp_to_json(const msgpack_object *o, char **s, size_t *len, size_t *cap)
{
    char num[64];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        sb_append(s, len, cap, "null", 4);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        if (o->via.boolean)
            sb_append(s, len, cap, "true", 4);
        else
            sb_append(s, len, cap, "false", 5);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        sb_append(s, len, cap, num, (size_t)snprintf(num, sizeof num, "%" PRIu64, o->via.u64));
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        sb_append(s, len, cap, num, (size_t)snprintf(num, sizeof num, "%" PRId64, o->via.i64));
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        sb_append(s, len, cap, num, (size_t)snprintf(num, sizeof num, "%.17g", o->via.f64));
        break;
    case MSGPACK_OBJECT_STR:
        json_string(o->via.str.ptr, o->via.str.size, s, len, cap);
        break;
    case MSGPACK_OBJECT_BIN: {
        char *b = tg_b64_encode((const uint8_t *)o->via.bin.ptr, o->via.bin.size);
        json_string(b, strlen(b), s, len, cap);
        free(b);
        break;
    }
    case MSGPACK_OBJECT_ARRAY:
        sb_append(s, len, cap, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                sb_append(s, len, cap, ",", 1);
            mp_to_json(&o->via.array.ptr[i], s, len, cap);
        }
        sb_append(s, len, cap, "]", 1);
        break;
    case MSGPACK_OBJECT_MAP:
        sb_append(s, len, cap, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (i)
                sb_append(s, len, cap, ",", 1);
            if (kv->key.type == MSGPACK_OBJECT_STR)
                json_string(kv->key.via.str.ptr, kv->key.via.str.size, s, len, cap);
            else {
                char *k = NULL;
                size_t kl = 0, kc = 0;
                mp_to_json(&kv->key, &k, &kl, &kc);
                json_string(k, kl, s, len, cap);
                free(k);
            }
            sb_append(s, len, cap, ":", 1);
            mp_to_json(&kv->val, s, len, cap);
        }
        sb_append(s, len, cap, "}", 1);
        break;
    default:
        sb_append(s, len, cap, "null", 4);
        break;
    }
}
