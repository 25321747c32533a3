/*
 * redeliver_test.c - unit tests of the ingress's tracker of unacknowledged
 * journal records (ingress/ingress_redeliver.c): acknowledgement by low mark
 * and by list, due selection on a fake clock, attempts up to parking, the
 * low mark with out-of-order acks, large counts, the saved low mark, the
 * start-up journal scan, parked copies and the park RESULT.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "event.h"
#include "journal.h"
#include "tmpdir.h"
#include "log.h"
#include "mp.h"
#include "msg.h"
#include "../../ingress/ingress_redeliver.h"

#define AFTER_MS 1000
#define MAX_ATTEMPTS 3
#define LARGE_N 300000

static int setup(void **state)
{
    return tmpdir_setup(state, "redeliver_test");
}

static int teardown(void **state)
{
    return tmpdir_teardown(state);
}

static void add(struct ingress_redeliver *r, uint64_t jseq, uint64_t due_ms)
{
    char err[ERR_LEN];
    struct ingress_redeliver_entry e = {
        .jseq = jseq, .file = 1, .offset = jseq * 100, .len = 100, .due_ms = due_ms,
    };
    assert_int_equal(ingress_redeliver_add(r, &e, err), 0);
}

static void test_add_and_ack(void **state)
{
    (void)state;
    char err[ERR_LEN];
    struct ingress_redeliver *r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);
    struct ingress_redeliver_entry e;

    for (uint64_t s = 1; s <= 10; s++)
        add(r, s, 0);
    assert_int_equal(ingress_redeliver_count(r), 10);
    assert_true(ingress_redeliver_find(r, 7, &e));
    assert_int_equal(e.offset, 700);
    assert_int_equal(e.len, 100);
    assert_int_equal(e.attempts, 0);

    /* jseqs must increase */
    e = (struct ingress_redeliver_entry){.jseq = 10};
    assert_int_equal(ingress_redeliver_add(r, &e, err), -1);
    e.jseq = 0;
    assert_int_equal(ingress_redeliver_add(r, &e, err), -1);
    assert_int_equal(ingress_redeliver_count(r), 10);

    assert_int_equal(ingress_redeliver_ack_low(r, 3), 3);
    assert_int_equal(ingress_redeliver_ack_low(r, 3), 0);
    assert_false(ingress_redeliver_find(r, 2, &e));
    assert_true(ingress_redeliver_ack(r, 7));
    assert_false(ingress_redeliver_ack(r, 7));
    assert_false(ingress_redeliver_ack(r, 99));
    assert_int_equal(ingress_redeliver_count(r), 6);

    uint64_t done[] = {5, 9, 9, 42};
    struct msg_progress p = {.low = 4, .done = done, .n_done = 4};
    assert_int_equal(ingress_redeliver_ack_progress(r, &p), 3);  /* 4, 5, 9 */
    assert_int_equal(ingress_redeliver_count(r), 3);             /* 6, 8, 10 */
    assert_true(ingress_redeliver_find(r, 6, &e));
    assert_true(ingress_redeliver_find(r, 8, &e));
    assert_true(ingress_redeliver_find(r, 10, &e));
    assert_true(ingress_redeliver_drop(r, 8));
    assert_int_equal(ingress_redeliver_ack_low(r, 100), 2);
    assert_int_equal(ingress_redeliver_count(r), 0);

    /* after everything went, adding goes on above the last jseq */
    add(r, 11, 0);
    assert_int_equal(ingress_redeliver_count(r), 1);
    ingress_redeliver_free(&r);
    assert_null(r);
}

static void test_low_out_of_order(void **state)
{
    (void)state;
    struct ingress_redeliver *r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);

    assert_int_equal(ingress_redeliver_low(r, 0), 0);
    for (uint64_t s = 1; s <= 10; s++)
        add(r, s, 0);
    assert_int_equal(ingress_redeliver_low(r, 10), 0);
    ingress_redeliver_ack(r, 3);
    ingress_redeliver_ack(r, 5);
    assert_int_equal(ingress_redeliver_low(r, 10), 0);
    ingress_redeliver_ack(r, 1);
    assert_int_equal(ingress_redeliver_low(r, 10), 1);   /* 2 still open */
    ingress_redeliver_ack(r, 2);
    assert_int_equal(ingress_redeliver_low(r, 10), 3);   /* 4 open */
    ingress_redeliver_ack(r, 4);
    assert_int_equal(ingress_redeliver_low(r, 10), 5);
    for (uint64_t s = 6; s <= 9; s++)
        ingress_redeliver_ack(r, s);
    assert_int_equal(ingress_redeliver_low(r, 10), 9);
    ingress_redeliver_ack(r, 10);
    /* nothing tracked: everything handed out is acknowledged */
    assert_int_equal(ingress_redeliver_low(r, 12), 12);
    ingress_redeliver_free(&r);
}

