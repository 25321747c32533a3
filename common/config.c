/*
 * config.c - the configuration table and its parser.  Every key is declared
 * once in config_keys[]; parsing, validation, defaults and help come from it.
 */
#include "config.h"
#include "cert.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum key_type { KEY_STR, KEY_INT, KEY_BOOL, KEY_ENUM };

/* Checks a KEY_STR value: NULL if it is good, else why not (a phrase that
 * goes into "bad value '...' for KEY (why)"). */
typedef const char *str_check_fn(const char *value);

struct config_key {
    const char *name;
    enum key_type type;
    size_t offset;              /* into struct tg_config */
    const char *def;            /* default as text; NULL = none */
    int64_t min, max;           /* KEY_INT bounds */
    const char *const *choices; /* KEY_ENUM, NULL-terminated; index stored */
    str_check_fn *check;        /* KEY_STR, optional */
    const char *help;
};

static const char *const reject_modes[] = {"announce", "busy", NULL};
/* Index equals enum attestation. */
static const char *const attestations[] = {"none", "C", "B", "A", NULL};

static str_check_fn check_listen, check_namespace, check_announce_text,
    check_token, check_endpoint;

#define OFF(f) offsetof(struct tg_config, f)
#define STR(n, f, d, h) {n, KEY_STR, OFF(f), d, 0, 0, NULL, NULL, h}
#define STR_CHECKED(n, f, d, chk, h) {n, KEY_STR, OFF(f), d, 0, 0, NULL, chk, h}
#define INT(n, f, d, lo, hi, h) {n, KEY_INT, OFF(f), d, lo, hi, NULL, NULL, h}
#define BOOL(n, f, d, h) {n, KEY_BOOL, OFF(f), d, 0, 0, NULL, NULL, h}
#define ENUM(n, f, d, c, h) {n, KEY_ENUM, OFF(f), d, 0, 0, c, NULL, h}

static const struct config_key config_keys[] = {
    STR_CHECKED("http_listen", http_listen, "127.0.0.1:3000", check_listen, "ingress HTTP address, [HOST:]PORT (HOST: IPv4 address or host name)"),
    STR("data_dir", data_dir, "./var", "journals, spine database, keys, sockets"),
    STR_CHECKED("namespace", namespace_, "tel.x", check_namespace, "the operator's own namespace; the actor of its events"),
    STR("telnyx_public_key", telnyx_public_key, NULL, "base64 Ed25519 public key that signs Telnyx webhooks"),
    BOOL("allow_unsigned_webhooks", allow_unsigned_webhooks, "false", "run the ingress without signature checks (explicit opt-in, reported in /health)"),
    INT("signature_tolerance_s", signature_tolerance_s, "300", 1, 86400, "max age (and future skew) of telnyx-timestamp, seconds"),
    STR("telnyx_api_url", telnyx_api_url, "https://api.telnyx.com/v2", "Call Control API base URL"),
    STR("telnyx_api_key", telnyx_api_key, NULL, "bearer token (also read from TELNYX_API_KEY)"),
    INT("max_body_bytes", max_body_bytes, "65536", 1024, 1048576, "larger webhook bodies get 413"),
    ENUM("reject_mode", reject_mode, "announce", reject_modes, "announce (answer, speak, hang up) or busy (reject USER_BUSY)"),
    STR_CHECKED("announce_text", announce_text, "This number only accepts calls from verified namespace holders.", check_announce_text, "what rejected callers hear"),
    STR_CHECKED("announce_voice", announce_voice, "female", check_token, "voice of the speak command"),
    STR_CHECKED("announce_language", announce_language, "en-US", check_token, "language of the speak command"),
    ENUM("min_attestation", min_attestation, "A", attestations, "lowest STIR/SHAKEN attestation (A, B, C, none) accepted for caller-ID matches"),
    STR("numbers_file", numbers_file, "numbers.conf", "the operator's numbers (E.164 label= forward_to=)"),
    STR("trusted_issuers", trusted_issuers, "", "further trusted issuer public keys (base64, comma separated)"),
    STR_CHECKED("verifier_endpoint", verifier_endpoint, "", check_endpoint, "ingress -> verifiers (ingress binds); default ipc under data_dir"),
    STR_CHECKED("spine_endpoint", spine_endpoint, "", check_endpoint, "-> spine (spine binds); default ipc under data_dir"),
    STR_CHECKED("actuator_endpoint", actuator_endpoint, "", check_endpoint, "spine -> actuator (actuator binds); default ipc under data_dir"),
    STR_CHECKED("events_endpoint", events_endpoint, "", check_endpoint, "spine's live event stream, PUB (spine binds); default ipc under data_dir"),
    STR_CHECKED("progress_endpoint", progress_endpoint, "", check_endpoint, "spine -> ingress progress stream, PUB (spine binds); default ipc under data_dir"),
    STR_CHECKED("replay_endpoint", replay_endpoint, "", check_endpoint, "telctl replay -> verifiers (telctl binds while replaying); default ipc under data_dir"),
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

/* --- value checks (str_check_fn) ------------------------------------------ */

/* A TCP port: decimal 1..65535 without a leading zero (CivetWeb reads a bare
 * port with strtoul base 0, so "03000" would be octal 1536). */
static bool port_valid(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return n >= 1 && n <= 5 && s[n] == '\0' && s[0] != '0' && atoi(s) <= 65535;
}

/* A host name as CivetWeb resolves it: a letter first (a leading digit would
 * be read as a port), then letters, digits, '.' and '-'. */
static bool hostname_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 253 && isalpha((unsigned char)s[0]) &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n;
}

