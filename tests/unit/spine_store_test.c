/*
 * spine_store_test.c - unit tests for spine/spine_store.c and
 * common/spinedb.c against a temporary data directory: batching, gap-free
 * seqs, de-duplication, outcomes, outbox re-sends, the journal watermark and
 * the verification used by `telctl verify` (hash chain, head record,
 * certificate registry).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <sodium.h>

#include "event.h"
#include "log.h"
#include "mp.h"
#include "../../spine/spine_store.h"
#include "registry.h"
#include "spinedb.h"
#include "tmpdir.h"

#define RESEND_MS 5000

struct fixture {
    struct tmp *tmp;            /* tmp->dir: the spine's data directory */
    struct spine_store *store;
    struct spine_output out;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    char err[ERR_LEN];
    void *t;
    if (tmpdir_setup(&t, "spine_test") != 0)
        return -1;
    f->tmp = t;
    if (spine_store_open(&f->store, f->tmp->dir, "tel.x", RESEND_MS, err) != 0) {
        fprintf(stderr, "open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    spine_store_close(&f->store);
    spine_output_free(&f->out);
    void *t = f->tmp;
    free(f);
    return tmpdir_teardown(&t);
}

static void reopen(struct fixture *f)
{
    char err[ERR_LEN];
    spine_store_close(&f->store);
    assert_null(f->store);
    assert_int_equal(spine_store_open(&f->store, f->tmp->dir, "tel.x", RESEND_MS, err), 0);
}

/* Encode a message and decode it as the spine does. */
static void decode_into(msgpack_sbuffer *sb, struct spine_input *in)
{
    char err[ERR_LEN];
    if (spine_input_decode(sb->data, sb->size, in, err) != 0)
        fail_msg("decode: %s", err);
    msgpack_sbuffer_destroy(sb);
}

/*
 * A RESULT for webhook wh with one event per step in steps (comma separated;
 * event ids event_id(wh, step)) and, when action is not NULL, one command.
 */
static void make_result(struct spine_input *in, uint64_t jseq, const char *wh, const char *steps,
                        const char *action)
{
    struct tg_event ev[8];
    char ids[8][EVENT_ID_LEN], types[8][64], cid[COMMAND_ID_LEN];
    char *list = xstrdup(steps), *save = NULL;
    size_t n = 0;
    msgpack_sbuffer data;
    msgpack_packer pk;
    msgpack_sbuffer_init(&data);
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mp_pack_kv_str(&pk, "webhook", wh);
    for (char *s = strtok_r(list, ",", &save); s && n < 8; s = strtok_r(NULL, ",", &save), n++) {
        event_id(wh, s, ids[n]);
        snprintf(types[n], sizeof types[n], "tel.%s", s);
        ev[n] = (struct tg_event){
            .type = types[n], .actor = "tel.x", .id = ids[n], .webhook_id = (char *)wh,
            .call_control_id = "v3:cc", .from = "+15550001111", .to = "+15550002222",
            .data = (uint8_t *)data.data, .data_len = data.size,
        };
    }
    struct tg_command cmd = {0};
    if (action) {
        command_id_make(wh, action, cid);
        cmd = (struct tg_command){
            .command_id = cid, .call_control_id = "v3:cc", .action = (char *)action,
            .body = "{\"command_id\":\"x\"}", .webhook_id = (char *)wh,
        };
    }
    struct msg_result r = {
        .jseq = jseq, .webhook_id = (char *)wh, .events = ev, .n_events = n,
        .commands = action ? &cmd : NULL, .n_commands = action ? 1 : 0,
    };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msg_result_encode(&sb, &r);
    decode_into(&sb, in);
    msgpack_sbuffer_destroy(&data);
    free(list);
}

/* An outcome for the command of webhook wh queued under outbox key okey
 * (keys count from 1 in queueing order). */
static void make_outcome(struct spine_input *in, const char *wh, const char *action, bool ok, uint64_t okey)
{
    char cid[COMMAND_ID_LEN];
    command_id_make(wh, action, cid);
    struct msg_outcome o = {
        .command_id = cid, .action = (char *)action, .outbox_key = okey, .call_control_id = "v3:cc", .webhook_id = (char *)wh,
        .status = ok ? 200 : 422, .ok = ok, .attempts = 2, .detail = ok ? "" : "Call has already ended",
    };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msg_outcome_encode(&sb, &o);
    decode_into(&sb, in);
}

/* Apply inputs (freeing them) after resetting the output; expects success. */
static void apply(struct fixture *f, struct spine_input *in, size_t n)
{
    char err[ERR_LEN];
    spine_output_reset(&f->out);
    int rc = spine_store_apply(f->store, in, n, &f->out, err);
    for (size_t i = 0; i < n; i++)
        spine_input_free(&in[i]);
    if (rc != 0)
        fail_msg("apply: %s", err);
}

static void assert_chain_ok(struct fixture *f, uint64_t n_events)
{
    struct spinedb_verify_report rep;
    struct spinedb_head head;
    char err[ERR_LEN];
    int rc = spinedb_verify(spine_store_db(f->store), &rep, err);
    if (rc != 0)
        fail_msg("verify: %d at %llu: %s", rc, (unsigned long long)rep.bad_seq, err);
    assert_int_equal(rep.n_events, n_events);
    spine_store_head(f->store, &head);
    assert_int_equal(head.seq, n_events);
    assert_memory_equal(head.hash, rep.head, EVENT_HASH_BYTES);
}

static void test_batch_gap_free(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[3];
    make_result(&in[0], 1, "wh-a", "inbound,decision", "answer");
    make_result(&in[1], 2, "wh-b", "inbound,decision", "answer");
    make_result(&in[2], 3, "wh-c", "answered", NULL);
    apply(f, in, 3);
    assert_int_equal(f->out.n_events, 5);
    assert_int_equal(f->out.n_commands, 2);
    for (size_t i = 0; i < f->out.n_events; i++)
        assert_int_equal(f->out.events[i].seq, i + 1);
    assert_string_equal(f->out.events[0].type, "tel.inbound");
    assert_string_equal(f->out.events[4].type, "tel.answered");
    /* Each published event carries the previous one's hash. */
    for (size_t i = 1; i < f->out.n_events; i++) {
        struct event_view v;
        char err[ERR_LEN];
        assert_int_equal(event_canon_parse(f->out.events[i].canon, f->out.events[i].len, &v, err), 0);
        assert_memory_equal(v.prev_hash, f->out.events[i - 1].hash, EVENT_HASH_BYTES);
    }
    assert_int_equal(spine_store_outbox_count(f->store), 2);
    assert_chain_ok(f, 5);

    /* A second batch continues the sequence, also after a restart. */
    reopen(f);
    make_result(&in[0], 4, "wh-d", "inbound", NULL);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 1);
    assert_int_equal(f->out.events[0].seq, 6);
    assert_chain_ok(f, 6);
}

