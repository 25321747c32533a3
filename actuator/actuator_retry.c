/*
 * actuator_retry.c - retry classification, backoff with full jitter and the
 * give-up rule (see actuator_retry.h).  Used by the actuator.
 */
#include "actuator_retry.h"

enum retry_class actuator_retry_classify(long status)
{
    if (status >= 200 && status <= 299)
        return RETRY_OK;
    if (status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599))
        return RETRY_AGAIN;
    return RETRY_FAIL;
}

uint64_t actuator_retry_delay_ms(const struct retry_policy *p, unsigned attempt, long status,
                                 long retry_after_s, uint32_t rnd)
{
    uint64_t cap = p->max_ms ? p->max_ms : 1;
    uint64_t d = p->initial_ms ? p->initial_ms : 1;
    for (unsigned i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    uint64_t lo = d / 2;
    uint64_t delay = lo + (uint64_t)rnd % (d - lo + 1);
    /* The server's Retry-After wins over our own backoff, bounded so that a
     * huge value cannot park a command for long (give-up still applies). */
    if (status == 429 && retry_after_s > 0) {
        uint64_t ra = (uint64_t)retry_after_s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S * 1000u
                                                                  : (uint64_t)retry_after_s * 1000u;
        if (delay < ra)
            delay = ra;
    }
    return delay;
}

bool actuator_retry_give_up(const struct retry_policy *p, uint64_t first_ms, uint64_t next_ms)
{
    return next_ms > first_ms && next_ms - first_ms > p->give_up_ms;
}

const char *actuator_retry_class_name(enum retry_class c)
{
    switch (c) {
    case RETRY_OK: return "ok";
    case RETRY_AGAIN: return "retry";
    case RETRY_FAIL: return "fail";
    }
    return "?";
}
