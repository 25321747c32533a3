/*
 * ingress_http.h - the ingress's HTTP interface on CivetWeb (SPEC.md section
 * 3): POST /webhooks/telnyx (verify, validate, journal, answer), GET /health,
 * GET /metrics.  Used by the ingress only.
 */
#ifndef INGRESS_HTTP_H
#define INGRESS_HTTP_H

#include <stdint.h>

#include "ingress_journal.h"
#include "ingress_metrics.h"
#include "ingress_sig.h"
#include "util.h"

struct ingress_http_opts {
    const char *listen;                 /* http_listen, e.g. 127.0.0.1:3000 */
    int64_t threads;                    /* http_threads */
    int64_t request_timeout_ms;         /* http_request_timeout_ms */
    int64_t max_body_bytes;             /* larger bodies get 413 */
    int64_t tolerance_s;                /* signature_tolerance_s */
    const struct ingress_sig_key *key;  /* NULL: signatures are NOT checked
                                           (allow_unsigned_webhooks) */
    struct ingress_metrics *metrics;    /* required */
};

struct ingress_http;

/*
 * Bind the address and start the CivetWeb worker threads.  Until
 * ingress_http_attach() is called, webhooks and /health are answered 503
 * ("starting"), so the port can be claimed before the journal is touched.
 * The key is copied; metrics is borrowed and must outlive the server.
 * 0 and *out, or -1 with err (e.g. the address cannot be bound).
 */
int ingress_http_start(const struct ingress_http_opts *opts, struct ingress_http **out,
                       char *err) TG_MUST_CHECK;

/* Start accepting webhooks into journal (borrowed: must outlive the server,
 * i.e. stop the server first).  Call once. */
void ingress_http_attach(struct ingress_http *h, struct ingress_journal *journal);

/* Stop accepting, finish the requests in flight, free and NULL *h. */
void ingress_http_stop(struct ingress_http **h);

#endif
