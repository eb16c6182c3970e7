/* engine.c: workers, counters, sessions, the per-worker stream table and cancel delivery across
 * workers (tunnel.h). */
#include "et/tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/ssl.h>
#include <xxhash.h>

#include "et/logf.h"
#include "et/tls.h"

static _Thread_local et_worker *tl_worker;

unsigned et_stat_slot(uint16_t code)
{
    unsigned slot = (unsigned)(code >> 8) * 16u + (code & 15u);
    return slot < ET_STAT_REASONS ? slot : ET_STAT_REASONS - 1;
}

et_worker *et_worker_current(et_engine *eng)
{
    et_worker *w = tl_worker;
    return w != NULL && w->eng == eng ? w : NULL;
}

static void sweep_fire(et_reactor *r, et_timer *t)
{
    et_worker *w = ET_CONTAINER_OF(t, et_worker, sweep);
    uint64_t now = et_reactor_now(r);
    et_stream_table_sweep(w->streams, now);
    if (et_timer_arm(r, t, now + 1000000000ull) < 0)
        et_logf(ET_LOG_ERROR, "timer_failed", "worker=%u", w->index);
}

static void worker_hello(et_reactor *r, void *arg)
{
    tl_worker = arg;
    et_worker *w = arg;
    if (et_timer_arm(r, &w->sweep, et_reactor_now(r) + 1000000000ull) < 0)
        et_logf(ET_LOG_ERROR, "timer_failed", "worker=%u", w->index);
}

int et_engine_init(et_engine *eng, et_side side, const et_side_ops *ops, SSL_CTX *ctx,
                   unsigned nworkers)
{
    memset(eng, 0, sizeof(*eng));
    eng->ssl_ctx = ctx;
    ET_ENSURE(nworkers >= 1 && nworkers <= ET_MAX_WORKERS, ET_E_USAGE);
    eng->side = side;
    eng->ops = ops;
    atomic_init(&eng->next_socket_id, 1);
    atomic_init(&eng->next_session_key, 1);
    for (unsigned i = 0; i < nworkers; i++) {
        et_worker *w = &eng->workers[i];
        w->eng = eng;
        w->index = i;
        eng->nworkers = i + 1;
        ET_GUARD(et_reactor_new(&w->r, 0, 0));
        w->streams = et_stream_table_new();
        ET_ENSURE(w->streams != NULL, ET_E_NOMEM);
        et_timer_init(&w->sweep, sweep_fire);
    }
    return ET_OK;
}

int et_engine_start(et_engine *eng)
{
    for (unsigned i = 0; i < eng->nworkers; i++) {
        et_worker *w = &eng->workers[i];
        ET_GUARD(et_reactor_post(w->r, worker_hello, w));
        ET_GUARD(et_reactor_start_thread(w->r));
    }
    return ET_OK;
}

void et_engine_stop(et_engine *eng)
{
    atomic_store(&eng->stopping, true);
    for (unsigned i = 0; i < eng->nworkers; i++)
        et_reactor_stop(eng->workers[i].r);
    for (unsigned i = 0; i < eng->nworkers; i++) {
        if (eng->workers[i].r != NULL && et_reactor_join(eng->workers[i].r) < 0)
            et_logf(ET_LOG_WARN, "join_failed", "worker=%u", i);
    }
}

static void cleanup_stream(et_stream *s, void *arg)
{
    (void)arg;
    (void)et_stream_reset(s);
}

void et_engine_cleanup(et_engine *eng)
{
    for (unsigned i = 0; i < eng->nworkers; i++) {
        et_worker *w = &eng->workers[i];
        if (w->r == NULL)
            continue;
        /* Quiescent: no thread runs the reactor, so closing here is like closing on it. */
        if (w->streams != NULL)
            et_stream_table_each(w->streams, cleanup_stream, NULL);
        while (w->tsocks != NULL)
            et_tsock_close(w->tsocks, 0, "shutdown");
        /* Run the deferred frees queued by the closes above. */
        for (int k = 0; k < 4; k++)
            if (et_reactor_run_once(w->r, 0) < 0)
                break;
        et_timer_cancel(w->r, &w->sweep);
    }
    for (unsigned i = 0; i < eng->nworkers; i++) {
        et_worker *w = &eng->workers[i];
        et_reactor_free(w->r);
        w->r = NULL;
        et_stream_table_free(w->streams);
        w->streams = NULL;
    }
    SSL_CTX_free(eng->ssl_ctx);
    eng->ssl_ctx = NULL;
}

static const char *reason_name(unsigned slot)
{
    uint16_t code = (uint16_t)(((slot / 16u) << 8) | (slot % 16u));
    return et_wire_error_name(code);
}

