/*
 * event_test.c - unit tests for common/event.c: deterministic ids, command
 * ids, the canonical encoding, its parser and the JSON form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sodium.h>

#include "event.h"
#include "mp.h"

static void pack_data(msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_str(&pk, "namespace", "alice.x");
    mp_pack_kv_u64(&pk, "serial", 42);
}

/* A sample event; data points into sb (caller destroys sb). */
static struct tg_event sample_event(msgpack_sbuffer *sb)
{
    pack_data(sb);
    struct tg_event e = {
        .type = "tel.call_verified", .actor = "tel.x", .id = "0123456789abcdef0123456789abcdef",
        .webhook_id = "wh-1", .call_control_id = "v3:cc", .call_session_id = NULL,
        .from = "+15550001111", .to = "+15550002222",
        .data = (uint8_t *)sb->data, .data_len = sb->size,
    };
    return e;
}

static void test_event_id_deterministic(void **state)
{
    (void)state;
    char a[EVENT_ID_LEN], b[EVENT_ID_LEN], c[EVENT_ID_LEN], d[EVENT_ID_LEN];
    event_id("wh-1", "inbound", a);
    event_id("wh-1", "inbound", b);
    event_id("wh-1", "decision", c);
    event_id("wh-2", "inbound", d);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_not_equal(a, d);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    /* Moving the split between key and step changes the id. */
    event_id("ab", "c", a);
    event_id("a", "bc", b);
    assert_string_not_equal(a, b);
}

