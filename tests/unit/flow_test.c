/*
 * flow_test.c - unit tests for verifier/verifier_flow (with verifier_state):
 * every transition in announce and busy modes, verified calls through a test
 * policy, ignored and foreign inputs, determinism.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "log.h"
#include "mp.h"
#include "msg.h"
#include "numbers.h"
#include "../../verifier/verifier_flow.h"
#include "../../verifier/verifier_state.h"
#include "../../verifier/verifier_webhook.h"

#define CCID "v3:2EC-70CTEjlUq3tDM0CxKXIt5"
#define SESSION "b0e6141e-c81c-11f0-abac-02420aef93a0"

static struct tg_config cfg;
static struct numbers *nums;

static int setup(void **state)
{
    (void)state;
    char err[ERR_LEN];
    memset(&cfg, 0, sizeof cfg);
    cfg.namespace_ = "op.x";
    cfg.reject_mode = REJECT_ANNOUNCE;
    cfg.announce_text = "Verified callers only.";
    cfg.announce_voice = "female";
    cfg.announce_language = "en-US";
    const char *text = "+13125550199 label=office\n"
                       "+13125550188 label=fwd forward_to=sip:desk@example.com\n";
    if (numbers_parse(text, strlen(text), "test", &nums, err) != 0)
        fail_msg("%s", err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    numbers_free(&nums);
    return 0;
}

/* Build a webhook body; client_state and extra may be NULL. */
static void webhook(struct verifier_webhook *wh, const char *id, const char *type,
                    const char *direction, const char *to, const char *client_state,
                    const char *extra)
{
    char body[4096], cs[256], dir[64];
    char err[ERR_LEN];
    if (client_state)
        snprintf(cs, sizeof cs, "\"%s\"", client_state);
    else
        snprintf(cs, sizeof cs, "null");
    if (direction)
        snprintf(dir, sizeof dir, "\"direction\":\"%s\",", direction);
    else
        dir[0] = '\0';
    snprintf(body, sizeof body,
             "{\"data\":{\"event_type\":\"%s\",\"id\":\"%s\",\"occurred_at\":\"2025-11-23T03:30:00.076316Z\","
             "\"payload\":{\"call_control_id\":\"" CCID "\",\"call_leg_id\":\"leg\","
             "\"call_session_id\":\"" SESSION "\",\"client_state\":%s,%s"
             "\"from\":\"+18124040851\",\"to\":\"%s\",\"shaken_stir_attestation\":\"B\","
             "\"shaken_stir_validated\":true%s%s},\"record_type\":\"event\"},\"meta\":{\"attempt\":1}}",
             type, id, cs, dir, to, extra ? "," : "", extra ? extra : "");
    if (verifier_webhook_parse(body, strlen(body), wh, err) != 0)
        fail_msg("test body rejected: %s", err);
}

static void run(const struct verifier_policy *p, const struct verifier_webhook *wh,
                struct msg_result *res)
{
    char err[ERR_LEN];
    if (verifier_flow_run(&cfg, nums, p ? p : verifier_policy_default(), wh, 1700000000000000ULL,
                          res, err) != 0)
        fail_msg("flow failed: %s", err);
}

/* Unpack an event's data map; caller destroys up. */
static const msgpack_object *event_data(const struct tg_event *e, msgpack_unpacked *up)
{
    char err[ERR_LEN];
    if (mp_unpack_exact(e->data, e->data_len, up, err) != 0)
        fail_msg("event data: %s", err);
    assert_int_equal(up->data.type, MSGPACK_OBJECT_MAP);
    return &up->data;
}

static void assert_data_str(const msgpack_object *m, const char *key, const char *want)
{
    const msgpack_object *v = mp_map_get(m, key);
    assert_non_null(v);
    if (!want) {
        assert_int_equal(v->type, MSGPACK_OBJECT_NIL);
        return;
    }
    assert_int_equal(v->type, MSGPACK_OBJECT_STR);
    assert_int_equal(v->via.str.size, strlen(want));
    assert_memory_equal(v->via.str.ptr, want, strlen(want));
}

static void assert_data_bool(const msgpack_object *m, const char *key, bool want)
{
    const msgpack_object *v = mp_map_get(m, key);
    assert_non_null(v);
    assert_int_equal(v->type, MSGPACK_OBJECT_BOOLEAN);
    assert_int_equal(v->via.boolean, want);
}

