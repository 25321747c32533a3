/*
 * ingress_redeliver.c - tracker of unacknowledged journal records, saved low
 * mark, start-up journal scan, parked copies and the park RESULT (see
 * ingress_redeliver.h, protocol.md section 6).  Used by the ingress.
 *
 * A tracked record moves through:
 *
 *   add (attempts 0) --published--> attempts n, due = now + after
 *        due, n < max_attempts  --> PUBLISH (attempt n + 1)
 *        due, n >= max_attempts --> PARK --parked--> parked, due = now + after
 *        due, parked            --> PARK_RESEND
 *   any state --PROGRESS low/done acknowledges it--> dropped
 */
#include "ingress_redeliver.h"
#include "event.h"
#include "journal.h"
#include "log.h"
#include "mp.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#define COMPACT_MIN_DEAD 4096   /* dead entries before a compaction is considered */
#define SHRINK_MIN_CAP 4096     /* arrays this big shrink by half when a quarter is used */
#define PARK_FIELD_MAX 256      /* longest body field copied into the park event */
#define PROGRESS_FILE_MAX 64

struct ent {
    uint64_t jseq, file, offset, due_ms;
    uint32_t len, attempts, gen;
    uint8_t live, parked;
};

/* A due time in the FIFO; stale when its entry is gone or was re-armed
 * (gen changed) since. */
struct due_item {
    uint64_t jseq, due_ms;
    uint32_t gen;
};

struct ingress_redeliver {
    uint64_t after_ms;
    uint32_t max_attempts;

    struct ent *ents;           /* [start, end) ordered by jseq */
    size_t cap, start, end;
    size_t live;
    uint64_t last_jseq;         /* largest jseq ever added */

    struct due_item *q;         /* ring: q[(qhead + i) % qcap], i < qlen */
    size_t qcap, qhead, qlen;
};

struct ingress_redeliver *ingress_redeliver_new(uint64_t after_ms, uint32_t max_attempts)
{
    struct ingress_redeliver *r = xcalloc(1, sizeof *r);
    r->after_ms = after_ms;
    r->max_attempts = max_attempts ? max_attempts : 1;
    return r;
}

void ingress_redeliver_free(struct ingress_redeliver **rp)
{
    if (!rp || !*rp)
        return;
    free((*rp)->ents);
    free((*rp)->q);
    free(*rp);
    *rp = NULL;
}

size_t ingress_redeliver_count(const struct ingress_redeliver *r)
{
    return r->live;
}

size_t ingress_redeliver_bytes(const struct ingress_redeliver *r)
{
    return r->cap * sizeof *r->ents + r->qcap * sizeof *r->q;
}

/* ---- due FIFO ---- */

/* Move the ring's items to a new array of ncap (>= qlen) slots, in order. */
static void q_resize(struct ingress_redeliver *r, size_t ncap)
{
    struct due_item *nq = xmalloc(ncap * sizeof *nq);
    for (size_t i = 0; i < r->qlen; i++)
        nq[i] = r->q[(r->qhead + i) % r->qcap];
    free(r->q);
    r->q = nq;
    r->qcap = ncap;
    r->qhead = 0;
}

static void q_push(struct ingress_redeliver *r, uint64_t jseq, uint64_t due_ms, uint32_t gen)
{
    if (r->qlen == r->qcap)
        q_resize(r, r->qcap ? 2 * r->qcap : 1024);
    r->q[(r->qhead + r->qlen) % r->qcap] = (struct due_item){jseq, due_ms, gen};
    r->qlen++;
}

static void q_pop(struct ingress_redeliver *r)
{
    r->qhead = (r->qhead + 1) % r->qcap;
    r->qlen--;
    if (r->qlen == 0)
        r->qhead = 0;
    /* A backlog's worth of memory goes back once it drains. */
    if (r->qcap >= SHRINK_MIN_CAP && r->qlen < r->qcap / 4)
        q_resize(r, r->qcap / 2);
}

/* ---- entries ---- */

