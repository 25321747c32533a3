/*
 * telctl_cert.c - telctl keygen, issuer init, cert issue|revoke|list and
 * token: the operator's side of namespace certificates.  Issuing and revoking
 * are recorded by sending ns.* events to the spine (the only writer) and
 * waiting until they are committed.
 */
#include "cert.h"
#include "event.h"
#include "keyfile.h"
#include "mp.h"
#include "msg.h"
#include "registry.h"
#include "spinedb.h"
#include "telctl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define COMMIT_WAIT_MS 5000
#define DAYS_DEFAULT 365
#define DAYS_MAX 3650

static char *keys_path(const struct tg_config *cfg, const char *name)
{
    return xasprintf("%s/keys/%s", cfg->data_dir, name);
}

/* ---- keygen, issuer init ---- */

int telctl_keygen(const struct tg_config *cfg, int argc, char **argv)
{
    TG_UNUSED(cfg);
    uint8_t pk[CERT_PK_BYTES];
    char err[ERR_LEN];
    if (argc != 2 || argv[1][0] == '-')
        return telctl_usage("keygen", "expects exactly one FILE");
    if (keyfile_generate(argv[1], pk, err) != 0)
        return telctl_fail("keygen", "%s", err);
    char *b64 = tg_b64_encode(pk, sizeof pk);
    printf("%s\n", b64);
    free(b64);
    return TELCTL_EXIT_OK;
}

static int issuer_init(const struct tg_config *cfg)
{
    char err[ERR_LEN];
    char *dir = xasprintf("%s/keys", cfg->data_dir);
    char *skp = keys_path(cfg, "issuer.key"), *pkp = keys_path(cfg, "issuer.pub");
    uint8_t pk[CERT_PK_BYTES], sk[CERT_SK_BYTES];
    int rc = TELCTL_EXIT_OK;
    struct stat st;

    if (tg_mkdir_p(dir, err) != 0 || chmod(dir, 0700) != 0) {
        rc = telctl_fail("issuer", "%s: %s", dir, err);
        goto out;
    }
    if (stat(skp, &st) == 0) {
        if (keyfile_read_secret(skp, sk, pk, err) != 0) {
            rc = telctl_fail("issuer", "%s", err);
            goto out;
        }
        sodium_memzero(sk, sizeof sk);
    } else if (keyfile_generate(skp, pk, err) != 0) {
        rc = telctl_fail("issuer", "%s", err);
        goto out;
    }
    if (keyfile_write_public(pkp, pk, err) != 0) {
        rc = telctl_fail("issuer", "%s", err);
        goto out;
    }
    char *b64 = tg_b64_encode(pk, sizeof pk);
    printf("%s\n", b64);
    free(b64);
out:
    free(dir);
    free(skp);
    free(pkp);
    return rc;
}

int telctl_issuer(const struct tg_config *cfg, int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "init") != 0)
        return telctl_usage("issuer", "the only subcommand is 'init'");
    return issuer_init(cfg);
}

/* ---- recording ns.* events through the spine ---- */

/* Is event id committed (and durable: the spine may not have synced the
 * commit's meta page yet)?  1 yes, 0 not (yet), -1 error. */
static int event_committed(const struct tg_config *cfg, const char *id, char *err)
{
    struct spinedb *db;
    MDB_txn *txn;
    if (spinedb_read_begin(cfg->data_dir, &db, &txn, err) != 0)
        return -1;
    int found = 0;
    if (txn) {
        MDB_val k = {strlen(id), (void *)id}, v;
        int rc = mdb_get(txn, db->ids, &k, &v);
        found = rc == 0 ? 1 : rc == MDB_NOTFOUND ? 0 : spinedb_err(err, "read event ids", rc);
        if (found == 1 && spinedb_sync_file(db, err) != 0)
            found = -1;
    }
    spinedb_read_end(&db, txn);
    return found;
}

