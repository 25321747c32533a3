/*
 * tmpdir.h - the cmocka fixture several unit tests share: a fresh directory
 * under /tmp per test, removed afterwards.  Header-only (static inline).
 */
#ifndef TG_TEST_TMPDIR_H
#define TG_TEST_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

struct tmp {
    char dir[64];
};

/* *state = a struct tmp whose dir is a new /tmp/<prefix>.XXXXXX. */
static inline int tmpdir_setup(void **state, const char *prefix)
{
    struct tmp *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/%s.XXXXXX", prefix);
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static inline int tmpdir_teardown(void **state)
{
    struct tmp *t = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int rc = system(cmd) == 0 ? 0 : -1;
    free(t);
    return rc;
}

#endif
