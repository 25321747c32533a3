/*
 * spinedb.c - the spine's LMDB environment: open (read-write for the spine,
 * read-only for telctl), head record, event reads and the verification
 * behind `telctl verify`: the chain, the head record and the certificate
 * registry (see spinedb.h, protocol.md sections 4 and 5).
 */
#include "spinedb.h"
#include "log.h"
#include "registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD_KEY "head"
#define HEAD_LEN (8 + EVENT_HASH_BYTES)

void spinedb_u64_put(uint64_t v, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

uint64_t spinedb_u64_get(const void *in8)
{
    const uint8_t *p = in8;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

MDB_val spinedb_webhook_key(uint64_t occurred_us, const char *webhook_id, uint8_t buf[SPINEDB_WEBHOOK_KEY_MAX])
{
    size_t n = strlen(webhook_id);
    if (n > SPINEDB_WEBHOOK_KEY_MAX - 8)
        n = SPINEDB_WEBHOOK_KEY_MAX - 8;
    spinedb_u64_put(occurred_us, buf);
    memcpy(buf + 8, webhook_id, n);
    return (MDB_val){8 + n, buf};
}

int spinedb_webhook_known(const struct spinedb *db, MDB_txn *txn, uint64_t occurred_us, const char *webhook_id,
                          bool *known, char *err)
{
    uint8_t buf[SPINEDB_WEBHOOK_KEY_MAX];
    *known = false;
    if (!db->env || strlen(webhook_id) > SPINEDB_WEBHOOK_KEY_MAX - 8)
        return 0;
    MDB_val k = spinedb_webhook_key(occurred_us, webhook_id, buf), v;
    int rc = mdb_get(txn, db->webhooks, &k, &v);
    if (rc && rc != MDB_NOTFOUND)
        return spinedb_err(err, "spine db: look up webhook", rc);
    *known = rc == 0;
    return 0;
}

int spinedb_err(char *err, const char *what, int rc)
{
    return tg_err(err, "%s: %s", what, mdb_strerror(rc));
}

int spinedb_txn_begin_ro(const struct spinedb *db, MDB_txn **txn, char *err)
{
    int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(db->env, 0);
        rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, txn);
    }
    return rc ? spinedb_err(err, "spine db read transaction", rc) : 0;
}

int spinedb_read_begin(const char *data_dir, struct spinedb **db, MDB_txn **txn, char *err)
{
    *txn = NULL;
    if (spinedb_open(db, data_dir, true, err) != 0)
        return -1;
    if ((*db)->env && spinedb_txn_begin_ro(*db, txn, err) != 0) {
        spinedb_close(db);
        return -1;
    }
    return 0;
}

void spinedb_read_end(struct spinedb **db, MDB_txn *txn)
{
    if (txn)
        mdb_txn_abort(txn);
    spinedb_close(db);
}

static const char *const db_names[] = {"events", "ids", "webhooks", "jseq", "outbox", "meta",
                                       "certs", "phones"};

static MDB_dbi *db_slot(struct spinedb *db, size_t i)
{
    MDB_dbi *slots[] = {&db->events, &db->ids, &db->webhooks, &db->jseq, &db->outbox, &db->meta,
                        &db->certs, &db->phones};
    return slots[i];
}

/* phones holds several serials per number, sorted. */
static unsigned db_flags(size_t i)
{
    return strcmp(db_names[i], "phones") == 0 ? MDB_DUPSORT : 0;
}

/* Open every named database in txn.  1 when one is missing (read-only). */
static int dbis_open(struct spinedb *db, MDB_txn *txn, char *err)
{
    unsigned flags = db->readonly ? 0 : MDB_CREATE;
    for (size_t i = 0; i < ARRAY_LEN(db_names); i++) {
        int rc = mdb_dbi_open(txn, db_names[i], flags | db_flags(i), db_slot(db, i));
        if (rc == MDB_NOTFOUND && db->readonly)
            return 1;
        if (rc)
            return tg_err(err, "spine db: open database '%s': %s", db_names[i], mdb_strerror(rc));
    }
    return 0;
}

