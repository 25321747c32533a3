/*
 * journal_test.c - unit tests of the journal (common/journal.c): record
 * round trips, the reader's statuses, start-up recovery (torn tail truncated,
 * corrupt files renamed, next jseq), and the ingress's group-commit writer
 * (ingress/ingress_journal.c) with concurrent appenders and rotation, and
 * the zeros it writes ahead of its records;
 * reading one record by offset and deleting processed dump files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"
#include "tmpdir.h"
#include "log.h"
#include "../../ingress/ingress_journal.h"

static int setup(void **state)
{
    return tmpdir_setup(state, "journal_test");
}

static int teardown(void **state)
{
    return tmpdir_teardown(state);
}

static void make_record(struct journal_record *r, uint64_t jseq, const char *body)
{
    memset(r, 0, sizeof *r);
    r->jseq = jseq;
    r->recv_us = 1700000000000000u + jseq;
    r->ts = jseq % 2 ? "1700000000" : NULL;
    r->sig = jseq % 2 ? "c2lnbmF0dXJl" : NULL;
    r->body = (uint8_t *)body;
    r->body_len = strlen(body);
}

/* Write records first..first+n-1 to dir/<name of first>.dump; returns the
 * path (static buffer) and each record's end offset in ends[]. */
static const char *write_file(const char *dir, uint64_t first, size_t n, size_t *ends)
{
    static char path[256];
    char name[JOURNAL_NAME_LEN], err[ERR_LEN], body[64];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < n; i++) {
        struct journal_record r;
        snprintf(body, sizeof body, "{\"data\":{\"id\":\"w%llu\"}}", (unsigned long long)(first + i));
        make_record(&r, first + i, body);
        assert_int_equal(journal_record_encode(&sb, &r, err), 0);
        if (ends)
            ends[i] = sb.size;
    }
    journal_file_name(first, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(sb.data, 1, sb.size, f), sb.size);
    fclose(f);
    msgpack_sbuffer_destroy(&sb);
    return path;
}

static off_t file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return st.st_size;
}

static void append_bytes(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct journal_record in, out;
    char err[ERR_LEN];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);

    make_record(&in, 7, "{\"data\":{}}");
    assert_int_equal(journal_record_encode(&sb, &in, err), 0);
    assert_int_equal((uint8_t)sb.data[0], 0x54);
    assert_int_equal((uint8_t)sb.data[3], 0x31);
    assert_int_equal(journal_record_decode(sb.data, sb.size, &out, err), 0);
    assert_int_equal(out.jseq, 7);
    assert_int_equal(out.recv_us, in.recv_us);
    assert_string_equal(out.ts, "1700000000");
    assert_string_equal(out.sig, "c2lnbmF0dXJl");
    assert_int_equal(out.body_len, in.body_len);
    assert_memory_equal(out.body, in.body, in.body_len);
    journal_record_free(&out);
    assert_null(out.body);

    /* nil headers and a binary body with NULs */
    static const uint8_t bin[] = {0, 1, 2, 0, 255};
    sb.size = 0;
    make_record(&in, 8, "");
    in.body = (uint8_t *)bin;
    in.body_len = sizeof bin;
    assert_int_equal(journal_record_encode(&sb, &in, err), 0);
    assert_int_equal(journal_record_decode(sb.data, sb.size, &out, err), 0);
    assert_null(out.ts);
    assert_null(out.sig);
    assert_int_equal(out.body_len, sizeof bin);
    assert_memory_equal(out.body, bin, sizeof bin);
    journal_record_free(&out);

    /* any flipped payload byte fails the CRC; a flipped magic byte too */
    sb.data[sb.size - 2] ^= 1;
    assert_int_equal(journal_record_decode(sb.data, sb.size, &out, err), -1);
    assert_non_null(strstr(err, "CRC"));
    sb.data[sb.size - 2] ^= 1;
    sb.data[1] ^= 1;
    assert_int_equal(journal_record_decode(sb.data, sb.size, &out, err), -1);
    assert_non_null(strstr(err, "magic"));
    sb.data[1] ^= 1;
    assert_int_equal(journal_record_decode(sb.data, sb.size - 1, &out, err), -1);
    msgpack_sbuffer_destroy(&sb);
}

/* Read path: n_ok good records, then status st with the reader's good
 * offset at good (and, if why is set, an error containing it). */
