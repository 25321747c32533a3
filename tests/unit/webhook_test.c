/*
 * webhook_test.c - unit tests for verifier/verifier_webhook: real-shaped
 * Telnyx bodies (telnyx.md 1.4, 2.5), nulls, missing fields, wrong types,
 * garbage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "../../verifier/verifier_webhook.h"

/* telnyx.md 1.4 */
static const char body_initiated[] =
    "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"b97d4d5e-6fe7-4432-911f-79637bf6ebb7\","
    "\"occurred_at\":\"2025-11-23T03:30:00.076316Z\",\"payload\":{"
    "\"call_control_id\":\"v3:2EC-70CTEjlUq3tDM0CxKXIt5-5N4iP4wo7_-PfH-qub97Sk4EqO5w\","
    "\"call_leg_id\":\"b0e6224c-c81c-11f0-afbb-02420aef93a0\","
    "\"call_session_id\":\"b0e6141e-c81c-11f0-abac-02420aef93a0\",\"caller_id_name\":\"ACME CORP\","
    "\"calling_party_type\":\"pstn\",\"client_state\":null,\"connection_codecs\":\"PCMA,PCMU,VP8,H264\","
    "\"connection_id\":\"2811212257810187875\",\"custom_headers\":[{\"name\":\"X-Example\",\"value\":\"abc\"}],"
    "\"direction\":\"incoming\",\"from\":\"+18124040851\",\"from_sip_uri\":\"8124040851@206.147.72.186:5060\","
    "\"offered_codecs\":\"PCMU,G729\",\"shaken_stir_attestation\":\"B\",\"shaken_stir_validated\":true,"
    "\"sip_headers\":[{\"name\":\"Diversion\",\"value\":\"<sip:+13125550100@192.168.1.1>;reason=unconditional\"}],"
    "\"start_time\":\"2025-11-23T03:30:00.076316Z\",\"state\":\"parked\",\"tags\":[],"
    "\"to\":\"+13057864498\",\"to_sip_uri\":\"+13057864498@192.76.120.10:5060\"},"
    "\"record_type\":\"event\"},\"meta\":{\"attempt\":1,\"delivered_to\":\"https://example.com/telnyx/webhook\"}}";

/* telnyx.md 2.5 test vector body */
static const char body_vector[] =
    "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"0ccc7b54-4df3-4bca-a65a-3da1ecc777f0\","
    "\"occurred_at\":\"2023-11-14T22:13:20.000000Z\",\"payload\":{\"call_control_id\":\"v3:TEST_call_control_id\","
    "\"call_leg_id\":\"428c31b6-7af4-4bcb-b7f5-5013ef9657c1\",\"call_session_id\":\"428c31b6-abf3-3bc1-b7f4-5013ef9657c1\","
    "\"client_state\":null,\"connection_id\":\"7267000000000000000\",\"direction\":\"incoming\","
    "\"from\":\"+13125550100\",\"to\":\"+13125550199\",\"state\":\"parked\",\"shaken_stir_attestation\":\"C\","
    "\"shaken_stir_validated\":false},\"record_type\":\"event\"},\"meta\":{\"attempt\":1,"
    "\"delivered_to\":\"https://example.com/webhooks\"}}";

static int parse(const char *s, struct verifier_webhook *wh, char *err)
{
    return verifier_webhook_parse(s, strlen(s), wh, err);
}

static void test_initiated_full(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    char err[ERR_LEN];
    assert_int_equal(parse(body_initiated, &wh, err), 0);
    assert_string_equal(wh.id, "b97d4d5e-6fe7-4432-911f-79637bf6ebb7");
    assert_string_equal(wh.event_type, "call.initiated");
    assert_string_equal(wh.occurred_at, "2025-11-23T03:30:00.076316Z");
    assert_string_equal(wh.call_control_id, "v3:2EC-70CTEjlUq3tDM0CxKXIt5-5N4iP4wo7_-PfH-qub97Sk4EqO5w");
    assert_string_equal(wh.call_leg_id, "b0e6224c-c81c-11f0-afbb-02420aef93a0");
    assert_string_equal(wh.call_session_id, "b0e6141e-c81c-11f0-abac-02420aef93a0");
    assert_null(wh.client_state);
    assert_string_equal(wh.direction, "incoming");
    assert_string_equal(wh.from, "+18124040851");
    assert_string_equal(wh.to, "+13057864498");
    assert_string_equal(wh.state, "parked");
    assert_true(wh.has_attestation);
    assert_int_equal(wh.attestation, ATTEST_B);
    assert_int_equal(wh.attestation_validated, WEBHOOK_TRUE);
    assert_null(wh.namespace_token);
    assert_null(wh.hangup_cause);
    verifier_webhook_free(&wh);
    assert_null(wh.id);
    verifier_webhook_free(&wh);     /* safe twice */
}

