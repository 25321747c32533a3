/*
 * stage_test.c - unit tests for the shared receive helper of common/stage.c:
 * one single-frame message at a time, multi-frame messages dropped whole,
 * nothing waiting reported as such.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <zmq.h>

#include "stage.h"

struct pair {
    void *ctx, *push, *pull;
};

static int setup(void **state)
{
    static struct pair p;
    p.ctx = zmq_ctx_new();
    p.pull = zmq_socket(p.ctx, ZMQ_PULL);
    p.push = zmq_socket(p.ctx, ZMQ_PUSH);
    if (zmq_bind(p.pull, "inproc://stage_test") != 0 || zmq_connect(p.push, "inproc://stage_test") != 0)
        return -1;
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    struct pair *p = *state;
    int zero = 0;
    zmq_setsockopt(p->push, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(p->push);
    zmq_close(p->pull);
    zmq_ctx_term(p->ctx);
    return 0;
}

/* inproc delivery is immediate, but give it the same chance a poll would. */
static void wait_readable(void *sock)
{
    zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
    assert_int_equal(zmq_poll(&it, 1, 1000), 1);
}

static void test_recv(void **state)
{
    struct pair *p = *state;
    zmq_msg_t m;

    assert_int_equal(stage_recv(p->pull, &m, "test"), STAGE_RECV_NONE);

    assert_int_equal(stage_send(p->push, "one", 3, 0), 0);
    wait_readable(p->pull);
    assert_int_equal(stage_recv(p->pull, &m, "test"), STAGE_RECV_OK);
    assert_int_equal(zmq_msg_size(&m), 3);
    assert_memory_equal(zmq_msg_data(&m), "one", 3);
    zmq_msg_close(&m);

    /* A three-frame message is dropped whole; the next one is intact. */
    assert_int_equal(stage_send(p->push, "a", 1, ZMQ_SNDMORE), 0);
    assert_int_equal(stage_send(p->push, "b", 1, ZMQ_SNDMORE), 0);
    assert_int_equal(stage_send(p->push, "c", 1, 0), 0);
    assert_int_equal(stage_send(p->push, "two", 3, 0), 0);
    wait_readable(p->pull);
    assert_int_equal(stage_recv(p->pull, &m, "test"), STAGE_RECV_DROPPED);
    wait_readable(p->pull);
    assert_int_equal(stage_recv(p->pull, &m, "test"), STAGE_RECV_OK);
    assert_memory_equal(zmq_msg_data(&m), "two", 3);
    zmq_msg_close(&m);

    assert_int_equal(stage_recv(p->pull, &m, "test"), STAGE_RECV_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_recv, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