static void test_due_fake_clock(void **state)
{
    (void)state;
    struct ingress_redeliver *r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);
    struct ingress_redeliver_entry e;

    /* three records journaled at t=0, sent at t=0 (attempt 1) */
    for (uint64_t s = 1; s <= 3; s++) {
        add(r, s, AFTER_MS);
        assert_int_equal(ingress_redeliver_published(r, s, 0), 1);
    }
    assert_int_equal(ingress_redeliver_due(r, 0, &e), INGRESS_REDELIVER_NONE);
    assert_int_equal(ingress_redeliver_due(r, AFTER_MS - 1, &e), INGRESS_REDELIVER_NONE);
    ingress_redeliver_ack(r, 1);

    /* at t=1000: 2 is due (1 was acknowledged); asking again without acting
     * gives the same record */
    assert_int_equal(ingress_redeliver_due(r, AFTER_MS, &e), INGRESS_REDELIVER_PUBLISH);
    assert_int_equal(e.jseq, 2);
    assert_int_equal(e.attempts, 1);
    assert_int_equal(ingress_redeliver_due(r, AFTER_MS, &e), INGRESS_REDELIVER_PUBLISH);
    assert_int_equal(e.jseq, 2);
    assert_int_equal(ingress_redeliver_published(r, 2, AFTER_MS), 2);
    assert_int_equal(ingress_redeliver_due(r, AFTER_MS, &e), INGRESS_REDELIVER_PUBLISH);
    assert_int_equal(e.jseq, 3);
    assert_int_equal(ingress_redeliver_published(r, 3, AFTER_MS), 2);
    assert_int_equal(ingress_redeliver_due(r, AFTER_MS, &e), INGRESS_REDELIVER_NONE);
    assert_int_equal(ingress_redeliver_due(r, 2 * AFTER_MS - 1, &e), INGRESS_REDELIVER_NONE);

    /* an acknowledgement in between removes it from the schedule */
    ingress_redeliver_ack(r, 2);
    assert_int_equal(ingress_redeliver_due(r, 2 * AFTER_MS, &e), INGRESS_REDELIVER_PUBLISH);
    assert_int_equal(e.jseq, 3);
    assert_int_equal(ingress_redeliver_published(r, 99, 0), 0);
    ingress_redeliver_free(&r);
}

static void test_attempts_then_park(void **state)
{
    (void)state;
    struct ingress_redeliver *r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);
    struct ingress_redeliver_entry e;
    uint64_t now = 0;

    add(r, 5, AFTER_MS);
    assert_int_equal(ingress_redeliver_published(r, 5, now), 1);
    for (uint32_t a = 2; a <= MAX_ATTEMPTS; a++) {
        now += AFTER_MS;
        assert_int_equal(ingress_redeliver_due(r, now, &e), INGRESS_REDELIVER_PUBLISH);
        assert_int_equal(ingress_redeliver_published(r, 5, now), a);
    }
    now += AFTER_MS;
    assert_int_equal(ingress_redeliver_due(r, now, &e), INGRESS_REDELIVER_PARK);
    assert_int_equal(e.attempts, MAX_ATTEMPTS);
    assert_false(e.parked);
    assert_true(ingress_redeliver_parked(r, 5, now));
    assert_int_equal(ingress_redeliver_due(r, now, &e), INGRESS_REDELIVER_NONE);
    /* still unacknowledged: the park RESULT is re-sent on the schedule */
    now += AFTER_MS;
    assert_int_equal(ingress_redeliver_due(r, now, &e), INGRESS_REDELIVER_PARK_RESEND);
    assert_true(e.parked);
    assert_true(ingress_redeliver_parked(r, 5, now));
    ingress_redeliver_ack(r, 5);
    assert_int_equal(ingress_redeliver_due(r, now + 10 * AFTER_MS, &e), INGRESS_REDELIVER_NONE);
    assert_int_equal(ingress_redeliver_count(r), 0);
    assert_false(ingress_redeliver_parked(r, 5, now));

    /* max_attempts 1: parked at the first time-out after one publication */
    struct ingress_redeliver *r1 = ingress_redeliver_new(AFTER_MS, 1);
    add(r1, 1, AFTER_MS);
    assert_int_equal(ingress_redeliver_due(r1, AFTER_MS, &e), INGRESS_REDELIVER_PUBLISH);
    assert_int_equal(ingress_redeliver_published(r1, 1, AFTER_MS), 1);
    assert_int_equal(ingress_redeliver_due(r1, 2 * AFTER_MS, &e), INGRESS_REDELIVER_PARK);
    ingress_redeliver_free(&r1);
    ingress_redeliver_free(&r);
}

