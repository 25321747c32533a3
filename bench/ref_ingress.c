/*
 * ref_ingress.c - the reference for the ingress benchmark: a bare CivetWeb
 * POST handler that appends each body to one file with group-committed
 * fdatasync (one writer thread; request threads wait on a condition
 * variable) and answers 200 once its batch is durable.  Same CivetWeb
 * options as the ingress.  Run by bench/run.py; stops on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <civetweb.h>

#include "util.h"

#define REF_MAX_BODY 65536
#define REF_MAX_BATCH 1024      /* iovecs per writev (IOV_MAX) */

struct ref_rec {
    struct ref_rec *next;
    char *body;
    size_t len;
};

struct ref {
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t queued, synced;
    struct ref_rec *head, **tail;
    uint64_t enq_gen;           /* records queued so far */
    uint64_t done_gen;          /* records durable so far */
    bool failed, stopping;
    uint64_t batches;
};

static void *ref_writer(void *arg)
{
    struct ref *r = arg;
    struct iovec iov[REF_MAX_BATCH];
    struct ref_rec *batch[REF_MAX_BATCH];

    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->head && !r->stopping)
            pthread_cond_wait(&r->queued, &r->mu);
        if (!r->head && r->stopping)
            break;
        int n = 0;
        while (r->head && n < REF_MAX_BATCH) {
            batch[n] = r->head;
            r->head = r->head->next;
            iov[n].iov_base = batch[n]->body;
            iov[n].iov_len = batch[n]->len;
            n++;
        }
        if (!r->head)
            r->tail = &r->head;
        pthread_mutex_unlock(&r->mu);

        size_t total = 0;
        for (int i = 0; i < n; i++)
            total += iov[i].iov_len;
        ssize_t w = writev(r->fd, iov, n);
        bool ok = w == (ssize_t)total && fdatasync(r->fd) == 0;
        for (int i = 0; i < n; i++) {
            free(batch[i]->body);
            free(batch[i]);
        }

        pthread_mutex_lock(&r->mu);
        if (!ok)
            r->failed = true;
        r->done_gen += (uint64_t)n;
        r->batches++;
        pthread_cond_broadcast(&r->synced);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static int ref_reply(struct mg_connection *c, int status, const char *text)
{
    mg_printf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
              status, status == 200 ? "OK" : "Error", strlen(text), text);
    return status;
}

static int ref_on_post(struct mg_connection *c, void *arg)
{
    struct ref *r = arg;
    const struct mg_request_info *ri = mg_get_request_info(c);

    if (strcmp(ri->request_method, "POST") != 0)
        return ref_reply(c, 405, "{\"error\":\"method_not_allowed\"}");
    if (ri->content_length < 0 || ri->content_length > REF_MAX_BODY)
        return ref_reply(c, 413, "{\"error\":\"too_large\"}");
    size_t want = (size_t)ri->content_length, got = 0;
    char *body = xmalloc(want ? want : 1);
    while (got < want) {
        int k = mg_read(c, body + got, want - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    if (got != want) {
        free(body);
        return ref_reply(c, 400, "{\"error\":\"short_body\"}");
    }
    struct ref_rec *rec = xcalloc(1, sizeof *rec);
    rec->body = body;
    rec->len = got;

    pthread_mutex_lock(&r->mu);
    *r->tail = rec;
    r->tail = &rec->next;
    uint64_t mine = ++r->enq_gen;
    pthread_cond_signal(&r->queued);
    while (r->done_gen < mine)
        pthread_cond_wait(&r->synced, &r->mu);
    bool failed = r->failed;
    pthread_mutex_unlock(&r->mu);
    if (failed)
        return ref_reply(c, 503, "{\"error\":\"journal_unavailable\"}");
    return ref_reply(c, 200, "{\"status\":\"accepted\"}");
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: ref_ingress LISTEN THREADS FILE\n"
                        "  serves POST on LISTEN (e.g. 127.0.0.1:3000), appends bodies to FILE\n");
        return 2;
    }
    int64_t threads;
    if (tg_parse_i64(argv[2], 1, 1024, &threads) != 0) {
        fprintf(stderr, "ref_ingress: THREADS must be 1..1024\n");
        return 2;
    }
    struct ref r;
    memset(&r, 0, sizeof r);
    r.tail = &r.head;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.queued, NULL);
    pthread_cond_init(&r.synced, NULL);
    r.fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (r.fd < 0) {
        fprintf(stderr, "ref_ingress: %s: %s\n", argv[3], strerror(errno));
        return 1;
    }

    /* Block the stop signals before any thread starts; main waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_t writer;
    if (pthread_create(&writer, NULL, ref_writer, &r) != 0) {
        fprintf(stderr, "ref_ingress: cannot start the writer thread\n");
        return 1;
    }
    const char *options[] = {
        "listening_ports", argv[1], "num_threads", argv[2], "request_timeout_ms", "5000",
        "enable_keep_alive", "yes", "keep_alive_timeout_ms", "2000", "listen_backlog", "1024",
        "connection_queue", "1024", "linger_timeout_ms", "500", NULL,
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    struct mg_context *ctx = mg_start(&cb, &r, options);
    if (!ctx) {
        fprintf(stderr, "ref_ingress: cannot serve HTTP on %s\n", argv[1]);
        return 1;
    }
    mg_set_request_handler(ctx, "/", ref_on_post, &r);
    fprintf(stderr, "ref_ingress: listening on %s with %s threads\n", argv[1], argv[2]);

    int sig = 0;
    sigwait(&set, &sig);
    mg_stop(ctx);
    pthread_mutex_lock(&r.mu);
    r.stopping = true;
    pthread_cond_signal(&r.queued);
    pthread_mutex_unlock(&r.mu);
    pthread_join(writer, NULL);
    fprintf(stderr, "ref_ingress: %llu records in %llu batches\n", (unsigned long long)r.done_gen,
            (unsigned long long)r.batches);
    close(r.fd);
    return 0;
}
