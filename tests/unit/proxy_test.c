/* proxy_test.c: PROXY v2 headers byte for byte (the layout of the PROXY protocol
 * specification, section 2.2), mixed families, and small buffers. */
#include "testutil.h"

#include <string.h>

#include "et/proxy.h"

static void test_ipv4(void **state)
{
    et_addr c = {4, {203, 0, 113, 7}, 51234}, s = {4, {192, 0, 2, 1}, 8080};
    uint8_t out[ET_PROXY_V2_MAX];
    uint8_t want[64];
    int n = tu_unhex("0d0a0d0a000d0a515549540a"     /* signature */
                     "21 11 000c"                   /* v2 PROXY, TCP4, 12 bytes */
                     "cb007107 c0000201 c822 1f90", /* src, dst, ports */
                     want, sizeof(want));
    assert_int_equal(n, 28);
    assert_int_equal(et_proxy_v2_encode(&c, &s, out, sizeof(out)), 28);
    assert_memory_equal(out, want, 28);
}

static void test_ipv6_and_mixed(void **state)
{
    et_addr c = {6, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 40000};
    et_addr s = {4, {127, 0, 0, 1}, 443};
    uint8_t out[ET_PROXY_V2_MAX];
    uint8_t want[64];
    int n = tu_unhex("0d0a0d0a000d0a515549540a 21 21 0024"
                     "20010db8000000000000000000000001"
                     "00000000000000000000ffff7f000001"
                     "9c40 01bb",
                     want, sizeof(want));
    assert_int_equal(n, 52);
    assert_int_equal(et_proxy_v2_encode(&c, &s, out, sizeof(out)), 52);
    assert_memory_equal(out, want, 52);
}

static void test_errors(void **state)
{
    et_addr c = {4, {1, 2, 3, 4}, 1}, s = {4, {5, 6, 7, 8}, 2}, bad = {5, {0}, 0};
    uint8_t out[ET_PROXY_V2_MAX];
    assert_int_equal(et_proxy_v2_encode(&c, &s, out, 27), ET_E_USAGE);
    assert_int_equal(et_proxy_v2_encode(&bad, &s, out, sizeof(out)), ET_E_USAGE);
    assert_int_equal(et_proxy_v2_encode(&c, &bad, out, sizeof(out)), ET_E_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6_and_mixed),
        cmocka_unit_test(test_errors),
    };
    return TU_RUN("proxy", tests);
}
