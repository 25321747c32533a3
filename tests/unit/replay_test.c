/*
 * replay_test.c - unit tests of the input side of `telctl replay`
 * (telctl/telctl_replay_source.c): reading several dump files in order past
 * torn, corrupt and missing files (a torn tail is expected only in the last
 * file), the record count, the terminal progress line and the
 * live-directory check.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "tmpdir.h"
#include "../../telctl/telctl.h"

static int setup(void **state)
{
    return tmpdir_setup(state, "replay_test");
}

static int teardown(void **state)
{
    return tmpdir_teardown(state);
}

/* Encode records first..first+n-1 (body "body-<jseq>") into sb. */
static void encode_records(msgpack_sbuffer *sb, uint64_t first, size_t n)
{
    char err[ERR_LEN], body[32];
    for (size_t i = 0; i < n; i++) {
        struct journal_record r = {.jseq = first + i, .recv_us = 1700000000000000u + first + i};
        snprintf(body, sizeof body, "body-%llu", (unsigned long long)(first + i));
        r.body = (uint8_t *)body;
        r.body_len = strlen(body);
        assert_int_equal(journal_record_encode(sb, &r, err), 0);
    }
}

static char *write_file(const struct tmp *t, const char *name, const void *buf, size_t len)
{
    char *path = xasprintf("%s/%s", t->dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Read everything from src; bodies of the records are appended to got
 * (space separated), problems counted. */
static size_t drain(struct replay_source *src, char *got, size_t cap, size_t *problems, char *last_err)
{
    struct journal_record rec;
    char err[ERR_LEN];
    const char *path;
    size_t n = 0;
    enum replay_status st;

    got[0] = '\0';
    *problems = 0;
    while ((st = replay_source_next(src, &rec, &path, err)) != REPLAY_DONE) {
        assert_non_null(path);
        if (st == REPLAY_PROBLEM) {
            (*problems)++;
            snprintf(last_err, ERR_LEN, "%s", err);
            continue;
        }
        size_t used = strlen(got);
        snprintf(got + used, cap - used, "%s%.*s", used ? " " : "", (int)rec.body_len, (char *)rec.body);
        journal_record_free(&rec);
        n++;
    }
    return n;
}

static void test_files_in_order(void **state)
{
    struct tmp *t = *state;
    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    encode_records(&a, 1, 3);
    encode_records(&b, 4, 2);
    char *pa = write_file(t, "0000000000000001.dump", a.data, a.size);
    char *pb = write_file(t, "0000000000000004.dump", b.data, b.size);
    char *empty = write_file(t, "0000000000000006.dump", "", 0);
    /* in the order given, not sorted */
    char *paths[] = {pb, empty, pa};
    struct replay_source *src;
    char got[256], err[ERR_LEN] = "";
    size_t problems;

    replay_source_open(&src, paths, 3);
    assert_int_equal(drain(src, got, sizeof got, &problems, err), 5);
    assert_string_equal(got, "body-4 body-5 body-1 body-2 body-3");
    assert_int_equal(problems, 0);
    const struct replay_stats *st = replay_source_stats(src);
    assert_int_equal(st->files, 3);
    assert_int_equal(st->files_failed, 0);
    assert_int_equal(st->records, 5);
    assert_int_equal(st->torn + st->corrupt, 0);
    replay_source_close(&src);
    assert_null(src);
    replay_source_close(&src);   /* NULL is a no-op */

    assert_int_equal(replay_source_count(paths, 3), 5);
    free(pa);
    free(pb);
    free(empty);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

static void test_torn_corrupt_missing(void **state)
{
    struct tmp *t = *state;
    msgpack_sbuffer a, b, one;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    msgpack_sbuffer_init(&one);
    encode_records(&one, 1, 1);
    size_t rec_len = one.size;

    /* torn: three records and half of a fourth */
    encode_records(&a, 1, 4);
    size_t torn_len = 3 * rec_len + rec_len / 2;
    char *torn = write_file(t, "0000000000000001.dump", a.data, torn_len);
    /* corrupt: records 11..13 with a payload byte of the second flipped */
    encode_records(&b, 11, 3);
    size_t rec11_len = b.size / 3;      /* records 11..13 have the same size */
    b.data[rec11_len + JOURNAL_HDR_LEN + 2] ^= 0x55;
    char *corrupt = write_file(t, "0000000000000011.dump", b.data, b.size);
    char *missing = xasprintf("%s/0000000000000099.dump", t->dir);
    char *paths[] = {torn, missing, corrupt};
    struct replay_source *src;
    struct journal_record rec;
    char err[ERR_LEN], expect[64];
    const char *path;

    replay_source_open(&src, paths, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_RECORD);
        assert_int_equal(rec.jseq, (uint64_t)(1 + i));
        assert_string_equal(path, torn);
        journal_record_free(&rec);
    }
    assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_PROBLEM);
    assert_string_equal(path, torn);
    assert_non_null(strstr(err, torn));
    snprintf(expect, sizeof expect, "offset %zu", 3 * rec_len);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "torn"));
    assert_non_null(strstr(err, "not the last file"));     /* torn before the last file: damage */

    assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_PROBLEM);
    assert_string_equal(path, missing);
    assert_non_null(strstr(err, missing));

    assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_RECORD);
    assert_int_equal(rec.jseq, 11);
    journal_record_free(&rec);
    assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_PROBLEM);
    assert_string_equal(path, corrupt);
    snprintf(expect, sizeof expect, "offset %zu", rec11_len);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "corrupt"));
    assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_DONE);
    assert_int_equal(replay_source_next(src, &rec, &path, err), REPLAY_DONE);

    const struct replay_stats *st = replay_source_stats(src);
    assert_int_equal(st->files, 2);
    assert_int_equal(st->files_failed, 1);
    assert_int_equal(st->records, 4);
    assert_int_equal(st->torn, 0);
    assert_int_equal(st->corrupt, 2);
    replay_source_close(&src);
    assert_int_equal(replay_source_count(paths, 3), 4);

    free(torn);
    free(corrupt);
    free(missing);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
    msgpack_sbuffer_destroy(&one);
}

