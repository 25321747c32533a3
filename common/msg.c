/*
 * msg.c - encoders and decoders for the stage-to-stage messages of
 * protocol.md section 2.  Decoders validate every field and copy what they
 * keep, so a decoded struct never points into a ZeroMQ frame.
 */
#include "msg.h"
#include "mp.h"

#include <stdlib.h>
#include <string.h>

static void pack_header(msgpack_packer *pk, size_t nfields, int type)
{
    msgpack_pack_map(pk, nfields + 2);
    mp_pack_kv_u64(pk, "v", MSG_VERSION);
    mp_pack_kv_u64(pk, "t", (uint64_t)type);
}

/* Unpack a whole frame and check envelope and type. */
static int unpack_typed(const void *buf, size_t len, int want, msgpack_unpacked *up, char *err)
{
    if (len > MSG_MAX_BYTES)
        return tg_err(err, "message of %zu bytes exceeds the maximum", len);
    if (mp_unpack_exact(buf, len, up, err) != 0)
        return -1;
    const msgpack_object *root = &up->data;
    uint64_t v, t;
    if (root->type != MSGPACK_OBJECT_MAP)
        goto bad_env;
    if (mp_get_u64(root, "v", &v, err) != 0 || mp_get_u64(root, "t", &t, err) != 0)
        goto fail;
    if (v != MSG_VERSION) {
        tg_err(err, "protocol version %llu, expected %d", (unsigned long long)v, MSG_VERSION);
        goto fail;
    }
    if ((int)t != want) {
        tg_err(err, "message type %llu, expected %d", (unsigned long long)t, want);
        goto fail;
    }
    return 0;
bad_env:
    tg_err(err, "message is not a map");
fail:
    msgpack_unpacked_destroy(up);
    return -1;
}

/*
 * Every encoder writes the envelope first (pack_header): a map whose first
 * entries are "v" and "t", both small integers.  Read them straight from the
 * bytes, so a message is not unpacked twice (here and by its decoder, which
 * checks everything again).  Anything laid out otherwise takes the full
 * unpack below.
 */
static bool peek_header(const uint8_t *p, size_t len, uint64_t *v, uint64_t *t)
{
    size_t i, n;
    if (len >= 1 && (p[0] & 0xf0) == 0x80) {
        n = p[0] & 0x0f;                                /* fixmap */
        i = 1;
    } else if (len >= 3 && p[0] == 0xde) {
        n = (size_t)p[1] << 8 | p[2];                   /* map 16 */
        i = 3;
    } else {
        return false;
    }
    if (n < 2 || len < i + 6 || p[i] != 0xa1 || p[i + 1] != 'v' || p[i + 2] > 0x7f ||
        p[i + 3] != 0xa1 || p[i + 4] != 't' || p[i + 5] > 0x7f)
        return false;
    *v = p[i + 2];
    *t = p[i + 5];
    return true;
}

