/* testutil.c: guard-page buffers, hex decoding and the cmocka runner for unit tests. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t guarded_span(size_t n)
{
    size_t pg = page_size();
    return ((n + pg - 1) / pg + 1) * pg;
}

uint8_t *tu_guarded(const void *p, size_t n)
{
    size_t span = guarded_span(n);
    uint8_t *base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        abort();
    if (mprotect(base + span - page_size(), page_size(), PROT_NONE) != 0)
        abort();
    uint8_t *g = base + span - page_size() - n;
    if (n > 0)
        memcpy(g, p, n);
    return g;
}

void tu_guarded_free(uint8_t *g, size_t n)
{
    size_t span = guarded_span(n);
    uint8_t *base = g + n + page_size() - span;
    munmap(base, span);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tu_unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (const char *s = hex; *s; s++) {
        if (*s == ' ' || *s == '|' || *s == '\t' || *s == '\n')
            continue;
        int v = hexval(*s);
        if (v < 0)
            return -1;
        if (hi < 0) {
            hi = v;
            continue;
        }
        if (n >= cap)
            return -1;
        out[n++] = (uint8_t)(hi << 4 | v);
        hi = -1;
    }
    return hi < 0 ? (int)n : -1;
}

int tu_run(const char *group, const struct CMUnitTest *tests, size_t count)
{
    const char *filter = getenv("TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return _cmocka_run_group_tests(group, tests, count, NULL, NULL);
}
