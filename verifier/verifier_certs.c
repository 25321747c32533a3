/*
 * verifier_certs.c - the certificate screening policy (see verifier_certs.h).
 *
 *   token present ──► parse ─► trusted issuer ─► issuer signature (cached by
 *                     certificate hash) ─► validity window ─► not revoked ─►
 *                     holder signature over this call's from/to, fresh
 *                     ──► verified (token) │ any failure ─► token_invalid
 *   no token ──► certificates binding `from` (registry index, no scan)
 *                ─► a live one + attestation >= min_attestation ─► verified (registry)
 *                   a live one, attestation too weak ─► attestation_insufficient
 *                   only revoked ─► cert_revoked; only expired ─► cert_expired
 *                   none ─► no_namespace
 */
#include "verifier_certs.h"
#include "cert.h"
#include "keyfile.h"
#include "log.h"
#include "registry.h"
#include "spinedb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TRUST_MAX 32
#define SIGCACHE_SLOTS 4096          /* verified certificate hashes, direct-mapped */
#define RETRY_MS 1000                /* least interval between two registry error logs */

struct trusted_key {
    uint8_t pk[CERT_PK_BYTES];
    uint8_t id[CERT_KEYID_BYTES];
};

struct verifier_certs {
    struct verifier_policy policy;
    int min_attestation;
    char *data_dir;
    char *issuer_pub_path;
    struct trusted_key trust[TRUST_MAX];
    size_t n_trust;
    bool own_loaded;
    struct spinedb *db;              /* read-only; db->env NULL until the spine created it */
    uint64_t db_logged_ms;
    uint8_t sigcache[SIGCACHE_SLOTS][32];
};

static void trust_add(struct verifier_certs *vc, const uint8_t pk[CERT_PK_BYTES])
{
    for (size_t i = 0; i < vc->n_trust; i++)
        if (memcmp(vc->trust[i].pk, pk, CERT_PK_BYTES) == 0)
            return;
    if (vc->n_trust == TRUST_MAX) {
        log_warn("more than %d trusted issuers; ignoring the rest", TRUST_MAX);
        return;
    }
    memcpy(vc->trust[vc->n_trust].pk, pk, CERT_PK_BYTES);
    cert_key_id(pk, vc->trust[vc->n_trust].id);
    vc->n_trust++;
}

static const struct trusted_key *trust_find(const struct verifier_certs *vc, const uint8_t id[CERT_KEYID_BYTES])
{
    for (size_t i = 0; i < vc->n_trust; i++)
        if (memcmp(vc->trust[i].id, id, CERT_KEYID_BYTES) == 0)
            return &vc->trust[i];
    return NULL;
}

/* Load DATA_DIR/keys/issuer.pub once it exists (telctl issuer init); until
 * then one stat(2) per call, so the first certificate counts at once. */
static void own_issuer_refresh(struct verifier_certs *vc)
{
    if (vc->own_loaded)
        return;
    uint8_t pk[CERT_PK_BYTES];
    char err[ERR_LEN];
    struct stat st;
    if (stat(vc->issuer_pub_path, &st) != 0)
        return;
    if (keyfile_read_public(vc->issuer_pub_path, pk, err) != 0) {
        log_error("issuer key: %s", err);
        return;
    }
    trust_add(vc, pk);
    vc->own_loaded = true;
    log_info("trusting this installation's issuer key from %s", vc->issuer_pub_path);
}

/* The spine database, once the spine has created it (a missing database costs
 * one stat(2) per call; errors are logged at most once a second). */
static struct spinedb *db_get(struct verifier_certs *vc)
{
    if (vc->db && vc->db->env)
        return vc->db;
    char err[ERR_LEN];
    spinedb_close(&vc->db);
    if (spinedb_open(&vc->db, vc->data_dir, true, err) != 0) {
        uint64_t now = tg_mono_ms();
        if (now - vc->db_logged_ms >= RETRY_MS) {
            log_error("certificate registry: %s", err);
            vc->db_logged_ms = now;
        }
        return NULL;
    }
    return vc->db->env ? vc->db : NULL;
}

