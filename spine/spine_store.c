/*
 * spine_store.c - the spine's write side (see spine_store.h): batched,
 * idempotent application of RESULT / OUTCOME / APPEND messages to the
 * hash-chained log, the command outbox and the journal watermark.
 */
#include "spine_store.h"
#include "registry.h"
#include "log.h"
#include "mp.h"

#include <inttypes.h>
#include <sodium.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 511              /* LMDB's default maximum key size */
#define EVENT_TYPE_MAX 127       /* what event_canon_parse accepts */
#define QUEUED_KEY "queued_ms"   /* outbox value: command map plus this */

/* Last time a command was sent to the actuator (memory only). */
struct sent_entry {
    char *command_id;
    uint64_t sent_ms;
};

/*
 * Webhook ids seen recently, whatever their occurred_at (see apply_result):
 * 64-bit keyed hashes in two generations of open-addressing tables; when
 * the newer one is half full the older one is dropped, so the set holds the
 * last RECENT_SLOTS / 2 to RECENT_SLOTS webhooks (512 KiB).  0 marks a
 * free slot.
 */
#define RECENT_SLOTS 32768      /* per generation, a power of two */

struct recent_ids {
    uint64_t *gen[2];
    size_t count[2];
    int cur;                    /* the generation new ids go to */
    uint8_t key[crypto_shorthash_KEYBYTES];
};

struct spine_store {
    struct spinedb *db;
    char *actor;
    uint64_t resend_ms;
    struct spinedb_head head;
    uint64_t low;              /* every jseq 1..low is done */
    uint64_t *done;            /* done jseqs above low, increasing */
    size_t n_done, cap_done;
    void *sent;                /* tsearch tree of struct sent_entry */
    uint64_t okey_next;        /* next outbox key (persisted in meta) */
    uint64_t last_txnid;       /* LMDB id of the last commit */
    uint64_t synced_txnid;     /* every commit up to this id is durable */
    msgpack_sbuffer scratch;   /* reused encoding buffer (no 8 KiB malloc per event) */
    struct recent_ids recent;
};

/* State of one write transaction; memory changes wait for the commit. */
struct txn_ctx {
    struct spine_store *s;
    MDB_txn *txn;
    struct spinedb_head head;
    uint64_t now_us;
    char now_ts[TG_RFC3339_LEN];   /* now_us formatted: every event's time */
    struct spine_output *out;
    uint64_t *marks;           /* jseqs newly marked done */
    size_t n_marks, cap_marks;
    uint64_t settled;          /* the ingress's low mark from SETTLED; 0 none */
    char **removed;            /* command ids removed from the outbox */
    size_t n_removed, cap_removed;
    uint64_t okey_next;        /* next outbox key; saved at commit */
    uint64_t *new_ids;         /* recent_ids hashes of the webhooks recorded */
    size_t n_new_ids, cap_new_ids;
};

#define META_OUTBOX_NEXT "outbox_next"
#define META_JSEQ_SETTLED "jseq_settled"
#define SETTLE_PRUNE_MAX 4096  /* jseq marks deleted per SETTLED */

/* ---- decoding and validation ---- */

const char *spine_input_name(int type)
{
    switch (type) {
    case MSG_RESULT: return "RESULT";
    case MSG_OUTCOME: return "OUTCOME";
    case MSG_APPEND: return "APPEND";
    case MSG_SETTLED: return "SETTLED";
    default: return "unknown";
    }
}

bool spine_inputs_may_wait(const struct spine_input *in, size_t n, size_t max, bool expired)
{
    if (expired || n >= max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (in[i].type != MSG_OUTCOME)
            return false;
    return true;
}

static int key_check(const char *what, const char *key, char *err)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > KEY_MAX)
        return tg_err(err, "%s is empty or longer than %d bytes", what, KEY_MAX);
    return 0;
}

static int events_check(const struct tg_event *ev, size_t n, char *err)
{
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(ev[i].type);
        if (tl == 0 || tl > EVENT_TYPE_MAX)
            return tg_err(err, "event %zu: type is empty or longer than %d bytes", i, EVENT_TYPE_MAX);
        if (key_check("event id", ev[i].id, err) != 0)
            return -1;
    }
    return 0;
}

_Static_assert(MSG_WEBHOOK_ID_MAX + 8 <= SPINEDB_WEBHOOK_KEY_MAX,
               "a webhook key is an 8-byte time and the data.id");

static int input_check(const struct spine_input *in, char *err)
{
    switch (in->type) {
    case MSG_RESULT:
        if (key_check("webhook_id", in->u.result.webhook_id, err) != 0 ||
            strlen(in->u.result.webhook_id) > MSG_WEBHOOK_ID_MAX ||
            events_check(in->u.result.events, in->u.result.n_events, err) != 0)
            return -1;
        /* Webhooks make tel.* events; ns.* (certificates) come only from
         * telctl's APPEND, which also updates the registry. */
        for (size_t i = 0; i < in->u.result.n_events; i++)
            if (strncmp(in->u.result.events[i].type, "tel.", 4) != 0)
                return tg_err(err, "RESULT event %zu has type %.60s; only tel.* events come "
                              "from webhooks", i, in->u.result.events[i].type);
        for (size_t i = 0; i < in->u.result.n_commands; i++)
            if (key_check("command_id", in->u.result.commands[i].command_id, err) != 0)
                return -1;
        return 0;
    case MSG_OUTCOME:
        return key_check("command_id", in->u.outcome.command_id, err);
    case MSG_APPEND:
        if (events_check(in->u.append.events, in->u.append.n_events, err) != 0)
            return -1;
        for (size_t i = 0; i < in->u.append.n_events; i++)
            if (registry_event_check(&in->u.append.events[i], err) != 0)
                return -1;
        return 0;
    case MSG_SETTLED:
        return 0;
    }
    return tg_err(err, "unexpected message type %d", in->type);
}

