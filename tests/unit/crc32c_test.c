/*
 * crc32c_test.c - unit tests of CRC-32C (common/crc32c.c): the standard check
 * value, chaining, alignment independence and a bitwise reference.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <string.h>

#include "crc32c.h"

/* Bit-at-a-time reference implementation. */
static uint32_t crc_ref(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void test_check_value(void **state)
{
    (void)state;
    assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c(0, "", 0), 0);
    /* RFC 3720 B.4: 32 bytes of zeros and of 0xFF. */
    uint8_t buf[32];
    memset(buf, 0, sizeof buf);
    assert_int_equal(crc32c(0, buf, sizeof buf), 0x8A9136AAu);
    memset(buf, 0xFF, sizeof buf);
    assert_int_equal(crc32c(0, buf, sizeof buf), 0x62A8AB43u);
}

static void test_chaining_and_alignment(void **state)
{
    (void)state;
    uint8_t data[1031];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof data; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 9; off++) {
        for (size_t len = 0; len < 100; len += 7) {
            assert_int_equal(crc32c(0, data + off, len), crc_ref(data + off, len));
        }
    }
    uint32_t whole = crc32c(0, data, sizeof data);
    assert_int_equal(whole, crc_ref(data, sizeof data));
    for (size_t cut = 0; cut <= sizeof data; cut += 97) {
        uint32_t c = crc32c(crc32c(0, data, cut), data + cut, sizeof data - cut);
        assert_int_equal(c, whole);
    }
    data[500] ^= 1;
    assert_int_not_equal(crc32c(0, data, sizeof data), whole);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_chaining_and_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
