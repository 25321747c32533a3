/*
 * telctl - the operator CLI: global options, configuration, and dispatch to
 * the subcommands of the table below (each implemented in telctl_<topic>.c).
 */
#include "log.h"
#include "telctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

struct telctl_command {
    const char *name;
    telctl_cmd_fn fn;
    const char *usage;      /* arguments after the name */
    const char *help;
};

static const struct telctl_command commands[] = {
    {"events", telctl_events, "[--type PREFIX] [--from SEQ] [--limit N] [--json]", "query the spine"},
    {"tail", telctl_tail, "[--type PREFIX] [--json]", "follow the live event stream"},
    {"verify", telctl_verify, "", "check the hash chain"},
    {"keygen", telctl_keygen, "FILE", "new Ed25519 key pair; secret to FILE (0600), prints the public key"},
    {"issuer", telctl_issuer, "init", "create this installation's issuer key if absent; print its public key"},
    {"cert", telctl_cert, "issue --namespace NS --pubkey B64 --phone E164 [--phone ...] [--days N] [--out FILE]"
                          " | revoke SERIAL | list [--json]", "certificates"},
    {"status", telctl_status, "[--json]", "each stage: up/down, counters, lag (exit 1 if a stage is down)"},
    {"replay", telctl_replay, "[--into DATA_DIR] FILE...", "feed journal dump files through the pipeline again (or into DATA_DIR)"},
    {"token", telctl_token, "--key FILE --cert FILE --from E164 --to E164", "value for the X-Namespace-Token SIP header"},
};

static const struct telctl_command *command_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: telctl [-c CONFIG] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < ARRAY_LEN(commands); i++)
        fprintf(out, "  %s %-50s %s\n", commands[i].name, commands[i].usage, commands[i].help);
}

int telctl_usage(const char *cmd, const char *fmt, ...)
{
    const struct telctl_command *c = command_find(cmd);
    va_list ap;
    fprintf(stderr, "telctl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (c)
        fprintf(stderr, "usage: telctl [-c CONFIG] %s%s%s\n", c->name, *c->usage ? " " : "", c->usage);
    return TELCTL_EXIT_USAGE;
}

int telctl_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "telctl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return TELCTL_EXIT_FAIL;
}

int telctl_data_dir_check(const struct tg_config *cfg, const char *cmd)
{
    struct stat st;
    if (stat(cfg->data_dir, &st) != 0) {
        if (errno == ENOENT)
            return telctl_fail(cmd, "data_dir %s does not exist (check data_dir in the configuration "
                               "or TEL_DATA_DIR)", cfg->data_dir);
        return telctl_fail(cmd, "data_dir %s: %s", cfg->data_dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return telctl_fail(cmd, "data_dir %s is not a directory", cfg->data_dir);
    return TELCTL_EXIT_OK;
}

int telctl_opt(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL;
    struct tg_config cfg;
    char err[ERR_LEN];
    int i = 1;

    log_init("telctl");
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return TELCTL_EXIT_OK;
        } else if (strcmp(argv[i], "-c") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "telctl: option -c needs a CONFIG path\n");
                return TELCTL_EXIT_USAGE;
            }
            cfg_path = argv[++i];
        } else {
            fprintf(stderr, "telctl: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return TELCTL_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "telctl: missing command\n");
        usage(stderr);
        return TELCTL_EXIT_USAGE;
    }
    const struct telctl_command *c = command_find(argv[i]);
    if (!c) {
        fprintf(stderr, "telctl: unknown command '%s'\n", argv[i]);
        usage(stderr);
        return TELCTL_EXIT_USAGE;
    }
    if (config_load(&cfg, cfg_path, err) != 0) {
        fprintf(stderr, "telctl: configuration error: %s\n", err);
        config_free(&cfg);          /* config_load leaves partial state */
        return TELCTL_EXIT_USAGE;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "telctl: libsodium failed to initialise\n");
        config_free(&cfg);
        return TELCTL_EXIT_FAIL;
    }
    int rc = c->fn(&cfg, argc - i, argv + i);
    config_free(&cfg);
    return rc;
}
