/*
 * actuator/main.c - the actuator process: pulls COMMAND messages from the
 * spine, executes them against the Telnyx Call Control API (actuator_http)
 * and pushes one OUTCOME per finished command back to the spine.
 */
#include "actuator_http.h"
#include "log.h"
#include "msg.h"
#include "stage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ACTUATOR_MAX_PENDING 512      /* commands in hand: 8 per pooled connection */
/* Commands the PULL socket may hold while the hand is full.  Each pins
 * ~2 KB inside ZeroMQ (its share of a read buffer) until it is received; at
 * 10000 this queue added up to 6 MB to the peak RSS under load.  A deeper
 * queue gains nothing: the spine's send queue and outbox hold the rest. */
#define ACTUATOR_COMMANDS_HWM ACTUATOR_MAX_PENDING
#define ACTUATOR_OUTCOMES_HWM 10000
#define ACTUATOR_FINISHED_CAP 8192
#define ACTUATOR_DRAIN_MS 3000
#define ACTUATOR_RECV_BATCH 256

struct actuator {
    struct stage st;
    void *pull, *push;
    struct actuator_http *http;
    uint64_t received, duplicates, outcomes;
    msgpack_sbuffer wire;       /* reused: a fresh msgpack-c buffer allocates 8 KiB */
};

static void command_handle(struct actuator *a, const void *buf, size_t len)
{
    char err[ERR_LEN];
    int type;
    struct tg_command cmd;
    if (msg_type_of(buf, len, &type, err) != 0) {
        log_error("dropping malformed message (%zu bytes): %s", len, err);
        return;
    }
    if (type != MSG_COMMAND) {
        log_error("dropping message of unexpected type %d", type);
        return;
    }
    if (msg_command_decode(buf, len, &cmd, err) != 0) {
        log_error("dropping malformed COMMAND: %s", err);
        return;
    }
    a->received++;
    enum actuator_submit r = actuator_http_submit(a->http, &cmd);
    if (r != ACT_SUBMIT_STARTED)
        a->duplicates++;
}

/* Counters for `telctl status`. */
static void status_write(struct actuator *a)
{
    char c[256];
    snprintf(c, sizeof c, "{\"received\":%llu,\"duplicates\":%llu,\"outcomes\":%llu,"
             "\"in_flight\":%zu,\"running\":%zu,\"queued\":%zu}", (unsigned long long)a->received,
             (unsigned long long)a->duplicates, (unsigned long long)a->outcomes,
             actuator_http_pending(a->http), actuator_http_running(a->http),
             actuator_http_queued(a->http));
    stage_status_write(&a->st, c, true);
}

static void outcomes_send(struct actuator *a)
{
    struct msg_outcome o;
    while (actuator_http_outcome_pop(a->http, &o)) {
        msgpack_sbuffer_clear(&a->wire);
        msg_outcome_encode(&a->wire, &o);
        if (stage_send(a->push, a->wire.data, a->wire.size, ZMQ_DONTWAIT) != 0)
            log_error("OUTCOME of %s not sent to the spine: %s (the spine will re-send the command)",
                      o.command_id, zmq_strerror(errno));
        else
            a->outcomes++;
        msg_outcome_free(&o);
    }
}

static void commands_receive(struct actuator *a)
{
    zmq_msg_t msg;
    /* Up to ACTUATOR_MAX_PENDING in hand, not a whole batch beyond it. */
    size_t pending = actuator_http_pending(a->http);
    size_t room = pending < ACTUATOR_MAX_PENDING ? ACTUATOR_MAX_PENDING - pending : 0;
    for (size_t i = 0; i < room && i < ACTUATOR_RECV_BATCH; i++) {
        enum stage_recv_result r = stage_recv(a->pull, &msg, "commands");
        if (r == STAGE_RECV_NONE)
            return;
        if (r == STAGE_RECV_OK) {
            command_handle(a, zmq_msg_data(&msg), zmq_msg_size(&msg));
            zmq_msg_close(&msg);
        }
    }
}