void et_engine_log_stats(et_engine *eng)
{
    et_stats *s = &eng->stats;
    char extra[2048];
    size_t n = 0;
    extra[0] = '\0';
    for (unsigned i = 0; i < ET_STAT_REASONS; i++) {
        uint64_t hr = atomic_load(&s->handshake_refused[i]);
        uint64_t fe = atomic_load(&s->frame_errors[i]);
        if (hr && n < sizeof(extra))
            n += (size_t)snprintf(extra + n, sizeof(extra) - n, " handshake_refused_%s=%llu",
                                  reason_name(i), (unsigned long long)hr);
        if (fe && n < sizeof(extra))
            n += (size_t)snprintf(extra + n, sizeof(extra) - n, " frame_errors_%s=%llu",
                                  reason_name(i), (unsigned long long)fe);
    }
#define V(f) (unsigned long long)atomic_load(&s->f)
    et_logf(ET_LOG_INFO, "stats",
            "sockets_up=%llu sockets_down=%llu streams_opened=%llu streams_finished=%llu "
            "streams_cancelled=%llu bytes_to_peer=%llu bytes_from_peer=%llu "
            "cancels_sent_control=%llu cancels_sent_data=%llu cancels_recv_control=%llu "
            "cancels_recv_data=%llu cancel_acks=%llu late_frames_dropped=%llu "
            "opens_refused_tombstone=%llu public_refused=%llu inbox_full=%llu "
            "handshake_refused_tls=%llu%s",
            V(sockets_up), V(sockets_down), V(streams_opened), V(streams_finished),
            V(streams_cancelled), V(bytes_to_peer), V(bytes_from_peer), V(cancels_sent_control),
            V(cancels_sent_data), V(cancels_recv_control), V(cancels_recv_data), V(cancel_acks),
            V(late_frames_dropped), V(opens_refused_tombstone), V(public_refused), V(inbox_full),
            V(handshake_refused_tls), extra);
#undef V
}

void et_session_hex(const uint8_t id[ET_SESSION_ID_LEN], char out[2 * ET_SESSION_ID_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < ET_SESSION_ID_LEN; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * ET_SESSION_ID_LEN] = '\0';
}

void et_addr_format(const struct sockaddr *sa, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
        snprintf(buf, n, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
        snprintf(buf, n, "[%s]:%u", ip, port);
    } else {
        snprintf(buf, n, "?");
    }
}

/* --- sessions --------------------------------------------------------------------------- */

