/*
 * cert_test.c - unit tests of certificates and tokens (common/cert.c):
 * canonical encoding, issuer signatures, tampering anywhere, wrong issuer,
 * token binding to from/to, freshness, malformed and oversized tokens.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cert.h"

static uint8_t issuer_pk[CERT_PK_BYTES], issuer_sk[CERT_SK_BYTES];
static uint8_t holder_pk[CERT_PK_BYTES], holder_sk[CERT_SK_BYTES];

static int setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    crypto_sign_keypair(issuer_pk, issuer_sk);
    crypto_sign_keypair(holder_pk, holder_sk);
    return 0;
}

static void make_cert(struct cert *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->namespace_, "alice.x");
    memcpy(c->holder_pk, holder_pk, sizeof holder_pk);
    strcpy(c->phones[0], "+13125550100");
    strcpy(c->phones[1], "+442079460000");
    c->n_phones = 2;
    strcpy(c->serial, "00112233445566ff");
    c->not_before = 1700000000;
    c->not_after = 1700000000 + 86400;
    cert_key_id(issuer_pk, c->issuer_id);
}

static void test_issue_decode_verify(void **state)
{
    struct cert c, d;
    struct cert_blob b, b2;
    char err[ERR_LEN];
    make_cert(&c);
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), 0);
    assert_true(b.len < CERT_MAX_BYTES);
    assert_int_equal(cert_decode(b.bytes, b.len, &d, &b2, err), 0);
    assert_string_equal(d.namespace_, "alice.x");
    assert_int_equal(d.n_phones, 2);
    assert_string_equal(d.phones[1], "+442079460000");
    assert_memory_equal(d.holder_pk, holder_pk, CERT_PK_BYTES);
    assert_int_equal(d.not_after, c.not_after);
    assert_int_equal(cert_verify_sig(&b2, &d, issuer_pk, err), 0);
}

/* Flipping any single bit of a signed certificate makes it fail to decode
 * or fail to verify. */
static void test_tamper_every_byte(void **state)
{
    struct cert c, d;
    struct cert_blob b, b2;
    char err[ERR_LEN];
    make_cert(&c);
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), 0);
    for (size_t i = 0; i < b.len; i++) {
        uint8_t copy[CERT_MAX_BYTES];
        memcpy(copy, b.bytes, b.len);
        copy[i] ^= 0x01;
        if (cert_decode(copy, b.len, &d, &b2, err) == 0 &&
            cert_verify_sig(&b2, &d, issuer_pk, err) == 0)
            fail_msg("tampered byte %zu accepted", i);
    }
}

static void test_wrong_issuer(void **state)
{
    uint8_t other_pk[CERT_PK_BYTES], other_sk[CERT_SK_BYTES];
    struct cert c, d;
    struct cert_blob b, b2;
    char err[ERR_LEN];
    crypto_sign_keypair(other_pk, other_sk);
    make_cert(&c);
    /* signed by another key but claiming our issuer id */
    assert_int_equal(cert_issue(&c, other_sk, &b, err), 0);
    assert_int_equal(cert_decode(b.bytes, b.len, &d, &b2, err), 0);
    assert_int_equal(cert_verify_sig(&b2, &d, issuer_pk, err), -1);
    /* verified against a key whose id it does not name */
    assert_int_equal(cert_verify_sig(&b2, &d, other_pk, err), -1);
    assert_non_null(strstr(err, "another issuer"));
}

static void test_input_validation(void **state)
{
    struct cert c;
    struct cert_blob b;
    char err[ERR_LEN];
    const char *bad_ns[] = {"alice", "Alice.x", "al ice.x", ".x", "a..x", "-a.x", "a-.x", "a.x.", ""};
    for (size_t i = 0; i < sizeof bad_ns / sizeof *bad_ns; i++) {
        make_cert(&c);
        strcpy(c.namespace_, bad_ns[i]);
        assert_int_equal(cert_issue(&c, issuer_sk, &b, err), -1);
    }
    assert_true(cert_namespace_valid("alice.x"));
    assert_true(cert_namespace_valid("bob-2.sales.example"));
    const char *bad_phone[] = {"13125550100", "+0312", "+1", "+1234567890123456", "+1312a", ""};
    for (size_t i = 0; i < sizeof bad_phone / sizeof *bad_phone; i++) {
        make_cert(&c);
        strcpy(c.phones[0], bad_phone[i]);
        assert_int_equal(cert_issue(&c, issuer_sk, &b, err), -1);
    }
    make_cert(&c);
    c.not_after = c.not_before;
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), -1);
    make_cert(&c);
    strcpy(c.serial, "XYZ");
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), -1);
}