static void assert_event(const struct tg_event *e, const char *type, const char *wid, const char *step)
{
    char id[EVENT_ID_LEN];
    event_id(wid, step, id);
    assert_string_equal(e->type, type);
    assert_string_equal(e->actor, "op.x");
    assert_string_equal(e->id, id);
    assert_string_equal(e->webhook_id, wid);
    assert_string_equal(e->call_control_id, CCID);
    assert_string_equal(e->call_session_id, SESSION);
    assert_string_equal(e->from, "+18124040851");
}

/* Check the common command fields and return its parsed body. */
static json_t *assert_command(const struct tg_command *c, const char *action, const char *wid)
{
    char cid[COMMAND_ID_LEN];
    command_id_make(wid, action, cid);
    assert_string_equal(c->action, action);
    assert_string_equal(c->command_id, cid);
    assert_string_equal(c->call_control_id, CCID);
    assert_string_equal(c->webhook_id, wid);
    assert_string_equal(c->call_session_id, SESSION);
    assert_string_equal(c->from, "+18124040851");
    json_t *b = json_loads(c->body, 0, NULL);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "command_id")), cid);
    return b;
}

static enum state_phase body_phase(json_t *body, struct verifier_state *st)
{
    const char *cs = json_string_value(json_object_get(body, "client_state"));
    assert_non_null(cs);
    verifier_state_decode(cs, st);
    return st->phase;
}

/* ---- announce mode: the whole call ---- */

static void test_announce_flow(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    struct msg_result res;
    msgpack_unpacked up;
    struct verifier_state st;

    /* call.initiated to an unknown number */
    webhook(&wh, "ev-init", "call.initiated", "incoming", "+13125550100", NULL, NULL);
    run(NULL, &wh, &res);
    assert_string_equal(res.webhook_id, "ev-init");
    assert_int_equal(res.n_events, 2);
    assert_int_equal(res.n_commands, 1);
    assert_event(&res.events[0], "tel.call_inbound", "ev-init", "inbound");
    const msgpack_object *d = event_data(&res.events[0], &up);
    assert_data_str(d, "attestation", "B");
    assert_data_bool(d, "attestation_validated", true);
    assert_data_bool(d, "number_known", false);
    assert_data_str(d, "label", NULL);
    msgpack_unpacked_destroy(&up);
    assert_event(&res.events[1], "tel.call_rejected", "ev-init", "decision");
    d = event_data(&res.events[1], &up);
    assert_data_str(d, "reason", "no_namespace");
    assert_data_str(d, "mode", "announce");
    msgpack_unpacked_destroy(&up);
    json_t *b = assert_command(&res.commands[0], "answer", "ev-init");
    assert_int_equal(body_phase(b, &st), STATE_ANNOUNCE);
    assert_false(st.verified);
    assert_string_equal(st.reason, "no_namespace");
    char cs_announce[STATE_ENCODED_MAX];
    snprintf(cs_announce, sizeof cs_announce, "%s", json_string_value(json_object_get(b, "client_state")));
    assert_true(strlen(cs_announce) < 128);
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* call.answered carrying the announce state -> speak */
    webhook(&wh, "ev-ans", "call.answered", NULL, "+13125550100", cs_announce, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 1);
    assert_event(&res.events[0], "tel.call_answered", "ev-ans", "answered");
    d = event_data(&res.events[0], &up);
    assert_int_equal(d->via.map.size, 0);
    msgpack_unpacked_destroy(&up);
    assert_int_equal(res.n_commands, 1);
    b = assert_command(&res.commands[0], "speak", "ev-ans");
    assert_string_equal(json_string_value(json_object_get(b, "payload")), "Verified callers only.");
    assert_string_equal(json_string_value(json_object_get(b, "voice")), "female");
    assert_string_equal(json_string_value(json_object_get(b, "language")), "en-US");
    assert_string_equal(json_string_value(json_object_get(b, "payload_type")), "text");
    assert_string_equal(json_string_value(json_object_get(b, "service_level")), "basic");
    assert_int_equal(body_phase(b, &st), STATE_SPEAKING);
    char cs_speaking[STATE_ENCODED_MAX];
    snprintf(cs_speaking, sizeof cs_speaking, "%s", json_string_value(json_object_get(b, "client_state")));
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* call.speak.started: nothing */
    webhook(&wh, "ev-ss", "call.speak.started", NULL, "+13125550100", cs_speaking, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 0);
    assert_int_equal(res.n_commands, 0);
    assert_string_equal(res.webhook_id, "ev-ss");
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* call.speak.ended completed -> hangup */
    webhook(&wh, "ev-se", "call.speak.ended", NULL, "+13125550100", cs_speaking, "\"status\":\"completed\"");
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 0);
    assert_int_equal(res.n_commands, 1);
    b = assert_command(&res.commands[0], "hangup", "ev-se");
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* speak.ended with the announce state (speak's state lost): still hangup */
    webhook(&wh, "ev-se2", "call.speak.ended", NULL, "+13125550100", cs_announce, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_commands, 1);
    assert_string_equal(res.commands[0].action, "hangup");
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* speak.ended because the caller hung up: no hangup */
    webhook(&wh, "ev-se3", "call.speak.ended", NULL, "+13125550100", cs_speaking, "\"status\":\"call_hangup\"");
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 0);
    assert_int_equal(res.n_commands, 0);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* call.hangup (may come before speak.ended) -> event */
    webhook(&wh, "ev-hup", "call.hangup", NULL, "+13125550100", cs_speaking,
            "\"hangup_cause\":\"normal_clearing\",\"hangup_source\":\"caller\",\"sip_hangup_cause\":\"200\"");
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 1);
    assert_int_equal(res.n_commands, 0);
    assert_event(&res.events[0], "tel.call_hangup", "ev-hup", "hangup");
    d = event_data(&res.events[0], &up);
    assert_data_str(d, "hangup_cause", "normal_clearing");
    assert_data_str(d, "hangup_source", "caller");
    assert_data_str(d, "sip_hangup_cause", "200");
    msgpack_unpacked_destroy(&up);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
}