/*
 * http_listen is CivetWeb's listening_ports (ingress_http.c), which also
 * takes lists ("80,443"), TLS and redirect suffixes ("443s", "80r") and, if
 * built with it, IPv6; we take exactly one [HOST:]PORT.  HOST is an IPv4
 * address or a host name that must resolve to one when the ingress starts:
 * Debian's CivetWeb 1.15 is built without IPv6, so "[::1]:3000" would only
 * fail later, at start.
 */
static const char *check_listen(const char *v)
{
    static const char want[] = "expected [HOST:]PORT, PORT 1..65535";
    const char *colon = strrchr(v, ':');
    if (!port_valid(colon ? colon + 1 : v))
        return want;
    if (!colon)
        return NULL;
    if (v[0] == '[')
        return "IPv6 addresses are not supported: this CivetWeb is built without IPv6";
    char host[256];
    size_t n = (size_t)(colon - v);
    if (n == 0 || n >= sizeof host)
        return want;
    memcpy(host, v, n);
    host[n] = '\0';
    if (isdigit((unsigned char)host[0])) {
        struct in_addr a;
        return inet_pton(AF_INET, host, &a) == 1 ? NULL : "HOST is not an IPv4 address a.b.c.d";
    }
    return hostname_valid(host) ? NULL
        : "HOST must be an IPv4 address or a host name of letters, digits, '.' and '-'";
}

static const char *check_namespace(const char *v)
{
    return cert_namespace_valid(v) ? NULL
        : "lower-case labels a-z 0-9 -, at least two, at most 63 characters, e.g. tel.x";
}

/* Longest ipc:// path ZeroMQ takes: it must fit sockaddr_un.sun_path with
 * its NUL, else bind and connect fail with ENAMETOOLONG. */
#define IPC_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* An endpoint: empty (derived from data_dir), ipc://PATH, tcp://HOST:PORT or
 * inproc://NAME. */
static const char *check_endpoint(const char *v)
{
    if (!*v)
        return NULL;
    if (strncmp(v, "ipc://", 6) == 0) {
        const char *path = v + 6;
        if (!*path || strcmp(path, "@") == 0)
            return "ipc:// needs a socket path";
        if (strlen(path) > IPC_PATH_MAX)
            return "an ipc:// path longer than a Unix socket path allows (107 bytes)";
        return NULL;
    }
    if (strncmp(v, "tcp://", 6) == 0) {
        const char *colon = strrchr(v + 6, ':');
        if (!colon || colon == v + 6 || !port_valid(colon + 1))
            return "expected tcp://HOST:PORT, PORT 1..65535";
        if (v[6] == '[')    /* binding one needs ZMQ_IPV6, which no stage sets */
            return "IPv6 addresses are not supported";
        return NULL;
    }
    if (strncmp(v, "inproc://", 9) == 0)
        return v[9] ? NULL : "inproc:// needs a name";
    return "expected ipc://PATH, tcp://HOST:PORT or inproc://NAME";
}

/* The speak payload: JSON needs valid UTF-8 (jansson drops the field
 * otherwise), no control characters but tab, and Telnyx takes at most 3000
 * characters. */
static const char *check_announce_text(const char *v)
{
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; chars++) {
        if (*p < 0x80) {
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                return "control character";
            p++;
            continue;
        }
        size_t n = tg_utf8_len(p, strlen((const char *)p));
        if (n == 0)
            return "not valid UTF-8";
        if (n == 2 && tg_utf8_is_c1(p))
            return "control character";
        p += n;
    }
    return chars >= 1 && chars <= 3000 ? NULL : "1..3000 characters";
}

/* announce_voice and announce_language: a Telnyx voice name or language
 * code, printable ASCII without spaces. */
static const char *check_token(const char *v)
{
    if (!*v)
        return "must not be empty";
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p > '~')
            return "printable ASCII without spaces";
    return NULL;
}

/* --- parsing ---------------------------------------------------------------- */

/* A value as an error message shows it: at most about 60 characters, bytes
 * outside printable ASCII as \xNN, so junk cannot garble a log line. */
static const char *value_shown(const char *v, char out[80])
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (o >= 60) {
            strcpy(out + o, "...");
            return out;
        }
        if (*p >= ' ' && *p <= '~')
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, 5, "\\x%02x", *p);
    }
    out[o] = '\0';
    return out;
}

