/*
 * verifier_webhook.c - Telnyx webhook body parser (see verifier_webhook.h).
 * Used by the verifier.  Lenient on optional fields, strict on the envelope.
 */
#include "verifier_webhook.h"
#include "config.h"

#include "jscan.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WEBHOOK_MAX_FIELD 4096

/* Owned copy of token v when it is a non-empty string of sane length. */
static char *str_at(const struct jscan *js, int v)
{
    if (!jscan_is(js, v, JSCAN_STRING) || js->t[v].end == js->t[v].start ||
        js->t[v].end - js->t[v].start > WEBHOOK_MAX_FIELD)
        return NULL;
    char *s = jscan_strdup(js, v);      /* NULL on an embedded NUL */
    if (s && !*s) {
        free(s);
        return NULL;
    }
    return s;
}

/* Owned copy of obj[key] when it is a non-empty string of sane length. */
static char *opt_str(const struct jscan *js, int obj, const char *key)
{
    return str_at(js, jscan_get(js, obj, key));
}

/* The payload fields the flow reads, looked up in one pass. */
enum payload_field {
    PF_CALL_CONTROL_ID, PF_CALL_LEG_ID, PF_CALL_SESSION_ID, PF_CLIENT_STATE, PF_DIRECTION,
    PF_FROM, PF_TO, PF_STATE, PF_HANGUP_CAUSE, PF_HANGUP_SOURCE, PF_SIP_HANGUP_CAUSE,
    PF_STATUS, PF_CUSTOM_HEADERS, PF_ATTESTATION, PF_VALIDATED, PF_COUNT
};
static const char *const payload_keys[PF_COUNT] = {
    [PF_CALL_CONTROL_ID] = "call_control_id", [PF_CALL_LEG_ID] = "call_leg_id",
    [PF_CALL_SESSION_ID] = "call_session_id", [PF_CLIENT_STATE] = "client_state",
    [PF_DIRECTION] = "direction", [PF_FROM] = "from", [PF_TO] = "to", [PF_STATE] = "state",
    [PF_HANGUP_CAUSE] = "hangup_cause", [PF_HANGUP_SOURCE] = "hangup_source",
    [PF_SIP_HANGUP_CAUSE] = "sip_hangup_cause", [PF_STATUS] = "status",
    [PF_CUSTOM_HEADERS] = "custom_headers", [PF_ATTESTATION] = "shaken_stir_attestation",
    [PF_VALIDATED] = "shaken_stir_validated",
};

/*
 * The X-Namespace-Token header's value, or NULL when the call has no such
 * header.  A call that carries the header is decided by the token alone
 * (SPEC 4), so a value that is empty, too long or not a string comes back
 * as "" (which no token check accepts), never as "no token".
 */
static char *find_token(const struct jscan *js, int headers)
{
    if (!jscan_is(js, headers, JSCAN_ARRAY))
        return NULL;
    for (int h = jscan_first(js, headers); h >= 0; h = jscan_next(js, headers, h)) {
        char *name = opt_str(js, h, "name");
        bool match = name && strcasecmp(name, WEBHOOK_TOKEN_HEADER) == 0;
        free(name);
        if (match) {
            char *value = opt_str(js, h, "value");
            return value ? value : xstrdup("");
        }
    }
    return NULL;
}

/*
 * One pass over the body with the jscan scanner, then look-ups of the few
 * fields the flow needs: a webhook carries ~100 values and this is the
 * verifier's hot path (a full DOM parse cost more than a signature check).
 */
