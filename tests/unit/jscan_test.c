/*
 * jscan_test.c - unit tests of the JSON scanner (common/jscan.c): accepts
 * and rejects exactly what jansson does on a corpus, decodes escapes,
 * looks up members and iterates containers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"

static const char *const valid[] = {
    "{}", "[]", "0", "-0", "1.5e10", "-2.25E-3", "\"\"", "true", "false", "null",
    " {\"a\" : [1, 2, {\"b\":null}] , \"c\":\"d\"} ",
    "{\"k\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
    "[[[[[[[[[[]]]]]]]]]]",
    "{\"data\":{\"id\":\"x\",\"payload\":{\"custom_headers\":[{\"name\":\"X-A\",\"value\":\"1\"}]}}}",
};

static const char *const invalid[] = {
    "", " ", "{", "}", "[", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "-", "1e",
    "\"abc", "\"a\\x\"", "\"a\\u12\"", "\"\\u0000\"", "tru", "nul", "[1 2]", "{\"a\":1}{}", "\"\t\"",
    "[1]]", "{\"a\":1}x", "+1",
};

static void test_matches_jansson(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    json_error_t je;
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        if (jscan_parse(&js, valid[i], strlen(valid[i]), err) != 0)
            fail_msg("valid[%zu] rejected: %s", i, err);
        json_t *j = json_loadb(valid[i], strlen(valid[i]), JSON_DECODE_ANY, &je);
        assert_non_null(j);
        json_decref(j);
    }
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        if (jscan_parse(&js, invalid[i], strlen(invalid[i]), err) == 0)
            fail_msg("invalid[%zu] '%s' accepted", i, invalid[i]);
        assert_non_null(strstr(err, "JSON"));
        json_t *j = json_loadb(invalid[i], strlen(invalid[i]), JSON_DECODE_ANY, &je);
        if (j)
            fail_msg("jansson accepts invalid[%zu]", i);
    }
    jscan_free(&js);
}

static void test_depth_limit(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN], doc[2 * (JSCAN_MAX_DEPTH + 1) + 1];
    memset(doc, '[', JSCAN_MAX_DEPTH + 1);
    memset(doc + JSCAN_MAX_DEPTH + 1, ']', JSCAN_MAX_DEPTH + 1);
    doc[sizeof doc - 1] = '\0';
    assert_int_equal(jscan_parse(&js, doc, strlen(doc), err), -1);
    assert_non_null(strstr(err, "deep"));
    jscan_free(&js);
}

static void test_lookup_and_decode(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    const char *doc = "{\"a\":{\"x\":1},\"s\":\"caf\\u00e9 \\ud83d\\ude00\",\"dup\":\"first\",\"dup\":\"last\","
                      "\"k\\u0065y\":\"escaped key\",\"arr\":[\"p\",{\"q\":[1,2]},\"r\"],\"n\":null}";
    assert_int_equal(jscan_parse(&js, doc, strlen(doc), err), 0);
    char *s = jscan_strdup(&js, jscan_get(&js, 0, "s"));
    assert_string_equal(s, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    free(s);
    s = jscan_strdup(&js, jscan_get(&js, 0, "dup"));
    assert_string_equal(s, "last");                  /* as jansson: the last one wins */
    free(s);
    s = jscan_strdup(&js, jscan_get(&js, 0, "key"));
    assert_string_equal(s, "escaped key");
    free(s);
    assert_true(jscan_is(&js, jscan_get(&js, jscan_get(&js, 0, "a"), "x"), JSCAN_NUMBER));
    assert_int_equal(jscan_get(&js, 0, "missing"), -1);
    assert_int_equal(jscan_get(&js, jscan_get(&js, 0, "s"), "x"), -1);   /* not an object */
    assert_null(jscan_strdup(&js, jscan_get(&js, 0, "n")));
    assert_null(jscan_strdup(&js, -1));

    int arr = jscan_get(&js, 0, "arr"), n = 0;
    const char *want[] = {"p", NULL, "r"};
    for (int e = jscan_first(&js, arr); e >= 0; e = jscan_next(&js, arr, e), n++) {
        char *v = jscan_strdup(&js, e);
        if (want[n])
            assert_string_equal(v, want[n]);
        else
            assert_true(jscan_is(&js, e, JSCAN_OBJECT));
        free(v);
    }
    assert_int_equal(n, 3);
    int members = 0;
    for (int k = jscan_first(&js, 0); k >= 0; k = jscan_next(&js, 0, k))
        members++;
    assert_int_equal(members, 7);
    jscan_free(&js);
}

/* Every prefix of a valid document is rejected, never read past its end. */
static void test_prefixes(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    const char *doc = valid[11];
    size_t len = strlen(doc);
    for (size_t n = 0; n < len; n++) {
        char *copy = xmalloc(n ? n : 1);       /* exact size: ASan catches over-reads */
        memcpy(copy, doc, n);
        assert_int_equal(jscan_parse(&js, copy, n, err), -1);
        free(copy);
    }
    jscan_free(&js);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_jansson),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_lookup_and_decode),
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