static void expect_read(const char *path, int n_ok, enum journal_status st, size_t good,
                        const char *why)
{
    struct journal_reader *r = NULL;
    struct journal_record rec;
    char err[ERR_LEN] = "";
    assert_int_equal(journal_reader_open(path, &r, err), 0);
    for (int i = 0; i < n_ok; i++) {
        assert_int_equal(journal_reader_next(r, &rec, err), JOURNAL_OK);
        journal_record_free(&rec);
    }
    assert_int_equal(journal_reader_next(r, &rec, err), st);
    assert_int_equal(journal_reader_good_offset(r), good);
    if (why && !strstr(err, why))
        fail_msg("expected \"%s\" in: %s", why, err);
    journal_reader_close(&r);
}

static void test_reader(void **state)
{
    struct tmp *t = *state;
    size_t ends[3];
    const char *path = write_file(t->dir, 1, 3, ends);
    struct journal_reader *r = NULL;
    struct journal_record rec;
    char err[ERR_LEN];

    assert_int_equal(journal_reader_open(path, &r, err), 0);
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(journal_reader_next(r, &rec, err), JOURNAL_OK);
        assert_int_equal(rec.jseq, i);
        assert_int_equal(journal_reader_good_offset(r), ends[i - 1]);
        journal_record_free(&rec);
    }
    assert_int_equal(journal_reader_next(r, &rec, err), JOURNAL_END);
    assert_int_equal(journal_reader_next(r, &rec, err), JOURNAL_END);
    assert_int_equal(journal_reader_last_jseq(r), 3);
    journal_reader_close(&r);
    assert_null(r);

    /* a torn header, then a torn payload */
    append_bytes(path, "TGJ", 3);
    expect_read(path, 3, JOURNAL_TORN, ends[2], NULL);
    assert_int_equal(truncate(path, (off_t)ends[1] + 20), 0);
    expect_read(path, 2, JOURNAL_TORN, ends[1], NULL);

    /* a bad length and a CRC mismatch are corrupt */
    path = write_file(t->dir, 1, 3, ends);
    flip_byte(path, (off_t)ends[0] + 4);    /* length of record 2: +2^30 */
    expect_read(path, 1, JOURNAL_CORRUPT, ends[0], "out of range");
    path = write_file(t->dir, 1, 3, ends);
    flip_byte(path, (off_t)ends[1] - 3);
    expect_read(path, 1, JOURNAL_CORRUPT, ends[0], "CRC");

    /* zeros after the last record (what the ingress writes ahead) end the
     * file cleanly, also fewer than a header's worth */
    static const uint8_t zeros[5000];
    path = write_file(t->dir, 1, 3, ends);
    append_bytes(path, zeros, sizeof zeros);
    expect_read(path, 3, JOURNAL_END, ends[2], NULL);
    path = write_file(t->dir, 1, 3, ends);
    append_bytes(path, zeros, 7);
    expect_read(path, 3, JOURNAL_END, ends[2], NULL);

    /* a non-zero byte after the zeros is damage, not an end */
    append_bytes(path, zeros, 100);
    append_bytes(path, "x", 1);
    expect_read(path, 3, JOURNAL_CORRUPT, ends[2], NULL);

    /* a last record whose CRC fails with only zeros after it is a write
     * over pre-filled zeros that never completed: torn; with nothing after
     * it, it stays corrupt */
    path = write_file(t->dir, 1, 3, ends);
    flip_byte(path, (off_t)ends[2] - 3);
    expect_read(path, 2, JOURNAL_CORRUPT, ends[1], "CRC");
    append_bytes(path, zeros, sizeof zeros);
    expect_read(path, 2, JOURNAL_TORN, ends[1], "incomplete last record");
}

