/*
 * numbers.c - the operator's numbers file: parser, sorted table with binary
 * search lookup, and the mtime-driven reloader (see numbers.h).  Used by the
 * verifier.
 */
#include "numbers.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NUMBERS_MAX_LINE 4096
#define NUMBERS_MAX_LABEL 128
#define NUMBERS_MAX_URI 256

bool numbers_e164_valid(const char *s)
{
    if (!s || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    size_t n = 0;
    for (const char *p = s + 1; *p; p++, n++)
        if (*p < '0' || *p > '9')
            return false;
    return n >= 2 && n <= 15;
}

static bool sip_uri_valid(const char *s)
{
    if (strncmp(s, "sip:", 4) != 0 || strlen(s) <= 4 || strlen(s) > NUMBERS_MAX_URI)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '"' || *p == '\\')
            return false;
    return true;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct numbers_entry *)a)->number,
                  ((const struct numbers_entry *)b)->number);
}

static void entry_clear(struct numbers_entry *e)
{
    free(e->number);
    free(e->label);
    free(e->forward_to);
    memset(e, 0, sizeof *e);
}

/* Parse one line (NUL-terminated, comment already cut) into e.  Returns 1
 * when the line held an entry, 0 when blank, -1 with err. */
static int line_parse(char *line, const char *name, size_t lineno,
                      struct numbers_entry *e, char *err)
{
    const char *ws = " \t\r\v\f";
    char *save = NULL;
    char *tok = strtok_r(line, ws, &save);
    memset(e, 0, sizeof *e);
    if (!tok)
        return 0;
    if (!numbers_e164_valid(tok))
        return tg_err(err, "%s:%zu: '%.40s' is not an E.164 number (+ and 2..15 digits)",
                      name, lineno, tok);
    e->number = xstrdup(tok);
    while ((tok = strtok_r(NULL, ws, &save)) != NULL) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            tg_err(err, "%s:%zu: option '%.40s' is not key=value", name, lineno, tok);
            goto fail;
        }
        *eq = '\0';
        const char *key = tok, *val = eq + 1;
        if (!*val) {
            tg_err(err, "%s:%zu: option '%s' has an empty value", name, lineno, key);
            goto fail;
        }
        if (strcmp(key, "label") == 0) {
            if (e->label) {
                tg_err(err, "%s:%zu: label given twice", name, lineno);
                goto fail;
            }
            if (strlen(val) > NUMBERS_MAX_LABEL) {
                tg_err(err, "%s:%zu: label longer than %d characters", name, lineno,
                       NUMBERS_MAX_LABEL);
                goto fail;
            }
            e->label = xstrdup(val);
        } else if (strcmp(key, "forward_to") == 0) {
            if (e->forward_to) {
                tg_err(err, "%s:%zu: forward_to given twice", name, lineno);
                goto fail;
            }
            if (!numbers_e164_valid(val) && !sip_uri_valid(val)) {
                tg_err(err, "%s:%zu: forward_to '%.60s' is neither E.164 nor a sip: URI",
                       name, lineno, val);
                goto fail;
            }
            e->forward_to = xstrdup(val);
        } else {
            tg_err(err, "%s:%zu: unknown option '%.40s' (label, forward_to)", name, lineno, key);
            goto fail;
        }
    }
    return 1;
fail:
    entry_clear(e);
    return -1;
}

int numbers_parse(const char *text, size_t len, const char *name,
                  struct numbers **out, char *err)
{
    struct numbers *t = xcalloc(1, sizeof *t);
    size_t cap = 0, lineno = 0, pos = 0;
    char line[NUMBERS_MAX_LINE + 1];

