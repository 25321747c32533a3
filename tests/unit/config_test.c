/*
 * config_test.c - unit tests of the configuration table (common/config.c):
 * defaults, file parsing, TEL_* overrides, precedence and errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char tmpdir[64];

static void write_conf(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *conf_path(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static int setup(void **state)
{
    strcpy(tmpdir, "/tmp/tgcfgXXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    assert_int_equal(chdir(tmpdir), 0);   /* no stray ./tel.conf */
    unsetenv("TEL_CONFIG");
    unsetenv("TEL_HTTP_LISTEN");
    unsetenv("TEL_MAX_BODY_BYTES");
    unsetenv("TELNYX_API_KEY");
    unsetenv("TEL_TELNYX_API_KEY");
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_defaults(void **state)
{
    struct tg_config c;
    char err[ERR_LEN];
    assert_int_equal(config_load(&c, NULL, err), 0);
    assert_string_equal(c.http_listen, "127.0.0.1:3000");
    assert_string_equal(c.data_dir, "./var");
    assert_string_equal(c.namespace_, "tel.x");
    assert_null(c.telnyx_public_key);
    assert_int_equal(c.signature_tolerance_s, 300);
    assert_string_equal(c.telnyx_api_url, "https://api.telnyx.com/v2");
    assert_int_equal(c.max_body_bytes, 65536);
    assert_int_equal(c.reject_mode, REJECT_ANNOUNCE);
    assert_string_equal(c.announce_text, "This number only accepts calls from verified namespace holders.");
    assert_string_equal(c.announce_voice, "female");
    assert_string_equal(c.announce_language, "en-US");
    assert_int_equal(c.min_attestation, ATTEST_A);
    assert_string_equal(c.numbers_file, "numbers.conf");
    assert_non_null(strstr(c.verifier_endpoint, "ipc://"));
    assert_non_null(strstr(c.events_endpoint, "/run/events.sock"));
    assert_null(c.config_path);
    config_free(&c);
}

static void test_file_and_env_precedence(void **state)
{
    struct tg_config c;
    char err[ERR_LEN];
    write_conf("a.conf", "# comment\n\nhttp_listen = 127.0.0.1:4000\nreject_mode=busy\n"
                         "min_attestation = none\n  max_body_bytes = 2048  \n");
    assert_int_equal(config_load(&c, conf_path("a.conf"), err), 0);
    assert_string_equal(c.http_listen, "127.0.0.1:4000");
    assert_int_equal(c.reject_mode, REJECT_BUSY);
    assert_int_equal(c.min_attestation, ATTEST_NONE);
    assert_int_equal(c.max_body_bytes, 2048);
    config_free(&c);

    setenv("TEL_HTTP_LISTEN", "127.0.0.1:5000", 1);
    assert_int_equal(config_load(&c, conf_path("a.conf"), err), 0);
    assert_string_equal(c.http_listen, "127.0.0.1:5000");   /* env > file */
    assert_int_equal(c.max_body_bytes, 2048);               /* file > default */
    config_free(&c);
    unsetenv("TEL_HTTP_LISTEN");
}

static void test_config_file_selection(void **state)
{
    struct tg_config c;
    char err[ERR_LEN];
    write_conf("env.conf", "namespace = env.x\n");
    write_conf("cli.conf", "namespace = cli.x\n");
    write_conf("tel.conf", "namespace = cwd.x\n");

    assert_int_equal(config_load(&c, NULL, err), 0);        /* ./tel.conf */
    assert_string_equal(c.namespace_, "cwd.x");
    config_free(&c);

    setenv("TEL_CONFIG", conf_path("env.conf"), 1);
    assert_int_equal(config_load(&c, NULL, err), 0);        /* $TEL_CONFIG */
    assert_string_equal(c.namespace_, "env.x");
    config_free(&c);

    assert_int_equal(config_load(&c, conf_path("cli.conf"), err), 0);  /* -c wins */
    assert_string_equal(c.namespace_, "cli.x");
    config_free(&c);
    unsetenv("TEL_CONFIG");
    unlink(conf_path("tel.conf"));
}

static void expect_error(const char *text, const char *needle)
{
    struct tg_config c;
    char err[ERR_LEN] = "";
    write_conf("bad.conf", text);
    assert_int_equal(config_load(&c, conf_path("bad.conf"), err), -1);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not name '%s'", err, needle);
    config_free(&c);
}

static void test_errors_name_the_key(void **state)
{
    expect_error("bogus_key = 1\n", "bogus_key");
    expect_error("max_body_bytes = abc\n", "max_body_bytes");
    expect_error("max_body_bytes = 10\n", "max_body_bytes");          /* below bound */
    expect_error("reject_mode = maybe\n", "reject_mode");
    expect_error("min_attestation = D\n", "min_attestation");
    expect_error("allow_unsigned_webhooks = perhaps\n", "allow_unsigned_webhooks");
    expect_error("just some words\n", "bad.conf:1");
    expect_error("\n# c\nnamespace = a\nfoo\n", "bad.conf:4");
    expect_error("telnyx_api_url = ftp://x\n", "telnyx_api_url");
    expect_error("log_level = loud\n", "log_level");

    struct tg_config c;
    char err[ERR_LEN] = "";
    setenv("TEL_MAX_BODY_BYTES", "lots", 1);
    assert_int_equal(config_load(&c, NULL, err), -1);
    assert_non_null(strstr(err, "TEL_MAX_BODY_BYTES"));
    config_free(&c);
    unsetenv("TEL_MAX_BODY_BYTES");

    assert_int_equal(config_load(&c, "/nonexistent/x.conf", err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.conf"));
    config_free(&c);
}

static void test_api_key_from_telnyx_env(void **state)
{
    struct tg_config c;
    char err[ERR_LEN];
    setenv("TELNYX_API_KEY", "KEY123", 1);
    assert_int_equal(config_load(&c, NULL, err), 0);
    assert_string_equal(c.telnyx_api_key, "KEY123");
    config_free(&c);
    setenv("TEL_TELNYX_API_KEY", "KEY456", 1);     /* the TEL_ name wins */
    assert_int_equal(config_load(&c, NULL, err), 0);
    assert_string_equal(c.telnyx_api_key, "KEY456");
    config_free(&c);
    unsetenv("TELNYX_API_KEY");
    unsetenv("TEL_TELNYX_API_KEY");
}

static void test_attestation_names(void **state)
{
    int v;
    assert_int_equal(config_attestation_parse("A", &v), 0);
    assert_int_equal(v, ATTEST_A);
    assert_int_equal(config_attestation_parse("C", &v), 0);
    assert_int_equal(v, ATTEST_C);
    assert_int_equal(config_attestation_parse("none", &v), 0);
    assert_int_equal(v, ATTEST_NONE);
    assert_int_equal(config_attestation_parse("a", &v), -1);
    assert_true(ATTEST_A > ATTEST_B && ATTEST_B > ATTEST_C && ATTEST_C > ATTEST_NONE);
    assert_string_equal(config_attestation_name(ATTEST_B), "B");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_and_env_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_file_selection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_key_from_telnyx_env, setup, teardown),
        cmocka_unit_test(test_attestation_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
