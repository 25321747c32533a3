/*
 * journal.c - journal record codec, dump file reader, listing and start-up
 * recovery (see journal.h, protocol.md section 3).  Used by the ingress and
 * by telctl replay.
 */
#include "journal.h"
#include "crc32c.h"
#include "log.h"
#include "mp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOURNAL_SUFFIX ".dump"
#define JOURNAL_CORRUPT_TRIES 100

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void journal_record_free(struct journal_record *rec)
{
    if (!rec)
        return;
    free(rec->ts);
    free(rec->sig);
    free(rec->body);
    memset(rec, 0, sizeof *rec);
}

int journal_record_encode(msgpack_sbuffer *sb, const struct journal_record *rec, char *err)
{
    static const uint8_t zero_hdr[JOURNAL_HDR_LEN];
    size_t start = sb->size;
    msgpack_packer pk;

    msgpack_sbuffer_write(sb, (const char *)zero_hdr, sizeof zero_hdr);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    mp_pack_kv_u64(&pk, "jseq", rec->jseq);
    mp_pack_kv_u64(&pk, "recv", rec->recv_us);
    mp_pack_kv_str(&pk, "ts", rec->ts);
    mp_pack_kv_str(&pk, "sig", rec->sig);
    mp_pack_cstr(&pk, "body");
    msgpack_pack_bin(&pk, rec->body_len);
    if (rec->body_len > 0)
        msgpack_pack_bin_body(&pk, rec->body, rec->body_len);

    size_t plen = sb->size - start - JOURNAL_HDR_LEN;
    if (plen > JOURNAL_MAX_PAYLOAD) {
        sb->size = start;
        return tg_err(err, "journal record of %zu bytes exceeds the maximum of %u",
                      plen, JOURNAL_MAX_PAYLOAD);
    }
    uint8_t *hdr = (uint8_t *)sb->data + start;
    put_be32(hdr, JOURNAL_MAGIC);
    put_be32(hdr + 4, (uint32_t)plen);
    put_be32(hdr + 8, crc32c(0, hdr + JOURNAL_HDR_LEN, plen));
    return 0;
}

/* Decode a payload map (CRC already checked). */
static int payload_decode(const uint8_t *p, size_t len, struct journal_record *rec, char *err)
{
    msgpack_unpacked up;
    const char *body;
    size_t body_len;

    memset(rec, 0, sizeof *rec);
    if (mp_unpack_exact(p, len, &up, err) != 0)
        return -1;
    const msgpack_object *m = &up.data;
    const msgpack_object *b = mp_map_get(m, "body");
    if (m->type != MSGPACK_OBJECT_MAP) {
        tg_err(err, "payload is not a map");
        goto fail;
    }
    if (mp_get_u64(m, "jseq", &rec->jseq, err) != 0 ||
        mp_get_u64(m, "recv", &rec->recv_us, err) != 0 ||
        mp_get_str(m, "ts", true, &rec->ts, err) != 0 ||
        mp_get_str(m, "sig", true, &rec->sig, err) != 0)
        goto fail;
    if (!b || b->type != MSGPACK_OBJECT_BIN) {
        tg_err(err, "field 'body': missing or not bin");
        goto fail;
    }
    if (mp_get_bytes(m, "body", &body, &body_len, err) != 0)
        goto fail;
    if (rec->jseq == 0) {
        tg_err(err, "field 'jseq' is 0");
        goto fail;
    }
    rec->body = xmalloc(body_len + 1);
    memcpy(rec->body, body, body_len);
    rec->body[body_len] = 0;
    rec->body_len = body_len;
    msgpack_unpacked_destroy(&up);
    return 0;
fail:
    msgpack_unpacked_destroy(&up);
    journal_record_free(rec);
    return -1;
}

/* Check a header; *plen gets the payload length.  0 ok, -1 with err. */
static int header_check(const uint8_t *hdr, uint32_t *plen, char *err)
{
    uint32_t magic = get_be32(hdr);
    if (magic != JOURNAL_MAGIC)
        return tg_err(err, "bad magic 0x%08" PRIx32, magic);
    *plen = get_be32(hdr + 4);
    if (*plen < 1 || *plen > JOURNAL_MAX_PAYLOAD)
        return tg_err(err, "payload length %" PRIu32 " out of range", *plen);
    return 0;
}

