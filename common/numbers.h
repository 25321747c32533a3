/*
 * numbers.h - the operator's numbers file (numbers.conf, SPEC section 2):
 * parsing, lookup by called number, and reloading when the file changes.
 * Used by the verifier (and by anything that wants to show the numbers).
 *
 * Format: one number a line, E.164 first (`+` then 2..15 digits), then
 * whitespace-separated `key=value` options: `label=TEXT` (no spaces) and
 * `forward_to=E164|sip:URI`.  `#` starts a comment; blank lines are ignored.
 * A number may appear only once.
 */
#ifndef TG_NUMBERS_H
#define TG_NUMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "util.h"

/* The built-in default of the numbers_file key: a missing file with this
 * name is an empty table, not an error. */
#define NUMBERS_DEFAULT_FILE "numbers.conf"
#define NUMBERS_MAX_FILE_BYTES (4u << 20)

struct numbers_entry {
    char *number;       /* E.164 */
    char *label;        /* NULL when not given */
    char *forward_to;   /* E.164 or sip: URI; NULL when not given */
};

/* A parsed file: entries sorted by number (lookup by binary search). */
struct numbers {
    struct numbers_entry *entries;
    size_t n;
};

/* True when s is `+` followed by 2..15 digits, the first not 0. */
bool numbers_e164_valid(const char *s);

/*
 * Parse the text of a numbers file.  name is used in error messages
 * ("name:line: problem").  Returns 0 with *out set (caller owns it, free with
 * numbers_free), or -1 with err naming the line and the problem.
 */
int numbers_parse(const char *text, size_t len, const char *name,
                  struct numbers **out, char *err) TG_MUST_CHECK;

/*
 * Read and parse the file at path.  A missing file gives an empty table when
 * must_exist is false, else an error.  Same ownership as numbers_parse.
 */
int numbers_load(const char *path, bool must_exist, struct numbers **out,
                 char *err) TG_MUST_CHECK;

/* An empty table (caller owns it). */
struct numbers *numbers_new_empty(void);

/* The entry for number, or NULL.  Valid while the table lives. */
const struct numbers_entry *numbers_find(const struct numbers *t, const char *number);

void numbers_free(struct numbers **t);

/*
 * A numbers file that is reloaded when its modification time (or size)
 * changes, checked at most once a second.  An invalid new version is logged
 * (log_error) and the previous table stays in use.
 */
struct numbers_watch {
    char *path;
    bool must_exist;
    struct numbers *table;      /* never NULL after a successful open */
    struct timespec mtime;
    off_t size;
    bool present;
    uint64_t last_check_ms;
};

/*
 * Load path for the first time.  must_exist as numbers_load (false for the
 * default file name).  0 ok, -1 with err (the caller should not start).
 * Release with numbers_watch_close.
 */
int numbers_watch_open(struct numbers_watch *w, const char *path, bool must_exist,
                       char *err) TG_MUST_CHECK;

/* Reload when more than a second passed since the last check (now_ms from a
 * monotonic clock) and the file changed.  Returns true when the table was
 * replaced (pointers from earlier numbers_find calls are then invalid). */
bool numbers_watch_poll(struct numbers_watch *w, uint64_t now_ms);

void numbers_watch_close(struct numbers_watch *w);

#endif
