/*
 * jscan_test.c - unit tests of the JSON scanner (common/jscan.c): accepts
 * and rejects exactly what jansson does on a corpus (also ill-formed UTF-8),
 * decodes escapes, looks up members and iterates containers.
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

/* Strings of well-formed UTF-8: 2, 3 and 4 bytes, at the edges of each
 * length and around the surrogate block. */
static const char *const valid_utf8[] = {
    "\"caf\xc3\xa9\"",                                         /* U+00E9 */
    "\"\xc2\x80 \xdf\xbf\"",                                    /* U+0080, U+07FF */
    "\"\xe0\xa0\x80 \xe2\x82\xac \xef\xbf\xbf\"",                    /* U+0800, U+20AC, U+FFFF */
    "\"\xed\x9f\xbf \xee\x80\x80\"",                              /* U+D7FF, U+E000 */
    "\"\xf0\x90\x80\x80 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"",         /* U+10000, U+1F600, U+10FFFF */
    "{\"cl\xc3\xa9\":[\"\xe6\x97\xa5\xe6\x9c\xac\"]}",               /* in a key too */
};

/* Ill-formed UTF-8 in strings, and lone surrogate escapes. */
static const char *const invalid_utf8[] = {
    "\"\xff\xfe\"",                                   /* bytes that are never UTF-8 */
    "\"\x80\"", "\"a\xbf\"",                          /* continuation byte, no lead byte */
    "\"\xc3\xa9\xa9\"",                               /* one continuation byte too many */
    "\"\xf5\x80\x80\x80\"", "\"\xf8\x88\x80\x80\x80\"",      /* invalid lead bytes */
    "\"\xc3\"", "\"\xc3x\"", "\"\xe2\x82\"", "\"\xf0\x9f\x98\"",  /* continuation bytes missing */
    "\"\xc0\xaf\"", "\"\xc1\xbf\"",                     /* overlong 2-byte forms */
    "\"\xe0\x80\xaf\"", "\"\xe0\x9f\xbf\"",             /* overlong 3-byte forms */
    "\"\xf0\x80\x80\xaf\"", "\"\xf0\x8f\xbf\xbf\"",     /* overlong 4-byte forms */
    "\"\xed\xa0\x80\"", "\"\xed\xbf\xbf\"",             /* surrogates U+D800, U+DFFF */
    "\"\xed\xa0\xbd\xed\xb8\x80\"",                     /* a surrogate pair (CESU-8) */
    "\"\xf4\x90\x80\x80\"", "\"\xf7\xbf\xbf\xbf\"",     /* above U+10FFFF */
    "{\"k\xff\":1}",                                  /* in a key */
    "\"\\ud800\"", "\"\\udbff x\"", "\"\\ud800\\u0041\"",   /* lone high surrogate escapes */
    "\"\\ud800\\ud800\"", "\"\\ud800\\\"",
    "\"\\udc00\"", "\"\\udfff\\ud800\"",                /* lone low surrogate escapes */
};

