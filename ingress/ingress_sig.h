/*
 * ingress_sig.h - Telnyx webhook signature check (Ed25519 over
 * "<telnyx-timestamp>|<raw body>", telnyx.md section 2).  Used by the
 * ingress request handlers; the clock is a parameter so tests can fake it.
 */
#ifndef INGRESS_SIG_H
#define INGRESS_SIG_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define INGRESS_SIG_PK_BYTES 32
#define INGRESS_SIG_BYTES 64

/* A parsed Telnyx public key (public data; no secret to wipe). */
struct ingress_sig_key {
    uint8_t pk[INGRESS_SIG_PK_BYTES];
};

/* Why a webhook failed the check (for the error code of the 401 answer). */
enum ingress_sig_fail {
    INGRESS_SIG_MISSING,         /* a header is absent or empty */
    INGRESS_SIG_BAD_TIMESTAMP,   /* not all digits / too long */
    INGRESS_SIG_STALE,           /* |now - ts| > tolerance */
    INGRESS_SIG_BAD_SIGNATURE,   /* not base64 of 64 bytes, or does not verify */
};

/* Short code for a failure: "missing_signature", "bad_timestamp",
 * "stale_timestamp", "bad_signature". */
const char *ingress_sig_fail_code(enum ingress_sig_fail why);

/*
 * Parse a standard base64 Ed25519 public key that must decode to exactly 32
 * bytes.  0 ok, -1 with err (the caller names the config key).
 */
int ingress_sig_key_parse(const char *b64, struct ingress_sig_key *key, char *err) TG_MUST_CHECK;

/*
 * Check one webhook.  sig_b64 and ts are the raw header values (NULL when
 * absent); spaces and tabs around them (RFC 9110 OWS) are ignored, and a
 * value of nothing else counts as absent.  body/body_len the raw body
 * exactly as received.  The timestamp is checked first (all digits,
 * |now_s - ts| <= tolerance_s), then the signature (base64 of exactly 64
 * bytes, crypto_sign_verify_detached over "<ts>|<body>", with ts trimmed).
 * Returns 0 when authentic, or -1 with err and *why set.  Nothing is kept;
 * the caller owns every argument.
 */
int ingress_sig_verify(const struct ingress_sig_key *key, const char *sig_b64, const char *ts,
                       const void *body, size_t body_len, int64_t now_s, int64_t tolerance_s,
                       enum ingress_sig_fail *why, char *err) TG_MUST_CHECK;

#endif