int msg_type_of(const void *buf, size_t len, int *type, char *err)
{
    msgpack_unpacked up;
    uint64_t v = 0, t = 0;
    if (len > MSG_MAX_BYTES)
        return tg_err(err, "message of %zu bytes exceeds the maximum", len);
    if (peek_header(buf, len, &v, &t)) {
        if (v != MSG_VERSION)
            return tg_err(err, "protocol version %llu, expected %d", (unsigned long long)v, MSG_VERSION);
        *type = (int)t;
        return 0;
    }
    if (mp_unpack_exact(buf, len, &up, err) != 0)
        return -1;
    int rc = -1;
    if (up.data.type != MSGPACK_OBJECT_MAP)
        tg_err(err, "message is not a map");
    else if (mp_get_u64(&up.data, "v", &v, err) == 0 && mp_get_u64(&up.data, "t", &t, err) == 0) {
        if (v != MSG_VERSION)
            tg_err(err, "protocol version %llu, expected %d", (unsigned long long)v, MSG_VERSION);
        else {
            *type = (int)t;
            rc = 0;
        }
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* ---- events ---- */

static void event_pack(msgpack_packer *pk, const struct tg_event *e)
{
    msgpack_pack_map(pk, 9);
    mp_pack_kv_str(pk, "type", e->type);
    mp_pack_kv_str(pk, "actor", e->actor);
    mp_pack_kv_str(pk, "id", e->id);
    mp_pack_kv_str(pk, "webhook_id", e->webhook_id);
    mp_pack_kv_str(pk, "call_control_id", e->call_control_id);
    mp_pack_kv_str(pk, "call_session_id", e->call_session_id);
    mp_pack_kv_str(pk, "from", e->from);
    mp_pack_kv_str(pk, "to", e->to);
    mp_pack_cstr(pk, "data");
    if (e->data && e->data_len)
        msgpack_pack_str_body(pk, e->data, e->data_len);  /* already msgpack */
    else
        msgpack_pack_map(pk, 0);
}

static int event_unpack(const msgpack_object *o, struct tg_event *e, char *err)
{
    memset(e, 0, sizeof *e);
    if (o->type != MSGPACK_OBJECT_MAP)
        return tg_err(err, "event is not a map");
    if (mp_get_str(o, "type", false, &e->type, err) || mp_get_str(o, "actor", false, &e->actor, err) ||
        mp_get_str(o, "id", false, &e->id, err) ||
        mp_get_str(o, "webhook_id", true, &e->webhook_id, err) ||
        mp_get_str(o, "call_control_id", true, &e->call_control_id, err) ||
        mp_get_str(o, "call_session_id", true, &e->call_session_id, err) ||
        mp_get_str(o, "from", true, &e->from, err) || mp_get_str(o, "to", true, &e->to, err))
        goto fail;
    const msgpack_object *data = mp_map_get(o, "data");
    if (!data || data->type != MSGPACK_OBJECT_MAP) {
        tg_err(err, "field 'data': missing or not a map");
        goto fail;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *data);
    e->data = (uint8_t *)sb.data;    /* ownership moves to the event */
    e->data_len = sb.size;
    return 0;
fail:
    tg_event_free(e);
    return -1;
}

void tg_event_free(struct tg_event *e)
{
    if (!e)
        return;
    free(e->type); free(e->actor); free(e->id); free(e->webhook_id);
    free(e->call_control_id); free(e->call_session_id); free(e->from); free(e->to);
    free(e->data);
    memset(e, 0, sizeof *e);
}

static int events_unpack(const msgpack_object *root, struct tg_event **out, size_t *n, char *err)
{
    const msgpack_object *arr = mp_map_get(root, "events");
    *out = NULL;
    *n = 0;
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return tg_err(err, "field 'events': missing or not an array");
    if (arr->via.array.size == 0)
        return 0;
    struct tg_event *ev = xcalloc(arr->via.array.size, sizeof *ev);
    for (uint32_t i = 0; i < arr->via.array.size; i++)
        if (event_unpack(&arr->via.array.ptr[i], &ev[i], err) != 0) {
            for (uint32_t j = 0; j < i; j++)
                tg_event_free(&ev[j]);
            free(ev);
            return -1;
        }
    *out = ev;
    *n = arr->via.array.size;
    return 0;
}

/* ---- commands ---- */

void msg_command_pack(msgpack_packer *pk, const struct tg_command *c)
{
    msg_command_pack_extra(pk, c, 0);
}

void msg_command_pack_extra(msgpack_packer *pk, const struct tg_command *c, size_t extra)
{
    msgpack_pack_map(pk, 9 + extra);
    mp_pack_kv_u64(pk, "okey", c->outbox_key);
    mp_pack_kv_str(pk, "command_id", c->command_id);
    mp_pack_kv_str(pk, "call_control_id", c->call_control_id);
    mp_pack_kv_str(pk, "action", c->action);
    mp_pack_kv_str(pk, "body", c->body);
    mp_pack_kv_str(pk, "webhook_id", c->webhook_id);
    mp_pack_kv_str(pk, "call_session_id", c->call_session_id);
    mp_pack_kv_str(pk, "from", c->from);
    mp_pack_kv_str(pk, "to", c->to);
}

int msg_command_unpack(const msgpack_object *o, struct tg_command *c, char *err)
{
    memset(c, 0, sizeof *c);
    if (o->type != MSGPACK_OBJECT_MAP)
        return tg_err(err, "command is not a map");
    if (mp_get_str(o, "command_id", false, &c->command_id, err) ||
        mp_get_str(o, "call_control_id", false, &c->call_control_id, err) ||
        mp_get_str(o, "action", false, &c->action, err) ||
        mp_get_str(o, "body", false, &c->body, err) ||
        mp_get_str(o, "webhook_id", true, &c->webhook_id, err) ||
        mp_get_str(o, "call_session_id", true, &c->call_session_id, err) ||
        mp_get_str(o, "from", true, &c->from, err) || mp_get_str(o, "to", true, &c->to, err) ||
        mp_get_u64(o, "okey", &c->outbox_key, err)) {
        tg_command_free(c);
        return -1;
    }
    return 0;
}

void tg_command_free(struct tg_command *c)
{
    if (!c)
        return;
    free(c->command_id); free(c->call_control_id); free(c->action); free(c->body);
    free(c->webhook_id); free(c->call_session_id); free(c->from); free(c->to);
    memset(c, 0, sizeof *c);
}

/* ---- WEBHOOK ---- */

void msg_webhook_encode(msgpack_sbuffer *sb, const struct msg_webhook *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 4, MSG_WEBHOOK);
    mp_pack_kv_u64(&pk, "jseq", m->jseq);
    mp_pack_kv_u64(&pk, "recv", m->recv_us);
    mp_pack_kv_u64(&pk, "attempt", m->attempt);
    mp_pack_cstr(&pk, "body");
    msgpack_pack_bin(&pk, m->body_len);
    msgpack_pack_bin_body(&pk, m->body, m->body_len);
}

int msg_webhook_decode(const void *buf, size_t len, struct msg_webhook *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_WEBHOOK, &up, err) != 0)
        return -1;
    const msgpack_object *r = &up.data;
    uint64_t attempt;
    const char *body;
    size_t blen;
    int rc = -1;
    if (mp_get_u64(r, "jseq", &out->jseq, err) == 0 && mp_get_u64(r, "recv", &out->recv_us, err) == 0 &&
        mp_get_u64(r, "attempt", &attempt, err) == 0 && mp_get_bytes(r, "body", &body, &blen, err) == 0) {
        out->attempt = (uint32_t)attempt;
        out->body = xmalloc(blen + 1);
        memcpy(out->body, body, blen);
        out->body[blen] = '\0';       /* convenience for text parsers */
        out->body_len = blen;
        rc = 0;
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

void msg_webhook_free(struct msg_webhook *m)
{
    free(m->body);
    memset(m, 0, sizeof *m);
}

/* ---- RESULT ---- */

void msg_result_encode(msgpack_sbuffer *sb, const struct msg_result *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 5, MSG_RESULT);
    mp_pack_kv_u64(&pk, "jseq", m->jseq);
    mp_pack_kv_str(&pk, "webhook_id", m->webhook_id);
    mp_pack_kv_u64(&pk, "occurred", m->occurred_us);
    mp_pack_cstr(&pk, "events");
    msgpack_pack_array(&pk, m->n_events);
    for (size_t i = 0; i < m->n_events; i++)
        event_pack(&pk, &m->events[i]);
    mp_pack_cstr(&pk, "commands");
    msgpack_pack_array(&pk, m->n_commands);
    for (size_t i = 0; i < m->n_commands; i++)
        msg_command_pack(&pk, &m->commands[i]);
}