/* Issuer check with a cache of certificate hashes already verified, so a
 * repeat caller costs one holder signature check. */
static int issuer_verify(struct verifier_certs *vc, const struct cert *c, const struct cert_blob *b,
                         char *err)
{
    const struct trusted_key *k = trust_find(vc, c->issuer_id);
    if (!k)
        return tg_err(err, "certificate from an untrusted issuer");
    uint8_t h[32];
    cert_hash(b, h);
    uint8_t *slot = vc->sigcache[(h[0] | (h[1] << 8)) % SIGCACHE_SLOTS];
    if (memcmp(slot, h, sizeof h) == 0)
        return 0;
    if (cert_verify_sig(b, c, k->pk, err) != 0)
        return -1;
    memcpy(slot, h, sizeof h);
    return 0;
}

static void decide_token(struct verifier_certs *vc, const struct verifier_call *call, uint64_t now,
                         struct verifier_decision *out)
{
    struct token t;
    char err[ERR_LEN];
    snprintf(out->reason, sizeof out->reason, "token_invalid");
    if (token_parse(call->token, &t, err) != 0 || issuer_verify(vc, &t.cert, &t.blob, err) != 0)
        goto fail;
    snprintf(out->serial, sizeof out->serial, "%s", t.cert.serial);
    if (now < t.cert.not_before) {
        tg_err(err, "certificate not yet valid");
        goto fail;
    }
    if (now > t.cert.not_after) {
        tg_err(err, "certificate expired");
        goto fail;
    }
    struct spinedb *db = db_get(vc);
    if (db) {
        MDB_txn *txn;
        struct registry_entry e;
        if (spinedb_txn_begin_ro(db, &txn, err) != 0)
            goto fail;     /* cannot tell whether it is revoked: fail closed */
        int found = registry_get(db, txn, t.cert.serial, &e, err);
        mdb_txn_abort(txn);
        if (found < 0)
            goto fail;
        if (found == 0 && e.revoked && e.blob.len == t.blob.len &&
            memcmp(e.blob.bytes, t.blob.bytes, e.blob.len) == 0) {
            tg_err(err, "certificate revoked");
            goto fail;
        }
    }
    if (token_verify_holder(&t, call->from, call->to, now, err) != 0)
        goto fail;
    out->verified = true;
    snprintf(out->namespace_, sizeof out->namespace_, "%s", t.cert.namespace_);
    snprintf(out->method, sizeof out->method, "token");
    out->reason[0] = '\0';
    return;
fail:
    snprintf(out->detail, sizeof out->detail, "%.120s", err);
}

struct registry_scan {
    struct verifier_certs *vc;
    uint64_t now;
    bool have_live, have_revoked, have_expired;
    struct registry_entry live;
    char revoked_serial[CERT_SERIAL_LEN], expired_serial[CERT_SERIAL_LEN];
};

static int registry_candidate(void *arg, const struct registry_entry *e)
{
    struct registry_scan *s = arg;
    char err[ERR_LEN];
    if (issuer_verify(s->vc, &e->cert, &e->blob, err) != 0)
        return 0;                       /* worthless: untrusted or forged */
    if (e->revoked) {
        if (!s->have_revoked)
            snprintf(s->revoked_serial, sizeof s->revoked_serial, "%s", e->cert.serial);
        s->have_revoked = true;
    } else if (s->now > e->cert.not_after) {
        if (!s->have_expired)
            snprintf(s->expired_serial, sizeof s->expired_serial, "%s", e->cert.serial);
        s->have_expired = true;
    } else if (s->now >= e->cert.not_before && !s->have_live) {
        s->live = *e;
        s->have_live = true;
    }
    return 0;
}

/* Attestation that counts: none when absent or when Telnyx says the
 * signature did not validate. */
static int effective_attestation(const struct verifier_call *call)
{
    if (!call->has_attestation || call->attestation_validated == 0)
        return ATTEST_NONE;
    return call->attestation;
}

