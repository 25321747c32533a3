/*
 * ingress_metrics.h - the ingress's counters and latency histograms, updated
 * lock-free by the HTTP worker threads and the journal writer thread, and
 * rendered in the Prometheus text format for GET /metrics.
 */
#ifndef INGRESS_METRICS_H
#define INGRESS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_HIST_BUCKETS 13     /* 12 finite upper bounds + Inf */

/* A latency histogram in seconds (bounds in ingress_metrics.c). */
struct metrics_hist {
    _Atomic uint64_t bucket[METRICS_HIST_BUCKETS];   /* non-cumulative */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
};

/* Record one observation of ns nanoseconds. */
void ingress_metrics_hist_observe(struct metrics_hist *h, uint64_t ns);

enum ingress_path {
    INGRESS_PATH_WEBHOOK,   /* /webhooks/telnyx */
    INGRESS_PATH_HEALTH,    /* /health */
    INGRESS_PATH_METRICS,   /* /metrics */
    INGRESS_PATH_OTHER,     /* anything else (404) */
    INGRESS_PATH_COUNT
};

#define INGRESS_STATUS_SLOTS 9      /* 200 400 401 404 405 413 500 503 other */

struct ingress_metrics {
    _Atomic uint64_t requests[INGRESS_PATH_COUNT][INGRESS_STATUS_SLOTS];
    struct metrics_hist request_latency[INGRESS_PATH_COUNT];

    /* journal writer */
    struct metrics_hist fsync_latency;
    _Atomic uint64_t journal_batches;          /* batches made durable */
    _Atomic uint64_t journal_records;          /* records made durable */
    _Atomic uint64_t journal_failed_batches;   /* write/sync errors */
    _Atomic uint64_t journal_shed;             /* refused: overloaded */
    _Atomic uint64_t journal_queue_depth;      /* gauge: waiting records */

    /* publication to the verifiers */
    _Atomic uint64_t published;                /* WEBHOOK messages sent */
    _Atomic uint64_t publish_pending;          /* gauge: not yet sent */
    _Atomic uint64_t publish_dropped;          /* pending list overflow */

    /* acknowledgements, re-publication, parking, journal lifecycle */
    _Atomic uint64_t unacked;                  /* gauge: journaled, not acknowledged */
    _Atomic uint64_t republished;              /* WEBHOOK re-publications sent */
    _Atomic uint64_t parked;                   /* records parked as poison */
    _Atomic uint64_t progress_received;        /* PROGRESS reports from the spine */
    _Atomic uint64_t journal_files;            /* gauge: dump files on disk */
    _Atomic uint64_t journal_files_deleted;    /* processed dump files deleted */
};

/* Zero all counters (m is caller-owned, usually static or embedded). */
void ingress_metrics_init(struct ingress_metrics *m);

/* Count one answered request with its status and latency. */
void ingress_metrics_request(struct ingress_metrics *m, enum ingress_path path, int status,
                             uint64_t latency_ns);

/* Render everything in the Prometheus text format 0.0.4.  The caller owns
 * (free()) the NUL-terminated result; *len gets its length. */
char *ingress_metrics_render(struct ingress_metrics *m, size_t *len);

#endif
