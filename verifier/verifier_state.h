/*
 * verifier_state.h - the call's state carried across webhooks in Telnyx
 * `client_state`, so that any verifier can handle any webhook of any call
 * (verifiers keep no state).  Used by the verifier.
 *
 * Encoding (version 1): client_state = base64 of the ASCII text
 *
 *     tg1|<phase>|<decision>|<reason>|<mode>
 *
 *   phase    announce | speaking | verified | rejected
 *   decision v (verified) | r (rejected)
 *   reason   rejection reason ([a-z_]{1,31}), "-" when verified
 *   mode     a (announce) | b (busy) | - (verified)
 *
 * e.g. "tg1|announce|r|no_namespace|a" -> 40 base64 characters; always well
 * under 128.  Anything else (null, "", another application's state, bad
 * base64, another version) decodes as "no state".
 */
#ifndef VERIFIER_STATE_H
#define VERIFIER_STATE_H

#include <stdbool.h>

#include "util.h"

#define STATE_REASON_MAX 32
#define STATE_ENCODED_MAX 128

enum state_phase {
    STATE_NONE = 0,     /* no (readable) telgate state */
    STATE_ANNOUNCE,     /* rejected, answer sent, speech not yet started */
    STATE_SPEAKING,     /* rejected, speak sent */
    STATE_VERIFIED,     /* verified, answered or transferred */
    STATE_REJECTED,     /* rejected with busy */
};

struct verifier_state {
    enum state_phase phase;
    bool verified;
    char reason[STATE_REASON_MAX];  /* "" when verified */
    int mode;                       /* enum reject_mode; meaningless when verified */
};

/* Encode st (phase must not be STATE_NONE) as base64 text into
 * out[STATE_ENCODED_MAX].  Returns 0, or -1 with err when st is not
 * encodable (bad phase, reason with other characters or too long). */
int verifier_state_encode(const struct verifier_state *st, char out[STATE_ENCODED_MAX],
                          char *err) TG_MUST_CHECK;

/* Decode client_state (may be NULL).  Always succeeds: st->phase is
 * STATE_NONE when the value is absent or not ours. */
void verifier_state_decode(const char *client_state, struct verifier_state *st);

/* "announce", "speaking", ... ("none" for STATE_NONE). */
const char *verifier_state_phase_name(enum state_phase phase);

#endif