/* A torn tail is what a crash leaves in the newest file: expected (torn)
 * in the last file given, corrupt in any earlier one. */
static void test_torn_only_in_last_file(void **state)
{
    struct tmp *t = *state;
    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    encode_records(&a, 1, 2);
    encode_records(&b, 3, 2);
    size_t rec_len = a.size / 2;
    char *torn = write_file(t, "0000000000000001.dump", a.data, rec_len + rec_len / 2);
    char *good = write_file(t, "0000000000000003.dump", b.data, b.size);
    char *last_torn[] = {good, torn}, *first_torn[] = {torn, good};
    struct replay_source *src;
    char got[256], err[ERR_LEN] = "";
    size_t problems;

    replay_source_open(&src, last_torn, 2);
    assert_int_equal(drain(src, got, sizeof got, &problems, err), 3);
    assert_string_equal(got, "body-3 body-4 body-1");
    assert_int_equal(problems, 1);
    assert_non_null(strstr(err, "torn"));
    assert_null(strstr(err, "corrupt"));
    assert_int_equal(replay_source_stats(src)->torn, 1);
    assert_int_equal(replay_source_stats(src)->corrupt, 0);
    replay_source_close(&src);

    replay_source_open(&src, first_torn, 2);
    assert_int_equal(drain(src, got, sizeof got, &problems, err), 3);
    assert_string_equal(got, "body-1 body-3 body-4");
    assert_int_equal(problems, 1);
    assert_non_null(strstr(err, "torn"));
    assert_non_null(strstr(err, "corrupt"));
    assert_int_equal(replay_source_stats(src)->torn, 0);
    assert_int_equal(replay_source_stats(src)->corrupt, 1);
    replay_source_close(&src);

    free(torn);
    free(good);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

static void test_no_files(void **state)
{
    struct replay_source *src;
    struct journal_record rec;
    char err[ERR_LEN];
    TG_UNUSED(state);
    replay_source_open(&src, NULL, 0);
    assert_int_equal(replay_source_next(src, &rec, NULL, err), REPLAY_DONE);
    assert_int_equal(replay_source_stats(src)->files, 0);
    replay_source_close(&src);
}

static void test_progress(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    struct replay_progress p;
    TG_UNUSED(state);

    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    replay_progress_init(&p, f, true, 10);
    replay_progress_update(&p, 1, 1000);        /* first draw */
    replay_progress_update(&p, 2, 1050);        /* too soon */
    replay_progress_update(&p, 3, 1099);        /* too soon */
    replay_progress_update(&p, 4, 1100);        /* interval passed */
    replay_progress_clear(&p);
    replay_progress_clear(&p);                  /* nothing shown: no-op */
    replay_progress_finish(&p, 10);
    fflush(f);
    assert_string_equal(buf, "\rreplay: 1/10 records\rreplay: 4/10 records\r\033[K\rreplay: 10/10 records\n");
    fclose(f);
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &len);
    replay_progress_init(&p, f, false, 10);     /* not a terminal: silent */
    replay_progress_update(&p, 1, 1000);
    replay_progress_clear(&p);
    replay_progress_finish(&p, 10);
    fflush(f);
    assert_int_equal(len, 0);
    fclose(f);
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &len);
    replay_progress_init(&p, f, true, 2);       /* file grew: total follows done */
    replay_progress_finish(&p, 3);
    fflush(f);
    assert_string_equal(buf, "\rreplay: 3/3 records\n");
    fclose(f);
    free(buf);
}

static void test_dir_same(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN];
    bool same = true;
    char *a = xasprintf("%s/a", t->dir), *b = xasprintf("%s/b", t->dir);
    char *link = xasprintf("%s/link", t->dir), *dotted = xasprintf("%s/b/../a/", t->dir);
    char *missing = xasprintf("%s/missing", t->dir);
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(b, 0700), 0);
    assert_int_equal(symlink(a, link), 0);

    assert_int_equal(replay_dir_same(a, b, &same, err), 0);
    assert_false(same);
    assert_int_equal(replay_dir_same(link, a, &same, err), 0);
    assert_true(same);
    assert_int_equal(replay_dir_same(a, dotted, &same, err), 0);
    assert_true(same);
    same = true;
    assert_int_equal(replay_dir_same(a, missing, &same, err), 0);
    assert_false(same);
    assert_int_equal(replay_dir_same(missing, a, &same, err), -1);
    assert_non_null(strstr(err, missing));
    free(a);
    free(b);
    free(link);
    free(dotted);
    free(missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_files_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_corrupt_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_only_in_last_file, setup, teardown),
        cmocka_unit_test(test_no_files),
        cmocka_unit_test(test_progress),
        cmocka_unit_test_setup_teardown(test_dir_same, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