static void test_duplicate_webhook(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[2];
    make_result(&in[0], 1, "wh-a", "inbound,decision", "answer");
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 2);

    /* Re-delivery (new jseq) and re-processing (same jseq), also within one
     * batch: nothing is added, the jseqs are marked done. */
    make_result(&in[0], 2, "wh-a", "inbound,decision", "answer");
    make_result(&in[1], 1, "wh-a", "inbound,decision", "answer");
    apply(f, in, 2);
    assert_int_equal(f->out.n_events, 0);
    assert_int_equal(f->out.n_commands, 0);
    assert_int_equal(spine_store_outbox_count(f->store), 1);

    struct msg_progress p;
    spine_store_progress(f->store, &p, SPINE_PROGRESS_DONE_MAX);
    assert_int_equal(p.low, 2);
    assert_int_equal(p.n_done, 0);
    msg_progress_free(&p);

    /* Same webhook twice inside one batch. */
    make_result(&in[0], 3, "wh-b", "inbound", NULL);
    make_result(&in[1], 4, "wh-b", "inbound", NULL);
    apply(f, in, 2);
    assert_int_equal(f->out.n_events, 1);
    assert_chain_ok(f, 3);
}

/* SPEC 6.2 de-duplicates on data.id alone: a copy that says another
 * occurred_at adds nothing either, in the same batch, in a later one and
 * after a restart (the set of recent ids is reloaded from the index). */
static void test_duplicate_webhook_other_time(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[2];
    make_result(&in[0], 1, "wh-t", "inbound,decision", "answer");
    in[0].u.result.occurred_us = 1700000000000000u;
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 2);
    assert_int_equal(f->out.n_commands, 1);

    make_result(&in[0], 2, "wh-t", "inbound,decision", "answer");
    in[0].u.result.occurred_us = 1700000000100000u;
    make_result(&in[1], 3, "wh-t", "inbound,decision", "answer");   /* occurred_at missing */
    apply(f, in, 2);
    assert_int_equal(f->out.n_events, 0);
    assert_int_equal(f->out.n_commands, 0);

    /* both copies of a new webhook in one batch */
    make_result(&in[0], 4, "wh-u", "inbound", NULL);
    in[0].u.result.occurred_us = 1700000001000000u;
    make_result(&in[1], 5, "wh-u", "inbound", NULL);
    in[1].u.result.occurred_us = 1700000002000000u;
    apply(f, in, 2);
    assert_int_equal(f->out.n_events, 1);

    reopen(f);
    make_result(&in[0], 6, "wh-t", "inbound,decision", "answer");
    in[0].u.result.occurred_us = 1700000005000000u;
    make_result(&in[1], 7, "wh-v", "inbound", NULL);
    apply(f, in, 2);
    assert_int_equal(f->out.n_events, 1);       /* wh-v only */
    assert_int_equal(spine_store_outbox_count(f->store), 1);

    struct msg_progress p;
    spine_store_progress(f->store, &p, SPINE_PROGRESS_DONE_MAX);
    assert_int_equal(p.low, 7);                 /* every copy's jseq is done */
    msg_progress_free(&p);
    assert_chain_ok(f, 4);
}

/* Webhook events are de-duplicated by their webhook (test_duplicate_webhook);
 * operator events (APPEND) by their id. */
static void test_duplicate_event_id(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[1];
    msgpack_sbuffer sb;
    struct tg_event ev[2] = {
        {.type = "ns.note", .actor = "tel.x", .id = "serial-1-issued"},
        {.type = "ns.note", .actor = "tel.x", .id = "serial-2-issued"},
    };
    struct msg_append a = {.events = ev, .n_events = 2};
    msgpack_sbuffer_init(&sb);
    msg_append_encode(&sb, &a);
    decode_into(&sb, &in[0]);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 2);

    /* existing id skipped, new id appended */
    ev[0].id = "serial-3-issued";
    ev[1].id = "serial-1-issued";
    msgpack_sbuffer_init(&sb);
    msg_append_encode(&sb, &a);
    decode_into(&sb, &in[0]);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 1);
    assert_int_equal(f->out.events[0].seq, 3);
    assert_string_equal(f->out.events[0].type, "ns.note");
    assert_chain_ok(f, 3);
}

static void test_outcome(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[1];
    char err[ERR_LEN], *json, id[EVENT_ID_LEN], cid[COMMAND_ID_LEN], needle[256];
    make_result(&in[0], 1, "wh-a", "inbound,decision", "answer");
    apply(f, in, 1);
    assert_int_equal(spine_store_outbox_count(f->store), 1);

    /* An outcome naming another outbox entry, or another command, is ignored. */
    make_outcome(&in[0], "wh-a", "answer", false, 99);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 0);
    make_outcome(&in[0], "wh-b", "answer", false, 1);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 0);
    assert_int_equal(spine_store_outbox_count(f->store), 1);

    make_outcome(&in[0], "wh-a", "answer", false, 1);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 1);
    assert_string_equal(f->out.events[0].type, "tel.command");
    assert_int_equal(spine_store_outbox_count(f->store), 0);
    assert_int_equal(event_to_json(f->out.events[0].canon, f->out.events[0].len, f->out.events[0].hash,
                                   &json, err), 0);
    command_id_make("wh-a", "answer", cid);
    event_id(cid, "outcome", id);
    snprintf(needle, sizeof needle, "\"id\":\"%s\"", id);
    assert_non_null(strstr(json, needle));
    assert_non_null(strstr(json, "\"actor\":\"tel.x\""));
    assert_non_null(strstr(json, "\"webhook_id\":\"wh-a\""));
    snprintf(needle, sizeof needle, "\"data\":{\"action\":\"answer\",\"command_id\":\"%s\","
             "\"status\":422,\"ok\":false,\"attempts\":2,\"detail\":\"Call has already ended\"}", cid);
    assert_non_null(strstr(json, needle));
    free(json);

    /* The same outcome again adds nothing. */
    make_outcome(&in[0], "wh-a", "answer", false, 1);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 0);
    assert_chain_ok(f, 3);
}

