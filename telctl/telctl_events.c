/*
 * telctl_events.c - `telctl events` (query the spine database read-only),
 * `telctl tail` (follow the spine's live event stream) and `telctl verify`
 * (check the hash chain).  Part of the telctl CLI.
 */
#include "event.h"
#include "mp.h"
#include "spinedb.h"
#include "telctl.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

/* ---- the readable (plain-text) form ---- */

/* Length of the well-formed UTF-8 sequence at s[0..n) (s[0] >= 0x80) when it
 * encodes a printable character, else 0: not UTF-8 or a C1 control. */
static size_t utf8_printable_len(const unsigned char *s, size_t n)
{
    size_t len = tg_utf8_len(s, n);
    return len == 2 && tg_utf8_is_c1(s) ? 0 : len;
}

/*
 * Write s[0..n) to f so that it stays within its line and cannot pass for
 * other output (the strings come from webhooks): \n, \r, \t, \\, and \xNN
 * for every other control byte (below 0x20, 0x7f, the C1 controls) and every
 * byte that is not UTF-8.  Well-formed UTF-8 text is written as it is.
 * json_text: s is JSON text, whose backslashes already are escapes (and
 * which has no control bytes below 0x20), so backslashes are kept as they are.
 */
static void put_escaped(FILE *f, const char *s, size_t n, bool json_text)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len;
        if (c >= 0x20 && c < 0x7f) {
            if (c == '\\' && !json_text)
                fputc('\\', f);
            fputc(c, f);
            i++;
        } else if (c >= 0x80 && (len = utf8_printable_len(p + i, n - i)) > 0) {
            fwrite(p + i, 1, len, f);
            i += len;
        } else {
            if (c == '\n')
                fputs("\\n", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c == '\t')
                fputs("\\t", f);
            else
                fprintf(f, "\\x%02x", c);
            i++;
        }
    }
}

/* Write string field key of map m, escaped; "-" when absent or nil. */
static void line_str(FILE *f, const msgpack_object *m, const char *key)
{
    const msgpack_object *o = mp_map_get(m, key);
    if (o && o->type == MSGPACK_OBJECT_STR)
        put_escaped(f, o->via.str.ptr, o->via.str.size, false);
    else
        fputc('-', f);
}

/* One readable line for an event map (canonical or published form):
 * seq time type call_control_id from -> to data. */
static void print_readable(FILE *f, const msgpack_object *m)
{
    const msgpack_object *seq = mp_map_get(m, "seq"), *data = mp_map_get(m, "data");
    if (seq && seq->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        fprintf(f, "%" PRIu64, seq->via.u64);
    else
        fputc('-', f);
    fputc(' ', f);
    line_str(f, m, "time");
    fputc(' ', f);
    line_str(f, m, "type");
    fputc(' ', f);
    line_str(f, m, "call_control_id");
    fputc(' ', f);
    line_str(f, m, "from");
    fputs(" -> ", f);
    line_str(f, m, "to");
    if (data) {
        char *s = NULL;
        size_t len = 0, cap = 0;
        mp_to_json(data, &s, &len, &cap);
        fputc(' ', f);
        if (s)
            put_escaped(f, s, len, true);
        else
            fputs("{}", f);
        free(s);
    }
    fputc('\n', f);
}

/* Print one published event map (the live stream's form: every field,
 * hash included) as one JSON line or one readable line. */
static void print_published(const msgpack_object *m, bool json)
{
    if (!json) {
        print_readable(stdout, m);
        return;
    }
    char *s = NULL;
    size_t len = 0, cap = 0;
    mp_to_json(m, &s, &len, &cap);
    puts(s);
    free(s);
}

/* Print one stored event from its canonical msgpack bytes and its hash.
 * 0 or -1 with err. */
static int print_event(const uint8_t *canon, size_t len, const uint8_t *hash, bool json, char *err)
{
    if (json) {
        char *s;
        if (event_to_json(canon, len, hash, &s, err) != 0)
            return -1;
        puts(s);
        free(s);
        return 0;
    }
    msgpack_unpacked up;
    if (mp_unpack_exact(canon, len, &up, err) != 0)
        return -1;
    if (up.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&up);
        return tg_err(err, "event is not a map");
    }
    print_readable(stdout, &up.data);
    msgpack_unpacked_destroy(&up);
    return 0;
}

/* ---- events ---- */

