/*
 * actuator_http_test.c - unit tests for actuator/actuator_http against an
 * in-process Call Control API stand-in (CivetWeb): more commands than
 * transfer slots all complete exactly once with at most
 * ACTUATOR_HTTP_MAX_CONNECTIONS requests at the server at a time; retries
 * (5xx, 429 + Retry-After, timeouts) on reused handles; final failures;
 * de-duplication of in-flight and finished commands and the finished LRU;
 * freeing the engine with transfers under way.
 *
 * The stand-in answers by the call_control_id's prefix:
 *   ok-*     200
 *   flaky-*  503 on the first request, then 200
 *   busy-*   429 with Retry-After: 1 on the first request, then 200
 *   slow-*   the first request outlasts the engine's timeout, then 200
 *   gone-*   422 with a Telnyx error body
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <civetweb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../actuator/actuator_http.h"
#include "log.h"

#define MAX_CALLS 1024
#define SLOW_MS 700             /* the stand-in's delay for slow-* */
#define TIMEOUT_MS 250          /* the engine's per-attempt timeout */

/* ---- the API stand-in ---- */

struct standin {
    struct mg_context *ctx;
    int port;
    pthread_mutex_t mu;
    char *ccids[MAX_CALLS];     /* call_control_ids seen, and hits per id */
    unsigned hits[MAX_CALLS];
    size_t n;
    _Atomic int in_flight, max_in_flight;
    _Atomic unsigned requests;
    int hold_ms;                /* every request takes at least this long */
    char last_uri[256];         /* path of the last request (CivetWeb decodes it) */
};

static struct standin S;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Count a request for ccid; returns how many it has had, this one included. */
static unsigned standin_hit(const char *ccid, size_t len)
{
    pthread_mutex_lock(&S.mu);
    size_t i = 0;
    while (i < S.n && !(strlen(S.ccids[i]) == len && memcmp(S.ccids[i], ccid, len) == 0))
        i++;
    if (i == S.n && S.n < MAX_CALLS) {
        S.ccids[i] = strndup(ccid, len);
        S.n++;
    }
    unsigned n = i < MAX_CALLS ? ++S.hits[i] : 0;
    pthread_mutex_unlock(&S.mu);
    return n;
}

static unsigned standin_hits(const char *ccid)
{
    unsigned n = 0;
    pthread_mutex_lock(&S.mu);
    for (size_t i = 0; i < S.n; i++)
        if (strcmp(S.ccids[i], ccid) == 0)
            n = S.hits[i];
    pthread_mutex_unlock(&S.mu);
    return n;
}

static void reply(struct mg_connection *c, int status, const char *extra, const char *body)
{
    mg_printf(c, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n%s",
              status, extra, strlen(body), body);
}

static int on_request(struct mg_connection *c, void *arg)
{
    (void)arg;
    const struct mg_request_info *ri = mg_get_request_info(c);
    char buf[4096];
    while (mg_read(c, buf, sizeof buf) > 0)
        ;
    int now = atomic_fetch_add(&S.in_flight, 1) + 1;
    for (int max = atomic_load(&S.max_in_flight); now > max;)
        if (atomic_compare_exchange_weak(&S.max_in_flight, &max, now))
            break;
    atomic_fetch_add(&S.requests, 1);

    pthread_mutex_lock(&S.mu);
    snprintf(S.last_uri, sizeof S.last_uri, "%s", ri->local_uri_raw ? ri->local_uri_raw : "");
    pthread_mutex_unlock(&S.mu);

    /* /v2/calls/{ccid}/actions/{action} */
    const char *p = strstr(ri->local_uri, "/calls/");
    const char *a = p ? strstr(p + 7, "/actions/") : NULL;
    int status = 404;
    if (p && a && strcmp(ri->request_method, "POST") == 0) {
        const char *ccid = p + 7;
        unsigned n = standin_hit(ccid, (size_t)(a - ccid));
        if (S.hold_ms)
            sleep_ms(S.hold_ms);
        if (strncmp(ccid, "flaky-", 6) == 0 && n == 1)
            status = 503;
        else if (strncmp(ccid, "busy-", 5) == 0 && n == 1)
            status = 429;
        else if (strncmp(ccid, "gone-", 5) == 0)
            status = 422;
        else {
            if (strncmp(ccid, "slow-", 5) == 0 && n == 1)
                sleep_ms(SLOW_MS);
            status = 200;
        }
    }
    atomic_fetch_sub(&S.in_flight, 1);
    if (status == 200)
        reply(c, 200, "", "{\"data\":{\"result\":\"ok\"}}");
    else if (status == 429)
        reply(c, 429, "Retry-After: 1\r\n", "{}");
    else if (status == 422)
        reply(c, 422, "", "{\"errors\":[{\"code\":\"90018\",\"title\":\"Call has already ended\"}]}");
    else
        reply(c, status, "", "{}");
    return status;
}

