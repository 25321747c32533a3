/*
 * config.c - the configuration table and its parser.  Every key is declared
 * once in config_keys[]; parsing, validation, defaults and help come from it.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum key_type { KEY_STR, KEY_INT, KEY_BOOL, KEY_ENUM };

struct config_key {
    const char *name;
    enum key_type type;
    size_t offset;              /* into struct tg_config */
    const char *def;            /* default as text; NULL = none */
    int64_t min, max;           /* KEY_INT bounds */
    const char *const *choices; /* KEY_ENUM, NULL-terminated; index stored */
    const char *help;
};

static const char *const reject_modes[] = {"announce", "busy", NULL};
/* Index equals enum attestation. */
static const char *const attestations[] = {"none", "C", "B", "A", NULL};

#define OFF(f) offsetof(struct tg_config, f)
#define STR(n, f, d, h) {n, KEY_STR, OFF(f), d, 0, 0, NULL, h}
#define INT(n, f, d, lo, hi, h) {n, KEY_INT, OFF(f), d, lo, hi, NULL, h}
#define BOOL(n, f, d, h) {n, KEY_BOOL, OFF(f), d, 0, 0, NULL, h}
#define ENUM(n, f, d, c, h) {n, KEY_ENUM, OFF(f), d, 0, 0, c, h}

static const struct config_key config_keys[] = {
    STR("http_listen", http_listen, "127.0.0.1:3000", "ingress HTTP address (host:port)"),
    STR("data_dir", data_dir, "./var", "journals, spine database, keys, sockets"),
    STR("namespace", namespace_, "tel.x", "the operator's own namespace; the actor of its events"),
    STR("telnyx_public_key", telnyx_public_key, NULL, "base64 Ed25519 public key that signs Telnyx webhooks"),
    BOOL("allow_unsigned_webhooks", allow_unsigned_webhooks, "false", "run the ingress without signature checks (explicit opt-in, reported in /health)"),
    INT("signature_tolerance_s", signature_tolerance_s, "300", 1, 86400, "max age (and future skew) of telnyx-timestamp, seconds"),
    STR("telnyx_api_url", telnyx_api_url, "https://api.telnyx.com/v2", "Call Control API base URL"),
    STR("telnyx_api_key", telnyx_api_key, NULL, "bearer token (also read from TELNYX_API_KEY)"),
    INT("max_body_bytes", max_body_bytes, "65536", 1024, 1048576, "larger webhook bodies get 413"),
    ENUM("reject_mode", reject_mode, "announce", reject_modes, "announce (answer, speak, hang up) or busy (reject USER_BUSY)"),
    STR("announce_text", announce_text, "This number only accepts calls from verified namespace holders.", "what rejected callers hear"),
    STR("announce_voice", announce_voice, "female", "voice of the speak command"),
    STR("announce_language", announce_language, "en-US", "language of the speak command"),
    ENUM("min_attestation", min_attestation, "A", attestations, "lowest STIR/SHAKEN attestation (A, B, C, none) accepted for caller-ID matches"),
    STR("numbers_file", numbers_file, "numbers.conf", "the operator's numbers (E.164 label= forward_to=)"),
    STR("trusted_issuers", trusted_issuers, "", "further trusted issuer public keys (base64, comma separated)"),
    STR("verifier_endpoint", verifier_endpoint, "", "ingress -> verifiers (ingress binds); default ipc under data_dir"),
    STR("spine_endpoint", spine_endpoint, "", "-> spine (spine binds); default ipc under data_dir"),
    STR("actuator_endpoint", actuator_endpoint, "", "spine -> actuator (actuator binds); default ipc under data_dir"),
    STR("events_endpoint", events_endpoint, "", "spine's live event stream, PUB (spine binds); default ipc under data_dir"),
    STR("progress_endpoint", progress_endpoint, "", "spine -> ingress progress stream, PUB (spine binds); default ipc under data_dir"),
    STR("replay_endpoint", replay_endpoint, "", "telctl replay -> verifiers (telctl binds while replaying); default ipc under data_dir"),
    INT("http_threads", http_threads, "64", 4, 1024, "ingress worker threads (one per open connection)"),
    INT("http_request_timeout_ms", http_request_timeout_ms, "5000", 100, 600000, "ingress read/keep-alive timeout for a request"),
    INT("journal_max_bytes", journal_max_bytes, "67108864", 65536, INT64_C(1) << 40, "journal dump file size before rotation"),
    INT("journal_retention_s", journal_retention_s, "86400", 0, INT64_C(1) << 32, "keep processed dump files this long"),
    INT("redeliver_after_ms", redeliver_after_ms, "5000", 100, 3600000, "ingress re-publishes a webhook not processed after this"),
    INT("max_attempts", max_attempts, "5", 1, 1000, "deliveries of one webhook to verifiers before it is parked"),
    INT("command_timeout_ms", command_timeout_ms, "5000", 100, 120000, "one Telnyx API attempt's timeout"),
    INT("command_backoff_initial_ms", command_backoff_initial_ms, "200", 1, 600000, "first retry delay"),
    INT("command_backoff_max_ms", command_backoff_max_ms, "10000", 1, 3600000, "retry delay cap"),
    INT("command_give_up_s", command_give_up_s, "300", 1, 86400, "stop retrying a command after this long"),
    INT("command_resend_ms", command_resend_ms, "10000", 100, 3600000, "spine re-sends a pending command to the actuator after this"),
    INT("spine_batch_max", spine_batch_max, "256", 1, 100000, "most results committed in one LMDB transaction"),
    STR("log_level", log_level, "info", "debug, info, warn or error"),
};

