/*
 * registry.c - the certificate registry in the spine database (see
 * registry.h).  Written only by the spine, inside the transaction that
 * appends the ns.* event, so the registry and the log never disagree;
 * `telctl verify` rebuilds it from the log and compares (registry_replay_*).
 */
#include "registry.h"
#include "mp.h"

#include <inttypes.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* What an ns.* event asks of the registry: the one reading of its data that
 * the spine's check, the spine's update and the verification share. */
struct change {
    struct cert cert;                /* ns.cert_issued: the certificate */
    struct cert_blob blob;
    char serial[CERT_SERIAL_LEN];    /* the serial concerned */
    bool has_revoked_at;             /* ns.cert_revoked: data.revoked_at is a uint */
    uint64_t revoked_at;
};

/* Whether type is ns.cert_issued (*issued) or ns.cert_revoked. */
static bool change_type(const char *type, bool *issued)
{
    *issued = strcmp(type, REGISTRY_EV_ISSUED) == 0;
    return *issued || strcmp(type, REGISTRY_EV_REVOKED) == 0;
}

/* Decode data.cert (base64 of the signed blob). */
static int issued_cert(const msgpack_object *data, struct cert *c, struct cert_blob *b, char *err)
{
    char *text = NULL;
    uint8_t raw[CERT_MAX_BYTES];
    size_t len;
    if (mp_get_str(data, "cert", false, &text, err) != 0)
        return -1;
    int rc = tg_b64_decode(text, strlen(text), raw, sizeof raw, &len);
    free(text);
    if (rc != 0)
        return tg_err(err, "ns.cert_issued: data.cert is not base64 of a certificate");
    return cert_decode(raw, len, c, b, err);
}

/* Read the data map of an ns.* event into *ch.  0, or -1 with err when the
 * spine refuses the event. */
static int change_parse(bool issued, const msgpack_object *data, struct change *ch, char *err)
{
    memset(ch, 0, sizeof *ch);
    if (data->type != MSGPACK_OBJECT_MAP)
        return tg_err(err, "%s: data is not a map", issued ? REGISTRY_EV_ISSUED : REGISTRY_EV_REVOKED);
    if (issued) {
        if (issued_cert(data, &ch->cert, &ch->blob, err) != 0)
            return -1;
        memcpy(ch->serial, ch->cert.serial, sizeof ch->serial);
        return 0;
    }
    char *serial = NULL;
    if (mp_get_str(data, "serial", false, &serial, err) != 0)
        return -1;
    int rc = 0;
    if (strlen(serial) == CERT_SERIAL_LEN - 1)
        memcpy(ch->serial, serial, CERT_SERIAL_LEN);
    else
        rc = tg_err(err, "ns.cert_revoked: bad serial");
    free(serial);
    const msgpack_object *at = mp_map_get(data, "revoked_at");
    ch->has_revoked_at = at && at->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
    ch->revoked_at = ch->has_revoked_at ? at->via.u64 : 0;
    return rc;
}

/* The same for an event on its way to the spine (data: msgpack bytes). */
static int change_from_event(const struct tg_event *e, bool issued, struct change *ch, char *err)
{
    msgpack_unpacked up;
    if (!e->data || !e->data_len)
        return tg_err(err, "%s: event has no data", e->type);
    if (mp_unpack_exact(e->data, e->data_len, &up, err) != 0)
        return -1;
    int rc = change_parse(issued, &up.data, ch, err);
    msgpack_unpacked_destroy(&up);
    return rc;
}

int registry_event_check(const struct tg_event *e, char *err)
{
    bool issued;
    struct change ch;
    if (!change_type(e->type, &issued))
        return 0;
    return change_from_event(e, issued, &ch, err);
}

static void record_pack(msgpack_sbuffer *sb, const struct cert_blob *b, bool revoked, uint64_t revoked_at)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    mp_pack_cstr(&pk, "cert");
    msgpack_pack_bin(&pk, b->len);
    msgpack_pack_bin_body(&pk, b->bytes, b->len);
    mp_pack_kv_bool(&pk, "revoked", revoked);
    mp_pack_kv_u64(&pk, "revoked_at", revoked_at);
}