static void test_list(void **state)
{
    struct tmp *t = *state;
    char **names = NULL;
    size_t n = 0;
    char err[ERR_LEN];

    write_file(t->dir, 10, 1, NULL);
    write_file(t->dir, 2, 1, NULL);
    write_file(t->dir, 100, 1, NULL);
    char other[256];
    snprintf(other, sizeof other, "%s/0000000000000005.dump.corrupt", t->dir);
    append_bytes(other, "x", 1);
    snprintf(other, sizeof other, "%s/notes.txt", t->dir);
    append_bytes(other, "x", 1);
    assert_int_equal(journal_list(t->dir, &names, &n, err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "0000000000000002.dump");
    assert_string_equal(names[1], "0000000000000010.dump");
    assert_string_equal(names[2], "0000000000000100.dump");
    journal_names_free(&names, n);
    assert_null(names);

    char missing[128];
    snprintf(missing, sizeof missing, "%s/none", t->dir);
    assert_int_equal(journal_list(missing, &names, &n, err), 0);
    assert_int_equal(n, 0);
}

static void test_recover_empty(void **state)
{
    struct tmp *t = *state;
    char sub[128], err[ERR_LEN];
    uint64_t next = 0;
    snprintf(sub, sizeof sub, "%s/journal", t->dir);
    assert_int_equal(journal_recover(sub, &next, err), 0);
    assert_int_equal(next, 1);
    assert_int_equal(access(sub, F_OK), 0);
}

static void test_recover_torn_tail(void **state)
{
    struct tmp *t = *state;
    size_t ends[4];
    char err[ERR_LEN];
    uint64_t next = 0;

    write_file(t->dir, 1, 3, NULL);
    const char *p = write_file(t->dir, 4, 4, ends);
    char newest[256];
    snprintf(newest, sizeof newest, "%s", p);
    assert_int_equal(truncate(newest, (off_t)ends[3] - 5), 0);   /* record 7 torn */
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 7);
    assert_int_equal(file_size(newest), (off_t)ends[2]);

    /* zeros after the last record (written ahead by the ingress, or a size
     * extended whose data never came) are cut off */
    static const uint8_t zeros[100];
    append_bytes(newest, zeros, sizeof zeros);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 7);
    assert_int_equal(file_size(newest), (off_t)ends[2]);

    /* ... in an older file too (the ingress rotated, its cut was not yet on
     * disk): the file stays in service */
    char older[256];
    snprintf(older, sizeof older, "%s/0000000000000001.dump", t->dir);
    off_t older_size = file_size(older);
    append_bytes(older, zeros, sizeof zeros);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 7);
    assert_int_equal(file_size(older), older_size);

    /* recovering again changes nothing */
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 7);
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(journal_list(t->dir, &names, &n, err), 0);
    assert_int_equal(n, 2);
    journal_names_free(&names, n);
}

static void test_recover_corrupt(void **state)
{
    struct tmp *t = *state;
    size_t ends[3];
    char err[ERR_LEN], old[256], corrupt[300];
    uint64_t next = 0;

    /* CRC mismatch in the middle of an older file: renamed, kept */
    snprintf(old, sizeof old, "%s", write_file(t->dir, 1, 3, ends));
    flip_byte(old, (off_t)ends[1] - 2);
    write_file(t->dir, 4, 2, NULL);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    /* past the good records (..5) and whatever 1.dump could hold */
    uint64_t bound = 1 + ends[2] / 13 + 1;
    assert_int_equal(next, bound > 6 ? bound : 6);
    assert_int_equal(access(old, F_OK), -1);
    snprintf(corrupt, sizeof corrupt, "%s.corrupt", old);
    assert_int_equal(file_size(corrupt), (off_t)ends[2]);

    /* a torn tail in a file that is not the newest: renamed as well */
    snprintf(old, sizeof old, "%s", write_file(t->dir, 6, 3, ends));
    assert_int_equal(truncate(old, (off_t)ends[2] - 1), 0);
    write_file(t->dir, 9, 1, NULL);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_true(next >= 10);
    assert_true(next > 6 + (ends[2] - 1) / 13);
    assert_int_equal(access(old, F_OK), -1);

    /* damage in the newest file that is not a torn tail (a power cut can
     * leave a hole: only unsynced records lie behind it): a whole copy is
     * kept, the file is cut at the damage, and the next jseq is past
     * anything the file could have held (10..12 here) */
    snprintf(old, sizeof old, "%s", write_file(t->dir, 10, 3, ends));
    flip_byte(old, 0);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_true(next > 12);
    assert_true(next <= 10 + ends[2] / 13 + 1);
    assert_int_equal(file_size(old), 0);
    snprintf(corrupt, sizeof corrupt, "%s.corrupt", old);
    assert_int_equal(file_size(corrupt), (off_t)ends[2]);
    snprintf(old, sizeof old, "%s", write_file(t->dir, 10, 3, ends));
    flip_byte(old, (off_t)ends[1] + 1);     /* magic of record 12 */
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_true(next > 12);
    assert_int_equal(file_size(old), (off_t)ends[1]);     /* records 10 and 11 stay */
    snprintf(corrupt, sizeof corrupt, "%s.corrupt.1", old);   /* .corrupt was taken */
    assert_int_equal(file_size(corrupt), (off_t)ends[2]);
    struct journal_reader *r = NULL;
    struct journal_record rec;
    assert_int_equal(journal_reader_open(old, &r, err), 0);
    for (uint64_t j = 10; j <= 11; j++) {
        assert_int_equal(journal_reader_next(r, &rec, err), JOURNAL_OK);
        assert_int_equal(rec.jseq, j);
        journal_record_free(&rec);
    }
    assert_int_equal(journal_reader_next(r, &rec, err), JOURNAL_END);
    journal_reader_close(&r);

    char **names = NULL;
    size_t n = 0;
    assert_int_equal(journal_list(t->dir, &names, &n, err), 0);
    assert_int_equal(n, 3);     /* 4.dump, 9.dump and 10.dump */
    journal_names_free(&names, n);
}

