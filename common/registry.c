/*
 * registry.c - the certificate registry in the spine database (see
 * registry.h).  Written only by the spine, inside the transaction that
 * appends the ns.* event, so the registry and the log never disagree.
 */
#include "registry.h"
#include "mp.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

static int data_unpack(const struct tg_event *e, msgpack_unpacked *up, char *err)
{
    if (!e->data || !e->data_len)
        return tg_err(err, "%s: event has no data", e->type);
    if (mp_unpack_exact(e->data, e->data_len, up, err) != 0)
        return -1;
    if (up->data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(up);
        return tg_err(err, "%s: data is not a map", e->type);
    }
    return 0;
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

int registry_event_check(const struct tg_event *e, char *err)
{
    bool issued = strcmp(e->type, REGISTRY_EV_ISSUED) == 0;
    bool revoked = strcmp(e->type, REGISTRY_EV_REVOKED) == 0;
    if (!issued && !revoked)
        return 0;
    msgpack_unpacked up;
    if (data_unpack(e, &up, err) != 0)
        return -1;
    int rc;
    if (issued) {
        struct cert c;
        struct cert_blob b;
        rc = issued_cert(&up.data, &c, &b, err);
    } else {
        char *serial = NULL;
        rc = mp_get_str(&up.data, "serial", false, &serial, err);
        if (rc == 0 && strlen(serial) != CERT_SERIAL_LEN - 1)
            rc = tg_err(err, "ns.cert_revoked: bad serial");
        free(serial);
    }
    msgpack_unpacked_destroy(&up);
    return rc;
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

int registry_apply_event(const struct spinedb *db, MDB_txn *txn, const struct tg_event *e, char *err)
{
    bool issued = strcmp(e->type, REGISTRY_EV_ISSUED) == 0;
    bool revoked = strcmp(e->type, REGISTRY_EV_REVOKED) == 0;
    if (!issued && !revoked)
        return 0;
    msgpack_unpacked up;
    if (data_unpack(e, &up, err) != 0)
        return -1;
    int rc = -1;
    struct registry_entry cur;
    if (issued) {
        struct cert c;
        struct cert_blob b;
        if (issued_cert(&up.data, &c, &b, err) != 0)
            goto out;
        int found = registry_get(db, txn, c.serial, &cur, err);
        if (found < 0)
            goto out;
        if (found == 0) {            /* the same serial again: nothing to do */
            rc = 0;
            goto out;
        }
        if (record_put(db, txn, c.serial, &b, false, 0, err) != 0)
            goto out;
        for (size_t i = 0; i < c.n_phones; i++) {
            MDB_val k = {strlen(c.phones[i]), c.phones[i]}, v = {strlen(c.serial), c.serial};
            int r = mdb_put(txn, db->phones, &k, &v, MDB_NODUPDATA);
            if (r && r != MDB_KEYEXIST) {
                spinedb_err(err, "registry: index phone", r);
                goto out;
            }
        }
        rc = 0;
    } else {
        char *serial = NULL;
        uint64_t at = 0;
        if (mp_get_str(&up.data, "serial", false, &serial, err) != 0)
            goto out;
        if (mp_get_u64(&up.data, "revoked_at", &at, err) != 0)
            at = (uint64_t)(tg_now_ms() / 1000);
        int found = registry_get(db, txn, serial, &cur, err);
        if (found == 1)
            tg_err(err, "ns.cert_revoked: unknown serial %s", serial);
        else if (found == 0)
            rc = cur.revoked ? 0 : record_put(db, txn, serial, &cur.blob, true, at, err);
        free(serial);
    }
out:
    msgpack_unpacked_destroy(&up);
    return rc;
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
