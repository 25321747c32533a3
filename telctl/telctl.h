/*
 * telctl.h - the operator CLI's command table interface: every subcommand
 * (events, tail, verify, and later keygen, issuer, cert, token, replay,
 * status) is a telctl_cmd_fn living in its own telctl_<topic>.c file.
 */
#ifndef TELCTL_H
#define TELCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "journal.h"
#include "util.h"

#define TELCTL_EXIT_OK 0
#define TELCTL_EXIT_FAIL 1     /* the operation failed */
#define TELCTL_EXIT_USAGE 2    /* bad arguments or configuration */

/*
 * A subcommand.  cfg: the loaded configuration (read-only).  argv[0] is the
 * command's name, argv[1..argc) its arguments.  Returns the process exit
 * status (TELCTL_EXIT_*), having printed one clear line on stderr on failure.
 */
typedef int (*telctl_cmd_fn)(const struct tg_config *cfg, int argc, char **argv);

/* Print "telctl CMD: <message>" and the command's usage line on stderr;
 * returns TELCTL_EXIT_USAGE. */
int telctl_usage(const char *cmd, const char *fmt, ...) TG_PRINTF(2, 3);
/* Print "telctl CMD: <message>" on stderr; returns TELCTL_EXIT_FAIL. */
int telctl_fail(const char *cmd, const char *fmt, ...) TG_PRINTF(2, 3);

/*
 * For the commands that read what is under data_dir (events, verify, cert,
 * status, live replay): data_dir itself must exist.  A missing one is most
 * likely a typo, and must not pass for an installation with an empty log (a
 * data_dir without spine/ yet is one).  TELCTL_EXIT_OK, or TELCTL_EXIT_FAIL
 * after one line on stderr naming the directory.
 */
int telctl_data_dir_check(const struct tg_config *cfg, const char *cmd);

/*
 * Option helper for "--name VALUE" and "--name=VALUE".  If argv[*i] is that
 * option, sets *value (pointing into argv), advances *i past the value and
 * returns 1; returns 0 if argv[*i] is something else, -1 if the value is
 * missing.
 */
int telctl_opt(int argc, char **argv, int *i, const char *name, const char **value);

/* telctl_events.c */
int telctl_events(const struct tg_config *cfg, int argc, char **argv);
int telctl_tail(const struct tg_config *cfg, int argc, char **argv);
int telctl_verify(const struct tg_config *cfg, int argc, char **argv);

/* telctl_cert.c */
int telctl_keygen(const struct tg_config *cfg, int argc, char **argv);
int telctl_issuer(const struct tg_config *cfg, int argc, char **argv);
int telctl_cert(const struct tg_config *cfg, int argc, char **argv);
int telctl_token(const struct tg_config *cfg, int argc, char **argv);

/* telctl_status.c */
int telctl_status(const struct tg_config *cfg, int argc, char **argv);

/* telctl_replay.c */
int telctl_replay(const struct tg_config *cfg, int argc, char **argv);

/*
 * telctl_replay_source.c - input of `telctl replay`.
 *
 * A replay source reads the records of several journal dump files, in the
 * order given (the newest last).  A file that cannot be opened, or whose
 * readable part ends in a torn or corrupt record, is reported once
 * (REPLAY_PROBLEM) and the source goes on with the next file; the good
 * records before the damage are returned.  A torn record is expected only at
 * the end of the last file (a crash cut its write short); in an earlier file
 * it counts as corrupt.
 */
struct replay_source;

struct replay_stats {
    size_t files;           /* files opened */
    size_t files_failed;    /* files that could not be opened */
    size_t records;         /* good records returned */
    size_t torn;            /* the last file ends in a torn record (0 or 1) */
    size_t corrupt;         /* files ending in a corrupt record, or torn before the last file */
};

enum replay_status {
    REPLAY_RECORD,          /* *rec holds a record */
    REPLAY_PROBLEM,         /* err says which file, what and at which offset */
    REPLAY_DONE,            /* every file was read */
};

/* Make a source over paths[0..n) (copied).  Files are opened lazily.  The
 * caller owns the result (replay_source_close). */
void replay_source_open(struct replay_source **out, char *const *paths, size_t n);
/* Close and free *src, NULLing it (NULL is a no-op). */
void replay_source_close(struct replay_source **src);

/*
 * Next record.  REPLAY_RECORD: *rec is filled (caller frees it with
 * journal_record_free).  REPLAY_PROBLEM: err names the file and, for torn or
 * corrupt records, the offset; call again to go on.  REPLAY_DONE: nothing
 * left.  *path (may be NULL) is set to the file concerned, valid while the
 * source lives.
 */
enum replay_status replay_source_next(struct replay_source *src, struct journal_record *rec,
                                      const char **path, char *err);

/* Counters so far (valid while the source lives). */
const struct replay_stats *replay_source_stats(const struct replay_source *src);

/* Number of good records in paths[0..n), reading them silently (for the
 * progress total). */
size_t replay_source_count(char *const *paths, size_t n);

/* The "replay: N/M records" line on a terminal: redrawn in place (\r), at
 * most once per REPLAY_PROGRESS_INTERVAL_MS; prints nothing when disabled. */
#define REPLAY_PROGRESS_INTERVAL_MS 100u

struct replay_progress {
    FILE *out;
    bool enabled;
    bool shown;             /* a line is on screen (not yet cleared/ended) */
    bool drawn_once;
    size_t total;
    uint64_t last_ms;
};

/* Set up p to write to out (not owned) when enabled, with total records. */
void replay_progress_init(struct replay_progress *p, FILE *out, bool enabled, size_t total);
/* Redraw with done records when enabled and the interval passed (now_ms:
 * monotonic clock). */
void replay_progress_update(struct replay_progress *p, size_t done, uint64_t now_ms);
/* Erase the line, before other output on the same terminal. */
void replay_progress_clear(struct replay_progress *p);
/* Draw the final count and end the line. */
void replay_progress_finish(struct replay_progress *p, size_t done);

/*
 * Whether directories a and b are the same after resolving symbolic links
 * (realpath).  a must exist; a missing b is "not the same".  0 with *same,
 * or -1 with err.
 */
int replay_dir_same(const char *a, const char *b, bool *same, char *err) TG_MUST_CHECK;

#endif