static char **str_field(struct tg_config *cfg, const struct config_key *k)
{
    return (char **)((char *)cfg + k->offset);
}

static const struct config_key *key_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* Parse value for key k into cfg; -1 with err naming the key. */
static int key_set(struct tg_config *cfg, const struct config_key *k,
                   const char *value, const char *origin, char *err)
{
    char *base = (char *)cfg + k->offset;
    switch (k->type) {
    case KEY_STR: {
        char **p = (char **)base;
        free(*p);
        *p = xstrdup(value);
        return 0;
    }
    case KEY_INT: {
        int64_t v;
        if (tg_parse_i64(value, k->min, k->max, &v) != 0)
            return tg_err(err, "%s: bad value '%s' for %s (integer %lld..%lld)",
                          origin, value, k->name, (long long)k->min, (long long)k->max);
        *(int64_t *)base = v;
        return 0;
    }
    case KEY_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "1"))
            *(bool *)base = true;
        else if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "0"))
            *(bool *)base = false;
        else
            return tg_err(err, "%s: bad value '%s' for %s (true or false)",
                          origin, value, k->name);
        return 0;
    case KEY_ENUM:
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(value, k->choices[i]) == 0) {
                *(int *)base = i;
                return 0;
            }
        return tg_err(err, "%s: bad value '%s' for %s", origin, value, k->name);
    }
    return tg_err(err, "%s: internal: bad key type", k->name);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int config_read_file(struct tg_config *cfg, const char *path, char *err)
{
    char *text;
    char ferr[ERR_LEN];
    if (tg_read_file(path, 1 << 20, &text, NULL, ferr) != 0)
        return tg_err(err, "config: %s", ferr);
    int rc = 0, lineno = 0;
    for (char *line = text, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        char origin[ERR_LEN];
        snprintf(origin, sizeof origin, "%.200s:%d", path, lineno);
        if (!eq) {
            rc = tg_err(err, "%s: line is not key = value", origin);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        const struct config_key *k = key_find(key);
        if (!k) {
            rc = tg_err(err, "%s: unknown key '%s'", origin, key);
            break;
        }
        rc = key_set(cfg, k, value, origin, err);
    }
    free(text);
    return rc;
}

static char *default_endpoint(const char *data_dir, const char *name)
{
    char abs[PATH_MAX];
    const char *dir = realpath(data_dir, abs) ? abs : data_dir;
    return xasprintf("ipc://%s/run/%s.sock", dir, name);
}

int config_load(struct tg_config *cfg, const char *cli_path, char *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        if (k->def && key_set(cfg, k, k->def, "default", err) != 0)
            return -1;
    }

    const char *path = cli_path;
    if (!path || !*path)
        path = getenv("TEL_CONFIG");
    if ((!path || !*path) && access("tel.conf", F_OK) == 0)
        path = "tel.conf";
    if (path && *path) {
        cfg->config_path = xstrdup(path);
        if (config_read_file(cfg, path, err) != 0)
            return -1;
    }

    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        char env[96] = "TEL_";
        for (size_t j = 0; k->name[j] && j + 5 < sizeof env; j++)
            env[4 + j] = (char)toupper((unsigned char)k->name[j]), env[5 + j] = '\0';
        const char *v = getenv(env);
        if (v && key_set(cfg, k, v, env, err) != 0)
            return -1;
    }
    if ((!cfg->telnyx_api_key || !*cfg->telnyx_api_key) && getenv("TELNYX_API_KEY")) {
        free(cfg->telnyx_api_key);
        cfg->telnyx_api_key = xstrdup(getenv("TELNYX_API_KEY"));
    }

    if (!*cfg->data_dir)
        return tg_err(err, "data_dir: must not be empty");
    if (!*cfg->namespace_)
        return tg_err(err, "namespace: must not be empty");
    if (strlen(cfg->announce_text) == 0 || strlen(cfg->announce_text) > 3000)
        return tg_err(err, "announce_text: must be 1..3000 characters");
    if (cfg->command_backoff_max_ms < cfg->command_backoff_initial_ms)
        return tg_err(err, "command_backoff_max_ms: smaller than command_backoff_initial_ms");
    if (strncmp(cfg->telnyx_api_url, "http://", 7) && strncmp(cfg->telnyx_api_url, "https://", 8))
        return tg_err(err, "telnyx_api_url: must start with http:// or https://");
    enum log_level lvl;
    if (log_level_parse(cfg->log_level, &lvl) != 0)
        return tg_err(err, "log_level: bad value '%s' (debug, info, warn, error)", cfg->log_level);
    log_set_level(lvl);

    struct { char **field; const char *name; } eps[] = {
        {&cfg->verifier_endpoint, "verifier"}, {&cfg->spine_endpoint, "spine"},
        {&cfg->actuator_endpoint, "actuator"}, {&cfg->events_endpoint, "events"},
        {&cfg->progress_endpoint, "progress"}, {&cfg->replay_endpoint, "replay"},
    };
    for (size_t i = 0; i < ARRAY_LEN(eps); i++)
        if (!**eps[i].field) {
            free(*eps[i].field);
            *eps[i].field = default_endpoint(cfg->data_dir, eps[i].name);
        }
    return 0;
}