int verifier_webhook_parse(const void *body, size_t len, struct verifier_webhook *out,
                           char *err)
{
    struct jscan js = {0};
    char jerr[ERR_LEN];
    memset(out, 0, sizeof *out);
    out->attestation_validated = WEBHOOK_ABSENT;
    out->attestation = ATTEST_NONE;

    if (jscan_parse(&js, body, len, jerr) != 0) {
        jscan_free(&js);
        return tg_err(err, "webhook body is not JSON: %s", jerr);
    }
    int rc = -1;
    const int root = 0;
    int data = jscan_get(&js, root, "data");
    int payload = jscan_get(&js, data, "payload");
    if (!jscan_is(&js, root, JSCAN_OBJECT)) {
        tg_err(err, "webhook body is not a JSON object");
        goto done;
    }
    if (!jscan_is(&js, data, JSCAN_OBJECT)) {
        tg_err(err, "webhook has no 'data' object");
        goto done;
    }
    out->id = opt_str(&js, data, "id");
    out->event_type = opt_str(&js, data, "event_type");
    if (!out->id) {
        tg_err(err, "webhook 'data.id' missing or not a string");
        goto done;
    }
    if (!out->event_type) {
        tg_err(err, "webhook 'data.event_type' missing or not a string");
        goto done;
    }
    if (payload >= 0 && !jscan_is(&js, payload, JSCAN_OBJECT) && !jscan_is(&js, payload, JSCAN_NULL)) {
        tg_err(err, "webhook 'data.payload' is not an object");
        goto done;
    }
    out->occurred_at = opt_str(&js, data, "occurred_at");
    if (jscan_is(&js, payload, JSCAN_OBJECT)) {
        int f[PF_COUNT];
        jscan_get_keys(&js, payload, payload_keys, PF_COUNT, f);
        out->call_control_id = str_at(&js, f[PF_CALL_CONTROL_ID]);
        out->call_leg_id = str_at(&js, f[PF_CALL_LEG_ID]);
        out->call_session_id = str_at(&js, f[PF_CALL_SESSION_ID]);
        out->client_state = str_at(&js, f[PF_CLIENT_STATE]);
        out->direction = str_at(&js, f[PF_DIRECTION]);
        out->from = str_at(&js, f[PF_FROM]);
        out->to = str_at(&js, f[PF_TO]);
        out->state = str_at(&js, f[PF_STATE]);
        out->hangup_cause = str_at(&js, f[PF_HANGUP_CAUSE]);
        out->hangup_source = str_at(&js, f[PF_HANGUP_SOURCE]);
        out->sip_hangup_cause = str_at(&js, f[PF_SIP_HANGUP_CAUSE]);
        out->status = str_at(&js, f[PF_STATUS]);
        out->namespace_token = find_token(&js, f[PF_CUSTOM_HEADERS]);

        char *att = str_at(&js, f[PF_ATTESTATION]);
        int level;
        if (att && strcmp(att, "none") != 0 && config_attestation_parse(att, &level) == 0) {
            out->attestation = level;
            out->has_attestation = true;
        }
        free(att);
        int val = f[PF_VALIDATED];
        if (jscan_is(&js, val, JSCAN_TRUE))
            out->attestation_validated = WEBHOOK_TRUE;
        else if (jscan_is(&js, val, JSCAN_FALSE))
            out->attestation_validated = WEBHOOK_FALSE;
    }
    rc = 0;
done:
    jscan_free(&js);
    if (rc != 0)
        verifier_webhook_free(out);
    return rc;
}

uint64_t verifier_webhook_occurred_us(const struct verifier_webhook *wh)
{
    uint64_t us;
    if (!wh->occurred_at || tg_parse_rfc3339(wh->occurred_at, &us) != 0)
        return 0;
    return us;
}

void verifier_webhook_free(struct verifier_webhook *wh)
{
    char **fields[] = {
        &wh->id, &wh->event_type, &wh->occurred_at, &wh->call_control_id, &wh->call_leg_id,
        &wh->call_session_id, &wh->client_state, &wh->direction, &wh->from, &wh->to,
        &wh->state, &wh->namespace_token, &wh->hangup_cause, &wh->hangup_source,
        &wh->sip_hangup_cause, &wh->status,
    };
    for (size_t i = 0; i < ARRAY_LEN(fields); i++)
        free(*fields[i]);
    memset(wh, 0, sizeof *wh);
    wh->attestation_validated = WEBHOOK_ABSENT;
}
