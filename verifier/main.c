/*
 * verifier/main.c - the verifier process: pulls WEBHOOK messages from the
 * ingress, runs the call flow and pushes one RESULT per webhook to the spine.
 * Stateless; any number can run at once.
 */
#include "log.h"
#include "msg.h"
#include "numbers.h"
#include "stage.h"
#include "verifier_certs.h"
#include "verifier_flow.h"
#include "verifier_webhook.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFIER_HWM 1000
#define VERIFIER_SEND_TIMEOUT_MS 2000

struct verifier {
    struct stage st;
    void *pull, *push;
    struct numbers_watch numbers;
    struct verifier_certs *certs;
    const struct verifier_policy *policy;
    uint64_t handled, failed;
    msgpack_sbuffer wire;       /* reused: a fresh msgpack-c buffer allocates 8 KiB */
};

static void result_send(struct verifier *v, const struct msg_result *res)
{
    msgpack_sbuffer_clear(&v->wire);
    msg_result_encode(&v->wire, res);
    if (stage_send(v->push, v->wire.data, v->wire.size, 0) != 0)
        log_error("RESULT for jseq %llu not sent to the spine: %s (the ingress will re-deliver)",
                  (unsigned long long)res->jseq, zmq_strerror(errno));
}

/*
 * Fault injection for the poison-input tests: with TELGATE_FAULT_CRASH_MARKER
 * set in the environment, a webhook whose body contains that text makes the
 * verifier abort, as a parser bug would.  Unset in production; the start-up
 * log says when it is armed.
 */
static const char *fault_marker;

static void fault_check(const struct msg_webhook *m)
{
    if (fault_marker && memmem(m->body, m->body_len, fault_marker, strlen(fault_marker))) {
        log_error("fault injection: aborting on journal record %llu", (unsigned long long)m->jseq);
        abort();
    }
}

static void webhook_handle(struct verifier *v, const void *buf, size_t len)
{
    char err[ERR_LEN];
    int type;
    struct msg_webhook m;
    struct verifier_webhook wh;
    struct msg_result res;

    if (msg_type_of(buf, len, &type, err) != 0) {
        log_error("dropping malformed message (%zu bytes): %s", len, err);
        return;
    }
    if (type != MSG_WEBHOOK) {
        log_error("dropping message of unexpected type %d", type);
        return;
    }
    if (msg_webhook_decode(buf, len, &m, err) != 0) {
        log_error("dropping malformed WEBHOOK: %s", err);
        return;
    }
    fault_check(&m);
    if (verifier_webhook_parse(m.body, m.body_len, &wh, err) != 0) {
        log_error("journal record %llu: unusable webhook body: %s",
                  (unsigned long long)m.jseq, err);
        memset(&res, 0, sizeof res);
        res.webhook_id = xasprintf("invalid:%llu", (unsigned long long)m.jseq);
        v->failed++;
    } else if (verifier_flow_run(&v->st.cfg, v->numbers.table, v->policy, &wh, tg_now_us(),
                                 &res, err) != 0) {
        log_error("journal record %llu: webhook %s not processed: %s",
                  (unsigned long long)m.jseq, wh.id, err);
        memset(&res, 0, sizeof res);
        res.webhook_id = xstrdup(wh.id);
        res.occurred_us = verifier_webhook_occurred_us(&wh);
        v->failed++;
    } else {
        log_debug("jseq %llu %s %s: %zu events, %zu commands", (unsigned long long)m.jseq,
                  wh.event_type, wh.id, res.n_events, res.n_commands);
    }
    res.jseq = m.jseq;
    result_send(v, &res);
    v->handled++;
    msg_result_free(&res);
    verifier_webhook_free(&wh);
    msg_webhook_free(&m);
}

int main(int argc, char **argv)
{
    struct verifier v;
    char err[ERR_LEN];
    memset(&v, 0, sizeof v);
    stage_init(&v.st, "verifier", argc, argv);
    const struct tg_config *cfg = &v.st.cfg;

    bool explicit_numbers = strcmp(cfg->numbers_file, NUMBERS_DEFAULT_FILE) != 0;
    if (numbers_watch_open(&v.numbers, cfg->numbers_file, explicit_numbers, err) != 0) {
        fprintf(stderr, "verifier: numbers_file: %s\n", err);
        stage_fini(&v.st);
        return 2;
    }
    if (verifier_certs_open(&v.certs, cfg, err) != 0) {
        fprintf(stderr, "verifier: configuration error: %s\n", err);
        numbers_watch_close(&v.numbers);
        stage_fini(&v.st);
        return 2;
    }
    v.policy = verifier_certs_policy(v.certs);

    fault_marker = getenv("TELGATE_FAULT_CRASH_MARKER");
    if (fault_marker && !*fault_marker)
        fault_marker = NULL;
    if (fault_marker)
        log_warn("fault injection armed: aborting on webhooks containing '%s'", fault_marker);

    /* Webhooks come from the ingress, and from `telctl replay` while it runs
     * (it binds replay_endpoint; connecting before it exists is fine). */
    v.pull = stage_socket(&v.st, ZMQ_PULL, cfg->verifier_endpoint, false, VERIFIER_HWM);
    if (zmq_connect(v.pull, cfg->replay_endpoint) != 0)
        log_fatal("connect %s: %s", cfg->replay_endpoint, zmq_strerror(errno));
    v.push = stage_socket(&v.st, ZMQ_PUSH, cfg->spine_endpoint, false, VERIFIER_HWM);
    int tmo = VERIFIER_SEND_TIMEOUT_MS;
    zmq_setsockopt(v.push, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    log_info("started: pulling webhooks from %s, results to %s, %zu trusted issuer(s), "
             "min_attestation %s", cfg->verifier_endpoint, cfg->spine_endpoint,
             verifier_certs_trusted(v.certs), config_attestation_name(cfg->min_attestation));

    zmq_msg_t msg;
    while (!v.st.stopping) {
        zmq_pollitem_t items[1] = {{.socket = v.pull, .events = ZMQ_POLLIN}};
        int rc = stage_poll(&v.st, items, 1, 1000);
        if (rc < 0)
            log_fatal("poll: %s", zmq_strerror(errno));
        numbers_watch_poll(&v.numbers, tg_mono_ms());
        if (stage_status_due(&v.st)) {
            char c[128];
            snprintf(c, sizeof c, "{\"handled\":%llu,\"not_processable\":%llu}",
                     (unsigned long long)v.handled, (unsigned long long)v.failed);
            stage_status_write(&v.st, c, true);
            verifier_certs_unmap_pages(v.certs);
        }
        if (rc == 0 || !(items[0].revents & ZMQ_POLLIN))
            continue;
        /* Handle what is queued, but look at signals between messages. */
        for (int i = 0; i < 64 && !v.st.stopping; i++) {
            enum stage_recv_result r = stage_recv(v.pull, &msg, "webhooks");
            if (r == STAGE_RECV_NONE)
                break;
            if (r == STAGE_RECV_OK) {
                webhook_handle(&v, zmq_msg_data(&msg), zmq_msg_size(&msg));
                zmq_msg_close(&msg);
            }
        }
    }
    log_info("stopping: %llu webhooks handled, %llu not processable",
             (unsigned long long)v.handled, (unsigned long long)v.failed);
    zmq_close(v.pull);
    zmq_close(v.push);
    numbers_watch_close(&v.numbers);
    verifier_certs_close(&v.certs);
    msgpack_sbuffer_destroy(&v.wire);
    stage_fini(&v.st);
    return 0;
}