et_session *et_session_new(et_engine *eng, const uint8_t id[ET_SESSION_ID_LEN])
{
    et_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    memcpy(s->id, id, ET_SESSION_ID_LEN);
    s->key = atomic_fetch_add(&eng->next_session_key, 1);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void et_session_ref(et_session *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void et_session_unref(et_session *s, void (*free_side)(void *))
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (free_side != NULL && s->side != NULL)
        free_side(s->side);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int et_session_attach(et_session *s, et_tsock *ts)
{
    et_tsock *old = NULL;
    int rv = ET_OK;
    pthread_mutex_lock(&s->mu);
    if (ts->role == ET_ROLE_CONTROL) {
        old = s->ctrl;
        s->ctrl = ts;
        et_tsock_ref(ts);
    } else if (s->ndata < ET_MAX_DATA_SOCKS) {
        s->data[s->ndata++].ts = ts;
        et_tsock_ref(ts);
    } else {
        rv = ET_E_PROTO(ET_WE_LIMIT_SOCKETS);
    }
    pthread_mutex_unlock(&s->mu);
    if (old != NULL)
        et_tsock_unref(old); /* the replaced control socket closes on its own worker */
    return rv;
}

void et_session_detach(et_session *s, et_tsock *ts)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    if (s->ctrl == ts) {
        s->ctrl = NULL;
        found = true;
    }
    for (unsigned i = 0; i < s->ndata; i++) {
        if (s->data[i].ts == ts) {
            s->data[i] = s->data[--s->ndata];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (found)
        et_tsock_unref(ts);
}

et_tsock *et_session_pick_data(et_session *s)
{
    et_tsock *pick = NULL;
    pthread_mutex_lock(&s->mu);
    for (unsigned k = 0; k < s->ndata && pick == NULL; k++) {
        et_tsock *ts = s->data[s->rr++ % s->ndata].ts;
        /* Reading state here is a hint only (it belongs to the socket's worker); the worker
         * checks again when the handed-over connection arrives. */
        if (atomic_load_explicit(&ts->state, memory_order_relaxed) == ET_TS_READY) {
            pick = ts;
            et_tsock_ref(ts);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return pick;
}

/* --- stream table ----------------------------------------------------------------------- */

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
    if ((t->used + 1) * 10 > t->cap * 7)
        ET_GUARD(grow(t));
    entry *e = find_slot(t, sess, uc, sid);
    if (e->state == 0)
        t->used++;
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

/* --- cancel delivery -------------------------------------------------------------------- */

typedef struct cancel_job {
    _Atomic int remaining; /* workers still to answer */
    _Atomic int found;     /* bit 0: a live stream was reset; bit 1: it had finished */
    _Atomic uint64_t dropped;
    et_tsock *reply; /* one reference: where the CANCEL_ACK goes */
    uint32_t sess_key, uc, sid;
    uint8_t flags;
    uint16_t reason;
    uint64_t echo_ns, recv_ns;
} cancel_job;

static void ack_send(et_reactor *r, void *arg)
{
    cancel_job *job = arg;
    et_tsock *ts = job->reply;
    int found = atomic_load(&job->found);
    if (ts->state != ET_TS_CLOSED) {
        uint64_t handle = et_now_ns() - job->recv_ns;
        et_frame h = {0, job->uc, job->sid, ET_A_CANCEL_ACK, job->flags, NULL};
        et_msg m = {.cancel_ack = {found & 1   ? ET_CO_RESET
                                   : found & 2 ? ET_CO_FINISHED
                                               : ET_CO_UNKNOWN,
                                   job->echo_ns,
                                   handle > UINT32_MAX ? UINT32_MAX : (uint32_t)handle,
                                   atomic_load(&job->dropped)}};
        if (et_tsock_queue(ts, &h, &m) == ET_OK)
            et_tsock_flush(ts);
    }
    et_tsock_unref(ts);
    free(job);
}

typedef struct chan_ctx {
    cancel_job *job;
    et_worker *w;
} chan_ctx;

static void reset_one(cancel_job *job, et_stream *s)
{
    uint64_t dropped = et_stream_reset(s);
    atomic_fetch_add(&job->dropped, dropped);
    atomic_fetch_or(&job->found, 1);
    uint64_t handle = et_now_ns() - job->recv_ns;
    et_logf(ET_LOG_INFO, "stream_cancel",
            "uc=%u sid=%u reason=%u handle_ns=%llu dropped=%llu path=%s", job->uc, s->sid,
            job->reason, (unsigned long long)handle, (unsigned long long)dropped,
            job->reply->role == ET_ROLE_CONTROL ? "control" : "data");
}

static void chan_each(et_stream *s, void *arg)
{
    chan_ctx *c = arg;
    if (s->sess->key == c->job->sess_key && s->uc == c->job->uc)
        reset_one(c->job, s);
}

static void cancel_on_worker(et_reactor *r, void *arg)
{
    cancel_job *job = arg;
    et_worker *w = tl_worker;
    if (job->flags & ET_F_CANCEL_CHANNEL) {
        chan_ctx c = {job, w};
        et_stream_table_each(w->streams, chan_each, &c);
    } else {
        et_stream *s = NULL;
        switch (et_stream_table_find(w->streams, job->sess_key, job->uc, job->sid, &s)) {
        case ET_LOOKUP_LIVE: reset_one(job, s); break;
        case ET_LOOKUP_TOMBSTONE: atomic_fetch_or(&job->found, 2); break;
        case ET_LOOKUP_NONE:
        default:
            /* The CANCEL overtook its OPEN (or the stream lives on another worker): a
             * tombstone makes a late OPEN here fail at once. */
            if (et_stream_table_bury(w->streams, job->sess_key, job->uc, job->sid,
                                     et_reactor_now(r) + ET_TOMBSTONE_NS) < 0)
                et_logf(ET_LOG_ERROR, "tombstone_failed", "uc=%u", job->uc);
            break;
        }
    }
    if (atomic_fetch_sub(&job->remaining, 1) != 1)
        return;
    et_worker *rw = job->reply->w;
    if (rw == w)
        ack_send(r, job);
    else if (et_reactor_post(rw->r, ack_send, job) < 0) {
        ET_COUNT(w->eng->stats.inbox_full);
        et_tsock_unref(job->reply);
        free(job);
    }
}

void et_cancel_received(et_tsock *ts, const et_frame *f, const et_cancel *c)
{
    et_engine *eng = ts->w->eng;
    if (ts->role == ET_ROLE_CONTROL)
        ET_COUNT(eng->stats.cancels_recv_control);
    else
        ET_COUNT(eng->stats.cancels_recv_data);
    cancel_job *job = calloc(1, sizeof(*job));
    if (job == NULL || ts->sess == NULL) {
        free(job);
        return;
    }
    atomic_init(&job->remaining, (int)eng->nworkers);
    job->reply = ts;
    et_tsock_ref(ts);
    job->sess_key = ts->sess->key;
    job->uc = f->user_channel;
    job->sid = f->stream_id;
    job->flags = f->flags;
    job->reason = c->reason;
    job->echo_ns = c->sent_ns;
    job->recv_ns = et_now_ns();
    /* Other workers first, so they work in parallel with this one. */
    for (unsigned i = 0; i < eng->nworkers; i++) {
        et_worker *w = &eng->workers[i];
        if (w == ts->w)
            continue;
        if (et_reactor_post(w->r, cancel_on_worker, job) < 0) {
            /* Cannot reach that worker: count it as answered so the ack still goes out. */
            ET_COUNT(eng->stats.inbox_full);
            atomic_fetch_sub(&job->remaining, 1);
        }
    }
    cancel_on_worker(ts->w->r, job);
}