/* A speak that failed for good is followed by a hangup, queued once; a
 * speak that worked, or another failed command, is not. */
static void test_failed_speak_hangs_up(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[1];
    char speak[COMMAND_ID_LEN], hangup[COMMAND_ID_LEN], body[128];

    make_result(&in[0], 1, "wh-s", "call_answered", "speak");
    apply(f, in, 1);
    make_result(&in[0], 2, "wh-t", "call_answered", "speak");
    apply(f, in, 1);
    make_result(&in[0], 3, "wh-u", "inbound,decision", "answer");
    apply(f, in, 1);
    assert_int_equal(spine_store_outbox_count(f->store), 3);

    /* wh-s's speak fails: the outcome is recorded and a hangup is queued */
    make_outcome(&in[0], "wh-s", "speak", false, 1);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 1);
    assert_int_equal(f->out.n_commands, 1);
    command_id_make("wh-s", "speak", speak);
    command_id_make(speak, "hangup", hangup);
    const struct tg_command *h = &f->out.commands[0];
    assert_string_equal(h->action, "hangup");
    assert_string_equal(h->command_id, hangup);
    assert_string_equal(h->call_control_id, "v3:cc");
    assert_string_equal(h->webhook_id, "wh-s");
    snprintf(body, sizeof body, "{\"command_id\":\"%s\"}", hangup);
    assert_string_equal(h->body, body);
    assert_int_equal(h->outbox_key, 4);
    assert_int_equal(spine_store_outbox_count(f->store), 3);   /* speak out, hangup in */

    /* the same outcome again adds nothing, not a second hangup */
    make_outcome(&in[0], "wh-s", "speak", false, 1);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 0);
    assert_int_equal(f->out.n_commands, 0);

    /* a speak that worked, and a failed answer: no hangup */
    make_outcome(&in[0], "wh-t", "speak", true, 2);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 1);
    assert_int_equal(f->out.n_commands, 0);
    make_outcome(&in[0], "wh-u", "answer", false, 3);
    apply(f, in, 1);
    assert_int_equal(f->out.n_events, 1);
    assert_int_equal(f->out.n_commands, 0);
    assert_int_equal(spine_store_outbox_count(f->store), 1);   /* the hangup */
}