int spine_input_decode(const void *buf, size_t len, struct spine_input *in, char *err)
{
    int type, rc;
    memset(in, 0, sizeof *in);
    if (msg_type_of(buf, len, &type, err) != 0)
        return -1;
    switch (type) {
    case MSG_RESULT: rc = msg_result_decode(buf, len, &in->u.result, err); break;
    case MSG_OUTCOME: rc = msg_outcome_decode(buf, len, &in->u.outcome, err); break;
    case MSG_APPEND: rc = msg_append_decode(buf, len, &in->u.append, err); break;
    case MSG_SETTLED: rc = msg_settled_decode(buf, len, &in->u.settled, err); break;
    default: return tg_err(err, "message type %d is not accepted by the spine", type);
    }
    if (rc != 0)
        return -1;
    in->type = type;
    if (input_check(in, err) != 0) {
        spine_input_free(in);
        return -1;
    }
    return 0;
}

void spine_input_free(struct spine_input *in)
{
    switch (in->type) {
    case MSG_RESULT: msg_result_free(&in->u.result); break;
    case MSG_OUTCOME: msg_outcome_free(&in->u.outcome); break;
    case MSG_APPEND: msg_append_free(&in->u.append); break;
    }
    memset(in, 0, sizeof *in);
}

/* ---- output ---- */

static void output_truncate(struct spine_output *out, size_t n_events, size_t n_commands, size_t n_acked)
{
    out->n_acked = n_acked;
    for (size_t i = n_events; i < out->n_events; i++) {
        free(out->events[i].type);
        free(out->events[i].canon);
    }
    for (size_t i = n_commands; i < out->n_commands; i++)
        tg_command_free(&out->commands[i]);
    out->n_events = n_events;
    out->n_commands = n_commands;
}

void spine_output_reset(struct spine_output *out)
{
    output_truncate(out, 0, 0, 0);
}

void spine_output_free(struct spine_output *out)
{
    spine_output_reset(out);
    free(out->events);
    free(out->commands);
    free(out->acked);
    memset(out, 0, sizeof *out);
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void output_add_command(struct spine_output *out, const struct tg_command *c)
{
    if (out->n_commands == out->cap_commands) {
        out->cap_commands = out->cap_commands ? 2 * out->cap_commands : 16;
        out->commands = xrealloc(out->commands, out->cap_commands * sizeof *out->commands);
    }
    struct tg_command *d = &out->commands[out->n_commands++];
    d->command_id = xstrdup(c->command_id);
    d->call_control_id = xstrdup(c->call_control_id);
    d->action = xstrdup(c->action);
    d->body = xstrdup(c->body);
    d->webhook_id = dup_or_null(c->webhook_id);
    d->call_session_id = dup_or_null(c->call_session_id);
    d->from = dup_or_null(c->from);
    d->to = dup_or_null(c->to);
    d->outbox_key = c->outbox_key;
}

/* ---- watermark ---- */

/* Record jseq j as done (idempotent); call marks_advance afterwards. */
static void marks_add(struct spine_store *s, uint64_t j)
{
    if (j <= s->low)
        return;
    size_t lo = 0, hi = s->n_done;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->done[mid] < j)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < s->n_done && s->done[lo] == j)
        return;
    if (s->n_done == s->cap_done) {
        s->cap_done = s->cap_done ? 2 * s->cap_done : 256;
        s->done = xrealloc(s->done, s->cap_done * sizeof *s->done);
    }
    memmove(&s->done[lo + 1], &s->done[lo], (s->n_done - lo) * sizeof *s->done);
    s->done[lo] = j;
    s->n_done++;
}

/* Drop the marks the watermark covers: those at or below it, and each one
 * right after it, which moves it on. */
static void marks_advance(struct spine_store *s)
{
    size_t k = 0;
    for (; k < s->n_done && s->done[k] <= s->low + 1; k++)
        if (s->done[k] == s->low + 1)
            s->low++;
    if (k) {
        memmove(s->done, s->done + k, (s->n_done - k) * sizeof *s->done);
        s->n_done -= k;
    }
}

/* ---- sent times ---- */

static int sent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sent_entry *)a)->command_id, ((const struct sent_entry *)b)->command_id);
}

static struct sent_entry *sent_find(struct spine_store *s, const char *id)
{
    struct sent_entry key = {(char *)id, 0};
    struct sent_entry **p = tfind(&key, &s->sent, sent_cmp);
    return p ? *p : NULL;
}