/* Send one event to the spine and wait until it is committed. */
static int event_record(const struct tg_config *cfg, const struct tg_event *ev, char *err)
{
    int found = event_committed(cfg, ev->id, err);
    if (found != 0)
        return found < 0 ? -1 : 0;       /* already recorded: idempotent */
    void *ctx = zmq_ctx_new();
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int zero = 0, rc = -1;
    zmq_setsockopt(push, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(push, cfg->spine_endpoint) != 0) {
        tg_err(err, "connect %s: %s", cfg->spine_endpoint, zmq_strerror(errno));
        goto out;
    }
    struct msg_append m = {.events = (struct tg_event *)ev, .n_events = 1};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msg_append_encode(&sb, &m);
    int tmo = COMMIT_WAIT_MS;
    zmq_setsockopt(push, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    int sent = zmq_send(push, sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    if (sent < 0) {
        tg_err(err, "the spine is not reachable at %s (is it running?)", cfg->spine_endpoint);
        goto out;
    }
    for (uint64_t deadline = tg_mono_ms() + COMMIT_WAIT_MS; tg_mono_ms() < deadline;) {
        found = event_committed(cfg, ev->id, err);
        if (found != 0) {
            rc = found < 0 ? -1 : 0;
            goto out;
        }
        usleep(20 * 1000);
    }
    tg_err(err, "the spine did not record the event within %d ms (is it running?)", COMMIT_WAIT_MS);
out:
    zmq_close(push);
    zmq_ctx_term(ctx);
    return rc;
}

/* ---- cert issue ---- */

static void rfc3339_s(uint64_t unix_s, char out[TG_RFC3339_LEN])
{
    tg_rfc3339(unix_s * 1000000u, out);
}

/* The certificate as JSON (what `cert issue` prints and `token --cert` reads). */
static json_t *cert_json(const struct cert *c, const struct cert_blob *b, const uint8_t issuer_pk[CERT_PK_BYTES],
                         const char *state)
{
    char nb[TG_RFC3339_LEN], na[TG_RFC3339_LEN];
    char *pk = tg_b64_encode(c->holder_pk, CERT_PK_BYTES);
    char *blob = tg_b64_encode(b->bytes, b->len);
    json_t *phones = json_array();
    for (size_t i = 0; i < c->n_phones; i++)
        json_array_append_new(phones, json_string(c->phones[i]));
    rfc3339_s(c->not_before, nb);
    rfc3339_s(c->not_after, na);
    char keyid[2 * CERT_KEYID_BYTES + 1];
    tg_hex(c->issuer_id, CERT_KEYID_BYTES, keyid);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "serial", c->serial, "namespace",
                          c->namespace_, "pubkey", pk, "phones", phones, "not_before", nb, "not_after", na,
                          "issuer_key_id", keyid);
    if (issuer_pk) {
        char *ipk = tg_b64_encode(issuer_pk, CERT_PK_BYTES);
        json_object_set_new(o, "issuer", json_string(ipk));
        free(ipk);
    }
    if (state)
        json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "cert", json_string(blob));
    free(pk);
    free(blob);
    return o;
}

static void cert_issued_event(const struct tg_config *cfg, const struct cert *c, const struct cert_blob *b,
                              const uint8_t issuer_pk[CERT_PK_BYTES], struct tg_event *ev, char *id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char nb[TG_RFC3339_LEN], na[TG_RFC3339_LEN];
    char *hpk = tg_b64_encode(c->holder_pk, CERT_PK_BYTES), *ipk = tg_b64_encode(issuer_pk, CERT_PK_BYTES);
    char *blob = tg_b64_encode(b->bytes, b->len);
    rfc3339_s(c->not_before, nb);
    rfc3339_s(c->not_after, na);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    mp_pack_kv_str(&pk, "serial", c->serial);
    mp_pack_kv_str(&pk, "namespace", c->namespace_);
    mp_pack_kv_str(&pk, "pubkey", hpk);
    mp_pack_cstr(&pk, "phones");
    msgpack_pack_array(&pk, c->n_phones);
    for (size_t i = 0; i < c->n_phones; i++)
        mp_pack_cstr(&pk, c->phones[i]);
    mp_pack_kv_str(&pk, "not_before", nb);
    mp_pack_kv_str(&pk, "not_after", na);
    mp_pack_kv_str(&pk, "issuer", ipk);
    mp_pack_kv_str(&pk, "cert", blob);
    free(hpk);
    free(ipk);
    free(blob);
    event_id(c->serial, "issued", id);
    *ev = (struct tg_event){.type = REGISTRY_EV_ISSUED, .actor = cfg->namespace_, .id = id,
                            .data = (uint8_t *)sb.data, .data_len = sb.size};
}

