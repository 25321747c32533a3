/*
 * cert.h - namespace certificates and SIP tokens (protocol.md section 7):
 * the canonical byte encoding the issuer signs, issuer key ids, and the
 * X-Namespace-Token that a caller's SIP client sends.  Used by telctl
 * (issue, token) and the verifier (checks).
 */
#ifndef TG_CERT_H
#define TG_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "util.h"

#define CERT_VERSION 1
#define CERT_MAX_PHONES 8
#define CERT_PHONE_LEN 17          /* "+" + up to 15 digits + NUL */
#define CERT_NS_LEN 64             /* namespace text + NUL */
#define CERT_SERIAL_LEN 17         /* 16 hex digits + NUL */
#define CERT_KEYID_BYTES 8
#define CERT_PK_BYTES crypto_sign_PUBLICKEYBYTES
#define CERT_SK_BYTES crypto_sign_SECRETKEYBYTES
#define CERT_SIG_BYTES crypto_sign_BYTES
#define CERT_MAX_BYTES 512         /* signed certificate blob, upper bound */
#define TOKEN_MAX_LEN 700          /* token text, upper bound */
#define TOKEN_MAX_AGE_S 60         /* SPEC 4.1: at most 60 s old */
#define TOKEN_MAX_SKEW_S 5         /* tolerated clock skew into the future */

struct cert {
    char namespace_[CERT_NS_LEN];
    uint8_t holder_pk[CERT_PK_BYTES];
    char phones[CERT_MAX_PHONES][CERT_PHONE_LEN];
    size_t n_phones;
    char serial[CERT_SERIAL_LEN];
    uint64_t not_before, not_after;            /* Unix seconds, inclusive */
    uint8_t issuer_id[CERT_KEYID_BYTES];
};

/* A signed certificate: the canonical bytes followed by the issuer's
 * signature.  blob[0..tbs_len) is what was signed. */
struct cert_blob {
    uint8_t bytes[CERT_MAX_BYTES];
    size_t len;            /* tbs_len + CERT_SIG_BYTES */
    size_t tbs_len;
};

/* True for a valid namespace: dot-separated labels of [a-z0-9-] (not
 * starting or ending with '-'), at least two labels, at most 63 chars. */
bool cert_namespace_valid(const char *ns);
/* True for E.164: '+' then 2..15 digits, the first not 0. */
bool cert_e164_valid(const char *s);

/* Key id of an issuer public key: first 8 bytes of BLAKE2b-256(pk). */
void cert_key_id(const uint8_t pk[CERT_PK_BYTES], uint8_t out[CERT_KEYID_BYTES]);

/* Encode c canonically and sign it with the issuer's secret key into *out.
 * Validates every field first; -1 with err on invalid input. */
int cert_issue(const struct cert *c, const uint8_t issuer_sk[CERT_SK_BYTES],
               struct cert_blob *out, char *err) TG_MUST_CHECK;

/* Decode a blob into *c without checking the signature.  Strict: the bytes
 * must be exactly the canonical encoding of the decoded fields. */
int cert_decode(const uint8_t *blob, size_t len, struct cert *c, struct cert_blob *out,
                char *err) TG_MUST_CHECK;

/* Check the issuer signature of a decoded blob with issuer_pk, and that
 * issuer_pk's key id is the one the certificate names. */
int cert_verify_sig(const struct cert_blob *b, const struct cert *c,
                    const uint8_t issuer_pk[CERT_PK_BYTES], char *err) TG_MUST_CHECK;

/* BLAKE2b-256 of the whole blob (cache key, token binding). */
void cert_hash(const struct cert_blob *b, uint8_t out[32]);

/* Token = base64url (no padding) of msgpack [1, blob, iat, holder_sig],
 * holder_sig = Ed25519(holder_sk, "telgate-token-v1" 0x00 ‖ cert_hash ‖
 * from 0x00 ‖ to 0x00 ‖ iat as u64 big-endian).  out holds TOKEN_MAX_LEN+1. */
int token_make(const struct cert_blob *b, const uint8_t holder_sk[CERT_SK_BYTES],
               const char *from, const char *to, uint64_t iat,
               char out[TOKEN_MAX_LEN + 1], char *err) TG_MUST_CHECK;

struct token {
    struct cert_blob blob;
    struct cert cert;
    uint64_t iat;
    uint8_t holder_sig[CERT_SIG_BYTES];
};

/* Parse token text (no checks of signatures or time). */
int token_parse(const char *text, struct token *t, char *err) TG_MUST_CHECK;

/* Check the holder's signature over this call's from/to and the freshness
 * of iat against now.  The certificate itself (issuer, validity,
 * revocation, phones) is checked by the caller. */
int token_verify_holder(const struct token *t, const char *from, const char *to,
                        uint64_t now, char *err) TG_MUST_CHECK;

#endif