static int record_unpack(const MDB_val *v, struct registry_entry *out, char *err)
{
    msgpack_unpacked up;
    const char *blob;
    size_t len;
    if (mp_unpack_exact(v->mv_data, v->mv_size, &up, err) != 0)
        return -1;
    int rc = -1;
    if (mp_get_bytes(&up.data, "cert", &blob, &len, err) == 0 &&
        mp_get_bool(&up.data, "revoked", &out->revoked, err) == 0 &&
        mp_get_u64(&up.data, "revoked_at", &out->revoked_at, err) == 0)
        rc = cert_decode((const uint8_t *)blob, len, &out->cert, &out->blob, err);
    msgpack_unpacked_destroy(&up);
    return rc;
}

static int record_put(const struct spinedb *db, MDB_txn *txn, const char *serial,
                      const struct cert_blob *b, bool revoked, uint64_t revoked_at, char *err)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    record_pack(&sb, b, revoked, revoked_at);
    MDB_val k = {strlen(serial), (void *)serial}, v = {sb.size, sb.data};
    int rc = mdb_put(txn, db->certs, &k, &v, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc ? spinedb_err(err, "registry: store certificate", rc) : 0;
}

/* A new serial: its record, not revoked, and its phone numbers. */
static int record_issue(const struct spinedb *db, MDB_txn *txn, const struct change *ch, char *err)
{
    if (record_put(db, txn, ch->serial, &ch->blob, false, 0, err) != 0)
        return -1;
    for (size_t i = 0; i < ch->cert.n_phones; i++) {
        MDB_val k = {strlen(ch->cert.phones[i]), (void *)ch->cert.phones[i]};
        MDB_val v = {strlen(ch->serial), (void *)ch->serial};
        int rc = mdb_put(txn, db->phones, &k, &v, MDB_NODUPDATA);
        if (rc && rc != MDB_KEYEXIST)
            return spinedb_err(err, "registry: index phone", rc);
    }
    return 0;
}

/*
 * What each event does (registry_replay_event below must do the same):
 *   ns.cert_issued   new serial: record (not revoked, revoked_at 0) and
 *                    phones; a serial already there: nothing, the first
 *                    certificate under a serial stays.
 *   ns.cert_revoked  not yet revoked: revoked, revoked_at = data.revoked_at
 *                    (the spine's clock when absent); already revoked:
 *                    nothing, the first revocation stands; unknown serial:
 *                    refused (the whole message is dropped).
 */
int registry_apply_event(const struct spinedb *db, MDB_txn *txn, const struct tg_event *e, char *err)
{
    bool issued;
    struct change ch;
    struct registry_entry cur;
    if (!change_type(e->type, &issued))
        return 0;
    if (change_from_event(e, issued, &ch, err) != 0)
        return -1;
    int found = registry_get(db, txn, ch.serial, &cur, err);
    if (found < 0)
        return -1;
    if (issued)
        return found == 0 ? 0 : record_issue(db, txn, &ch, err);
    if (found == 1)
        return tg_err(err, "ns.cert_revoked: unknown serial %s", ch.serial);
    if (cur.revoked)
        return 0;
    uint64_t at = ch.has_revoked_at ? ch.revoked_at : (uint64_t)(tg_now_ms() / 1000);
    return record_put(db, txn, ch.serial, &cur.blob, true, at, err);
}

int registry_get(const struct spinedb *db, MDB_txn *txn, const char *serial,
                 struct registry_entry *out, char *err)
{
    MDB_val k = {strlen(serial), (void *)serial}, v;
    if (!db->env)
        return 1;
    int rc = mdb_get(txn, db->certs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc)
        return spinedb_err(err, "registry: read certificate", rc);
    return record_unpack(&v, out, err);
}