/* Where LMDB mapped the data file: the /proc/self/maps line of its device
 * and inode (mdb_env_info reports the address only for MDB_FIXEDMAP, and a
 * reader's map moves when it adopts a grown file). */
static int map_range(const struct spinedb *db, uintptr_t *lo, uintptr_t *hi)
{
    int fd;
    struct stat st;
    char line[512];
    if (mdb_env_get_fd(db->env, &fd) != 0 || fstat(fd, &st) != 0)
        return -1;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1;
    int rc = -1;
    while (rc != 0 && fgets(line, sizeof line, f)) {
        unsigned long a, b, off, ino;
        unsigned maj, mnr;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &a, &b, perms, &off, &maj, &mnr, &ino) == 7 &&
            ino == (unsigned long)st.st_ino && maj == major(st.st_dev) && mnr == minor(st.st_dev) &&
            off == 0) {
            *lo = a;
            *hi = b;
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

void spinedb_prefill(struct spinedb *db)
{
    MDB_envinfo info;
    MDB_stat ms;
    struct stat st;
    int fd;

    if (!db || !db->env || db->readonly || mdb_env_get_fd(db->env, &fd) != 0 ||
        mdb_env_info(db->env, &info) != 0 || mdb_env_stat(db->env, &ms) != 0 || fstat(fd, &st) != 0)
        return;
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
    if ((uint64_t)st.st_size >= used)
        tg_zeros_ahead(fd, used, (uint64_t)st.st_size, info.me_mapsize);
}

int spinedb_sync_file(const struct spinedb *db, char *err)
{
    int fd;
    if (!db->env || mdb_env_get_fd(db->env, &fd) != 0)
        return tg_err(err, "spine db: no open database file");
    if (fdatasync(fd) != 0)
        return tg_err(err, "spine db: fdatasync: %s", strerror(errno));
    return 0;
}

void spinedb_unmap_pages(struct spinedb *db)
{
    MDB_envinfo info;
    MDB_stat st;
    unsigned flags;
    uintptr_t lo, hi;
    if (!db || !db->env || mdb_env_get_flags(db->env, &flags) != 0 || (flags & MDB_WRITEMAP) ||
        mdb_env_info(db->env, &info) != 0 || mdb_env_stat(db->env, &st) != 0)
        return;
    /* A reader's map moves when it adopts a grown file (spinedb_txn_begin_ro),
     * so readers look it up every time; the writer's map stays put. */
    if (!db->readonly && db->map_lo) {
        lo = db->map_lo;
        hi = db->map_hi;
    } else if (map_range(db, &lo, &hi) != 0) {
        return;
    } else if (!db->readonly) {
        db->map_lo = lo;
        db->map_hi = hi;
    }
    /* Pages up to the last one in use; beyond it nothing was ever mapped. */
    size_t len = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
    if (len > hi - lo)
        len = hi - lo;
    if (madvise((void *)lo, len, MADV_DONTNEED) != 0)
        log_debug("spine db: madvise: %s", strerror(errno));
}

int spinedb_open(struct spinedb **out, const char *data_dir, bool readonly, char *err)
{
    struct spinedb *db = xcalloc(1, sizeof *db);
    char *dir = xasprintf("%s/spine", data_dir);
    char *file = xasprintf("%s/data.mdb", dir);
    MDB_txn *txn = NULL;
    struct stat st;
    int rc;

    db->readonly = readonly;
    *out = NULL;
    if (readonly) {
        if (stat(file, &st) != 0 && errno == ENOENT)
            goto empty;
    } else if (tg_mkdir_p(dir, err) != 0) {
        goto fail;
    }
    if ((rc = mdb_env_create(&db->env)) != 0) {
        spinedb_err(err, "mdb_env_create", rc);
        goto fail;
    }
    mdb_env_set_maxdbs(db->env, ARRAY_LEN(db_names) + 2);
    mdb_env_set_mapsize(db->env, SPINEDB_MAP_SIZE);
    /* MDB_NORDAHEAD: look-ups are random; read-ahead only inflates the
     * resident set with pages nobody reads. */
    /* MDB_NOMETASYNC (writer): a commit syncs its data pages and writes the
     * meta page without syncing it; spine_store_sync (or the next commit)
     * makes it durable.  The spine forwards a commit's commands in between,
     * one fdatasync earlier (protocol.md 6.1); a power cut there undoes the
     * transaction but never corrupts the database. */
    unsigned flags = MDB_NORDAHEAD | (readonly ? MDB_RDONLY : MDB_NOMETASYNC);
    if ((rc = mdb_env_open(db->env, dir, flags, 0640)) != 0) {
        tg_err(err, "spine db %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    if (readonly) {
        if (spinedb_txn_begin_ro(db, &txn, err) != 0)
            goto fail;
    } else if ((rc = mdb_txn_begin(db->env, NULL, 0, &txn)) != 0) {
        spinedb_err(err, "spine db write transaction", rc);
        goto fail;
    }
    rc = dbis_open(db, txn, err);
    if (rc < 0)
        goto fail;
    if (rc == 1) {                /* read-only, databases not created yet */
        mdb_txn_abort(txn);
        mdb_env_close(db->env);
        db->env = NULL;
        goto empty;
    }
    if ((rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        spinedb_err(err, "spine db commit", rc);
        goto fail;
    }
empty:
    free(dir);
    free(file);
    *out = db;
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (db->env)
        mdb_env_close(db->env);
    free(db);
    free(dir);
    free(file);
    return -1;
}

void spinedb_close(struct spinedb **db)
{
    if (!db || !*db)
        return;
    if ((*db)->env) {
        if (!(*db)->readonly)
            mdb_env_sync((*db)->env, 1);    /* the last meta page (MDB_NOMETASYNC) */
        mdb_env_close((*db)->env);
    }
    free(*db);
    *db = NULL;
}

/* The head record: 0 and *h (zeros and !*present when there is none), 1
 * with err when it is malformed, -1 with err on a database error. */
static int head_read(const struct spinedb *db, MDB_txn *txn, struct spinedb_head *h, bool *present, char *err)
{
    MDB_val k = {sizeof HEAD_KEY - 1, (void *)HEAD_KEY}, v;
    memset(h, 0, sizeof *h);
    *present = false;
    int rc = mdb_get(txn, db->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return spinedb_err(err, "spine db: read head", rc);
    if (v.mv_size != HEAD_LEN)
        return tg_err(err, "head record has %zu bytes, expected %d", v.mv_size, HEAD_LEN), 1;
    h->seq = spinedb_u64_get(v.mv_data);
    memcpy(h->hash, (const uint8_t *)v.mv_data + 8, EVENT_HASH_BYTES);
    *present = true;
    return 0;
}

int spinedb_head_get(const struct spinedb *db, MDB_txn *txn, struct spinedb_head *h, char *err)
{
    bool present;
    char why[ERR_LEN];
    int rc = head_read(db, txn, h, &present, why);
    if (rc == 0)
        return 0;
    return rc == 1 ? tg_err(err, "spine db: %s", why) : tg_err(err, "%s", why);
}

int spinedb_head_put(const struct spinedb *db, MDB_txn *txn, const struct spinedb_head *h, char *err)
{
    uint8_t buf[HEAD_LEN];
    spinedb_u64_put(h->seq, buf);
    memcpy(buf + 8, h->hash, EVENT_HASH_BYTES);
    MDB_val k = {sizeof HEAD_KEY - 1, (void *)HEAD_KEY}, v = {sizeof buf, buf};
    int rc = mdb_put(txn, db->meta, &k, &v, 0);
    return rc ? spinedb_err(err, "spine db: write head", rc) : 0;
}

int spinedb_event_get(const struct spinedb *db, MDB_txn *txn, uint64_t seq, const uint8_t **hash,
                      const uint8_t **canon, size_t *len, char *err)
{
    uint8_t kb[8];
    spinedb_u64_put(seq, kb);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, db->events, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc)
        return spinedb_err(err, "spine db: read event", rc);
    if (v.mv_size <= EVENT_HASH_BYTES)
        return tg_err(err, "spine db: event %llu is too short (%zu bytes)", (unsigned long long)seq, v.mv_size);
    *hash = v.mv_data;
    *canon = (const uint8_t *)v.mv_data + EVENT_HASH_BYTES;
    *len = v.mv_size - EVENT_HASH_BYTES;
    return 0;
}

int spinedb_events_foreach(const struct spinedb *db, uint64_t from_seq, spinedb_event_fn fn, void *arg,
                           char *err)
{
    if (!db->env)
        return 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    uint8_t kb[8];
    int rc, ret = 0;
    if (spinedb_txn_begin_ro(db, &txn, err) != 0)
        return -1;
    if ((rc = mdb_cursor_open(txn, db->events, &cur)) != 0) {
        mdb_txn_abort(txn);
        return spinedb_err(err, "spine db cursor", rc);
    }
    spinedb_u64_put(from_seq, kb);
    MDB_val k = {sizeof kb, kb}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size <= EVENT_HASH_BYTES) {
            ret = tg_err(err, "spine db: malformed event record (key %zu bytes, value %zu bytes)",
                         k.mv_size, v.mv_size);
            break;
        }
        int r = fn(arg, spinedb_u64_get(k.mv_data), v.mv_data, (const uint8_t *)v.mv_data + EVENT_HASH_BYTES,
                   v.mv_size - EVENT_HASH_BYTES, err);
        if (r < 0)
            ret = -1;
        if (r != 0)
            break;
    }
    if (ret == 0 && rc != 0 && rc != MDB_NOTFOUND)
        ret = spinedb_err(err, "spine db cursor", rc);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return ret;
}

/* Check one stored event against the previous one and parse it into *ev.
 * 0 good, 1 broken (err). */
static int verify_one(uint64_t key_seq, size_t key_len, const MDB_val *v, uint64_t expect,
                      const uint8_t prev[EVENT_HASH_BYTES], struct event_view *ev, char *err)
{
    uint8_t h[EVENT_HASH_BYTES];
    char why[ERR_LEN];

    if (key_len != 8)
        return tg_err(err, "malformed key of %zu bytes", key_len), 1;
    if (key_seq != expect)
        return tg_err(err, "seq gap: expected %llu, found %llu", (unsigned long long)expect,
                      (unsigned long long)key_seq), 1;
    if (v->mv_size <= EVENT_HASH_BYTES)
        return tg_err(err, "record of %zu bytes is too short", v->mv_size), 1;
    const uint8_t *canon = (const uint8_t *)v->mv_data + EVENT_HASH_BYTES;
    size_t len = v->mv_size - EVENT_HASH_BYTES;
    event_hash(canon, len, h);
    if (memcmp(h, v->mv_data, EVENT_HASH_BYTES) != 0)
        return tg_err(err, "stored hash does not match the event's content"), 1;
    if (event_canon_parse(canon, len, ev, why) != 0)
        return tg_err(err, "event does not parse: %s", why), 1;
    if (ev->seq != key_seq)
        return tg_err(err, "event says seq %llu", (unsigned long long)ev->seq), 1;
    if (memcmp(ev->prev_hash, prev, EVENT_HASH_BYTES) != 0)
        return tg_err(err, "prev_hash does not match the hash of the previous event"), 1;
    return 0;
}

/*
 * The chain part of spinedb_verify: every event from seq 1 (verify_one),
 * each good one also fed to the registry replay until the replay refuses one
 * (*reg_seq and reg_err keep the first).  0 when the events are intact, 1
 * when one is not (rep), -1 with err on a database error.
 */
static int chain_check(const struct spinedb *db, MDB_txn *txn, struct spinedb_verify_report *rep,
                       struct registry_replay *reg, uint64_t *reg_seq, char *reg_err, char *err)
{
    MDB_cursor *cur;
    MDB_val k, v;
    struct event_view ev;
    uint64_t expect = 1;
    int rc, ret = 0;
    if ((rc = mdb_cursor_open(txn, db->events, &cur)) != 0)
        return spinedb_err(err, "spine db cursor", rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t seq = k.mv_size == 8 ? spinedb_u64_get(k.mv_data) : 0;
        if (verify_one(seq, k.mv_size, &v, expect, rep->head, &ev, err) != 0) {
            rep->failure = SPINEDB_VERIFY_CHAIN;
            rep->bad_seq = expect;
            ret = 1;
            break;
        }
        if (*reg_seq == 0 &&
            registry_replay_event(reg, seq, ev.type, (const uint8_t *)v.mv_data + EVENT_HASH_BYTES,
                                  v.mv_size - EVENT_HASH_BYTES, reg_err) != 0)
            *reg_seq = seq;
        memcpy(rep->head, v.mv_data, EVENT_HASH_BYTES);
        rep->n_events = seq;
        expect = seq + 1;
    }
    if (ret == 0 && rc != MDB_NOTFOUND)
        ret = spinedb_err(err, "spine db cursor", rc);
    mdb_cursor_close(cur);
    return ret;
}

/*
 * The head record against the intact chain of rep->n_events events.  0 when
 * it names the last event; 1 (rep, err) when not; -1 with err on a database
 * error.  A head beyond the last event means events are missing at the end
 * of the log: a chain failure at the first of them.
 */
static int head_check(const struct spinedb *db, MDB_txn *txn, struct spinedb_verify_report *rep, char *err)
{
    struct spinedb_head head;
    bool present;
    unsigned long long n = rep->n_events;
    int rc = head_read(db, txn, &head, &present, err);
    if (rc < 0)
        return -1;
    if (rc == 0 && !present && n == 0)
        return 0;                       /* nothing appended yet */
    if (rc == 0 && present && head.seq > n) {
        rep->failure = SPINEDB_VERIFY_CHAIN;
        rep->bad_seq = n + 1;
        return tg_err(err, "events missing: the head record says the log ends at seq %llu, but it ends at "
                      "seq %llu", (unsigned long long)head.seq, n), 1;
    }
    rep->failure = SPINEDB_VERIFY_HEAD;
    if (rc == 1)
        return 1;                       /* malformed: err says how */
    if (!present)
        return tg_err(err, "head record is missing, but the log ends at seq %llu", n), 1;
    if (head.seq < n)
        return tg_err(err, "head record says the log ends at seq %llu, but it ends at seq %llu",
                      (unsigned long long)head.seq, n), 1;
    if (memcmp(head.hash, rep->head, EVENT_HASH_BYTES) != 0)
        return tg_err(err, "head record's hash is not the hash of the last event, seq %llu", n), 1;
    rep->failure = SPINEDB_VERIFY_OK;
    return 0;
}

int spinedb_verify(const struct spinedb *db, struct spinedb_verify_report *rep, char *err)
{
    memset(rep, 0, sizeof *rep);
    if (!db->env)
        return 0;
    MDB_txn *txn;
    if (spinedb_txn_begin_ro(db, &txn, err) != 0)
        return -1;
    struct registry_replay *reg = registry_replay_new();
    uint64_t reg_seq = 0;
    char reg_err[ERR_LEN];
    int rc = chain_check(db, txn, rep, reg, &reg_seq, reg_err, err);
    if (rc == 0)
        rc = head_check(db, txn, rep, err);
    if (rc == 0 && reg_seq != 0) {
        rep->failure = SPINEDB_VERIFY_REGISTRY;
        rep->bad_seq = reg_seq;
        tg_err(err, "%s", reg_err);
        rc = 1;
    } else if (rc == 0 && (rc = registry_replay_compare(reg, db, txn, &rep->bad_seq, err)) == 1) {
        rep->failure = SPINEDB_VERIFY_REGISTRY;
    }
    registry_replay_free(&reg);
    mdb_txn_abort(txn);
    return rc;
}
