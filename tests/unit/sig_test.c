/*
 * sig_test.c - unit tests of the Telnyx webhook signature check
 * (ingress/ingress_sig.c) with the test vector of telnyx.md section 2.5 and
 * its negative cases, also with white space around the header values; the
 * clock is faked through the now parameter.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "../../ingress/ingress_sig.h"

#define PK_B64 "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
#define TS "1700000000"
#define SIG "4nnsVreBd4bTKmASMKLl2ZKwfzG3ScUpsW4FNjdTw3ESHrQPsR0T/jkwaqEi441cFIOdQP/ogI9fj8DDBE78AQ=="
#define NOW 1700000000
#define TOL 300

/* The 583-byte body of the vector, exactly. */
static const char body[] =
    "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"0ccc7b54-4df3-4bca-a65a-3da1ecc777f"
    "0\",\"occurred_at\":\"2023-11-14T22:13:20.000000Z\",\"payload\":{\"call_control_id\":\"v3:"
    "TEST_call_control_id\",\"call_leg_id\":\"428c31b6-7af4-4bcb-b7f5-5013ef9657c1\",\"call"
    "_session_id\":\"428c31b6-abf3-3bc1-b7f4-5013ef9657c1\",\"client_state\":null,\"connect"
    "ion_id\":\"7267000000000000000\",\"direction\":\"incoming\",\"from\":\"+13125550100\",\"to\":"
    "\"+13125550199\",\"state\":\"parked\",\"shaken_stir_attestation\":\"C\",\"shaken_stir_valid"
    "ated\":false},\"record_type\":\"event\"},\"meta\":{\"attempt\":1,\"delivered_to\":\"https://"
    "example.com/webhooks\"}}";

/* The same body re-serialized by Python's json.dumps (spaces added). */
static const char body_reserialized[] =
    "{\"data\": {\"event_type\": \"call.initiated\", \"id\": \"0ccc7b54-4df3-4bca-a65a-3da1ecc"
    "777f0\", \"occurred_at\": \"2023-11-14T22:13:20.000000Z\", \"payload\": {\"call_control_"
    "id\": \"v3:TEST_call_control_id\", \"call_leg_id\": \"428c31b6-7af4-4bcb-b7f5-5013ef96"
    "57c1\", \"call_session_id\": \"428c31b6-abf3-3bc1-b7f4-5013ef9657c1\", \"client_state\""
    ": null, \"connection_id\": \"7267000000000000000\", \"direction\": \"incoming\", \"from\":"
    " \"+13125550100\", \"to\": \"+13125550199\", \"state\": \"parked\", \"shaken_stir_attestati"
    "on\": \"C\", \"shaken_stir_validated\": false}, \"record_type\": \"event\"}, \"meta\": {\"at"
    "tempt\": 1, \"delivered_to\": \"https://example.com/webhooks\"}}";

static struct ingress_sig_key key;

static int setup(void **state)
{
    (void)state;
    char err[ERR_LEN];
    if (sodium_init() < 0)
        return -1;
    return ingress_sig_key_parse(PK_B64, &key, err);
}

static int verify(const char *sig, const char *ts, const char *b, size_t len, int64_t now,
                  enum ingress_sig_fail *why)
{
    char err[ERR_LEN] = "";
    int rc = ingress_sig_verify(&key, sig, ts, b, len, now, TOL, why, err);
    if (rc != 0)
        assert_true(err[0] != '\0');
    return rc;
}

static void test_vector_verifies(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    assert_int_equal(sizeof body - 1, 583);
    assert_int_equal(verify(SIG, TS, body, sizeof body - 1, NOW, &why), 0);
    /* within tolerance on both sides */
    assert_int_equal(verify(SIG, TS, body, sizeof body - 1, NOW + TOL, &why), 0);
    assert_int_equal(verify(SIG, TS, body, sizeof body - 1, NOW - TOL, &why), 0);
}