static void test_known_number_and_other_voice(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    struct msg_result res;
    msgpack_unpacked up;
    webhook(&wh, "ev-k", "call.initiated", "incoming", "+13125550199", NULL, NULL);
    run(NULL, &wh, &res);
    const msgpack_object *d = event_data(&res.events[0], &up);
    assert_data_bool(d, "number_known", true);
    assert_data_str(d, "label", "office");
    msgpack_unpacked_destroy(&up);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* A provider voice gets no service_level; language passes through. */
    struct verifier_state st = {.phase = STATE_ANNOUNCE, .reason = "no_namespace"};
    char cs[STATE_ENCODED_MAX], err[ERR_LEN];
    assert_int_equal(verifier_state_encode(&st, cs, err), 0);
    cfg.announce_voice = "AWS.Polly.Joanna-Neural";
    cfg.announce_language = "de-DE";
    webhook(&wh, "ev-a2", "call.answered", NULL, "+13125550199", cs, NULL);
    run(NULL, &wh, &res);
    json_t *b = assert_command(&res.commands[0], "speak", "ev-a2");
    assert_string_equal(json_string_value(json_object_get(b, "voice")), "AWS.Polly.Joanna-Neural");
    assert_string_equal(json_string_value(json_object_get(b, "language")), "de-DE");
    assert_null(json_object_get(b, "service_level"));
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
    cfg.announce_voice = "female";
    cfg.announce_language = "en-US";
}

/* ---- busy mode ---- */

static void test_busy_flow(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    struct msg_result res;
    msgpack_unpacked up;
    struct verifier_state st;
    cfg.reject_mode = REJECT_BUSY;
    webhook(&wh, "ev-busy", "call.initiated", "incoming", "+13125550199", NULL, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 2);
    const msgpack_object *d = event_data(&res.events[1], &up);
    assert_data_str(d, "reason", "no_namespace");
    assert_data_str(d, "mode", "busy");
    msgpack_unpacked_destroy(&up);
    assert_int_equal(res.n_commands, 1);
    json_t *b = assert_command(&res.commands[0], "reject", "ev-busy");
    assert_string_equal(json_string_value(json_object_get(b, "cause")), "USER_BUSY");
    assert_int_equal(body_phase(b, &st), STATE_REJECTED);
    assert_int_equal(st.mode, REJECT_BUSY);
    char cs[STATE_ENCODED_MAX];
    snprintf(cs, sizeof cs, "%s", json_string_value(json_object_get(b, "client_state")));
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* The hangup that follows a reject: event only. */
    webhook(&wh, "ev-busy-h", "call.hangup", NULL, "+13125550199", cs, "\"hangup_cause\":\"user_busy\"");
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 1);
    assert_int_equal(res.n_commands, 0);
    d = event_data(&res.events[0], &up);
    assert_data_str(d, "hangup_cause", "user_busy");
    assert_data_str(d, "hangup_source", NULL);
    msgpack_unpacked_destroy(&up);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* A stray answered / speak.ended with the rejected state: no commands. */
    webhook(&wh, "ev-busy-a", "call.answered", NULL, "+13125550199", cs, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 1);
    assert_int_equal(res.n_commands, 0);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
    webhook(&wh, "ev-busy-s", "call.speak.ended", NULL, "+13125550199", cs, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_commands, 0);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
    cfg.reject_mode = REJECT_ANNOUNCE;
}

