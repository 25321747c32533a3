/*
 * config_test.c - unit tests of the configuration table (common/config.c):
 * defaults, file parsing and comments, TEL_* overrides, precedence, the
 * value checks of single keys and of key pairs, and errors.
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
    unsetenv("TEL_ANNOUNCE_TEXT");
    unsetenv("TEL_ANNOUNCE_LANGUAGE");
    unsetenv("TEL_DATA_DIR");
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

/* With var=value in the environment (and no file), config_load refuses,
 * with an error containing needle. */
static void expect_env_error(const char *var, const char *value, const char *needle)
{
    struct tg_config c;
    char err[ERR_LEN] = "";
    setenv(var, value, 1);
    assert_int_equal(config_load(&c, NULL, err), -1);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not name '%s'", err, needle);
    config_free(&c);
    unsetenv(var);
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
    expect_error("\n# c\nnamespace = a.x\nfoo\n", "bad.conf:4");
    expect_error("telnyx_api_url = ftp://x\n", "telnyx_api_url");
    expect_error("log_level = loud\n", "log_level");

    expect_env_error("TEL_MAX_BODY_BYTES", "lots", "TEL_MAX_BODY_BYTES");

    struct tg_config c;
    char err[ERR_LEN] = "";
    assert_int_equal(config_load(&c, "/nonexistent/x.conf", err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.conf"));
    config_free(&c);
}

/* config_load() must accept text as a file; the caller checks and frees c. */
static void load_ok(struct tg_config *c, const char *text)
{
    char err[ERR_LEN] = "";
    write_conf("ok.conf", text);
    if (config_load(c, conf_path("ok.conf"), err) != 0)
        fail_msg("refused '%s': %s", text, err);
}

static void expect_ok(const char *text)
{
    struct tg_config c;
    load_ok(&c, text);
    config_free(&c);
}

/* "key = value" is refused with an error naming the key (and the file line). */
static void expect_bad_value(const char *key, const char *value)
{
    char text[4096];
    snprintf(text, sizeof text, "%s = %s\n", key, value);
    expect_error(text, key);
    expect_error(text, "bad.conf:1");
}

static void test_inline_comments(void **state)
{
    struct tg_config c;
    /* README.md's example config, verbatim in its comments and spacing. */
    load_ok(&c, "telnyx_public_key = <the base64 public key>\n"
                "telnyx_api_key    = <a v2 API key>          # or the environment variable TELNYX_API_KEY\n"
                "http_listen       = 0.0.0.0:3000            # behind your TLS terminator\n"
                "numbers_file      = /etc/telgate/numbers.conf\n");
    assert_string_equal(c.telnyx_api_key, "<a v2 API key>");
    assert_string_equal(c.http_listen, "0.0.0.0:3000");
    assert_string_equal(c.numbers_file, "/etc/telgate/numbers.conf");
    config_free(&c);

    /* A '#' after a tab starts a comment; one inside a word is text. */
    load_ok(&c, "   # an indented comment line\n"
                "telnyx_api_key = KEY#1\t# after a tab\n"
                "announce_text = Dial sip:#1@x now#   # the comment\n"
                "trusted_issuers = # nothing yet\n"
                "max_body_bytes = 2048 #\n");
    assert_string_equal(c.telnyx_api_key, "KEY#1");
    assert_string_equal(c.announce_text, "Dial sip:#1@x now#");
    assert_string_equal(c.trusted_issuers, "");
    assert_int_equal(c.max_body_bytes, 2048);
    config_free(&c);

    /* A value cannot hold " #": the rest is a comment. */
    load_ok(&c, "announce_text = Press # to leave\n");
    assert_string_equal(c.announce_text, "Press");
    config_free(&c);

    /* TEL_<KEY> variables are values, not lines: nothing is cut. */
    char err[ERR_LEN];
    setenv("TEL_ANNOUNCE_TEXT", "Press # to leave  # this is not a comment", 1);
    setenv("TEL_TELNYX_API_KEY", "abc #def", 1);
    assert_int_equal(config_load(&c, NULL, err), 0);
    assert_string_equal(c.announce_text, "Press # to leave  # this is not a comment");
    assert_string_equal(c.telnyx_api_key, "abc #def");
    config_free(&c);
    unsetenv("TEL_ANNOUNCE_TEXT");
    unsetenv("TEL_TELNYX_API_KEY");
}

static void test_http_listen_values(void **state)
{
    static const char *const good[] = {
        "3000", "127.0.0.1:3000", "0.0.0.0:1", "127.0.0.1:65535", "localhost:8080",
        "gate-1.example.com:443",
    };
    static const char *const bad[] = {
        "foo", "127.0.0.1:99999", "", "47004r", "47004s", "3000,3001",
        "127.0.0.1:3000,127.0.0.1:3001", "0", "127.0.0.1:0", "03000", "127.0.0.1:",
        ":3000", "[::1]:3000", "256.1.1.1:80", "127.1:80", "1host:80", "host_name:80",
        "a:b:80", "127.0.0.1:3000s", "-3000", "+3000",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct tg_config c;
        char text[128];
        snprintf(text, sizeof text, "http_listen = %s\n", good[i]);
        load_ok(&c, text);
        assert_string_equal(c.http_listen, good[i]);
        config_free(&c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_value("http_listen", bad[i]);

    expect_env_error("TEL_HTTP_LISTEN", "127.0.0.1:99999", "TEL_HTTP_LISTEN");
    expect_env_error("TEL_HTTP_LISTEN", "127.0.0.1:99999", "http_listen");
}

static void test_endpoint_values(void **state)
{
    static const char *const keys[] = {
        "verifier_endpoint", "spine_endpoint", "actuator_endpoint",
        "events_endpoint", "progress_endpoint", "replay_endpoint",
    };
    static const char *const good[] = {
        "ipc:///tmp/tg/verifier.sock", "ipc://run/v.sock", "ipc://@telgate-v",
        "tcp://127.0.0.1:5555", "tcp://*:5555", "tcp://gate.example:5555",
        "inproc://verifiers",
    };
    static const char *const bad[] = {
        "ipc://", "tcp://", "inproc://", "ipc://@", "/tmp/v.sock", "udp://x:1",
        "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "tcp://:5555", "tcp://h:0",
        "IPC:///tmp/v.sock", "tcp://[::1]:5555",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct tg_config c;
        char text[128];
        snprintf(text, sizeof text, "spine_endpoint = %s\n", good[i]);
        load_ok(&c, text);
        assert_string_equal(c.spine_endpoint, good[i]);
        config_free(&c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_value("spine_endpoint", bad[i]);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        expect_bad_value(keys[i], "localhost:5555");

    /* An ipc path fits a Unix socket path: 107 bytes and its NUL. */
    char path[200], text[256];
    memset(path, 'a', sizeof path);
    memcpy(path, "/tmp/", 5);
    path[107] = '\0';
    snprintf(text, sizeof text, "events_endpoint = ipc://%s\n", path);
    expect_ok(text);
    path[107] = 'a';
    path[108] = '\0';
    snprintf(text, sizeof text, "events_endpoint = ipc://%s\n", path);
    expect_error(text, "events_endpoint");
}

static void test_data_dir_too_long_for_sockets(void **state)
{
    /* The default endpoints are ipc://DATA_DIR/run/NAME.sock; the longest
     * NAME has 8 letters, so DATA_DIR may have 107 - 18 = 89 bytes. */
    char dir[128], text[160];
    memset(dir, 'd', sizeof dir);
    memcpy(dir, "/nonexistent/", 13);
    dir[89] = '\0';
    snprintf(text, sizeof text, "data_dir = %s\n", dir);
    struct tg_config c;
    load_ok(&c, text);
    assert_int_equal(strlen(c.verifier_endpoint), 6 + 107);
    config_free(&c);

    dir[89] = 'd';
    dir[90] = '\0';
    snprintf(text, sizeof text, "data_dir = %s\n", dir);
    expect_error(text, "data_dir");
    expect_error(text, "_endpoint");

    /* A relative data_dir gives absolute default paths whether or not it
     * exists yet, so the length check does not change after the first start. */
    char cwd[512], want[700];
    assert_non_null(getcwd(cwd, sizeof cwd));
    load_ok(&c, "data_dir = ./not-created-yet/var\n");
    snprintf(want, sizeof want, "ipc://%s/not-created-yet/var/run/verifier.sock", cwd);
    assert_string_equal(c.verifier_endpoint, want);
    config_free(&c);

    /* Endpoints that are set do not depend on data_dir. */
    char ok[1024];
    snprintf(ok, sizeof ok, "%sverifier_endpoint = tcp://127.0.0.1:5001\n"
             "spine_endpoint = tcp://127.0.0.1:5002\nactuator_endpoint = tcp://127.0.0.1:5003\n"
             "events_endpoint = tcp://127.0.0.1:5004\nprogress_endpoint = tcp://127.0.0.1:5005\n"
             "replay_endpoint = tcp://127.0.0.1:5006\n", text);
    expect_ok(ok);

    /* The same check for a data_dir from the environment. */
    expect_env_error("TEL_DATA_DIR", dir, "data_dir");
}

static void test_announce_text_values(void **state)
{
    struct tg_config c;
    load_ok(&c, "announce_text = Bonjour, appel filtr\xc3\xa9 \xe2\x80\x94 merci.\tAu revoir \xf0\x9f\x91\x8b\n");
    assert_string_equal(c.announce_text, "Bonjour, appel filtr\xc3\xa9 \xe2\x80\x94 merci.\tAu revoir \xf0\x9f\x91\x8b");
    config_free(&c);

    static const char *const bad[] = {
        "caf\xe9",                     /* Latin-1 */
        "caf\xc3",                     /* truncated sequence */
        "\xc0\xaf slash",              /* overlong */
        "\xed\xa0\x80 surrogate",
        "\xf4\x90\x80\x80 beyond U+10FFFF",
        "\xff",
        "bell\x07",
        "a\rb",
        "del\x7f",
        "next line \xc2\x85",          /* C1 control U+0085 */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_value("announce_text", bad[i]);

    /* At most 3000 characters (not bytes). */
    char *text = malloc(20000);
    assert_non_null(text);
    char *p = text + sprintf(text, "announce_text = ");
    for (int i = 0; i < 3000; i++)
        p += sprintf(p, "\xc3\xa9");
    strcpy(p, "\n");
    expect_ok(text);
    strcpy(p, "x\n");
    expect_error(text, "announce_text");
    free(text);

    /* From the environment: the error names the variable and shows the byte. */
    expect_env_error("TEL_ANNOUNCE_TEXT", "caf\xe9", "TEL_ANNOUNCE_TEXT");
    expect_env_error("TEL_ANNOUNCE_TEXT", "caf\xe9", "announce_text");
    expect_env_error("TEL_ANNOUNCE_TEXT", "caf\xe9", "caf\\xe9");
}

static void test_announce_voice_and_language(void **state)
{
    expect_ok("announce_voice = male\nannounce_language = en-US\n");
    expect_ok("announce_voice = AWS.Polly.Joanna-Neural\nannounce_language = de-DE\n");
    expect_ok("announce_voice = Azure.en-GB-RyanNeural\nannounce_language = en-GB\n");

    expect_bad_value("announce_voice", "");
    expect_bad_value("announce_language", "");
    expect_bad_value("announce_voice", "female voice");
    expect_bad_value("announce_language", "en\x01US");

    /* male and female are Telnyx's basic voices: en-US only. */
    expect_error("announce_voice = male\nannounce_language = en-GB\n", "announce_voice");
    expect_error("announce_voice = male\nannounce_language = en-GB\n", "announce_language");
    expect_error("announce_language = de-DE\n", "announce_voice = female");

    expect_env_error("TEL_ANNOUNCE_LANGUAGE", "fr-FR", "announce_language");
}

static void test_namespace_values(void **state)
{
    static const char *const good[] = {"tel.x", "acme-corp.example", "a1.b2.c3"};
    static const char *const bad[] = {
        "", "tel", "TEL.X", "tel..x", ".tel.x", "tel.x.", "-tel.x", "tel-.x",
        "tel_x.y", "tel x.y",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.x",  /* 64 */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct tg_config c;
        char text[128];
        snprintf(text, sizeof text, "namespace = %s\n", good[i]);
        load_ok(&c, text);
        assert_string_equal(c.namespace_, good[i]);
        config_free(&c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad_value("namespace", bad[i]);
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
        cmocka_unit_test_setup_teardown(test_inline_comments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_listen_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_dir_too_long_for_sockets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_announce_text_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_announce_voice_and_language, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespace_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_key_from_telnyx_env, setup, teardown),
        cmocka_unit_test(test_attestation_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
