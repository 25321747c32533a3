/*
 * verifier_flow.c - the pure call flow: webhook -> events + commands (state
 * machine in verifier_flow.h).  Used by the verifier.
 */
#include "verifier_flow.h"
#include "event.h"
#include "log.h"
#include "mp.h"
#include "verifier_state.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- policy ---- */

static bool reason_ok(const char *r)
{
    if (!*r)
        return false;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || *r == '_'))
            return false;
    return true;
}

void verifier_policy_decide(const struct verifier_policy *p, const struct verifier_call *call,
                            struct verifier_decision *out)
{
    memset(out, 0, sizeof *out);
    if (p && p->decide)
        p->decide(p->ctx, call, out);
    out->namespace_[sizeof out->namespace_ - 1] = '\0';
    out->method[sizeof out->method - 1] = '\0';
    out->serial[sizeof out->serial - 1] = '\0';
    out->reason[sizeof out->reason - 1] = '\0';
    out->detail[sizeof out->detail - 1] = '\0';
    if (out->verified && (!out->namespace_[0] || !out->method[0]))
        out->verified = false;
    if (!out->verified && !reason_ok(out->reason))
        snprintf(out->reason, sizeof out->reason, "no_namespace");
}

static void policy_none_decide(void *ctx, const struct verifier_call *call,
                               struct verifier_decision *out)
{
    TG_UNUSED(ctx);
    TG_UNUSED(call);
    out->verified = false;
    snprintf(out->reason, sizeof out->reason, "no_namespace");
}

const struct verifier_policy *verifier_policy_default(void)
{
    static const struct verifier_policy none = {.decide = policy_none_decide, .ctx = NULL};
    return &none;
}

/* ---- building the result ---- */

struct flow {
    const struct tg_config *cfg;
    const struct verifier_webhook *wh;
    struct msg_result *out;
};

/* Start a msgpack map of n entries in a fresh sbuffer. */
static void data_begin(msgpack_sbuffer *sb, msgpack_packer *pk, size_t n)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(pk, n);
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* Append an event of type with id event_id(data.id, step); takes the
 * buffer of sb. */
static void event_add(struct flow *f, const char *type, const char *step, msgpack_sbuffer *sb)
{
    struct msg_result *o = f->out;
    const struct verifier_webhook *wh = f->wh;
    char id[EVENT_ID_LEN];
    o->events = xrealloc(o->events, (o->n_events + 1) * sizeof *o->events);
    struct tg_event *e = &o->events[o->n_events++];
    memset(e, 0, sizeof *e);
    event_id(wh->id, step, id);
    e->type = xstrdup(type);
    e->actor = xstrdup(f->cfg->namespace_);
    e->id = xstrdup(id);
    e->webhook_id = xstrdup(wh->id);
    e->call_control_id = dup_or_null(wh->call_control_id);
    e->call_session_id = dup_or_null(wh->call_session_id);
    e->from = dup_or_null(wh->from);
    e->to = dup_or_null(wh->to);
    e->data = (uint8_t *)sb->data;
    e->data_len = sb->size;
    sb->data = NULL;
    sb->size = sb->alloc = 0;
}

/* Append a command for action; body gets "command_id" added and is
 * released. */
static void command_add(struct flow *f, const char *action, json_t *body)
{
    struct msg_result *o = f->out;
    const struct verifier_webhook *wh = f->wh;
    char cid[COMMAND_ID_LEN];
    command_id_make(wh->id, action, cid);
    json_object_set_new(body, "command_id", json_string(cid));
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!text)
        log_panic("json_dumps failed for a %s body", action);
    o->commands = xrealloc(o->commands, (o->n_commands + 1) * sizeof *o->commands);
    struct tg_command *c = &o->commands[o->n_commands++];
    memset(c, 0, sizeof *c);
    c->command_id = xstrdup(cid);
    c->call_control_id = xstrdup(wh->call_control_id);
    c->action = xstrdup(action);
    c->body = xstrdup(text);
    free(text);
    c->webhook_id = xstrdup(wh->id);
    c->call_session_id = dup_or_null(wh->call_session_id);
    c->from = dup_or_null(wh->from);
    c->to = dup_or_null(wh->to);
}