static void decide_registry(struct verifier_certs *vc, const struct verifier_call *call, uint64_t now,
                            struct verifier_decision *out)
{
    struct registry_scan s = {.vc = vc, .now = now};
    char err[ERR_LEN];
    struct spinedb *db = call->from ? db_get(vc) : NULL;
    snprintf(out->reason, sizeof out->reason, "no_namespace");
    if (!db)
        return;
    MDB_txn *txn;
    if (spinedb_txn_begin_ro(db, &txn, err) != 0 ||
        (registry_by_phone(db, txn, call->from, registry_candidate, &s, err) != 0 && (mdb_txn_abort(txn), 1))) {
        log_error("certificate registry: %s", err);
        snprintf(out->detail, sizeof out->detail, "registry unavailable");
        return;
    }
    mdb_txn_abort(txn);
    if (s.have_live) {
        int level = effective_attestation(call);
        snprintf(out->serial, sizeof out->serial, "%s", s.live.cert.serial);
        if (vc->min_attestation == ATTEST_NONE || level >= vc->min_attestation) {
            out->verified = true;
            snprintf(out->namespace_, sizeof out->namespace_, "%s", s.live.cert.namespace_);
            snprintf(out->method, sizeof out->method, "registry");
            out->reason[0] = '\0';
        } else {
            snprintf(out->reason, sizeof out->reason, "attestation_insufficient");
            snprintf(out->detail, sizeof out->detail, "attestation %s below the minimum %s",
                     config_attestation_name(level), config_attestation_name(vc->min_attestation));
        }
    } else if (s.have_revoked) {
        snprintf(out->reason, sizeof out->reason, "cert_revoked");
        snprintf(out->serial, sizeof out->serial, "%s", s.revoked_serial);
    } else if (s.have_expired) {
        snprintf(out->reason, sizeof out->reason, "cert_expired");
        snprintf(out->serial, sizeof out->serial, "%s", s.expired_serial);
    }
}

static void certs_decide(void *ctx, const struct verifier_call *call, struct verifier_decision *out)
{
    struct verifier_certs *vc = ctx;
    uint64_t now = call->now_us / 1000000u;
    own_issuer_refresh(vc);
    if (call->token)
        decide_token(vc, call, now, out);
    else
        decide_registry(vc, call, now, out);
}

int verifier_certs_open(struct verifier_certs **out, const struct tg_config *cfg, char *err)
{
    struct verifier_certs *vc = xcalloc(1, sizeof *vc);
    vc->policy.decide = certs_decide;
    vc->policy.ctx = vc;
    vc->min_attestation = cfg->min_attestation;
    vc->data_dir = xstrdup(cfg->data_dir);
    vc->issuer_pub_path = xasprintf("%s/keys/issuer.pub", cfg->data_dir);
    char *list = xstrdup(cfg->trusted_issuers ? cfg->trusted_issuers : "");
    char *save = NULL;
    for (char *tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        uint8_t pk[CERT_PK_BYTES];
        char kerr[ERR_LEN];
        if (keyfile_parse_public(tok, pk, kerr) != 0) {
            tg_err(err, "trusted_issuers: '%.60s' is not a base64 Ed25519 public key", tok);
            free(list);
            verifier_certs_close(&vc);
            return -1;
        }
        trust_add(vc, pk);
    }
    free(list);
    own_issuer_refresh(vc);
    *out = vc;
    return 0;
}

void verifier_certs_close(struct verifier_certs **vcp)
{
    struct verifier_certs *vc = *vcp;
    if (!vc)
        return;
    spinedb_close(&vc->db);
    free(vc->data_dir);
    free(vc->issuer_pub_path);
    free(vc);
    *vcp = NULL;
}

const struct verifier_policy *verifier_certs_policy(struct verifier_certs *vc)
{
    return &vc->policy;
}

void verifier_certs_unmap_pages(struct verifier_certs *vc)
{
    spinedb_unmap_pages(vc->db);
}

size_t verifier_certs_trusted(const struct verifier_certs *vc)
{
    return vc->n_trust;
}
