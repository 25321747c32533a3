/*
 * api_sink.h - a fast stand-in for the Telnyx Call Control API, for the
 * end-to-end benchmark: answers 200 to POST /v2/calls/{ccid}/actions/{action}
 * and records when the first `answer` for each benchmark call arrived.
 * Runs inside the load generator (bench/loadgen.c) so both share one clock.
 */
#ifndef API_SINK_H
#define API_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Benchmark calls have call_control_id "bench-<run>-<index>". */
#define API_SINK_CCID_PREFIX "bench-"

struct api_sink;

/*
 * Serve on 127.0.0.1:port with threads worker threads.  Records arrivals of
 * `answer` for indexes 0..n-1 (others are answered and counted only).
 * 0 and *out (caller owns; api_sink_stop), or -1 with err.
 */
int api_sink_start(uint16_t port, int threads, size_t n, struct api_sink **out, char *err) TG_MUST_CHECK;

/* Monotonic time (tg_mono_ns) of the first `answer` for index i, 0 if none yet. */
uint64_t api_sink_arrival_ns(const struct api_sink *s, size_t i);

/* Commands received so far (every action, every call). */
uint64_t api_sink_commands(const struct api_sink *s);

/* Stop serving and free; NULLs *s. */
void api_sink_stop(struct api_sink **s);

#endif