/* ---- the ingress's group-commit writer ---- */

#define APPENDERS 8
#define PER_THREAD 40

struct appender {
    struct ingress_journal *j;
    int id;
    uint64_t jseqs[PER_THREAD];
    int failures;
};

static void *appender_main(void *arg)
{
    struct appender *a = arg;
    char body[600], err[ERR_LEN];
    for (int i = 0; i < PER_THREAD; i++) {
        memset(body, 'x', sizeof body);
        snprintf(body, 40, "{\"t\":%d,\"i\":%d}", a->id, i);
        struct journal_record r;
        make_record(&r, 0, body);
        r.body_len = sizeof body;
        if (ingress_journal_append(a->j, &r, &a->jseqs[i], err) != 0)
            a->failures++;
    }
    return NULL;
}

static void test_group_commit_and_rotation(void **state)
{
    struct tmp *t = *state;
    static struct ingress_metrics m;
    char err[ERR_LEN];
    uint64_t next = 0;

    ingress_metrics_init(&m);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    struct ingress_journal_opts o = {
        .dir = t->dir, .next_jseq = next, .max_file_bytes = 16384, .metrics = &m,
    };
    struct ingress_journal *j = NULL;
    assert_int_equal(ingress_journal_start(&o, &j, err), 0);

    struct appender a[APPENDERS];
    pthread_t th[APPENDERS];
    for (int i = 0; i < APPENDERS; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].j = j;
        a[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, appender_main, &a[i]), 0);
    }
    for (int i = 0; i < APPENDERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(ingress_journal_health(j, err), 0);
    ingress_journal_stop(&j);
    assert_null(j);

    /* every append got a distinct jseq in 1..N, each thread's increasing */
    const uint64_t total = APPENDERS * PER_THREAD;
    uint8_t seen[APPENDERS * PER_THREAD + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < APPENDERS; i++) {
        assert_int_equal(a[i].failures, 0);
        for (int k = 0; k < PER_THREAD; k++) {
            uint64_t s = a[i].jseqs[k];
            assert_true(s >= 1 && s <= total);
            assert_int_equal(seen[s], 0);
            seen[s] = 1;
            if (k > 0)
                assert_true(s > a[i].jseqs[k - 1]);
        }
    }
    assert_int_equal(atomic_load(&m.journal_records), total);
    assert_true(atomic_load(&m.journal_batches) >= 1);
    assert_true(atomic_load(&m.journal_batches) <= total);

    /* rotated into several files, each named by its first jseq, all readable */
    char **names = NULL;
    size_t n = 0;
    assert_int_equal(journal_list(t->dir, &names, &n, err), 0);
    assert_true(n >= 2);
    uint64_t expect = 1;
    for (size_t f = 0; f < n; f++) {
        char path[256];
        struct journal_reader *r = NULL;
        struct journal_record rec;
        snprintf(path, sizeof path, "%s/%s", t->dir, names[f]);
        assert_int_equal(journal_reader_open(path, &r, err), 0);
        bool first = true;
        enum journal_status st;
        while ((st = journal_reader_next(r, &rec, err)) == JOURNAL_OK) {
            if (first)
                assert_int_equal(strtoull(names[f], NULL, 10), rec.jseq);
            first = false;
            assert_int_equal(rec.jseq, expect);
            assert_int_equal(rec.body_len, 600);
            expect++;
            journal_record_free(&rec);
        }
        assert_int_equal(st, JOURNAL_END);
        journal_reader_close(&r);
    }
    assert_int_equal(expect, total + 1);
    journal_names_free(&names, n);

    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, total + 1);
}

