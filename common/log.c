/*
 * log.c - stderr logging shared by every telgate process.  Lines are written
 * with one write(2) so that concurrent threads never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *log_stage = "telgate";
static enum log_level log_min = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *stage) { log_stage = stage; }
void log_set_level(enum log_level level) { log_min = level; }

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_LEN(level_names); i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    return -1;
}

static void log_vwrite(const char *level, const char *fmt, va_list ap)
{
    char line[2048], ts[TG_RFC3339_LEN];
    tg_rfc3339(tg_now_us(), ts);
    int n = snprintf(line, sizeof line, "%s %s[%d] %s: ", ts, log_stage,
                     (int)getpid(), level);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level_names[level], fmt, ap);
    va_end(ap);
}

void log_always(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level_names[level], fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite("fatal", fmt, ap);
    va_end(ap);
    exit(1);
}

void log_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite("panic", fmt, ap);
    va_end(ap);
    abort();
}