struct events_query {
    const char *type_prefix;
    uint64_t limit;         /* 0 = no limit */
    uint64_t printed;
    bool json;
};

static int events_one(void *arg, uint64_t seq, const uint8_t *hash, const uint8_t *canon, size_t len, char *err)
{
    struct events_query *q = arg;
    struct event_view v;
    char why[ERR_LEN];
    if (q->limit && q->printed >= q->limit)
        return 1;
    if (event_canon_parse(canon, len, &v, why) != 0)
        return tg_err(err, "event %" PRIu64 " is not readable: %s", seq, why);
    if (q->type_prefix && strncmp(v.type, q->type_prefix, strlen(q->type_prefix)) != 0)
        return 0;
    if (print_event(canon, len, hash, q->json, why) != 0)
        return tg_err(err, "event %" PRIu64 " is not readable: %s", seq, why);
    q->printed++;
    return 0;
}

int telctl_events(const struct tg_config *cfg, int argc, char **argv)
{
    struct events_query q = {0};
    uint64_t from = 1;
    const char *cmd = argv[0], *val;
    int64_t num;
    char err[ERR_LEN];

    for (int i = 1; i < argc; i++) {
        int r;
        if (strcmp(argv[i], "--json") == 0) {
            q.json = true;
        } else if ((r = telctl_opt(argc, argv, &i, "--type", &val)) != 0) {
            if (r < 0)
                return telctl_usage(cmd, "--type needs a PREFIX");
            q.type_prefix = val;
        } else if ((r = telctl_opt(argc, argv, &i, "--from", &val)) != 0) {
            if (r < 0 || tg_parse_i64(val, 1, INT64_MAX, &num) != 0)
                return telctl_usage(cmd, "--from needs a sequence number >= 1");
            from = (uint64_t)num;
        } else if ((r = telctl_opt(argc, argv, &i, "--limit", &val)) != 0) {
            if (r < 0 || tg_parse_i64(val, 1, INT64_MAX, &num) != 0)
                return telctl_usage(cmd, "--limit needs a count >= 1");
            q.limit = (uint64_t)num;
        } else {
            return telctl_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }

    if (telctl_data_dir_check(cfg, cmd) != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;
    struct spinedb *db;
    if (spinedb_open(&db, cfg->data_dir, true, err) != 0)
        return telctl_fail(cmd, "%s", err);
    int rc = spinedb_events_foreach(db, from, events_one, &q, err);
    spinedb_close(&db);
    if (fflush(stdout) != 0)
        return telctl_fail(cmd, "write: %s", strerror(errno));
    return rc == 0 ? TELCTL_EXIT_OK : telctl_fail(cmd, "%s", err);
}

/* ---- tail ---- */

/*
 * What tail knows of the stream.  tail subscribes to every event and filters
 * by type itself, so that it sees every seq: the seq is gap-free, so a jump
 * means events were published while tail was not connected (the spine
 * restarted, and published before tail reconnected) or were dropped (tail
 * read too slowly).  The spine commits before it publishes, so the missed
 * events are in the database, and tail prints them from there (tail_fill).
 */
struct tail {
    const struct tg_config *cfg;
    const char *prefix;                     /* types to print ("" = all) */
    bool json;
    bool have_last;                         /* an event with seq and hash was received */
    uint64_t last_seq;                      /* the last one's seq and hash */
    uint8_t last_hash[EVENT_HASH_BYTES];
};

static bool type_wanted(const struct tail *t, const char *type, size_t len)
{
    size_t n = strlen(t->prefix);
    return len >= n && memcmp(type, t->prefix, n) == 0;
}

/* Hex hash field key of map m into out: 0, or -1 when absent or malformed. */
static int map_hash(const msgpack_object *m, const char *key, uint8_t out[EVENT_HASH_BYTES])
{
    const msgpack_object *o = mp_map_get(m, key);
    char hex[2 * EVENT_HASH_BYTES + 1];
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size != 2 * EVENT_HASH_BYTES)
        return -1;
    memcpy(hex, o->via.str.ptr, 2 * EVENT_HASH_BYTES);
    hex[2 * EVENT_HASH_BYTES] = '\0';
    return tg_unhex(hex, out, EVENT_HASH_BYTES);
}

/*
 * Print the missed events t->last_seq+1 .. to from the database, in order,
 * as long as they continue the chain: each one's prev_hash is the hash of
 * the one before (the first: of the last event received), and event `to` is
 * the one whose hash the event that arrived after the gap names (next_prev).
 * A database of another installation, or none (a spine on another host),
 * prints nothing.  Returns the first seq not printed (to + 1 when all were),
 * with err saying why otherwise.
 */
static uint64_t tail_fill(struct tail *t, uint64_t to, const uint8_t next_prev[EVENT_HASH_BYTES], char *err)
{
    struct spinedb *db;
    MDB_txn *txn;
    const uint8_t *hash, *canon;
    size_t len;
    struct event_view v;
    uint64_t seq = t->last_seq + 1;
    char why[ERR_LEN];

    if (spinedb_read_begin(t->cfg->data_dir, &db, &txn, why) != 0) {
        tg_err(err, "%s", why);
        return seq;
    }
    int rc = txn ? spinedb_event_get(db, txn, to, &hash, &canon, &len, why) : 1;
    if (rc == 0 && memcmp(hash, next_prev, EVENT_HASH_BYTES) != 0) {
        tg_err(why, "the database under %s holds another chain", t->cfg->data_dir);
        rc = -1;
    } else if (rc > 0) {
        tg_err(why, "not in the database under %s", t->cfg->data_dir);
    }
    if (rc != 0) {
        tg_err(err, "%s", why);
        spinedb_read_end(&db, txn);
        return seq;
    }
    for (; seq <= to; seq++) {
        rc = spinedb_event_get(db, txn, seq, &hash, &canon, &len, why);
        if (rc == 0 && event_canon_parse(canon, len, &v, why) != 0)
            rc = -1;
        if (rc == 0 && (v.seq != seq || memcmp(v.prev_hash, t->last_hash, EVENT_HASH_BYTES) != 0)) {
            tg_err(why, "event %" PRIu64 " in the database does not continue the chain", seq);
            rc = -1;
        }
        if (rc == 0 && type_wanted(t, v.type, strlen(v.type)) && print_event(canon, len, hash, t->json, why) != 0)
            rc = -1;
        if (rc != 0) {
            tg_err(err, "%s", rc > 0 ? "not in the database" : why);
            break;
        }
        memcpy(t->last_hash, hash, EVENT_HASH_BYTES);
    }
    spinedb_read_end(&db, txn);
    return seq;
}

/* One published event: fill a gap before it, then print it if its type is
 * wanted.  A bad one is reported and skipped. */
static void tail_event(struct tail *t, zmq_msg_t *type, zmq_msg_t *body)
{
    const uint8_t *buf = zmq_msg_data(body);
    size_t len = zmq_msg_size(body);
    uint8_t hash[EVENT_HASH_BYTES], prev[EVENT_HASH_BYTES];
    uint64_t seq;
    msgpack_unpacked up;
    char err[ERR_LEN];

    if (mp_unpack_exact(buf, len, &up, err) != 0) {
        fprintf(stderr, "telctl tail: skipped an unreadable event: %s\n", err);
        return;
    }
    if (up.data.type != MSGPACK_OBJECT_MAP) {
        fprintf(stderr, "telctl tail: skipped an unreadable event: event is not a map\n");
        msgpack_unpacked_destroy(&up);
        return;
    }
    bool chained = mp_get_u64(&up.data, "seq", &seq, err) == 0 && map_hash(&up.data, "hash", hash) == 0 &&
                   map_hash(&up.data, "prev_hash", prev) == 0;
    if (chained && t->have_last && seq > t->last_seq + 1) {
        uint64_t to = seq - 1, next = tail_fill(t, to, prev, err);
        fflush(stdout);
        if (next <= to)
            fprintf(stderr, "telctl tail: missed events %" PRIu64 "..%" PRIu64 " (%s; telctl events --from %"
                    PRIu64 " prints them)\n", next, to, err, next);
    }
    if (chained) {
        t->have_last = true;
        t->last_seq = seq;
        memcpy(t->last_hash, hash, EVENT_HASH_BYTES);
    }
    if (type_wanted(t, zmq_msg_data(type), zmq_msg_size(type)))
        print_published(&up.data, t->json);
    msgpack_unpacked_destroy(&up);
}

/* Receive one frame into a message the caller closes; -1 on error. */
static int recv_frame(void *sock, zmq_msg_t *m)
{
    zmq_msg_init(m);
    for (;;) {
        if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) >= 0)
            return 0;
        if (errno != EINTR) {
            zmq_msg_close(m);
            return -1;
        }
    }
}