static void sent_set(struct spine_store *s, const char *id, uint64_t now_ms)
{
    struct sent_entry *e = sent_find(s, id);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->command_id = xstrdup(id);
        tsearch(e, &s->sent, sent_cmp);
    }
    e->sent_ms = now_ms;
}

static void sent_remove(struct spine_store *s, const char *id)
{
    struct sent_entry *e = sent_find(s, id);
    if (!e)
        return;
    tdelete(e, &s->sent, sent_cmp);
    free(e->command_id);
    free(e);
}

static void sent_free_node(void *p)
{
    struct sent_entry *e = p;
    free(e->command_id);
    free(e);
}

/* ---- the transaction ---- */

static int key_exists(MDB_txn *txn, MDB_dbi dbi, const char *key, bool *exists, char *err)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc && rc != MDB_NOTFOUND)
        return spinedb_err(err, "spine db read", rc);
    *exists = rc == 0;
    return 0;
}

/*
 * Append e after the head.  indexed: the event is de-duplicated by its id
 * through the `ids` index (operator events); webhook events are
 * de-duplicated as a whole by their webhook (see apply_result) and command
 * outcomes by the outbox (apply_outcome), which keeps random-key inserts
 * off the hot path.  *seq = its seq, or 0 if skipped as a duplicate.
 */
static int event_append(struct txn_ctx *c, const struct tg_event *e, bool indexed, uint64_t *seq, char *err)
{
    bool exists = false;
    *seq = 0;
    if (indexed) {
        if (key_exists(c->txn, c->s->db->ids, e->id, &exists, err) != 0)
            return -1;
        if (exists)
            return 0;
    }

    uint64_t n = c->head.seq + 1;
    msgpack_sbuffer sb = c->s->scratch;
    sb.size = 0;
    event_canon_encode(&sb, e, n, c->now_ts, c->head.hash);
    c->s->scratch = sb;         /* keep what the encoder grew */
    uint8_t hash[EVENT_HASH_BYTES];
    event_hash((const uint8_t *)sb.data, sb.size, hash);

    uint8_t kb[8];
    spinedb_u64_put(n, kb);
    MDB_val k = {sizeof kb, kb}, v = {EVENT_HASH_BYTES + sb.size, NULL};
    int rc = mdb_put(c->txn, c->s->db->events, &k, &v, MDB_APPEND | MDB_RESERVE);
    if (rc)
        return spinedb_err(err, "spine db: append event", rc);
    memcpy(v.mv_data, hash, EVENT_HASH_BYTES);
    memcpy((uint8_t *)v.mv_data + EVENT_HASH_BYTES, sb.data, sb.size);

    MDB_val ik = {strlen(e->id), e->id}, iv = {sizeof kb, kb};
    if (indexed && (rc = mdb_put(c->txn, c->s->db->ids, &ik, &iv, MDB_NOOVERWRITE)) != 0) {
        return spinedb_err(err, "spine db: record event id", rc);
    }

    struct spine_output *out = c->out;
    if (out->n_events == out->cap_events) {
        out->cap_events = out->cap_events ? 2 * out->cap_events : 64;
        out->events = xrealloc(out->events, out->cap_events * sizeof *out->events);
    }
    struct spine_committed *ce = &out->events[out->n_events++];
    ce->seq = n;
    memcpy(ce->hash, hash, EVENT_HASH_BYTES);
    ce->type = xstrdup(e->type);
    ce->len = sb.size;
    ce->canon = xmalloc(sb.size);
    memcpy(ce->canon, sb.data, sb.size);

    c->head.seq = n;
    memcpy(c->head.hash, hash, EVENT_HASH_BYTES);
    *seq = n;
    return 0;
}

/* Mark journal record jseq processed.  jseq 0 is not a journal record of
 * this installation (telctl replay) and is not marked.  Every jseq seen,
 * new or already marked, is acknowledged to the ingress in this batch's
 * progress report, so a re-published record is acknowledged again. */
static int jseq_mark(struct txn_ctx *c, uint64_t jseq, char *err)
{
    if (jseq == 0)
        return 0;
    struct spine_output *out = c->out;
    if (out->n_acked == out->cap_acked) {
        out->cap_acked = out->cap_acked ? 2 * out->cap_acked : 64;
        out->acked = xrealloc(out->acked, out->cap_acked * sizeof *out->acked);
    }
    out->acked[out->n_acked++] = jseq;
    uint8_t kb[8];
    spinedb_u64_put(jseq, kb);
    MDB_val k = {sizeof kb, kb}, v = {0, (void *)""};
    int rc = mdb_put(c->txn, c->s->db->jseq, &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 0;
    if (rc)
        return spinedb_err(err, "spine db: mark jseq", rc);
    if (c->n_marks == c->cap_marks) {
        c->cap_marks = c->cap_marks ? 2 * c->cap_marks : 64;
        c->marks = xrealloc(c->marks, c->cap_marks * sizeof *c->marks);
    }
    c->marks[c->n_marks++] = jseq;
    return 0;
}

/* Outbox value: the command map plus "queued_ms", packed in one pass. */
static void outbox_value(const struct tg_command *cmd, uint64_t queued_ms, msgpack_sbuffer *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msg_command_pack_extra(&pk, cmd, 1);
    mp_pack_kv_u64(&pk, QUEUED_KEY, queued_ms);
}

/* Queue cmd under the next outbox key (keys increase, so the outbox grows at
 * its end and shrinks at its start). */
static int outbox_put(struct txn_ctx *c, const struct tg_command *cmd, char *err)
{
    struct tg_command keyed = *cmd;
    keyed.outbox_key = c->okey_next++;
    msgpack_sbuffer sb = c->s->scratch;
    sb.size = 0;
    outbox_value(&keyed, c->now_us / 1000, &sb);
    c->s->scratch = sb;
    uint8_t kb[8];
    spinedb_u64_put(keyed.outbox_key, kb);
    MDB_val k = {sizeof kb, kb}, v = {sb.size, sb.data};
    int rc = mdb_put(c->txn, c->s->db->outbox, &k, &v, MDB_APPEND);
    if (rc)
        return spinedb_err(err, "spine db: queue command", rc);
    output_add_command(c->out, &keyed);
    return 0;
}

/* ---- recently seen webhook ids ---- */

static uint64_t recent_hash(const struct recent_ids *r, const char *webhook_id)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)webhook_id, strlen(webhook_id), r->key);
    uint64_t v = spinedb_u64_get(h);
    return v ? v : 1;
}