int registry_by_phone(const struct spinedb *db, MDB_txn *txn, const char *phone,
                      registry_fn fn, void *arg, char *err)
{
    MDB_cursor *cur;
    MDB_val k = {strlen(phone), (void *)phone}, v;
    if (!db->env)
        return 0;
    int rc = mdb_cursor_open(txn, db->phones, &cur);
    if (rc)
        return spinedb_err(err, "registry: cursor", rc);
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        char serial[CERT_SERIAL_LEN];
        struct registry_entry e;
        if (v.mv_size != CERT_SERIAL_LEN - 1)
            continue;
        memcpy(serial, v.mv_data, v.mv_size);
        serial[v.mv_size] = '\0';
        int g = registry_get(db, txn, serial, &e, err);
        if (g < 0) {
            ret = -1;
            break;
        }
        if (g == 1)
            continue;
        int f = fn(arg, &e);
        if (f != 0) {
            ret = f < 0 ? -1 : 0;
            break;
        }
    }
    if (ret == 0 && rc && rc != MDB_NOTFOUND)
        ret = spinedb_err(err, "registry: read phone index", rc);
    mdb_cursor_close(cur);
    return ret;
}

int registry_foreach(const struct spinedb *db, MDB_txn *txn, registry_fn fn, void *arg, char *err)
{
    MDB_cursor *cur;
    MDB_val k, v;
    if (!db->env)
        return 0;
    int rc = mdb_cursor_open(txn, db->certs, &cur);
    if (rc)
        return spinedb_err(err, "registry: cursor", rc);
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct registry_entry e;
        if (record_unpack(&v, &e, err) != 0) {
            ret = -1;
            break;
        }
        int f = fn(arg, &e);
        if (f != 0) {
            ret = f < 0 ? -1 : 0;
            break;
        }
    }
    if (ret == 0 && rc && rc != MDB_NOTFOUND)
        ret = spinedb_err(err, "registry: read certificates", rc);
    mdb_cursor_close(cur);
    return ret;
}

/* ---- verification: the registry rebuilt from the log ---- */

/* A revoked_at the spine took from its clock (ns.cert_revoked without
 * data.revoked_at) is read while the event commits: within this many
 * seconds of the event's time. */
#define CLOCK_SLACK_S 60

/* One certificate as the events say the spine wrote it. */
struct replay_cert {
    char serial[CERT_SERIAL_LEN];    /* "": a free slot */
    uint8_t blob_hash[32];           /* cert_hash of the first blob issued under it */
    uint64_t issued_seq;
    uint64_t revoked_seq;            /* 0: not revoked */
    uint64_t revoked_at;
    bool revoked_at_clock;           /* the spine's clock: revoked_at is the event's time */
    bool seen;                       /* found in certs (registry_replay_compare) */
};

/* A hash table of serials: open addressing, linear probing, at most half full. */
struct registry_replay {
    struct replay_cert *slots;
    size_t cap, n;
};

/* Printable ASCII of p[0..n) as it is, other bytes as '?', at most 40 bytes:
 * keys and values from the database or the log, safe to print. */
