/*
 * actuator_http.c - Telnyx command execution over libcurl multi + epoll,
 * with retries, command_id de-duplication and an outcome queue (see
 * actuator_http.h).  Used by the actuator.
 */
#include "actuator_http.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#define HTTP_BUCKETS 4096
#define HTTP_MAX_RESPONSE (64u << 10)
#define HTTP_DETAIL_MAX 200

/* One command, from submission until it falls out of the finished LRU. */
struct job {
    struct tg_command cmd;
    char *url;
    bool done;
    /* while pending */
    CURL *easy;                 /* non-NULL while an attempt runs */
    bool waiting;               /* waiting for due_ms to retry */
    uint64_t first_ms, due_ms;
    unsigned attempts;
    long status;                /* last HTTP status, 0 = none */
    long retry_after_s;
    char *resp;
    size_t resp_len;
    char errbuf[CURL_ERROR_SIZE];
    /* result */
    bool ok;
    char *detail;
    /* links */
    struct job *hnext;          /* hash chain */
    struct job *prev, *next;    /* pending list or finished LRU (newest first) */
};

struct job_list {
    struct job *head, *tail;
    size_t n;
};

struct actuator_http {
    char *api_url;
    long timeout_ms;
    struct retry_policy retry;
    size_t finished_cap;
    CURLM *multi;
    struct curl_slist *headers;
    int epfd;
    int64_t curl_deadline_ms;   /* -1 when curl wants no timeout */
    size_t running;
    struct job *buckets[HTTP_BUCKETS];
    struct job_list pending, finished;
    struct msg_outcome *outq;
    size_t outq_head, outq_len, outq_cap;
};

/* ---- lists and hash ---- */

static void list_push_front(struct job_list *l, struct job *j)
{
    j->prev = NULL;
    j->next = l->head;
    if (l->head)
        l->head->prev = j;
    else
        l->tail = j;
    l->head = j;
    l->n++;
}

static void list_unlink(struct job_list *l, struct job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->prev = j->next = NULL;
    l->n--;
}

static size_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % HTTP_BUCKETS);
}

static struct job *job_find(struct actuator_http *h, const char *id)
{
    for (struct job *j = h->buckets[key_hash(id)]; j; j = j->hnext)
        if (strcmp(j->cmd.command_id, id) == 0)
            return j;
    return NULL;
}

static void job_unhash(struct actuator_http *h, struct job *j)
{
    struct job **pp = &h->buckets[key_hash(j->cmd.command_id)];
    while (*pp && *pp != j)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = j->hnext;
}

static void job_destroy(struct actuator_http *h, struct job *j)
{
    if (j->easy) {
        curl_multi_remove_handle(h->multi, j->easy);
        curl_easy_cleanup(j->easy);
        h->running--;
    }
    tg_command_free(&j->cmd);
    free(j->url);
    free(j->resp);
    free(j->detail);
    free(j);
}

/* ---- outcomes ---- */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void outcome_queue(struct actuator_http *h, const struct job *j)
{
    if (h->outq_head + h->outq_len == h->outq_cap) {
        if (h->outq_head > 0) {
            memmove(h->outq, h->outq + h->outq_head, h->outq_len * sizeof *h->outq);
            h->outq_head = 0;
        } else {
            h->outq_cap = h->outq_cap ? h->outq_cap * 2 : 64;
            h->outq = xrealloc(h->outq, h->outq_cap * sizeof *h->outq);
        }
    }
    struct msg_outcome *o = &h->outq[h->outq_head + h->outq_len++];
    memset(o, 0, sizeof *o);
    o->command_id = xstrdup(j->cmd.command_id);
    o->outbox_key = j->cmd.outbox_key;
    o->action = xstrdup(j->cmd.action);
    o->call_control_id = dup_or_null(j->cmd.call_control_id);
    o->call_session_id = dup_or_null(j->cmd.call_session_id);
    o->webhook_id = dup_or_null(j->cmd.webhook_id);
    o->from = dup_or_null(j->cmd.from);
    o->to = dup_or_null(j->cmd.to);
    o->status = (uint32_t)j->status;
    o->ok = j->ok;
    o->attempts = j->attempts;
    o->detail = xstrdup(j->detail ? j->detail : "");
}

