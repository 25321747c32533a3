/*
 * verifier_webhook.h - parse a Telnyx Call Control webhook body (API v2:
 * {"data":{"id","event_type","occurred_at","payload":{...}},"meta":{...}})
 * into owned fields.  Used by the verifier.
 */
#ifndef VERIFIER_WEBHOOK_H
#define VERIFIER_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* Tri-state for optional booleans (e.g. shaken_stir_validated). */
enum webhook_tristate { WEBHOOK_ABSENT = -1, WEBHOOK_FALSE = 0, WEBHOOK_TRUE = 1 };

#define WEBHOOK_TOKEN_HEADER "X-Namespace-Token"

/*
 * Every string is an owned NUL-terminated copy, or NULL when the field is
 * absent, null, or of the wrong JSON type.  Only data.id, data.event_type
 * are required.
 */
struct verifier_webhook {
    char *id;               /* data.id */
    char *event_type;       /* data.event_type */
    char *occurred_at;      /* data.occurred_at */

    char *call_control_id, *call_leg_id, *call_session_id;
    char *client_state;     /* "" is reported as NULL */
    char *direction, *from, *to, *state;
    int attestation;        /* enum attestation; ATTEST_NONE when absent/unknown */
    bool has_attestation;   /* a valid "A", "B" or "C" was present */
    int attestation_validated; /* enum webhook_tristate */
    char *namespace_token;  /* value of custom header X-Namespace-Token; "" when the
                               header has no usable value, NULL without it */
    char *hangup_cause, *hangup_source, *sip_hangup_cause;
    char *status;           /* call.speak.ended */
};

/*
 * Parse body[0..len).  Returns 0 with *out filled (free with
 * verifier_webhook_free), or -1 with err when the body is not a JSON object,
 * has no data object, no string data.id / data.event_type, or a payload
 * that is not an object; out is then empty.  Unknown keys are ignored.
 */
int verifier_webhook_parse(const void *body, size_t len, struct verifier_webhook *out,
                           char *err) TG_MUST_CHECK;

/* data.occurred_at in µs since the epoch, 0 when absent or unparsable: with
 * data.id, the spine's de-duplication key (protocol.md section 4). */
uint64_t verifier_webhook_occurred_us(const struct verifier_webhook *wh);

/* Free every field and zero the struct (safe on a zeroed struct). */
void verifier_webhook_free(struct verifier_webhook *wh);

#endif