static void test_outbox_resend(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[1];
    struct tg_command *cmds;
    size_t n;
    char err[ERR_LEN], cid[COMMAND_ID_LEN];
    uint64_t t0 = tg_now_ms();

    make_result(&in[0], 1, "wh-a", "inbound", "answer");
    apply(f, in, 1);
    assert_int_equal(f->out.n_commands, 1);
    command_id_make("wh-a", "answer", cid);
    assert_string_equal(f->out.commands[0].command_id, cid);
    assert_int_equal(f->out.commands[0].outbox_key, 1);   /* what the actuator echoes */

    assert_int_equal(spine_store_outbox_due(f->store, t0, 100, &cmds, &n, err), 0);
    assert_int_equal(n, 0);
    free(cmds);

    uint64_t t1 = t0 + RESEND_MS + 1000;
    assert_int_equal(spine_store_outbox_due(f->store, t1, 100, &cmds, &n, err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(cmds[0].command_id, cid);
    assert_int_equal(cmds[0].outbox_key, 1);
    assert_string_equal(cmds[0].action, "answer");
    assert_string_equal(cmds[0].body, "{\"command_id\":\"x\"}");
    assert_string_equal(cmds[0].webhook_id, "wh-a");
    assert_null(cmds[0].from);
    tg_command_free(&cmds[0]);
    free(cmds);

    /* Just re-sent: not due again until another resend interval passed. */
    assert_int_equal(spine_store_outbox_due(f->store, t1 + 10, 100, &cmds, &n, err), 0);
    assert_int_equal(n, 0);
    free(cmds);
    assert_int_equal(spine_store_outbox_due(f->store, t1 + RESEND_MS, 100, &cmds, &n, err), 0);
    assert_int_equal(n, 1);
    tg_command_free(&cmds[0]);
    free(cmds);

    /* Survives a restart (queue time is on disk). */
    reopen(f);
    assert_int_equal(spine_store_outbox_due(f->store, t1, 100, &cmds, &n, err), 0);
    assert_int_equal(n, 1);
    tg_command_free(&cmds[0]);
    free(cmds);

    /* An outcome ends the re-sending. */
    make_outcome(&in[0], "wh-a", "answer", true, 1);
    apply(f, in, 1);
    assert_int_equal(spine_store_outbox_due(f->store, t1 + 10 * RESEND_MS, 100, &cmds, &n, err), 0);
    assert_int_equal(n, 0);
    free(cmds);
}

static void assert_progress(struct fixture *f, uint64_t low, const uint64_t *done, size_t n_done)
{
    struct msg_progress p;
    spine_store_progress(f->store, &p, SPINE_PROGRESS_DONE_MAX);
    assert_int_equal(p.low, low);
    assert_int_equal(p.n_done, n_done);
    for (size_t i = 0; i < n_done; i++)
        assert_int_equal(p.done[i], done[i]);
    msg_progress_free(&p);
}

static void test_watermark(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[3];
    assert_progress(f, 0, NULL, 0);
    make_result(&in[0], 3, "wh-3", "inbound", NULL);
    make_result(&in[1], 1, "wh-1", "inbound", NULL);
    make_result(&in[2], 5, "wh-5", "inbound", NULL);
    apply(f, in, 3);
    assert_progress(f, 1, (const uint64_t[]){3, 5}, 2);

    make_result(&in[0], 2, "wh-2", "inbound", NULL);
    apply(f, in, 1);
    assert_progress(f, 3, (const uint64_t[]){5}, 1);

    reopen(f);
    assert_progress(f, 3, (const uint64_t[]){5}, 1);
    make_result(&in[0], 4, "wh-4", "inbound", NULL);
    apply(f, in, 1);
    assert_progress(f, 5, NULL, 0);

    /* The reported list is bounded. */
    struct msg_progress p;
    for (uint64_t j = 10; j < 20; j++) {
        char wh[16];
        snprintf(wh, sizeof wh, "wh-%llu", (unsigned long long)j);
        make_result(&in[0], j, wh, "inbound", NULL);
        apply(f, in, 1);
    }
    spine_store_progress(f->store, &p, 4);
    assert_int_equal(p.low, 5);
    assert_int_equal(p.n_done, 4);
    assert_int_equal(p.done[0], 10);
    assert_int_equal(p.done[3], 13);
    msg_progress_free(&p);
}

static void make_settled(struct spine_input *in, uint64_t low)
{
    memset(in, 0, sizeof *in);
    in->type = MSG_SETTLED;
    in->u.settled.low = low;
}

static size_t jseq_marks(struct fixture *f)
{
    MDB_txn *txn;
    MDB_stat st;
    struct spinedb *db = spine_store_db(f->store);
    assert_int_equal(mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_stat(txn, db->jseq, &st), 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

/* Skipped jseqs (an ingress restart or failed sync) would hold the watermark
 * back forever; the ingress's SETTLED moves it past them. */
static void test_watermark_settled(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[2];
    make_result(&in[0], 1, "wh-1", "inbound", NULL);
    make_result(&in[1], 2, "wh-2", "inbound", NULL);
    apply(f, in, 2);
    make_result(&in[0], 8195, "wh-8195", "inbound", NULL);
    make_result(&in[1], 8197, "wh-8197", "inbound", NULL);
    apply(f, in, 2);
    assert_progress(f, 2, (const uint64_t[]){8195, 8197}, 2);
    assert_int_equal(jseq_marks(f), 4);

    make_settled(&in[0], 8195);
    apply(f, in, 1);
    assert_progress(f, 8195, (const uint64_t[]){8197}, 1);
    assert_int_equal(jseq_marks(f), 1);         /* marks <= 8195 pruned */

    /* A lower or repeated mark changes nothing; the mark survives a restart. */
    make_settled(&in[0], 100);
    apply(f, in, 1);
    reopen(f);
    assert_progress(f, 8195, (const uint64_t[]){8197}, 1);
    make_result(&in[0], 8196, "wh-8196", "inbound", NULL);
    apply(f, in, 1);
    assert_progress(f, 8197, NULL, 0);

    /* A re-published record below the mark is still acknowledged. */
    struct spine_output out = {0};
    char err[ERR_LEN];
    make_result(&in[0], 2, "wh-2", "inbound", NULL);
    assert_int_equal(spine_store_apply(f->store, in, 1, &out, err), 0);
    assert_int_equal(out.n_acked, 1);
    assert_int_equal(out.acked[0], 2);
    spine_input_free(&in[0]);
    spine_output_free(&out);
    assert_progress(f, 8197, NULL, 0);
}

/* What the spine relies on to skip its own meta sync under load: a commit
 * is durable once a later commit wrote anything, or after a sync. */
static void test_durable_after_next_commit(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[1];
    char err[ERR_LEN];
    uint64_t c0 = spine_store_last_commit(f->store);
    assert_true(spine_store_durable(f->store, c0));        /* synced at open */

    make_result(&in[0], 1, "wh-1", "inbound", NULL);
    apply(f, in, 1);
    uint64_t c1 = spine_store_last_commit(f->store);
    assert_true(c1 > c0);
    assert_false(spine_store_durable(f->store, c1));

    make_result(&in[0], 2, "wh-2", "inbound", NULL);
    apply(f, in, 1);
    uint64_t c2 = spine_store_last_commit(f->store);
    assert_true(c2 > c1);
    assert_true(spine_store_durable(f->store, c1));        /* c2's data sync covered it */
    assert_false(spine_store_durable(f->store, c2));

    /* A repeat writes nothing: no commit, so nothing new is durable. */
    make_result(&in[0], 2, "wh-2", "inbound", NULL);
    apply(f, in, 1);
    assert_int_equal(spine_store_last_commit(f->store), c2);
    assert_false(spine_store_durable(f->store, c2));

    assert_int_equal(spine_store_sync(f->store, err), 0);
    assert_true(spine_store_durable(f->store, c2));

    /* A reopened store counts everything on disk as durable (it syncs). */
    make_result(&in[0], 3, "wh-3", "inbound", NULL);
    apply(f, in, 1);
    uint64_t c3 = spine_store_last_commit(f->store);
    assert_false(spine_store_durable(f->store, c3));
    reopen(f);
    assert_int_equal(spine_store_last_commit(f->store), c3);
    assert_true(spine_store_durable(f->store, c3));
}

/* Resident kB of this process's mapping of the spine's data.mdb. */
static long map_rss_kb(void)
{
    char line[512];
    long kb = -1;
    bool in_map = false;
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n > 9 && strcmp(line + n - 10, "/data.mdb\n") == 0)
            in_map = true;
        else if (in_map && sscanf(line, "Rss: %ld kB", &kb) == 1)
            break;
    }
    fclose(f);
    return kb;
}

/* spinedb_unmap_pages takes the map's pages out of the RSS, and reads after
 * it still see every byte (the pages come back from the page cache). */
static void test_unmap_pages(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[64];
    char wh[32];
    for (unsigned b = 0; b < 40; b++) {
        for (unsigned i = 0; i < 64; i++) {
            snprintf(wh, sizeof wh, "wh-u%u-%u", b, i);
            make_result(&in[i], 0, wh, "inbound,rejected,answer", "answer");
        }
        apply(f, in, 64);
    }
    assert_chain_ok(f, 40 * 64 * 3);            /* reads every event through the map */
    long before = map_rss_kb();
    assert_true(before > 1024);
    spinedb_unmap_pages(spine_store_db(f->store));
    long after = map_rss_kb();
    assert_true(after >= 0 && after < before / 8);
    assert_chain_ok(f, 40 * 64 * 3);
    spinedb_unmap_pages(NULL);                  /* no database: nothing to do */
}

/* Bytes of the data file in use (up to LMDB's last page) and its size. */
static void data_file(struct spinedb *db, uint64_t *used, uint64_t *size, int *fd)
{
    MDB_envinfo info;
    MDB_stat ms;
    struct stat st;
    assert_int_equal(mdb_env_get_fd(db->env, fd), 0);
    assert_int_equal(mdb_env_info(db->env, &info), 0);
    assert_int_equal(mdb_env_stat(db->env, &ms), 0);
    assert_int_equal(fstat(*fd, &st), 0);
    *used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
    *size = (uint64_t)st.st_size;
}

/* After each commit the spine keeps zeros written past LMDB's last page;
 * LMDB's later pages go over them, and everything reads back whole, also
 * after a restart. */
static void test_prefill(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[64];
    char wh[32];
    uint64_t used, size;
    int fd;
    uint64_t first_size = 0;
    for (unsigned b = 0; b < 40; b++) {
        for (unsigned i = 0; i < 64; i++) {
            snprintf(wh, sizeof wh, "wh-p%u-%u", b, i);
            make_result(&in[i], 0, wh, "inbound,rejected,answer", "answer");
        }
        apply(f, in, 64);
        data_file(spine_store_db(f->store), &used, &size, &fd);
        assert_true(size >= used + TG_ZEROS_AHEAD / 2);
        assert_true(size <= used + TG_ZEROS_AHEAD + TG_ZEROS_AHEAD / 2);
        if (b == 0)
            first_size = size;
        /* what lies past the last page is zeros */
        static uint8_t buf[2 * TG_ZEROS_AHEAD];
        ssize_t k = pread(fd, buf, size - used, (off_t)used);
        assert_int_equal(k, (ssize_t)(size - used));
        for (ssize_t i = 0; i < k; i++)
            if (buf[i])
                fail_msg("byte %llu past the last page is %u",
                         (unsigned long long)(used + (uint64_t)i), buf[i]);
    }
    assert_true(used > first_size);             /* the log grew over the zeros */
    assert_chain_ok(f, 40 * 64 * 3);
    reopen(f);
    assert_chain_ok(f, 40 * 64 * 3);

    /* a reader never writes */
    char err[ERR_LEN];
    struct spinedb *ro = NULL;
    data_file(spine_store_db(f->store), &used, &size, &fd);
    assert_int_equal(spinedb_open(&ro, f->tmp->dir, true, err), 0);
    spinedb_prefill(ro);
    spinedb_close(&ro);
    uint64_t size2;
    data_file(spine_store_db(f->store), &used, &size2, &fd);
    assert_int_equal(size2, size);
    spinedb_prefill(NULL);
}

/* Rewrite event seq's stored value with byte off flipped. */
static void tamper(const char *dir, uint64_t seq, size_t off)
{
    struct spinedb *db;
    MDB_txn *txn;
    char err[ERR_LEN];
    uint8_t kb[8];
    assert_int_equal(spinedb_open(&db, dir, false, err), 0);
    assert_int_equal(mdb_txn_begin(db->env, NULL, 0, &txn), 0);
    spinedb_u64_put(seq, kb);
    MDB_val k = {sizeof kb, kb}, v;
    assert_int_equal(mdb_get(txn, db->events, &k, &v), 0);
    assert_true(off < v.mv_size);
    uint8_t *copy = xmalloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[off] ^= 0x01;
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_put(txn, db->events, &k, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    free(copy);
    spinedb_close(&db);
}

static int verify_dir(const char *dir, struct spinedb_verify_report *rep, char *err)
{
    struct spinedb *db;
    assert_int_equal(spinedb_open(&db, dir, true, err), 0);
    int rc = spinedb_verify(db, rep, err);
    spinedb_close(&db);
    return rc;
}

static void build_chain(struct fixture *f)
{
    struct spine_input in[2];
    make_result(&in[0], 1, "wh-a", "inbound,decision", "answer");
    make_result(&in[1], 2, "wh-b", "inbound,decision", NULL);
    apply(f, in, 2);
    assert_chain_ok(f, 4);
    spine_store_close(&f->store);
}

static void test_tamper_content(void **state)
{
    struct fixture *f = *state;
    struct spinedb_verify_report rep;
    char err[ERR_LEN];
    build_chain(f);
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 0);
    assert_int_equal(rep.n_events, 4);
    tamper(f->tmp->dir, 3, EVENT_HASH_BYTES + 40);     /* a byte of the canonical event */
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 1);
    assert_int_equal(rep.bad_seq, 3);
    assert_int_equal(rep.n_events, 2);
    reopen(f);
}

static void test_tamper_hash(void **state)
{
    struct fixture *f = *state;
    struct spinedb_verify_report rep;
    char err[ERR_LEN];
    build_chain(f);
    tamper(f->tmp->dir, 2, 5);                         /* a byte of the stored hash */
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 1);
    assert_int_equal(rep.bad_seq, 2);
    reopen(f);
}

