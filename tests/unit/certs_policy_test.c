/*
 * certs_policy_test.c - unit tests of the verifier's certificate policy
 * (verifier/verifier_certs.c) against a real spine database: every verified
 * and rejected path of SPEC section 4 for tokens and the registry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>


#include "cert.h"
#include "config.h"
#include "event.h"
#include "keyfile.h"
#include "log.h"
#include "mp.h"
#include "registry.h"
#include "../../spine/spine_store.h"
#include "../../verifier/verifier_certs.h"
#include "../../verifier/verifier_webhook.h"
#include "tmpdir.h"

#define NOW 1800000000u
#define CALLER "+13125550100"
#define GATE "+13125550199"

struct fixture {
    struct tmp *tmp;            /* tmp->dir: DATA_DIR */
    struct tg_config cfg;
    uint8_t ipk[CERT_PK_BYTES], isk[CERT_SK_BYTES];     /* own issuer */
    uint8_t opk[CERT_PK_BYTES], osk[CERT_SK_BYTES];     /* another operator's issuer */
    uint8_t hpk[CERT_PK_BYTES], hsk[CERT_SK_BYTES];     /* the holder */
    int serial_n;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    char err[ERR_LEN];
    if (sodium_init() < 0)
        return -1;
    void *t;
    if (tmpdir_setup(&t, "certs_policy") != 0)
        return -1;
    f->tmp = t;
    crypto_sign_keypair(f->ipk, f->isk);
    crypto_sign_keypair(f->opk, f->osk);
    crypto_sign_keypair(f->hpk, f->hsk);
    char *keys = xasprintf("%s/keys", f->tmp->dir), *pub = xasprintf("%s/keys/issuer.pub", f->tmp->dir);
    if (tg_mkdir_p(keys, err) != 0 || keyfile_write_public(pub, f->ipk, err) != 0)
        return -1;
    free(keys);
    free(pub);
    f->cfg.data_dir = f->tmp->dir;
    f->cfg.min_attestation = ATTEST_A;
    f->cfg.trusted_issuers = "";
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    void *t = f->tmp;
    free(f);
    return tmpdir_teardown(&t);
}

/* Issue a certificate signed by sk (naming issuer pk) for the holder. */
static void make_cert(struct fixture *f, const uint8_t *pk, const uint8_t *sk, uint64_t nb, uint64_t na,
                      const char *phone, struct cert *c, struct cert_blob *b)
{
    char err[ERR_LEN];
    memset(c, 0, sizeof *c);
    strcpy(c->namespace_, "alice.x");
    memcpy(c->holder_pk, f->hpk, CERT_PK_BYTES);
    if (phone) {
        strcpy(c->phones[0], phone);
        c->n_phones = 1;
    }
    snprintf(c->serial, sizeof c->serial, "%016x", ++f->serial_n);
    c->not_before = nb;
    c->not_after = na;
    cert_key_id(pk, c->issuer_id);
    assert_int_equal(cert_issue(c, sk, b, err), 0);
}

/* Record an ns.* event through the spine store (the only writer). */
static void spine_append(struct fixture *f, const char *type, const char *serial, const struct cert_blob *b)
{
    msgpack_sbuffer data, msg;
    msgpack_packer pk;
    char id[EVENT_ID_LEN], err[ERR_LEN];
    msgpack_sbuffer_init(&data);
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, b ? 2 : 1);
    mp_pack_kv_str(&pk, "serial", serial);
    if (b) {
        char *text = tg_b64_encode(b->bytes, b->len);
        mp_pack_kv_str(&pk, "cert", text);
        free(text);
    }
    event_id(serial, type, id);
    struct tg_event ev = {.type = (char *)type, .actor = "tel.x", .id = id,
                          .data = (uint8_t *)data.data, .data_len = data.size};
    struct msg_append m = {.events = &ev, .n_events = 1};
    msgpack_sbuffer_init(&msg);
    msg_append_encode(&msg, &m);

    struct spine_store *store;
    struct spine_input in;
    struct spine_output out = {0};
    assert_int_equal(spine_store_open(&store, f->tmp->dir, "tel.x", 1000, err), 0);
    assert_int_equal(spine_input_decode(msg.data, msg.size, &in, err), 0);
    assert_int_equal(spine_store_apply(store, &in, 1, &out, err), 0);
    assert_int_equal(out.n_events, 1);
    spine_input_free(&in);
    spine_output_free(&out);
    spine_store_close(&store);
    msgpack_sbuffer_destroy(&msg);
    msgpack_sbuffer_destroy(&data);
}

