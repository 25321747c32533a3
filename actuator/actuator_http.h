/*
 * actuator_http.h - the actuator's command engine: executes Telnyx Call
 * Control commands with libcurl's multi interface (up to
 * ACTUATOR_HTTP_MAX_CONNECTIONS at once, the rest waiting their turn in
 * submission order), schedules retries with the retry policy, de-duplicates
 * by command_id and queues outcomes.  Used by the actuator.
 *
 * Integration with a poll loop: poll actuator_http_fd() for reading (it is an
 * epoll descriptor holding curl's sockets) with a timeout of at most
 * actuator_http_timeout_ms(), then call actuator_http_run().  Single-threaded.
 */
#ifndef ACTUATOR_HTTP_H
#define ACTUATOR_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "actuator_retry.h"
#include "msg.h"
#include "util.h"

struct actuator_http_opts {
    const char *api_url;        /* e.g. https://api.telnyx.com/v2 (copied) */
    const char *api_key;        /* bearer token or NULL (copied) */
    long timeout_ms;            /* per attempt */
    struct retry_policy retry;
    size_t finished_cap;        /* finished command ids remembered (LRU) */
};

/* Keep-alive connections to the API, and so transfers running at once. */
#define ACTUATOR_HTTP_MAX_CONNECTIONS 64

struct actuator_http;

enum actuator_submit {
    ACT_SUBMIT_STARTED,         /* new command: first attempt under way or queued */
    ACT_SUBMIT_IN_FLIGHT,       /* same command_id queued, running or waiting to retry: ignored */
    ACT_SUBMIT_FINISHED,        /* same command_id finished recently: its outcome is queued again */
};

/* Create an engine.  Returns NULL with err when curl or epoll cannot be set
 * up.  Free with actuator_http_free. */
struct actuator_http *actuator_http_new(const struct actuator_http_opts *o, char *err);

/*
 * Hand a command to the engine.  Takes ownership of cmd's contents (cmd is
 * zeroed in every case).  The command must have command_id, call_control_id,
 * action and body.
 */
enum actuator_submit actuator_http_submit(struct actuator_http *h, struct tg_command *cmd);

/* Descriptor to poll for input (never changes for the engine's lifetime). */
int actuator_http_fd(const struct actuator_http *h);

/* Milliseconds until actuator_http_run must be called even without input
 * (curl timers, due retries), or -1 when nothing is pending. */
long actuator_http_timeout_ms(const struct actuator_http *h);

/* Do all I/O that is ready, fire due timers and retries, finish completed
 * transfers (queueing their outcomes).  Never blocks. */
void actuator_http_run(struct actuator_http *h);

/* Pop the oldest queued outcome into *out (caller owns it, msg_outcome_free).
 * Returns false when none is queued. */
bool actuator_http_outcome_pop(struct actuator_http *h, struct msg_outcome *out);

/* Commands not finished (queued, running or waiting for a retry). */
size_t actuator_http_pending(const struct actuator_http *h);
/* HTTP transfers running right now (at most ACTUATOR_HTTP_MAX_CONNECTIONS). */
size_t actuator_http_running(const struct actuator_http *h);
/* Attempts waiting for a free transfer (new commands and due retries). */
size_t actuator_http_queued(const struct actuator_http *h);

/* Stop all transfers and free everything; unfinished commands are dropped
 * (the spine re-sends them).  Sets *h to NULL. */
void actuator_http_free(struct actuator_http **h);

/*
 * s as one URL path segment: characters a segment may hold (RFC 3986 pchar:
 * unreserved, sub-delims, ':' and '@') stay as they are, the rest are
 * percent-encoded.  So "v3:2EC-70..." goes out as Telnyx documents it,
 * with its colon, not as "v3%3A2EC-70...".  The caller frees the result.
 */
char *actuator_http_path_segment(const char *s);

#endif
