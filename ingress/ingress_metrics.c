/*
 * ingress_metrics.c - ingress counters and histograms, Prometheus text
 * rendering (see ingress_metrics.h).  Used by the ingress.
 */
#include "ingress_metrics.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds (seconds) of the finite buckets, shared by every histogram. */
static const double hist_bounds[METRICS_HIST_BUCKETS - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
};

static const int status_codes[INGRESS_STATUS_SLOTS - 1] = {200, 400, 401, 404, 405, 413, 500, 503};

static const char *const path_names[INGRESS_PATH_COUNT] = {
    "/webhooks/telnyx", "/health", "/metrics", "other",
};

void ingress_metrics_hist_observe(struct metrics_hist *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    size_t i = 0;
    while (i < ARRAY_LEN(hist_bounds) && s > hist_bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void ingress_metrics_init(struct ingress_metrics *m)
{
    memset(m, 0, sizeof *m);
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i < ARRAY_LEN(status_codes); i++)
        if (status_codes[i] == status)
            return i;
    return INGRESS_STATUS_SLOTS - 1;
}

void ingress_metrics_request(struct ingress_metrics *m, enum ingress_path path, int status,
                             uint64_t latency_ns)
{
    if ((int)path < 0 || path >= INGRESS_PATH_COUNT)
        path = INGRESS_PATH_OTHER;
    atomic_fetch_add_explicit(&m->requests[path][status_slot(status)], 1, memory_order_relaxed);
    ingress_metrics_hist_observe(&m->request_latency[path], latency_ns);
}

static uint64_t ld(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Emit one histogram's series; labels is "" or `name="value",`. */
static void hist_render(FILE *f, const char *name, const char *labels, struct metrics_hist *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < METRICS_HIST_BUCKETS; i++) {
        cum += ld(&h->bucket[i]);
        if (i < ARRAY_LEN(hist_bounds))
            fprintf(f, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, hist_bounds[i],
                    (unsigned long long)cum);
        else
            fprintf(f, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    }
    size_t ll = strlen(labels);
    /* labels ends with ',' when present; strip it for the _sum/_count braces */
    fprintf(f, "%s_sum%s%.*s%s %.9f\n", name, ll ? "{" : "", ll ? (int)ll - 1 : 0, labels,
            ll ? "}" : "", (double)ld(&h->sum_ns) / 1e9);
    fprintf(f, "%s_count%s%.*s%s %llu\n", name, ll ? "{" : "", ll ? (int)ll - 1 : 0, labels,
            ll ? "}" : "", (unsigned long long)ld(&h->count));
}

static void counter(FILE *f, const char *name, const char *help, const char *type, uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
            (unsigned long long)v);
}

char *ingress_metrics_render(struct ingress_metrics *m, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        log_fatal("open_memstream: out of memory");

    fputs("# HELP telgate_ingress_requests_total HTTP requests answered, by path and status.\n"
          "# TYPE telgate_ingress_requests_total counter\n", f);
    for (int p = 0; p < INGRESS_PATH_COUNT; p++) {
        for (int s = 0; s < INGRESS_STATUS_SLOTS; s++) {
            uint64_t v = ld(&m->requests[p][s]);
            if (v == 0 && !(p == INGRESS_PATH_WEBHOOK && s == 0))
                continue;
            char code[8];
            if (s < INGRESS_STATUS_SLOTS - 1)
                snprintf(code, sizeof code, "%d", status_codes[s]);
            else
                snprintf(code, sizeof code, "other");
            fprintf(f, "telgate_ingress_requests_total{path=\"%s\",status=\"%s\"} %llu\n",
                    path_names[p], code, (unsigned long long)v);
        }
    }
    fputs("# HELP telgate_ingress_request_duration_seconds Time from request start to answer.\n"
          "# TYPE telgate_ingress_request_duration_seconds histogram\n", f);
    for (int p = 0; p < INGRESS_PATH_COUNT; p++) {
        char labels[64];
        snprintf(labels, sizeof labels, "path=\"%s\",", path_names[p]);
        hist_render(f, "telgate_ingress_request_duration_seconds", labels,
                    &m->request_latency[p]);
    }
    fputs("# HELP telgate_ingress_journal_fsync_seconds Duration of each journal fdatasync.\n"
          "# TYPE telgate_ingress_journal_fsync_seconds histogram\n", f);
    hist_render(f, "telgate_ingress_journal_fsync_seconds", "", &m->fsync_latency);

    counter(f, "telgate_ingress_journal_batches_total", "Group-commit batches made durable.",
            "counter", ld(&m->journal_batches));
    counter(f, "telgate_ingress_journal_records_total", "Webhooks made durable in the journal.",
            "counter", ld(&m->journal_records));
    counter(f, "telgate_ingress_journal_failed_batches_total",
            "Batches failed by a write or sync error (answered 503).", "counter",
            ld(&m->journal_failed_batches));
    counter(f, "telgate_ingress_journal_shed_total",
            "Webhooks refused because the journal queue was overloaded (answered 503).",
            "counter", ld(&m->journal_shed));
    counter(f, "telgate_ingress_journal_queue_depth", "Webhooks waiting for the journal writer.",
            "gauge", ld(&m->journal_queue_depth));
    counter(f, "telgate_ingress_published_total", "WEBHOOK messages handed to the verifiers.",
            "counter", ld(&m->published));
    counter(f, "telgate_ingress_publish_pending", "Journaled webhooks not yet handed to a verifier.",
            "gauge", ld(&m->publish_pending));
    counter(f, "telgate_ingress_publish_dropped_total",
            "Pending publications dropped from memory (still in the journal).", "counter",
            ld(&m->publish_dropped));
    counter(f, "telgate_ingress_unacknowledged_records",
            "Journaled webhooks the spine has not acknowledged yet.", "gauge", ld(&m->unacked));
    counter(f, "telgate_ingress_republished_total",
            "WEBHOOK messages published again because no acknowledgement came in time.",
            "counter", ld(&m->republished));
    counter(f, "telgate_ingress_parked_total",
            "Webhooks parked as poison after max_attempts publications.", "counter",
            ld(&m->parked));
    counter(f, "telgate_ingress_progress_received_total", "PROGRESS reports received from the spine.",
            "counter", ld(&m->progress_received));
    counter(f, "telgate_ingress_journal_files", "Journal dump files on disk.", "gauge",
            ld(&m->journal_files));
    counter(f, "telgate_ingress_journal_files_deleted_total",
            "Processed journal dump files deleted after journal_retention_s.", "counter",
            ld(&m->journal_files_deleted));
    fclose(f);
    *len = n;
    return buf;
}