    *out = NULL;
    if (memchr(text, '\0', len)) {
        tg_err(err, "%s: contains a NUL byte", name);
        goto fail;
    }
    while (pos < len) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - start) : len - pos;
        pos += l + (nl ? 1 : 0);
        lineno++;
        if (l > NUMBERS_MAX_LINE) {
            tg_err(err, "%s:%zu: line longer than %d bytes", name, lineno, NUMBERS_MAX_LINE);
            goto fail;
        }
        memcpy(line, start, l);
        line[l] = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        struct numbers_entry e;
        int rc = line_parse(line, name, lineno, &e, err);
        if (rc < 0)
            goto fail;
        if (rc == 0)
            continue;
        if (t->n == cap) {
            cap = cap ? cap * 2 : 16;
            t->entries = xrealloc(t->entries, cap * sizeof *t->entries);
        }
        t->entries[t->n++] = e;
    }
    if (t->n)
        qsort(t->entries, t->n, sizeof *t->entries, entry_cmp);
    for (size_t i = 1; i < t->n; i++)
        if (strcmp(t->entries[i - 1].number, t->entries[i].number) == 0) {
            tg_err(err, "%s: number %s is listed more than once", name, t->entries[i].number);
            goto fail;
        }
    *out = t;
    return 0;
fail:
    numbers_free(&t);
    return -1;
}

int numbers_load(const char *path, bool must_exist, struct numbers **out, char *err)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    if (access(path, F_OK) != 0 && errno == ENOENT && !must_exist) {
        *out = numbers_new_empty();
        return 0;
    }
    if (tg_read_file(path, NUMBERS_MAX_FILE_BYTES, &text, &len, err) != 0)
        return -1;
    int rc = numbers_parse(text, len, path, out, err);
    free(text);
    return rc;
}

struct numbers *numbers_new_empty(void)
{
    return xcalloc(1, sizeof(struct numbers));
}

const struct numbers_entry *numbers_find(const struct numbers *t, const char *number)
{
    if (!t || !number || t->n == 0)
        return NULL;
    struct numbers_entry key = {.number = (char *)number};
    return bsearch(&key, t->entries, t->n, sizeof *t->entries, entry_cmp);
}

void numbers_free(struct numbers **t)
{
    if (!t || !*t)
        return;
    for (size_t i = 0; i < (*t)->n; i++)
        entry_clear(&(*t)->entries[i]);
    free((*t)->entries);
    free(*t);
    *t = NULL;
}

/* ---- reloading ---- */

/* Current identity of the file; present=false when it does not exist. */
static void file_stamp(const char *path, bool *present, struct timespec *mtime, off_t *size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        *present = false;
        memset(mtime, 0, sizeof *mtime);
        *size = 0;
        return;
    }
    *present = true;
    *mtime = st.st_mtim;
    *size = st.st_size;
}

int numbers_watch_open(struct numbers_watch *w, const char *path, bool must_exist, char *err)
{
    memset(w, 0, sizeof *w);
    file_stamp(path, &w->present, &w->mtime, &w->size);
    if (!w->present && !must_exist)
        log_info("numbers file %s not found: no numbers configured", path);
    if (numbers_load(path, must_exist, &w->table, err) != 0)
        return -1;
    w->path = xstrdup(path);
    w->must_exist = must_exist;
    w->last_check_ms = tg_mono_ms();
    if (w->present)
        log_info("numbers file %s: %zu numbers", path, w->table->n);
    return 0;
}

bool numbers_watch_poll(struct numbers_watch *w, uint64_t now_ms)
{
    if (!w->path || now_ms < w->last_check_ms + 1000)
        return false;
    w->last_check_ms = now_ms;
    bool present;
    struct timespec mtime;
    off_t size;
    file_stamp(w->path, &present, &mtime, &size);
    if (present == w->present && size == w->size && mtime.tv_sec == w->mtime.tv_sec &&
        mtime.tv_nsec == w->mtime.tv_nsec)
        return false;
    char err[ERR_LEN];
    struct numbers *t = NULL;
    if (numbers_load(w->path, w->must_exist, &t, err) != 0) {
        log_error("numbers file reload failed, keeping the previous %zu numbers: %s",
                  w->table->n, err);
        /* Remember this version so the same broken file is not re-read
         * every second; any further change is picked up. */
        w->present = present;
        w->mtime = mtime;
        w->size = size;
        return false;
    }
    numbers_free(&w->table);
    w->table = t;
    w->present = present;
    w->mtime = mtime;
    w->size = size;
    log_info("numbers file %s reloaded: %zu numbers", w->path, t->n);
    return true;
}

void numbers_watch_close(struct numbers_watch *w)
{
    numbers_free(&w->table);
    free(w->path);
    w->path = NULL;
}