static void test_truncated_tail(void **state)
{
    struct fixture *f = *state;
    struct spinedb_verify_report rep;
    struct spinedb *db;
    MDB_txn *txn;
    char err[ERR_LEN];
    uint8_t kb[8];
    build_chain(f);
    assert_int_equal(spinedb_open(&db, f->tmp->dir, false, err), 0);
    assert_int_equal(mdb_txn_begin(db->env, NULL, 0, &txn), 0);
    spinedb_u64_put(4, kb);
    MDB_val k = {sizeof kb, kb};
    assert_int_equal(mdb_del(txn, db->events, &k, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    spinedb_close(&db);
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 1);
    assert_int_equal(rep.bad_seq, 4);
    reopen(f);
}

static void test_readonly_missing_is_empty(void **state)
{
    struct fixture *f = *state;
    struct spinedb_verify_report rep;
    struct spinedb *db;
    char err[ERR_LEN], *missing = xasprintf("%s/nothing-here", f->tmp->dir);
    assert_int_equal(spinedb_open(&db, missing, true, err), 0);
    assert_null(db->env);
    assert_int_equal(spinedb_verify(db, &rep, err), 0);
    assert_int_equal(rep.n_events, 0);
    spinedb_close(&db);
    assert_null(db);
    free(missing);

    /* Created by the spine but still empty. */
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 0);
    assert_int_equal(rep.n_events, 0);
}

