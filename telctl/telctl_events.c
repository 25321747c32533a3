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

/* Append string field key of map m to line, "-" when absent or nil. */
static void line_str(FILE *f, const msgpack_object *m, const char *key)
{
    const msgpack_object *o = mp_map_get(m, key);
    if (o && o->type == MSGPACK_OBJECT_STR)
        fprintf(f, "%.*s", (int)o->via.str.size, o->via.str.ptr);
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
        fprintf(f, " %s", s ? s : "{}");
        free(s);
    }
    fputc('\n', f);
}

/* Print one event from raw msgpack bytes (canonical when hash is non-NULL,
 * else the published form).  0 or -1 with err. */
static int print_event(const uint8_t *buf, size_t len, const uint8_t *hash, bool json, char *err)
{
    if (json) {
        char *s;
        int rc = hash ? event_to_json(buf, len, hash, &s, err) : event_full_to_json(buf, len, &s, err);
        if (rc != 0)
            return -1;
        puts(s);
        free(s);
        return 0;
    }
    msgpack_unpacked up;
    if (mp_unpack_exact(buf, len, &up, err) != 0)
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

/* Read and print one published event; a bad one is reported and skipped. */
static void tail_one(void *sub, bool json)
{
    zmq_msg_t type, body;
    char err[ERR_LEN];
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
    else if (print_event(zmq_msg_data(&body), zmq_msg_size(&body), NULL, json, err) != 0)
        fprintf(stderr, "telctl tail: skipped an unreadable event: %s\n", err);
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
    const char *cmd = argv[0], *prefix = "", *val;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        int r;
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if ((r = telctl_opt(argc, argv, &i, "--type", &val)) != 0) {
            if (r < 0)
                return telctl_usage(cmd, "--type needs a PREFIX");
            prefix = val;
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
    if (zmq_setsockopt(sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0 ||
        zmq_connect(sub, cfg->events_endpoint) != 0) {
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
            tail_one(sub, json);
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
    if (spinedb_open(&db, cfg->data_dir, true, err) != 0)
        return telctl_fail(cmd, "%s", err);
    int rc = spinedb_verify(db, &rep, err);
    spinedb_close(&db);
    if (rc < 0)
        return telctl_fail(cmd, "%s", err);
    if (rc > 0) {
        fprintf(stderr, "verify: chain broken at seq %" PRIu64 ": %s\n", rep.bad_seq, err);
        return TELCTL_EXIT_FAIL;
    }
    tg_hex(rep.head, EVENT_HASH_BYTES, hex);
    printf("verify: ok, %" PRIu64 " events, head %s\n", rep.n_events, hex);
    return TELCTL_EXIT_OK;
}
