/*
 * ingress_http.c - CivetWeb request handlers of the ingress (see
 * ingress_http.h).  Every error answer is JSON {"error","detail"}; a webhook
 * is answered 200 only once it is durable in the journal.
 */
#include "ingress_http.h"
#include "jscan.h"
#include "log.h"
#include "msg.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>
#include <jansson.h>

#define PATH_WEBHOOK "/webhooks/telnyx"
#define PATH_HEALTH "/health"
#define PATH_METRICS "/metrics"
#define HTTP_LISTEN_BACKLOG "1024"
#define HTTP_CONNECTION_QUEUE "1024"
#define HTTP_LINGER_MS "500"

struct ingress_http {
    struct mg_context *ctx;
    struct ingress_sig_key key;
    bool verify;
    int64_t max_body_bytes;
    int64_t tolerance_s;
    struct ingress_journal *_Atomic journal;   /* NULL until attached */
    struct ingress_metrics *metrics;
    int threads;                    /* CivetWeb workers (http_threads) */
    atomic_int connections;         /* connections a worker holds now */
};

/*
 * CivetWeb gives each open connection a worker thread for as long as it stays
 * open; further connections wait in its queue, unseen by any handler.  With
 * more keep-alive connections than workers, those waited until some client
 * closed: seconds, past Telnyx's deadline.  So while every worker holds a
 * connection, each answer closes its connection and the worker takes the
 * next one in the queue: no connection waits longer than the requests ahead
 * of it.
 */
static int on_init_connection(const struct mg_connection *c, void **conn_data)
{
    struct ingress_http *h = mg_get_user_data(mg_get_context(c));
    *conn_data = NULL;
    atomic_fetch_add(&h->connections, 1);
    return 0;
}

static void on_connection_closed(const struct mg_connection *c)
{
    struct ingress_http *h = mg_get_user_data(mg_get_context(c));
    atomic_fetch_sub(&h->connections, 1);
}

static bool all_workers_busy(const struct mg_connection *c)
{
    const struct ingress_http *h = mg_get_user_data(mg_get_context(c));
    return atomic_load(&h->connections) >= h->threads;
}

/* ---- answers ---- */

/*
 * Send a whole answer with one write: with tcp_nodelay every write leaves as
 * its own packet, and status line, headers and body written separately cost
 * three packets and wake-ups per request instead of one.
 */
static void send_answer(struct mg_connection *c, int status, const char *ctype, const char *body,
                        size_t len, const char *allow, bool close)
{
    char small[1024];

    /* CivetWeb closes after a 401 anyway: say so. */
    close = close || status == 401 || all_workers_busy(c);
    if (close)
        mg_disable_connection_keep_alive(c);
    char *text = small;
    int hl = snprintf(small, sizeof small,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\n%s%s%s%s\r\n",
                      status, mg_get_response_code_text(c, status), ctype, len,
                      allow ? "Allow: " : "", allow ? allow : "", allow ? "\r\n" : "",
                      close ? "Connection: close\r\n" : "");
    if (hl < 0 || (size_t)hl >= sizeof small)     /* our fixed headers always fit */
        log_panic("answer header of %d bytes", hl);
    if ((size_t)hl + len > sizeof small) {
        text = xmalloc((size_t)hl + len);
        memcpy(text, small, (size_t)hl);
    }
    if (len > 0)
        memcpy(text + hl, body, len);
    mg_write(c, text, (size_t)hl + len);
    if (text != small)
        free(text);
}

/* Send a jansson object (reference stolen) as the JSON answer. */
static void send_json(struct mg_connection *c, int status, json_t *obj, const char *allow,
                      bool close)
{
    static const char fallback[] = "{\"error\":\"internal\",\"detail\":\"answer could not be encoded\"}";
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) {
        send_answer(c, 500, "application/json", fallback, sizeof fallback - 1, NULL, close);
        return;
    }
    send_answer(c, status, "application/json", text, strlen(text), allow, close);
    free(text);
}

static int send_error(struct mg_connection *c, int status, const char *code, const char *detail,
                      const char *allow, bool close)
{
    json_t *o = json_pack("{s:s,s:s}", "error", code, "detail", detail);
    if (!o)     /* detail was not valid UTF-8 */
        o = json_pack("{s:s,s:s}", "error", code, "detail", "(detail not representable)");
    send_json(c, status, o, allow, close);
    return status;
}

/* ---- POST /webhooks/telnyx ---- */