int journal_record_decode(const void *buf, size_t len, struct journal_record *rec, char *err)
{
    const uint8_t *p = buf;
    uint32_t plen;

    memset(rec, 0, sizeof *rec);
    if (len < JOURNAL_HDR_LEN)
        return tg_err(err, "record of %zu bytes is shorter than its header", len);
    if (header_check(p, &plen, err) != 0)
        return -1;
    if ((size_t)plen != len - JOURNAL_HDR_LEN)
        return tg_err(err, "payload length %" PRIu32 " but %zu bytes follow the header",
                      plen, len - JOURNAL_HDR_LEN);
    if (crc32c(0, p + JOURNAL_HDR_LEN, plen) != get_be32(p + 8))
        return tg_err(err, "CRC mismatch");
    return payload_decode(p + JOURNAL_HDR_LEN, plen, rec, err);
}

const char *journal_status_name(enum journal_status st)
{
    switch (st) {
    case JOURNAL_OK: return "ok";
    case JOURNAL_END: return "end";
    case JOURNAL_TORN: return "torn";
    case JOURNAL_CORRUPT: return "corrupt";
    }
    return "?";
}

/* ---- reader ---- */

struct journal_reader {
    int fd;
    char *path;
    uint64_t good_off;          /* end of the last good record */
    uint64_t last_jseq;
    enum journal_status sticky; /* JOURNAL_OK until a terminal status */
    uint8_t *buf;
    size_t cap;
};

int journal_reader_open(const char *path, struct journal_reader **out, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tg_err(err, "open %s: %s", path, strerror(errno));
    struct journal_reader *r = xcalloc(1, sizeof *r);
    r->fd = fd;
    r->path = xstrdup(path);
    r->sticky = JOURNAL_OK;
    *out = r;
    return 0;
}

void journal_reader_close(struct journal_reader **rp)
{
    if (!rp || !*rp)
        return;
    struct journal_reader *r = *rp;
    close(r->fd);
    free(r->path);
    free(r->buf);
    free(r);
    *rp = NULL;
}

uint64_t journal_reader_good_offset(const struct journal_reader *r)
{
    return r->good_off;
}

uint64_t journal_reader_last_jseq(const struct journal_reader *r)
{
    return r->last_jseq;
}

/* Read up to n bytes; returns the count (< n only at end of file) or -1. */
static ssize_t read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (uint8_t *)buf + got, n - got);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* 1 when everything from the current position to end of file is zero
 * (after already-read bytes pre[0..npre) which are checked too), 0 when
 * not, -1 on a read error.  *seen (if not NULL) counts the bytes read. */
static int rest_is_zero(int fd, const uint8_t *pre, size_t npre, uint64_t *seen)
{
    uint8_t chunk[4096];
    if (seen)
        *seen = 0;
    for (size_t i = 0; i < npre; i++)
        if (pre[i])
            return 0;
    for (;;) {
        ssize_t k = read_full(fd, chunk, sizeof chunk);
        if (k < 0)
            return -1;
        if (seen)
            *seen += (uint64_t)k;
        for (ssize_t i = 0; i < k; i++)
            if (chunk[i])
                return 0;
        if ((size_t)k < sizeof chunk)
            return 1;
    }
}

static enum journal_status reader_stop(struct journal_reader *r, enum journal_status st)
{
    r->sticky = st;
    return st;
}

