/*
 * msg_test.c - unit tests of the stage-to-stage message codec
 * (common/msg.c): round trips of every type and rejection of malformed,
 * truncated, oversized and wrongly typed frames.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "mp.h"
#include "msg.h"

static uint8_t *data_map(size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_str(&pk, "reason", "no_namespace");
    mp_pack_kv_u64(&pk, "n", 7);
    *len = sb.size;
    return (uint8_t *)sb.data;
}

static void test_webhook_round_trip(void **state)
{
    const char body[] = "{\"data\":{}}\0binary";
    struct msg_webhook in = {.jseq = 42, .recv_us = 1700000000123456u, .attempt = 3,
                             .body = (uint8_t *)body, .body_len = sizeof body};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msg_webhook_encode(&sb, &in);

    int type;
    char err[ERR_LEN];
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), 0);
    assert_int_equal(type, MSG_WEBHOOK);

    struct msg_webhook out;
    assert_int_equal(msg_webhook_decode(sb.data, sb.size, &out, err), 0);
    assert_int_equal(out.jseq, 42);
    assert_int_equal(out.recv_us, 1700000000123456u);
    assert_int_equal(out.attempt, 3);
    assert_int_equal(out.body_len, sizeof body);
    assert_memory_equal(out.body, body, sizeof body);
    msg_webhook_free(&out);

    /* the wrong decoder refuses it */
    struct msg_result r;
    assert_int_equal(msg_result_decode(sb.data, sb.size, &r, err), -1);
    assert_non_null(strstr(err, "type"));
    msgpack_sbuffer_destroy(&sb);
}

static void test_result_round_trip(void **state)
{
    size_t dlen;
    uint8_t *data = data_map(&dlen);
    struct tg_event ev[2] = {
        {.type = "tel.call_inbound", .actor = "tel.x", .id = "id1", .webhook_id = "w1",
         .call_control_id = "v3:abc", .call_session_id = "s1", .from = "+1312", .to = "+1313",
         .data = data, .data_len = dlen},
        {.type = "tel.call_rejected", .actor = "tel.x", .id = "id2"},
    };
    struct tg_command cmd = {.command_id = "c1", .call_control_id = "v3:abc", .action = "answer",
                             .body = "{\"command_id\":\"c1\"}", .webhook_id = "w1"};
    struct msg_result in = {.jseq = 9, .webhook_id = "w1", .events = ev, .n_events = 2,
                            .commands = &cmd, .n_commands = 1};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msg_result_encode(&sb, &in);

    struct msg_result out;
    char err[ERR_LEN];
    assert_int_equal(msg_result_decode(sb.data, sb.size, &out, err), 0);
    assert_int_equal(out.jseq, 9);
    assert_string_equal(out.webhook_id, "w1");
    assert_int_equal(out.n_events, 2);
    assert_string_equal(out.events[0].type, "tel.call_inbound");
    assert_string_equal(out.events[0].from, "+1312");
    assert_int_equal(out.events[0].data_len, dlen);
    assert_memory_equal(out.events[0].data, data, dlen);
    assert_null(out.events[1].webhook_id);
    assert_null(out.events[1].to);
    assert_int_equal(out.n_commands, 1);
    assert_string_equal(out.commands[0].action, "answer");
    assert_string_equal(out.commands[0].body, "{\"command_id\":\"c1\"}");
    assert_null(out.commands[0].from);
    msg_result_free(&out);
    msgpack_sbuffer_destroy(&sb);
    free(data);
}

static void test_command_outcome_progress(void **state)
{
    char err[ERR_LEN];
    msgpack_sbuffer sb;

    struct tg_command c = {.command_id = "c9", .call_control_id = "v3:x", .action = "speak",
                           .body = "{}", .from = "+1", .to = "+2"};
    msgpack_sbuffer_init(&sb);
    msg_command_encode(&sb, &c);
    struct tg_command co;
    assert_int_equal(msg_command_decode(sb.data, sb.size, &co, err), 0);
    assert_string_equal(co.command_id, "c9");
    assert_string_equal(co.to, "+2");
    tg_command_free(&co);
    msgpack_sbuffer_destroy(&sb);

    struct msg_outcome o = {.command_id = "c9", .action = "speak", .call_control_id = "v3:x",
                            .status = 422, .ok = false, .attempts = 1, .detail = "Call has already ended"};
    msgpack_sbuffer_init(&sb);
    msg_outcome_encode(&sb, &o);
    struct msg_outcome oo;
    assert_int_equal(msg_outcome_decode(sb.data, sb.size, &oo, err), 0);
    assert_int_equal(oo.status, 422);
    assert_false(oo.ok);
    assert_int_equal(oo.attempts, 1);
    assert_string_equal(oo.detail, "Call has already ended");
    assert_null(oo.webhook_id);
    msg_outcome_free(&oo);
    msgpack_sbuffer_destroy(&sb);

    uint64_t done[] = {7, 9};
    struct msg_progress p = {.low = 5, .done = done, .n_done = 2};
    msgpack_sbuffer_init(&sb);
    msg_progress_encode(&sb, &p);
    struct msg_progress po;
    assert_int_equal(msg_progress_decode(sb.data, sb.size, &po, err), 0);
    assert_int_equal(po.low, 5);
    assert_int_equal(po.n_done, 2);
    assert_int_equal(po.done[1], 9);
    msg_progress_free(&po);
    msgpack_sbuffer_destroy(&sb);

    struct msg_settled st = {.low = 8200}, sto;
    msgpack_sbuffer_init(&sb);
    msg_settled_encode(&sb, &st);
    assert_int_equal(msg_settled_decode(sb.data, sb.size, &sto, err), 0);
    assert_int_equal(sto.low, 8200);
    assert_int_equal(msg_progress_decode(sb.data, sb.size, &po, err), -1);   /* wrong type */
    msgpack_sbuffer_destroy(&sb);

    struct tg_event ev = {.type = "ns.cert_issued", .actor = "tel.x", .id = "e"};
    struct msg_append a = {.events = &ev, .n_events = 1};
    msgpack_sbuffer_init(&sb);
    msg_append_encode(&sb, &a);
    struct msg_append ao;
    assert_int_equal(msg_append_decode(sb.data, sb.size, &ao, err), 0);
    assert_int_equal(ao.n_events, 1);
    assert_string_equal(ao.events[0].type, "ns.cert_issued");
    msg_append_free(&ao);
    msgpack_sbuffer_destroy(&sb);
}