static void test_large_counts(void **state)
{
    (void)state;
    struct ingress_redeliver *r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);
    struct ingress_redeliver_entry e;
    uint64_t t0 = tg_mono_ms();

    for (uint64_t s = 1; s <= LARGE_N; s++)
        add(r, s, AFTER_MS);
    assert_int_equal(ingress_redeliver_count(r), LARGE_N);
    size_t peak = ingress_redeliver_bytes(r);
    assert_true(peak >= LARGE_N * 64);

    /* acknowledge every third record one by one, out of order */
    size_t acked = 0;
    for (uint64_t s = LARGE_N; s >= 1; s--)
        if (s % 3 == 0)
            acked += ingress_redeliver_ack(r, s) ? 1 : 0;
    assert_int_equal(acked, LARGE_N / 3);

    /* everything else is due once, in jseq order */
    size_t n = 0;
    uint64_t last = 0;
    while (ingress_redeliver_due(r, AFTER_MS, &e) == INGRESS_REDELIVER_PUBLISH) {
        assert_true(e.jseq > last);
        assert_true(e.jseq % 3 != 0);
        last = e.jseq;
        ingress_redeliver_published(r, e.jseq, AFTER_MS);
        n++;
        assert_true(n <= LARGE_N);
    }
    assert_int_equal(n, LARGE_N - LARGE_N / 3);
    assert_int_equal(ingress_redeliver_low(r, LARGE_N), 0);
    assert_int_equal(ingress_redeliver_ack_low(r, LARGE_N / 2), (LARGE_N / 2) - (LARGE_N / 2) / 3);
    assert_int_equal(ingress_redeliver_low(r, LARGE_N), LARGE_N / 2);
    size_t left = ingress_redeliver_count(r);
    assert_int_equal(ingress_redeliver_ack_low(r, LARGE_N), left);
    assert_int_equal(ingress_redeliver_count(r), 0);

    /* once the backlog is gone, so is its memory: the entries at once, the
     * due queue as its stale items come up */
    assert_int_equal(ingress_redeliver_due(r, 10 * AFTER_MS, &e), INGRESS_REDELIVER_NONE);
    assert_true(ingress_redeliver_bytes(r) <= 8192 * 72);
    assert_true(ingress_redeliver_bytes(r) < peak / 16);
    add(r, LARGE_N + 1, AFTER_MS);                      /* and it still works */
    assert_true(ingress_redeliver_find(r, LARGE_N + 1, &e));
    assert_int_equal(ingress_redeliver_low(r, LARGE_N + 1), LARGE_N);
    print_message("%d records added, acknowledged and re-published in %llu ms\n", LARGE_N,
                  (unsigned long long)(tg_mono_ms() - t0));
    ingress_redeliver_free(&r);
}

static void test_progress_file(void **state)
{
    struct tmp *t = *state;
    char path[128], err[ERR_LEN];
    uint64_t low = 99;

    snprintf(path, sizeof path, "%s/progress", t->dir);
    assert_int_equal(ingress_redeliver_progress_load(path, &low, err), 0);
    assert_int_equal(low, 0);
    assert_int_equal(ingress_redeliver_progress_save(path, 12345, err), 0);
    assert_int_equal(ingress_redeliver_progress_load(path, &low, err), 0);
    assert_int_equal(low, 12345);
    assert_int_equal(ingress_redeliver_progress_save(path, 12346, err), 0);
    assert_int_equal(ingress_redeliver_progress_load(path, &low, err), 0);
    assert_int_equal(low, 12346);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("garbage\n", f);
    fclose(f);
    assert_int_equal(ingress_redeliver_progress_load(path, &low, err), -1);
    assert_non_null(strstr(err, "decimal"));

    /* a save into a missing directory fails and says where */
    snprintf(path, sizeof path, "%s/nope/progress", t->dir);
    assert_int_equal(ingress_redeliver_progress_save(path, 1, err), -1);
    assert_non_null(strstr(err, "nope"));
}

