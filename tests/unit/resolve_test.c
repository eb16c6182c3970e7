/* resolve_test.c: the edge-by-name resolver of resolve.h.
 *
 * et_resolver_split's syntax (names, bracketed IPv6, ports, lengths), and the resolver's life:
 * a numeric host primed and picked, a pick of a name not looked up yet (ET_E_AGAIN, then an
 * address once the thread has looked it up), a failed dial asking for another lookup, the gap
 * between lookups, no thread until one is needed, and a resolver freed before its thread
 * starts, while it has a lookup to do and while it waits out the gap (the thread must end). Only
 * numeric hosts and "localhost" are looked up (no DNS server is needed). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#include "et/resolve.h"

static void test_split(void **state)
{
    (void)state;
    char host[ET_RESOLVE_HOST_MAX + 1];
    uint16_t port = 0;
    assert_int_equal(et_resolver_split("edge.example.com:7443", host, sizeof(host), &port), ET_OK);
    assert_string_equal(host, "edge.example.com");
    assert_int_equal(port, 7443);
    assert_int_equal(et_resolver_split("[fe80::1%eth0]:1", host, sizeof(host), &port), ET_OK);
    assert_string_equal(host, "fe80::1%eth0");
    assert_int_equal(port, 1);
    assert_int_equal(et_resolver_split("my_host-2:65535", host, sizeof(host), &port), ET_OK);
    assert_int_equal(port, 65535);

    const char *good[] = {"edge.example.com.:80", "[::1]:80", "a:1", "x1-2.y_z.example:443",
                          "[fe80::1%eth0.5]:7"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(et_resolver_split(good[i], host, sizeof(host), &port), ET_OK);

    /* 253 characters in labels of 63: the longest name; one more is too long. */
    char longest[ET_RESOLVE_HOST_MAX + 8];
    memset(longest, 'a', ET_RESOLVE_HOST_MAX);
    longest[63] = longest[127] = longest[191] = '.';
    snprintf(longest + ET_RESOLVE_HOST_MAX, 8, ":80");
    assert_int_equal(et_resolver_split(longest, host, sizeof(host), &port), ET_OK);
    assert_int_equal(strlen(host), ET_RESOLVE_HOST_MAX);
    char label64[80];
    memset(label64, 'b', 64);
    snprintf(label64 + 64, 16, ".example:80");

    char toolong[ET_RESOLVE_HOST_MAX + 8];
    memset(toolong, 'a', ET_RESOLVE_HOST_MAX + 1);
    snprintf(toolong + ET_RESOLVE_HOST_MAX + 1, 6, ":80");
    const char *bad[] = {"",
                         "edge",
                         ":80",
                         "edge:",
                         "edge:0",
                         "edge:65536",
                         "edge:123456",
                         "edge:8x",
                         "ed ge:80",
                         "ed/ge:80",
                         "[::1:80",
                         "[]:80",
                         "[a_b]:80",
                         "edge:+80",
                         "edge:-1",
                         toolong,
                         label64,
                         "[edge.example.com]:80",
                         "-a.example:80",
                         "a-.example:80",
                         "a..b:80",
                         ".a:80",
                         "300.1.1.1:80",
                         "1.2.3:80",
                         "a.b.:80.",
                         "[fe80::1%]:1",
                         "[fe80::1%e/0]:1",
                         "edge..:80",
                         "[1::2::3]:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        port = 7;
        assert_int_equal(et_resolver_split(bad[i], host, sizeof(host), &port), ET_E_CONFIG);
        assert_int_equal(port, 7); /* untouched */
    }
    char small[4];
    assert_int_equal(et_resolver_split("abcd:80", small, sizeof(small), &port), ET_E_CONFIG);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_prime_pick_failed(void **state)
{
    (void)state;
    et_resolver *r = et_resolver_new();
    assert_non_null(r);
    assert_int_equal(et_resolver_prime(r, "127.0.0.7", 9), ET_OK);
    assert_int_equal(et_resolver_threads(), 0); /* primed on this thread: none started */
    struct sockaddr_storage ss;
    socklen_t len = 0;
    assert_int_equal(et_resolver_pick(r, "127.0.0.7", 9, &ss, &len), ET_OK);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    assert_int_equal(in->sin_family, AF_INET);
    assert_int_equal(ntohs(in->sin_port), 9);
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000007u);

    /* A failed dial asks the thread for a new lookup (one address: the same one again). */
    uint64_t before = et_resolver_lookups(r);
    et_resolver_failed(r, "127.0.0.7", 9, &ss, len);
    for (int i = 0; i < 1000 && et_resolver_lookups(r) == before; i++)
        sleep_ms(10);
    assert_true(et_resolver_lookups(r) > before);
    assert_int_equal(et_resolver_threads(), 1);

    /* Lookups at least ET_RESOLVE_MIN_GAP_MS apart: one asked for right after the last one
     * waits (a slow machine only makes it wait longer), then happens. */
    before = et_resolver_lookups(r);
    et_resolver_failed(r, "127.0.0.7", 9, &ss, len);
    sleep_ms(ET_RESOLVE_MIN_GAP_MS / 4);
    assert_int_equal(et_resolver_lookups(r), before);
    for (int i = 0; i < 1000 && et_resolver_lookups(r) == before; i++)
        sleep_ms(10);
    assert_true(et_resolver_lookups(r) > before);
    assert_int_equal(et_resolver_pick(r, "127.0.0.7", 9, &ss, &len), ET_OK);
    assert_int_equal(ntohl(((const struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000007u);

    /* Another name: nothing known until the thread has looked it up; never a wait here. */
    int rv = et_resolver_pick(r, "127.0.0.8", 10, &ss, &len);
    for (int i = 0; i < 1000 && rv == ET_E_AGAIN; i++) {
        sleep_ms(10);
        rv = et_resolver_pick(r, "127.0.0.8", 10, &ss, &len);
    }
    assert_int_equal(rv, ET_OK);
    assert_int_equal(ntohl(((const struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000008u);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&ss)->sin_port), 10);

    /* Two names side by side (a reload that changed --edge while the old sockets redial):
     * neither forgets the other's addresses. */
    for (int k = 0; k < 3; k++) {
        assert_int_equal(et_resolver_pick(r, "127.0.0.7", 9, &ss, &len), ET_OK);
        assert_int_equal(ntohl(((const struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000007u);
        assert_int_equal(et_resolver_pick(r, "127.0.0.8", 10, &ss, &len), ET_OK);
        assert_int_equal(ntohl(((const struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000008u);
    }
    /* A report for a name it does not know changes nothing. */
    et_resolver_failed(r, "127.0.0.99", 9, &ss, len);
    assert_int_equal(et_resolver_pick(r, "127.0.0.8", 10, &ss, &len), ET_OK);
    et_resolver_free(r);
    for (int i = 0; i < 1000 && et_resolver_threads() > 0; i++)
        sleep_ms(10);
    assert_int_equal(et_resolver_threads(), 0); /* the thread ended (and freed it) */
}

static void test_free_with_work_pending(void **state)
{
    (void)state;
    /* Freed at once, freed right after asking for a lookup: ASan/TSan check the thread's end. */
    et_resolver_free(et_resolver_new());
    et_resolver *r = et_resolver_new();
    assert_non_null(r);
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(et_resolver_pick(r, "localhost", 80, &ss, &len), ET_E_AGAIN);
    et_resolver_free(r);
    et_resolver_free(NULL);
    for (int i = 0; i < 1000 && et_resolver_threads() > 0; i++)
        sleep_ms(10);
    assert_int_equal(et_resolver_threads(), 0);

    /* Freed while the thread waits out the gap between two lookups. */
    r = et_resolver_new();
    assert_non_null(r);
    assert_int_equal(et_resolver_pick(r, "127.0.0.5", 80, &ss, &len), ET_E_AGAIN);
    for (int i = 0; i < 1000 && et_resolver_lookups(r) == 0; i++)
        sleep_ms(10);
    assert_int_equal(et_resolver_pick(r, "127.0.0.5", 80, &ss, &len), ET_OK);
    et_resolver_failed(r, "127.0.0.5", 80, &ss, len); /* the thread now waits for the gap */
    sleep_ms(50);
    et_resolver_free(r);
    for (int i = 0; i < 1000 && et_resolver_threads() > 0; i++)
        sleep_ms(10);
    assert_int_equal(et_resolver_threads(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_prime_pick_failed),
        cmocka_unit_test(test_free_with_work_pending),
    };
    return TU_RUN("resolve", tests);
}
