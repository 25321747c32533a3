/*
 * numbers_test.c - unit tests for common/numbers: parsing, errors naming
 * file:line, lookup, default-missing vs explicit-missing, reloading.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "numbers.h"

static int parse(const char *text, struct numbers **t, char *err)
{
    return numbers_parse(text, strlen(text), "n.conf", t, err);
}

static void test_e164(void **state)
{
    (void)state;
    assert_true(numbers_e164_valid("+13125550100"));
    assert_true(numbers_e164_valid("+12"));
    assert_true(numbers_e164_valid("+123456789012345"));
    assert_false(numbers_e164_valid("+1234567890123456"));
    assert_false(numbers_e164_valid("+1"));
    assert_false(numbers_e164_valid("13125550100"));
    assert_false(numbers_e164_valid("+0123"));
    assert_false(numbers_e164_valid("+1312a550100"));
    assert_false(numbers_e164_valid(""));
    assert_false(numbers_e164_valid(NULL));
}

static void test_parse_ok(void **state)
{
    (void)state;
    char err[ERR_LEN];
    struct numbers *t = NULL;
    const char *text =
        "# operator numbers\n"
        "\n"
        "+13125550199 label=office forward_to=+13125550123   # desk\n"
        "  +13125550100\tlabel=main\r\n"
        "+442071234567 forward_to=sip:alice@example.com\n"
        "+15550001111";     /* no final newline */
    assert_int_equal(parse(text, &t, err), 0);
    assert_int_equal(t->n, 4);

    const struct numbers_entry *e = numbers_find(t, "+13125550199");
    assert_non_null(e);
    assert_string_equal(e->label, "office");
    assert_string_equal(e->forward_to, "+13125550123");
    e = numbers_find(t, "+13125550100");
    assert_non_null(e);
    assert_string_equal(e->label, "main");
    assert_null(e->forward_to);
    e = numbers_find(t, "+442071234567");
    assert_non_null(e);
    assert_null(e->label);
    assert_string_equal(e->forward_to, "sip:alice@example.com");
    assert_non_null(numbers_find(t, "+15550001111"));
    assert_null(numbers_find(t, "+15550001112"));
    assert_null(numbers_find(t, NULL));
    numbers_free(&t);
    assert_null(t);
    numbers_free(&t);   /* idempotent */
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct { const char *text; const char *want; } cases[] = {
        {"+13125550100\n3125550101\n", "n.conf:2:"},
        {"+13125550100 label\n", "not key=value"},
        {"+13125550100 colour=red\n", "unknown option 'colour'"},
        {"+13125550100 label=\n", "empty value"},
        {"\n\n+13125550100 forward_to=mailto:x\n", "n.conf:3:"},
        {"+13125550100 forward_to=sip:\n", "neither E.164"},
        {"+13125550100 label=a label=b\n", "label given twice"},
        {"+13125550100\n+13125550100 label=x\n", "more than once"},
        {"+1 label=x\n", "not an E.164"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[ERR_LEN] = "";
        struct numbers *t = (struct numbers *)0x1;
        assert_int_equal(parse(cases[i].text, &t, err), -1);
        assert_null(t);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].want);
    }
    char err[ERR_LEN];
    struct numbers *t = NULL;
    const char nul[] = "+13125550100\0x\n";
    assert_int_equal(numbers_parse(nul, sizeof nul - 1, "n.conf", &t, err), -1);
    assert_non_null(strstr(err, "NUL"));
}

static void test_many_sorted_lookup(void **state)
{
    (void)state;
    char err[ERR_LEN];
    size_t cap = 1000 * 40, len = 0;
    char *text = malloc(cap);
    for (int i = 999; i >= 0; i--)
        len += (size_t)snprintf(text + len, cap - len, "+1555000%04d label=n%d\n", i, i);
    struct numbers *t = NULL;
    assert_int_equal(numbers_parse(text, len, "big", &t, err), 0);
    assert_int_equal(t->n, 1000);
    for (int i = 0; i < 1000; i += 37) {
        char num[32], lab[16];
        snprintf(num, sizeof num, "+1555000%04d", i);
        snprintf(lab, sizeof lab, "n%d", i);
        const struct numbers_entry *e = numbers_find(t, num);
        assert_non_null(e);
        assert_string_equal(e->label, lab);
    }
    numbers_free(&t);
    free(text);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_load_missing(void **state)
{
    (void)state;
    char err[ERR_LEN];
    struct numbers *t = NULL;
    assert_int_equal(numbers_load("/nonexistent/dir/numbers.conf", false, &t, err), 0);
    assert_non_null(t);
    assert_int_equal(t->n, 0);
    numbers_free(&t);
    assert_int_equal(numbers_load("/nonexistent/dir/numbers.conf", true, &t, err), -1);
    assert_null(t);
    assert_non_null(strstr(err, "/nonexistent/dir/numbers.conf"));
}

static void test_watch_reload(void **state)
{
    (void)state;
    char dir[] = "/tmp/numbers_test.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/numbers.conf", dir);
    write_file(path, "+13125550100 label=a\n");

    struct numbers_watch w;
    char err[ERR_LEN];
    assert_int_equal(numbers_watch_open(&w, path, true, err), 0);
    assert_int_equal(w.table->n, 1);
    uint64_t t0 = w.last_check_ms;

    /* Changed file, but checked less than a second later: not re-read. */
    write_file(path, "+13125550100 label=b\n+13125550101\n");
    struct timespec ts[2] = {{.tv_sec = 1000000, .tv_nsec = 0}, {.tv_sec = 1000000, .tv_nsec = 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_false(numbers_watch_poll(&w, t0 + 500));
    assert_int_equal(w.table->n, 1);

    assert_true(numbers_watch_poll(&w, t0 + 1500));
    assert_int_equal(w.table->n, 2);
    assert_string_equal(numbers_find(w.table, "+13125550100")->label, "b");

    /* Unchanged: nothing happens. */
    assert_false(numbers_watch_poll(&w, t0 + 3000));

    /* Invalid new version: the old table stays. */
    write_file(path, "+13125550100 bogus\n");
    ts[0].tv_sec = ts[1].tv_sec = 2000000;
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_false(numbers_watch_poll(&w, t0 + 4500));
    assert_int_equal(w.table->n, 2);

    /* Fixed again: picked up. */
    write_file(path, "+13125550177\n");
    ts[0].tv_sec = ts[1].tv_sec = 3000000;
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    assert_true(numbers_watch_poll(&w, t0 + 6000));
    assert_int_equal(w.table->n, 1);
    assert_non_null(numbers_find(w.table, "+13125550177"));

    numbers_watch_close(&w);
    unlink(path);
    rmdir(dir);
}

static void test_watch_default_missing(void **state)
{
    (void)state;
    struct numbers_watch w;
    char err[ERR_LEN];
    assert_int_equal(numbers_watch_open(&w, "/nonexistent/numbers.conf", false, err), 0);
    assert_int_equal(w.table->n, 0);
    numbers_watch_close(&w);
    assert_int_equal(numbers_watch_open(&w, "/nonexistent/numbers.conf", true, err), -1);
}

int main(void)
{
    log_init("numbers_test");
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e164),
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_many_sorted_lookup),
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_watch_reload),
        cmocka_unit_test(test_watch_default_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
