/*
 * retry_test.c - unit tests for actuator/actuator_retry: classification
 * table, backoff bounds over many draws, Retry-After, give-up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "../../actuator/actuator_retry.h"

static void test_classify(void **state)
{
    (void)state;
    static const struct { long status; enum retry_class want; } table[] = {
        {200, RETRY_OK}, {201, RETRY_OK}, {204, RETRY_OK}, {299, RETRY_OK},
        {0, RETRY_AGAIN}, {408, RETRY_AGAIN}, {429, RETRY_AGAIN}, {500, RETRY_AGAIN},
        {502, RETRY_AGAIN}, {503, RETRY_AGAIN}, {504, RETRY_AGAIN}, {599, RETRY_AGAIN},
        {400, RETRY_FAIL}, {401, RETRY_FAIL}, {403, RETRY_FAIL}, {404, RETRY_FAIL},
        {409, RETRY_FAIL}, {422, RETRY_FAIL}, {499, RETRY_FAIL},
        {100, RETRY_FAIL}, {301, RETRY_FAIL}, {302, RETRY_FAIL}, {600, RETRY_FAIL}, {-1, RETRY_FAIL},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (actuator_retry_classify(table[i].status) != table[i].want)
            fail_msg("status %ld: got %s, want %s", table[i].status,
                     actuator_retry_class_name(actuator_retry_classify(table[i].status)),
                     actuator_retry_class_name(table[i].want));
}

static uint32_t rng_state = 2463534242u;
static uint32_t xorshift(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 200, .max_ms = 10000, .give_up_ms = 300000};
    for (unsigned attempt = 1; attempt <= 40; attempt++) {
        uint64_t d = 200;
        for (unsigned i = 1; i < attempt && d < 10000; i++)
            d *= 2;
        if (d > 10000)
            d = 10000;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int draw = 0; draw < 5000; draw++) {
            uint64_t x = actuator_retry_delay_ms(&p, attempt, 503, 0, xorshift());
            if (x < d / 2 || x > d)
                fail_msg("attempt %u: delay %llu outside [%llu, %llu]", attempt,
                         (unsigned long long)x, (unsigned long long)(d / 2), (unsigned long long)d);
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        /* Jitter really spreads over the range. */
        assert_true(lo < d / 2 + d / 10 + 1);
        assert_true(hi + d / 10 + 1 > d);
    }
    /* Extremes of the random value stay in range. */
    assert_int_equal(actuator_retry_delay_ms(&p, 1, 0, 0, 0), 100);
    assert_true(actuator_retry_delay_ms(&p, 1, 0, 0, UINT32_MAX) <= 200);
    assert_int_equal(actuator_retry_delay_ms(&p, 1000000, 0, 0, 0), 5000);
    /* Degenerate policy: never zero, never over the cap. */
    struct retry_policy tiny = {.initial_ms = 1, .max_ms = 1, .give_up_ms = 10};
    for (int i = 0; i < 100; i++) {
        uint64_t x = actuator_retry_delay_ms(&tiny, (unsigned)i + 1, 500, 0, xorshift());
        assert_true(x <= 1);
    }
}

static void test_retry_after(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 200, .max_ms = 10000, .give_up_ms = 300000};
    /* 429 with Retry-After: 3 -> at least 3000 ms */
    for (int i = 0; i < 1000; i++) {
        uint64_t x = actuator_retry_delay_ms(&p, 1, 429, 3, xorshift());
        assert_true(x >= 3000 && x <= 10000);
    }
    /* Retry-After above our own backoff cap is honoured, up to RETRY_AFTER_MAX_S. */
    struct retry_policy small = {.initial_ms = 20, .max_ms = 200, .give_up_ms = 300000};
    assert_int_equal(actuator_retry_delay_ms(&small, 1, 429, 1, 0), 1000);
    assert_int_equal(actuator_retry_delay_ms(&p, 1, 429, 3600, 0), RETRY_AFTER_MAX_S * 1000);
    assert_int_equal(actuator_retry_delay_ms(&p, 1, 429, 9223372036854775807L, 0), RETRY_AFTER_MAX_S * 1000);
    /* Retry-After is only for 429. */
    assert_true(actuator_retry_delay_ms(&p, 1, 503, 3, 0) <= 200);
    /* A larger backoff wins over a small Retry-After. */
    uint64_t x = actuator_retry_delay_ms(&p, 10, 429, 1, 0);
    assert_int_equal(x, 5000);
}

static void test_give_up(void **state)
{
    (void)state;
    struct retry_policy p = {.initial_ms = 200, .max_ms = 10000, .give_up_ms = 300000};
    assert_false(actuator_retry_give_up(&p, 1000, 1000));
    assert_false(actuator_retry_give_up(&p, 1000, 301000));
    assert_true(actuator_retry_give_up(&p, 1000, 301001));
    assert_false(actuator_retry_give_up(&p, 5000, 4000));   /* clock before first */

    /* Simulated schedule: attempts until give-up, count bounded. */
    uint64_t now = 0;
    unsigned attempts = 1;
    for (;;) {
        uint64_t d = actuator_retry_delay_ms(&p, attempts, 500, 0, xorshift());
        if (actuator_retry_give_up(&p, 0, now + d))
            break;
        now += d;
        attempts++;
        assert_true(attempts < 1000);
    }
    assert_true(now <= 300000);
    /* 300 s with delays capped at 10 s and at least 5 s: 30..70 attempts. */
    assert_true(attempts >= 30 && attempts <= 70);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_give_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
