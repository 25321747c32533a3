/*
 * telctl_replay_source.c - the input side of `telctl replay`: reading the
 * records of several journal dump files in order (skipping torn and corrupt
 * parts), the progress line on a terminal, and the live-directory check.
 * Used by telctl; depends on common/ only, so unit tests link it alone.
 */
#include "journal.h"
#include "telctl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct replay_source {
    char **paths;
    size_t n_paths;
    size_t next_path;               /* index of the file to open next */
    struct journal_reader *reader;  /* current file, or NULL between files */
    const char *cur_path;
    struct replay_stats stats;
};

void replay_source_open(struct replay_source **out, char *const *paths, size_t n)
{
    struct replay_source *src = xcalloc(1, sizeof *src);
    src->paths = xcalloc(n ? n : 1, sizeof *src->paths);
    for (size_t i = 0; i < n; i++)
        src->paths[i] = xstrdup(paths[i]);
    src->n_paths = n;
    *out = src;
}

void replay_source_close(struct replay_source **srcp)
{
    if (!srcp || !*srcp)
        return;
    struct replay_source *src = *srcp;
    journal_reader_close(&src->reader);
    for (size_t i = 0; i < src->n_paths; i++)
        free(src->paths[i]);
    free(src->paths);
    free(src);
    *srcp = NULL;
}

enum replay_status replay_source_next(struct replay_source *src, struct journal_record *rec,
                                      const char **path, char *err)
{
    char why[ERR_LEN];

    memset(rec, 0, sizeof *rec);
    for (;;) {
        if (!src->reader) {
            if (src->next_path >= src->n_paths)
                return REPLAY_DONE;
            src->cur_path = src->paths[src->next_path++];
            if (path)
                *path = src->cur_path;
            if (journal_reader_open(src->cur_path, &src->reader, why) != 0) {
                src->stats.files_failed++;
                tg_err(err, "%s", why);
                return REPLAY_PROBLEM;
            }
            src->stats.files++;
        }
        if (path)
            *path = src->cur_path;
        enum journal_status st = journal_reader_next(src->reader, rec, why);
        if (st == JOURNAL_OK) {
            src->stats.records++;
            return REPLAY_RECORD;
        }
        journal_reader_close(&src->reader);
        if (st == JOURNAL_END)
            continue;
        /* Only the newest file, the last given, may end in a write that a
         * crash cut short; in an earlier one it is damage (the ingress's
         * recovery, too, sets such a file aside as corrupt). */
        bool last = src->next_path == src->n_paths;
        if (st == JOURNAL_TORN && last) {
            src->stats.torn++;
            tg_err(err, "%s (torn; rest of the file skipped)", why);
        } else if (st == JOURNAL_TORN) {
            src->stats.corrupt++;
            tg_err(err, "%s (torn, but not the last file given: corrupt; rest of the file skipped)", why);
        } else {
            src->stats.corrupt++;
            tg_err(err, "%s (corrupt; rest of the file skipped)", why);
        }
        return REPLAY_PROBLEM;
    }
}

const struct replay_stats *replay_source_stats(const struct replay_source *src)
{
    return &src->stats;
}

size_t replay_source_count(char *const *paths, size_t n)
{
    struct replay_source *src;
    struct journal_record rec;
    char err[ERR_LEN];
    enum replay_status st;

    replay_source_open(&src, paths, n);
    while ((st = replay_source_next(src, &rec, NULL, err)) != REPLAY_DONE)
        if (st == REPLAY_RECORD)
            journal_record_free(&rec);
    size_t count = src->stats.records;
    replay_source_close(&src);
    return count;
}

/* ---- progress line ---- */

void replay_progress_init(struct replay_progress *p, FILE *out, bool enabled, size_t total)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->enabled = enabled;
    p->total = total;
}

static void progress_draw(struct replay_progress *p, size_t done)
{
    fprintf(p->out, "\rreplay: %zu/%zu records", done, p->total > done ? p->total : done);
    fflush(p->out);
    p->shown = true;
}

void replay_progress_update(struct replay_progress *p, size_t done, uint64_t now_ms)
{
    if (!p->enabled)
        return;
    if (p->drawn_once && now_ms < p->last_ms + REPLAY_PROGRESS_INTERVAL_MS)
        return;
    p->drawn_once = true;
    p->last_ms = now_ms;
    progress_draw(p, done);
}

void replay_progress_clear(struct replay_progress *p)
{
    if (!p->enabled || !p->shown)
        return;
    fputs("\r\033[K", p->out);
    fflush(p->out);
    p->shown = false;
}

void replay_progress_finish(struct replay_progress *p, size_t done)
{
    if (!p->enabled)
        return;
    progress_draw(p, done);
    fputc('\n', p->out);
    fflush(p->out);
    p->shown = false;
}

/* ---- directories ---- */

int replay_dir_same(const char *a, const char *b, bool *same, char *err)
{
    char ra[PATH_MAX], rb[PATH_MAX];

    if (!realpath(a, ra))
        return tg_err(err, "%s: %s", a, strerror(errno));
    if (!realpath(b, rb)) {
        if (errno == ENOENT) {
            *same = false;      /* a exists, b does not: not the same */
            return 0;
        }
        return tg_err(err, "%s: %s", b, strerror(errno));
    }
    *same = strcmp(ra, rb) == 0;
    return 0;
}
