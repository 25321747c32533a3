/*
 * bench_common.h - pieces shared by the telgate benchmark programs (bench/):
 * realistic Telnyx call.initiated bodies, latency percentiles and a tiny
 * JSON result writer.  Used by loadgen, spine_bench and verifier_bench only.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

/* Size of a real Telnyx call.initiated webhook, what the issue measures with. */
#define BENCH_BODY_BYTES 1500

/* What varies between the benchmark's call.initiated webhooks. */
struct bench_call {
    const char *id;             /* data.id, unique per webhook */
    const char *ccid;           /* call_control_id */
    const char *from, *to;
    const char *token;          /* X-Namespace-Token value or NULL */
    const char *attestation;    /* "A".."C" or NULL (no STIR/SHAKEN fields) */
};

/*
 * Write a compact JSON call.initiated body for c into out (capacity cap),
 * padded with realistic Telnyx payload fields up to about pad_to bytes
 * (0 = no padding).  Returns the length, or 0 when out is too small.
 */
size_t bench_webhook_body(const struct bench_call *c, size_t pad_to, char *out, size_t cap);

/* Percentiles of n latencies in nanoseconds (the array is sorted in place). */
struct bench_pct {
    size_t n;
    double p50_ms, p99_ms, p999_ms, max_ms, mean_ms;
};
void bench_pct_compute(uint64_t *lat_ns, size_t n, struct bench_pct *out);

/* Print "key": {n, p50_ms, p99_ms, p999_ms, max_ms, mean_ms} (no comma). */
void bench_pct_json(FILE *f, const char *key, const struct bench_pct *p);

/* Sleep until the monotonic clock reaches t_ns (tg_mono_ns() origin). */
void bench_sleep_until_ns(uint64_t t_ns);

#endif
