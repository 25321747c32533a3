/*
 * actuator_http.c - Telnyx command execution over libcurl multi + epoll,
 * with a bounded set of reused transfer slots and a FIFO in front of them,
 * retries, command_id de-duplication and an outcome queue (see
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
#define HTTP_SLOTS ACTUATOR_HTTP_MAX_CONNECTIONS

/*
 * Memory.  A curl easy handle that has run holds ~20 KB (its state and a
 * 16 KB receive buffer), so handles belong to transfer slots, not to
 * commands: at most HTTP_SLOTS transfers run at once (one per pooled
 * connection), each on a slot whose handle is made once and reused with a
 * new URL and body per attempt.  Commands beyond that wait in the engine's
 * own FIFO as plain jobs.  A finished command shrinks to a small record (id
 * and result) kept for de-duplication.
 */

enum job_state {
    JOB_QUEUED,                 /* in the FIFO, waiting for a free slot */
    JOB_RUNNING,                /* an attempt is under way on a slot */
    JOB_BACKOFF,                /* an attempt failed; the next is due at due_ms */
};

/* A command from submission until it finishes. */
struct job {
    struct tg_command cmd;
    char *url;
    enum job_state state;
    uint64_t first_ms, due_ms;
    unsigned attempts;
    long status;                /* last HTTP status, 0 = none */
    struct job *hnext;          /* hash chain */
    struct job *prev, *next;    /* pending list */
    struct job *qnext;          /* FIFO, while JOB_QUEUED */
};

/* A finished command, remembered so that the spine re-sending it gets the
 * outcome again rather than a second execution.  The re-sent command
 * carries the other fields of the outcome. */
struct done {
    struct done *hnext;         /* hash chain */
    struct done *prev, *next;   /* finished LRU, newest first */
    uint32_t status, attempts;
    bool ok;
    char *detail;
    char command_id[];
};

/* A transfer slot: a reusable easy handle and what curl fills in during one
 * attempt. */
struct slot {
    CURL *easy;                 /* made on first use, kept until the engine is freed */
    struct job *job;            /* NULL while the slot is free */
    struct slot *next_free;
    long retry_after_s;
    char *resp;
    size_t resp_len;
    char errbuf[CURL_ERROR_SIZE];
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
    struct slot slots[HTTP_SLOTS];
    struct slot *free_slots;
    size_t running;             /* slots in use */
    struct job *queue_head, *queue_tail;
    size_t queued;
    struct job *pending_head;   /* every job, newest first */
    size_t pending;
    struct job *jobs[HTTP_BUCKETS];
    struct done *finished_head, *finished_tail;
    size_t finished;
    struct done *dones[HTTP_BUCKETS];
    struct msg_outcome *outq;
    size_t outq_head, outq_len, outq_cap;
};

/* ---- jobs and finished records: lists and hashes ---- */

static size_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % HTTP_BUCKETS);
}

static struct job *job_find(struct actuator_http *h, const char *id)
{
    for (struct job *j = h->jobs[key_hash(id)]; j; j = j->hnext)
        if (strcmp(j->cmd.command_id, id) == 0)
            return j;
    return NULL;
}

static void job_add(struct actuator_http *h, struct job *j)
{
    size_t b = key_hash(j->cmd.command_id);
    j->hnext = h->jobs[b];
    h->jobs[b] = j;
    j->prev = NULL;
    j->next = h->pending_head;
    if (h->pending_head)
        h->pending_head->prev = j;
    h->pending_head = j;
    h->pending++;
}

static void job_remove(struct actuator_http *h, struct job *j)
{
    struct job **pp = &h->jobs[key_hash(j->cmd.command_id)];
    while (*pp != j)
        pp = &(*pp)->hnext;
    *pp = j->hnext;
    if (j->prev)
        j->prev->next = j->next;
    else
        h->pending_head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    h->pending--;
}

static void job_destroy(struct job *j)
{
    tg_command_free(&j->cmd);
    free(j->url);
    free(j);
}

static struct done *done_find(struct actuator_http *h, const char *id)
{
    for (struct done *d = h->dones[key_hash(id)]; d; d = d->hnext)
        if (strcmp(d->command_id, id) == 0)
            return d;
    return NULL;
}

static void done_push_front(struct actuator_http *h, struct done *d)
{
    d->prev = NULL;
    d->next = h->finished_head;
    if (h->finished_head)
        h->finished_head->prev = d;
    else
        h->finished_tail = d;
    h->finished_head = d;
}

static void done_unlink(struct actuator_http *h, struct done *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        h->finished_head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        h->finished_tail = d->prev;
}

/* Remember d as the newest finished command, forgetting the oldest beyond
 * finished_cap. */
static void done_add(struct actuator_http *h, struct done *d)
{
    size_t b = key_hash(d->command_id);
    d->hnext = h->dones[b];
    h->dones[b] = d;
    done_push_front(h, d);
    h->finished++;
    while (h->finished > h->finished_cap) {
        struct done *old = h->finished_tail;
        done_unlink(h, old);
        struct done **pp = &h->dones[key_hash(old->command_id)];
        while (*pp != old)
            pp = &(*pp)->hnext;
        *pp = old->hnext;
        h->finished--;
        free(old->detail);
        free(old);
    }
}