static void issue(struct fixture *f, const struct cert *c, const struct cert_blob *b)
{
    spine_append(f, REGISTRY_EV_ISSUED, c->serial, b);
}

/* Run the policy once with a freshly opened verifier (no LMDB env is ever
 * open twice in this process). */
static void decide(struct fixture *f, const char *from, const char *token, int attestation,
                   int validated, uint64_t now, struct verifier_decision *d)
{
    struct verifier_certs *vc;
    char err[ERR_LEN];
    assert_int_equal(verifier_certs_open(&vc, &f->cfg, err), 0);
    struct verifier_call call = {.from = from, .to = GATE, .token = token,
                                 .attestation = attestation < 0 ? ATTEST_NONE : attestation,
                                 .has_attestation = attestation >= 0,
                                 .attestation_validated = validated, .now_us = now * 1000000u};
    verifier_policy_decide(verifier_certs_policy(vc), &call, d);
    verifier_certs_close(&vc);
}

static void expect_reject(struct verifier_decision *d, const char *reason)
{
    assert_false(d->verified);
    assert_string_equal(d->reason, reason);
}

static void test_registry_attestation(void **state)
{
    struct fixture *f = *state;
    struct cert c;
    struct cert_blob b;
    struct verifier_decision d;
    make_cert(f, f->ipk, f->isk, NOW - 100, NOW + 86400, CALLER, &c, &b);
    issue(f, &c, &b);

    decide(f, CALLER, NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    assert_true(d.verified);
    assert_string_equal(d.method, "registry");
    assert_string_equal(d.namespace_, "alice.x");
    assert_string_equal(d.serial, c.serial);

    decide(f, CALLER, NULL, ATTEST_A, WEBHOOK_ABSENT, NOW, &d);   /* validated absent: level counts */
    assert_true(d.verified);
    decide(f, CALLER, NULL, ATTEST_B, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "attestation_insufficient");
    decide(f, CALLER, NULL, -1, WEBHOOK_ABSENT, NOW, &d);         /* fields absent: none */
    expect_reject(&d, "attestation_insufficient");
    decide(f, CALLER, NULL, ATTEST_A, WEBHOOK_FALSE, NOW, &d);    /* did not validate */
    expect_reject(&d, "attestation_insufficient");
    decide(f, "+13125550101", NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "no_namespace");

    f->cfg.min_attestation = ATTEST_C;
    decide(f, CALLER, NULL, ATTEST_B, WEBHOOK_TRUE, NOW, &d);
    assert_true(d.verified);
    f->cfg.min_attestation = ATTEST_NONE;
    decide(f, CALLER, NULL, -1, WEBHOOK_ABSENT, NOW, &d);
    assert_true(d.verified);
}

static void test_registry_expired_revoked_untrusted(void **state)
{
    struct fixture *f = *state;
    struct cert c1, c2, c3, c4;
    struct cert_blob b1, b2, b3, b4;
    struct verifier_decision d;
    make_cert(f, f->ipk, f->isk, NOW - 200, NOW - 100, "+13125550111", &c1, &b1);   /* expired */
    make_cert(f, f->ipk, f->isk, NOW + 100, NOW + 200, "+13125550112", &c2, &b2);   /* not yet valid */
    make_cert(f, f->ipk, f->isk, NOW - 100, NOW + 100, "+13125550113", &c3, &b3);   /* to revoke */
    make_cert(f, f->opk, f->osk, NOW - 100, NOW + 100, "+13125550114", &c4, &b4);   /* foreign issuer */
    issue(f, &c1, &b1);
    issue(f, &c2, &b2);
    issue(f, &c3, &b3);
    issue(f, &c4, &b4);
    spine_append(f, REGISTRY_EV_REVOKED, c3.serial, NULL);

    decide(f, "+13125550111", NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "cert_expired");
    assert_string_equal(d.serial, c1.serial);
    decide(f, "+13125550112", NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "no_namespace");
    decide(f, "+13125550113", NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "cert_revoked");
    decide(f, "+13125550114", NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "no_namespace");      /* untrusted issuer: worthless */

    /* trusting the other operator's issuer by configuration makes it count */
    char *b64 = tg_b64_encode(f->opk, CERT_PK_BYTES);
    f->cfg.trusted_issuers = b64;
    decide(f, "+13125550114", NULL, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    assert_true(d.verified);
    f->cfg.trusted_issuers = "";
    free(b64);
}

static void token_for(struct fixture *f, const struct cert_blob *b, const uint8_t *hsk, const char *from,
                      const char *to, uint64_t iat, char tok[TOKEN_MAX_LEN + 1])
{
    char err[ERR_LEN];
    assert_int_equal(token_make(b, hsk, from, to, iat, tok, err), 0);
}

static void test_token_paths(void **state)
{
    struct fixture *f = *state;
    struct cert c, ce, cf;
    struct cert_blob b, be, bf;
    struct verifier_decision d;
    char tok[TOKEN_MAX_LEN + 1];
    const char *spoofed = "+19995550000";      /* caller-ID not in the certificate */
    make_cert(f, f->ipk, f->isk, NOW - 100, NOW + 86400, CALLER, &c, &b);

    /* valid: verified whatever the caller-ID and attestation; needs no registry entry */
    token_for(f, &b, f->hsk, spoofed, GATE, NOW - 5, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    assert_true(d.verified);
    assert_string_equal(d.method, "token");
    assert_string_equal(d.namespace_, "alice.x");
    assert_string_equal(d.serial, c.serial);
    decide(f, spoofed, tok, ATTEST_C, WEBHOOK_FALSE, NOW, &d);
    assert_true(d.verified);

    /* bound to from and to */
    decide(f, CALLER, tok, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "token_invalid");
    token_for(f, &b, f->hsk, spoofed, "+13125550198", NOW, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");

    /* a header with no usable value is a token that fails, not "no token" */
    decide(f, spoofed, "", -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");

    /* stale (> 60 s) */
    token_for(f, &b, f->hsk, spoofed, GATE, NOW - 61, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");
    assert_non_null(strstr(d.detail, "stale"));

    /* signed by someone who is not the holder */
    token_for(f, &b, f->osk, spoofed, GATE, NOW, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");

    /* expired / not yet valid certificate */
    make_cert(f, f->ipk, f->isk, NOW - 200, NOW - 100, CALLER, &ce, &be);
    token_for(f, &be, f->hsk, spoofed, GATE, NOW, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");
    assert_non_null(strstr(d.detail, "expired"));
    make_cert(f, f->ipk, f->isk, NOW + 100, NOW + 200, CALLER, &ce, &be);
    token_for(f, &be, f->hsk, spoofed, GATE, NOW, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");

    /* untrusted issuer */
    make_cert(f, f->opk, f->osk, NOW - 100, NOW + 100, CALLER, &cf, &bf);
    token_for(f, &bf, f->hsk, spoofed, GATE, NOW, tok);
    decide(f, spoofed, tok, -1, WEBHOOK_ABSENT, NOW, &d);
    expect_reject(&d, "token_invalid");
    assert_non_null(strstr(d.detail, "untrusted"));

    /* revoked: the token is refused, and the registry is not consulted even
     * though a live certificate binds the caller-ID with attestation A */
    struct cert live;
    struct cert_blob lb;
    make_cert(f, f->ipk, f->isk, NOW - 100, NOW + 100, CALLER, &live, &lb);
    issue(f, &live, &lb);
    issue(f, &c, &b);
    spine_append(f, REGISTRY_EV_REVOKED, c.serial, NULL);
    token_for(f, &b, f->hsk, CALLER, GATE, NOW, tok);
    decide(f, CALLER, tok, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "token_invalid");
    assert_non_null(strstr(d.detail, "revoked"));

    /* garbage, oversized, malformed base64 */
    decide(f, CALLER, "garbage!", ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "token_invalid");
    char big[TOKEN_MAX_LEN + 100];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    decide(f, CALLER, big, ATTEST_A, WEBHOOK_TRUE, NOW, &d);
    expect_reject(&d, "token_invalid");
}

static void test_bad_trusted_issuers(void **state)
{
    struct fixture *f = *state;
    struct verifier_certs *vc;
    char err[ERR_LEN];
    f->cfg.trusted_issuers = "notakey";
    assert_int_equal(verifier_certs_open(&vc, &f->cfg, err), -1);
    assert_non_null(strstr(err, "trusted_issuers"));
    f->cfg.trusted_issuers = "";
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registry_attestation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_expired_revoked_untrusted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_trusted_issuers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