int msg_result_decode(const void *buf, size_t len, struct msg_result *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_RESULT, &up, err) != 0)
        return -1;
    const msgpack_object *r = &up.data;
    const msgpack_object *cmds = mp_map_get(r, "commands");
    if (mp_get_u64(r, "jseq", &out->jseq, err) || mp_get_str(r, "webhook_id", false, &out->webhook_id, err) ||
        mp_get_u64(r, "occurred", &out->occurred_us, err) ||
        events_unpack(r, &out->events, &out->n_events, err))
        goto fail;
    if (!cmds || cmds->type != MSGPACK_OBJECT_ARRAY) {
        tg_err(err, "field 'commands': missing or not an array");
        goto fail;
    }
    if (cmds->via.array.size) {
        out->commands = xcalloc(cmds->via.array.size, sizeof *out->commands);
        for (uint32_t i = 0; i < cmds->via.array.size; i++) {
            if (msg_command_unpack(&cmds->via.array.ptr[i], &out->commands[i], err) != 0)
                goto fail;
            out->n_commands = i + 1;
        }
    }
    msgpack_unpacked_destroy(&up);
    return 0;
fail:
    msgpack_unpacked_destroy(&up);
    msg_result_free(out);
    return -1;
}

void msg_result_free(struct msg_result *m)
{
    for (size_t i = 0; i < m->n_events; i++)
        tg_event_free(&m->events[i]);
    for (size_t i = 0; i < m->n_commands; i++)
        tg_command_free(&m->commands[i]);
    free(m->events);
    free(m->commands);
    free(m->webhook_id);
    memset(m, 0, sizeof *m);
}