/* ---- the FIFO of jobs waiting for a slot ---- */

static void queue_push(struct actuator_http *h, struct job *j)
{
    j->state = JOB_QUEUED;
    j->qnext = NULL;
    if (h->queue_tail)
        h->queue_tail->qnext = j;
    else
        h->queue_head = j;
    h->queue_tail = j;
    h->queued++;
}

static struct job *queue_pop(struct actuator_http *h)
{
    struct job *j = h->queue_head;
    if (!j)
        return NULL;
    h->queue_head = j->qnext;
    if (!h->queue_head)
        h->queue_tail = NULL;
    j->qnext = NULL;
    h->queued--;
    return j;
}

/* ---- outcomes ---- */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* Queue the outcome of command c, finished with result d. */
static void outcome_queue(struct actuator_http *h, const struct tg_command *c, const struct done *d)
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
    o->command_id = xstrdup(c->command_id);
    o->outbox_key = c->outbox_key;
    o->action = xstrdup(c->action);
    o->call_control_id = dup_or_null(c->call_control_id);
    o->call_session_id = dup_or_null(c->call_session_id);
    o->webhook_id = dup_or_null(c->webhook_id);
    o->from = dup_or_null(c->from);
    o->to = dup_or_null(c->to);
    o->status = d->status;
    o->ok = d->ok;
    o->attempts = d->attempts;
    o->detail = xstrdup(d->detail);
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

/* j has its final result: queue its outcome, replace it by a finished
 * record and free it. */
static void job_finish(struct actuator_http *h, struct job *j, bool ok, const char *detail)
{
    size_t id_size = strlen(j->cmd.command_id) + 1;
    struct done *d = xmalloc(sizeof *d + id_size);
    memcpy(d->command_id, j->cmd.command_id, id_size);
    d->status = (uint32_t)j->status;
    d->attempts = j->attempts;
    d->ok = ok;
    d->detail = xstrdup(detail);
    outcome_queue(h, &j->cmd, d);
    job_remove(h, j);
    job_destroy(j);
    done_add(h, d);
}

/* ---- curl callbacks ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct slot *s = userdata;
    size_t n = size * nmemb;
    size_t room = HTTP_MAX_RESPONSE - s->resp_len;
    size_t take = n < room ? n : room;
    if (take) {
        s->resp = xrealloc(s->resp, s->resp_len + take + 1);
        memcpy(s->resp + s->resp_len, ptr, take);
        s->resp_len += take;
        s->resp[s->resp_len] = '\0';
    }
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct slot *s = userdata;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && n < 64 && strncasecmp(buf, name, sizeof name - 1) == 0) {
        char v[64];
        memcpy(v, buf + sizeof name - 1, n - (sizeof name - 1));
        v[n - (sizeof name - 1)] = '\0';
        char *end;
        long sec = strtol(v, &end, 10);
        while (*end == ' ' || *end == '\r' || *end == '\n' || *end == '\t')
            end++;
        if (end != v && *end == '\0' && sec > 0)
            s->retry_after_s = sec;
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

/* A slot's easy handle, made with every option that is the same for all
 * attempts; attempt_start sets only the URL and the body. */
static CURL *slot_easy_new(struct actuator_http *h, struct slot *s)
{
    CURL *e = curl_easy_init();
    if (!e)
        log_fatal("curl_easy_init failed");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "telgate-actuator");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    return e;
}

/* Start j's next attempt on the free slot s. */
static void attempt_start(struct actuator_http *h, struct slot *s, struct job *j)
{
    if (!s->easy)
        s->easy = slot_easy_new(h, s);
    s->job = j;
    s->errbuf[0] = '\0';
    s->retry_after_s = 0;
    curl_easy_setopt(s->easy, CURLOPT_URL, j->url);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, j->cmd.body);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(j->cmd.body));
    j->state = JOB_RUNNING;
    j->attempts++;
    h->running++;
    CURLMcode mc = curl_multi_add_handle(h->multi, s->easy);
    if (mc != CURLM_OK)
        log_fatal("curl_multi_add_handle: %s", curl_multi_strerror(mc));
}