/* Write records first..first+n-1 as one dump file. */
static void write_dump(const char *dir, uint64_t first, size_t n)
{
    char name[JOURNAL_NAME_LEN], path[256], err[ERR_LEN], body[64];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < n; i++) {
        struct journal_record rec = {.jseq = first + i, .recv_us = 1};
        snprintf(body, sizeof body, "{\"data\":{\"id\":\"w%zu\"}}", (size_t)(first + i));
        rec.body = (uint8_t *)body;
        rec.body_len = strlen(body);
        assert_int_equal(journal_record_encode(&sb, &rec, err), 0);
    }
    journal_file_name(first, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(sb.data, 1, sb.size, f), sb.size);
    fclose(f);
    msgpack_sbuffer_destroy(&sb);
}

static void test_scan(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN], name[JOURNAL_NAME_LEN], path[256];
    size_t added = 0;
    struct ingress_redeliver_entry e;

    write_dump(t->dir, 1, 4);       /* 1..4: wholly below the mark, skipped */
    write_dump(t->dir, 5, 4);       /* 5..8: 7, 8 above it */
    write_dump(t->dir, 9, 3);       /* 9..11 */
    struct ingress_redeliver *r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);
    assert_int_equal(ingress_redeliver_scan(r, t->dir, 6, 5000, &added, err), 0);
    assert_int_equal(added, 5);
    assert_int_equal(ingress_redeliver_count(r), 5);
    assert_false(ingress_redeliver_find(r, 6, &e));
    assert_int_equal(ingress_redeliver_low(r, 11), 6);

    /* each entry points at its record */
    for (uint64_t s = 7; s <= 11; s++) {
        struct journal_record rec;
        assert_true(ingress_redeliver_find(r, s, &e));
        assert_int_equal(e.attempts, 0);
        assert_int_equal(e.due_ms, 5000);
        assert_int_equal(e.file, s <= 8 ? 5 : 9);
        journal_file_name(e.file, name);
        snprintf(path, sizeof path, "%s/%s", t->dir, name);
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(journal_record_pread(fd, e.offset, e.len, &rec, err), 0);
        assert_int_equal(rec.jseq, s);
        journal_record_free(&rec);
        close(fd);
    }
    /* not due before the grace period */
    assert_int_equal(ingress_redeliver_due(r, 4999, &e), INGRESS_REDELIVER_NONE);
    assert_int_equal(ingress_redeliver_due(r, 5000, &e), INGRESS_REDELIVER_PUBLISH);
    assert_int_equal(e.jseq, 7);
    ingress_redeliver_free(&r);

    /* a mark past everything tracks nothing */
    r = ingress_redeliver_new(AFTER_MS, MAX_ATTEMPTS);
    assert_int_equal(ingress_redeliver_scan(r, t->dir, 11, 0, &added, err), 0);
    assert_int_equal(added, 0);
    ingress_redeliver_free(&r);
}

/* Decode a park RESULT and check its fixed parts; returns the data map
 * (valid while *up lives). */
static const msgpack_object *park_check(msgpack_sbuffer *sb, struct msg_result *m,
                                        msgpack_unpacked *up, uint64_t jseq,
                                        const char *webhook_id, const char *key)
{
    char err[ERR_LEN], id[EVENT_ID_LEN];
    assert_int_equal(msg_result_decode(sb->data, sb->size, m, err), 0);
    assert_int_equal(m->jseq, jseq);
    assert_string_equal(m->webhook_id, webhook_id);
    assert_int_equal(m->n_events, 1);
    assert_int_equal(m->n_commands, 0);
    assert_string_equal(m->events[0].type, "tel.webhook_parked");
    assert_string_equal(m->events[0].actor, "tel.x");
    event_id(key, "parked", id);
    assert_string_equal(m->events[0].id, id);
    assert_int_equal(mp_unpack_exact(m->events[0].data, m->events[0].data_len, up, err), 0);
    return &up->data;
}