int main(int argc, char **argv)
{
    struct actuator a;
    char err[ERR_LEN];
    memset(&a, 0, sizeof a);
    stage_init(&a.st, "actuator", argc, argv);
    const struct tg_config *cfg = &a.st.cfg;
    stage_claim_or_exit(&a.st);    /* one actuator binds actuator_endpoint */

    struct actuator_http_opts o = {
        .api_url = cfg->telnyx_api_url,
        .api_key = cfg->telnyx_api_key,
        .timeout_ms = (long)cfg->command_timeout_ms,
        .retry = {
            .initial_ms = (uint64_t)cfg->command_backoff_initial_ms,
            .max_ms = (uint64_t)cfg->command_backoff_max_ms,
            .give_up_ms = (uint64_t)cfg->command_give_up_s * 1000,
        },
        .finished_cap = ACTUATOR_FINISHED_CAP,
    };
    a.http = actuator_http_new(&o, err);
    if (!a.http)
        log_fatal("%s", err);
    if (!cfg->telnyx_api_key || !*cfg->telnyx_api_key)
        log_warn("no telnyx_api_key configured: Telnyx will refuse every command (401)");

    a.pull = stage_socket(&a.st, ZMQ_PULL, cfg->actuator_endpoint, true, ACTUATOR_COMMANDS_HWM);
    a.push = stage_socket(&a.st, ZMQ_PUSH, cfg->spine_endpoint, false, ACTUATOR_OUTCOMES_HWM);
    log_info("started: commands from %s, API %s, outcomes to %s", cfg->actuator_endpoint,
             cfg->telnyx_api_url, cfg->spine_endpoint);

    uint64_t drain_until = 0;
    for (;;) {
        if (a.st.stopping) {
            if (!drain_until) {
                drain_until = tg_mono_ms() + ACTUATOR_DRAIN_MS;
                log_info("stopping: %zu transfers running, %zu queued, %zu commands pending",
                         actuator_http_running(a.http), actuator_http_queued(a.http),
                         actuator_http_pending(a.http));
            }
            /* Attempts already handed to the engine get their chance to
             * finish, queued ones too; retries still backing off do not. */
            if ((actuator_http_running(a.http) == 0 && actuator_http_queued(a.http) == 0) ||
                tg_mono_ms() >= drain_until)
                break;
        }
        zmq_pollitem_t items[2] = {
            {.socket = NULL, .fd = actuator_http_fd(a.http), .events = ZMQ_POLLIN},
            {.socket = a.pull, .events = ZMQ_POLLIN},
        };
        /* Back-pressure: with ACTUATOR_MAX_PENDING commands in hand, leave
         * the rest in the socket; the spine keeps them in its outbox. */
        int n = a.st.stopping || actuator_http_pending(a.http) >= ACTUATOR_MAX_PENDING ? 1 : 2;
        long tmo = actuator_http_timeout_ms(a.http);
        if (tmo < 0 || tmo > 1000)
            tmo = 1000;
        if (stage_poll(&a.st, items, n, tmo) < 0)
            log_fatal("poll: %s", zmq_strerror(errno));
        if (n == 2 && (items[1].revents & ZMQ_POLLIN))
            commands_receive(&a);
        actuator_http_run(a.http);
        outcomes_send(&a);
        if (stage_status_due(&a.st))
            status_write(&a);
    }
    size_t left = actuator_http_pending(a.http);
    log_info("stopped: %llu commands received (%llu duplicates), %llu outcomes sent, "
             "%zu unfinished left to the spine's outbox",
             (unsigned long long)a.received, (unsigned long long)a.duplicates,
             (unsigned long long)a.outcomes, left);
    actuator_http_free(&a.http);
    msgpack_sbuffer_destroy(&a.wire);
    zmq_close(a.pull);
    zmq_close(a.push);
    stage_fini(&a.st);
    return 0;
}