static void test_write_failure_reported(void **state)
{
    struct tmp *t = *state;
    static struct ingress_metrics m;
    char err[ERR_LEN];
    uint64_t jseq = 0;

    /* /dev/full makes every write fail with ENOSPC */
    if (access("/dev/full", W_OK) != 0)
        skip();
    char link[256];
    snprintf(link, sizeof link, "%s/0000000000000001.dump", t->dir);
    assert_int_equal(symlink("/dev/full", link), 0);
    ingress_metrics_init(&m);
    struct ingress_journal_opts o = {
        .dir = t->dir, .next_jseq = 1, .max_file_bytes = 1 << 20, .metrics = &m,
    };
    struct ingress_journal *j = NULL;
    assert_int_equal(ingress_journal_start(&o, &j, err), 0);
    struct journal_record r;
    make_record(&r, 0, "{}");
    assert_int_equal(ingress_journal_append(j, &r, &jseq, err), -1);
    assert_non_null(strstr(err, "No space"));
    assert_int_equal(ingress_journal_health(j, err), -1);
    assert_non_null(strstr(err, "No space"));
    assert_int_equal(atomic_load(&m.journal_failed_batches), 1);
    ingress_journal_stop(&j);
}

/* The first fdatasync fails with EIO, later ones are real. */
static atomic_int sync_calls;

static int sync_first_fails(int fd)
{
    if (atomic_fetch_add(&sync_calls, 1) == 0) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static void test_sync_failure_skips_jseqs(void **state)
{
    struct tmp *t = *state;
    static struct ingress_metrics m;
    char err[ERR_LEN];
    uint64_t jseq = 0;
    struct journal_record r;

    atomic_store(&sync_calls, 0);
    ingress_metrics_init(&m);
    struct ingress_journal_opts o = {
        .dir = t->dir, .next_jseq = 1, .max_file_bytes = 1 << 20, .metrics = &m,
        .sync = sync_first_fails,
    };
    struct ingress_journal *j = NULL;
    assert_int_equal(ingress_journal_start(&o, &j, err), 0);

    /* A's sync fails: 503 material, and /health says why */
    make_record(&r, 0, "{\"w\":\"A\"}");
    assert_int_equal(ingress_journal_append(j, &r, &jseq, err), -1);
    assert_non_null(strstr(err, "fdatasync"));
    assert_non_null(strstr(err, "Input/output error"));
    assert_int_equal(ingress_journal_health(j, err), -1);
    assert_non_null(strstr(err, "fdatasync"));
    assert_int_equal(atomic_load(&m.journal_failed_batches), 1);
    assert_int_equal(atomic_load(&m.journal_records), 0);

    /* B succeeds, and gets jseq 2: A's may have been published, so it is
     * skipped, never reused */
    make_record(&r, 0, "{\"w\":\"B\"}");
    assert_int_equal(ingress_journal_append(j, &r, &jseq, err), 0);
    assert_int_equal(jseq, 2);
    assert_int_equal(ingress_journal_health(j, err), 0);
    ingress_journal_stop(&j);

    /* A was cut off the file: B is its only record, and a restart goes on
     * after B */
    char path[256];
    struct journal_reader *rd = NULL;
    struct journal_record rec;
    snprintf(path, sizeof path, "%s/0000000000000001.dump", t->dir);
    assert_int_equal(journal_reader_open(path, &rd, err), 0);
    assert_int_equal(journal_reader_next(rd, &rec, err), JOURNAL_OK);
    assert_int_equal(rec.jseq, 2);
    assert_int_equal(rec.body_len, strlen("{\"w\":\"B\"}"));
    assert_memory_equal(rec.body, "{\"w\":\"B\"}", rec.body_len);
    journal_record_free(&rec);
    assert_int_equal(journal_reader_next(rd, &rec, err), JOURNAL_END);
    journal_reader_close(&rd);
    uint64_t next = 0;
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 3);
}