enum journal_status journal_reader_next(struct journal_reader *r, struct journal_record *rec,
                                        char *err)
{
    uint8_t hdr[JOURNAL_HDR_LEN];
    uint32_t plen;
    char why[ERR_LEN];

    memset(rec, 0, sizeof *rec);
    if (r->sticky != JOURNAL_OK) {
        tg_err(err, "%s: reader already at %s (offset %" PRIu64 ")", r->path,
               journal_status_name(r->sticky), r->good_off);
        return r->sticky;
    }
    ssize_t k = read_full(r->fd, hdr, sizeof hdr);
    if (k < 0) {
        tg_err(err, "%s: read: %s", r->path, strerror(errno));
        return reader_stop(r, JOURNAL_CORRUPT);
    }
    if (k == 0)
        return reader_stop(r, JOURNAL_END);
    /* Zeros to the end: the ingress writes them ahead of its records (see
     * ingress_journal.c), and no record was ever acknowledged there. */
    if ((size_t)k < sizeof hdr || header_check(hdr, &plen, why) != 0) {
        int z = rest_is_zero(r->fd, hdr, (size_t)k, NULL);
        if (z == 1)
            return reader_stop(r, JOURNAL_END);
        if ((size_t)k < sizeof hdr) {
            tg_err(err, "%s: incomplete header (%zd bytes) at offset %" PRIu64, r->path, k,
                   r->good_off);
            return reader_stop(r, JOURNAL_TORN);
        }
        tg_err(err, "%s: %s at offset %" PRIu64, r->path, why, r->good_off);
        return reader_stop(r, JOURNAL_CORRUPT);
    }
    if (r->cap < plen) {
        free(r->buf);
        r->buf = xmalloc(plen);
        r->cap = plen;
    }
    k = read_full(r->fd, r->buf, plen);
    if (k < 0) {
        tg_err(err, "%s: read: %s", r->path, strerror(errno));
        return reader_stop(r, JOURNAL_CORRUPT);
    }
    if ((size_t)k < plen) {
        tg_err(err, "%s: incomplete payload (%zd of %" PRIu32 " bytes) at offset %" PRIu64,
               r->path, k, plen, r->good_off);
        return reader_stop(r, JOURNAL_TORN);
    }
    if (crc32c(0, r->buf, plen) != get_be32(hdr + 8)) {
        /* Zeros after it, and nothing else: the last write, over
         * pre-filled zeros, never completed. */
        uint64_t after = 0;
        if (rest_is_zero(r->fd, NULL, 0, &after) == 1 && after > 0) {
            tg_err(err, "%s: incomplete last record (CRC mismatch, zeros after it) at offset %"
                   PRIu64, r->path, r->good_off);
            return reader_stop(r, JOURNAL_TORN);
        }
        tg_err(err, "%s: CRC mismatch in record at offset %" PRIu64, r->path, r->good_off);
        return reader_stop(r, JOURNAL_CORRUPT);
    }
    if (payload_decode(r->buf, plen, rec, why) != 0) {
        tg_err(err, "%s: record at offset %" PRIu64 ": %s", r->path, r->good_off, why);
        return reader_stop(r, JOURNAL_CORRUPT);
    }
    if (rec->jseq <= r->last_jseq) {
        tg_err(err, "%s: record at offset %" PRIu64 ": jseq %" PRIu64 " after %" PRIu64,
               r->path, r->good_off, rec->jseq, r->last_jseq);
        journal_record_free(rec);
        return reader_stop(r, JOURNAL_CORRUPT);
    }
    r->last_jseq = rec->jseq;
    r->good_off += JOURNAL_HDR_LEN + plen;
    return JOURNAL_OK;
}

/* ---- files ---- */

void journal_file_name(uint64_t jseq, char out[JOURNAL_NAME_LEN])
{
    snprintf(out, JOURNAL_NAME_LEN, "%016llu" JOURNAL_SUFFIX, (unsigned long long)jseq);
}

static int name_is_dump(const char *name)
{
    if (strlen(name) != JOURNAL_NAME_LEN - 1)
        return 0;
    for (int i = 0; i < 16; i++)
        if (name[i] < '0' || name[i] > '9')
            return 0;
    return strcmp(name + 16, JOURNAL_SUFFIX) == 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int journal_list(const char *dir, char ***names, size_t *n, char *err)
{
    DIR *d = opendir(dir);
    size_t cap = 0;

    *names = NULL;
    *n = 0;
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return tg_err(err, "opendir %s: %s", dir, strerror(errno));
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno != 0) {
                tg_err(err, "readdir %s: %s", dir, strerror(errno));
                closedir(d);
                journal_names_free(names, *n);
                *n = 0;
                return -1;
            }
            break;
        }
        if (!name_is_dump(de->d_name))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *names = xrealloc(*names, cap * sizeof **names);
        }
        (*names)[(*n)++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof **names, name_cmp);
    return 0;
}

void journal_names_free(char ***names, size_t n)
{
    if (!names || !*names)
        return;
    for (size_t i = 0; i < n; i++)
        free((*names)[i]);
    free(*names);
    *names = NULL;
}

