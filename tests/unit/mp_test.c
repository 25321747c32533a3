/*
 * mp_test.c - unit tests for common/mp.c's mp_unpack_exact: every msgpack
 * type is accepted, and headers that declare more than the buffer holds are
 * refused before msgpack-c allocates for them (under ASan an allocation of
 * ~100 GB aborts the test, as it once did in cert_test with a tampered token).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mp.h"

/* One object with every type msgpack-c packs, strings and bins of each
 * length class, arrays and maps of 16-bit counts. */
static void pack_everything(msgpack_sbuffer *sb)
{
    static char text[70000];
    msgpack_packer pk;
    memset(text, 'x', sizeof text);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 20);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    msgpack_pack_int64(&pk, -1);
    msgpack_pack_int64(&pk, -200);
    msgpack_pack_int64(&pk, -40000);
    msgpack_pack_int64(&pk, -3000000000LL);
    msgpack_pack_uint64(&pk, 200);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_float(&pk, 1.5f);
    msgpack_pack_double(&pk, 2.5);
    msgpack_pack_str_with_body(&pk, text, 31);
    msgpack_pack_str_with_body(&pk, text, 200);
    msgpack_pack_str_with_body(&pk, text, 300);
    msgpack_pack_str_with_body(&pk, text, sizeof text);
    msgpack_pack_bin_with_body(&pk, text, 10);
    msgpack_pack_bin_with_body(&pk, text, 70000);
    msgpack_pack_ext_with_body(&pk, text, 4, 7);      /* fixext 4 */
    msgpack_pack_ext_with_body(&pk, text, 5, 7);      /* ext 8 */
    msgpack_pack_map(&pk, 20);
    for (int i = 0; i < 20; i++) {
        msgpack_pack_int(&pk, i);
        msgpack_pack_array(&pk, 0);
    }
}

static void test_every_type_accepted(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    char err[ERR_LEN];
    msgpack_sbuffer_init(&sb);
    pack_everything(&sb);
    assert_int_equal(mp_unpack_exact(sb.data, sb.size, &up, err), 0);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(up.data.via.array.size, 20);
    msgpack_unpacked_destroy(&up);
    /* Every cut short of the end is refused. */
    for (size_t cut = 0; cut < sb.size; cut += cut < 64 ? 1 : 997)
        assert_int_equal(mp_unpack_exact(sb.data, cut, &up, err), -1);
    msgpack_sbuffer_destroy(&sb);
}

static void test_declared_sizes_beyond_the_buffer(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
    } hostile[] = {
        {"\xdd\xff\xff\xff\xff\x01\x02", 7},          /* array 32 of 4 G elements */
        {"\xdf\x7f\xff\xff\xff\x01\x02", 7},          /* map 32 */
        {"\xdc\xff\xff\x01", 4},                      /* array 16 */
        {"\xde\x00\x03\x01\x02\x03\x04\x05", 8},      /* map 16 of 3 pairs, 5 bytes */
        {"\xdb\xff\xff\xff\xff" "abc", 8},            /* str 32 */
        {"\xc6\x00\x10\x00\x00" "abc", 8},            /* bin 32 */
        {"\xc9\x7f\xff\xff\xff\x01" "ab", 8},         /* ext 32 */
        {"\x91\xdd\xff\xff\xff\xff", 6},              /* nested */
        {"\x93\x01\x02", 3},                          /* fixarray, one element short */
        {"\xc1", 1},                                  /* never used */
    };
    msgpack_unpacked up;
    char err[ERR_LEN];
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        assert_int_equal(mp_unpack_exact(hostile[i].bytes, hostile[i].len, &up, err), -1);
        assert_non_null(strstr(err, "not a complete msgpack object"));
    }
    /* What fits is still read, and trailing bytes are still reported. */
    assert_int_equal(mp_unpack_exact("\x92\x01\xa1x", 4, &up, err), 0);
    msgpack_unpacked_destroy(&up);
    assert_int_equal(mp_unpack_exact("\x92\x01\xa1xZ", 5, &up, err), -1);
    assert_non_null(strstr(err, "trailing"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_accepted),
        cmocka_unit_test(test_declared_sizes_beyond_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