static void test_vector(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    char err[ERR_LEN];
    assert_int_equal(parse(body_vector, &wh, err), 0);
    assert_string_equal(wh.id, "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0");
    assert_int_equal(wh.attestation, ATTEST_C);
    assert_int_equal(wh.attestation_validated, WEBHOOK_FALSE);
    assert_string_equal(wh.to, "+13125550199");
    verifier_webhook_free(&wh);
}

static void test_hangup_and_speak(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    char err[ERR_LEN];
    const char *hangup =
        "{\"data\":{\"event_type\":\"call.hangup\",\"id\":\"h1\",\"payload\":{"
        "\"call_control_id\":\"v3:x\",\"client_state\":\"\",\"hangup_cause\":\"normal_clearing\","
        "\"hangup_source\":\"caller\",\"sip_hangup_cause\":\"200\",\"call_quality_stats\":null,"
        "\"from\":\"+1\",\"to\":\"+2\"}}}";
    assert_int_equal(parse(hangup, &wh, err), 0);
    assert_string_equal(wh.hangup_cause, "normal_clearing");
    assert_string_equal(wh.hangup_source, "caller");
    assert_string_equal(wh.sip_hangup_cause, "200");
    assert_null(wh.client_state);           /* "" is no state */
    assert_false(wh.has_attestation);
    assert_int_equal(wh.attestation, ATTEST_NONE);
    assert_int_equal(wh.attestation_validated, WEBHOOK_ABSENT);
    verifier_webhook_free(&wh);

    const char *ended =
        "{\"data\":{\"event_type\":\"call.speak.ended\",\"id\":\"s1\",\"payload\":{"
        "\"call_control_id\":\"v3:x\",\"client_state\":\"dGcx\",\"status\":\"call_hangup\",\"speak_id\":\"Y\"}}}";
    assert_int_equal(parse(ended, &wh, err), 0);
    assert_string_equal(wh.status, "call_hangup");
    assert_string_equal(wh.client_state, "dGcx");
    verifier_webhook_free(&wh);
}

static void test_token_header(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    char err[ERR_LEN];
    const char *b =
        "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"t1\",\"payload\":{"
        "\"custom_headers\":[{\"name\":\"X-Other\",\"value\":\"no\"},42,{\"name\":7},"
        "{\"name\":\"x-namespace-token\",\"value\":\"TOKEN123\"}]}}}";
    assert_int_equal(parse(b, &wh, err), 0);
    assert_string_equal(wh.namespace_token, "TOKEN123");
    verifier_webhook_free(&wh);

    const char *b2 =
        "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"t2\",\"payload\":{"
        "\"custom_headers\":{\"name\":\"X-Namespace-Token\",\"value\":\"x\"}}}}";
    assert_int_equal(parse(b2, &wh, err), 0);
    assert_null(wh.namespace_token);
    verifier_webhook_free(&wh);

    /* The header is there but its value is unusable: the call still
     * carries a token (decided by it alone, SPEC 4), one no check accepts. */
    char big[5200], b3[5400];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *values[] = {"\"\"", "42", "null", "{}", big};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        snprintf(b3, sizeof b3,
                 "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"t3\",\"payload\":{"
                 "\"custom_headers\":[{\"name\":\"X-Namespace-Token\",\"value\":%s%s%s}]}}}",
                 values[i] == big ? "\"" : "", values[i], values[i] == big ? "\"" : "");
        assert_int_equal(parse(b3, &wh, err), 0);
        assert_non_null(wh.namespace_token);
        assert_string_equal(wh.namespace_token, "");
        verifier_webhook_free(&wh);
    }
    const char *b4 =
        "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"t4\",\"payload\":{"
        "\"custom_headers\":[{\"name\":\"X-Namespace-Token\"}]}}}";
    assert_int_equal(parse(b4, &wh, err), 0);
    assert_string_equal(wh.namespace_token, "");
    verifier_webhook_free(&wh);
}