static void test_command_id_shape(void **state)
{
    (void)state;
    char a[COMMAND_ID_LEN], b[COMMAND_ID_LEN], c[COMMAND_ID_LEN];
    command_id_make("wh-1", "answer", a);
    command_id_make("wh-1", "answer", b);
    command_id_make("wh-1", "hangup", c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(a[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", a[i]));
    }
    assert_int_equal(a[14], '8');                 /* version 8 */
    assert_non_null(strchr("89ab", a[19]));       /* RFC 9562 variant */
}

static void test_canon_round_trip(void **state)
{
    (void)state;
    msgpack_sbuffer data, canon;
    struct tg_event e = sample_event(&data);
    uint8_t prev[EVENT_HASH_BYTES], h1[EVENT_HASH_BYTES], h2[EVENT_HASH_BYTES];
    struct event_view v;
    char err[ERR_LEN];

    for (int i = 0; i < EVENT_HASH_BYTES; i++)
        prev[i] = (uint8_t)(i * 7 + 1);
    msgpack_sbuffer_init(&canon);
    event_canon_encode(&canon, &e, 7, "2023-11-14T22:13:20.123456Z", prev);
    assert_int_equal(event_canon_parse((uint8_t *)canon.data, canon.size, &v, err), 0);
    assert_int_equal(v.seq, 7);
    assert_string_equal(v.type, "tel.call_verified");
    assert_memory_equal(v.prev_hash, prev, EVENT_HASH_BYTES);

    /* Same input, same bytes, same hash; one changed field, another hash. */
    msgpack_sbuffer again;
    msgpack_sbuffer_init(&again);
    event_canon_encode(&again, &e, 7, "2023-11-14T22:13:20.123456Z", prev);
    assert_int_equal(again.size, canon.size);
    assert_memory_equal(again.data, canon.data, canon.size);
    event_hash((uint8_t *)canon.data, canon.size, h1);
    event_hash((uint8_t *)again.data, again.size, h2);
    assert_memory_equal(h1, h2, EVENT_HASH_BYTES);
    msgpack_sbuffer_clear(&again);
    event_canon_encode(&again, &e, 8, "2023-11-14T22:13:20.123456Z", prev);
    event_hash((uint8_t *)again.data, again.size, h2);
    assert_memory_not_equal(h1, h2, EVENT_HASH_BYTES);

    /* The spine's fast published form equals the checked one. */
    msgpack_sbuffer full, own;
    msgpack_sbuffer_init(&full);
    msgpack_sbuffer_init(&own);
    assert_int_equal(event_full_pack(&full, (uint8_t *)canon.data, canon.size, h1, err), 0);
    event_full_pack_own(&own, (uint8_t *)canon.data, canon.size, h1);
    assert_int_equal(own.size, full.size);
    assert_memory_equal(own.data, full.data, full.size);
    msgpack_sbuffer_destroy(&full);
    msgpack_sbuffer_destroy(&own);

    msgpack_sbuffer_destroy(&again);
    msgpack_sbuffer_destroy(&canon);
    msgpack_sbuffer_destroy(&data);
}

/* The canonical form as msgpack-c's packer makes it: the reference the
 * one-pass encoder must match byte for byte. */
static void packer_canon(msgpack_sbuffer *sb, const struct tg_event *e, uint64_t seq, const char *time,
                         const uint8_t prev[EVENT_HASH_BYTES])
{
    msgpack_packer pk;
    char ph[2 * EVENT_HASH_BYTES + 1];
    tg_hex(prev, EVENT_HASH_BYTES, ph);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 12);
    mp_pack_kv_u64(&pk, "seq", seq);
    mp_pack_kv_str(&pk, "time", time);
    mp_pack_kv_str(&pk, "type", e->type);
    mp_pack_kv_str(&pk, "actor", e->actor);
    mp_pack_kv_str(&pk, "id", e->id);
    mp_pack_kv_str(&pk, "webhook_id", e->webhook_id);
    mp_pack_kv_str(&pk, "call_control_id", e->call_control_id);
    mp_pack_kv_str(&pk, "call_session_id", e->call_session_id);
    mp_pack_kv_str(&pk, "from", e->from);
    mp_pack_kv_str(&pk, "to", e->to);
    mp_pack_cstr(&pk, "data");
    if (e->data && e->data_len)
        msgpack_pack_str_body(&pk, e->data, e->data_len);
    else
        msgpack_pack_map(&pk, 0);
    mp_pack_kv_str(&pk, "prev_hash", ph);
}

/* Every string length class (fixstr, str8, str16, str32), every integer
 * class of seq, NULL fields, no data: the same bytes as msgpack-c. */
static void test_canon_matches_msgpack_c(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536, 70000};
    static const uint64_t seqs[] = {0, 127, 128, 255, 256, 65535, 65536, 4294967295ull, 4294967296ull,
                                    UINT64_MAX};
    uint8_t prev[EVENT_HASH_BYTES];
    msgpack_sbuffer data, got, want;
    char *big = malloc(70001);
    assert_non_null(big);
    memset(big, 'x', 70000);
    for (int i = 0; i < EVENT_HASH_BYTES; i++)
        prev[i] = (uint8_t)(255 - i);
    struct tg_event e = sample_event(&data);
    msgpack_sbuffer_init(&got);
    msgpack_sbuffer_init(&want);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        for (size_t q = 0; q < sizeof seqs / sizeof seqs[0]; q++) {
            big[lens[l]] = '\0';
            struct tg_event f = e;
            f.from = big;                                   /* every length class */
            f.call_session_id = l % 2 ? NULL : "cs";        /* nil and not */
            if (q % 3 == 0) {
                f.data = NULL;                              /* empty map */
                f.data_len = 0;
            }
            msgpack_sbuffer_clear(&got);
            msgpack_sbuffer_clear(&want);
            msgpack_sbuffer_write(&got, "prefix", 6);       /* appends after what is there */
            msgpack_sbuffer_write(&want, "prefix", 6);
            event_canon_encode(&got, &f, seqs[q], "2023-11-14T22:13:20.000000Z", prev);
            packer_canon(&want, &f, seqs[q], "2023-11-14T22:13:20.000000Z", prev);
            assert_int_equal(got.size, want.size);
            assert_memory_equal(got.data, want.data, want.size);
            big[lens[l]] = 'x';
        }
    }
    free(big);
    msgpack_sbuffer_destroy(&got);
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&data);
}