#define TEXT_MAX 41
static const char *text_of(const void *p, size_t n, char out[TEXT_MAX])
{
    const unsigned char *s = p;
    size_t i;
    for (i = 0; i < n && i < TEXT_MAX - 1; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    out[i] = '\0';
    return out;
}

static size_t serial_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull;          /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

/* The slot holding serial, or the free slot where it would go. */
static struct replay_cert *replay_slot(const struct registry_replay *r, const char *serial)
{
    size_t i = serial_hash(serial) & (r->cap - 1);
    while (r->slots[i].serial[0] && strcmp(r->slots[i].serial, serial) != 0)
        i = (i + 1) & (r->cap - 1);
    return &r->slots[i];
}

static struct replay_cert *replay_find(const struct registry_replay *r, const char *serial)
{
    struct replay_cert *c = replay_slot(r, serial);
    return c->serial[0] ? c : NULL;
}

/* A new entry for serial (not in the table). */
static struct replay_cert *replay_add(struct registry_replay *r, const char *serial)
{
    if (2 * (r->n + 1) > r->cap) {
        struct registry_replay grown = {.slots = xcalloc(2 * r->cap, sizeof *r->slots), .cap = 2 * r->cap};
        for (size_t i = 0; i < r->cap; i++)
            if (r->slots[i].serial[0])
                *replay_slot(&grown, r->slots[i].serial) = r->slots[i];
        free(r->slots);
        r->slots = grown.slots;
        r->cap = grown.cap;
    }
    struct replay_cert *c = replay_slot(r, serial);
    memcpy(c->serial, serial, CERT_SERIAL_LEN);
    r->n++;
    return c;
}

struct registry_replay *registry_replay_new(void)
{
    struct registry_replay *r = xcalloc(1, sizeof *r);
    r->cap = 64;
    r->slots = xcalloc(r->cap, sizeof *r->slots);
    return r;
}

void registry_replay_free(struct registry_replay **r)
{
    if (!r || !*r)
        return;
    free((*r)->slots);
    free(*r);
    *r = NULL;
}

/* An event's "time" (RFC 3339) in Unix seconds.  0, or -1 if unreadable. */
static int event_time_s(const msgpack_object *t, uint64_t *out)
{
    char text[TG_RFC3339_LEN];
    uint64_t us;
    if (!t || t->type != MSGPACK_OBJECT_STR || t->via.str.size >= sizeof text)
        return -1;
    memcpy(text, t->via.str.ptr, t->via.str.size);
    text[t->via.str.size] = '\0';
    if (tg_parse_rfc3339(text, &us) != 0)
        return -1;
    *out = us / 1000000;
    return 0;
}

static int replay_revoke(struct registry_replay *r, uint64_t seq, const struct change *ch,
                         const msgpack_object *time, char *err)
{
    char text[TEXT_MAX];
    struct replay_cert *c = replay_find(r, ch->serial);
    if (!c)
        return tg_err(err, "registry: ns.cert_revoked at seq %" PRIu64 " revokes %s, which no earlier "
                      "ns.cert_issued issued", seq, text_of(ch->serial, strlen(ch->serial), text)), 1;
    if (c->revoked_seq)
        return 0;
    c->revoked_seq = seq;
    c->revoked_at = ch->revoked_at;
    c->revoked_at_clock = !ch->has_revoked_at;
    if (c->revoked_at_clock && event_time_s(time, &c->revoked_at) != 0)
        return tg_err(err, "registry: ns.cert_revoked at seq %" PRIu64 " has neither data.revoked_at "
                      "nor a readable time", seq), 1;
    return 0;
}

int registry_replay_event(struct registry_replay *r, uint64_t seq, const char *type, const uint8_t *canon,
                          size_t len, char *err)
{
    bool issued;
    struct change ch;
    msgpack_unpacked up;
    char why[ERR_LEN];
    if (!change_type(type, &issued))
        return 0;
    if (mp_unpack_exact(canon, len, &up, why) != 0)
        return tg_err(err, "registry: %s at seq %" PRIu64 ": %s", type, seq, why), 1;
    const msgpack_object *data = mp_map_get(&up.data, "data");
    int rc = 0;
    if (!data || change_parse(issued, data, &ch, why) != 0) {
        tg_err(err, "registry: %s at seq %" PRIu64 " is malformed (the spine refuses it): %s", type, seq,
               data ? why : "no data");
        rc = 1;
    } else if (!issued) {
        rc = replay_revoke(r, seq, &ch, mp_map_get(&up.data, "time"), err);
    } else if (!replay_find(r, ch.serial)) {
        struct replay_cert *c = replay_add(r, ch.serial);
        cert_hash(&ch.blob, c->blob_hash);
        c->issued_seq = seq;
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

static bool revoked_at_ok(const struct replay_cert *c, uint64_t stored)
{
    if (!c->revoked_at_clock)
        return stored == c->revoked_at;
    return stored + CLOCK_SLACK_S >= c->revoked_at && stored <= c->revoked_at + CLOCK_SLACK_S;
}

/* The stored record of c (v) decodes into *e, holds the certificate issued
 * under c's serial, says what the revocations say, and is encoded as the
 * spine encodes it.  0, or 1 with *seq and err. */
static int record_check(const struct replay_cert *c, const MDB_val *v, struct registry_entry *e,
                        uint64_t *seq, char *err)
{
    uint8_t h[32];
    char why[ERR_LEN];
    bool revoked = c->revoked_seq != 0;
    *seq = revoked ? c->revoked_seq : c->issued_seq;
    if (record_unpack(v, e, why) != 0)
        return tg_err(err, "registry: certificate %s: the record does not decode: %s", c->serial, why), 1;
    cert_hash(&e->blob, h);
    if (memcmp(h, c->blob_hash, sizeof h) != 0) {
        *seq = c->issued_seq;
        return tg_err(err, "registry: certificate %s holds other certificate bytes than ns.cert_issued "
                      "at seq %" PRIu64 " issued", c->serial, c->issued_seq), 1;
    }
    if (e->revoked && !revoked)
        return tg_err(err, "registry: certificate %s says revoked=true, but no ns.cert_revoked revoked it "
                      "(issued at seq %" PRIu64 ")", c->serial, c->issued_seq), 1;
    if (!e->revoked && revoked)
        return tg_err(err, "registry: certificate %s says revoked=false, but ns.cert_revoked at seq %" PRIu64
                      " revoked it", c->serial, c->revoked_seq), 1;
    if (!revoked && e->revoked_at != 0)
        return tg_err(err, "registry: certificate %s says revoked_at=%" PRIu64 ", but it is not revoked "
                      "(issued at seq %" PRIu64 ")", c->serial, e->revoked_at, c->issued_seq), 1;
    if (revoked && !revoked_at_ok(c, e->revoked_at))
        return tg_err(err, "registry: certificate %s says revoked_at=%" PRIu64 ", but ns.cert_revoked at "
                      "seq %" PRIu64 " %s %" PRIu64, c->serial, e->revoked_at, c->revoked_seq,
                      c->revoked_at_clock ? "was committed at" : "says", c->revoked_at), 1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    record_pack(&sb, &e->blob, e->revoked, e->revoked_at);
    bool same = sb.size == v->mv_size && memcmp(sb.data, v->mv_data, sb.size) == 0;
    msgpack_sbuffer_destroy(&sb);
    if (!same)
        return tg_err(err, "registry: certificate %s: the record is not encoded as the spine writes it",
                      c->serial), 1;
    return 0;
}

/* Every phone number of certificate e (c's) is bound to it in phones.
 * 0, 1 with *seq and err, -1 with err. */
static int bindings_check(MDB_cursor *pc, const struct replay_cert *c, const struct registry_entry *e,
                          uint64_t *seq, char *err)
{
    for (size_t i = 0; i < e->cert.n_phones; i++) {
        MDB_val k = {strlen(e->cert.phones[i]), (void *)e->cert.phones[i]};
        MDB_val v = {strlen(c->serial), (void *)c->serial};
        int rc = mdb_cursor_get(pc, &k, &v, MDB_GET_BOTH);
        if (rc == MDB_NOTFOUND) {
            *seq = c->issued_seq;
            return tg_err(err, "registry: phone %s is not bound to certificate %s, but ns.cert_issued at "
                          "seq %" PRIu64 " binds it", e->cert.phones[i], c->serial, c->issued_seq), 1;
        }
        if (rc)
            return spinedb_err(err, "registry: read phone index", rc);
    }
    return 0;
}

/* certs against the replay: each entry one the events issued, as they say
 * (bindings_check for its phones). */
static int certs_check(struct registry_replay *r, const struct spinedb *db, MDB_txn *txn, uint64_t *seq,
                       char *err)
{
    MDB_cursor *cur, *pc;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, db->certs, &cur);
    if (rc)
        return spinedb_err(err, "registry: cursor", rc);
    if ((rc = mdb_cursor_open(txn, db->phones, &pc)) != 0) {
        mdb_cursor_close(cur);
        return spinedb_err(err, "registry: cursor", rc);
    }
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char serial[CERT_SERIAL_LEN], text[TEXT_MAX];
        struct replay_cert *c = NULL;
        struct registry_entry e;
        if (k.mv_size == CERT_SERIAL_LEN - 1) {
            memcpy(serial, k.mv_data, k.mv_size);
            serial[k.mv_size] = '\0';
            c = replay_find(r, serial);
        }
        if (!c) {
            *seq = 0;
            tg_err(err, "registry: certificate %s is in certs, but no ns.cert_issued issued it",
                   text_of(k.mv_data, k.mv_size, text));
            ret = 1;
            break;
        }
        c->seen = true;
        ret = record_check(c, &v, &e, seq, err);
        if (ret == 0)
            ret = bindings_check(pc, c, &e, seq, err);
        if (ret != 0)
            break;
    }
    if (ret == 0 && rc != MDB_NOTFOUND)
        ret = spinedb_err(err, "registry: read certificates", rc);
    mdb_cursor_close(pc);
    mdb_cursor_close(cur);
    return ret;
}

/* Certificates the events issued that certs lacks: the earliest one. */
static int certs_missing(const struct registry_replay *r, uint64_t *seq, char *err)
{
    const struct replay_cert *first = NULL;
    for (size_t i = 0; i < r->cap; i++) {
        const struct replay_cert *c = &r->slots[i];
        if (c->serial[0] && !c->seen && (!first || c->issued_seq < first->issued_seq))
            first = c;
    }
    if (!first)
        return 0;
    *seq = first->issued_seq;
    return tg_err(err, "registry: certificate %s is missing from certs, but ns.cert_issued at seq %" PRIu64
                  " issued it", first->serial, first->issued_seq), 1;
}

/* phones against the replay: each binding one an issued certificate names. */
static int phones_check(const struct registry_replay *r, const struct spinedb *db, MDB_txn *txn,
                        uint64_t *seq, char *err)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, db->phones, &cur);
    if (rc)
        return spinedb_err(err, "registry: cursor", rc);
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char serial[CERT_SERIAL_LEN], phone[TEXT_MAX], text[TEXT_MAX];
        const struct replay_cert *c = NULL;
        struct registry_entry e;
        bool named = false;
        if (v.mv_size == CERT_SERIAL_LEN - 1) {
            memcpy(serial, v.mv_data, v.mv_size);
            serial[v.mv_size] = '\0';
            c = replay_find(r, serial);
        }
        if (c) {                    /* certs_check found its record good */
            int g = registry_get(db, txn, c->serial, &e, err);
            if (g < 0) {
                ret = -1;
                break;
            }
            for (size_t i = 0; g == 0 && i < e.cert.n_phones && !named; i++)
                named = strlen(e.cert.phones[i]) == k.mv_size &&
                        memcmp(e.cert.phones[i], k.mv_data, k.mv_size) == 0;
        }
        if (named)
            continue;
        text_of(k.mv_data, k.mv_size, phone);
        text_of(v.mv_data, v.mv_size, text);
        if (c) {
            *seq = c->issued_seq;
            tg_err(err, "registry: phone %s is bound to certificate %s, but ns.cert_issued at seq %" PRIu64
                   " does not bind it", phone, text, c->issued_seq);
        } else {
            *seq = 0;
            tg_err(err, "registry: phone %s is bound to certificate %s, which no ns.cert_issued issued", phone,
                   text);
        }
        ret = 1;
        break;
    }
    if (ret == 0 && rc != MDB_NOTFOUND)
        ret = spinedb_err(err, "registry: read phone index", rc);
    mdb_cursor_close(cur);
    return ret;
}

int registry_replay_compare(struct registry_replay *r, const struct spinedb *db, MDB_txn *txn, uint64_t *seq,
                            char *err)
{
    int rc = certs_check(r, db, txn, seq, err);
    if (rc == 0)
        rc = certs_missing(r, seq, err);
    if (rc == 0)
        rc = phones_check(r, db, txn, seq, err);
    if (rc != 1)
        *seq = 0;               /* the checks above set it as they go */
    return rc;
}
