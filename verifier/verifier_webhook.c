/*
 * verifier_webhook.c - Telnyx webhook body parser (see verifier_webhook.h).
 * Used by the verifier.  Lenient on optional fields, strict on the envelope.
 */
#include "verifier_webhook.h"
#include "config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WEBHOOK_MAX_FIELD 4096

/* Owned copy of obj[key] when it is a non-empty string of sane length. */
static char *opt_str(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > WEBHOOK_MAX_FIELD)
        return NULL;
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return NULL;    /* embedded NUL */
    return xstrdup(s);
}

static char *find_token(const json_t *headers)
{
    size_t i;
    const json_t *h;
    if (!json_is_array(headers))
        return NULL;
    json_array_foreach(headers, i, h) {
        const json_t *name = json_object_get(h, "name");
        if (json_is_string(name) && strcasecmp(json_string_value(name), WEBHOOK_TOKEN_HEADER) == 0)
            return opt_str(h, "value");
    }
    return NULL;
}

int verifier_webhook_parse(const void *body, size_t len, struct verifier_webhook *out,
                           char *err)
{
    json_error_t jerr;
    memset(out, 0, sizeof *out);
    out->attestation_validated = WEBHOOK_ABSENT;
    out->attestation = ATTEST_NONE;

    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return tg_err(err, "webhook body is not JSON: %s (line %d)", jerr.text, jerr.line);
    int rc = -1;
    const json_t *data = json_object_get(root, "data");
    const json_t *payload = json_object_get(data, "payload");
    if (!json_is_object(root)) {
        tg_err(err, "webhook body is not a JSON object");
        goto done;
    }
    if (!json_is_object(data)) {
        tg_err(err, "webhook has no 'data' object");
        goto done;
    }
    out->id = opt_str(data, "id");
    out->event_type = opt_str(data, "event_type");
    if (!out->id) {
        tg_err(err, "webhook 'data.id' missing or not a string");
        goto done;
    }
    if (!out->event_type) {
        tg_err(err, "webhook 'data.event_type' missing or not a string");
        goto done;
    }
    if (payload && !json_is_object(payload) && !json_is_null(payload)) {
        tg_err(err, "webhook 'data.payload' is not an object");
        goto done;
    }
    out->occurred_at = opt_str(data, "occurred_at");
    if (json_is_object(payload)) {
        out->call_control_id = opt_str(payload, "call_control_id");
        out->call_leg_id = opt_str(payload, "call_leg_id");
        out->call_session_id = opt_str(payload, "call_session_id");
        out->client_state = opt_str(payload, "client_state");
        out->direction = opt_str(payload, "direction");
        out->from = opt_str(payload, "from");
        out->to = opt_str(payload, "to");
        out->state = opt_str(payload, "state");
        out->hangup_cause = opt_str(payload, "hangup_cause");
        out->hangup_source = opt_str(payload, "hangup_source");
        out->sip_hangup_cause = opt_str(payload, "sip_hangup_cause");
        out->status = opt_str(payload, "status");
        out->namespace_token = find_token(json_object_get(payload, "custom_headers"));

        const json_t *att = json_object_get(payload, "shaken_stir_attestation");
        int level;
        if (json_is_string(att) && strcmp(json_string_value(att), "none") != 0 &&
            config_attestation_parse(json_string_value(att), &level) == 0) {
            out->attestation = level;
            out->has_attestation = true;
        }
        const json_t *val = json_object_get(payload, "shaken_stir_validated");
        if (json_is_boolean(val))
            out->attestation_validated = json_is_true(val) ? WEBHOOK_TRUE : WEBHOOK_FALSE;
    }
    rc = 0;
done:
    json_decref(root);
    if (rc != 0)
        verifier_webhook_free(out);
    return rc;
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