static void test_json_has_spec_keys(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "seq", "time", "type", "actor", "id", "webhook_id", "call_control_id",
        "call_session_id", "from", "to", "data", "prev_hash", "hash",
    };
    msgpack_sbuffer data, canon;
    struct tg_event e = sample_event(&data);
    uint8_t prev[EVENT_HASH_BYTES] = {0}, h[EVENT_HASH_BYTES];
    char err[ERR_LEN], *json = NULL, needle[64], hex[2 * EVENT_HASH_BYTES + 1];

    msgpack_sbuffer_init(&canon);
    event_canon_encode(&canon, &e, 1, "2023-11-14T22:13:20.000000Z", prev);
    event_hash((uint8_t *)canon.data, canon.size, h);
    assert_int_equal(event_to_json((uint8_t *)canon.data, canon.size, h, &json, err), 0);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        snprintf(needle, sizeof needle, "\"%s\":", keys[i]);
        assert_non_null(strstr(json, needle));
    }
    assert_non_null(strstr(json, "\"seq\":1"));
    assert_non_null(strstr(json, "\"time\":\"2023-11-14T22:13:20.000000Z\""));
    assert_non_null(strstr(json, "\"call_session_id\":null"));
    assert_non_null(strstr(json, "\"data\":{\"namespace\":\"alice.x\",\"serial\":42}"));
    tg_hex(h, EVENT_HASH_BYTES, hex);
    snprintf(needle, sizeof needle, "\"hash\":\"%.40s", hex);
    assert_non_null(strstr(json, needle));
    assert_null(strchr(json, '\n'));
    free(json);
    msgpack_sbuffer_destroy(&canon);
    msgpack_sbuffer_destroy(&data);
}

/* Re-pack a canonical map with entries i and j swapped. */
static void swap_keys(const msgpack_sbuffer *canon, uint32_t i, uint32_t j, msgpack_sbuffer *out)
{
    msgpack_unpacked up;
    msgpack_packer pk;
    char err[ERR_LEN];
    assert_int_equal(mp_unpack_exact(canon->data, canon->size, &up, err), 0);
    msgpack_sbuffer_init(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    const msgpack_object *m = &up.data;
    msgpack_pack_map(&pk, m->via.map.size);
    for (uint32_t k = 0; k < m->via.map.size; k++) {
        uint32_t s = k == i ? j : k == j ? i : k;
        msgpack_pack_object(&pk, m->via.map.ptr[s].key);
        msgpack_pack_object(&pk, m->via.map.ptr[s].val);
    }
    msgpack_unpacked_destroy(&up);
}

static void test_non_canonical_rejected(void **state)
{
    (void)state;
    msgpack_sbuffer data, canon, bad;
    struct tg_event e = sample_event(&data);
    uint8_t prev[EVENT_HASH_BYTES] = {0}, h[EVENT_HASH_BYTES] = {0};
    struct event_view v;
    char err[ERR_LEN], *json;

    msgpack_sbuffer_init(&canon);
    event_canon_encode(&canon, &e, 3, "2023-11-14T22:13:20.000000Z", prev);

    swap_keys(&canon, 2, 3, &bad);              /* type <-> actor */
    assert_int_equal(event_canon_parse((uint8_t *)bad.data, bad.size, &v, err), -1);
    assert_int_equal(event_to_json((uint8_t *)bad.data, bad.size, h, &json, err), -1);
    msgpack_sbuffer_destroy(&bad);

    /* Trailing byte after the map. */
    msgpack_sbuffer_init(&bad);
    msgpack_sbuffer_write(&bad, canon.data, canon.size);
    msgpack_sbuffer_write(&bad, "\xc0", 1);
    assert_int_equal(event_canon_parse((uint8_t *)bad.data, bad.size, &v, err), -1);
    msgpack_sbuffer_destroy(&bad);

    /* Truncated. */
    assert_int_equal(event_canon_parse((uint8_t *)canon.data, canon.size - 1, &v, err), -1);

    /* Not a map at all. */
    assert_int_equal(event_canon_parse((const uint8_t *)"\x93\x01\x02\x03", 4, &v, err), -1);

    /* Garbage. */
    assert_int_equal(event_canon_parse((const uint8_t *)"\xc1\xc1", 2, &v, err), -1);

    msgpack_sbuffer_destroy(&canon);
    msgpack_sbuffer_destroy(&data);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_id_deterministic),
        cmocka_unit_test(test_command_id_shape),
        cmocka_unit_test(test_canon_round_trip),
        cmocka_unit_test(test_canon_matches_msgpack_c),
        cmocka_unit_test(test_json_has_spec_keys),
        cmocka_unit_test(test_non_canonical_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
