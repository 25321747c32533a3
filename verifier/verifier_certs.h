/*
 * verifier_certs.h - the screening policy with namespace certificates
 * (SPEC section 4): token first, then the registry by caller number with the
 * minimum STIR/SHAKEN attestation.  Reads the certificate registry from the
 * spine database read-only and trusts this installation's issuer
 * (DATA_DIR/keys/issuer.pub) plus the keys in trusted_issuers.  Used by the
 * verifier.
 */
#ifndef VERIFIER_CERTS_H
#define VERIFIER_CERTS_H

#include "config.h"
#include "util.h"
#include "verifier_flow.h"

struct verifier_certs;

/* Open the policy.  Fails (-1 with err, the caller exits 2) only on a bad
 * trusted_issuers value; a missing issuer key or spine database is picked up
 * later, when it appears.  The caller owns the result (verifier_certs_close). */
int verifier_certs_open(struct verifier_certs **out, const struct tg_config *cfg, char *err) TG_MUST_CHECK;
void verifier_certs_close(struct verifier_certs **vc);

/* The policy interface for verifier_flow_run; valid while vc lives. */
const struct verifier_policy *verifier_certs_policy(struct verifier_certs *vc);

/* Drop the registry database's mapped pages from this process's RSS
 * (spinedb_unmap_pages); called once a second. */
void verifier_certs_unmap_pages(struct verifier_certs *vc);

/* Number of trusted issuer keys currently loaded (for logs and tests). */
size_t verifier_certs_trusted(const struct verifier_certs *vc);

#endif