/* ---- verified calls (test policy) ---- */

static void policy_accept(void *ctx, const struct verifier_call *call, struct verifier_decision *out)
{
    int *calls = ctx;
    (*calls)++;
    assert_string_equal(call->from, "+18124040851");
    assert_int_equal(call->attestation, ATTEST_B);
    assert_int_equal(call->now_us, 1700000000000000ULL);
    out->verified = true;
    snprintf(out->namespace_, sizeof out->namespace_, "alice.x");
    snprintf(out->method, sizeof out->method, "registry");
    snprintf(out->serial, sizeof out->serial, "42");
}

static void test_verified(void **state)
{
    (void)state;
    int calls = 0;
    struct verifier_policy p = {.decide = policy_accept, .ctx = &calls};
    struct verifier_webhook wh;
    struct msg_result res;
    msgpack_unpacked up;
    struct verifier_state st;

    /* forward_to -> transfer */
    webhook(&wh, "ev-v1", "call.initiated", "incoming", "+13125550188", NULL, NULL);
    run(&p, &wh, &res);
    assert_int_equal(calls, 1);
    assert_int_equal(res.n_events, 2);
    assert_event(&res.events[1], "tel.call_verified", "ev-v1", "decision");
    const msgpack_object *d = event_data(&res.events[1], &up);
    assert_data_str(d, "namespace", "alice.x");
    assert_data_str(d, "method", "registry");
    assert_data_str(d, "serial", "42");
    msgpack_unpacked_destroy(&up);
    json_t *b = assert_command(&res.commands[0], "transfer", "ev-v1");
    assert_string_equal(json_string_value(json_object_get(b, "to")), "sip:desk@example.com");
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* no forward_to -> answer with the verified state */
    webhook(&wh, "ev-v2", "call.initiated", "incoming", "+13125550199", NULL, NULL);
    run(&p, &wh, &res);
    b = assert_command(&res.commands[0], "answer", "ev-v2");
    assert_int_equal(body_phase(b, &st), STATE_VERIFIED);
    assert_true(st.verified);
    char cs[STATE_ENCODED_MAX];
    snprintf(cs, sizeof cs, "%s", json_string_value(json_object_get(b, "client_state")));
    json_decref(b);
    msg_result_free(&res);
    verifier_webhook_free(&wh);

    /* answered (verified): event, no speak */
    webhook(&wh, "ev-v3", "call.answered", NULL, "+13125550199", cs, NULL);
    run(&p, &wh, &res);
    assert_int_equal(res.n_events, 1);
    assert_int_equal(res.n_commands, 0);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
}

static void policy_broken(void *ctx, const struct verifier_call *call, struct verifier_decision *out)
{
    (void)ctx;
    (void)call;
    out->verified = false;
    snprintf(out->reason, sizeof out->reason, "Bad Reason!");
}

static void policy_half_verified(void *ctx, const struct verifier_call *call, struct verifier_decision *out)
{
    (void)ctx;
    (void)call;
    out->verified = true;   /* but no namespace */
}

static void test_policy_sanitised(void **state)
{
    (void)state;
    struct verifier_policy p1 = {.decide = policy_broken};
    struct verifier_policy p2 = {.decide = policy_half_verified};
    struct verifier_decision d;
    struct verifier_call call = {.from = "+1", .to = "+2"};
    verifier_policy_decide(&p1, &call, &d);
    assert_false(d.verified);
    assert_string_equal(d.reason, "no_namespace");
    verifier_policy_decide(&p2, &call, &d);
    assert_false(d.verified);
    assert_string_equal(d.reason, "no_namespace");
    verifier_policy_decide(verifier_policy_default(), &call, &d);
    assert_false(d.verified);
    assert_string_equal(d.reason, "no_namespace");
}

/* ---- ignored, foreign, broken input ---- */

/* Run fn with stderr (where the log goes) captured; returns what was
 * written (static buffer). */
static const char *stderr_of(void (*fn)(void))
{
    static char out[4096];
    char path[] = "/tmp/flow_test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return out;
}