/* The --out file of cert issue, open but not written yet. */
struct out_file {
    const char *path;
    int fd;                 /* -1: none */
    bool created;           /* it did not exist before */
};

/* Open (creating if absent, keeping what is there until out_file_write)
 * path for writing.  0, or -1 with err naming the path. */
static int out_file_open(struct out_file *of, const char *path, char *err)
{
    of->path = path;
    of->created = true;
    of->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (of->fd < 0 && errno == EEXIST) {
        of->created = false;
        of->fd = open(path, O_WRONLY | O_CLOEXEC);
    }
    if (of->fd < 0)
        return tg_err(err, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* Close an out_file that will not be written, removing it if it was created. */
static void out_file_abandon(struct out_file *of)
{
    if (of->fd < 0)
        return;
    close(of->fd);
    of->fd = -1;
    if (of->created)
        unlink(of->path);
}

/* Replace the file's content with text and a newline, and close it.  0, or
 * -1 with err naming the path. */
static int out_file_write(struct out_file *of, const char *text, char *err)
{
    size_t len = strlen(text);
    int rc = 0;
    if (ftruncate(of->fd, 0) != 0 || tg_write_all(of->fd, text, len) != 0 || tg_write_all(of->fd, "\n", 1) != 0)
        rc = tg_err(err, "could not write %s: %s", of->path, strerror(errno));
    if (close(of->fd) != 0 && rc == 0)
        rc = tg_err(err, "could not write %s: %s", of->path, strerror(errno));
    of->fd = -1;
    return rc;
}

static int cert_issue_cmd(const struct tg_config *cfg, int argc, char **argv)
{
    struct cert c;
    const char *ns = NULL, *pubkey = NULL, *out = NULL, *days_s = NULL, *v;
    char err[ERR_LEN];
    memset(&c, 0, sizeof c);
    for (int i = 2; i < argc; i++) {
        int r;
        if ((r = telctl_opt(argc, argv, &i, "--namespace", &ns)) ||
            (r = telctl_opt(argc, argv, &i, "--pubkey", &pubkey)) ||
            (r = telctl_opt(argc, argv, &i, "--days", &days_s)) ||
            (r = telctl_opt(argc, argv, &i, "--out", &out))) {
            if (r < 0)
                return telctl_usage("cert", "%s needs a value", argv[i]);
        } else if ((r = telctl_opt(argc, argv, &i, "--phone", &v))) {
            if (r < 0)
                return telctl_usage("cert", "--phone needs a value");
            if (c.n_phones == CERT_MAX_PHONES)
                return telctl_usage("cert", "at most %d --phone", CERT_MAX_PHONES);
            if (!cert_e164_valid(v))
                return telctl_usage("cert", "--phone '%s' is not an E.164 number (+ and 2..15 digits)", v);
            snprintf(c.phones[c.n_phones++], CERT_PHONE_LEN, "%s", v);
        } else {
            return telctl_usage("cert", "unknown argument '%s'", argv[i]);
        }
    }
    if (!ns || !pubkey || c.n_phones == 0)
        return telctl_usage("cert", "issue needs --namespace, --pubkey and at least one --phone");
    if (!cert_namespace_valid(ns))
        return telctl_usage("cert", "--namespace '%s' is not a namespace (lower-case labels of a-z, 0-9, -, "
                                    "at least two, e.g. alice.x)", ns);
    snprintf(c.namespace_, sizeof c.namespace_, "%s", ns);
    if (keyfile_parse_public(pubkey, c.holder_pk, err) != 0)
        return telctl_usage("cert", "--pubkey: %s", err);
    int64_t days = DAYS_DEFAULT;
    if (days_s && tg_parse_i64(days_s, 1, DAYS_MAX, &days) != 0)
        return telctl_usage("cert", "--days must be a whole number from 1 to %d", DAYS_MAX);
    if (telctl_data_dir_check(cfg, "cert") != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;

    uint8_t isk[CERT_SK_BYTES], ipk[CERT_PK_BYTES], rnd[8];
    char *skp = keys_path(cfg, "issuer.key");
    int rc = keyfile_read_secret(skp, isk, ipk, err);
    free(skp);
    if (rc != 0)
        return telctl_fail("cert", "issuer key: %s (run 'telctl issuer init' first)", err);
    randombytes_buf(rnd, sizeof rnd);
    tg_hex(rnd, sizeof rnd, c.serial);
    c.not_before = tg_now_ms() / 1000;
    c.not_after = c.not_before + (uint64_t)days * 86400u;
    cert_key_id(ipk, c.issuer_id);

    struct cert_blob b;
    rc = cert_issue(&c, isk, &b, err);
    sodium_memzero(isk, sizeof isk);
    if (rc != 0)
        return telctl_usage("cert", "%s", err);

    /* --out is opened before the issuance is recorded: a path that cannot
     * be written fails with nothing issued, rather than after (a retry
     * would issue a second certificate). */
    struct out_file of = {.fd = -1};
    if (out && out_file_open(&of, out, err) != 0)
        return telctl_fail("cert", "not issued: %s", err);
    struct tg_event ev;
    char id[EVENT_ID_LEN];
    cert_issued_event(cfg, &c, &b, ipk, &ev, id);
    rc = event_record(cfg, &ev, err);
    free(ev.data);
    if (rc != 0) {
        out_file_abandon(&of);
        return telctl_fail("cert", "not issued: %s", err);
    }

    json_t *o = cert_json(&c, &b, ipk, NULL);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    printf("%s\n", text);
    rc = out ? out_file_write(&of, text, err) : 0;
    free(text);
    if (rc != 0)
        return telctl_fail("cert", "issued serial %s but %s", c.serial, err);
    return TELCTL_EXIT_OK;
}

/* ---- cert revoke ---- */

static int cert_revoke_cmd(const struct tg_config *cfg, int argc, char **argv)
{
    char err[ERR_LEN];
    if (argc != 3)
        return telctl_usage("cert", "revoke expects exactly one SERIAL");
    const char *serial = argv[2];
    if (strlen(serial) != CERT_SERIAL_LEN - 1)
        return telctl_usage("cert", "'%s' is not a serial (16 hex digits)", serial);
    if (telctl_data_dir_check(cfg, "cert") != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;

    struct spinedb *db;
    MDB_txn *txn;
    struct registry_entry e;
    int found = 1;
    if (spinedb_read_begin(cfg->data_dir, &db, &txn, err) != 0)
        return telctl_fail("cert", "%s", err);
    if (txn)
        found = registry_get(db, txn, serial, &e, err);
    spinedb_read_end(&db, txn);
    if (found < 0)
        return telctl_fail("cert", "%s", err);
    if (found == 1)
        return telctl_fail("cert", "no certificate with serial %s", serial);
    if (e.revoked) {
        printf("serial %s was already revoked\n", serial);
        return TELCTL_EXIT_OK;
    }

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_kv_str(&pk, "serial", serial);
    mp_pack_kv_str(&pk, "namespace", e.cert.namespace_);
    mp_pack_kv_u64(&pk, "revoked_at", tg_now_ms() / 1000);
    char id[EVENT_ID_LEN];
    event_id(serial, "revoked", id);
    struct tg_event ev = {.type = REGISTRY_EV_REVOKED, .actor = cfg->namespace_, .id = id,
                          .data = (uint8_t *)sb.data, .data_len = sb.size};
    int rc = event_record(cfg, &ev, err);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0)
        return telctl_fail("cert", "not revoked: %s", err);
    printf("revoked %s (%s)\n", serial, e.cert.namespace_);
    return TELCTL_EXIT_OK;
}

/* ---- cert list ---- */

struct list_ctx {
    bool json;
    uint64_t now;
    size_t n;
};

static const char *cert_state(const struct registry_entry *e, uint64_t now)
{
    if (e->revoked)
        return "revoked";
    if (now > e->cert.not_after)
        return "expired";
    if (now < e->cert.not_before)
        return "not_yet_valid";
    return "valid";
}

static int list_one(void *arg, const struct registry_entry *e)
{
    struct list_ctx *l = arg;
    const char *state = cert_state(e, l->now);
    l->n++;
    if (l->json) {
        json_t *o = cert_json(&e->cert, &e->blob, NULL, state);
        char *text = json_dumps(o, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(o);
        return 0;
    }
    char na[TG_RFC3339_LEN];
    rfc3339_s(e->cert.not_after, na);
    printf("%s  %-14s %-24s until %.10s ", e->cert.serial, state, e->cert.namespace_, na);
    for (size_t i = 0; i < e->cert.n_phones; i++)
        printf("%s%s", i ? "," : "", e->cert.phones[i]);
    printf("\n");
    return 0;
}

static int cert_list_cmd(const struct tg_config *cfg, int argc, char **argv)
{
    struct list_ctx l = {.now = tg_now_ms() / 1000};
    char err[ERR_LEN];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            l.json = true;
        else
            return telctl_usage("cert", "unknown argument '%s'", argv[i]);
    }
    if (telctl_data_dir_check(cfg, "cert") != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;
    struct spinedb *db;
    MDB_txn *txn;
    if (spinedb_read_begin(cfg->data_dir, &db, &txn, err) != 0)
        return telctl_fail("cert", "%s", err);
    int rc = txn ? registry_foreach(db, txn, list_one, &l, err) : 0;
    spinedb_read_end(&db, txn);
    fflush(stdout);
    return rc != 0 ? telctl_fail("cert", "%s", err) : TELCTL_EXIT_OK;
}

int telctl_cert(const struct tg_config *cfg, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "issue") == 0)
        return cert_issue_cmd(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "revoke") == 0)
        return cert_revoke_cmd(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return cert_list_cmd(cfg, argc, argv);
    return telctl_usage("cert", "expects issue, revoke or list");
}

/* ---- token ---- */

static int cert_file_read(const char *path, struct cert *c, struct cert_blob *b, char *err)
{
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o)
        return tg_err(err, "%s: %s", path, je.text);
    const char *text = json_string_value(json_object_get(o, "cert"));
    uint8_t raw[CERT_MAX_BYTES];
    size_t len;
    int rc = -1;
    if (!text)
        tg_err(err, "%s: no \"cert\" field (expected the output of telctl cert issue)", path);
    else if (tg_b64_decode(text, strlen(text), raw, sizeof raw, &len) != 0)
        tg_err(err, "%s: \"cert\" is not base64", path);
    else
        rc = cert_decode(raw, len, c, b, err);
    json_decref(o);
    return rc;
}

int telctl_token(const struct tg_config *cfg, int argc, char **argv)
{
    TG_UNUSED(cfg);
    const char *key = NULL, *certf = NULL, *from = NULL, *to = NULL;
    char err[ERR_LEN];
    for (int i = 1; i < argc; i++) {
        int r;
        if ((r = telctl_opt(argc, argv, &i, "--key", &key)) || (r = telctl_opt(argc, argv, &i, "--cert", &certf)) ||
            (r = telctl_opt(argc, argv, &i, "--from", &from)) || (r = telctl_opt(argc, argv, &i, "--to", &to))) {
            if (r < 0)
                return telctl_usage("token", "%s needs a value", argv[i]);
        } else {
            return telctl_usage("token", "unknown argument '%s'", argv[i]);
        }
    }
    if (!key || !certf || !from || !to)
        return telctl_usage("token", "needs --key, --cert, --from and --to");
    if (!cert_e164_valid(from) || !cert_e164_valid(to))
        return telctl_usage("token", "--from and --to must be E.164 numbers");
    struct cert c;
    struct cert_blob b;
    /* A --cert or --key file that cannot be read or is not what it should
     * be fails the operation (1), like any input file. */
    if (cert_file_read(certf, &c, &b, err) != 0)
        return telctl_fail("token", "%s", err);
    uint8_t sk[CERT_SK_BYTES], pk[CERT_PK_BYTES];
    if (keyfile_read_secret(key, sk, pk, err) != 0)
        return telctl_fail("token", "%s", err);
    if (sodium_memcmp(pk, c.holder_pk, CERT_PK_BYTES) != 0) {
        sodium_memzero(sk, sizeof sk);
        return telctl_fail("token", "%s is not the key this certificate was issued to", key);
    }
    char tok[TOKEN_MAX_LEN + 1];
    int rc = token_make(&b, sk, from, to, tg_now_ms() / 1000, tok, err);
    sodium_memzero(sk, sizeof sk);
    if (rc != 0)
        return telctl_fail("token", "%s", err);
    printf("%s\n", tok);
    return TELCTL_EXIT_OK;
}
