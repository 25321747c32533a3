/*
 * verifier_state.c - encode / decode the telgate client_state (format in
 * verifier_state.h).  Used by the verifier.
 */
#include "verifier_state.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_PREFIX "tg1|"

static const char *const phase_names[] = {
    [STATE_NONE] = "none",          [STATE_ANNOUNCE] = "announce",
    [STATE_SPEAKING] = "speaking",  [STATE_VERIFIED] = "verified",
    [STATE_REJECTED] = "rejected",
};

const char *verifier_state_phase_name(enum state_phase phase)
{
    if ((unsigned)phase >= ARRAY_LEN(phase_names))
        return "none";
    return phase_names[phase];
}

static bool reason_valid(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n >= STATE_REASON_MAX)
        return false;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || *r == '_'))
            return false;
    return true;
}

int verifier_state_encode(const struct verifier_state *st, char out[STATE_ENCODED_MAX], char *err)
{
    char text[80];
    if (st->phase == STATE_NONE || (unsigned)st->phase >= ARRAY_LEN(phase_names))
        return tg_err(err, "client_state: no phase to encode");
    if (st->verified)
        snprintf(text, sizeof text, STATE_PREFIX "%s|v|-|-", phase_names[st->phase]);
    else {
        if (!reason_valid(st->reason))
            return tg_err(err, "client_state: bad rejection reason '%.40s'", st->reason);
        snprintf(text, sizeof text, STATE_PREFIX "%s|r|%s|%c", phase_names[st->phase],
                 st->reason, st->mode == REJECT_BUSY ? 'b' : 'a');
    }
    char *b64 = tg_b64_encode((const uint8_t *)text, strlen(text));
    if (strlen(b64) >= STATE_ENCODED_MAX) {
        free(b64);
        return tg_err(err, "client_state: encoding too long");
    }
    strcpy(out, b64);
    free(b64);
    return 0;
}

void verifier_state_decode(const char *client_state, struct verifier_state *st)
{
    uint8_t raw[STATE_ENCODED_MAX];
    size_t n = 0;
    char text[STATE_ENCODED_MAX + 1];
    char *fields[4];

    memset(st, 0, sizeof *st);
    if (!client_state || strlen(client_state) >= STATE_ENCODED_MAX)
        return;
    if (tg_b64_decode(client_state, strlen(client_state), raw, sizeof raw, &n) != 0)
        return;
    if (n < strlen(STATE_PREFIX) || memcmp(raw, STATE_PREFIX, strlen(STATE_PREFIX)) != 0 ||
        memchr(raw, '\0', n))
        return;
    memcpy(text, raw + strlen(STATE_PREFIX), n - strlen(STATE_PREFIX));
    text[n - strlen(STATE_PREFIX)] = '\0';

    char *p = text;
    for (int i = 0; i < 4; i++) {
        fields[i] = p;
        char *bar = strchr(p, '|');
        if (i < 3) {
            if (!bar)
                return;
            *bar = '\0';
            p = bar + 1;
        } else if (bar)
            return;
    }

    enum state_phase phase = STATE_NONE;
    for (size_t i = 1; i < ARRAY_LEN(phase_names); i++)
        if (strcmp(fields[0], phase_names[i]) == 0)
            phase = (enum state_phase)i;
    if (phase == STATE_NONE)
        return;
    if (strcmp(fields[1], "v") == 0) {
        if (strcmp(fields[2], "-") != 0 || strcmp(fields[3], "-") != 0)
            return;
        st->verified = true;
    } else if (strcmp(fields[1], "r") == 0) {
        if (!reason_valid(fields[2]))
            return;
        if (strcmp(fields[3], "a") == 0)
            st->mode = REJECT_ANNOUNCE;
        else if (strcmp(fields[3], "b") == 0)
            st->mode = REJECT_BUSY;
        else
            return;
        snprintf(st->reason, sizeof st->reason, "%s", fields[2]);
    } else
        return;
    st->phase = phase;
}