/* Append one record with body "{\"n\":<i>}"; returns its jseq. */
static uint64_t append_one(struct ingress_journal *j, int i)
{
    char body[32], err[ERR_LEN];
    struct journal_record r;
    uint64_t jseq = 0;
    snprintf(body, sizeof body, "{\"n\":%d}", i);
    make_record(&r, 0, body);
    assert_int_equal(ingress_journal_append(j, &r, &jseq, err), 0);
    return jseq;
}

/* Read path to its end: the number of records, which must end cleanly,
 * and the offset after the last one. */
static size_t count_records(const char *path, uint64_t *end)
{
    struct journal_reader *rd = NULL;
    struct journal_record rec;
    char err[ERR_LEN];
    enum journal_status st;
    size_t n = 0;
    assert_int_equal(journal_reader_open(path, &rd, err), 0);
    while ((st = journal_reader_next(rd, &rec, err)) == JOURNAL_OK) {
        n++;
        journal_record_free(&rec);
    }
    assert_int_equal(st, JOURNAL_END);
    *end = journal_reader_good_offset(rd);
    journal_reader_close(&rd);
    return n;
}

static void test_prefilled_file(void **state)
{
    struct tmp *t = *state;
    static struct ingress_metrics m;
    char err[ERR_LEN], path[256];
    uint64_t next = 0, end = 0;

    ingress_metrics_init(&m);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    struct ingress_journal_opts o = {
        .dir = t->dir, .next_jseq = next, .max_file_bytes = 1 << 20, .metrics = &m,
    };
    struct ingress_journal *j = NULL;
    assert_int_equal(ingress_journal_start(&o, &j, err), 0);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(append_one(j, i), (uint64_t)i);

    /* while it runs, zeros lie ahead of the records, and readers stop at
     * them */
    snprintf(path, sizeof path, "%s/0000000000000001.dump", t->dir);
    assert_int_equal(count_records(path, &end), 3);
    assert_true(file_size(path) >= (off_t)end + 64 * 1024);

    /* stopping cuts them off */
    ingress_journal_stop(&j);
    assert_int_equal(file_size(path), (off_t)end);

    /* after a crash (zeros still there) recovery cuts them, and the next
     * run goes on after the last record, in a new file */
    static const uint8_t zeros[8192];
    append_bytes(path, zeros, sizeof zeros);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 4);
    assert_int_equal(file_size(path), (off_t)end);
    o.next_jseq = next;
    assert_int_equal(ingress_journal_start(&o, &j, err), 0);
    assert_int_equal(append_one(j, 4), 4);
    ingress_journal_stop(&j);
    assert_int_equal(count_records(path, &end), 3);
    snprintf(path, sizeof path, "%s/0000000000000004.dump", t->dir);
    assert_int_equal(count_records(path, &end), 1);
    assert_int_equal(file_size(path), (off_t)end);

    /* a file with no record yet, pre-filled when the ingress died, is the
     * one the next run resumes in: it must start at offset 0 */
    snprintf(path, sizeof path, "%s/0000000000000005.dump", t->dir);
    int fd = open(path, O_WRONLY | O_CREAT, 0640);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, zeros, sizeof zeros), (ssize_t)sizeof zeros);
    close(fd);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 5);
    assert_int_equal(file_size(path), 0);
    o.next_jseq = next;
    assert_int_equal(ingress_journal_start(&o, &j, err), 0);
    assert_int_equal(append_one(j, 5), 5);
    ingress_journal_stop(&j);
    assert_int_equal(count_records(path, &end), 1);
}