/* Every prefix of a valid frame, and the frame with a trailing byte, is
 * rejected without crashing. */
static void test_truncated_and_trailing(void **state)
{
    struct msg_webhook in = {.jseq = 1, .recv_us = 2, .attempt = 1,
                             .body = (uint8_t *)"{}", .body_len = 2};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msg_webhook_encode(&sb, &in);
    char err[ERR_LEN];
    struct msg_webhook out;
    for (size_t n = 0; n < sb.size; n++)
        assert_int_equal(msg_webhook_decode(sb.data, n, &out, err), -1);
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    assert_int_equal(msg_webhook_decode(sb.data, sb.size, &out, err), -1);
    assert_non_null(strstr(err, "trailing"));
    msgpack_sbuffer_destroy(&sb);
}

static void pack_envelope(msgpack_sbuffer *sb, uint64_t v, uint64_t t)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    mp_pack_kv_u64(&pk, "v", v);
    mp_pack_kv_u64(&pk, "t", t);
    mp_pack_kv_u64(&pk, "jseq", 1);
    mp_pack_kv_u64(&pk, "recv", 1);
    mp_pack_kv_str(&pk, "attempt", "one");   /* wrong type */
    mp_pack_kv_str(&pk, "body", "{}");
}

static void test_bad_envelopes(void **state)
{
    char err[ERR_LEN];
    int type;
    struct msg_webhook out;
    msgpack_sbuffer sb;

    msgpack_sbuffer_init(&sb);
    pack_envelope(&sb, 2, MSG_WEBHOOK);
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), -1);
    assert_non_null(strstr(err, "version"));
    msgpack_sbuffer_destroy(&sb);

    msgpack_sbuffer_init(&sb);
    pack_envelope(&sb, MSG_VERSION, MSG_WEBHOOK);
    assert_int_equal(msg_webhook_decode(sb.data, sb.size, &out, err), -1);
    assert_non_null(strstr(err, "attempt"));
    msgpack_sbuffer_destroy(&sb);

    assert_int_equal(msg_type_of("\x93\x01\x02\x03", 4, &type, err), -1);   /* array */
    assert_int_equal(msg_type_of("", 0, &type, err), -1);
    assert_int_equal(msg_type_of("\xc1", 1, &type, err), -1);               /* never used */
    static char big[MSG_MAX_BYTES + 1];
    assert_int_equal(msg_type_of(big, sizeof big, &type, err), -1);
    assert_non_null(strstr(err, "maximum"));
}

/* The envelope is read straight from the bytes when laid out as the
 * encoders lay it out, and by a full unpack otherwise: same answers. */
static void test_type_of_layouts(void **state)
{
    (void)state;
    char err[ERR_LEN];
    int type = -1;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    /* "t" before "v", and a non-fixint type: the full unpack. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_u64(&pk, "t", MSG_RESULT);
    mp_pack_kv_u64(&pk, "v", MSG_VERSION);
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), 0);
    assert_int_equal(type, MSG_RESULT);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_u64(&pk, "v", MSG_VERSION);
    mp_pack_kv_u64(&pk, "t", 300);
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), 0);
    assert_int_equal(type, 300);

    /* A map 16 header with the envelope first: read from the bytes. */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 17);
    mp_pack_kv_u64(&pk, "v", MSG_VERSION);
    mp_pack_kv_u64(&pk, "t", MSG_OUTCOME);
    for (int i = 0; i < 15; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        mp_pack_kv_u64(&pk, k, (uint64_t)i);
    }
    assert_true((uint8_t)sb.data[0] == 0xde);
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), 0);
    assert_int_equal(type, MSG_OUTCOME);

    /* A map of one entry, or a version other than ours, is refused. */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    mp_pack_kv_u64(&pk, "v", MSG_VERSION);
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), -1);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    mp_pack_kv_u64(&pk, "v", MSG_VERSION + 1);
    mp_pack_kv_u64(&pk, "t", MSG_RESULT);
    assert_int_equal(msg_type_of(sb.data, sb.size, &type, err), -1);
    assert_non_null(strstr(err, "version"));
    msgpack_sbuffer_destroy(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webhook_round_trip),
        cmocka_unit_test(test_type_of_layouts),
        cmocka_unit_test(test_result_round_trip),
        cmocka_unit_test(test_command_outcome_progress),
        cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_bad_envelopes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