bool actuator_http_outcome_pop(struct actuator_http *h, struct msg_outcome *out)
{
    if (h->outq_len == 0)
        return false;
    *out = h->outq[h->outq_head++];
    if (--h->outq_len == 0)
        h->outq_head = 0;
    return true;
}

/* Move j from pending to the finished LRU and queue its outcome. */
static void job_finish(struct actuator_http *h, struct job *j, bool ok, const char *detail)
{
    j->ok = ok;
    free(j->detail);
    j->detail = xstrndup(detail, HTTP_DETAIL_MAX);
    j->done = true;
    j->waiting = false;
    free(j->resp);
    j->resp = NULL;
    j->resp_len = 0;
    list_unlink(&h->pending, j);
    list_push_front(&h->finished, j);
    outcome_queue(h, j);
    while (h->finished.n > h->finished_cap) {
        struct job *old = h->finished.tail;
        list_unlink(&h->finished, old);
        job_unhash(h, old);
        job_destroy(h, old);
    }
}

/* ---- curl callbacks ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct job *j = userdata;
    size_t n = size * nmemb;
    size_t room = HTTP_MAX_RESPONSE - j->resp_len;
    size_t take = n < room ? n : room;
    if (take) {
        j->resp = xrealloc(j->resp, j->resp_len + take + 1);
        memcpy(j->resp + j->resp_len, ptr, take);
        j->resp_len += take;
        j->resp[j->resp_len] = '\0';
    }
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct job *j = userdata;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && n < 64 && strncasecmp(buf, name, sizeof name - 1) == 0) {
        char v[64];
        memcpy(v, buf + sizeof name - 1, n - (sizeof name - 1));
        v[n - (sizeof name - 1)] = '\0';
        char *end;
        long s = strtol(v, &end, 10);
        while (*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t')
            end++;
        if (end != v && *end == '\0' && s > 0)
            j->retry_after_s = s;
    }
    return n;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct actuator_http *h = userp;
    TG_UNUSED(easy);
    TG_UNUSED(socketp);
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL);   /* may already be closed */
        return 0;
    }
    struct epoll_event ev = {.events = 0, .data.fd = s};
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(h->epfd, EPOLL_CTL_MOD, s, &ev) != 0 &&
        (errno != ENOENT || epoll_ctl(h->epfd, EPOLL_CTL_ADD, s, &ev) != 0))
        log_error("epoll_ctl for curl socket %d: %s", (int)s, strerror(errno));
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct actuator_http *h = userp;
    TG_UNUSED(multi);
    h->curl_deadline_ms = timeout_ms < 0 ? -1 : (int64_t)(tg_mono_ms() + (uint64_t)timeout_ms);
    return 0;
}

/* ---- attempts ---- */

static void attempt_start(struct actuator_http *h, struct job *j)
{
    CURL *e = curl_easy_init();
    if (!e)
        log_fatal("curl_easy_init failed");
    j->errbuf[0] = '\0';
    j->retry_after_s = 0;
    free(j->resp);
    j->resp = NULL;
    j->resp_len = 0;
    curl_easy_setopt(e, CURLOPT_URL, j->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->cmd.body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(j->cmd.body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "telgate-actuator");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    j->easy = e;
    j->waiting = false;
    j->attempts++;
    h->running++;
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK)
        log_fatal("curl_multi_add_handle: %s", curl_multi_strerror(mc));
}

/* errors[0].title from a Telnyx error body, or NULL.  Caller frees. */
static char *telnyx_error_title(const char *body, size_t len)
{
    if (!body || !len)
        return NULL;
    json_t *root = json_loadb(body, len, 0, NULL);
    const json_t *title = json_object_get(json_array_get(json_object_get(root, "errors"), 0),
                                          "title");
    char *out = json_is_string(title) ? xstrdup(json_string_value(title)) : NULL;
    json_decref(root);
    return out;
}