static void test_record_pread(void **state)
{
    struct tmp *t = *state;
    size_t ends[5];
    char err[ERR_LEN];
    const char *path = write_file(t->dir, 10, 5, ends);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    for (size_t i = 0; i < 5; i++) {
        struct journal_record rec;
        size_t off = i ? ends[i - 1] : 0;
        assert_int_equal(journal_record_pread(fd, off, ends[i] - off, &rec, err), 0);
        assert_int_equal(rec.jseq, 10 + i);
        char body[64];
        snprintf(body, sizeof body, "{\"data\":{\"id\":\"w%zu\"}}", 10 + i);
        assert_int_equal(rec.body_len, strlen(body));
        assert_memory_equal(rec.body, body, rec.body_len);
        journal_record_free(&rec);
    }
    struct journal_record rec;
    /* wrong offset: not a record header */
    assert_int_equal(journal_record_pread(fd, 1, ends[0], &rec, err), -1);
    assert_non_null(strstr(err, "magic"));
    /* wrong length: the CRC or the length check fails */
    assert_int_equal(journal_record_pread(fd, 0, ends[0] - 1, &rec, err), -1);
    /* past the end of the file */
    assert_int_equal(journal_record_pread(fd, ends[4] - 4, ends[0], &rec, err), -1);
    assert_non_null(strstr(err, "past the end"));
    assert_int_equal(journal_record_pread(fd, 0, 0, &rec, err), -1);
    close(fd);
}

static void test_file_prunable(void **state)
{
    (void)state;
    /* newest file (no successor) is never deletable */
    assert_false(journal_file_prunable(0, 1000, 99999, 0));
    /* file [1, 5): deletable when low >= 4 */
    assert_false(journal_file_prunable(5, 3, 10, 0));
    assert_true(journal_file_prunable(5, 4, 10, 0));
    assert_true(journal_file_prunable(5, 100, 0, 0));
    /* retention: age must reach it */
    assert_false(journal_file_prunable(5, 4, 59, 60));
    assert_true(journal_file_prunable(5, 4, 60, 60));
}

static int path_exists(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void set_age(const char *dir, const char *name, time_t age_s)
{
    char path[256];
    struct timespec ts[2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= age_s;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_prune(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN], sub[256], corrupt[256];
    size_t deleted, remaining;
    int64_t now = (int64_t)time(NULL);

    write_file(t->dir, 1, 3, NULL);     /* 1..3 */
    write_file(t->dir, 4, 3, NULL);     /* 4..6 */
    write_file(t->dir, 7, 2, NULL);     /* 7..8, being written */
    snprintf(corrupt, sizeof corrupt, "%s/0000000000000000.dump.corrupt", t->dir);
    append_bytes(corrupt, "x", 1);
    snprintf(sub, sizeof sub, "%s/parked", t->dir);
    assert_int_equal(mkdir(sub, 0750), 0);

    /* nothing acknowledged beyond 2: file 1 covers 1..3, keep all */
    assert_int_equal(journal_prune(t->dir, 7, 2, 0, now, &deleted, &remaining, err), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(remaining, 3);

    /* retention: files are fresh, a one-hour retention keeps them */
    assert_int_equal(journal_prune(t->dir, 7, 8, 3600, now, &deleted, &remaining, err), 0);
    assert_int_equal(deleted, 0);

    /* low 5: only file 1 is fully acknowledged; age it past retention */
    set_age(t->dir, "0000000000000001.dump", 7200);
    set_age(t->dir, "0000000000000004.dump", 7200);
    assert_int_equal(journal_prune(t->dir, 7, 5, 3600, now, &deleted, &remaining, err), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(remaining, 2);
    assert_false(path_exists(t->dir, "0000000000000001.dump"));
    assert_true(path_exists(t->dir, "0000000000000004.dump"));

    /* everything acknowledged: the current file (7) stays, so do the
     * corrupt file and parked/ */
    assert_int_equal(journal_prune(t->dir, 7, 100, 0, now, &deleted, &remaining, err), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(remaining, 1);
    assert_false(path_exists(t->dir, "0000000000000004.dump"));
    assert_true(path_exists(t->dir, "0000000000000007.dump"));
    assert_true(path_exists(t->dir, "0000000000000000.dump.corrupt"));
    assert_true(path_exists(t->dir, "parked"));
}

/* An empty file left after older ones were pruned keeps the numbering. */
static void test_recover_empty_named_file(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN], path[256];
    uint64_t next = 0;
    snprintf(path, sizeof path, "%s/0000000000000042.dump", t->dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(journal_recover(t->dir, &next, err), 0);
    assert_int_equal(next, 42);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test_setup_teardown(test_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_and_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_failure_skips_jseqs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefilled_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_pread, setup, teardown),
        cmocka_unit_test(test_file_prunable),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_empty_named_file, setup, teardown),
    };
    log_init("journal_test");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