/* Read the whole body, at most max bytes.  Returns 0 with *body (caller
 * frees) and *len; 1 when over the limit; -1 on a read error or when the
 * body ended (timeout or close) before its Content-Length. */
static int body_read(struct mg_connection *c, int64_t max, char **body, size_t *len)
{
    const struct mg_request_info *ri = mg_get_request_info(c);
    size_t cap = ri->content_length >= 0 ? (size_t)ri->content_length + 1 : 4096;
    size_t n = 0;
    char *buf = xmalloc(cap);

    for (;;) {
        if (n == cap) {
            if (cap > (size_t)max)
                break;
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        int k = mg_read(c, buf + n, cap - n);
        if (k < 0) {
            free(buf);
            return -1;
        }
        if (k == 0)
            break;
        n += (size_t)k;
        if (n > (size_t)max) {
            free(buf);
            return 1;
        }
    }
    if (n > (size_t)max) {
        free(buf);
        return 1;
    }
    if (ri->content_length >= 0 && n < (size_t)ri->content_length) {
        free(buf);
        return -1;
    }
    *body = buf;
    *len = n;
    return 0;
}

/* Is the scanned body a Telnyx envelope?  *id: a copy of data.id the caller
 * frees.  (A one-pass scan: the ingress only checks the shape; the verifier
 * reads the fields.) */
static int envelope_check(const struct jscan *js, char **id, char *err)
{
    if (!jscan_is(js, 0, JSCAN_OBJECT))
        return tg_err(err, "the body is not a JSON object");
    int data = jscan_get(js, 0, "data");
    if (!jscan_is(js, data, JSCAN_OBJECT))
        return tg_err(err, "the body has no \"data\" object");
    char *v = jscan_strdup(js, jscan_get(js, data, "id"));
    if (!v || !*v) {
        free(v);
        return tg_err(err, "\"data.id\" is missing or not a non-empty string");
    }
    if (strlen(v) > MSG_WEBHOOK_ID_MAX) {
        free(v);
        return tg_err(err, "\"data.id\" is longer than %d bytes", MSG_WEBHOOK_ID_MAX);
    }
    if (!jscan_is(js, jscan_get(js, data, "event_type"), JSCAN_STRING)) {
        free(v);
        return tg_err(err, "\"data.event_type\" is missing or not a string");
    }
    if (!jscan_is(js, jscan_get(js, data, "payload"), JSCAN_OBJECT)) {
        free(v);
        return tg_err(err, "\"data.payload\" is missing or not an object");
    }
    *id = v;
    return 0;
}

static int handle_webhook(struct ingress_http *h, struct mg_connection *c, uint64_t recv_us)
{
    const struct mg_request_info *ri = mg_get_request_info(c);
    char err[ERR_LEN];
    char *body = NULL, *id = NULL;
    size_t len = 0;

    if (strcmp(ri->request_method, "POST") != 0)
        return send_error(c, 405, "method_not_allowed", "use POST for " PATH_WEBHOOK, "POST", false);
    if (ri->content_length > h->max_body_bytes) {
        snprintf(err, sizeof err, "the body of %lld bytes exceeds max_body_bytes (%" PRId64 ")",
                 ri->content_length, h->max_body_bytes);
        return send_error(c, 413, "payload_too_large", err, NULL, true);
    }
    int rr = body_read(c, h->max_body_bytes, &body, &len);
    if (rr == 1) {
        snprintf(err, sizeof err, "the body exceeds max_body_bytes (%" PRId64 ")", h->max_body_bytes);
        return send_error(c, 413, "payload_too_large", err, NULL, true);
    }
    if (rr < 0)
        return send_error(c, 400, "incomplete_body", "the request body ended before it was complete",
                          NULL, true);

    const char *sig = mg_get_header(c, "telnyx-signature-ed25519");
    const char *ts = mg_get_header(c, "telnyx-timestamp");
    int status;
    if (h->verify) {
        enum ingress_sig_fail why;
        if (ingress_sig_verify(&h->key, sig, ts, body, len, (int64_t)(tg_now_ms() / 1000),
                               h->tolerance_s, &why, err) != 0) {
            log_debug("webhook from %s rejected: %s", ri->remote_addr, err);
            status = send_error(c, 401, ingress_sig_fail_code(why), err, NULL, false);
            goto out;
        }
    }

    struct jscan js = {0};
    if (jscan_parse(&js, body, len, err) != 0) {
        jscan_free(&js);
        char why[ERR_LEN];
        snprintf(why, sizeof why, "the body is not valid %.200s", err);
        status = send_error(c, 400, "invalid_json", why, NULL, false);
        goto out;
    }
    int ec = envelope_check(&js, &id, err);
    jscan_free(&js);
    if (ec != 0) {
        status = send_error(c, 400, "not_an_envelope", err, NULL, false);
        goto out;
    }

    struct ingress_journal *journal = atomic_load(&h->journal);
    if (!journal) {
        status = send_error(c, 503, "starting", "the ingress is starting; retry", NULL, false);
        goto out;
    }
    struct journal_record rec = {
        .recv_us = recv_us, .ts = (char *)ts, .sig = (char *)sig,
        .body = (uint8_t *)body, .body_len = len,
    };
    uint64_t jseq = 0;
    if (ingress_journal_append(journal, &rec, &jseq, err) != 0) {
        status = send_error(c, 503, "journal_unavailable", err, NULL, false);
        goto out;
    }
    json_t *ok = json_pack("{s:s,s:s,s:I}", "status", "accepted", "id", id, "jseq", (json_int_t)jseq);
    send_json(c, 200, ok, NULL, false);
    status = 200;
out:
    free(id);
    free(body);
    return status;
}

/* ---- GET /health, GET /metrics ---- */

static int handle_health(struct ingress_http *h, struct mg_connection *c)
{
    const char *method = mg_get_request_info(c)->request_method;
    char reason[ERR_LEN];
    const char *sigs = h->verify ? "verified" : "UNVERIFIED (allow_unsigned_webhooks)";

    if (strcmp(method, "GET") != 0)
        return send_error(c, 405, "method_not_allowed", "use GET for " PATH_HEALTH, "GET", false);
    struct ingress_journal *journal = atomic_load(&h->journal);
    if (!journal)
        snprintf(reason, sizeof reason, "starting: journal recovery in progress");
    if (!journal || ingress_journal_health(journal, reason) != 0) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "status", "unavailable", "reason", reason,
                              "error", "unavailable", "detail", reason, "signatures", sigs);
        send_json(c, 503, o, NULL, false);
        return 503;
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "status", "ok", "signatures", sigs, "journal", "ok",
                          "unacknowledged",
                          (json_int_t)atomic_load(&h->metrics->unacked));
    if (!h->verify)
        json_object_set_new(o, "warning",
                            json_string("webhook signatures are NOT verified: "
                                        "allow_unsigned_webhooks = true"));
    send_json(c, 200, o, NULL, false);
    return 200;
}