static void run_outgoing_initiated(void)
{
    struct verifier_webhook wh;
    struct msg_result res;
    webhook(&wh, "ev-out", "call.initiated", "outgoing", "+13125550199", NULL, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 0);
    assert_int_equal(res.n_commands, 0);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
}

static void test_ignored(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    struct msg_result res;
    const char *types[] = {"call.initiated", "call.bridged", "call.speak.started", "call.playback.ended",
                           "something.new"};

    /* a call that is not incoming is logged, never screened (SPEC 4) */
    log_set_level(LOG_INFO);
    const char *logged = stderr_of(run_outgoing_initiated);
    assert_non_null(strstr(logged, "direction outgoing: not screened"));
    assert_non_null(strstr(logged, "+13125550199"));

    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        /* call.initiated here is the outgoing leg of a transfer */
        webhook(&wh, "ev-ign", types[i], "outgoing", "+13125550199", NULL, NULL);
        run(NULL, &wh, &res);
        assert_int_equal(res.n_events, 0);
        assert_int_equal(res.n_commands, 0);
        assert_string_equal(res.webhook_id, "ev-ign");
        msg_result_free(&res);
        verifier_webhook_free(&wh);
    }
    /* call.initiated without a direction: not screened either */
    webhook(&wh, "ev-nodir", "call.initiated", NULL, "+13125550199", NULL, NULL);
    run(NULL, &wh, &res);
    assert_int_equal(res.n_events, 0);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
}

static void test_foreign_client_state(void **state)
{
    (void)state;
    const char *foreign[] = {
        "aGF2ZSBhIG5pY2UgZGF5ID1d",     /* "have a nice day =]" */
        "!!not base64!!", "dGcx",       /* "tg1" */
        "dGcxfGFubm91bmNlfHJ8fGE=",     /* "tg1|announce|r||a": empty reason */
        "dGcyfGFubm91bmNlfHJ8bm9fbmFtZXNwYWNlfGE=", /* version 2 */
        "",
    };
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        struct verifier_webhook wh;
        struct msg_result res;
        struct verifier_state st;
        verifier_state_decode(foreign[i], &st);
        assert_int_equal(st.phase, STATE_NONE);
        webhook(&wh, "ev-f", "call.answered", NULL, "+13125550199", foreign[i], NULL);
        run(NULL, &wh, &res);
        assert_int_equal(res.n_events, 1);     /* the fact is recorded */
        assert_int_equal(res.n_commands, 0);   /* but nothing is said */
        msg_result_free(&res);
        verifier_webhook_free(&wh);
        webhook(&wh, "ev-f2", "call.speak.ended", NULL, "+13125550199", foreign[i], NULL);
        run(NULL, &wh, &res);
        assert_int_equal(res.n_commands, 0);
        msg_result_free(&res);
        verifier_webhook_free(&wh);
    }
    struct verifier_state st;
    verifier_state_decode(NULL, &st);
    assert_int_equal(st.phase, STATE_NONE);
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    char cs[STATE_ENCODED_MAX], err[ERR_LEN];
    struct verifier_state in = {.phase = STATE_SPEAKING, .reason = "attestation_insufficient",
                                .mode = REJECT_ANNOUNCE};
    struct verifier_state out;
    assert_int_equal(verifier_state_encode(&in, cs, err), 0);
    verifier_state_decode(cs, &out);
    assert_int_equal(out.phase, STATE_SPEAKING);
    assert_false(out.verified);
    assert_string_equal(out.reason, "attestation_insufficient");
    assert_int_equal(out.mode, REJECT_ANNOUNCE);

    struct verifier_state v = {.phase = STATE_VERIFIED, .verified = true};
    assert_int_equal(verifier_state_encode(&v, cs, err), 0);
    verifier_state_decode(cs, &out);
    assert_int_equal(out.phase, STATE_VERIFIED);
    assert_true(out.verified);

    struct verifier_state bad = {.phase = STATE_ANNOUNCE, .reason = "has|bar"};
    assert_int_equal(verifier_state_encode(&bad, cs, err), -1);
    struct verifier_state none = {.phase = STATE_NONE};
    assert_int_equal(verifier_state_encode(&none, cs, err), -1);
}