static void test_bad_input(void **state)
{
    struct fixture *f = *state;
    struct spine_input in[3];
    char err[ERR_LEN];
    msgpack_sbuffer sb;

    assert_int_equal(spine_input_decode("\x81\xa1v\x01", 4, &in[0], err), -1);
    assert_int_equal(spine_input_decode("\xc1", 1, &in[0], err), -1);
    struct msg_webhook w = {.jseq = 1, .attempt = 1, .body = (uint8_t *)"{}", .body_len = 2};
    msgpack_sbuffer_init(&sb);
    msg_webhook_encode(&sb, &w);
    assert_int_equal(spine_input_decode(sb.data, sb.size, &in[0], err), -1);
    msgpack_sbuffer_destroy(&sb);

    /* An event type longer than the canonical parser accepts. */
    char longtype[200];
    memset(longtype, 'x', sizeof longtype - 1);
    longtype[sizeof longtype - 1] = '\0';
    struct tg_event ev = {.type = longtype, .actor = "tel.x", .id = "id-1"};
    struct msg_append a = {.events = &ev, .n_events = 1};
    msgpack_sbuffer_init(&sb);
    msg_append_encode(&sb, &a);
    assert_int_equal(spine_input_decode(sb.data, sb.size, &in[0], err), -1);
    msgpack_sbuffer_destroy(&sb);

    /* A message the database refuses (empty key) inside a batch: the batch
     * is retried one by one, the others commit, the bad one is dropped. */
    make_result(&in[0], 1, "wh-a", "inbound", NULL);
    make_result(&in[2], 2, "wh-b", "inbound", NULL);
    in[1] = (struct spine_input){.type = MSG_APPEND};
    in[1].u.append.n_events = 1;
    in[1].u.append.events = xcalloc(1, sizeof(struct tg_event));
    in[1].u.append.events[0] = (struct tg_event){
        .type = xstrdup("ns.cert_issued"), .actor = xstrdup("tel.x"), .id = xstrdup(""),
    };
    spine_output_reset(&f->out);
    assert_int_equal(spine_store_apply(f->store, in, 3, &f->out, err), -1);
    for (size_t i = 0; i < 3; i++)
        spine_input_free(&in[i]);
    assert_int_equal(f->out.n_events, 2);
    assert_int_equal(f->out.events[0].seq, 1);
    assert_int_equal(f->out.events[1].seq, 2);
    assert_chain_ok(f, 2);
    assert_progress(f, 2, NULL, 0);
}

/* ---- verify: the head record, and the certificate registry against the events ---- */

/* Open the database for tampering: a write transaction the caller ends with
 * tamper_commit. */
static MDB_txn *tamper_begin(const char *dir, struct spinedb **db)
{
    MDB_txn *txn;
    char err[ERR_LEN];
    assert_int_equal(spinedb_open(db, dir, false, err), 0);
    assert_int_equal(mdb_txn_begin((*db)->env, NULL, 0, &txn), 0);
    return txn;
}

static void tamper_commit(struct spinedb **db, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    spinedb_close(db);
}

/* Expect verify to find a failure of kind what, at bad_seq, with needle in
 * its message. */
static void assert_verify_fails(struct fixture *f, enum spinedb_verify_failure what, uint64_t bad_seq,
                                const char *needle)
{
    struct spinedb_verify_report rep;
    char err[ERR_LEN];
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 1);
    if (rep.failure != what || rep.bad_seq != bad_seq || !strstr(err, needle))
        fail_msg("verify: failure %d at seq %llu: %s (expected %d at %llu, saying '%s')", rep.failure,
                 (unsigned long long)rep.bad_seq, err, what, (unsigned long long)bad_seq, needle);
}

#define PHONE_1 "+15550000001"
#define PHONE_2 "+15550000002"
#define PHONE_3 "+15550000003"
#define SERIAL(n) "000000000000000" #n

/* A certificate with serial SERIAL(n) binding phone_a and phone_b (NULL:
 * none), signed by a fresh issuer key. */
static void make_cert(unsigned n, const char *phone_a, const char *phone_b, struct cert_blob *b)
{
    uint8_t pk[CERT_PK_BYTES], sk[CERT_SK_BYTES];
    struct cert c = {.not_before = 1700000000, .not_after = 1900000000};
    char err[ERR_LEN];
    crypto_sign_keypair(pk, sk);
    strcpy(c.namespace_, "alice.x");
    memcpy(c.holder_pk, pk, CERT_PK_BYTES);
    snprintf(c.serial, sizeof c.serial, "%016x", n);
    for (const char *p = phone_a; p && c.n_phones < 2; p = c.n_phones == 1 ? phone_b : NULL)
        strcpy(c.phones[c.n_phones++], p);
    cert_key_id(pk, c.issuer_id);
    assert_int_equal(cert_issue(&c, sk, b, err), 0);
}

/* Append one operator event (APPEND) of type with event id id; data: the
 * serial, and the certificate (issued) or revoked_at (revoked, 0: none).
 * Returns what spine_store_apply returns. */
static int append_ns(struct fixture *f, const char *type, const char *id, const char *serial,
                     const struct cert_blob *b, uint64_t revoked_at)
{
    msgpack_sbuffer data, sb;
    msgpack_packer pk;
    struct spine_input in;
    char err[ERR_LEN];
    msgpack_sbuffer_init(&data);
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, b || revoked_at ? 2 : 1);
    mp_pack_kv_str(&pk, "serial", serial);
    if (b) {
        char *text = tg_b64_encode(b->bytes, b->len);
        mp_pack_kv_str(&pk, "cert", text);
        free(text);
    } else if (revoked_at) {
        mp_pack_kv_u64(&pk, "revoked_at", revoked_at);
    }
    struct tg_event ev = {.type = (char *)type, .actor = "tel.x", .id = (char *)id,
                          .data = (uint8_t *)data.data, .data_len = data.size};
    struct msg_append a = {.events = &ev, .n_events = 1};
    msgpack_sbuffer_init(&sb);
    msg_append_encode(&sb, &a);
    decode_into(&sb, &in);
    msgpack_sbuffer_destroy(&data);
    spine_output_reset(&f->out);
    int rc = spine_store_apply(f->store, &in, 1, &f->out, err);
    spine_input_free(&in);
    return rc;
}

/* The certificates of build_registry. */
static struct cert_blob cert_a, cert_a2, cert_b, cert_c, cert_d, cert_e;

/*
 * A log with issued and revoked certificates between webhook events, and
 * the cases of registry_apply_event:
 *   seq 1-2   webhook events
 *   seq 3     A issued (SERIAL(1), PHONE_1)
 *   seq 4     B issued (SERIAL(2), PHONE_1, PHONE_2)
 *   seq 5     A revoked, revoked_at 1800000000
 *   seq 6     A revoked again, revoked_at 1800000099: no change
 *   seq 7     A2 issued under A's serial (PHONE_3): no change, A stays
 *   (refused) D revoked before it is issued: not appended
 *   seq 8     C issued (SERIAL(3), PHONE_2)
 *   seq 9     C revoked without revoked_at: the spine's clock
 *   seq 10    D issued (SERIAL(4), no phone): not revoked
 *   seq 11-12 webhook events
 * The store is closed afterwards.
 */