int journal_dir_sync(const char *dir, char *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return tg_err(err, "open %s: %s", dir, strerror(errno));
    if (fsync(fd) != 0) {
        tg_err(err, "fsync %s: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* The first free name of path.corrupt, path.corrupt.1, ...; NULL if none
 * (caller frees). */
static char *corrupt_name(const char *path)
{
    struct stat st;
    for (int i = 0; i < JOURNAL_CORRUPT_TRIES; i++) {
        char *to = i == 0 ? xasprintf("%s.corrupt", path) : xasprintf("%s.corrupt.%d", path, i);
        if (stat(to, &st) != 0 && errno == ENOENT)
            return to;
        free(to);
    }
    return NULL;
}

/* Rename dir/name to a free .corrupt name. */
static int quarantine(const char *dir, const char *name, char *err)
{
    char *from = xasprintf("%s/%s", dir, name);
    char *to = corrupt_name(from);
    int rc = -1;

    if (!to)
        tg_err(err, "rename %s: no free .corrupt name", from);
    else if (rename(from, to) != 0)
        tg_err(err, "rename %s: %s", from, strerror(errno));
    else
        rc = 0;
    if (rc == 0)
        log_error("journal: %s renamed to %s and kept for the operator", from, to);
    free(from);
    free(to);
    return rc;
}

/* Copy dir/name, whole, to a free .corrupt name (synced) for the operator. */
static int keep_copy(const char *dir, const char *name, char *err)
{
    char *from = xasprintf("%s/%s", dir, name);
    char *to = corrupt_name(from);
    char buf[65536];
    int in = -1, out = -1, rc = -1;
    ssize_t k;

    if (!to) {
        tg_err(err, "copy %s: no free .corrupt name", from);
        goto done;
    }
    if ((in = open(from, O_RDONLY | O_CLOEXEC)) < 0 ||
        (out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) < 0) {
        tg_err(err, "copy %s to %s: %s", from, to, strerror(errno));
        goto done;
    }
    while ((k = read(in, buf, sizeof buf)) > 0)
        if (tg_write_all(out, buf, (size_t)k) != 0)
            break;
    if (k != 0 || fsync(out) != 0) {
        tg_err(err, "copy %s to %s: %s", from, to, strerror(errno));
        unlink(to);
        goto done;
    }
    rc = 0;
    log_error("journal: %s copied to %s and kept for the operator", from, to);
done:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    free(from);
    free(to);
    return rc;
}

static int truncate_to(const char *path, uint64_t off, char *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return tg_err(err, "open %s: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0) {
        tg_err(err, "truncate %s to %" PRIu64 ": %s", path, off, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int journal_recover(const char *dir, uint64_t *next_jseq, char *err)
{
    char **names = NULL;
    size_t n = 0;
    uint64_t max_jseq = 0;
    uint64_t records = 0;
    int rc = -1;

    err[0] = '\0';
    if (tg_mkdir_p(dir, err) != 0)
        return -1;
    if (journal_list(dir, &names, &n, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char *path = xasprintf("%s/%s", dir, names[i]);
        struct journal_reader *r = NULL;
        struct journal_record rec;
        char why[ERR_LEN] = "";
        enum journal_status st;
        uint64_t first = 0;

        if (journal_reader_open(path, &r, err) != 0) {
            free(path);
            goto out;
        }
        while ((st = journal_reader_next(r, &rec, why)) == JOURNAL_OK) {
            if (first == 0)
                first = rec.jseq;
            records++;
            journal_record_free(&rec);
        }
        uint64_t last = journal_reader_last_jseq(r);
        uint64_t good = journal_reader_good_offset(r);
        journal_reader_close(&r);
        if (last > max_jseq)
            max_jseq = last;
        /* A file is named after the next jseq when it was opened: even an
         * empty one (older files deleted once processed) says that every
         * jseq below its name was handed out already. */
        uint64_t named = strtoull(names[i], NULL, 10);
        if (named > 0 && named - 1 > max_jseq)
            max_jseq = named - 1;
        if (first != 0 && strtoull(names[i], NULL, 10) != first)
            log_warn("journal: %s starts with jseq %" PRIu64 ", not the one its name says",
                     path, first);

        int fail = 0;
        struct stat fst;
        if (st == JOURNAL_END && stat(path, &fst) == 0 && (uint64_t)fst.st_size > good) {
            /* The zeros a writer kept ahead of its records: the ingress
             * resumes at the file's size (and a file with no record may be
             * the one it resumes in). */
            log_debug("journal: cutting %s to %" PRIu64 " bytes (zeros after the last record)",
                      names[i], good);
            fail = truncate_to(path, good, err);
        } else if (st == JOURNAL_TORN && i == n - 1) {
            log_warn("journal: %s; truncating to %" PRIu64 " bytes (last good record)", why, good);
            fail = truncate_to(path, good, err);
        } else if (st != JOURNAL_END) {
            log_error("journal: %s%s", why,
                      st == JOURNAL_TORN ? " (torn, but not the newest file)" : "");
            /* Records past the damage may have been published (and, in an
             * older file, acknowledged): never hand out a jseq the file
             * could hold. */
            if (stat(path, &fst) == 0) {
                uint64_t bound = strtoull(names[i], NULL, 10) +
                                 (uint64_t)fst.st_size / (JOURNAL_HDR_LEN + 1);
                if (bound > max_jseq)
                    max_jseq = bound;
            }
            if (i == n - 1) {
                /* The newest file: a power cut can leave a hole (a later
                 * page written, an earlier one not), and only records no
                 * sync covered -- never acknowledged -- can lie behind it.
                 * Keep a copy for the operator and cut the file at the
                 * damage, so the good records before it stay in service. */
                log_error("journal: cutting the newest file %s at %" PRIu64 " bytes (last good "
                          "record)", names[i], good);
                fail = keep_copy(dir, names[i], err);
                if (fail == 0)
                    fail = truncate_to(path, good, err);
            } else {
                fail = quarantine(dir, names[i], err);
            }
            if (fail == 0)
                fail = journal_dir_sync(dir, err);
        }
        free(path);
        if (fail != 0)
            goto out;
    }
    *next_jseq = max_jseq + 1;
    log_info("journal: %zu file(s), %" PRIu64 " good record(s), next jseq %" PRIu64,
             n, records, *next_jseq);
    rc = 0;
out:
    journal_names_free(&names, n);
    return rc;
}

/* ---- random access and pruning ---- */

int journal_record_pread(int fd, uint64_t off, size_t len, struct journal_record *rec, char *err)
{
    memset(rec, 0, sizeof *rec);
    if (len < JOURNAL_HDR_LEN + 1 || len > JOURNAL_HDR_LEN + JOURNAL_MAX_PAYLOAD)
        return tg_err(err, "record length %zu out of range", len);
    uint8_t *buf = xmalloc(len);
    size_t got = 0;
    while (got < len) {
        ssize_t k = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            tg_err(err, "pread at offset %" PRIu64 ": %s", off, strerror(errno));
            free(buf);
            return -1;
        }
        if (k == 0) {
            tg_err(err, "record at offset %" PRIu64 " ends past the end of the file (%zu of %zu bytes)",
                   off, got, len);
            free(buf);
            return -1;
        }
        got += (size_t)k;
    }
    char why[ERR_LEN];
    int rc = journal_record_decode(buf, len, rec, why);
    if (rc != 0)
        tg_err(err, "record at offset %" PRIu64 ": %s", off, why);
    free(buf);
    return rc;
}

bool journal_file_prunable(uint64_t next_first, uint64_t low, int64_t age_s, int64_t retention_s)
{
    if (next_first == 0)
        return false;
    if (next_first - 1 > low)
        return false;
    return age_s >= retention_s;
}

int journal_prune(const char *dir, uint64_t current_first, uint64_t low, int64_t retention_s,
                  int64_t now_s, size_t *deleted, size_t *remaining, char *err)
{
    char **names = NULL;
    size_t n = 0;
    int rc = 0;

    *deleted = 0;
    *remaining = 0;
    if (journal_list(dir, &names, &n, err) != 0)
        return -1;
    *remaining = n;
    for (size_t i = 0; i + 1 < n; i++) {
        uint64_t first = strtoull(names[i], NULL, 10);
        uint64_t next_first = strtoull(names[i + 1], NULL, 10);
        if (first >= current_first || next_first - 1 > low)
            break;      /* names sort by jseq: nothing later qualifies */
        char *path = xasprintf("%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0) {
            rc = tg_err(err, "stat %s: %s", path, strerror(errno));
            free(path);
            break;
        }
        if (!journal_file_prunable(next_first, low, now_s - (int64_t)st.st_mtime, retention_s)) {
            free(path);
            continue;
        }
        if (unlink(path) != 0) {
            rc = tg_err(err, "unlink %s: %s", path, strerror(errno));
            free(path);
            break;
        }
        free(path);
        (*deleted)++;
        (*remaining)--;
    }
    if (*deleted > 0) {
        char why[ERR_LEN];
        if (journal_dir_sync(dir, why) != 0 && rc == 0)
            rc = tg_err(err, "%s", why);
    }
    journal_names_free(&names, n);
    return rc;
}
