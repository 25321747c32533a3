/*
 * cert.c - namespace certificates and SIP tokens (see cert.h and
 * protocol.md section 7).  Canonical encoding: a msgpack array
 * [1, namespace, holder_pk, [phones], serial, not_before, not_after, issuer_id]
 * encoded with the smallest msgpack forms; decoding re-encodes and compares,
 * so exactly one byte string stands for a certificate.
 */
#include "cert.h"
#include "mp.h"

#include <msgpack.h>
#include <string.h>

static const char cert_domain[] = "telgate-cert-v1";
static const char token_domain[] = "telgate-token-v1";

bool cert_namespace_valid(const char *ns)
{
    size_t n = strlen(ns), labels = 0, label_len = 0;
    if (n == 0 || n >= CERT_NS_LEN)
        return false;
    for (size_t i = 0; i <= n; i++) {
        char c = ns[i];
        if (c == '.' || c == '\0') {
            if (label_len == 0 || ns[i - 1] == '-')
                return false;
            labels++;
            label_len = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
        if (label_len == 0 && c == '-')
            return false;
        label_len++;
    }
    return labels >= 2;
}

bool cert_e164_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 16 || s[0] != '+' || s[1] == '0')
        return false;
    for (size_t i = 1; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

void cert_key_id(const uint8_t pk[CERT_PK_BYTES], uint8_t out[CERT_KEYID_BYTES])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, pk, CERT_PK_BYTES, NULL, 0);
    memcpy(out, h, CERT_KEYID_BYTES);
}

static int cert_validate(const struct cert *c, char *err)
{
    if (!cert_namespace_valid(c->namespace_))
        return tg_err(err, "invalid namespace '%s' (lower-case labels a-z 0-9 -, at least two, e.g. alice.x)", c->namespace_);
    if (c->n_phones > CERT_MAX_PHONES)
        return tg_err(err, "at most %d phone numbers", CERT_MAX_PHONES);
    for (size_t i = 0; i < c->n_phones; i++)
        if (!cert_e164_valid(c->phones[i]))
            return tg_err(err, "invalid E.164 number '%s'", c->phones[i]);
    if (strlen(c->serial) != CERT_SERIAL_LEN - 1)
        return tg_err(err, "invalid serial");
    for (size_t i = 0; i < CERT_SERIAL_LEN - 1; i++)
        if (!((c->serial[i] >= '0' && c->serial[i] <= '9') || (c->serial[i] >= 'a' && c->serial[i] <= 'f')))
            return tg_err(err, "invalid serial");
    if (c->not_after <= c->not_before)
        return tg_err(err, "validity window is empty");
    return 0;
}

/* Canonical encoding of the to-be-signed part into sb. */
static void cert_pack(msgpack_sbuffer *sb, const struct cert *c)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_uint64(&pk, CERT_VERSION);
    mp_pack_cstr(&pk, c->namespace_);
    msgpack_pack_bin(&pk, CERT_PK_BYTES);
    msgpack_pack_bin_body(&pk, c->holder_pk, CERT_PK_BYTES);
    msgpack_pack_array(&pk, c->n_phones);
    for (size_t i = 0; i < c->n_phones; i++)
        mp_pack_cstr(&pk, c->phones[i]);
    mp_pack_cstr(&pk, c->serial);
    msgpack_pack_uint64(&pk, c->not_before);
    msgpack_pack_uint64(&pk, c->not_after);
    msgpack_pack_bin(&pk, CERT_KEYID_BYTES);
    msgpack_pack_bin_body(&pk, c->issuer_id, CERT_KEYID_BYTES);
}

static void cert_sig_message(const uint8_t *tbs, size_t len, crypto_generichash_state *st)
{
    crypto_generichash_init(st, NULL, 0, 64);
    crypto_generichash_update(st, (const uint8_t *)cert_domain, sizeof cert_domain);
    crypto_generichash_update(st, tbs, len);
}

/* The issuer signs BLAKE2b-512(domain ‖ tbs): fixed-size input, and the
 * domain string keeps certificate signatures apart from token signatures. */
static void cert_digest(const uint8_t *tbs, size_t len, uint8_t out[64])
{
    crypto_generichash_state st;
    cert_sig_message(tbs, len, &st);
    crypto_generichash_final(&st, out, 64);
}