/* Read one published message and hand it to tail_event; a malformed one is
 * reported and skipped. */
static void tail_one(void *sub, struct tail *t)
{
    zmq_msg_t type, body;
    if (recv_frame(sub, &type) != 0)
        return;
    if (!zmq_msg_more(&type)) {
        fprintf(stderr, "telctl tail: skipped a one-frame message\n");
        zmq_msg_close(&type);
        return;
    }
    if (recv_frame(sub, &body) != 0) {
        zmq_msg_close(&type);
        return;
    }
    bool extra = zmq_msg_more(&body);
    if (extra)
        fprintf(stderr, "telctl tail: skipped a message with more than two frames\n");
    else
        tail_event(t, &type, &body);
    fflush(stdout);
    zmq_msg_close(&type);
    zmq_msg_close(&body);
    while (extra) {
        zmq_msg_t more;
        if (recv_frame(sub, &more) != 0)
            break;
        extra = zmq_msg_more(&more);
        zmq_msg_close(&more);
    }
}

int telctl_tail(const struct tg_config *cfg, int argc, char **argv)
{
    const char *cmd = argv[0], *val;
    struct tail t = {.cfg = cfg, .prefix = ""};
    for (int i = 1; i < argc; i++) {
        int r;
        if (strcmp(argv[i], "--json") == 0) {
            t.json = true;
        } else if ((r = telctl_opt(argc, argv, &i, "--type", &val)) != 0) {
            if (r < 0)
                return telctl_usage(cmd, "--type needs a PREFIX");
            t.prefix = val;
        } else {
            return telctl_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return telctl_fail(cmd, "sigprocmask: %s", strerror(errno));
    int sigfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sigfd < 0)
        return telctl_fail(cmd, "signalfd: %s", strerror(errno));

    int rc = TELCTL_EXIT_OK, zero = 0;
    void *ctx = zmq_ctx_new();
    void *sub = ctx ? zmq_socket(ctx, ZMQ_SUB) : NULL;
    if (!sub) {
        rc = telctl_fail(cmd, "zmq: %s", zmq_strerror(errno));
        goto out;
    }
    zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero);
    /* Every type: --type is applied here, so that every seq is seen (struct tail). */
    if (zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0 || zmq_connect(sub, cfg->events_endpoint) != 0) {
        rc = telctl_fail(cmd, "connect %s: %s", cfg->events_endpoint, zmq_strerror(errno));
        goto out;
    }
    for (;;) {
        zmq_pollitem_t items[] = {
            {.socket = sub, .events = ZMQ_POLLIN},
            {.socket = NULL, .fd = sigfd, .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = telctl_fail(cmd, "poll: %s", zmq_strerror(errno));
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            break;                      /* SIGINT / SIGTERM: normal end */
        if (items[0].revents & ZMQ_POLLIN)
            tail_one(sub, &t);
    }
out:
    if (sub)
        zmq_close(sub);
    if (ctx)
        zmq_ctx_term(ctx);
    close(sigfd);
    return rc;
}

/* ---- verify ---- */

int telctl_verify(const struct tg_config *cfg, int argc, char **argv)
{
    const char *cmd = argv[0];
    struct spinedb *db;
    struct spinedb_verify_report rep;
    char err[ERR_LEN], hex[2 * EVENT_HASH_BYTES + 1];
    if (argc > 1)
        return telctl_usage(cmd, "unexpected argument '%s'", argv[1]);
    if (telctl_data_dir_check(cfg, cmd) != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;
    if (spinedb_open(&db, cfg->data_dir, true, err) != 0)
        return telctl_fail(cmd, "%s", err);
    int rc = spinedb_verify(db, &rep, err);
    spinedb_close(&db);
    if (rc < 0)
        return telctl_fail(cmd, "%s", err);
    if (rc > 0) {
        if (rep.failure == SPINEDB_VERIFY_CHAIN)
            fprintf(stderr, "verify: chain broken at seq %" PRIu64 ": %s\n", rep.bad_seq, err);
        else
            fprintf(stderr, "verify: %s\n", err);     /* the head record or the registry; err says which */
        return TELCTL_EXIT_FAIL;
    }
    tg_hex(rep.head, EVENT_HASH_BYTES, hex);
    printf("verify: ok, %" PRIu64 " events, head %s\n", rep.n_events, hex);
    return TELCTL_EXIT_OK;
}