/* Add "client_state" for st to body; -1 with err if not encodable. */
static int body_state(json_t *body, const struct verifier_state *st, char *err)
{
    char enc[STATE_ENCODED_MAX];
    if (verifier_state_encode(st, enc, err) != 0)
        return -1;
    json_object_set_new(body, "client_state", json_string(enc));
    return 0;
}

static int need_call_control_id(const struct verifier_webhook *wh, char *err)
{
    if (!wh->call_control_id)
        return tg_err(err, "webhook %s (%s) has no call_control_id", wh->id, wh->event_type);
    return 0;
}

/* ---- transitions ---- */

static int on_initiated(struct flow *f, const struct numbers *numbers,
                        const struct verifier_policy *policy, uint64_t now_us, char *err)
{
    const struct verifier_webhook *wh = f->wh;
    const struct tg_config *cfg = f->cfg;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    if (!wh->direction || strcmp(wh->direction, "incoming") != 0) {
        /* e.g. the outgoing leg of a transfer: logged, never screened (SPEC 4) */
        log_info("call %s from %s to %s has direction %s: not screened",
                 wh->call_control_id ? wh->call_control_id : "(no call_control_id)",
                 wh->from ? wh->from : "?", wh->to ? wh->to : "?",
                 wh->direction ? wh->direction : "(none)");
        return 0;
    }
    if (need_call_control_id(wh, err) != 0)
        return -1;

    const struct numbers_entry *num = numbers_find(numbers, wh->to);
    data_begin(&sb, &pk, 4);
    mp_pack_kv_str(&pk, "attestation",
                   wh->has_attestation ? config_attestation_name(wh->attestation) : NULL);
    mp_pack_cstr(&pk, "attestation_validated");
    if (wh->attestation_validated == WEBHOOK_TRUE)
        msgpack_pack_true(&pk);
    else if (wh->attestation_validated == WEBHOOK_FALSE)
        msgpack_pack_false(&pk);
    else
        msgpack_pack_nil(&pk);
    mp_pack_kv_bool(&pk, "number_known", num != NULL);
    mp_pack_kv_str(&pk, "label", num ? num->label : NULL);
    event_add(f, "tel.call_inbound", "inbound", &sb);

    struct verifier_call call = {
        .from = wh->from, .to = wh->to, .token = wh->namespace_token,
        .attestation = wh->attestation, .has_attestation = wh->has_attestation,
        .attestation_validated = wh->attestation_validated, .now_us = now_us,
    };
    struct verifier_decision d;
    verifier_policy_decide(policy, &call, &d);

    struct verifier_state st = {.verified = d.verified, .mode = cfg->reject_mode};
    json_t *body = json_object();
    if (d.verified) {
        data_begin(&sb, &pk, 3);
        mp_pack_kv_str(&pk, "namespace", d.namespace_);
        mp_pack_kv_str(&pk, "method", d.method);
        mp_pack_kv_str(&pk, "serial", d.serial);
        event_add(f, "tel.call_verified", "decision", &sb);
        st.phase = STATE_VERIFIED;
        if (num && num->forward_to)
            json_object_set_new(body, "to", json_string(num->forward_to));
        if (body_state(body, &st, err) != 0)
            goto fail;
        command_add(f, num && num->forward_to ? "transfer" : "answer", body);
        return 0;
    }
    bool busy = cfg->reject_mode == REJECT_BUSY;
    data_begin(&sb, &pk, 2 + (d.serial[0] != '\0') + (d.detail[0] != '\0'));
    mp_pack_kv_str(&pk, "reason", d.reason);
    mp_pack_kv_str(&pk, "mode", busy ? "busy" : "announce");
    if (d.serial[0])
        mp_pack_kv_str(&pk, "serial", d.serial);
    if (d.detail[0])
        mp_pack_kv_str(&pk, "detail", d.detail);
    event_add(f, "tel.call_rejected", "decision", &sb);
    snprintf(st.reason, sizeof st.reason, "%s", d.reason);
    if (busy) {
        st.phase = STATE_REJECTED;
        json_object_set_new(body, "cause", json_string("USER_BUSY"));
        if (body_state(body, &st, err) != 0)
            goto fail;
        command_add(f, "reject", body);
    } else {
        st.phase = STATE_ANNOUNCE;
        if (body_state(body, &st, err) != 0)
            goto fail;
        command_add(f, "answer", body);
    }
    return 0;
fail:
    json_decref(body);
    return -1;
}

