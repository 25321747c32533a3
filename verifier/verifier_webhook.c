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

/* Owned copy of obj[key] when it is a non-empty string of sane length. */
static char *opt_str(const struct jscan *js, int obj, const char *key)
{
    int v = jscan_get(js, obj, key);
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
        out->call_control_id = opt_str(&js, payload, "call_control_id");
        out->call_leg_id = opt_str(&js, payload, "call_leg_id");
        out->call_session_id = opt_str(&js, payload, "call_session_id");
        out->client_state = opt_str(&js, payload, "client_state");
        out->direction = opt_str(&js, payload, "direction");
        out->from = opt_str(&js, payload, "from");
        out->to = opt_str(&js, payload, "to");
        out->state = opt_str(&js, payload, "state");
        out->hangup_cause = opt_str(&js, payload, "hangup_cause");
        out->hangup_source = opt_str(&js, payload, "hangup_source");
        out->sip_hangup_cause = opt_str(&js, payload, "sip_hangup_cause");
        out->status = opt_str(&js, payload, "status");
        out->namespace_token = find_token(&js, jscan_get(&js, payload, "custom_headers"));

        char *att = opt_str(&js, payload, "shaken_stir_attestation");
        int level;
        if (att && strcmp(att, "none") != 0 && config_attestation_parse(att, &level) == 0) {
            out->attestation = level;
            out->has_attestation = true;
        }
        free(att);
        int val = jscan_get(&js, payload, "shaken_stir_validated");
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