static int handle_metrics(struct ingress_http *h, struct mg_connection *c)
{
    if (strcmp(mg_get_request_info(c)->request_method, "GET") != 0)
        return send_error(c, 405, "method_not_allowed", "use GET for " PATH_METRICS, "GET", false);
    size_t len;
    char *text = ingress_metrics_render(h->metrics, &len);
    send_answer(c, 200, "text/plain; version=0.0.4", text, len, NULL, false);
    free(text);
    return 200;
}

static int on_request(struct mg_connection *c, void *cbdata)
{
    struct ingress_http *h = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(c);
    const char *uri = ri->local_uri_raw ? ri->local_uri_raw : ri->request_uri;
    uint64_t t0 = tg_mono_ns();
    uint64_t recv_us = tg_now_us();
    enum ingress_path path;
    int status;

    if (!uri)
        uri = "";
    if (strcmp(uri, PATH_WEBHOOK) == 0) {
        path = INGRESS_PATH_WEBHOOK;
        status = handle_webhook(h, c, recv_us);
    } else if (strcmp(uri, PATH_HEALTH) == 0) {
        path = INGRESS_PATH_HEALTH;
        status = handle_health(h, c);
    } else if (strcmp(uri, PATH_METRICS) == 0) {
        path = INGRESS_PATH_METRICS;
        status = handle_metrics(h, c);
    } else {
        path = INGRESS_PATH_OTHER;
        status = send_error(c, 404, "not_found", "no such path", NULL, false);
    }
    uint64_t dt = tg_mono_ns() - t0;
    ingress_metrics_request(h->metrics, path, status, dt);
    log_debug("%s %s from %s -> %d (%.2f ms)", ri->request_method, uri, ri->remote_addr, status,
              (double)dt / 1e6);
    return status;
}

