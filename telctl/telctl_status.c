/*
 * telctl_status.c - telctl status: each stage up or down, with its counters
 * and lag, from the status files the stages rewrite every second under
 * DATA_DIR/run/status/ (common/stage.h).  A stage is up when its file is
 * fresh and its process exists; stages on other hosts are not seen.
 */
#include "telctl.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_FRESH_MS 5000

static const char *const stages[] = {"ingress", "verifier", "spine", "actuator"};

struct instance {
    json_t *doc;
    bool up;
    uint64_t age_ms;
};

static bool is_stage(json_t *doc, const char *name)
{
    const char *s = json_string_value(json_object_get(doc, "stage"));
    return s && strcmp(s, name) == 0;
}

static void counters_text(json_t *counters, char *out, size_t cap)
{
    const char *key;
    json_t *v;
    size_t n = 0;
    out[0] = '\0';
    json_object_foreach(counters, key, v) {
        char val[64];
        if (json_is_integer(v))
            snprintf(val, sizeof val, "%lld", (long long)json_integer_value(v));
        else if (json_is_string(v))
            snprintf(val, sizeof val, "%s", json_string_value(v));
        else
            continue;
        int w = snprintf(out + n, cap - n, "%s%s=%s", n ? " " : "", key, val);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
}

static void duration(uint64_t ms, char *out, size_t cap)
{
    uint64_t s = ms / 1000;
    if (s < 120)
        snprintf(out, cap, "%llus", (unsigned long long)s);
    else if (s < 7200)
        snprintf(out, cap, "%llum", (unsigned long long)(s / 60));
    else
        snprintf(out, cap, "%lluh", (unsigned long long)(s / 3600));
}

int telctl_status(const struct tg_config *cfg, int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return telctl_usage("status", "unknown argument '%s'", argv[i]);
    }
    if (telctl_data_dir_check(cfg, "status") != TELCTL_EXIT_OK)
        return TELCTL_EXIT_FAIL;
    char *dirpath = xasprintf("%s/run/status", cfg->data_dir);
    DIR *dir = opendir(dirpath);
    struct instance *inst = NULL;
    size_t n = 0;
    uint64_t now = tg_now_ms();
    if (!dir && errno != ENOENT) {
        int e = errno;
        free(dirpath);
        return telctl_fail("status", "%s: %s", cfg->data_dir, strerror(e));
    }
    for (struct dirent *d; dir && (d = readdir(dir));) {
        size_t len = strlen(d->d_name);
        if (len < 6 || strcmp(d->d_name + len - 5, ".json") != 0)
            continue;
        char *path = xasprintf("%s/%s", dirpath, d->d_name);
        json_t *doc = json_load_file(path, 0, NULL);
        free(path);
        if (!doc)
            continue;       /* being replaced right now, or not ours */
        json_int_t pid = json_integer_value(json_object_get(doc, "pid"));
        json_int_t upd = json_integer_value(json_object_get(doc, "updated_ms"));
        inst = xrealloc(inst, (n + 1) * sizeof *inst);
        inst[n].doc = doc;
        inst[n].age_ms = now > (uint64_t)upd ? now - (uint64_t)upd : 0;
        inst[n].up = pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM) &&
                     inst[n].age_ms < STATUS_FRESH_MS;
        n++;
    }
    if (dir)
        closedir(dir);
    free(dirpath);

    bool all_up = true;
    if (!json)
        printf("%-9s %-5s %-8s %-7s %s\n", "STAGE", "STATE", "PID", "UPTIME", "COUNTERS");
    for (size_t s = 0; s < ARRAY_LEN(stages); s++) {
        size_t up = 0, shown = 0;
        for (size_t i = 0; i < n; i++)
            if (is_stage(inst[i].doc, stages[s]) && inst[i].up)
                up++;
        if (!up)
            all_up = false;
        for (size_t i = 0; i < n; i++) {
            json_t *doc = inst[i].doc;
            if (!is_stage(doc, stages[s]))
                continue;
            if (!inst[i].up && up)
                continue;      /* a stale file of a killed process, replaced by a live one */
            shown++;
            if (json) {
                json_object_set_new(doc, "state", json_string(inst[i].up ? "up" : "down"));
                char *text = json_dumps(doc, JSON_COMPACT);
                printf("%s\n", text);
                free(text);
                continue;
            }
            char counters[512], uptime[32];
            counters_text(json_object_get(doc, "counters"), counters, sizeof counters);
            uint64_t started = (uint64_t)json_integer_value(json_object_get(doc, "started_ms"));
            duration(now > started ? now - started : 0, uptime, sizeof uptime);
            if (!inst[i].up) {
                char ago[32];
                duration(inst[i].age_ms, ago, sizeof ago);
                snprintf(uptime, sizeof uptime, "-");
                printf("%-9s %-5s %-8lld %-7s last seen %s ago: %s\n", stages[s], "down",
                       (long long)json_integer_value(json_object_get(doc, "pid")), uptime, ago, counters);
            } else {
                printf("%-9s %-5s %-8lld %-7s %s\n", stages[s], "up",
                       (long long)json_integer_value(json_object_get(doc, "pid")), uptime, counters);
            }
        }
        if (!shown) {
            if (json)
                printf("{\"stage\":\"%s\",\"state\":\"down\"}\n", stages[s]);
            else
                printf("%-9s %-5s\n", stages[s], "down");
        }
    }
    for (size_t i = 0; i < n; i++)
        json_decref(inst[i].doc);
    free(inst);
    fflush(stdout);
    return all_up ? TELCTL_EXIT_OK : TELCTL_EXIT_FAIL;
}
