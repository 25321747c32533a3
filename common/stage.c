/*
 * stage.c - the shared process skeleton (see stage.h).
 */
#include "stage.h"
#include "log.h"

#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sodium.h>

static void usage(const char *name, FILE *out)
{
    fprintf(out, "usage: %s [-c CONFIG]\n\n", name);
    config_print_help(out);
}

void stage_init(struct stage *st, const char *name, int argc, char **argv)
{
    const char *cfg_path = NULL;
    char err[ERR_LEN];
    int opt;

    memset(st, 0, sizeof *st);
    st->name = name;
    st->sigfd = -1;
    st->lockfd = -1;
    log_init(name);
    while ((opt = getopt(argc, argv, "c:h")) != -1) {
        switch (opt) {
        case 'c': cfg_path = optarg; break;
        case 'h': usage(name, stdout); exit(0);
        default: usage(name, stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", name, argv[optind]);
        exit(2);
    }
    if (config_load(&st->cfg, cfg_path, err) != 0) {
        fprintf(stderr, "%s: configuration error: %s\n", name, err);
        config_free(&st->cfg);
        exit(2);
    }
    if (sodium_init() < 0)
        log_fatal("libsodium failed to initialise");

    char *run = xasprintf("%s/run/status", st->cfg.data_dir);
    if (tg_mkdir_p(run, err) != 0)
        log_fatal("data_dir: %s", err);
    free(run);
    st->started_ms = tg_now_ms();
    st->status_path = xasprintf("%s/run/status/%s-%d.json", st->cfg.data_dir, name, (int)getpid());

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        log_fatal("pthread_sigmask: %s", strerror(errno));
    st->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (st->sigfd < 0)
        log_fatal("signalfd: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);   /* a file-size limit fails the write (EFBIG), it does not kill */

    st->zctx = zmq_ctx_new();
    if (!st->zctx)
        log_fatal("zmq_ctx_new: %s", zmq_strerror(errno));
}

int stage_claim(const char *data_dir, const char *name, int *fd, char *err)
{
    char *run = xasprintf("%s/run", data_dir);
    char *path = xasprintf("%s/%s.lock", run, name);
    int lfd, rc = -1;

    *fd = -1;
    if (tg_mkdir_p(run, err) != 0)
        goto out;
    lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lfd < 0) {
        tg_err(err, "open %s: %s", path, strerror(errno));
        goto out;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            tg_err(err, "another %s is running on %s (lock %s held)", name, data_dir, path);
        else
            tg_err(err, "lock %s: %s", path, strerror(errno));
        close(lfd);
        goto out;
    }
    *fd = lfd;
    rc = 0;
out:
    free(path);
    free(run);
    return rc;
}

void stage_claim_or_exit(struct stage *st)
{
    char err[ERR_LEN];
    if (stage_claim(st->cfg.data_dir, st->name, &st->lockfd, err) != 0) {
        fprintf(stderr, "%s: %s\n", st->name, err);
        exit(1);
    }
}

void *stage_socket(struct stage *st, int type, const char *endpoint, bool bind, int hwm)
{
    void *s = zmq_socket(st->zctx, type);
    if (!s)
        log_fatal("zmq_socket: %s", zmq_strerror(errno));
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (hwm > 0) {
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    if (bind && strncmp(endpoint, "ipc://", 6) == 0)
        unlink(endpoint + 6);   /* a stale socket file from a killed process */
    int rc = bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint);
    if (rc != 0)
        log_fatal("%s %s: %s", bind ? "bind" : "connect", endpoint, zmq_strerror(errno));
    return s;
}

int stage_poll(struct stage *st, zmq_pollitem_t *items, int n, long timeout_ms)
{
    zmq_pollitem_t all[16];
    if (n > (int)ARRAY_LEN(all) - 1)
        log_panic("stage_poll: too many items (%d)", n);
    memcpy(all, items, (size_t)n * sizeof *items);
    all[n] = (zmq_pollitem_t){.socket = NULL, .fd = st->sigfd, .events = ZMQ_POLLIN};
    int rc = zmq_poll(all, n + 1, timeout_ms);
    if (rc < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++)
        items[i].revents = all[i].revents;
    if (all[n].revents & ZMQ_POLLIN) {
        struct signalfd_siginfo si;
        while (read(st->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                if (!st->stopping)
                    log_info("signal %u: stopping", si.ssi_signo);
                st->stopping = true;
            }
        }
        rc--;
    }
    stage_heap_trim(st, rc > 0);
    return rc;
}

void stage_heap_trim(struct stage *st, bool worked)
{
    st->worked = st->worked || worked;
    uint64_t now = tg_mono_ms();
    if (!st->worked || now < st->trim_due_ms)
        return;
    malloc_trim(0);
    st->worked = false;
    st->trim_due_ms = now + STAGE_TRIM_MS;
}

/* The kernel's struct sched_attr (uapi linux/sched/types.h, which clashes
 * with glibc's <sched.h>; glibc 2.36 has no wrapper). */
struct stage_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};

int stage_thread_short_slice(uint64_t slice_ns)
{
    struct stage_sched_attr a;
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) != 0) {
        log_debug("sched_getattr: %s", strerror(errno));
        return -1;
    }
    if (a.sched_policy != SCHED_OTHER)
        return -1;              /* a real-time or batch thread: leave it */
    a.size = sizeof a;
    a.sched_flags = 0;
    a.sched_runtime = slice_ns;
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0) {
        log_debug("sched_setattr (slice %llu ns): %s", (unsigned long long)slice_ns, strerror(errno));
        return -1;
    }
    return 0;
}

