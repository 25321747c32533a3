/*
 * verifier_flow.h - the call flow of SPEC section 4 as a pure function: one
 * parsed webhook in, the events and Telnyx commands it calls for out.  No
 * sockets, no clock (time is a parameter), no state outside client_state.
 * Used by the verifier; the screening decision sits behind a policy
 * interface so certificate checks plug in without touching the flow.
 *
 *   call.initiated (incoming) ── decide ──┬─ verified, forward_to ─► transfer            [verified]
 *                                          ├─ verified ─────────────► answer              [verified]
 *                                          ├─ rejected, busy ───────► reject USER_BUSY    [rejected]
 *                                          └─ rejected, announce ───► answer              [announce]
 *   call.answered     [announce] ─► speak announce_text                                  [speaking]
 *   call.speak.ended  [announce|speaking], status != call_hangup ─► hangup
 *   call.hangup       (any) ─► event only
 *   anything else, outgoing call.initiated ─► nothing
 *
 * [phase] is the state written into / read from client_state
 * (verifier_state.h).  Events: tel.call_inbound + tel.call_verified |
 * tel.call_rejected on call.initiated, tel.call_answered, tel.call_hangup.
 * Identical input gives byte-identical output, so re-deliveries and
 * re-processing are dropped by the spine.
 */
#ifndef VERIFIER_FLOW_H
#define VERIFIER_FLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "msg.h"
#include "numbers.h"
#include "util.h"
#include "verifier_webhook.h"

/* What the policy knows about an incoming call.  Pointers valid for the
 * duration of the decide call only. */
struct verifier_call {
    const char *from, *to;
    const char *token;          /* X-Namespace-Token value or NULL */
    int attestation;            /* enum attestation */
    bool has_attestation;
    int attestation_validated;  /* enum webhook_tristate */
    uint64_t now_us;            /* wall clock, µs since the epoch */
};

#define POLICY_NAMESPACE_MAX 256
#define POLICY_METHOD_MAX 16
#define POLICY_SERIAL_MAX 128
#define POLICY_REASON_MAX 32
#define POLICY_DETAIL_MAX 128

/* The verdict.  When verified, namespace_, method ("token" | "registry")
 * and serial are set; otherwise reason is one of SPEC section 4's rejection
 * reasons ([a-z_]). */
struct verifier_decision {
    bool verified;
    char namespace_[POLICY_NAMESPACE_MAX];
    char method[POLICY_METHOD_MAX];
    char serial[POLICY_SERIAL_MAX];
    char reason[POLICY_REASON_MAX];
    char detail[POLICY_DETAIL_MAX]; /* optional human reason, e.g. why a token failed */
};

/* A screening policy: decide fills *out (zeroed by the caller) and must be
 * a function of its arguments and ctx only. */
struct verifier_policy {
    void (*decide)(void *ctx, const struct verifier_call *call, struct verifier_decision *out);
    void *ctx;
};

/* Run policy p on call; out is zeroed first.  A policy that leaves out
 * neither verified nor with a valid reason yields reason "no_namespace". */
void verifier_policy_decide(const struct verifier_policy *p, const struct verifier_call *call,
                            struct verifier_decision *out);

/* The policy while no certificate store exists: every caller is rejected
 * with "no_namespace".  Static storage; never freed. */
const struct verifier_policy *verifier_policy_default(void);

/*
 * Compute the result of webhook wh.  Fills out->webhook_id (= wh->id),
 * out->events and out->commands (out->jseq is left 0 for the caller).
 * cfg supplies namespace, reject_mode and the announce_* keys; numbers is the
 * current numbers table (may be NULL = empty); policy may be NULL (= every
 * caller rejected with no_namespace); now_us is passed to the policy.  Returns 0, or -1 with err when the webhook lacks what its type
 * needs (e.g. call_control_id on a call.initiated); out is then empty.
 * Caller owns out (msg_result_free).
 */
int verifier_flow_run(const struct tg_config *cfg, const struct numbers *numbers,
                      const struct verifier_policy *policy, const struct verifier_webhook *wh,
                      uint64_t now_us, struct msg_result *out, char *err) TG_MUST_CHECK;

#endif