/* Index of jseq in [start, end), or SIZE_MAX. */
static size_t ent_index(const struct ingress_redeliver *r, uint64_t jseq)
{
    size_t lo = r->start, hi = r->end;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ents[mid].jseq < jseq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < r->end && r->ents[lo].jseq == jseq)
        return lo;
    return SIZE_MAX;
}

static struct ent *ent_live(const struct ingress_redeliver *r, uint64_t jseq)
{
    size_t i = ent_index(r, jseq);
    if (i == SIZE_MAX || !r->ents[i].live)
        return NULL;
    return &r->ents[i];
}

/* Drop dead entries from the front; squeeze out dead ones in the middle
 * when they outnumber the live ones; halve the array when a quarter of it
 * is in use. */
static void ents_tidy(struct ingress_redeliver *r)
{
    while (r->start < r->end && !r->ents[r->start].live)
        r->start++;
    if (r->start == r->end) {
        r->start = r->end = 0;
    } else {
        size_t dead = r->end - r->start - r->live;
        if (dead >= COMPACT_MIN_DEAD && dead > r->live) {
            size_t w = 0;
            for (size_t i = r->start; i < r->end; i++)
                if (r->ents[i].live)
                    r->ents[w++] = r->ents[i];
            r->start = 0;
            r->end = w;
        }
    }
    size_t used = r->end - r->start, ncap = r->cap;
    while (ncap >= SHRINK_MIN_CAP && used < ncap / 4)
        ncap /= 2;
    if (ncap < r->cap) {
        memmove(r->ents, r->ents + r->start, used * sizeof *r->ents);
        r->start = 0;
        r->end = used;
        r->cap = ncap;
        r->ents = xrealloc(r->ents, ncap * sizeof *r->ents);
    }
}

int ingress_redeliver_add(struct ingress_redeliver *r, const struct ingress_redeliver_entry *e,
                          char *err)
{
    if (e->jseq == 0)
        return tg_err(err, "jseq 0 cannot be tracked");
    if (e->jseq <= r->last_jseq)
        return tg_err(err, "jseq %" PRIu64 " is not above the last tracked jseq %" PRIu64,
                      e->jseq, r->last_jseq);
    if (r->end == r->cap) {
        if (r->start > r->cap / 4) {
            memmove(r->ents, r->ents + r->start, (r->end - r->start) * sizeof *r->ents);
            r->end -= r->start;
            r->start = 0;
        } else {
            r->cap = r->cap ? 2 * r->cap : 1024;
            r->ents = xrealloc(r->ents, r->cap * sizeof *r->ents);
        }
    }
    r->ents[r->end++] = (struct ent){
        .jseq = e->jseq, .file = e->file, .offset = e->offset, .due_ms = e->due_ms,
        .len = e->len, .attempts = e->attempts, .gen = 0, .live = 1, .parked = e->parked,
    };
    r->live++;
    r->last_jseq = e->jseq;
    q_push(r, e->jseq, e->due_ms, 0);
    return 0;
}

static void ent_copy(const struct ent *x, struct ingress_redeliver_entry *out)
{
    *out = (struct ingress_redeliver_entry){
        .jseq = x->jseq, .file = x->file, .offset = x->offset, .len = x->len,
        .attempts = x->attempts, .parked = x->parked, .due_ms = x->due_ms,
    };
}

bool ingress_redeliver_find(const struct ingress_redeliver *r, uint64_t jseq,
                            struct ingress_redeliver_entry *out)
{
    const struct ent *x = ent_live(r, jseq);
    if (!x)
        return false;
    ent_copy(x, out);
    return true;
}

size_t ingress_redeliver_ack_low(struct ingress_redeliver *r, uint64_t low)
{
    size_t n = 0;
    for (size_t i = r->start; i < r->end && r->ents[i].jseq <= low; i++) {
        if (r->ents[i].live) {
            r->ents[i].live = 0;
            r->live--;
            n++;
        }
    }
    if (n)
        ents_tidy(r);
    return n;
}

bool ingress_redeliver_ack(struct ingress_redeliver *r, uint64_t jseq)
{
    struct ent *x = ent_live(r, jseq);
    if (!x)
        return false;
    x->live = 0;
    r->live--;
    ents_tidy(r);
    return true;
}

