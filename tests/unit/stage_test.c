/*
 * stage_test.c - unit tests for common/stage.c: the shared receive helper
 * (one single-frame message at a time, multi-frame messages dropped whole,
 * nothing waiting reported as such), the heap trim, the short scheduler
 * slice for a thread others wait on, and the one-instance lock on the data
 * directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "stage.h"
#include "tmpdir.h"

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

/* Resident anonymous memory of this process, kB. */
static long rss_anon_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

#define TRIM_CHUNKS 256

/* Memory freed in the middle of the heap stays resident until trimmed;
 * the trim runs only after work, and at most every STAGE_TRIM_MS. */
static void test_heap_trim(void **state)
{
    (void)state;
#ifdef __SANITIZE_ADDRESS__
    skip();                                     /* ASan's allocator has no glibc heap to trim */
#endif
    static char *big[TRIM_CHUNKS], *pin[TRIM_CHUNKS];
    struct stage st;
    memset(&st, 0, sizeof st);
    for (int i = 0; i < TRIM_CHUNKS; i++) {     /* 16 MB in 64 KB chunks (below the mmap threshold), each pinned by a small one */
        big[i] = malloc(64000);
        pin[i] = malloc(16);
        assert_non_null(big[i]);
        assert_non_null(pin[i]);
        memset(big[i], 1, 64000);
    }
    for (int i = 0; i < TRIM_CHUNKS; i++)
        free(big[i]);
    long before = rss_anon_kb();
    assert_true(before > 12 * 1024);            /* freed, but still resident */

    stage_heap_trim(&st, false);                /* no work: nothing to give back */
    assert_true(rss_anon_kb() > before - 4096);
    st.trim_due_ms = tg_mono_ms() + 60000;
    stage_heap_trim(&st, true);                 /* work, but the last trim is too recent */
    assert_true(rss_anon_kb() > before - 4096);
    assert_true(st.worked);                     /* owed */

    st.trim_due_ms = 0;
    stage_heap_trim(&st, false);                /* due now, for the earlier work */
    assert_false(st.worked);
    assert_true(st.trim_due_ms > 0);
    assert_true(rss_anon_kb() < before - 8192); /* most of the 16 MB went back */
    for (int i = 0; i < TRIM_CHUNKS; i++)
        free(pin[i]);
}

static int claim_setup(void **state) { return tmpdir_setup(state, "stage_test"); }
static int claim_teardown(void **state) { return tmpdir_teardown(state); }

/* A second claim of the same stage fails with the one-line reason, even in
 * the same process (flock is per open file description); another stage's
 * claim is independent; closing the first lets the next one in. */
/* The uapi struct sched_attr, as far as the test reads it. */
struct attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};

struct slice_result {
    int rc;
    struct attr before, after;
};

static void *slice_thread(void *arg)
{
    struct slice_result *r = arg;
    /* a nice value of its own, which the call must keep */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 3) != 0)
        return NULL;
    syscall(SYS_sched_getattr, 0, &r->before, sizeof r->before, 0);
    r->rc = stage_thread_short_slice(250000);
    syscall(SYS_sched_getattr, 0, &r->after, sizeof r->after, 0);
    return NULL;
}

static void test_short_slice(void **state)
{
    (void)state;
    struct slice_result r;
    pthread_t t;
    memset(&r, 0, sizeof r);
    r.rc = 99;
    assert_int_equal(pthread_create(&t, NULL, slice_thread, &r), 0);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.after.policy, 0);                /* still SCHED_OTHER */
    assert_int_equal(r.after.nice, 3);
    /* kernels before EEVDF's custom slices (6.12) accept and ignore it */
    if (r.before.runtime == 0 && r.after.runtime == 0)
        skip();
    assert_int_equal(r.after.runtime, 250000);
}

static void test_claim(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN], want[ERR_LEN], data[96];
    int a, b, c;

    snprintf(data, sizeof data, "%s/var", t->dir);     /* created by the claim */
    assert_int_equal(stage_claim(data, "spine", &a, err), 0);
    assert_true(a >= 0);
    assert_true(fcntl(a, F_GETFD) & FD_CLOEXEC);

    assert_int_equal(stage_claim(data, "spine", &b, err), -1);
    assert_int_equal(b, -1);
    snprintf(want, sizeof want, "another spine is running on %s (lock %s/run/spine.lock held)", data, data);
    assert_string_equal(err, want);

    assert_int_equal(stage_claim(data, "actuator", &c, err), 0);

    close(a);
    assert_int_equal(stage_claim(data, "spine", &b, err), 0);
    close(b);
    close(c);
}

/* A holder killed with SIGKILL leaves no lock behind. */
static void test_claim_killed_holder(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN];
    int p[2], fd;

    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char ok = stage_claim(t->dir, "spine", &fd, err) == 0 ? 'y' : 'n';
        if (write(p[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char ok = 0;
    close(p[1]);
    assert_int_equal(read(p[0], &ok, 1), 1);
    close(p[0]);
    assert_int_equal(ok, 'y');
    assert_int_equal(stage_claim(t->dir, "spine", &fd, err), -1);
    assert_non_null(strstr(err, "another spine is running"));

    int status;
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(stage_claim(t->dir, "spine", &fd, err), 0);
    close(fd);
}

/* A data directory that cannot be made: the reason, no descriptor. */
static void test_claim_error(void **state)
{
    struct tmp *t = *state;
    char err[ERR_LEN], file[96];
    int fd = 0;

    snprintf(file, sizeof file, "%s/plain", t->dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(stage_claim(file, "spine", &fd, err), -1);
    assert_int_equal(fd, -1);
    assert_non_null(strstr(err, "plain"));
    assert_null(strstr(err, "another"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_trim),       /* first: on a heap nothing else freed into */
        cmocka_unit_test_setup_teardown(test_recv, setup, teardown),
        cmocka_unit_test(test_short_slice),
        cmocka_unit_test_setup_teardown(test_claim, claim_setup, claim_teardown),
        cmocka_unit_test_setup_teardown(test_claim_killed_holder, claim_setup, claim_teardown),
        cmocka_unit_test_setup_teardown(test_claim_error, claim_setup, claim_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