static bool recent_in(const uint64_t *table, uint64_t h)
{
    for (size_t i = h & (RECENT_SLOTS - 1);; i = (i + 1) & (RECENT_SLOTS - 1)) {
        if (table[i] == h)
            return true;
        if (table[i] == 0)
            return false;
    }
}

static bool recent_has(const struct recent_ids *r, uint64_t h)
{
    return recent_in(r->gen[0], h) || recent_in(r->gen[1], h);
}

static void recent_add(struct recent_ids *r, uint64_t h)
{
    if (recent_has(r, h))
        return;
    if (r->count[r->cur] >= RECENT_SLOTS / 2) {     /* newer one half full: drop the older */
        r->cur ^= 1;
        memset(r->gen[r->cur], 0, RECENT_SLOTS * sizeof *r->gen[0]);
        r->count[r->cur] = 0;
    }
    uint64_t *t = r->gen[r->cur];
    size_t i = h & (RECENT_SLOTS - 1);
    while (t[i] != 0)
        i = (i + 1) & (RECENT_SLOTS - 1);
    t[i] = h;
    r->count[r->cur]++;
}

/* Seen in a committed transaction, or earlier in this one? */
static bool webhook_seen(const struct txn_ctx *c, uint64_t h)
{
    if (recent_has(&c->s->recent, h))
        return true;
    for (size_t i = 0; i < c->n_new_ids; i++)
        if (c->new_ids[i] == h)
            return true;
    return false;
}