static void attempt_done(struct actuator_http *h, struct job *j, CURLcode res)
{
    long status = 0;
    char detail[HTTP_DETAIL_MAX + 1];
    if (res == CURLE_OK)
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(h->multi, j->easy);
    curl_easy_cleanup(j->easy);
    j->easy = NULL;
    h->running--;
    j->status = status;

    char *title = status ? telnyx_error_title(j->resp, j->resp_len) : NULL;
    if (res != CURLE_OK)
        snprintf(detail, sizeof detail, "%.200s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(res));
    else if (title)
        snprintf(detail, sizeof detail, "%.200s", title);
    else if (status >= 200 && status <= 299)
        snprintf(detail, sizeof detail, "ok");
    else
        snprintf(detail, sizeof detail, "HTTP %ld", status);
    free(title);

    enum retry_class cls = actuator_retry_classify(status);
    if (cls == RETRY_OK) {
        log_debug("%s %s: ok after %u attempts", j->cmd.action, j->cmd.command_id, j->attempts);
        job_finish(h, j, true, detail);
        return;
    }
    if (cls == RETRY_FAIL) {
        log_info("%s %s for %s: final failure, HTTP %ld: %s", j->cmd.action, j->cmd.command_id,
                 j->cmd.call_control_id, status, detail);
        job_finish(h, j, false, detail);
        return;
    }
    uint64_t now = tg_mono_ms();
    uint64_t delay = actuator_retry_delay_ms(&h->retry, j->attempts, status, j->retry_after_s,
                                             randombytes_random());
    if (actuator_retry_give_up(&h->retry, j->first_ms, now + delay)) {
        log_warn("%s %s for %s: giving up after %u attempts: %s", j->cmd.action,
                 j->cmd.command_id, j->cmd.call_control_id, j->attempts, detail);
        job_finish(h, j, false, detail);
        return;
    }
    log_debug("%s %s: attempt %u failed (%ld %s), retry in %llu ms", j->cmd.action,
              j->cmd.command_id, j->attempts, status, detail, (unsigned long long)delay);
    free(j->detail);
    j->detail = xstrdup(detail);
    j->waiting = true;
    j->due_ms = now + delay;
}

/* ---- public ---- */

struct actuator_http *actuator_http_new(const struct actuator_http_opts *o, char *err)
{
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            tg_err(err, "curl_global_init failed");
            return NULL;
        }
        curl_ready = true;
    }
    struct actuator_http *h = xcalloc(1, sizeof *h);
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (h->epfd < 0) {
        tg_err(err, "epoll_create1: %s", strerror(errno));
        free(h);
        return NULL;
    }
    h->multi = curl_multi_init();
    if (!h->multi) {
        tg_err(err, "curl_multi_init failed");
        close(h->epfd);
        free(h);
        return NULL;
    }
    h->api_url = xstrdup(o->api_url);
    size_t n = strlen(h->api_url);
    while (n > 0 && h->api_url[n - 1] == '/')
        h->api_url[--n] = '\0';
    h->timeout_ms = o->timeout_ms;
    h->retry = o->retry;
    h->finished_cap = o->finished_cap ? o->finished_cap : 1;
    h->curl_deadline_ms = -1;
    if (o->api_key && *o->api_key) {
        char *auth = xasprintf("Authorization: Bearer %s", o->api_key);
        h->headers = curl_slist_append(h->headers, auth);
        sodium_memzero(auth, strlen(auth));
        free(auth);
    }
    h->headers = curl_slist_append(h->headers, "Content-Type: application/json");
    h->headers = curl_slist_append(h->headers, "Accept: application/json");
    if (!h->headers)
        log_fatal("curl_slist_append failed");
    /* A bounded pool of keep-alive connections to the API: thousands of
     * commands in flight share them (curl queues the rest) instead of each
     * opening its own connection. */
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)ACTUATOR_HTTP_MAX_CONNECTIONS);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)ACTUATOR_HTTP_MAX_CONNECTIONS);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

