/* stream_table_test.c: the per-worker stream table: live entries, tombstones, sweeping,
 * growth and backward-shift deletion under heavy churn, checked against a simple model. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "et/tunnel.h"

/* Fake stream pointers: the table never dereferences them. */
static et_stream *fake(uintptr_t i)
{
    return (et_stream *)(i * 16 + 16);
}

static void test_put_find_bury(void **state)
{
    et_stream_table *t = et_stream_table_new();
    assert_non_null(t);
    et_stream *s = NULL;
    assert_int_equal(et_stream_table_find(t, 1, 7, 1, &s), ET_LOOKUP_NONE);
    assert_null(s);
    assert_int_equal(et_stream_table_put(t, 1, 7, 1, fake(1)), ET_OK);
    assert_int_equal(et_stream_table_find(t, 1, 7, 1, &s), ET_LOOKUP_LIVE);
    assert_ptr_equal(s, fake(1));
    /* the key is the whole triple: another session or stream id is another entry */
    assert_int_equal(et_stream_table_find(t, 2, 7, 1, &s), ET_LOOKUP_NONE);
    assert_int_equal(et_stream_table_find(t, 1, 7, 2, &s), ET_LOOKUP_NONE);
    assert_int_equal(et_stream_table_count(t), 1);
    assert_int_equal(et_stream_table_bury(t, 1, 7, 1, 100), ET_OK);
    assert_int_equal(et_stream_table_find(t, 1, 7, 1, &s), ET_LOOKUP_TOMBSTONE);
    assert_null(s);
    assert_int_equal(et_stream_table_count(t), 0);
    /* a tombstone for a key never seen (a CANCEL that overtook its OPEN) */
    assert_int_equal(et_stream_table_bury(t, 1, 8, 1, 200), ET_OK);
    et_stream_table_sweep(t, 150); /* the first expired, the second not yet */
    assert_int_equal(et_stream_table_find(t, 1, 7, 1, NULL), ET_LOOKUP_NONE);
    assert_int_equal(et_stream_table_find(t, 1, 8, 1, NULL), ET_LOOKUP_TOMBSTONE);
    et_stream_table_sweep(t, 200);
    assert_int_equal(et_stream_table_find(t, 1, 8, 1, NULL), ET_LOOKUP_NONE);
    et_stream_table_free(t);
    et_stream_table_free(NULL);
}

typedef struct model_entry {
    uint8_t state; /* 0 none, 1 live, 2 tombstone */
    uint64_t expiry;
} model_entry;

static void count_each(et_stream *s, void *arg)
{
    (*(size_t *)arg)++;
}

/* Random churn over 20,000 keys (forcing growth and many deletion shifts), checked after every
 * sweep against a model. */
static void test_churn_against_model(void **state)
{
    enum { KEYS = 20000, OPS = 400000 };
    model_entry *m = calloc(KEYS, sizeof(*m));
    et_stream_table *t = et_stream_table_new();
    assert_non_null(m);
    assert_non_null(t);
    srand(12345);
    uint64_t now = 0;
    for (int op = 0; op < OPS; op++) {
        uint32_t k = (uint32_t)rand() % KEYS;
        uint32_t sess = k % 7 + 1, uc = k / 7 + 1, sid = 1;
        switch (rand() % 4) {
        case 0:
        case 1:
            assert_int_equal(et_stream_table_put(t, sess, uc, sid, fake(k)), ET_OK);
            m[k].state = 1;
            break;
        case 2:
            assert_int_equal(et_stream_table_bury(t, sess, uc, sid, now + 50), ET_OK);
            m[k] = (model_entry){2, now + 50};
            break;
        default: {
            et_stream *s = NULL;
            et_lookup l = et_stream_table_find(t, sess, uc, sid, &s);
            assert_int_equal(l, m[k].state);
            if (l == ET_LOOKUP_LIVE)
                assert_ptr_equal(s, fake(k));
            break;
        }
        }
        if (op % 997 == 0) {
            now += 20;
            et_stream_table_sweep(t, now);
            size_t live = 0;
            for (uint32_t i = 0; i < KEYS; i++) {
                if (m[i].state == 2 && m[i].expiry <= now)
                    m[i].state = 0;
                live += m[i].state == 1;
            }
            assert_int_equal(et_stream_table_count(t), live);
        }
    }
    for (uint32_t k = 0; k < KEYS; k++)
        assert_int_equal(et_stream_table_find(t, k % 7 + 1, k / 7 + 1, 1, NULL), m[k].state);
    size_t seen = 0, live = 0;
    et_stream_table_each(t, count_each, &seen);
    for (uint32_t k = 0; k < KEYS; k++)
        live += m[k].state == 1;
    assert_int_equal(seen, live);
    et_stream_table_free(t);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_find_bury),
        cmocka_unit_test(test_churn_against_model),
    };
    return TU_RUN("stream_table", tests);
}