/* Error codes and sentences of the answers CivetWeb gives on its own. */
static const struct {
    int status;
    const char *code, *sentence;
} civetweb_errors[] = {
    {400, "bad_request", "the request could not be parsed as HTTP"},
    {408, "request_timeout", "the request did not arrive in time"},
    {411, "length_required", "the request has no valid Content-Length"},
    {413, "payload_too_large", "the request is too large"},
    {414, "uri_too_long", "the request URI is too long"},
    {417, "expectation_failed", "the Expect header cannot be met"},
    {431, "header_fields_too_large", "the request headers are too large"},
    {501, "not_implemented", "the request needs a feature this server lacks"},
    {505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served"},
};

/*
 * CivetWeb answers requests it cannot parse (bad request line or header,
 * Content-Length not a number, HTTP/2.0, ...) without calling on_request:
 * give those answers the same JSON form as every other error, with
 * CivetWeb's message in the detail, and close the connection, since what
 * follows on it cannot be trusted.  Returns 0: the answer is sent (1 would
 * let CivetWeb send its own, as it does for statuses below 400).
 */
static int on_http_error(struct mg_connection *c, int status, const char *errmsg)
{
    const char *code = status < 500 ? "client_error" : "server_error";
    const char *sentence = "the request could not be served";
    char detail[ERR_LEN];

    if (status < 400)
        return 1;
    for (size_t i = 0; i < ARRAY_LEN(civetweb_errors); i++) {
        if (civetweb_errors[i].status == status) {
            code = civetweb_errors[i].code;
            sentence = civetweb_errors[i].sentence;
            break;
        }
    }
    if (errmsg && *errmsg)
        snprintf(detail, sizeof detail, "%s (%.200s)", sentence, errmsg);
    else
        snprintf(detail, sizeof detail, "%s", sentence);
    log_debug("HTTP error %d from CivetWeb: %s", status, detail);
    send_error(c, status, code, detail, NULL, true);
    return 0;
}

static int on_log_message(const struct mg_connection *c, const char *message)
{
    TG_UNUSED(c);
    log_debug("civetweb: %s", message);
    return 1;
}

int ingress_http_start(const struct ingress_http_opts *opts, struct ingress_http **out, char *err)
{
    struct ingress_http *h = xcalloc(1, sizeof *h);
    char threads[24], timeout[24], ka_timeout[24];
    char etext[ERR_LEN] = "";
    unsigned ecode = 0;

    if (opts->key) {
        h->key = *opts->key;
        h->verify = true;
    }
    h->max_body_bytes = opts->max_body_bytes;
    h->tolerance_s = opts->tolerance_s;
    h->metrics = opts->metrics;
    h->threads = (int)opts->threads;

    snprintf(threads, sizeof threads, "%" PRId64, opts->threads);
    snprintf(timeout, sizeof timeout, "%" PRId64, opts->request_timeout_ms);
    /* Idle keep-alive connections hold a worker thread: keep them short. */
    snprintf(ka_timeout, sizeof ka_timeout, "%" PRId64,
             opts->request_timeout_ms < 2000 ? opts->request_timeout_ms : 2000);
    const char *options[] = {
        "listening_ports", opts->listen,
        "num_threads", threads,
        "request_timeout_ms", timeout,
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", ka_timeout,
        "listen_backlog", HTTP_LISTEN_BACKLOG,
        "connection_queue", HTTP_CONNECTION_QUEUE,
        "linger_timeout_ms", HTTP_LINGER_MS,
        /* An answer leaves as header and body writes; without this, Nagle
         * holds the body until the client's delayed ACK (~40 ms). */
        "tcp_nodelay", "1",
        NULL,
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = on_log_message;
    cb.init_connection = on_init_connection;
    cb.connection_closed = on_connection_closed;
    cb.http_error = on_http_error;
    struct mg_init_data init = {.callbacks = &cb, .user_data = h, .configuration_options = options};
    struct mg_error_data edata = {.code = &ecode, .text = etext, .text_buffer_size = sizeof etext};

    h->ctx = mg_start2(&init, &edata);
    if (!h->ctx) {
        tg_err(err, "cannot serve HTTP on %s: %s", opts->listen, etext[0] ? etext : "mg_start failed");
        free(h);
        return -1;
    }
    mg_set_request_handler(h->ctx, "/", on_request, h);
    *out = h;
    return 0;
}

void ingress_http_attach(struct ingress_http *h, struct ingress_journal *journal)
{
    atomic_store(&h->journal, journal);
}

void ingress_http_stop(struct ingress_http **hp)
{
    if (!hp || !*hp)
        return;
    mg_stop((*hp)->ctx);
    free(*hp);
    *hp = NULL;
}
