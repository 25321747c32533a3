/*
 * actuator_retry.h - the actuator's retry policy as pure functions: which
 * HTTP results are final, how long to wait before the next attempt
 * (exponential backoff with jitter, Retry-After on 429) and when to give up.
 * No clock and no randomness of its own: both are parameters.
 */
#ifndef ACTUATOR_RETRY_H
#define ACTUATOR_RETRY_H

#include <stdbool.h>
#include <stdint.h>

enum retry_class {
    RETRY_OK,       /* 2xx: done */
    RETRY_AGAIN,    /* 0 (timeout / connection error), 408, 429, 5xx: try again */
    RETRY_FAIL,     /* any other status: final (e.g. 422 "call has already ended") */
};

struct retry_policy {
    uint64_t initial_ms;    /* delay after the first failed attempt (>= 1) */
    uint64_t max_ms;        /* cap on any delay (>= initial_ms) */
    uint64_t give_up_ms;    /* no attempt starts later than this after the first */
};

/* Classify the HTTP status of one attempt (0 = no answer). */
enum retry_class actuator_retry_classify(long status);

/*
 * Delay before attempt n+1, after attempt n (n >= 1) failed with status.
 * Base d = min(initial_ms * 2^(n-1), max_ms); the result is drawn from
 * [d/2, d] using rnd (any 32-bit random value).  On 429 with
 * retry_after_s > 0, the delay is at least min(retry_after_s, RETRY_AFTER_MAX_S)
 * seconds, even above max_ms: the server asked for it.
 */
#define RETRY_AFTER_MAX_S 60
uint64_t actuator_retry_delay_ms(const struct retry_policy *p, unsigned attempt, long status,
                                 long retry_after_s, uint32_t rnd);

/* True when an attempt starting at next_ms would begin more than
 * give_up_ms after first_ms (times on any one clock, ms). */
bool actuator_retry_give_up(const struct retry_policy *p, uint64_t first_ms, uint64_t next_ms);

/* "ok", "retry" or "fail". */
const char *actuator_retry_class_name(enum retry_class c);

#endif