static int on_answered(struct flow *f, const struct verifier_state *st, char *err)
{
    const struct tg_config *cfg = f->cfg;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    data_begin(&sb, &pk, 0);
    event_add(f, "tel.call_answered", "answered", &sb);
    if (st->phase != STATE_ANNOUNCE)
        return 0;
    if (need_call_control_id(f->wh, err) != 0)
        return -1;
    struct verifier_state next = *st;
    next.phase = STATE_SPEAKING;
    json_t *body = json_object();
    json_object_set_new(body, "payload", json_string(cfg->announce_text));
    json_object_set_new(body, "voice", json_string(cfg->announce_voice));
    json_object_set_new(body, "language", json_string(cfg->announce_language));
    json_object_set_new(body, "payload_type", json_string("text"));
    if (config_voice_is_basic(cfg->announce_voice))
        json_object_set_new(body, "service_level", json_string("basic"));
    if (body_state(body, &next, err) != 0) {
        json_decref(body);
        return -1;
    }
    command_add(f, "speak", body);
    return 0;
}

static int on_speak_ended(struct flow *f, const struct verifier_state *st, char *err)
{
    if (st->phase != STATE_ANNOUNCE && st->phase != STATE_SPEAKING)
        return 0;
    if (f->wh->status && strcmp(f->wh->status, "call_hangup") == 0)
        return 0;   /* the caller is already gone */
    if (need_call_control_id(f->wh, err) != 0)
        return -1;
    command_add(f, "hangup", json_object());
    return 0;
}

static void on_hangup(struct flow *f)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    data_begin(&sb, &pk, 3);
    mp_pack_kv_str(&pk, "hangup_cause", f->wh->hangup_cause);
    mp_pack_kv_str(&pk, "hangup_source", f->wh->hangup_source);
    mp_pack_kv_str(&pk, "sip_hangup_cause", f->wh->sip_hangup_cause);
    event_add(f, "tel.call_hangup", "hangup", &sb);
}

int verifier_flow_run(const struct tg_config *cfg, const struct numbers *numbers,
                      const struct verifier_policy *policy, const struct verifier_webhook *wh,
                      uint64_t now_us, struct msg_result *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (!wh->id || !wh->event_type)
        return tg_err(err, "webhook without data.id or data.event_type");
    out->webhook_id = xstrdup(wh->id);
    out->occurred_us = verifier_webhook_occurred_us(wh);

    struct flow f = {.cfg = cfg, .wh = wh, .out = out};
    struct verifier_state st;
    verifier_state_decode(wh->client_state, &st);
    int rc = 0;
    if (strcmp(wh->event_type, "call.initiated") == 0)
        rc = on_initiated(&f, numbers, policy, now_us, err);
    else if (strcmp(wh->event_type, "call.answered") == 0)
        rc = on_answered(&f, &st, err);
    else if (strcmp(wh->event_type, "call.speak.ended") == 0)
        rc = on_speak_ended(&f, &st, err);
    else if (strcmp(wh->event_type, "call.hangup") == 0)
        on_hangup(&f);
    if (rc != 0)
        msg_result_free(out);
    return rc;
}