/* Fill the set from the newest keys of the webhooks index (at open). */
static int recent_load(struct spine_store *s, MDB_txn *txn, char *err)
{
    MDB_cursor *cur;
    MDB_val k, v;
    char id[SPINEDB_WEBHOOK_KEY_MAX];
    int rc = mdb_cursor_open(txn, s->db->webhooks, &cur);
    if (rc)
        return spinedb_err(err, "spine db cursor", rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    for (size_t n = 0; rc == 0 && n < RECENT_SLOTS / 2; n++) {
        if (k.mv_size > 8 && k.mv_size < sizeof id) {
            memcpy(id, (const char *)k.mv_data + 8, k.mv_size - 8);
            id[k.mv_size - 8] = '\0';
            recent_add(&s->recent, recent_hash(&s->recent, id));
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : spinedb_err(err, "spine db: read webhooks", rc);
}

/*
 * A webhook's events and commands, once: SPEC 6.2 de-duplicates on data.id.
 * The webhooks index is keyed by occurred_at ‖ data.id, so that it grows at
 * its end (keyed by the random ids alone, every commit would rewrite a leaf
 * page per webhook); Telnyx's re-deliveries repeat occurred_at, and they
 * are caught there whenever they come.  A copy of a known id that says
 * another occurred_at is caught by the recent_ids set, if the id is among
 * the last 16,384 to 32,768 webhooks.
 */
static int apply_result(struct txn_ctx *c, const struct msg_result *r, char *err)
{
    /* occurred_at first: a re-delivery carries the same pair, and new
     * webhooks sort near the end of the index. */
    uint8_t kbuf[SPINEDB_WEBHOOK_KEY_MAX], vb[8];
    MDB_val k = spinedb_webhook_key(r->occurred_us, r->webhook_id, kbuf);
    if (jseq_mark(c, r->jseq, err) != 0)
        return -1;
    uint64_t idh = recent_hash(&c->s->recent, r->webhook_id);
    if (webhook_seen(c, idh))
        return 0;          /* the same data.id under another occurred_at */
    /* One descent both checks and records the webhook: its first event
     * will be the next seq. */
    spinedb_u64_put(r->n_events ? c->head.seq + 1 : 0, vb);
    MDB_val v = {sizeof vb, vb};
    int rc = mdb_put(c->txn, c->s->db->webhooks, &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 0;          /* a re-delivery or re-processing: nothing new */
    if (rc)
        return spinedb_err(err, "spine db: record webhook", rc);
    if (c->n_new_ids == c->cap_new_ids) {
        c->cap_new_ids = c->cap_new_ids ? 2 * c->cap_new_ids : 64;
        c->new_ids = xrealloc(c->new_ids, c->cap_new_ids * sizeof *c->new_ids);
    }
    c->new_ids[c->n_new_ids++] = idh;     /* into the set once committed */
    uint64_t seq;
    for (size_t i = 0; i < r->n_events; i++)
        if (event_append(c, &r->events[i], false, &seq, err) != 0)
            return -1;
    for (size_t i = 0; i < r->n_commands; i++)
        if (outbox_put(c, &r->commands[i], err) != 0)
            return -1;
    return 0;
}

/* Is the outbox entry under okey the command command_id?  1 yes, 0 no. */
static int outbox_holds(struct txn_ctx *c, uint64_t okey, const char *command_id, char *err)
{
    uint8_t kb[8];
    spinedb_u64_put(okey, kb);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(c->txn, c->s->db->outbox, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return spinedb_err(err, "spine db read", rc);
    msgpack_unpacked up;
    if (mp_unpack_exact(v.mv_data, v.mv_size, &up, err) != 0)
        return 0;
    const msgpack_object *id = mp_map_get(&up.data, "command_id");
    int same = id && id->type == MSGPACK_OBJECT_STR && id->via.str.size == strlen(command_id) &&
               memcmp(id->via.str.ptr, command_id, id->via.str.size) == 0;
    msgpack_unpacked_destroy(&up);
    return same;
}

/*
 * A speak that failed for good leaves a rejected caller on an answered call:
 * the hangup that follows the announcement waits for call.speak.ended,
 * which never comes.  Queue that hangup now, in the outcome's transaction,
 * with a command_id derived from the speak's (so it is queued once).  speak
 * is only ever sent to announce a rejection (SPEC 4).
 */
static int hangup_after_failed_speak(struct txn_ctx *c, const struct msg_outcome *o, char *err)
{
    char cid[COMMAND_ID_LEN], body[COMMAND_ID_LEN + 32];
    if (o->ok || strcmp(o->action, "speak") != 0 || !o->call_control_id)
        return 0;
    command_id_make(o->command_id, "hangup", cid);
    snprintf(body, sizeof body, "{\"command_id\":\"%s\"}", cid);
    struct tg_command cmd = {
        .command_id = cid, .call_control_id = o->call_control_id, .action = "hangup",
        .body = body, .webhook_id = o->webhook_id, .call_session_id = o->call_session_id,
        .from = o->from, .to = o->to,
    };
    log_warn("call %s: the announcement failed (speak: status %" PRIu32 ", %s); hanging up",
             o->call_control_id, o->status, o->detail ? o->detail : "");
    return outbox_put(c, &cmd, err);
}

/* Record an outcome once: only while its command is in the outbox (the
 * event and the removal share a transaction, so a repeated outcome finds the
 * command gone and adds nothing). */
static int apply_outcome(struct txn_ctx *c, const struct msg_outcome *o, char *err)
{
    char id[EVENT_ID_LEN];
    uint64_t seq;
    msgpack_sbuffer data;
    msgpack_packer pk;

    int held = outbox_holds(c, o->outbox_key, o->command_id, err);
    if (held <= 0)
        return held;

    event_id(o->command_id, "outcome", id);
    msgpack_sbuffer_init(&data);
    msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    mp_pack_kv_str(&pk, "action", o->action);
    mp_pack_kv_str(&pk, "command_id", o->command_id);
    mp_pack_kv_u64(&pk, "status", o->status);
    mp_pack_kv_bool(&pk, "ok", o->ok);
    mp_pack_kv_u64(&pk, "attempts", o->attempts);
    mp_pack_kv_str(&pk, "detail", o->detail ? o->detail : "");
    struct tg_event e = {
        .type = "tel.command", .actor = c->s->actor, .id = id,
        .webhook_id = o->webhook_id, .call_control_id = o->call_control_id,
        .call_session_id = o->call_session_id, .from = o->from, .to = o->to,
        .data = (uint8_t *)data.data, .data_len = data.size,
    };
    int rc = event_append(c, &e, false, &seq, err);
    msgpack_sbuffer_destroy(&data);
    if (rc != 0)
        return -1;

    uint8_t kb[8];
    spinedb_u64_put(o->outbox_key, kb);
    MDB_val k = {sizeof kb, kb};
    rc = mdb_del(c->txn, c->s->db->outbox, &k, NULL);
    if (rc)
        return spinedb_err(err, "spine db: remove command from outbox", rc);
    if (c->n_removed == c->cap_removed) {
        c->cap_removed = c->cap_removed ? 2 * c->cap_removed : 16;
        c->removed = xrealloc(c->removed, c->cap_removed * sizeof *c->removed);
    }
    c->removed[c->n_removed++] = xstrdup(o->command_id);
    return hangup_after_failed_speak(c, o, err);
}

/*
 * The ingress reports that every jseq <= low is acknowledged or was never
 * handed out: the watermark jumps there (past skipped jseqs it would wait for
 * forever) and the marks below it, no longer needed, are deleted a bounded
 * number at a time.  The mark is saved so a restart starts from it.
 */
static int jseq_settle(struct txn_ctx *c, uint64_t low, char *err)
{
    if (low <= c->s->low || low <= c->settled)
        return 0;
    c->settled = low;
    uint8_t vb[8];
    spinedb_u64_put(low, vb);
    MDB_val mk = {strlen(META_JSEQ_SETTLED), META_JSEQ_SETTLED}, mv = {sizeof vb, vb};
    int rc = mdb_put(c->txn, c->s->db->meta, &mk, &mv, 0);
    if (rc)
        return spinedb_err(err, "spine db: save settled jseq", rc);

    MDB_cursor *cur;
    MDB_val k, v;
    if ((rc = mdb_cursor_open(c->txn, c->s->db->jseq, &cur)) != 0)
        return spinedb_err(err, "spine db cursor", rc);
    size_t n = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && n < SETTLE_PRUNE_MAX && k.mv_size == 8 && spinedb_u64_get(k.mv_data) <= low) {
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
        n++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);     /* the entry after the deleted one */
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : spinedb_err(err, "spine db: prune jseq marks", rc);
}

static int apply_one(struct txn_ctx *c, const struct spine_input *in, char *err)
{
    uint64_t seq;
    switch (in->type) {
    case MSG_RESULT:
        return apply_result(c, &in->u.result, err);
    case MSG_OUTCOME:
        return apply_outcome(c, &in->u.outcome, err);
    case MSG_APPEND:
        /* Operator events; ns.cert_* also update the certificate registry in
         * the same transaction (only APPEND may: a verifier cannot issue). */
        for (size_t i = 0; i < in->u.append.n_events; i++) {
            const struct tg_event *e = &in->u.append.events[i];
            if (event_append(c, e, true, &seq, err) != 0)
                return -1;
            if (seq != 0 && registry_apply_event(c->s->db, c->txn, e, err) != 0)
                return -1;
        }
        return 0;
    case MSG_SETTLED:
        return jseq_settle(c, in->u.settled.low, err);
    }
    return tg_err(err, "unexpected message type %d", in->type);
}

static void ctx_free(struct txn_ctx *c)
{
    for (size_t i = 0; i < c->n_removed; i++)
        free(c->removed[i]);
    free(c->removed);
    free(c->marks);
    free(c->new_ids);
}

/*
 * After a commit: a commit that wrote anything synced its data pages
 * (MDB_NOMETASYNC skips only the meta page's sync), and that sync also
 * flushed the meta page every earlier commit wrote.  So all commits before
 * the newest are durable.  A commit with nothing to write is not a commit
 * at all for LMDB (the transaction id does not move).
 */
static void note_commit(struct spine_store *s)
{
    MDB_envinfo info;
    if (mdb_env_info(s->db->env, &info) != 0 || (uint64_t)info.me_last_txnid <= s->last_txnid)
        return;
    s->last_txnid = (uint64_t)info.me_last_txnid;
    if (s->synced_txnid < s->last_txnid - 1)
        s->synced_txnid = s->last_txnid - 1;
}

/* Apply in[0..n) in one transaction and commit; all or nothing. */
static int txn_run(struct spine_store *s, const struct spine_input *in, size_t n, struct spine_output *out,
                   char *err)
{
    struct txn_ctx c = {.s = s, .head = s->head, .now_us = tg_now_us(), .out = out,
                        .okey_next = s->okey_next};
    tg_rfc3339(c.now_us, c.now_ts);
    size_t ev0 = out->n_events, cmd0 = out->n_commands, ack0 = out->n_acked;
    int rc = mdb_txn_begin(s->db->env, NULL, 0, &c.txn);
    if (rc)
        return spinedb_err(err, "spine db write transaction", rc);
    for (size_t i = 0; i < n; i++)
        if (apply_one(&c, &in[i], err) != 0)
            goto fail;
    if (c.head.seq != s->head.seq && spinedb_head_put(s->db, c.txn, &c.head, err) != 0)
        goto fail;
    if (c.okey_next != s->okey_next) {
        uint8_t vb[8];
        spinedb_u64_put(c.okey_next, vb);
        MDB_val mk = {strlen(META_OUTBOX_NEXT), META_OUTBOX_NEXT}, mv = {sizeof vb, vb};
        if ((rc = mdb_put(c.txn, s->db->meta, &mk, &mv, 0)) != 0) {
            spinedb_err(err, "spine db: save outbox key", rc);
            goto fail;
        }
    }
    rc = mdb_txn_commit(c.txn);
    c.txn = NULL;
    if (rc) {
        spinedb_err(err, "spine db commit", rc);
        goto fail;
    }
    note_commit(s);
    s->head = c.head;
    s->okey_next = c.okey_next;
    if (c.settled > s->low)
        s->low = c.settled;     /* every jseq <= settled is done; marks_advance drops their marks */
    for (size_t i = 0; i < c.n_marks; i++)
        marks_add(s, c.marks[i]);
    marks_advance(s);
    for (size_t i = 0; i < c.n_removed; i++)
        sent_remove(s, c.removed[i]);
    for (size_t i = 0; i < c.n_new_ids; i++)
        recent_add(&s->recent, c.new_ids[i]);
    /* New commands need no re-send entry: their queued_ms says when they
     * were first sent. */
    ctx_free(&c);
    spinedb_prefill(s->db);     /* so the next commits sync data pages only */
    return 0;
fail:
    if (c.txn)
        mdb_txn_abort(c.txn);
    output_truncate(out, ev0, cmd0, ack0);
    ctx_free(&c);
    return -1;
}

int spine_store_apply(struct spine_store *s, const struct spine_input *in, size_t n, struct spine_output *out,
                      char *err)
{
    char why[ERR_LEN];
    size_t dropped = 0;
    if (n == 0 || txn_run(s, in, n, out, why) == 0)
        return 0;
    if (n > 1)
        log_error("commit of a batch of %zu messages failed (%s); retrying one by one", n, why);
    for (size_t i = 0; i < n; i++) {
        if (n > 1 && txn_run(s, &in[i], 1, out, why) == 0)
            continue;
        log_error("dropping %s message: %s", spine_input_name(in[i].type), why);
        dropped++;
    }
    return tg_err(err, "%zu of %zu messages dropped (last: %s)", dropped, n, why);
}

/* ---- open / close / queries ---- */

static int load_watermark(struct spine_store *s, MDB_txn *txn, char *err)
{
    MDB_cursor *cur;
    MDB_val k = {strlen(META_JSEQ_SETTLED), META_JSEQ_SETTLED}, v;
    int rc = mdb_get(txn, s->db->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        s->low = spinedb_u64_get(v.mv_data);
    else if (rc && rc != MDB_NOTFOUND)
        return spinedb_err(err, "spine db read", rc);
    /* Marks at or below the settled mark may still await pruning. */
    uint8_t kb[8];
    spinedb_u64_put(s->low + 1, kb);
    k = (MDB_val){sizeof kb, kb};
    if ((rc = mdb_cursor_open(txn, s->db->jseq, &cur)) != 0)
        return spinedb_err(err, "spine db cursor", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            mdb_cursor_close(cur);
            return tg_err(err, "spine db: jseq key of %zu bytes", k.mv_size);
        }
        marks_add(s, spinedb_u64_get(k.mv_data));
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return spinedb_err(err, "spine db cursor", rc);
    marks_advance(s);
    return 0;
}

/* The next outbox key: saved in meta, and above every key in the outbox. */
static int load_outbox_next(struct spine_store *s, MDB_txn *txn, char *err)
{
    MDB_val k = {strlen(META_OUTBOX_NEXT), META_OUTBOX_NEXT}, v;
    MDB_cursor *cur;
    s->okey_next = 1;
    int rc = mdb_get(txn, s->db->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        s->okey_next = spinedb_u64_get(v.mv_data);
    else if (rc && rc != MDB_NOTFOUND)
        return spinedb_err(err, "spine db read", rc);
    if ((rc = mdb_cursor_open(txn, s->db->outbox, &cur)) != 0)
        return spinedb_err(err, "spine db cursor", rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8 && spinedb_u64_get(k.mv_data) >= s->okey_next)
        s->okey_next = spinedb_u64_get(k.mv_data) + 1;
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : spinedb_err(err, "spine db cursor", rc);
}

int spine_store_open(struct spine_store **out, const char *data_dir, const char *actor, uint64_t resend_ms,
                     char *err)
{
    struct spine_store *s = xcalloc(1, sizeof *s);
    MDB_txn *txn;
    int rc;
    *out = NULL;
    if (spinedb_open(&s->db, data_dir, false, err) != 0) {
        free(s);
        return -1;
    }
    s->actor = xstrdup(actor);
    s->resend_ms = resend_ms;
    s->recent.gen[0] = xcalloc(RECENT_SLOTS, sizeof *s->recent.gen[0]);
    s->recent.gen[1] = xcalloc(RECENT_SLOTS, sizeof *s->recent.gen[1]);
    crypto_shorthash_keygen(s->recent.key);
    if ((rc = mdb_txn_begin(s->db->env, NULL, MDB_RDONLY, &txn)) != 0) {
        spinedb_err(err, "spine db read transaction", rc);
        spine_store_close(&s);
        return -1;
    }
    if (spinedb_head_get(s->db, txn, &s->head, err) != 0 || load_watermark(s, txn, err) != 0 ||
        load_outbox_next(s, txn, err) != 0 || recent_load(s, txn, err) != 0) {
        mdb_txn_abort(txn);
        spine_store_close(&s);
        return -1;
    }
    mdb_txn_abort(txn);
    /* A spine that stopped without its last meta sync left that commit in
     * the page cache only: sync it before it counts as durable. */
    MDB_envinfo info;
    if ((rc = mdb_env_sync(s->db->env, 1)) != 0 || (rc = mdb_env_info(s->db->env, &info)) != 0) {
        spinedb_err(err, "spine db sync", rc);
        spine_store_close(&s);
        return -1;
    }
    s->last_txnid = s->synced_txnid = (uint64_t)info.me_last_txnid;
    *out = s;
    return 0;
}

void spine_store_close(struct spine_store **sp)
{
    if (!sp || !*sp)
        return;
    struct spine_store *s = *sp;
    spinedb_close(&s->db);
    tdestroy(s->sent, sent_free_node);
    msgpack_sbuffer_destroy(&s->scratch);
    free(s->recent.gen[0]);
    free(s->recent.gen[1]);
    free(s->done);
    free(s->actor);
    free(s);
    *sp = NULL;
}

int spine_store_sync(struct spine_store *s, char *err)
{
    uint64_t last = s->last_txnid;
    int rc = mdb_env_sync(s->db->env, 1);
    if (rc)
        return spinedb_err(err, "spine db sync", rc);
    s->synced_txnid = last;
    return 0;
}

uint64_t spine_store_last_commit(const struct spine_store *s)
{
    return s->last_txnid;
}

bool spine_store_durable(const struct spine_store *s, uint64_t commit)
{
    return commit <= s->synced_txnid;
}

void spine_store_head(const struct spine_store *s, struct spinedb_head *h)
{
    *h = s->head;
}

void spine_store_progress(const struct spine_store *s, struct msg_progress *p, size_t max)
{
    size_t n = s->n_done < max ? s->n_done : max;
    p->low = s->low;
    p->n_done = n;
    p->done = xcalloc(n ? n : 1, sizeof *p->done);
    if (n)
        memcpy(p->done, s->done, n * sizeof *p->done);
}

static uint64_t okey_of(const MDB_val *k)
{
    return k->mv_size == 8 ? spinedb_u64_get(k->mv_data) : 0;
}

/* Decide whether one outbox entry is due: 1 and *cmd filled when it is, 0 when
 * not (or unreadable), 2 when it was queued less than resend_ms ago — and so
 * is every later entry, keys being in queueing order. */
static int outbox_entry_due(struct spine_store *s, const MDB_val *k, const MDB_val *v, uint64_t now_ms,
                            struct tg_command *cmd)
{
    msgpack_unpacked up;
    char err[ERR_LEN];
    uint64_t queued;
    int due = 0;
    if (mp_unpack_exact(v->mv_data, v->mv_size, &up, err) != 0) {
        log_error("outbox entry %llu is unreadable: %s", (unsigned long long)okey_of(k), err);
        return 0;
    }
    if (mp_get_u64(&up.data, QUEUED_KEY, &queued, err) != 0 || msg_command_unpack(&up.data, cmd, err) != 0) {
        log_error("outbox entry %llu is malformed: %s", (unsigned long long)okey_of(k), err);
    } else if (now_ms < queued + s->resend_ms) {
        tg_command_free(cmd);
        due = 2;
    } else {
        struct sent_entry *e = sent_find(s, cmd->command_id);
        due = !e || now_ms >= e->sent_ms + s->resend_ms;
        if (!due)
            tg_command_free(cmd);
    }
    msgpack_unpacked_destroy(&up);
    return due;
}

int spine_store_outbox_get(struct spine_store *s, uint64_t okey, struct tg_command *cmd, char *err)
{
    MDB_txn *txn;
    msgpack_unpacked up;
    uint8_t kb[8];
    spinedb_u64_put(okey, kb);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_txn_begin(s->db->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return spinedb_err(err, "spine db read transaction", rc);
    rc = mdb_get(txn, s->db->outbox, &k, &v);
    if (rc) {
        mdb_txn_abort(txn);
        return rc == MDB_NOTFOUND ? 0 : spinedb_err(err, "spine db: read outbox", rc);
    }
    int found = -1;
    if (mp_unpack_exact(v.mv_data, v.mv_size, &up, err) == 0) {
        found = msg_command_unpack(&up.data, cmd, err) == 0 ? 1 : -1;
        msgpack_unpacked_destroy(&up);
    }
    mdb_txn_abort(txn);
    return found;
}

int spine_store_outbox_due(struct spine_store *s, uint64_t now_ms, size_t max, struct tg_command **cmds,
                           size_t *n, char *err)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t cap = 0;
    int rc;
    *cmds = NULL;
    *n = 0;
    if ((rc = mdb_txn_begin(s->db->env, NULL, MDB_RDONLY, &txn)) != 0)
        return spinedb_err(err, "spine db read transaction", rc);
    if ((rc = mdb_cursor_open(txn, s->db->outbox, &cur)) != 0) {
        mdb_txn_abort(txn);
        return spinedb_err(err, "spine db cursor", rc);
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct tg_command cmd;
        int due = outbox_entry_due(s, &k, &v, now_ms, &cmd);
        if (due == 2) {
            rc = MDB_NOTFOUND;       /* the rest is younger still */
            break;
        }
        if (!due)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *cmds = xrealloc(*cmds, cap * sizeof **cmds);
        }
        sent_set(s, cmd.command_id, now_ms);
        (*cmds)[(*n)++] = cmd;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND && *n < max) {
        for (size_t i = 0; i < *n; i++)
            tg_command_free(&(*cmds)[i]);
        free(*cmds);
        *cmds = NULL;
        *n = 0;
        return spinedb_err(err, "spine db cursor", rc);
    }
    return 0;
}

long spine_store_outbox_count(struct spine_store *s)
{
    MDB_txn *txn;
    MDB_stat st;
    if (mdb_txn_begin(s->db->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    int rc = mdb_stat(txn, s->db->outbox, &st);
    mdb_txn_abort(txn);
    return rc ? -1 : (long)st.ms_entries;
}

struct spinedb *spine_store_db(struct spine_store *s)
{
    return s->db;
}
