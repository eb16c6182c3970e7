/* stream_table.c: streams and tombstones by (session key, user channel, stream id): XXH3,
 * open addressing with linear probing and backward-shift deletion (tunnel.h). */
#include "et/tunnel.h"

#include <stdlib.h>

#include <xxhash.h>

typedef struct entry {
    uint32_t sess, uc, sid;
    uint8_t state; /* 0 empty, ET_LOOKUP_LIVE, ET_LOOKUP_TOMBSTONE */
    et_stream *s;
    uint64_t expiry;
} entry;

struct et_stream_table {
    entry *slots; /* owned */
    size_t cap;   /* power of two */
    size_t used;
    size_t live;
};

static uint64_t key_hash(uint32_t sess, uint32_t uc, uint32_t sid)
{
    uint32_t k[3] = {sess, uc, sid};
    return XXH3_64bits(k, sizeof(k));
}

et_stream_table *et_stream_table_new(void)
{
    et_stream_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cap = 256;
    t->slots = calloc(t->cap, sizeof(entry));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

void et_stream_table_free(et_stream_table *t)
{
    if (t == NULL)
        return;
    free(t->slots);
    free(t);
}

static entry *find_slot(et_stream_table *t, uint32_t sess, uint32_t uc, uint32_t sid)
{
    size_t mask = t->cap - 1;
    for (size_t i = key_hash(sess, uc, sid) & mask;; i = (i + 1) & mask) {
        entry *e = &t->slots[i];
        if (e->state == 0 || (e->sess == sess && e->uc == uc && e->sid == sid))
            return e;
    }
}

static int grow(et_stream_table *t)
{
    entry *old = t->slots;
    size_t oldcap = t->cap;
    entry *slots = calloc(oldcap * 2, sizeof(entry));
    ET_ENSURE(slots != NULL, ET_E_NOMEM);
    t->slots = slots;
    t->cap = oldcap * 2;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].state != 0)
            *find_slot(t, old[i].sess, old[i].uc, old[i].sid) = old[i];
    free(old);
    return ET_OK;
}

et_lookup et_stream_table_find(et_stream_table *t, uint32_t sess, uint32_t uc, uint32_t sid,
                               et_stream **out)
{
    entry *e = find_slot(t, sess, uc, sid);
    if (out != NULL)
        *out = e->state == ET_LOOKUP_LIVE ? e->s : NULL;
    return (et_lookup)e->state;
}

static int upsert(et_stream_table *t, uint32_t sess, uint32_t uc, uint32_t sid, uint8_t state,
                  et_stream *s, uint64_t expiry)
{
    entry *e = find_slot(t, sess, uc, sid);
    if (e->state == 0) {
        /* Only a new key can need room: updating one in place (burying) never allocates. */
        if ((t->used + 1) * 10 > t->cap * 7) {
            ET_GUARD(grow(t));
            e = find_slot(t, sess, uc, sid);
        }
        t->used++;
    }
    if (e->state == ET_LOOKUP_LIVE)
        t->live--;
    if (state == ET_LOOKUP_LIVE)
        t->live++;
    *e = (entry){sess, uc, sid, state, s, expiry};
    return ET_OK;
}

int et_stream_table_put(et_stream_table *t, uint32_t sess, uint32_t uc, uint32_t sid, et_stream *s)
{
    return upsert(t, sess, uc, sid, ET_LOOKUP_LIVE, s, 0);
}

int et_stream_table_bury(et_stream_table *t, uint32_t sess, uint32_t uc, uint32_t sid,
                         uint64_t expiry)
{
    return upsert(t, sess, uc, sid, ET_LOOKUP_TOMBSTONE, NULL, expiry);
}

/* remove_at deletes slot |i| with backward-shift deletion (no deletion markers). */
static void remove_at(et_stream_table *t, size_t i)
{
    size_t mask = t->cap - 1;
    t->slots[i].state = 0;
    t->used--;
    for (size_t j = (i + 1) & mask; t->slots[j].state != 0; j = (j + 1) & mask) {
        entry e = t->slots[j];
        size_t home = key_hash(e.sess, e.uc, e.sid) & mask;
        /* e may move to the hole at i if its home is not in (i, j] cyclically */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slots[i] = e;
            t->slots[j].state = 0;
            i = j;
        }
    }
}

void et_stream_table_sweep(et_stream_table *t, uint64_t now)
{
    for (size_t i = 0; i < t->cap;) {
        entry *e = &t->slots[i];
        if (e->state == ET_LOOKUP_TOMBSTONE && e->expiry <= now)
            remove_at(t, i); /* a shifted entry now sits at i: look at it again */
        else
            i++;
    }
}

void et_stream_table_each(et_stream_table *t, void (*fn)(et_stream *s, void *arg), void *arg)
{
    /* Collect first: |fn| may bury entries (which can grow and rehash the table). */
    size_t n = 0, k = 0;
    for (size_t i = 0; i < t->cap; i++)
        n += t->slots[i].state == ET_LOOKUP_LIVE;
    if (n == 0)
        return;
    et_stream **list = malloc(n * sizeof(*list));
    if (list == NULL)
        abort();
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].state == ET_LOOKUP_LIVE)
            list[k++] = t->slots[i].s;
    for (size_t i = 0; i < k; i++)
        fn(list[i], arg);
    free(list);
}

size_t et_stream_table_count(const et_stream_table *t)
{
    return t->live;
}