static int standin_start(void **state)
{
    (void)state;
    memset(&S, 0, sizeof S);
    pthread_mutex_init(&S.mu, NULL);
    /* More threads than the engine has connections: CivetWeb serves one
     * keep-alive connection per thread. */
    const char *options[] = {
        "listening_ports", "127.0.0.1:0", "num_threads", "80", "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000", NULL,
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    S.ctx = mg_start(&cb, NULL, options);
    if (!S.ctx)
        return -1;
    mg_set_request_handler(S.ctx, "/", on_request, NULL);
    struct mg_server_port port;
    if (mg_get_server_ports(S.ctx, 1, &port) != 1)
        return -1;
    S.port = port.port;
    return 0;
}

static int standin_stop(void **state)
{
    (void)state;
    mg_stop(S.ctx);
    for (size_t i = 0; i < S.n; i++)
        free(S.ccids[i]);
    pthread_mutex_destroy(&S.mu);
    return 0;
}

/* ---- helpers ---- */

static struct actuator_http *engine_new(size_t finished_cap)
{
    char url[64], err[ERR_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v2/", S.port);
    struct actuator_http_opts o = {
        .api_url = url,
        .api_key = "test-key",
        .timeout_ms = TIMEOUT_MS,
        .retry = {.initial_ms = 5, .max_ms = 20, .give_up_ms = 30000},
        .finished_cap = finished_cap,
    };
    struct actuator_http *h = actuator_http_new(&o, err);
    if (!h)
        fail_msg("actuator_http_new: %s", err);
    return h;
}

static enum actuator_submit submit(struct actuator_http *h, const char *ccid, const char *action,
                                   uint64_t okey)
{
    char id[64];
    snprintf(id, sizeof id, "cmd-%s-%s", ccid, action);
    struct tg_command c = {
        .command_id = strdup(id),
        .call_control_id = strdup(ccid),
        .action = strdup(action),
        .body = strdup("{\"command_id\":\"x\"}"),
        .webhook_id = strdup("wh-1"),
        .call_session_id = strdup("sess-1"),
        .from = strdup("+13125550100"),
        .to = strdup("+13125550199"),
        .outbox_key = okey,
    };
    enum actuator_submit r = actuator_http_submit(h, &c);
    assert_null(c.command_id);      /* taken in every case */
    return r;
}

struct outcomes {
    struct msg_outcome o[MAX_CALLS];
    size_t n;
};

/* Run the engine until *out holds want outcomes (fails after limit_ms),
 * checking the transfer bound on the way. */
static void drive(struct actuator_http *h, struct outcomes *out, size_t want, long limit_ms)
{
    uint64_t deadline = tg_mono_ms() + (uint64_t)limit_ms;
    while (out->n < want) {
        if (tg_mono_ms() > deadline)
            fail_msg("%zu of %zu outcomes after %ld ms (%zu running, %zu queued, %zu pending)",
                     out->n, want, limit_ms, actuator_http_running(h), actuator_http_queued(h),
                     actuator_http_pending(h));
        long tmo = actuator_http_timeout_ms(h);
        struct pollfd p = {.fd = actuator_http_fd(h), .events = POLLIN};
        poll(&p, 1, tmo < 0 || tmo > 50 ? 50 : (int)tmo);
        actuator_http_run(h);
        assert_true(actuator_http_running(h) <= ACTUATOR_HTTP_MAX_CONNECTIONS);
        assert_true(actuator_http_running(h) + actuator_http_queued(h) <= actuator_http_pending(h));
        while (out->n < MAX_CALLS && actuator_http_outcome_pop(h, &out->o[out->n]))
            out->n++;
    }
}

static const struct msg_outcome *outcome_of(const struct outcomes *out, const char *ccid)
{
    const struct msg_outcome *found = NULL;
    for (size_t i = 0; i < out->n; i++)
        if (strcmp(out->o[i].call_control_id, ccid) == 0) {
            if (found)
                fail_msg("two outcomes for %s", ccid);
            found = &out->o[i];
        }
    if (!found)
        fail_msg("no outcome for %s", ccid);
    return found;
}

static void outcomes_free(struct outcomes *out)
{
    for (size_t i = 0; i < out->n; i++)
        msg_outcome_free(&out->o[i]);
    out->n = 0;
}

/* ---- tests ---- */

/* Five times as many commands as slots: the surplus waits in the FIFO, and
 * every command reaches the API once and yields one outcome. */
static void test_more_commands_than_slots(void **state)
{
    (void)state;
    enum { N = 5 * ACTUATOR_HTTP_MAX_CONNECTIONS };
    static struct outcomes out;
    struct actuator_http *h = engine_new(8192);
    S.hold_ms = 2;          /* keep requests overlapping */
    atomic_store(&S.max_in_flight, 0);
    char ccid[32];
    for (int i = 0; i < N; i++) {
        snprintf(ccid, sizeof ccid, "ok-%d", i);
        assert_int_equal(submit(h, ccid, "answer", 1000 + (uint64_t)i), ACT_SUBMIT_STARTED);
    }
    assert_int_equal(actuator_http_pending(h), N);
    assert_int_equal(actuator_http_running(h), ACTUATOR_HTTP_MAX_CONNECTIONS);
    assert_int_equal(actuator_http_queued(h), N - ACTUATOR_HTTP_MAX_CONNECTIONS);

    drive(h, &out, N, 20000);
    S.hold_ms = 0;
    assert_int_equal(out.n, N);
    for (int i = 0; i < N; i++) {
        snprintf(ccid, sizeof ccid, "ok-%d", i);
        const struct msg_outcome *o = outcome_of(&out, ccid);
        assert_true(o->ok);
        assert_int_equal(o->status, 200);
        assert_int_equal(o->attempts, 1);
        assert_string_equal(o->detail, "ok");
        assert_int_equal(o->outbox_key, 1000 + (uint64_t)i);
        assert_string_equal(o->action, "answer");
        assert_string_equal(o->webhook_id, "wh-1");
        assert_int_equal(standin_hits(ccid), 1);
    }
    assert_int_equal(actuator_http_pending(h), 0);
    assert_int_equal(actuator_http_running(h), 0);
    assert_int_equal(actuator_http_queued(h), 0);
    assert_true(atomic_load(&S.max_in_flight) <= ACTUATOR_HTTP_MAX_CONNECTIONS);
    assert_true(atomic_load(&S.max_in_flight) > 1);
    outcomes_free(&out);
    actuator_http_free(&h);
    assert_null(h);
}

/* Retries (503, 429 + Retry-After, a timed-out attempt) run on reused
 * handles next to a final failure. */
static void test_retries_and_failures(void **state)
{
    (void)state;
    static struct outcomes out;
    struct actuator_http *h = engine_new(8192);
    uint64_t t0 = tg_mono_ms();
    submit(h, "flaky-1", "answer", 1);
    submit(h, "busy-1", "answer", 2);
    submit(h, "slow-1", "answer", 3);
    submit(h, "gone-1", "hangup", 4);
    submit(h, "ok-r", "answer", 5);
    drive(h, &out, 5, 10000);

    const struct msg_outcome *o = outcome_of(&out, "flaky-1");
    assert_true(o->ok);
    assert_int_equal(o->attempts, 2);
    assert_int_equal(standin_hits("flaky-1"), 2);

    o = outcome_of(&out, "busy-1");
    assert_true(o->ok);
    assert_int_equal(o->attempts, 2);
    /* Retry-After: 1 overrides the 20 ms backoff cap. */
    assert_true(tg_mono_ms() - t0 >= 950);

    o = outcome_of(&out, "slow-1");
    assert_true(o->ok);
    assert_int_equal(o->attempts, 2);

    o = outcome_of(&out, "gone-1");
    assert_false(o->ok);
    assert_int_equal(o->status, 422);
    assert_int_equal(o->attempts, 1);
    assert_string_equal(o->detail, "Call has already ended");

    o = outcome_of(&out, "ok-r");
    assert_true(o->ok);
    assert_int_equal(o->attempts, 1);
    outcomes_free(&out);
    actuator_http_free(&h);
}

/* A command re-sent while in flight is ignored; re-sent after it finished,
 * its outcome is queued again (with the re-sent command's fields) without a
 * second request. */
static void test_dedup(void **state)
{
    (void)state;
    static struct outcomes out;
    struct actuator_http *h = engine_new(8192);
    assert_int_equal(submit(h, "flaky-d", "answer", 7), ACT_SUBMIT_STARTED);
    assert_int_equal(submit(h, "flaky-d", "answer", 7), ACT_SUBMIT_IN_FLIGHT);
    drive(h, &out, 1, 5000);
    assert_int_equal(out.o[0].attempts, 2);
    assert_int_equal(standin_hits("flaky-d"), 2);

    assert_int_equal(submit(h, "flaky-d", "answer", 8), ACT_SUBMIT_FINISHED);
    assert_int_equal(actuator_http_pending(h), 0);
    drive(h, &out, 2, 1000);
    const struct msg_outcome *o = &out.o[1];
    assert_string_equal(o->command_id, "cmd-flaky-d-answer");
    assert_string_equal(o->call_control_id, "flaky-d");
    assert_string_equal(o->call_session_id, "sess-1");
    assert_string_equal(o->from, "+13125550100");
    assert_string_equal(o->to, "+13125550199");
    assert_int_equal(o->outbox_key, 8);
    assert_true(o->ok);
    assert_int_equal(o->status, 200);
    assert_int_equal(o->attempts, 2);
    assert_string_equal(o->detail, "ok");
    assert_int_equal(standin_hits("flaky-d"), 2);
    outcomes_free(&out);
    actuator_http_free(&h);
}

/* The call_control_id goes into the path as Telnyx documents it ("v3:..."
 * with its colon); only what a path segment cannot hold is escaped. */
static void test_url_path(void **state)
{
    (void)state;
    static struct outcomes out;
    struct actuator_http *h = engine_new(16);
    const char *ccid = "v3:2EC-70CTEj_q~u.x f/g";
    assert_int_equal(submit(h, ccid, "answer", 1), ACT_SUBMIT_STARTED);
    drive(h, &out, 1, 5000);
    assert_true(out.o[0].ok);
    assert_int_equal(standin_hits(ccid), 1);
    char uri[sizeof S.last_uri];
    pthread_mutex_lock(&S.mu);
    memcpy(uri, S.last_uri, sizeof uri);
    pthread_mutex_unlock(&S.mu);
    assert_string_equal(uri, "/v2/calls/v3:2EC-70CTEj_q~u.x f/g/actions/answer");  /* decoded */

    /* what goes on the wire (CivetWeb shows only the decoded path) */
    char *seg = actuator_http_path_segment(ccid);
    assert_string_equal(seg, "v3:2EC-70CTEj_q~u.x%20f%2Fg");
    free(seg);
    seg = actuator_http_path_segment("a!$&'()*+,;=:@b?#[]%\xc3\xa9");
    assert_string_equal(seg, "a!$&'()*+,;=:@b%3F%23%5B%5D%25%C3%A9");
    free(seg);
    outcomes_free(&out);
    actuator_http_free(&h);
}

/* Only the newest finished_cap finished commands are remembered; an older
 * one re-sent is executed again. */
static void test_finished_lru(void **state)
{
    (void)state;
    static struct outcomes out;
    struct actuator_http *h = engine_new(3);
    /* one at a time, so that they finish in this order */
    submit(h, "ok-l0", "answer", 1);
    drive(h, &out, 1, 5000);
    submit(h, "ok-l1", "answer", 2);
    drive(h, &out, 2, 5000);
    submit(h, "ok-l2", "answer", 3);
    drive(h, &out, 3, 5000);
    submit(h, "ok-l3", "answer", 4);
    drive(h, &out, 4, 5000);
    /* l1 re-sent: remembered, and now the newest */
    assert_int_equal(submit(h, "ok-l1", "answer", 2), ACT_SUBMIT_FINISHED);
    submit(h, "ok-l4", "answer", 5);
    drive(h, &out, 6, 5000);
    /* l0 and then l2 fell out; l1, l3, l4 remain */
    assert_int_equal(submit(h, "ok-l3", "answer", 4), ACT_SUBMIT_FINISHED);
    assert_int_equal(submit(h, "ok-l1", "answer", 2), ACT_SUBMIT_FINISHED);
    assert_int_equal(submit(h, "ok-l4", "answer", 5), ACT_SUBMIT_FINISHED);
    assert_int_equal(submit(h, "ok-l0", "answer", 1), ACT_SUBMIT_STARTED);
    drive(h, &out, 10, 5000);
    assert_int_equal(standin_hits("ok-l0"), 2);
    assert_int_equal(standin_hits("ok-l1"), 1);
    assert_int_equal(submit(h, "ok-l2", "answer", 3), ACT_SUBMIT_STARTED);
    drive(h, &out, 11, 5000);
    assert_int_equal(standin_hits("ok-l2"), 2);
    outcomes_free(&out);
    actuator_http_free(&h);
}

/* Freeing the engine with transfers running and queued releases all. */
static void test_free_while_busy(void **state)
{
    (void)state;
    struct actuator_http *h = engine_new(8192);
    char ccid[32];
    for (int i = 0; i < 2 * ACTUATOR_HTTP_MAX_CONNECTIONS; i++) {
        snprintf(ccid, sizeof ccid, "slow-f%d", i);
        submit(h, ccid, "answer", 1);
    }
    for (int i = 0; i < 5; i++) {
        struct pollfd p = {.fd = actuator_http_fd(h), .events = POLLIN};
        poll(&p, 1, 10);
        actuator_http_run(h);
    }
    assert_int_equal(actuator_http_running(h), ACTUATOR_HTTP_MAX_CONNECTIONS);
    actuator_http_free(&h);
    assert_null(h);
}

int main(void)
{
    log_init("actuator_http_test");
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_more_commands_than_slots),
        cmocka_unit_test(test_retries_and_failures),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_url_path),
        cmocka_unit_test(test_finished_lru),
        cmocka_unit_test(test_free_while_busy),
    };
    return cmocka_run_group_tests(tests, standin_start, standin_stop);
}