void config_free(struct tg_config *cfg)
{
    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++)
        if (config_keys[i].type == KEY_STR) {
            char **p = str_field(cfg, &config_keys[i]);
            free(*p);
            *p = NULL;
        }
    free(cfg->config_path);
    cfg->config_path = NULL;
}

void config_print_help(FILE *out)
{
    fprintf(out, "configuration keys (file `key = value`, or environment TEL_<KEY>):\n");
    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        fprintf(out, "  %-28s %s [default: %s]\n", k->name, k->help,
                k->def ? (*k->def ? k->def : "\"\"") : "none");
    }
}

void config_print(const struct tg_config *cfg, FILE *out)
{
    for (size_t i = 0; i < ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        const char *base = (const char *)cfg + k->offset;
        fprintf(out, "%s = ", k->name);
        switch (k->type) {
        case KEY_STR: {
            const char *v = *(char *const *)base;
            if (v && *v && strcmp(k->name, "telnyx_api_key") == 0)
                v = "********";
            fprintf(out, "%s\n", v ? v : "");
            break;
        }
        case KEY_INT: fprintf(out, "%lld\n", (long long)*(const int64_t *)base); break;
        case KEY_BOOL: fprintf(out, "%s\n", *(const bool *)base ? "true" : "false"); break;
        case KEY_ENUM: fprintf(out, "%s\n", k->choices[*(const int *)base]); break;
        }
    }
}

int config_attestation_parse(const char *s, int *out)
{
    for (int i = 0; attestations[i]; i++)
        if (strcmp(s, attestations[i]) == 0) {
            *out = i;
            return 0;
        }
    return -1;
}

const char *config_attestation_name(int level)
{
    if (level < 0 || level > ATTEST_A)
        return "none";
    return attestations[level];
}