static void test_park(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN], pdir[128], *path = NULL, *text = NULL;
    size_t len;
    const char body[] = "{\"data\":{\"id\":\"abc-1\",\"event_type\":\"call.initiated\","
                        "\"payload\":{\"call_control_id\":\"v3:cc\",\"call_session_id\":\"sess\","
                        "\"from\":\"+13125550100\",\"to\":\"+13125550199\"}}}";

    snprintf(pdir, sizeof pdir, "%s/parked", t->dir);
    assert_int_equal(ingress_redeliver_park_write(pdir, 17, (const uint8_t *)body, strlen(body),
                                                  &path, err), 0);
    assert_non_null(strstr(path, "/parked/17.json"));
    assert_int_equal(tg_read_file(path, 4096, &text, &len, err), 0);
    assert_int_equal(len, strlen(body));
    assert_memory_equal(text, body, len);
    free(text);

    msgpack_sbuffer sb;
    struct msg_result m;
    msgpack_unpacked up;
    uint64_t v;
    char *s = NULL;
    msgpack_sbuffer_init(&sb);
    ingress_redeliver_park_encode(&sb, 17, 5, (const uint8_t *)body, strlen(body), "tel.x", path);
    const msgpack_object *d = park_check(&sb, &m, &up, 17, "parked:abc-1", "abc-1");
    assert_string_equal(m.events[0].webhook_id, "abc-1");
    assert_string_equal(m.events[0].call_control_id, "v3:cc");
    assert_string_equal(m.events[0].call_session_id, "sess");
    assert_string_equal(m.events[0].from, "+13125550100");
    assert_string_equal(m.events[0].to, "+13125550199");
    assert_int_equal(mp_get_u64(d, "jseq", &v, err), 0);
    assert_int_equal(v, 17);
    assert_int_equal(mp_get_u64(d, "attempts", &v, err), 0);
    assert_int_equal(v, 5);
    assert_int_equal(mp_get_str(d, "event_type", false, &s, err), 0);
    assert_string_equal(s, "call.initiated");
    free(s);
    assert_int_equal(mp_get_str(d, "file", false, &s, err), 0);
    assert_string_equal(s, path);
    free(s);
    /* deterministic: the same input gives the same bytes */
    msgpack_sbuffer again;
    msgpack_sbuffer_init(&again);
    ingress_redeliver_park_encode(&again, 17, 5, (const uint8_t *)body, strlen(body), "tel.x", path);
    assert_int_equal(again.size, sb.size);
    assert_memory_equal(again.data, sb.data, sb.size);
    msgpack_sbuffer_destroy(&again);
    msgpack_unpacked_destroy(&up);
    msg_result_free(&m);

    /* not JSON at all: keyed by jseq, no webhook or call fields */
    const char junk[] = "\x01\x02 not json";
    sb.size = 0;
    ingress_redeliver_park_encode(&sb, 8, 3, (const uint8_t *)junk, sizeof junk - 1, "tel.x", path);
    d = park_check(&sb, &m, &up, 8, "parked:jseq:8", "jseq:8");
    assert_null(m.events[0].webhook_id);
    assert_null(m.events[0].call_control_id);
    assert_null(m.events[0].from);
    assert_int_equal(mp_get_str(d, "event_type", true, &s, err), 0);
    assert_null(s);
    msgpack_unpacked_destroy(&up);
    msg_result_free(&m);

    /* JSON with a non-string id and a payload that is not an object */
    const char odd[] = "{\"data\":{\"id\":42,\"event_type\":\"call.hangup\",\"payload\":[1]}}";
    sb.size = 0;
    ingress_redeliver_park_encode(&sb, 9, 3, (const uint8_t *)odd, sizeof odd - 1, "tel.x", path);
    d = park_check(&sb, &m, &up, 9, "parked:jseq:9", "jseq:9");
    assert_int_equal(mp_get_str(d, "event_type", true, &s, err), 0);
    assert_string_equal(s, "call.hangup");
    free(s);
    msgpack_unpacked_destroy(&up);
    msg_result_free(&m);

    msgpack_sbuffer_destroy(&sb);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_and_ack),
        cmocka_unit_test(test_low_out_of_order),
        cmocka_unit_test(test_due_fake_clock),
        cmocka_unit_test(test_attempts_then_park),
        cmocka_unit_test(test_large_counts),
        cmocka_unit_test_setup_teardown(test_progress_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_park, setup, teardown),
    };
    log_init("redeliver_test");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