int cert_issue(const struct cert *c, const uint8_t issuer_sk[CERT_SK_BYTES],
               struct cert_blob *out, char *err)
{
    if (cert_validate(c, err) != 0)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    cert_pack(&sb, c);
    if (sb.size + CERT_SIG_BYTES > CERT_MAX_BYTES) {
        msgpack_sbuffer_destroy(&sb);
        return tg_err(err, "certificate too large");
    }
    uint8_t digest[64];
    memcpy(out->bytes, sb.data, sb.size);
    out->tbs_len = sb.size;
    out->len = sb.size + CERT_SIG_BYTES;
    msgpack_sbuffer_destroy(&sb);
    cert_digest(out->bytes, out->tbs_len, digest);
    crypto_sign_detached(out->bytes + out->tbs_len, NULL, digest, sizeof digest, issuer_sk);
    return 0;
}

static int copy_str(const msgpack_object *o, char *dst, size_t cap)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap ||
        memchr(o->via.str.ptr, '\0', o->via.str.size))
        return -1;
    memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = '\0';
    return 0;
}

static int copy_bin(const msgpack_object *o, uint8_t *dst, size_t want)
{
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != want)
        return -1;
    memcpy(dst, o->via.bin.ptr, want);
    return 0;
}

int cert_decode(const uint8_t *blob, size_t len, struct cert *c, struct cert_blob *out, char *err)
{
    memset(c, 0, sizeof *c);
    if (len <= CERT_SIG_BYTES || len > CERT_MAX_BYTES)
        return tg_err(err, "certificate has a bad length (%zu bytes)", len);
    size_t tbs_len = len - CERT_SIG_BYTES;
    msgpack_unpacked up;
    if (mp_unpack_exact(blob, tbs_len, &up, err) != 0)
        return tg_err(err, "certificate is not well-formed");
    const msgpack_object *a = &up.data;
    int rc = -1;
    if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != 8)
        goto bad;
    const msgpack_object *f = a->via.array.ptr;
    if (f[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[0].via.u64 != CERT_VERSION)
        goto bad;
    if (copy_str(&f[1], c->namespace_, sizeof c->namespace_) || copy_bin(&f[2], c->holder_pk, CERT_PK_BYTES))
        goto bad;
    if (f[3].type != MSGPACK_OBJECT_ARRAY || f[3].via.array.size > CERT_MAX_PHONES)
        goto bad;
    c->n_phones = f[3].via.array.size;
    for (size_t i = 0; i < c->n_phones; i++)
        if (copy_str(&f[3].via.array.ptr[i], c->phones[i], CERT_PHONE_LEN))
            goto bad;
    if (copy_str(&f[4], c->serial, sizeof c->serial) ||
        f[5].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[6].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        copy_bin(&f[7], c->issuer_id, CERT_KEYID_BYTES))
        goto bad;
    c->not_before = f[5].via.u64;
    c->not_after = f[6].via.u64;
    if (cert_validate(c, err) != 0)
        goto out;
    /* exactly one encoding: re-encode and compare */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    cert_pack(&sb, c);
    bool same = sb.size == tbs_len && memcmp(sb.data, blob, tbs_len) == 0;
    msgpack_sbuffer_destroy(&sb);
    if (!same)
        goto bad;
    memcpy(out->bytes, blob, len);
    out->len = len;
    out->tbs_len = tbs_len;
    rc = 0;
    goto out;
bad:
    tg_err(err, "certificate is not in canonical form");
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

int cert_verify_sig(const struct cert_blob *b, const struct cert *c,
                    const uint8_t issuer_pk[CERT_PK_BYTES], char *err)
{
    uint8_t id[CERT_KEYID_BYTES], digest[64];
    cert_key_id(issuer_pk, id);
    if (sodium_memcmp(id, c->issuer_id, CERT_KEYID_BYTES) != 0)
        return tg_err(err, "certificate names another issuer");
    cert_digest(b->bytes, b->tbs_len, digest);
    if (crypto_sign_verify_detached(b->bytes + b->tbs_len, digest, sizeof digest, issuer_pk) != 0)
        return tg_err(err, "issuer signature does not verify");
    return 0;
}

void cert_hash(const struct cert_blob *b, uint8_t out[32])
{
    crypto_generichash(out, 32, b->bytes, b->len, NULL, 0);
}

static void token_digest(const struct cert_blob *b, const char *from, const char *to,
                         uint64_t iat, uint8_t out[64])
{
    uint8_t ch[32], be[8];
    crypto_generichash_state st;
    cert_hash(b, ch);
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(iat >> (56 - 8 * i));
    crypto_generichash_init(&st, NULL, 0, 64);
    crypto_generichash_update(&st, (const uint8_t *)token_domain, sizeof token_domain);
    crypto_generichash_update(&st, ch, sizeof ch);
    crypto_generichash_update(&st, (const uint8_t *)from, strlen(from) + 1);
    crypto_generichash_update(&st, (const uint8_t *)to, strlen(to) + 1);
    crypto_generichash_update(&st, be, sizeof be);
    crypto_generichash_final(&st, out, 64);
}

int token_make(const struct cert_blob *b, const uint8_t holder_sk[CERT_SK_BYTES],
               const char *from, const char *to, uint64_t iat,
               char out[TOKEN_MAX_LEN + 1], char *err)
{
    uint8_t digest[64], sig[CERT_SIG_BYTES];
    token_digest(b, from, to, iat, digest);
    crypto_sign_detached(sig, NULL, digest, sizeof digest, holder_sk);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_bin(&pk, b->len);
    msgpack_pack_bin_body(&pk, b->bytes, b->len);
    msgpack_pack_uint64(&pk, iat);
    msgpack_pack_bin(&pk, sizeof sig);
    msgpack_pack_bin_body(&pk, sig, sizeof sig);
    size_t need = sodium_base64_encoded_len(sb.size, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int rc = 0;
    if (need > TOKEN_MAX_LEN + 1)
        rc = tg_err(err, "token would be %zu bytes, more than %d", need - 1, TOKEN_MAX_LEN);
    else
        sodium_bin2base64(out, TOKEN_MAX_LEN + 1, (const uint8_t *)sb.data, sb.size,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int token_parse(const char *text, struct token *t, char *err)
{
    uint8_t raw[TOKEN_MAX_LEN];
    size_t rawlen = 0, n = strlen(text);
    const char *end = NULL;
    memset(t, 0, sizeof *t);
    if (n == 0 || n > TOKEN_MAX_LEN)
        return tg_err(err, "token length %zu out of range", n);
    if (sodium_base642bin(raw, sizeof raw, text, n, NULL, &rawlen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || end != text + n)
        return tg_err(err, "token is not base64url");
    msgpack_unpacked up;
    if (mp_unpack_exact(raw, rawlen, &up, err) != 0)
        return tg_err(err, "token is not well-formed");
    const msgpack_object *a = &up.data;
    int rc = -1;
    if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != 4) {
        tg_err(err, "token is not well-formed");
        goto out;
    }
    const msgpack_object *f = a->via.array.ptr;
    if (f[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[0].via.u64 != 1 ||
        f[1].type != MSGPACK_OBJECT_BIN || f[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        copy_bin(&f[3], t->holder_sig, CERT_SIG_BYTES)) {
        tg_err(err, "token is not well-formed");
        goto out;
    }
    if (cert_decode((const uint8_t *)f[1].via.bin.ptr, f[1].via.bin.size, &t->cert, &t->blob, err) != 0)
        goto out;
    t->iat = f[2].via.u64;
    rc = 0;
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

int token_verify_holder(const struct token *t, const char *from, const char *to,
                        uint64_t now, char *err)
{
    if (t->iat > now + TOKEN_MAX_SKEW_S)
        return tg_err(err, "token issued in the future");
    if (now - (t->iat > now ? now : t->iat) > TOKEN_MAX_AGE_S)
        return tg_err(err, "token is stale (older than %d s)", TOKEN_MAX_AGE_S);
    uint8_t digest[64];
    token_digest(&t->blob, from ? from : "", to ? to : "", t->iat, digest);
    if (crypto_sign_verify_detached(t->holder_sig, digest, sizeof digest, t->cert.holder_pk) != 0)
        return tg_err(err, "holder signature does not verify for this call's from/to");
    return 0;
}