bool ingress_redeliver_drop(struct ingress_redeliver *r, uint64_t jseq)
{
    return ingress_redeliver_ack(r, jseq);
}

size_t ingress_redeliver_ack_progress(struct ingress_redeliver *r, const struct msg_progress *p)
{
    size_t n = ingress_redeliver_ack_low(r, p->low);
    for (size_t i = 0; i < p->n_done; i++)
        n += ingress_redeliver_ack(r, p->done[i]) ? 1 : 0;
    return n;
}

uint64_t ingress_redeliver_low(const struct ingress_redeliver *r, uint64_t journaled_upto)
{
    if (r->live == 0)
        return journaled_upto;
    /* ents_tidy keeps the front entry live whenever anything is. */
    return r->ents[r->start].jseq - 1;
}

enum ingress_redeliver_action ingress_redeliver_due(struct ingress_redeliver *r, uint64_t now_ms,
                                                    struct ingress_redeliver_entry *out)
{
    while (r->qlen > 0) {
        const struct due_item *it = &r->q[r->qhead];
        const struct ent *x = ent_live(r, it->jseq);
        if (!x || x->gen != it->gen) {
            q_pop(r);
            continue;
        }
        if (it->due_ms > now_ms)
            return INGRESS_REDELIVER_NONE;
        ent_copy(x, out);
        if (x->parked)
            return INGRESS_REDELIVER_PARK_RESEND;
        if (x->attempts >= r->max_attempts)
            return INGRESS_REDELIVER_PARK;
        return INGRESS_REDELIVER_PUBLISH;
    }
    return INGRESS_REDELIVER_NONE;
}

/* Give x a new due time; its old FIFO item goes stale. */
static void ent_rearm(struct ingress_redeliver *r, struct ent *x, uint64_t now_ms)
{
    x->gen++;
    x->due_ms = now_ms + r->after_ms;
    q_push(r, x->jseq, x->due_ms, x->gen);
}

uint32_t ingress_redeliver_published(struct ingress_redeliver *r, uint64_t jseq, uint64_t now_ms)
{
    struct ent *x = ent_live(r, jseq);
    if (!x)
        return 0;
    x->attempts++;
    ent_rearm(r, x, now_ms);
    return x->attempts;
}

bool ingress_redeliver_parked(struct ingress_redeliver *r, uint64_t jseq, uint64_t now_ms)
{
    struct ent *x = ent_live(r, jseq);
    if (!x)
        return false;
    x->parked = 1;
    ent_rearm(r, x, now_ms);
    return true;
}

/* ---- saved low mark ---- */

int ingress_redeliver_progress_load(const char *path, uint64_t *low, char *err)
{
    char *text = NULL;
    size_t len = 0;
    int64_t v;

    *low = 0;
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 0;
    if (tg_read_file(path, PROGRESS_FILE_MAX, &text, &len, err) != 0)
        return -1;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
        text[--len] = '\0';
    if (tg_parse_i64(text, 0, INT64_MAX, &v) != 0) {
        tg_err(err, "%s: expected one decimal number, found '%.40s'", path, text);
        free(text);
        return -1;
    }
    free(text);
    *low = (uint64_t)v;
    return 0;
}

/* Write data to path.tmp, fsync, rename over path, fsync the directory. */
static int file_replace(const char *path, const void *data, size_t len, char *err)
{
    char *tmp = xasprintf("%s.tmp", path);
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        tg_err(err, "open %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (tg_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        tg_err(err, "write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        tg_err(err, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = '\0';
    else
        strcpy(dir, slash ? "/" : ".");
    rc = journal_dir_sync(dir, err);
    free(dir);
out:
    free(tmp);
    return rc;
}

int ingress_redeliver_progress_save(const char *path, uint64_t low, char *err)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRIu64 "\n", low);
    return file_replace(path, buf, (size_t)n, err);
}

/* ---- start-up scan ---- */

