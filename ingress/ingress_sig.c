/*
 * ingress_sig.c - Telnyx webhook signature check (see ingress_sig.h).
 * Used by the ingress request handlers.
 */
#include "ingress_sig.h"
#include "keyfile.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Longest accepted timestamp: 12 digits is far beyond any real clock and
 * keeps the value well inside int64_t. */
#define INGRESS_SIG_TS_MAX_DIGITS 12

const char *ingress_sig_fail_code(enum ingress_sig_fail why)
{
    switch (why) {
    case INGRESS_SIG_MISSING: return "missing_signature";
    case INGRESS_SIG_BAD_TIMESTAMP: return "bad_timestamp";
    case INGRESS_SIG_STALE: return "stale_timestamp";
    case INGRESS_SIG_BAD_SIGNATURE: return "bad_signature";
    }
    return "bad_signature";
}

int ingress_sig_key_parse(const char *b64, struct ingress_sig_key *key, char *err)
{
    if (!b64 || !*b64)
        return tg_err(err, "empty public key");
    return keyfile_parse_public(b64, key->pk, err);     /* base64 of exactly 32 bytes */
}

static int fail(enum ingress_sig_fail *why, enum ingress_sig_fail w, char *err, const char *msg)
{
    *why = w;
    return tg_err(err, "%s", msg);
}

/* The header value s without surrounding SP and HTAB (RFC 9110 OWS): its
 * first byte, and the length in *len.  NULL stays NULL. */
static const char *ows_trim(const char *s, size_t *len)
{
    *len = 0;
    if (!s)
        return NULL;
    s += strspn(s, " \t");
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *len = n;
    return s;
}

int ingress_sig_verify(const struct ingress_sig_key *key, const char *sig_b64, const char *ts,
                       const void *body, size_t body_len, int64_t now_s, int64_t tolerance_s,
                       enum ingress_sig_fail *why, char *err)
{
    uint8_t sig[INGRESS_SIG_BYTES + 8];
    size_t sig_len = 0, ts_len, b64_len;

    ts = ows_trim(ts, &ts_len);
    sig_b64 = ows_trim(sig_b64, &b64_len);
    if (ts_len == 0)
        return fail(why, INGRESS_SIG_MISSING, err, "missing telnyx-timestamp header");
    if (b64_len == 0)
        return fail(why, INGRESS_SIG_MISSING, err, "missing telnyx-signature-ed25519 header");

    if (ts_len > INGRESS_SIG_TS_MAX_DIGITS || strspn(ts, "0123456789") != ts_len)
        return fail(why, INGRESS_SIG_BAD_TIMESTAMP, err,
                    "telnyx-timestamp is not a decimal Unix time");
    int64_t t = (int64_t)strtoll(ts, NULL, 10);     /* stops at the digits' end */
    int64_t skew = now_s > t ? now_s - t : t - now_s;
    if (skew > tolerance_s) {
        *why = INGRESS_SIG_STALE;
        return tg_err(err, "telnyx-timestamp is %lld s %s the local clock (tolerance %lld s)",
                      (long long)skew, t < now_s ? "behind" : "ahead of",
                      (long long)tolerance_s);
    }

    if (tg_b64_decode(sig_b64, b64_len, sig, sizeof sig, &sig_len) != 0 ||
        sig_len != INGRESS_SIG_BYTES)
        return fail(why, INGRESS_SIG_BAD_SIGNATURE, err,
                    "telnyx-signature-ed25519 is not base64 of a 64-byte signature");

    /* Signed message: "<ts>|<body>". */
    size_t mlen = ts_len + 1 + body_len;
    unsigned char *msg = xmalloc(mlen);
    memcpy(msg, ts, ts_len);
    msg[ts_len] = '|';
    if (body_len > 0)
        memcpy(msg + ts_len + 1, body, body_len);
    int rc = crypto_sign_verify_detached(sig, msg, mlen, key->pk);
    free(msg);
    if (rc != 0)
        return fail(why, INGRESS_SIG_BAD_SIGNATURE, err,
                    "telnyx-signature-ed25519 does not verify for this body and timestamp");
    return 0;
}