static void build_registry(struct fixture *f)
{
    struct spine_input in[1];
    make_cert(1, PHONE_1, NULL, &cert_a);
    make_cert(1, PHONE_3, NULL, &cert_a2);
    make_cert(2, PHONE_1, PHONE_2, &cert_b);
    make_cert(3, PHONE_2, NULL, &cert_c);
    make_cert(4, NULL, NULL, &cert_d);
    make_cert(5, PHONE_3, NULL, &cert_e);             /* never issued */
    make_result(&in[0], 1, "wh-a", "inbound,decision", NULL);
    apply(f, in, 1);
    assert_int_equal(append_ns(f, "ns.cert_issued", "a-issued", SERIAL(1), &cert_a, 0), 0);
    assert_int_equal(append_ns(f, "ns.cert_issued", "b-issued", SERIAL(2), &cert_b, 0), 0);
    assert_int_equal(append_ns(f, "ns.cert_revoked", "a-revoked", SERIAL(1), NULL, 1800000000), 0);
    assert_int_equal(append_ns(f, "ns.cert_revoked", "a-revoked-2", SERIAL(1), NULL, 1800000099), 0);
    assert_int_equal(append_ns(f, "ns.cert_issued", "a-reissued", SERIAL(1), &cert_a2, 0), 0);
    assert_int_equal(append_ns(f, "ns.cert_revoked", "d-revoked", SERIAL(4), NULL, 1800000000), -1);
    assert_int_equal(append_ns(f, "ns.cert_issued", "c-issued", SERIAL(3), &cert_c, 0), 0);
    assert_int_equal(append_ns(f, "ns.cert_revoked", "c-revoked", SERIAL(3), NULL, 0), 0);
    assert_int_equal(append_ns(f, "ns.cert_issued", "d-issued", SERIAL(4), &cert_d, 0), 0);
    make_result(&in[0], 2, "wh-b", "inbound,decision", NULL);
    apply(f, in, 1);
    assert_chain_ok(f, 12);
    spine_store_close(&f->store);
}

/* Write the certs record of serial as the spine would (blob NULL: delete it). */
static void put_cert(const char *dir, const char *serial, const struct cert_blob *b, bool revoked,
                     uint64_t revoked_at)
{
    struct spinedb *db;
    MDB_txn *txn = tamper_begin(dir, &db);
    MDB_val k = {strlen(serial), (void *)serial};
    if (!b) {
        assert_int_equal(mdb_del(txn, db->certs, &k, NULL), 0);
    } else {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        mp_pack_cstr(&pk, "cert");
        msgpack_pack_bin(&pk, b->len);
        msgpack_pack_bin_body(&pk, b->bytes, b->len);
        mp_pack_kv_bool(&pk, "revoked", revoked);
        mp_pack_kv_u64(&pk, "revoked_at", revoked_at);
        MDB_val v = {sb.size, sb.data};
        assert_int_equal(mdb_put(txn, db->certs, &k, &v, 0), 0);
        msgpack_sbuffer_destroy(&sb);
    }
    tamper_commit(&db, txn);
}

/* Add (add true) or delete the phones binding phone -> serial. */
static void bind_phone(const char *dir, const char *phone, const char *serial, bool add)
{
    struct spinedb *db;
    MDB_txn *txn = tamper_begin(dir, &db);
    MDB_val k = {strlen(phone), (void *)phone}, v = {strlen(serial), (void *)serial};
    if (add)
        assert_int_equal(mdb_put(txn, db->phones, &k, &v, MDB_NODUPDATA), 0);
    else
        assert_int_equal(mdb_del(txn, db->phones, &k, &v), 0);
    tamper_commit(&db, txn);
}

static void test_registry_intact(void **state)
{
    struct fixture *f = *state;
    struct spinedb_verify_report rep;
    struct spinedb *db;
    MDB_txn *txn;
    struct registry_entry e;
    char err[ERR_LEN];
    build_registry(f);
    assert_int_equal(verify_dir(f->tmp->dir, &rep, err), 0);
    assert_int_equal(rep.failure, SPINEDB_VERIFY_OK);
    assert_int_equal(rep.bad_seq, 0);
    assert_int_equal(rep.n_events, 12);

    /* What the replay reproduces: the first certificate and revocation stand. */
    assert_int_equal(spinedb_read_begin(f->tmp->dir, &db, &txn, err), 0);
    assert_int_equal(registry_get(db, txn, SERIAL(1), &e, err), 0);
    assert_true(e.revoked);
    assert_int_equal(e.revoked_at, 1800000000);
    assert_memory_equal(e.blob.bytes, cert_a.bytes, cert_a.len);
    assert_int_equal(registry_get(db, txn, SERIAL(4), &e, err), 0);
    assert_false(e.revoked);
    spinedb_read_end(&db, txn);
    reopen(f);
}

/* The audit's case: a revoked certificate made valid again. */
static void test_registry_revoked_flipped(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    put_cert(f->tmp->dir, SERIAL(1), &cert_a, false, 0);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 5, "certificate " SERIAL(1) " says revoked=false, "
                        "but ns.cert_revoked at seq 5 revoked it");
    reopen(f);
}

static void test_registry_revoked_at_changed(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    put_cert(f->tmp->dir, SERIAL(1), &cert_a, true, 1800000099);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 5, "says 1800000000");
    /* C's revoked_at came from the spine's clock: an hour off is a change. */
    put_cert(f->tmp->dir, SERIAL(1), &cert_a, true, 1800000000);
    put_cert(f->tmp->dir, SERIAL(3), &cert_c, true, (uint64_t)(tg_now_ms() / 1000) + 3600);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 9, "was committed at");
    reopen(f);
}

static void test_registry_other_cert_bytes(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    put_cert(f->tmp->dir, SERIAL(1), &cert_a2, true, 1800000000);     /* the re-issue, never applied */
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 3, "other certificate bytes");
    reopen(f);
}

static void test_registry_cert_deleted(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    put_cert(f->tmp->dir, SERIAL(2), NULL, false, 0);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 4, "certificate " SERIAL(2) " is missing");
    reopen(f);
}