static void test_missing_call_control_id(void **state)
{
    (void)state;
    struct verifier_webhook wh;
    struct msg_result res;
    char err[ERR_LEN];
    const char *body = "{\"data\":{\"event_type\":\"call.initiated\",\"id\":\"ev-m\",\"payload\":"
                       "{\"direction\":\"incoming\",\"from\":\"+1\",\"to\":\"+2\"}}}";
    assert_int_equal(verifier_webhook_parse(body, strlen(body), &wh, err), 0);
    assert_int_equal(verifier_flow_run(&cfg, nums, verifier_policy_default(), &wh, 0, &res, err), -1);
    assert_non_null(strstr(err, "call_control_id"));
    assert_null(res.events);
    assert_null(res.webhook_id);
    verifier_webhook_free(&wh);

    /* A hangup without one is still recorded. */
    const char *hup = "{\"data\":{\"event_type\":\"call.hangup\",\"id\":\"ev-m2\",\"payload\":{}}}";
    assert_int_equal(verifier_webhook_parse(hup, strlen(hup), &wh, err), 0);
    assert_int_equal(verifier_flow_run(&cfg, NULL, NULL, &wh, 0, &res, err), 0);
    assert_int_equal(res.n_events, 1);
    assert_null(res.events[0].call_control_id);
    msg_result_free(&res);
    verifier_webhook_free(&wh);
}

/* ---- determinism ---- */

static void encode(const struct msg_result *res, msgpack_sbuffer *sb)
{
    msgpack_sbuffer_init(sb);
    msg_result_encode(sb, res);
}

static void test_deterministic(void **state)
{
    (void)state;
    const char *types[] = {"call.initiated", "call.answered", "call.speak.ended", "call.hangup"};
    struct verifier_state st = {.phase = STATE_ANNOUNCE, .reason = "no_namespace"};
    char cs[STATE_ENCODED_MAX], err[ERR_LEN];
    assert_int_equal(verifier_state_encode(&st, cs, err), 0);
    for (int mode = 0; mode < 2; mode++) {
        cfg.reject_mode = mode ? REJECT_BUSY : REJECT_ANNOUNCE;
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            struct verifier_webhook wh;
            struct msg_result r1, r2;
            msgpack_sbuffer a, b;
            webhook(&wh, "ev-det", types[i], "incoming", "+13125550199", i ? cs : NULL, NULL);
            assert_int_equal(verifier_flow_run(&cfg, nums, NULL, &wh, 1, &r1, err), 0);
            assert_int_equal(verifier_flow_run(&cfg, nums, NULL, &wh, 999999999, &r2, err), 0);
            r1.jseq = r2.jseq = 7;
            assert_true(r1.n_events + r1.n_commands > 0);
            encode(&r1, &a);
            encode(&r2, &b);
            assert_int_equal(a.size, b.size);
            assert_memory_equal(a.data, b.data, a.size);
            /* and the RESULT message round-trips */
            struct msg_result back;
            assert_int_equal(msg_result_decode(a.data, a.size, &back, err), 0);
            assert_int_equal(back.n_events, r1.n_events);
            assert_int_equal(back.n_commands, r1.n_commands);
            msg_result_free(&back);
            msgpack_sbuffer_destroy(&a);
            msgpack_sbuffer_destroy(&b);
            msg_result_free(&r1);
            msg_result_free(&r2);
            verifier_webhook_free(&wh);
        }
    }
    cfg.reject_mode = REJECT_ANNOUNCE;

    /* Different webhooks of one call get different ids. */
    struct verifier_webhook w1, w2;
    struct msg_result r1, r2;
    webhook(&w1, "ev-1", "call.initiated", "incoming", "+13125550199", NULL, NULL);
    webhook(&w2, "ev-2", "call.initiated", "incoming", "+13125550199", NULL, NULL);
    run(NULL, &w1, &r1);
    run(NULL, &w2, &r2);
    assert_string_not_equal(r1.events[0].id, r2.events[0].id);
    assert_string_not_equal(r1.events[0].id, r1.events[1].id);
    assert_string_not_equal(r1.commands[0].command_id, r2.commands[0].command_id);
    msg_result_free(&r1);
    msg_result_free(&r2);
    verifier_webhook_free(&w1);
    verifier_webhook_free(&w2);
}

int main(void)
{
    log_init("flow_test");
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_announce_flow),
        cmocka_unit_test(test_known_number_and_other_voice),
        cmocka_unit_test(test_busy_flow),
        cmocka_unit_test(test_verified),
        cmocka_unit_test(test_policy_sanitised),
        cmocka_unit_test(test_ignored),
        cmocka_unit_test(test_foreign_client_state),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_missing_call_control_id),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
