/*
 * log.h - one-line logs to stderr with time, stage name, pid and level.
 * Used by every process.  log_fatal exits 1; log_panic aborts (impossible
 * states only).
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include "util.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set the stage name shown on every line (pointer must stay valid). */
void log_init(const char *stage);
void log_set_level(enum log_level level);
/* Parse "debug", "info", "warn", "error"; -1 if unknown. */
int log_level_parse(const char *s, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) TG_PRINTF(2, 3);
/* Log with the name of level, whatever log_set_level() filters out: for the
 * few facts an operator must see at any level (e.g. that webhook signatures
 * are not checked). */
void log_always(enum log_level level, const char *fmt, ...) TG_PRINTF(2, 3);
void log_fatal(const char *fmt, ...) TG_PRINTF(1, 2) __attribute__((noreturn));
void log_panic(const char *fmt, ...) TG_PRINTF(1, 2) __attribute__((noreturn));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