static void test_tampered_body(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    char *b = strdup(body);
    char *att = strstr(b, "\"shaken_stir_attestation\":\"C\"");
    assert_non_null(att);
    att[strlen("\"shaken_stir_attestation\":\"")] = 'A';
    assert_int_equal(verify(SIG, TS, b, strlen(b), NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
    free(b);
    /* one byte fewer */
    assert_int_equal(verify(SIG, TS, body, sizeof body - 2, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
}

static void test_other_timestamp(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    assert_int_equal(verify(SIG, "1700000001", body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
}

static void test_reserialized_body(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    assert_int_not_equal(strlen(body_reserialized), sizeof body - 1);
    assert_int_equal(verify(SIG, TS, body_reserialized, strlen(body_reserialized), NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
}

static void test_stale_and_future(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    assert_int_equal(verify(SIG, TS, body, sizeof body - 1, NOW + TOL + 1, &why), -1);
    assert_int_equal(why, INGRESS_SIG_STALE);
    assert_int_equal(verify(SIG, TS, body, sizeof body - 1, NOW - TOL - 1, &why), -1);
    assert_int_equal(why, INGRESS_SIG_STALE);
    /* the timestamp is checked before the signature */
    assert_int_equal(verify("AAAA", TS, body, sizeof body - 1, NOW + 100000, &why), -1);
    assert_int_equal(why, INGRESS_SIG_STALE);
}

static void test_bad_timestamp(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    static const char *const bad[] = {"17000000a0", "-1700000000", "1700000000\r", "17000 00000",
                                      "1.7e9", "0x6553f100", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(verify(SIG, bad[i], body, sizeof body - 1, NOW, &why), -1);
        assert_int_equal(why, INGRESS_SIG_BAD_TIMESTAMP);
    }
}

/* Spaces and tabs around either header value (RFC 9110 OWS) are not part
 * of it; a value of only white space is as good as none. */
static void test_header_whitespace(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    static const char *const ts_ok[] = {" " TS, TS " ", "\t" TS "\t", "  \t" TS " \t "};
    static const char *const sig_ok[] = {" " SIG, SIG " ", "\t" SIG "\t", " \t " SIG "\t  "};
    for (size_t i = 0; i < sizeof ts_ok / sizeof ts_ok[0]; i++) {
        assert_int_equal(verify(SIG, ts_ok[i], body, sizeof body - 1, NOW, &why), 0);
        assert_int_equal(verify(sig_ok[i], TS, body, sizeof body - 1, NOW, &why), 0);
        assert_int_equal(verify(sig_ok[i], ts_ok[i], body, sizeof body - 1, NOW, &why), 0);
    }
    /* trimming relaxes no check: a stale or altered timestamp still fails */
    assert_int_equal(verify(SIG, " " TS " ", body, sizeof body - 1, NOW + TOL + 1, &why), -1);
    assert_int_equal(why, INGRESS_SIG_STALE);
    assert_int_equal(verify(SIG, " 1700000001 ", body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
    assert_int_equal(verify(SIG, " \t ", body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_MISSING);
    assert_int_equal(verify("\t ", TS, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_MISSING);
}

static void test_missing_headers(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    assert_int_equal(verify(NULL, TS, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_MISSING);
    assert_int_equal(verify(SIG, NULL, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_MISSING);
    assert_int_equal(verify("", TS, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_MISSING);
    assert_int_equal(verify(SIG, "", body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_MISSING);
}

static void test_bad_signature_encoding(void **state)
{
    (void)state;
    enum ingress_sig_fail why;
    char sig[sizeof SIG];
    /* truncated: 63 bytes of signature */
    const char *trunc63 = "4nnsVreBd4bTKmASMKLl2ZKwfzG3ScUpsW4FNjdTw3ESHrQPsR0T/jkwaqEi441cFIOdQP/ogI9fj8DDBE78";
    assert_int_equal(verify(trunc63, TS, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
    memcpy(sig, SIG, sizeof SIG);
    sig[40] = '*';
    assert_int_equal(verify(sig, TS, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
    /* a different but well-formed 64-byte signature */
    memcpy(sig, SIG, sizeof SIG);
    sig[10] = sig[10] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(sig, TS, body, sizeof body - 1, NOW, &why), -1);
    assert_int_equal(why, INGRESS_SIG_BAD_SIGNATURE);
}

static void test_key_parse(void **state)
{
    (void)state;
    struct ingress_sig_key k;
    char err[ERR_LEN];
    assert_int_equal(ingress_sig_key_parse(PK_B64, &k, err), 0);
    assert_memory_equal(k.pk, key.pk, sizeof k.pk);
    assert_int_equal(k.pk[0], 0x79);
    assert_int_equal(k.pk[31], 0x64);
    /* 31 bytes, 33 bytes, not base64, empty */
    assert_int_equal(ingress_sig_key_parse("ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60Elg==", &k, err), -1);
    assert_int_equal(ingress_sig_key_parse("ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQAAA==", &k, err), -1);
    assert_int_equal(ingress_sig_key_parse("not a key!", &k, err), -1);
    assert_int_equal(ingress_sig_key_parse("", &k, err), -1);
    assert_int_equal(ingress_sig_key_parse(NULL, &k, err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_verifies),
        cmocka_unit_test(test_tampered_body),
        cmocka_unit_test(test_other_timestamp),
        cmocka_unit_test(test_reserialized_body),
        cmocka_unit_test(test_stale_and_future),
        cmocka_unit_test(test_bad_timestamp),
        cmocka_unit_test(test_header_whitespace),
        cmocka_unit_test(test_missing_headers),
        cmocka_unit_test(test_bad_signature_encoding),
        cmocka_unit_test(test_key_parse),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