static void test_registry_cert_added(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    put_cert(f->tmp->dir, SERIAL(5), &cert_e, false, 0);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 0, "certificate " SERIAL(5) " is in certs, but no");
    reopen(f);
}

static void test_registry_phone_changed(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    bind_phone(f->tmp->dir, PHONE_2, SERIAL(2), false);
    bind_phone(f->tmp->dir, PHONE_3, SERIAL(2), true);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 4, "phone " PHONE_2 " is not bound to certificate " SERIAL(2));
    reopen(f);
}

static void test_registry_phone_added(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    bind_phone(f->tmp->dir, PHONE_2, SERIAL(4), true);           /* D binds no phone */
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 10, "phone " PHONE_2 " is bound to certificate " SERIAL(4));
    bind_phone(f->tmp->dir, PHONE_2, SERIAL(4), false);
    bind_phone(f->tmp->dir, PHONE_3, SERIAL(5), true);           /* E was never issued */
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 0, "which no ns.cert_issued issued");
    reopen(f);
}

static void test_registry_phone_removed(void **state)
{
    struct fixture *f = *state;
    build_registry(f);
    bind_phone(f->tmp->dir, PHONE_1, SERIAL(1), false);
    assert_verify_fails(f, SPINEDB_VERIFY_REGISTRY, 3, "phone " PHONE_1 " is not bound to certificate " SERIAL(1));
    reopen(f);
}

/* A verifier's RESULT cannot change the registry (protocol.md 4), nor log
 * an ns.* event: such a RESULT is refused as malformed. */
static void test_registry_result_refused(void **state)
{
    (void)state;
    struct spine_input in;
    msgpack_sbuffer data, sb;
    msgpack_packer pk;
    char err[ERR_LEN];
    msgpack_sbuffer_init(&data);
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    mp_pack_kv_str(&pk, "serial", SERIAL(2));
    struct tg_event ev = {.type = "ns.cert_revoked", .actor = "tel.x", .id = "forged",
                          .data = (uint8_t *)data.data, .data_len = data.size};
    struct msg_result r = {.jseq = 3, .webhook_id = "wh-c", .events = &ev, .n_events = 1};
    msgpack_sbuffer_init(&sb);
    msg_result_encode(&sb, &r);
    assert_int_equal(spine_input_decode(sb.data, sb.size, &in, err), -1);
    assert_non_null(strstr(err, "only tel.* events"));
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&data);
}

/* The head record wrong while every event is intact: the head is blamed,
 * not an event. */
/* Store head as the head record of f's database, behind the spine's back. */
static void tamper_head(struct fixture *f, const struct spinedb_head *head)
{
    struct spinedb *db;
    char err[ERR_LEN];
    MDB_txn *txn = tamper_begin(f->tmp->dir, &db);
    assert_int_equal(spinedb_head_put(db, txn, head, err), 0);
    tamper_commit(&db, txn);
}

/* Only OUTCOMEs may wait for a later commit, and only while the batch has
 * room and their time has not run out. */
static void test_inputs_may_wait(void **state)
{
    (void)state;
    struct spine_input in[4] = {
        {.type = MSG_OUTCOME}, {.type = MSG_OUTCOME}, {.type = MSG_RESULT}, {.type = MSG_OUTCOME},
    };
    assert_false(spine_inputs_may_wait(in, 0, 4, true));
    assert_true(spine_inputs_may_wait(in, 1, 4, false));
    assert_true(spine_inputs_may_wait(in, 2, 4, false));
    assert_false(spine_inputs_may_wait(in, 2, 4, true));       /* waited long enough */
    assert_false(spine_inputs_may_wait(in, 2, 2, false));      /* the batch is full */
    assert_false(spine_inputs_may_wait(in, 3, 4, false));      /* a RESULT: commit now */
    assert_false(spine_inputs_may_wait(in + 2, 2, 4, false));
    const int urgent[] = {MSG_RESULT, MSG_APPEND, MSG_SETTLED};
    for (size_t i = 0; i < sizeof urgent / sizeof urgent[0]; i++) {
        struct spine_input one[2] = {{.type = MSG_OUTCOME}, {.type = urgent[i]}};
        assert_false(spine_inputs_may_wait(one, 2, 8, false));
        assert_false(spine_inputs_may_wait(one + 1, 1, 8, false));
    }
}

static void test_head_record_wrong(void **state)
{
    struct fixture *f = *state;
    struct spinedb *db;
    struct spinedb_head head, saved;
    MDB_txn *txn;
    char err[ERR_LEN];
    MDB_val k = {4, "head"};
    build_chain(f);
    txn = tamper_begin(f->tmp->dir, &db);
    assert_int_equal(spinedb_head_get(db, txn, &saved, err), 0);
    assert_int_equal(mdb_del(txn, db->meta, &k, NULL), 0);
    tamper_commit(&db, txn);
    assert_verify_fails(f, SPINEDB_VERIFY_HEAD, 0, "head record is missing, but the log ends at seq 4");

    head = saved;
    head.seq = 2;
    tamper_head(f, &head);
    assert_verify_fails(f, SPINEDB_VERIFY_HEAD, 0, "head record says the log ends at seq 2, but it ends at seq 4");

    head = saved;
    head.hash[0] ^= 1;
    tamper_head(f, &head);
    assert_verify_fails(f, SPINEDB_VERIFY_HEAD, 0, "head record's hash");

    MDB_val v = {3, "abc"};
    txn = tamper_begin(f->tmp->dir, &db);
    assert_int_equal(mdb_put(txn, db->meta, &k, &v, 0), 0);
    tamper_commit(&db, txn);
    assert_verify_fails(f, SPINEDB_VERIFY_HEAD, 0, "head record has 3 bytes");

    /* A head beyond the last event: events are missing, a chain failure. */
    head = saved;
    head.seq = 6;
    tamper_head(f, &head);
    assert_verify_fails(f, SPINEDB_VERIFY_CHAIN, 5, "events missing");
    reopen(f);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    log_init("spine_store_test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_gap_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_webhook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_webhook_other_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_event_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_speak_hangs_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_resend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watermark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watermark_settled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_after_next_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmap_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_missing_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_revoked_flipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_revoked_at_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_other_cert_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_cert_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_cert_added, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_phone_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_phone_added, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_phone_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_result_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_record_wrong, setup, teardown),
        cmocka_unit_test(test_inputs_may_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