bool stage_status_due(const struct stage *st)
{
    return tg_mono_ms() >= st->status_due_ms;
}

void stage_status_write(struct stage *st, const char *counters_json, bool force)
{
    static bool logged;
    if (!force && !stage_status_due(st))
        return;
    st->status_due_ms = tg_mono_ms() + STAGE_STATUS_PERIOD_MS;
    char *tmp = xasprintf("%s.tmp", st->status_path);
    char *text = xasprintf("{\"stage\":\"%s\",\"pid\":%d,\"started_ms\":%llu,\"updated_ms\":%llu,"
                           "\"counters\":%s}\n", st->name, (int)getpid(),
                           (unsigned long long)st->started_ms, (unsigned long long)tg_now_ms(),
                           counters_json && *counters_json ? counters_json : "{}");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && tg_write_all(fd, text, strlen(text)) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (!ok || rename(tmp, st->status_path) != 0) {
        if (!logged)
            log_warn("status file %s: %s", st->status_path, strerror(errno));
        logged = true;
        unlink(tmp);
    }
    free(text);
    free(tmp);
}

void stage_fini(struct stage *st)
{
    if (st->status_path) {
        unlink(st->status_path);
        free(st->status_path);
        st->status_path = NULL;
    }
    if (st->zctx)
        zmq_ctx_term(st->zctx);
    st->zctx = NULL;
    if (st->sigfd >= 0)
        close(st->sigfd);
    st->sigfd = -1;
    if (st->lockfd >= 0)
        close(st->lockfd);      /* the data directory is free for the next one */
    st->lockfd = -1;
    config_free(&st->cfg);
}

enum stage_recv_result stage_recv(void *sock, zmq_msg_t *m, const char *what)
{
    for (;;) {
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) >= 0)
            break;
        int e = errno;
        zmq_msg_close(m);
        if (e == EINTR)
            continue;
        if (e != EAGAIN)
            log_error("%s: receive: %s", what, zmq_strerror(e));
        return STAGE_RECV_NONE;
    }
    if (!zmq_msg_more(m))
        return STAGE_RECV_OK;
    log_error("%s: dropped a multi-frame message (expected one frame)", what);
    bool more = true;
    while (more) {          /* the rest of it is already queued: frames arrive together */
        zmq_msg_close(m);
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0)
            break;
        more = zmq_msg_more(m);
    }
    zmq_msg_close(m);
    return STAGE_RECV_DROPPED;
}

int stage_send(void *sock, const void *buf, size_t len, int flags)
{
    for (;;) {
        if (zmq_send(sock, buf, len, flags) >= 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}