enum actuator_submit actuator_http_submit(struct actuator_http *h, struct tg_command *cmd)
{
    struct job *j = job_find(h, cmd->command_id);
    if (j) {
        tg_command_free(cmd);
        if (!j->done)
            return ACT_SUBMIT_IN_FLIGHT;
        list_unlink(&h->finished, j);
        list_push_front(&h->finished, j);
        outcome_queue(h, j);
        return ACT_SUBMIT_FINISHED;
    }
    j = xcalloc(1, sizeof *j);
    j->cmd = *cmd;
    memset(cmd, 0, sizeof *cmd);
    char *ccid = curl_easy_escape(NULL, j->cmd.call_control_id, 0);
    char *action = curl_easy_escape(NULL, j->cmd.action, 0);
    if (!ccid || !action)
        log_fatal("curl_easy_escape failed");
    j->url = xasprintf("%s/calls/%s/actions/%s", h->api_url, ccid, action);
    curl_free(ccid);
    curl_free(action);
    j->first_ms = tg_mono_ms();
    size_t b = key_hash(j->cmd.command_id);
    j->hnext = h->buckets[b];
    h->buckets[b] = j;
    list_push_front(&h->pending, j);
    attempt_start(h, j);
    return ACT_SUBMIT_STARTED;
}

int actuator_http_fd(const struct actuator_http *h)
{
    return h->epfd;
}

long actuator_http_timeout_ms(const struct actuator_http *h)
{
    int64_t next = h->curl_deadline_ms;
    for (const struct job *j = h->pending.head; j; j = j->next)
        if (j->waiting && (next < 0 || (int64_t)j->due_ms < next))
            next = (int64_t)j->due_ms;
    if (next < 0)
        return -1;
    int64_t now = (int64_t)tg_mono_ms();
    return next <= now ? 0 : (long)(next - now);
}

void actuator_http_run(struct actuator_http *h)
{
    struct epoll_event evs[64];
    int still;
    int n = epoll_wait(h->epfd, evs, (int)ARRAY_LEN(evs), 0);
    for (int i = 0; i < n; i++) {
        int flags = 0;
        if (evs[i].events & EPOLLIN)
            flags |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT)
            flags |= CURL_CSELECT_OUT;
        if (evs[i].events & (EPOLLERR | EPOLLHUP))
            flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(h->multi, evs[i].data.fd, flags, &still);
    }
    uint64_t now = tg_mono_ms();
    if (h->curl_deadline_ms >= 0 && (uint64_t)h->curl_deadline_ms <= now) {
        h->curl_deadline_ms = -1;
        curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &still);
    }
    for (struct job *j = h->pending.head; j; j = j->next)
        if (j->waiting && j->due_ms <= now)
            attempt_start(h, j);

    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct job *j = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        if (!j)
            log_panic("curl transfer without its job");
        attempt_done(h, j, m->data.result);
    }
}

size_t actuator_http_pending(const struct actuator_http *h)
{
    return h->pending.n;
}

size_t actuator_http_running(const struct actuator_http *h)
{
    return h->running;
}

void actuator_http_free(struct actuator_http **hp)
{
    struct actuator_http *h = *hp;
    if (!h)
        return;
    struct job_list *lists[] = {&h->pending, &h->finished};
    for (size_t i = 0; i < ARRAY_LEN(lists); i++)
        while (lists[i]->head) {
            struct job *j = lists[i]->head;
            list_unlink(lists[i], j);
            job_destroy(h, j);
        }
    for (size_t i = 0; i < h->outq_len; i++)
        msg_outcome_free(&h->outq[h->outq_head + i]);
    free(h->outq);
    curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->headers);
    close(h->epfd);
    free(h->api_url);
    free(h);
    *hp = NULL;
}