/* Start queued jobs, oldest first, while slots are free. */
static void queue_dispatch(struct actuator_http *h)
{
    while (h->free_slots && h->queue_head) {
        struct slot *s = h->free_slots;
        h->free_slots = s->next_free;
        s->next_free = NULL;
        attempt_start(h, s, queue_pop(h));
    }
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

static void attempt_done(struct actuator_http *h, struct slot *s, CURLcode res)
{
    struct job *j = s->job;
    long status = 0;
    char detail[HTTP_DETAIL_MAX + 1];
    if (res == CURLE_OK)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(h->multi, s->easy);
    j->status = status;

    /* Only an error answer carries a title worth a JSON parse. */
    bool error_answer = status && (status < 200 || status > 299);
    char *title = error_answer ? telnyx_error_title(s->resp, s->resp_len) : NULL;
    if (res != CURLE_OK)
        snprintf(detail, sizeof detail, "%.200s", s->errbuf[0] ? s->errbuf : curl_easy_strerror(res));
    else if (title)
        snprintf(detail, sizeof detail, "%.200s", title);
    else if (status >= 200 && status <= 299)
        snprintf(detail, sizeof detail, "ok");
    else
        snprintf(detail, sizeof detail, "HTTP %ld", status);
    free(title);
    long retry_after_s = s->retry_after_s;

    /* Back to the free slots; the handle stays made for the next attempt. */
    free(s->resp);
    s->resp = NULL;
    s->resp_len = 0;
    s->job = NULL;
    s->next_free = h->free_slots;
    h->free_slots = s;
    h->running--;

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
    uint64_t delay = actuator_retry_delay_ms(&h->retry, j->attempts, status, retry_after_s,
                                             randombytes_random());
    if (actuator_retry_give_up(&h->retry, j->first_ms, now + delay)) {
        log_warn("%s %s for %s: giving up after %u attempts: %s", j->cmd.action,
                 j->cmd.command_id, j->cmd.call_control_id, j->attempts, detail);
        job_finish(h, j, false, detail);
        return;
    }
    log_debug("%s %s: attempt %u failed (%ld %s), retry in %llu ms", j->cmd.action,
              j->cmd.command_id, j->attempts, status, detail, (unsigned long long)delay);
    j->state = JOB_BACKOFF;
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
    for (size_t i = HTTP_SLOTS; i-- > 0;) {
        h->slots[i].next_free = h->free_slots;
        h->free_slots = &h->slots[i];
    }
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
    /* A bounded pool of keep-alive connections to the API, shared by all
     * commands.  The slots already keep at most one transfer per connection
     * running; the limit here only stops curl from opening more. */
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)ACTUATOR_HTTP_MAX_CONNECTIONS);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)ACTUATOR_HTTP_MAX_CONNECTIONS);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

char *actuator_http_path_segment(const char *s)
{
    static const char keep[] = "-._~!$&'()*+,;=:@";
    static const char hex[] = "0123456789ABCDEF";
    char *out = xmalloc(3 * strlen(s) + 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool alnum = (*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z');
        if (alnum || (*p < 0x80 && strchr(keep, *p))) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

enum actuator_submit actuator_http_submit(struct actuator_http *h, struct tg_command *cmd)
{
    if (job_find(h, cmd->command_id)) {
        tg_command_free(cmd);
        return ACT_SUBMIT_IN_FLIGHT;
    }
    struct done *d = done_find(h, cmd->command_id);
    if (d) {
        done_unlink(h, d);
        done_push_front(h, d);
        outcome_queue(h, cmd, d);
        tg_command_free(cmd);
        return ACT_SUBMIT_FINISHED;
    }
    struct job *j = xcalloc(1, sizeof *j);
    j->cmd = *cmd;
    memset(cmd, 0, sizeof *cmd);
    char *ccid = actuator_http_path_segment(j->cmd.call_control_id);
    char *action = actuator_http_path_segment(j->cmd.action);
    j->url = xasprintf("%s/calls/%s/actions/%s", h->api_url, ccid, action);
    free(ccid);
    free(action);
    j->first_ms = tg_mono_ms();
    job_add(h, j);
    queue_push(h, j);
    queue_dispatch(h);
    return ACT_SUBMIT_STARTED;
}

int actuator_http_fd(const struct actuator_http *h)
{
    return h->epfd;
}

long actuator_http_timeout_ms(const struct actuator_http *h)
{
    int64_t next = h->curl_deadline_ms;
    for (const struct job *j = h->pending_head; j; j = j->next)
        if (j->state == JOB_BACKOFF && (next < 0 || (int64_t)j->due_ms < next))
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

    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct slot *s = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        if (!s || !s->job)
            log_panic("curl transfer without its job");
        attempt_done(h, s, m->data.result);
    }

    /* A due retry joins the back of the FIFO: it does not overtake commands
     * still waiting for their first attempt. */
    for (struct job *j = h->pending_head; j; j = j->next)
        if (j->state == JOB_BACKOFF && j->due_ms <= now)
            queue_push(h, j);
    queue_dispatch(h);
}

size_t actuator_http_pending(const struct actuator_http *h)
{
    return h->pending;
}

size_t actuator_http_running(const struct actuator_http *h)
{
    return h->running;
}

size_t actuator_http_queued(const struct actuator_http *h)
{
    return h->queued;
}

void actuator_http_free(struct actuator_http **hp)
{
    struct actuator_http *h = *hp;
    if (!h)
        return;
    for (size_t i = 0; i < HTTP_SLOTS; i++) {
        struct slot *s = &h->slots[i];
        if (s->job)
            curl_multi_remove_handle(h->multi, s->easy);
        if (s->easy)
            curl_easy_cleanup(s->easy);
        free(s->resp);
    }
    while (h->pending_head) {
        struct job *j = h->pending_head;
        h->pending_head = j->next;
        job_destroy(j);
    }
    while (h->finished_head) {
        struct done *d = h->finished_head;
        h->finished_head = d->next;
        free(d->detail);
        free(d);
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