/* ---- COMMAND ---- */

void msg_command_encode(msgpack_sbuffer *sb, const struct tg_command *c)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 1, MSG_COMMAND);
    mp_pack_cstr(&pk, "command");
    msg_command_pack(&pk, c);
}

int msg_command_decode(const void *buf, size_t len, struct tg_command *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_COMMAND, &up, err) != 0)
        return -1;
    const msgpack_object *c = mp_map_get(&up.data, "command");
    int rc = c ? msg_command_unpack(c, out, err) : tg_err(err, "field 'command': missing");
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* ---- OUTCOME ---- */

void msg_outcome_encode(msgpack_sbuffer *sb, const struct msg_outcome *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 12, MSG_OUTCOME);
    mp_pack_kv_str(&pk, "command_id", m->command_id);
    mp_pack_kv_u64(&pk, "okey", m->outbox_key);
    mp_pack_kv_str(&pk, "action", m->action);
    mp_pack_kv_str(&pk, "call_control_id", m->call_control_id);
    mp_pack_kv_str(&pk, "call_session_id", m->call_session_id);
    mp_pack_kv_str(&pk, "webhook_id", m->webhook_id);
    mp_pack_kv_str(&pk, "from", m->from);
    mp_pack_kv_str(&pk, "to", m->to);
    mp_pack_kv_u64(&pk, "status", m->status);
    mp_pack_kv_bool(&pk, "ok", m->ok);
    mp_pack_kv_u64(&pk, "attempts", m->attempts);
    mp_pack_kv_str(&pk, "detail", m->detail ? m->detail : "");
}

int msg_outcome_decode(const void *buf, size_t len, struct msg_outcome *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_OUTCOME, &up, err) != 0)
        return -1;
    const msgpack_object *r = &up.data;
    uint64_t status, attempts;
    int rc = -1;
    if (!mp_get_str(r, "command_id", false, &out->command_id, err) &&
        !mp_get_u64(r, "okey", &out->outbox_key, err) &&
        !mp_get_str(r, "action", false, &out->action, err) &&
        !mp_get_str(r, "call_control_id", true, &out->call_control_id, err) &&
        !mp_get_str(r, "call_session_id", true, &out->call_session_id, err) &&
        !mp_get_str(r, "webhook_id", true, &out->webhook_id, err) &&
        !mp_get_str(r, "from", true, &out->from, err) && !mp_get_str(r, "to", true, &out->to, err) &&
        !mp_get_u64(r, "status", &status, err) && !mp_get_bool(r, "ok", &out->ok, err) &&
        !mp_get_u64(r, "attempts", &attempts, err) &&
        !mp_get_str(r, "detail", false, &out->detail, err)) {
        out->status = (uint32_t)status;
        out->attempts = (uint32_t)attempts;
        rc = 0;
    }
    msgpack_unpacked_destroy(&up);
    if (rc != 0)
        msg_outcome_free(out);
    return rc;
}