static void test_nulls_and_wrong_types(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    char err[ERR_LEN];
    const char *b =
        "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"w1\",\"occurred_at\":12,\"payload\":{"
        "\"call_control_id\":null,\"from\":123,\"to\":[\"+1\"],\"direction\":{\"x\":1},"
        "\"shaken_stir_attestation\":null,\"shaken_stir_validated\":\"yes\",\"client_state\":false,"
        "\"custom_headers\":null,\"unknown_key\":{\"deep\":[1,2,3]}}}}";
    assert_int_equal(parse(b, &wh, err), 0);
    assert_string_equal(wh.id, "w1");
    assert_null(wh.occurred_at);
    assert_null(wh.call_control_id);
    assert_null(wh.from);
    assert_null(wh.to);
    assert_null(wh.direction);
    assert_false(wh.has_attestation);
    assert_int_equal(wh.attestation_validated, WEBHOOK_ABSENT);
    assert_null(wh.client_state);
    verifier_webhook_free(&wh);

    /* Unknown attestation value: none. */
    const char *b2 = "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"w2\",\"payload\":{"
                     "\"shaken_stir_attestation\":\"D\"}}}";
    assert_int_equal(parse(b2, &wh, err), 0);
    assert_false(wh.has_attestation);
    verifier_webhook_free(&wh);

    /* Payload absent or null: accepted with no payload fields. */
    assert_int_equal(parse("{\"data\":{\"event_type\":\"x.y\",\"id\":\"w3\"}}", &wh, err), 0);
    assert_null(wh.call_control_id);
    verifier_webhook_free(&wh);
    assert_int_equal(parse("{\"data\":{\"event_type\":\"x.y\",\"id\":\"w4\",\"payload\":null}}", &wh, err), 0);
    verifier_webhook_free(&wh);
}

static void test_rejected(void **state)
{
    (void)state;
    static const struct { const char *body; const char *want; } cases[] = {
        {"", "not JSON"},
        {"garbage", "not JSON"},
        {"{\"data\":", "not JSON"},
        {"[1,2]", "not a JSON object"},
        {"{}", "no 'data' object"},
        {"{\"data\":[]}", "no 'data' object"},
        {"{\"data\":{\"event_type\":\"call.initiated\"}}", "data.id"},
        {"{\"data\":{\"id\":7,\"event_type\":\"call.initiated\"}}", "data.id"},
        {"{\"data\":{\"id\":\"\",\"event_type\":\"call.initiated\"}}", "data.id"},
        {"{\"data\":{\"id\":\"a\"}}", "data.event_type"},
        {"{\"data\":{\"id\":\"a\",\"event_type\":null}}", "data.event_type"},
        {"{\"data\":{\"id\":\"a\",\"event_type\":\"call.hangup\",\"payload\":\"x\"}}", "payload"},
        {"{\"data\":{\"id\":\"a\\u0000b\",\"event_type\":\"call.hangup\"}}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct verifier_webhook wh;
        char err[ERR_LEN] = "";
        if (verifier_webhook_parse(cases[i].body, strlen(cases[i].body), &wh, err) != -1)
            fail_msg("case %zu accepted", i);
        assert_null(wh.id);
        assert_null(wh.event_type);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].want);
    }
}

static void test_garbage_bytes(void **state)
{
    (void)state;
    /* Every prefix of a real body, and random bytes: never crash. */
    for (size_t n = 0; n < sizeof body_initiated - 1; n++) {
        struct verifier_webhook wh;
        char err[ERR_LEN];
        if (verifier_webhook_parse(body_initiated, n, &wh, err) == 0)
            fail_msg("prefix of %zu bytes accepted", n);
    }
    uint32_t x = 12345;
    unsigned char buf[256];
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (unsigned char)(x >> 16);
        }
        struct verifier_webhook wh;
        char err[ERR_LEN];
        if (verifier_webhook_parse(buf, sizeof buf, &wh, err) == 0)
            verifier_webhook_free(&wh);
    }
}

int main(void)
{
    log_init("webhook_test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initiated_full),
        cmocka_unit_test(test_vector),
        cmocka_unit_test(test_hangup_and_speak),
        cmocka_unit_test(test_token_header),
        cmocka_unit_test(test_nulls_and_wrong_types),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_garbage_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