static void test_token_round_trip_and_binding(void **state)
{
    struct cert c;
    struct cert_blob b;
    struct token t;
    char tok[TOKEN_MAX_LEN + 1], err[ERR_LEN];
    uint64_t now = 1700000100;
    make_cert(&c);
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), 0);
    assert_int_equal(token_make(&b, holder_sk, "+13125550100", "+13125550199", now, tok, err), 0);
    /* safe in a SIP header, a few hundred bytes */
    assert_true(strlen(tok) < 400);
    assert_null(strpbrk(tok, " \t\",;=+/"));

    assert_int_equal(token_parse(tok, &t, err), 0);
    assert_string_equal(t.cert.namespace_, "alice.x");
    assert_int_equal(t.iat, now);
    assert_int_equal(cert_verify_sig(&t.blob, &t.cert, issuer_pk, err), 0);
    assert_int_equal(token_verify_holder(&t, "+13125550100", "+13125550199", now + 10, err), 0);
    /* caller-ID need not be a certificate phone: the token names the call */
    assert_int_equal(token_make(&b, holder_sk, "+19995550000", "+13125550199", now, tok, err), 0);
    assert_int_equal(token_parse(tok, &t, err), 0);
    assert_int_equal(token_verify_holder(&t, "+19995550000", "+13125550199", now, err), 0);
    /* another from or to */
    assert_int_equal(token_verify_holder(&t, "+13125550100", "+13125550199", now, err), -1);
    assert_int_equal(token_verify_holder(&t, "+19995550000", "+13125550198", now, err), -1);
    /* stale, future */
    assert_int_equal(token_verify_holder(&t, "+19995550000", "+13125550199", now + 61, err), -1);
    assert_non_null(strstr(err, "stale"));
    assert_int_equal(token_verify_holder(&t, "+19995550000", "+13125550199", now - 30, err), -1);
}

static void test_token_signed_by_someone_else(void **state)
{
    uint8_t pk[CERT_PK_BYTES], sk[CERT_SK_BYTES];
    struct cert c;
    struct cert_blob b;
    struct token t;
    char tok[TOKEN_MAX_LEN + 1], err[ERR_LEN];
    crypto_sign_keypair(pk, sk);
    make_cert(&c);
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), 0);
    assert_int_equal(token_make(&b, sk, "+1312", "+1313", 1000, tok, err), 0);
    assert_int_equal(token_parse(tok, &t, err), 0);
    assert_int_equal(token_verify_holder(&t, "+1312", "+1313", 1000, err), -1);
}

static void test_token_tamper_and_garbage(void **state)
{
    struct cert c;
    struct cert_blob b;
    struct token t;
    char tok[TOKEN_MAX_LEN + 1], err[ERR_LEN];
    make_cert(&c);
    assert_int_equal(cert_issue(&c, issuer_sk, &b, err), 0);
    assert_int_equal(token_make(&b, holder_sk, "+1312", "+1313", 5000, tok, err), 0);
    size_t n = strlen(tok);
    for (size_t i = 0; i < n; i++) {
        char copy[TOKEN_MAX_LEN + 1];
        strcpy(copy, tok);
        copy[i] = copy[i] == 'A' ? 'B' : 'A';
        if (token_parse(copy, &t, err) == 0 &&
            cert_verify_sig(&t.blob, &t.cert, issuer_pk, err) == 0 &&
            token_verify_holder(&t, "+1312", "+1313", 5000, err) == 0) {
            /* the last character may only carry padding bits */
            if (i != n - 1)
                fail_msg("tampered token char %zu accepted", i);
        }
    }
    assert_int_equal(token_parse("", &t, err), -1);
    assert_int_equal(token_parse("not base64!", &t, err), -1);
    assert_int_equal(token_parse("AAAA", &t, err), -1);
    char big[TOKEN_MAX_LEN + 50];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(token_parse(big, &t, err), -1);
    assert_non_null(strstr(err, "length"));
    tok[n - 5] = '\0';
    assert_int_equal(token_parse(tok, &t, err), -1);   /* truncated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_decode_verify),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_wrong_issuer),
        cmocka_unit_test(test_input_validation),
        cmocka_unit_test(test_token_round_trip_and_binding),
        cmocka_unit_test(test_token_signed_by_someone_else),
        cmocka_unit_test(test_token_tamper_and_garbage),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