void msg_outcome_free(struct msg_outcome *m)
{
    free(m->command_id); free(m->action); free(m->call_control_id); free(m->call_session_id);
    free(m->webhook_id); free(m->from); free(m->to); free(m->detail);
    memset(m, 0, sizeof *m);
}

/* ---- APPEND ---- */

void msg_append_encode(msgpack_sbuffer *sb, const struct msg_append *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 1, MSG_APPEND);
    mp_pack_cstr(&pk, "events");
    msgpack_pack_array(&pk, m->n_events);
    for (size_t i = 0; i < m->n_events; i++)
        event_pack(&pk, &m->events[i]);
}

int msg_append_decode(const void *buf, size_t len, struct msg_append *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_APPEND, &up, err) != 0)
        return -1;
    int rc = events_unpack(&up.data, &out->events, &out->n_events, err);
    msgpack_unpacked_destroy(&up);
    return rc;
}

void msg_append_free(struct msg_append *m)
{
    for (size_t i = 0; i < m->n_events; i++)
        tg_event_free(&m->events[i]);
    free(m->events);
    memset(m, 0, sizeof *m);
}

/* ---- PROGRESS ---- */

void msg_progress_encode(msgpack_sbuffer *sb, const struct msg_progress *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 2, MSG_PROGRESS);
    mp_pack_kv_u64(&pk, "low", m->low);
    mp_pack_cstr(&pk, "done");
    msgpack_pack_array(&pk, m->n_done);
    for (size_t i = 0; i < m->n_done; i++)
        msgpack_pack_uint64(&pk, m->done[i]);
}

int msg_progress_decode(const void *buf, size_t len, struct msg_progress *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_PROGRESS, &up, err) != 0)
        return -1;
    const msgpack_object *done = mp_map_get(&up.data, "done");
    int rc = -1;
    if (mp_get_u64(&up.data, "low", &out->low, err) != 0)
        goto out;
    if (!done || done->type != MSGPACK_OBJECT_ARRAY) {
        tg_err(err, "field 'done': missing or not an array");
        goto out;
    }
    out->done = xcalloc(done->via.array.size, sizeof *out->done);
    for (uint32_t i = 0; i < done->via.array.size; i++) {
        if (done->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            tg_err(err, "field 'done': not an array of unsigned integers");
            msg_progress_free(out);
            goto out;
        }
        out->done[i] = done->via.array.ptr[i].via.u64;
    }
    out->n_done = done->via.array.size;
    rc = 0;
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

void msg_progress_free(struct msg_progress *m)
{
    free(m->done);
    memset(m, 0, sizeof *m);
}

/* ---- SETTLED ---- */

void msg_settled_encode(msgpack_sbuffer *sb, const struct msg_settled *m)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_header(&pk, 1, MSG_SETTLED);
    mp_pack_kv_u64(&pk, "low", m->low);
}

int msg_settled_decode(const void *buf, size_t len, struct msg_settled *out, char *err)
{
    msgpack_unpacked up;
    memset(out, 0, sizeof *out);
    if (unpack_typed(buf, len, MSG_SETTLED, &up, err) != 0)
        return -1;
    int rc = mp_get_u64(&up.data, "low", &out->low, err);
    msgpack_unpacked_destroy(&up);
    return rc;
}