/* Parse value for key k into cfg; -1 with err naming the key. */
static int key_set(struct tg_config *cfg, const struct config_key *k,
                   const char *value, const char *origin, char *err)
{
    char *base = (char *)cfg + k->offset;
    char shown[80];
    switch (k->type) {
    case KEY_STR: {
        const char *why = k->check ? k->check(value) : NULL;
        if (why)
            return tg_err(err, "%s: bad value '%s' for %s (%s)",
                          origin, value_shown(value, shown), k->name, why);
        char **p = (char **)base;
        free(*p);
        *p = xstrdup(value);
        return 0;
    }
    case KEY_INT: {
        int64_t v;
        if (tg_parse_i64(value, k->min, k->max, &v) != 0)
            return tg_err(err, "%s: bad value '%s' for %s (integer %lld..%lld)",
                          origin, value_shown(value, shown), k->name,
                          (long long)k->min, (long long)k->max);
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
                          origin, value_shown(value, shown), k->name);
        return 0;
    case KEY_ENUM:
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(value, k->choices[i]) == 0) {
                *(int *)base = i;
                return 0;
            }
        return tg_err(err, "%s: bad value '%s' for %s", origin, value_shown(value, shown), k->name);
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

/* Cut the comment off a line of the file: a '#' at the start of the line or
 * after whitespace starts one; a '#' inside a word ("sip:#1@x") is text. */
static void strip_comment(char *line)
{
    for (char *p = line; *p; p++)
        if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            return;
        }
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
        strip_comment(line);
        char *s = trim(line);
        if (*s == '\0')
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

/* ipc://DATA_DIR/run/NAME.sock with DATA_DIR absolute, also before the
 * directory exists (made absolute against the working directory), so the
 * path -- and the check of its length -- is the same at the first start as
 * at every later one. */
static char *default_endpoint(const char *data_dir, const char *name)
{
    char abs[PATH_MAX], cwd[PATH_MAX];
    if (realpath(data_dir, abs))
        return xasprintf("ipc://%s/run/%s.sock", abs, name);
    if (data_dir[0] != '/' && getcwd(cwd, sizeof cwd)) {
        while (strncmp(data_dir, "./", 2) == 0)
            data_dir += 2;
        return xasprintf("ipc://%s/%s/run/%s.sock", strcmp(cwd, "/") ? cwd : "", data_dir, name);
    }
    return xasprintf("ipc://%s/run/%s.sock", data_dir, name);
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
    if (config_voice_is_basic(cfg->announce_voice) && strcmp(cfg->announce_language, "en-US") != 0)
        return tg_err(err, "announce_language: '%.40s' does not go with announce_voice = %s, "
                      "which speaks only en-US (other languages need another voice)",
                      cfg->announce_language, cfg->announce_voice);
    if (cfg->command_backoff_max_ms < cfg->command_backoff_initial_ms)
        return tg_err(err, "command_backoff_max_ms: smaller than command_backoff_initial_ms");
    if (strncmp(cfg->telnyx_api_url, "http://", 7) && strncmp(cfg->telnyx_api_url, "https://", 8))
        return tg_err(err, "telnyx_api_url: must start with http:// or https://");
    enum log_level lvl;
    if (log_level_parse(cfg->log_level, &lvl) != 0)
        return tg_err(err, "log_level: bad value '%s' (debug, info, warn, error)", cfg->log_level);
    log_set_level(lvl);

    struct { char **field; const char *key, *name; } eps[] = {
        {&cfg->verifier_endpoint, "verifier_endpoint", "verifier"},
        {&cfg->spine_endpoint, "spine_endpoint", "spine"},
        {&cfg->actuator_endpoint, "actuator_endpoint", "actuator"},
        {&cfg->events_endpoint, "events_endpoint", "events"},
        {&cfg->progress_endpoint, "progress_endpoint", "progress"},
        {&cfg->replay_endpoint, "replay_endpoint", "replay"},
    };
    for (size_t i = 0; i < ARRAY_LEN(eps); i++) {
        if (**eps[i].field)
            continue;
        free(*eps[i].field);
        *eps[i].field = default_endpoint(cfg->data_dir, eps[i].name);
        if (strlen(*eps[i].field + 6) > IPC_PATH_MAX)
            return tg_err(err, "data_dir: too long for the default %s: its socket path "
                          "would be %zu bytes, a Unix socket path holds at most %zu "
                          "(use a shorter data_dir or set %s)", eps[i].key,
                          strlen(*eps[i].field + 6), IPC_PATH_MAX, eps[i].key);
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

bool config_voice_is_basic(const char *voice)
{
    return strcmp(voice, "male") == 0 || strcmp(voice, "female") == 0;
}

const char *config_attestation_name(int level)
{
    if (level < 0 || level > ATTEST_A)
        return "none";
    return attestations[level];
}