int ingress_redeliver_scan(struct ingress_redeliver *r, const char *dir, uint64_t low,
                           uint64_t due_ms, size_t *added, char *err)
{
    char **names = NULL;
    size_t n = 0;

    *added = 0;
    if (journal_list(dir, &names, &n, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t first = strtoull(names[i], NULL, 10);
        uint64_t next_first = i + 1 < n ? strtoull(names[i + 1], NULL, 10) : 0;
        if (next_first && next_first - 1 <= low)
            continue;
        char *path = xasprintf("%s/%s", dir, names[i]);
        struct journal_reader *rd = NULL;
        char why[ERR_LEN];
        if (journal_reader_open(path, &rd, why) != 0) {
            log_error("journal scan: %s; its records are not re-published", why);
            free(path);
            continue;
        }
        struct journal_record rec;
        enum journal_status st;
        for (;;) {
            uint64_t off = journal_reader_good_offset(rd);
            st = journal_reader_next(rd, &rec, why);
            if (st != JOURNAL_OK)
                break;
            uint64_t len = journal_reader_good_offset(rd) - off;
            if (rec.jseq > low) {
                struct ingress_redeliver_entry e = {
                    .jseq = rec.jseq, .file = first, .offset = off, .len = (uint32_t)len,
                    .due_ms = due_ms,
                };
                char aerr[ERR_LEN];
                if (ingress_redeliver_add(r, &e, aerr) != 0)
                    log_warn("journal scan: %s: %s; record skipped", path, aerr);
                else
                    (*added)++;
            }
            journal_record_free(&rec);
        }
        if (st != JOURNAL_END)
            log_error("journal scan: %s; later records of this file are not re-published", why);
        journal_reader_close(&rd);
        free(path);
    }
    journal_names_free(&names, n);
    return 0;
}

/* ---- parking ---- */

int ingress_redeliver_park_write(const char *dir, uint64_t jseq, const uint8_t *body, size_t len,
                                 char **path_out, char *err)
{
    if (tg_mkdir_p(dir, err) != 0)
        return -1;
    char *path = xasprintf("%s/%" PRIu64 ".json", dir, jseq);
    if (file_replace(path, body, len, err) != 0) {
        free(path);
        return -1;
    }
    *path_out = path;
    return 0;
}

/* A string member usable as an id or event field, else NULL (borrowed). */
static const char *json_field(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > PARK_FIELD_MAX || strlen(s) != n)
        return NULL;
    return s;
}

void ingress_redeliver_park_encode(msgpack_sbuffer *sb, uint64_t jseq, uint32_t attempts,
                                   const uint8_t *body, size_t len, const char *actor,
                                   const char *file)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)body, len, 0, &jerr);
    const json_t *data = json_object_get(root, "data");     /* NULL-safe */
    const json_t *payload = json_object_get(data, "payload");
    const char *data_id = json_field(data, "id");
    const char *etype = json_field(data, "event_type");

    char *key = data_id ? xstrdup(data_id) : xasprintf("jseq:%" PRIu64, jseq);
    char *webhook_id = xasprintf("parked:%s", key);
    char id[EVENT_ID_LEN];
    event_id(key, "parked", id);

    msgpack_sbuffer dsb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&dsb);
    msgpack_packer_init(&pk, &dsb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    mp_pack_kv_u64(&pk, "jseq", jseq);
    mp_pack_kv_u64(&pk, "attempts", attempts);
    mp_pack_kv_str(&pk, "event_type", etype);
    mp_pack_kv_str(&pk, "file", file);

    char type[] = INGRESS_REDELIVER_PARK_EVENT;
    struct tg_event ev = {
        .type = type,
        .actor = (char *)actor,
        .id = id,
        .webhook_id = (char *)data_id,
        .call_control_id = (char *)json_field(payload, "call_control_id"),
        .call_session_id = (char *)json_field(payload, "call_session_id"),
        .from = (char *)json_field(payload, "from"),
        .to = (char *)json_field(payload, "to"),
        .data = (uint8_t *)dsb.data,
        .data_len = dsb.size,
    };
    struct msg_result m = {
        .jseq = jseq, .webhook_id = webhook_id, .events = &ev, .n_events = 1,
        .commands = NULL, .n_commands = 0,
    };
    msg_result_encode(sb, &m);
    msgpack_sbuffer_destroy(&dsb);
    free(webhook_id);
    free(key);
    json_decref(root);
}