/* \u escapes decode to well-formed UTF-8, at the edges of each length. */
static const struct { const char *doc, *want; } escapes_utf8[] = {
    {"\"\\u007f\"", "\x7f"},
    {"\"\\u0080\\u07FF\"", "\xc2\x80\xdf\xbf"},
    {"\"\\u0800\\ud7ff\\ue000\\uffff\"", "\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"},
    {"\"\\ud800\\udc00\\udbff\\udfff\"", "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"},
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

/* Well-formed UTF-8 is accepted and copied unchanged, escapes decode to
 * it, and every ill-formed sequence is refused, as jansson does. */
static void test_utf8(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    json_error_t je;
    for (size_t i = 0; i < sizeof valid_utf8 / sizeof *valid_utf8; i++) {
        const char *doc = valid_utf8[i];
        if (jscan_parse(&js, doc, strlen(doc), err) != 0)
            fail_msg("valid_utf8[%zu] rejected: %s", i, err);
        json_t *j = json_loadb(doc, strlen(doc), JSON_DECODE_ANY, &je);
        assert_non_null(j);
        json_decref(j);
        if (jscan_is(&js, 0, JSCAN_STRING)) {       /* raw UTF-8 is copied unchanged */
            char *s = jscan_strdup(&js, 0);
            assert_non_null(s);
            assert_int_equal(strlen(s), strlen(doc) - 2);
            assert_memory_equal(s, doc + 1, strlen(s));
            free(s);
        }
    }
    for (size_t i = 0; i < sizeof invalid_utf8 / sizeof *invalid_utf8; i++) {
        const char *doc = invalid_utf8[i];
        if (jscan_parse(&js, doc, strlen(doc), err) == 0)
            fail_msg("invalid_utf8[%zu] accepted", i);
        assert_non_null(strstr(err, "JSON"));
        json_t *j = json_loadb(doc, strlen(doc), JSON_DECODE_ANY, &je);
        if (j)
            fail_msg("jansson accepts invalid_utf8[%zu]", i);
    }
    for (size_t i = 0; i < sizeof escapes_utf8 / sizeof *escapes_utf8; i++) {
        const char *doc = escapes_utf8[i].doc;
        assert_int_equal(jscan_parse(&js, doc, strlen(doc), err), 0);
        char *s = jscan_strdup(&js, 0);
        assert_non_null(s);
        assert_string_equal(s, escapes_utf8[i].want);
        free(s);
    }
    jscan_free(&js);
}

/* A backslash before a NUL byte is no escape (strlen cannot express it). */
static void test_escaped_nul_byte(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    static const char doc[] = "{\"a\":\"\\\0\"}";
    assert_int_equal(jscan_parse(&js, doc, sizeof doc - 1, err), -1);
    assert_non_null(strstr(err, "escape"));
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

/* jscan_get_keys finds what jscan_get finds, for each key, in one pass:
 * the last of repeated members, escaped keys decoded, -1 when absent or
 * when obj is not an object. */
static void test_get_keys(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    const char *doc = "{\"a\":1,\"dup\":\"first\",\"k\\u0065y\":true,\"dup\":\"last\",\"ab\":[2],\"b\":null}";
    const char *const keys[] = {"dup", "key", "a", "ab", "missing", "b", "A"};
    enum { N = sizeof keys / sizeof keys[0] };
    int got[N];
    assert_int_equal(jscan_parse(&js, doc, strlen(doc), err), 0);
    jscan_get_keys(&js, 0, keys, N, got);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(got[i], jscan_get(&js, 0, keys[i]));
    char *s = jscan_strdup(&js, got[0]);
    assert_string_equal(s, "last");
    free(s);
    assert_true(jscan_is(&js, got[1], JSCAN_TRUE));
    assert_true(jscan_is(&js, got[3], JSCAN_ARRAY));
    assert_int_equal(got[4], -1);
    assert_true(jscan_is(&js, got[5], JSCAN_NULL));
    assert_int_equal(got[6], -1);                       /* keys are case-sensitive */
    jscan_get_keys(&js, got[3], keys, N, got);          /* an array, not an object */
    for (size_t i = 0; i < N; i++)
        assert_int_equal(got[i], -1);
    jscan_free(&js);
}

/* Every prefix of a valid document is rejected, never read past its end
 * (also inside a multi-byte character or a surrogate pair escape). */
static void test_prefixes(void **state)
{
    struct jscan js = {0};
    char err[ERR_LEN];
    const char *const docs[] = {valid[11], valid_utf8[4], "[\"\\ud83d\\ude00\"]"};
    for (size_t d = 0; d < sizeof docs / sizeof *docs; d++) {
        size_t len = strlen(docs[d]);
        for (size_t n = 0; n < len; n++) {
            char *copy = xmalloc(n ? n : 1);       /* exact size: ASan catches over-reads */
            memcpy(copy, docs[d], n);
            assert_int_equal(jscan_parse(&js, copy, n, err), -1);
            free(copy);
        }
    }
    jscan_free(&js);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_jansson),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_escaped_nul_byte),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_lookup_and_decode),
        cmocka_unit_test(test_get_keys),
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
