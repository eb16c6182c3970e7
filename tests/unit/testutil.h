/* testutil.h: helpers shared by the unit-test programs. */
#ifndef ET_TESTUTIL_H
#define ET_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* tu_guarded returns a copy of |n| bytes of |p| placed so that the byte after the last one is the
 * first byte of an inaccessible page: any over-read faults. Free with tu_guarded_free. */
uint8_t *tu_guarded(const void *p, size_t n);
void tu_guarded_free(uint8_t *g, size_t n);

/* tu_unhex decodes hex text (spaces and '|' ignored) into |out| (cap bytes); returns the byte
 * count or -1 on bad input. */
int tu_unhex(const char *hex, uint8_t *out, size_t cap);

/* tu_run runs |tests| under cmocka with the name filter of $TEST_FILTER, if set. */
int tu_run(const char *group, const struct CMUnitTest *tests, size_t count);
#define TU_RUN(group, tests) tu_run((group), (tests), sizeof(tests) / sizeof((tests)[0]))

#endif
