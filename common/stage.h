/*
 * stage.h - the skeleton every telgate process shares: arguments (-c, -h),
 * configuration (exit 2 on error), logging, the data directory and the
 * one-instance lock on it, signals fed into the event loop through a
 * signalfd, the ZeroMQ context and sockets.  Each stage's main.c supplies
 * only what is its own.
 */
#ifndef TG_STAGE_H
#define TG_STAGE_H

#include <msgpack.h>
#include <stdbool.h>
#include <zmq.h>

#include "config.h"
#include "util.h"

struct stage {
    const char *name;
    struct tg_config cfg;
    void *zctx;
    int sigfd;          /* readable when SIGTERM/SIGINT/SIGHUP arrived */
    int lockfd;         /* DATA_DIR/run/<name>.lock once stage_claim_or_exit took it, else -1 */
    bool stopping;      /* set once SIGTERM/SIGINT has been read */
    uint64_t started_ms;      /* wall clock at stage_init */
    uint64_t status_due_ms;   /* monotonic: next status file write */
    char *status_path;        /* DATA_DIR/run/status/<name>-<pid>.json */
    bool worked;              /* input handled since the last heap trim */
    uint64_t trim_due_ms;     /* monotonic: earliest next heap trim */
};

#define STAGE_STATUS_PERIOD_MS 1000
#define STAGE_TRIM_MS 100

/*
 * Parse `-c PATH` and `-h`, load the configuration (prints one line and exits
 * 2 on error), create DATA_DIR and DATA_DIR/run, block SIGTERM/SIGINT/SIGHUP
 * into st->sigfd, ignore SIGPIPE, create the ZeroMQ context.
 */
void stage_init(struct stage *st, const char *name, int argc, char **argv);

/*
 * One instance of a stage per data directory: take an exclusive flock
 * (LOCK_EX | LOCK_NB) on DATA_DIR/run/<name>.lock, creating DATA_DIR/run
 * and the file (mode 0640, O_CLOEXEC) if needed.  The lock lasts while the
 * returned descriptor stays open; the kernel drops it when it is closed or
 * the process ends in any way, also SIGKILL, so a dead holder never blocks
 * a restart.  flock locks belong to the open file description: a second
 * claim conflicts with the first even within one process.
 * Returns 0 with the descriptor in *fd (caller owns it: keep it open as long
 * as the data directory is yours), or -1 with *fd = -1 and the reason in
 * err: "another <name> is running on DATA_DIR (lock DATA_DIR/run/<name>.lock
 * held)" when another process holds it, else the failing call and errno.
 */
int stage_claim(const char *data_dir, const char *name, int *fd, char *err) TG_MUST_CHECK;

/*
 * stage_claim for st->name on its data_dir, the descriptor kept in
 * st->lockfd until stage_fini.  On failure prints "<name>: <reason>" to
 * stderr and exits 1.  For stages that bind fixed endpoints or own state in
 * the data directory (spine, actuator, ingress): call it before binding or
 * opening anything.  Verifiers run several at once and do not call it.
 */
void stage_claim_or_exit(struct stage *st);

/* Create a socket of type, bind or connect it to endpoint (exits 1 with the
 * reason on failure), with linger 0 and the given high-water mark (0 = the
 * library's default). */
void *stage_socket(struct stage *st, int type, const char *endpoint, bool bind, int hwm);

/*
 * zmq_poll over items[0..n) plus the signal fd, for at most timeout_ms
 * (-1 = forever).  Consumes pending signals and sets st->stopping on
 * SIGTERM/SIGINT.  Returns the number of ready items among items[0..n)
 * (0 on timeout or signal), -1 on error other than EINTR.
 */
int stage_poll(struct stage *st, zmq_pollitem_t *items, int n, long timeout_ms);

/*
 * The status file `telctl status` reads: DATA_DIR/run/status/<name>-<pid>.json,
 * {"stage","pid","started_ms","updated_ms","counters":{...}}, replaced
 * atomically.  counters_json is a JSON object's text.  Writes at most once
 * per STAGE_STATUS_PERIOD_MS unless force; cheap to call every loop.
 * stage_status_due says whether a call would write (to skip building the
 * counters).  Failures are logged once and otherwise ignored.
 */
bool stage_status_due(const struct stage *st);
void stage_status_write(struct stage *st, const char *counters_json, bool force);

/* Close the context (sockets must be closed first), remove the status file,
 * release the stage lock, free the config. */
void stage_fini(struct stage *st);

/* Send one frame; flags as zmq_send.  0 ok, -1 (errno from zmq). */
int stage_send(void *sock, const void *buf, size_t len, int flags) TG_MUST_CHECK;

enum stage_recv_result {
    STAGE_RECV_NONE,            /* nothing waiting (or a receive error, logged) */
    STAGE_RECV_OK,              /* *m holds one single-frame message; close it */
    STAGE_RECV_DROPPED,         /* a multi-frame message arrived: discarded whole, logged */
};

/* Take one message from sock without blocking.  Every stage-to-stage
 * message is one frame, so others are dropped; what names the socket in
 * the logs. */
enum stage_recv_result stage_recv(void *sock, zmq_msg_t *m, const char *what);

/*
 * Hand freed heap memory back to the system (malloc_trim) if worked is set
 * or input was handled since the last trim, at most every STAGE_TRIM_MS.
 * A batch frees memory all over the heap and glibc returns only its top, so
 * without this a stage's RSS keeps the high-water mark of its busiest
 * moment.  stage_poll calls it (input = worked); a stage whose work happens
 * outside stage_poll (the ingress) calls it itself.
 */
void stage_heap_trim(struct stage *st, bool worked);

/*
 * Ask the scheduler to run the calling thread as soon as it wakes: a short
 * slice (slice_ns, 0.1-100 ms) gives a thread an earlier deadline than those
 * with the default slice under EEVDF (Linux 6.12 and later:
 * sched_attr.sched_runtime of a SCHED_OTHER thread), without a larger share
 * of the CPU.  For a thread every request waits on, e.g. the ingress's
 * journal writer.  Its nice value is kept.  Older kernels accept and ignore
 * the request; a refusal is logged at debug level.  0 done, -1 refused.
 */
int stage_thread_short_slice(uint64_t slice_ns);

#endif
