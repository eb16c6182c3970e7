/* stream.c: one stream: its local TCP connection, credit windows, END as half-close, cancel
 * (tunnel.h). */
#include "et/tunnel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "et/logf.h"
#include "et/http_head.h"
#include "et/tls.h"

#include "tunnel_internal.h"

/* Received DATA that the local socket could not take yet. */
#define CHUNK_MIN 16384 /* small DATA frames share chunks: memory stays near the window */

struct et_chunk {
    et_chunk *next;
    size_t cap, len, off;
    bool local; /* written by us (a PROXY header), not received: no credit to return */
    uint8_t data[];
};

static void stream_on_event(et_reactor *r, et_io *io, uint32_t events);
static bool enqueue(et_stream *s, const uint8_t *p, size_t n);

static void free_task_fn(et_reactor *r, et_task *t)
{
    free(ET_CONTAINER_OF(t, et_stream, free_task));
}

static uint16_t gone_reason(const et_stream *s)
{
    return s->w->eng->side == ET_SIDE_EDGE ? ET_CR_CLIENT_GONE : ET_CR_ORIGIN_GONE;
}

static void origin_timeout_fire(et_reactor *r, et_timer *t)
{
    et_stream *s = ET_CONTAINER_OF(t, et_stream, origin_timer);
    if (atomic_load_explicit(&s->resp_started, memory_order_relaxed))
        return;
    /* The origin cannot answer before it has the request: an upload still flowing is not a
     * silent origin. Count from the last byte sent. */
    uint64_t due = s->last_sent_ns + s->origin_timeout_ns;
    if (due > et_reactor_now(r) && et_timer_arm(r, t, due) == ET_OK)
        return;
    s->answer_status = 504;
    et_stream_cancel(s, ET_CR_ORIGIN_TIMEOUT);
}

int et_stream_open(et_tsock *ts, uint32_t uc, uint32_t sid, uint8_t kind, et_stream **out)
{
    *out = NULL;
    et_engine *eng = ts->w->eng;
    uint32_t open = atomic_fetch_add(&ts->sess->nstreams, 1);
    uint32_t max = atomic_load_explicit(&eng->max_streams, memory_order_relaxed);
    if (max != 0 && open >= max) {
        atomic_fetch_sub(&ts->sess->nstreams, 1);
        ET_COUNT(eng->stats.limit_streams);
        return ET_E_LIMIT;
    }
    et_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        atomic_fetch_sub(&ts->sess->nstreams, 1);
        return ET_RAISE(ET_E_NOMEM);
    }
    s->client_slot = -1;
    s->w = ts->w;
    s->ts = ts;
    s->sess = ts->sess;
    s->fd = -1;
    s->uc = uc;
    s->sid = sid;
    s->kind = kind;
    et_timer_init(&s->origin_timer, origin_timeout_fire);
    s->recv_window = s->recv_limit = ET_WINDOW_DEFAULT;
    s->opened_ns = s->last_sent_ns = s->last_recv_ns = et_reactor_now(ts->w->r);
    s->window_ns = s->opened_ns;
    atomic_init(&s->rq_bytes, 0);
    et_io_init(&s->io, stream_on_event);
    et_task_init(&s->free_task, free_task_fn);
    int rv = et_registry_open(s);
    if (rv == ET_OK && et_stream_table_put(ts->w->streams, ts->sess->key, uc, sid, s) < 0) {
        et_registry_close(s);
        rv = ET_E_NOMEM;
    }
    if (rv < 0) {
        if (rv == ET_E_CLOSED) {
            /* cancelled before it opened: its late frames are dropped, not errors */
            if (et_stream_table_bury(ts->w->streams, ts->sess->key, uc, sid,
                                     et_reactor_now(ts->w->r) + ET_TOMBSTONE_NS) < 0)
                rv = ET_E_NOMEM;
        }
        atomic_fetch_sub(&ts->sess->nstreams, 1);
        free(s);
        return rv;
    }
    ts->nstreams++;
    ET_COUNT(ts->w->eng->stats.streams_opened);
    ET_COUNT(ts->sess->streams_opened);
    *out = s;
    return ET_OK;
}

int et_stream_attach(et_stream *s, int fd, bool connecting)
{
    et_engine *eng = s->w->eng;
    pthread_mutex_lock(&eng->reg_mu);
    bool cancelled = s->cancelled;
    if (!cancelled)
        s->fd = fd; /* the control worker may reset it from now on */
    pthread_mutex_unlock(&eng->reg_mu);
    s->connecting = connecting;
    if (cancelled) {
        et_sock_reset_close(fd);
        (void)et_stream_reset(s);
        return ET_E_CLOSED;
    }
    if (et_reactor_add(s->w->r, fd, &s->io) < 0 || et_watch_start(s) < 0) {
        et_stream_cancel(s, ET_CR_LIMIT);
        return ET_E_IO;
    }
    return ET_OK;
}

/* --- ready list --------------------------------------------------------------------------- */

static void ready_remove(et_stream *s)
{
    if (!s->in_ready)
        return;
    et_stream_list *l = &s->ts->ready;
    if (s->ready_prev)
        s->ready_prev->ready_next = s->ready_next;
    else
        l->head = s->ready_next;
    if (s->ready_next)
        s->ready_next->ready_prev = s->ready_prev;
    else
        l->tail = s->ready_prev;
    s->ready_prev = s->ready_next = NULL;
    s->in_ready = false;
}

static void ready_append(et_stream *s)
{
    et_stream_list *l = &s->ts->ready;
    s->ready_prev = l->tail;
    s->ready_next = NULL;
    if (l->tail)
        l->tail->ready_next = s;
    else
        l->head = s;
    l->tail = s;
    s->in_ready = true;
}

void et_stream_ready_park(et_stream *s)
{
    ready_remove(s);
}

void et_stream_update_ready(et_stream *s)
{
    uint8_t st = s->ts->state;
    /* No credit still lets an END out once the local peer has closed (pull peeks for it). */
    bool want = !s->closed && s->local_readable && !s->end_sent && !s->connecting &&
                (s->send_credit > 0 || s->local_rdhup) &&
                (st == ET_TS_READY || st == ET_TS_DRAINING);
    if (want && !s->in_ready) {
        ready_append(s);
        et_tsock_schedule_flush(s->ts);
    } else if (!want) {
        ready_remove(s);
    }
}

/* --- teardown ----------------------------------------------------------------------------- */

static uint64_t drop_queue(et_stream *s)
{
    uint64_t dropped = atomic_load_explicit(&s->rq_bytes, memory_order_relaxed);
    while (s->rq_head != NULL) {
        et_chunk *c = s->rq_head;
        s->rq_head = c->next;
        free(c);
    }
    s->rq_tail = NULL;
    atomic_store_explicit(&s->rq_bytes, 0, memory_order_relaxed);
    return dropped;
}

/* teardown closes the local fd (with RST when |reset|), leaves a tombstone and frees |s| after
 * the current round. */
static void teardown(et_stream *s, bool reset)
{
    if (s->closed)
        return;
    s->closed = true;
    ready_remove(s);
    if (s->ts->gather_s == s) {
        s->ts->gather_n = 0; /* views of bytes that will not be written now */
        s->ts->gather_s = NULL;
    }
    if (s->ts->batch_s == s)
        et_tsock_drop_built(s->ts, s); /* spec §7.3: nothing more of it after its CANCEL */
    et_timer_cancel(s->w->r, &s->origin_timer);
    /* The registry first: from then on the control worker leaves the fd alone. */
    et_registry_close(s);
    if (s->fd >= 0) {
        et_watch_stop(s);
        et_reactor_del(s->w->r, &s->io);
        if (s->answer_status != 0 && !atomic_load(&s->resp_started)) {
            /* An HTTP client still waiting for its answer gets an error page, not a reset. */
            char page[512];
            int n = et_http_error_response(s->answer_status, page, sizeof(page));
            ET_COUNT(s->w->eng->stats.http_answers[et_http_status_slot(s->answer_status)]);
            if (n > 0 && send(s->fd, page, (size_t)n, MSG_NOSIGNAL) == n)
                reset = false;
            et_logf(ET_LOG_INFO, "http_answer", "status=%u why=%s uc=%u", s->answer_status,
                    s->answer_status == 504 ? "origin_timeout" : "origin_failed", s->uc);
            shutdown(s->fd, SHUT_WR);
        }
        if (reset)
            et_sock_reset_close(s->fd);
        else
            close(s->fd);
        s->fd = -1;
    }
    (void)drop_queue(s);
    free(s->pend);
    s->pend = NULL;
    if (et_stream_table_bury(s->w->streams, s->sess->key, s->uc, s->sid,
                             et_reactor_now(s->w->r) + ET_TOMBSTONE_NS) < 0)
        abort(); /* the entry exists: burying it in place cannot allocate */
    s->ts->nstreams--;
    atomic_fetch_sub(&s->sess->nstreams, 1);
    if (s->recv_window > ET_WINDOW_DEFAULT)
        atomic_fetch_sub_explicit(&s->w->eng->stats.window_extra,
                                  s->recv_window - ET_WINDOW_DEFAULT, memory_order_relaxed);
    if (s->w->eng->ops->on_stream_closed != NULL)
        s->w->eng->ops->on_stream_closed(s);
    ET_COUNT(s->sess->streams_closed);
    et_reactor_defer(s->w->r, &s->free_task);
}

uint64_t et_stream_reset(et_stream *s)
{
    if (s->closed)
        return 0;
    if (s->kind == ET_OPEN_HTTP && s->w->eng->side == ET_SIDE_EDGE && s->answer_status == 0)
        s->answer_status = 502; /* the origin gave up before answering */
    uint64_t dropped = atomic_load_explicit(&s->rq_bytes, memory_order_relaxed);
    ET_COUNT(s->w->eng->stats.streams_cancelled);
    teardown(s, true);
    return dropped;
}

static void maybe_finish(et_stream *s)
{
    if (s->closed || !s->end_sent || !s->end_received || s->rq_head != NULL || !s->shut_wr_done)
        return;
    ET_COUNT(s->w->eng->stats.streams_finished);
    teardown(s, false);
}

/* --- cancel ------------------------------------------------------------------------------- */

void et_stream_cancel(et_stream *s, uint16_t reason)
{
    if (s->closed)
        return;
    if (et_registry_claim_cancel(s))
        et_stream_send_cancel(s->w, s->sess, s->ts, s->uc, s->sid, reason);
    et_logf(ET_LOG_DEBUG, "stream_cancelled", "uc=%u sid=%u reason=%u", s->uc, s->sid, reason);
    ET_COUNT(s->w->eng->stats.streams_cancelled);
    teardown(s, true);
}

/* stream_error reports a stream-level protocol error to the peer and ends the stream. */
static void stream_error(et_stream *s, uint16_t code)
{
    ET_COUNT(s->w->eng->stats.frame_errors[et_stat_slot(code)]);
    et_frame h = {0, s->uc, s->sid, ET_A_ERROR, 0, NULL};
    et_msg m = {.error = {code, {NULL, 0}}};
    (void)et_tsock_queue(s->ts, &h, &m);
    (void)et_stream_reset(s);
}

/* --- toward the peer (local socket -> DATA) ---------------------------------------------- */

/* took_bytes accounts for |n| bytes of |want| read from the local socket (or the pending head)
 * and framed as DATA: credit, counters, and the readable flag after a short read. */
static void took_bytes(et_stream *s, size_t n, size_t want)
{
    s->send_credit -= (int64_t)n;
    s->last_sent_ns = et_reactor_now(s->w->r);
    ET_COUNT_N(s->w->eng->stats.bytes_to_peer, (uint64_t)n);
    ET_COUNT_N(s->sess->bytes_to_peer, (uint64_t)n);
    if (n < want && !s->local_rdhup)
        s->local_readable = false; /* drained for now: the next edge says when */
    et_stream_update_ready(s);
}

size_t et_stream_pull(et_stream *s, uint8_t *dst, size_t room)
{
    ready_remove(s);
    if (room <= ET_FRAME_HEADER_LEN || s->closed) {
        et_stream_update_ready(s);
        return 0;
    }
    size_t want = room - ET_FRAME_HEADER_LEN;
    size_t chunk = s->ts->peer_max_frame < ET_DATA_CHUNK ? s->ts->peer_max_frame : ET_DATA_CHUNK;
    if (want > chunk)
        want = chunk;
    if ((int64_t)want > s->send_credit)
        want = (size_t)s->send_credit;
    if (want == 0) {
        /* Out of credit: only an EOF can go (END carries no data). */
        uint8_t peek;
        if (s->pend == NULL && s->local_rdhup && recv(s->fd, &peek, 1, MSG_PEEK) == 0)
            want = 1; /* the recv below returns 0 */
        else
            return 0;
    }
    ssize_t n;
    bool from_pend = s->pend != NULL;
    if (from_pend) {
        /* Bytes read before the stream existed (an HTTP head) go first. */
        n = (ssize_t)(s->pend_len - s->pend_off < want ? s->pend_len - s->pend_off : want);
        memcpy(dst + ET_FRAME_HEADER_LEN, s->pend + s->pend_off, (size_t)n);
        s->pend_off += (size_t)n;
        if (s->pend_off == s->pend_len) {
            free(s->pend);
            s->pend = NULL;
        }
    } else {
        n = recv(s->fd, dst + ET_FRAME_HEADER_LEN, want, 0);
    }
    if (n > 0) {
        et_frame h = {(uint32_t)n, s->uc, s->sid, ET_A_DATA, 0, NULL};
        et_frame_header_encode(dst, &h);
        took_bytes(s, (size_t)n, from_pend ? (size_t)n : want);
        return ET_FRAME_HEADER_LEN + (size_t)n;
    }
    if (n == 0 && et_registry_cancelled(s)) {
        /* The control worker saw a reset here (and read its error, so recv() says EOF) and
         * cancelled the stream: an END now would pass an aborted stream for a complete one. */
        (void)et_stream_reset(s);
        return 0;
    }
    if (n == 0) {
        /* Local EOF: END, in order after this stream's last DATA. */
        et_frame h = {0, s->uc, s->sid, ET_A_END, 0, NULL};
        et_frame_header_encode(dst, &h);
        s->end_sent = true;
        s->local_readable = false;
        maybe_finish(s);
        return ET_FRAME_HEADER_LEN;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        s->local_readable = false;
        return 0;
    }
    if (errno == EINTR) {
        et_stream_update_ready(s);
        return 0;
    }
    et_stream_cancel(s, gone_reason(s));
    return 0;
}

unsigned et_stream_pull_records(et_stream *s, uint8_t *base, uint16_t *lens)
{
    /* Full-size frames only (one frame fills one record), bytes from the fd only (not an HTTP
     * head), and credit for more than one record: otherwise a single ordinary pull. */
    if (s->closed || s->pend != NULL || s->ts->peer_max_frame < ET_DATA_CHUNK ||
        s->send_credit < 2 * (int64_t)ET_DATA_CHUNK) {
        size_t n = et_stream_pull(s, base, ET_RECORD_MAX);
        lens[0] = (uint16_t)n;
        return n > 0 ? 1 : 0;
    }
    ready_remove(s);
    size_t want = (size_t)s->send_credit < ET_REC_BATCH * (size_t)ET_DATA_CHUNK
                      ? (size_t)s->send_credit
                      : ET_REC_BATCH * ET_DATA_CHUNK;
    struct iovec iov[ET_REC_BATCH];
    unsigned k = 0;
    for (size_t left = want; left > 0; k++) {
        size_t part = left < ET_DATA_CHUNK ? left : ET_DATA_CHUNK;
        iov[k] = (struct iovec){base + k * ET_RECORD_MAX + ET_FRAME_HEADER_LEN, part};
        left -= part;
    }
    ssize_t n = readv(s->fd, iov, (int)k);
    if (n <= 0) {
        /* EOF, EAGAIN or an error: the ordinary pull sees the same again and handles it. */
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            et_stream_cancel(s, gone_reason(s));
            return 0;
        }
        if (n < 0 && errno != EINTR) {
            s->local_readable = false;
            return 0;
        }
        size_t m = et_stream_pull(s, base, ET_RECORD_MAX);
        lens[0] = (uint16_t)m;
        return m > 0 ? 1 : 0;
    }
    unsigned recs = 0;
    for (size_t left = (size_t)n; left > 0; recs++) {
        size_t part = left < ET_DATA_CHUNK ? left : ET_DATA_CHUNK;
        et_frame h = {(uint32_t)part, s->uc, s->sid, ET_A_DATA, 0, NULL};
        et_frame_header_encode(base + recs * ET_RECORD_MAX, &h);
        lens[recs] = (uint16_t)(ET_FRAME_HEADER_LEN + part);
        left -= part;
    }
    took_bytes(s, (size_t)n, want);
    return recs;
}

void et_stream_on_window(et_stream *s, uint32_t inc)
{
    if (s->send_credit + (int64_t)inc > (int64_t)ET_WINDOW_MAX) {
        stream_error(s, ET_WE_FLOW_CONTROL);
        return;
    }
    s->send_credit += inc;
    et_stream_update_ready(s);
}

/* --- from the peer (DATA -> local socket) ------------------------------------------------ */

/* window_resize returns how much the window |s| grants changes as it returns credit (spec
 * §7.2), and books the change in the engine's window_extra (window_unbook undoes it when the
 * WINDOW cannot go). A stream alone in its session whose local writer keeps up (nothing queued)
 * and that consumed half its window within ET_WINDOW_GROW_NS, or two of its data socket's
 * shortest round trips when that is longer, is held back by the window, not by its reader: the
 * window doubles, up to ET_WINDOW_GROW_NEAR on a short path and ET_WINDOW_GROW_MAX on a long one,
 * while every grown window of the engine together stays within ET_WINDOW_GROW_BUDGET. On a busy
 * host this keeps a bulk stream moving while a reactor waits for a core; across a long round trip
 * it is what one stream needs to fill the path. A grown window whose reader falls behind (a
 * quarter of it queued) halves again, back toward ET_WINDOW_DEFAULT, so what a slow reader can
 * make us hold shrinks with it. A stream that goes quiet keeps its grown window (credit, not
 * buffers) until it ends or moves half of it again: the budget bounds what all of them together
 * could make us hold, and once it is spent windows simply stop growing. */
static int64_t window_resize(et_stream *s, uint64_t now)
{
    uint32_t win = s->recv_window;
    size_t queued = atomic_load_explicit(&s->rq_bytes, memory_order_relaxed);
    if (queued > 0) {
        /* A reader a moment behind (a full socket buffer) keeps its window; one that leaves a
         * quarter of it queued with us is slower than the window. */
        if (win <= ET_WINDOW_DEFAULT || queued < win / 4)
            return 0;
        uint32_t k = win / 2 < ET_WINDOW_DEFAULT ? win - ET_WINDOW_DEFAULT : win / 2;
        atomic_fetch_sub_explicit(&s->w->eng->stats.window_extra, k, memory_order_relaxed);
        return -(int64_t)k;
    }
    /* The path's own round trip, not one the queue of a full link has stretched. Where it is
     * shorter than ET_WINDOW_GROW_NS / 2 (loopback, a LAN) a window beyond ET_WINDOW_GROW_NEAR
     * fills nothing the path needs and only deepens the queues a cancel crosses: measured here,
     * 4 MiB windows under a saturated loopback tunnel put 0.1-0.2 ms on the control-socket
     * cancel's median (bench/README.md). */
    uint64_t rtt2 = 2000ull * atomic_load_explicit(&s->ts->min_rtt_us, memory_order_relaxed);
    bool far = rtt2 > ET_WINDOW_GROW_NS;
    uint64_t fast = far ? rtt2 : ET_WINDOW_GROW_NS;
    uint32_t cap = far ? ET_WINDOW_GROW_MAX : ET_WINDOW_GROW_NEAR;
    /* Only a stream alone in its session grows: with more, the sum of their windows already
     * fills the path, and growing them only keeps more bytes in flight ahead of everything else
     * (measured with every stream growing: about +1 ms on the control cancel's p99 under a
     * saturated tunnel, and edged at 33-42 MB RSS in the soak's first minute against 16-20 MB
     * without; bench/README.md). A legacy session's CANCEL rides the data sockets, behind every
     * byte the window let into them: its windows stay as they started. */
    if (win >= cap || s->end_received || s->sess->legacy ||
        atomic_load_explicit(&s->sess->nstreams, memory_order_relaxed) > 1 ||
        now - s->window_ns > fast)
        return 0;
    _Atomic uint64_t *extra = &s->w->eng->stats.window_extra;
    uint64_t was = atomic_load_explicit(extra, memory_order_relaxed);
    do {
        if (was + win > ET_WINDOW_GROW_BUDGET)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(extra, &was, was + win, memory_order_relaxed,
                                                    memory_order_relaxed));
    return win;
}

/* window_unbook undoes what window_resize booked in window_extra (|d|), when the WINDOW that
 * would have granted it could not be queued. */
static void window_unbook(et_stream *s, int64_t d)
{
    _Atomic uint64_t *extra = &s->w->eng->stats.window_extra;
    if (d > 0)
        atomic_fetch_sub_explicit(extra, (uint64_t)d, memory_order_relaxed);
    else if (d < 0)
        atomic_fetch_add_explicit(extra, (uint64_t)-d, memory_order_relaxed);
}

static void consumed(et_stream *s, size_t n)
{
    s->recv_unacked += (uint32_t)n;
    if (s->recv_unacked < s->recv_window / 2 || s->closed)
        return;
    uint64_t now = et_reactor_now(s->w->r);
    int64_t d = window_resize(s, now);
    /* A shrink withholds at most half the window, and at least that much was consumed. */
    uint32_t inc = (uint32_t)((int64_t)s->recv_unacked + d);
    if (inc > 0) {
        et_frame h = {0, s->uc, s->sid, ET_A_WINDOW, 0, NULL};
        et_msg m = {.window = inc};
        if (et_tsock_queue(s->ts, &h, &m) != ET_OK) {
            window_unbook(s, d); /* tried again with the next bytes consumed */
            return;
        }
        s->recv_limit += inc;
    }
    if (d > 0)
        ET_COUNT(s->w->eng->stats.window_grows);
    else if (d < 0)
        ET_COUNT(s->w->eng->stats.window_shrinks);
    s->recv_window = (uint32_t)((int64_t)s->recv_window + d);
    s->window_ns = now;
    s->recv_unacked = 0;
}

/* local_write writes to the local socket; returns bytes written, or -1 after cancelling. |more|
 * holds the bytes back (MSG_MORE) for the next write, which the caller guarantees follows. */
static ssize_t local_write(et_stream *s, const uint8_t *p, size_t n, bool more)
{
    ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (w >= 0) {
        if ((size_t)w < n)
            s->local_writable = false;
        return w;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        s->local_writable = false;
        return 0;
    }
    et_stream_cancel(s, gone_reason(s));
    return -1;
}

/* write_gathered writes received DATA |iov|[0..cnt) to the local socket with one sendmsg and
 * queues what it did not take, in order. */
static void write_gathered(et_stream *s, const struct iovec *iov, unsigned cnt, bool more)
{
    size_t total = 0;
    for (unsigned i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    struct msghdr mh = {.msg_iov = (struct iovec *)(uintptr_t)iov, .msg_iovlen = cnt};
    ssize_t w = sendmsg(s->fd, &mh, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            et_stream_cancel(s, gone_reason(s));
            return;
        }
        w = 0;
    }
    if ((size_t)w < total)
        s->local_writable = false;
    size_t skip = (size_t)w;
    for (unsigned i = 0; i < cnt && !s->closed; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        if (!enqueue(s, (const uint8_t *)iov[i].iov_base + skip, iov[i].iov_len - skip)) {
            et_stream_cancel(s, ET_CR_LIMIT);
            return;
        }
        skip = 0;
    }
    /* After the tail is queued: a short write means the reader is behind (window_resize). */
    if (!s->closed)
        consumed(s, (size_t)w);
}

static void shut_local_write(et_stream *s)
{
    if (s->shut_wr_done || s->rq_head != NULL || s->connecting || s->closed)
        return;
    shutdown(s->fd, SHUT_WR);
    s->shut_wr_done = true;
    maybe_finish(s);
}

static void drain_queue(et_stream *s)
{
    while (s->rq_head != NULL && s->local_writable && !s->closed) {
        et_chunk *c = s->rq_head;
        ssize_t w = local_write(s, c->data + c->off, c->len - c->off, false);
        if (w < 0)
            return;
        c->off += (size_t)w;
        atomic_fetch_sub_explicit(&s->rq_bytes, (size_t)w, memory_order_relaxed);
        if (!c->local)
            consumed(s, (size_t)w);
        if (c->off < c->len)
            return;
        s->rq_head = c->next;
        if (s->rq_head == NULL)
            s->rq_tail = NULL;
        free(c);
    }
    if (s->rq_head == NULL && s->end_received)
        shut_local_write(s);
}

static bool enqueue(et_stream *s, const uint8_t *p, size_t n)
{
    et_chunk *t = s->rq_tail;
    if (t != NULL && !t->local && t->cap - t->len >= n) {
        memcpy(t->data + t->len, p, n);
        t->len += n;
    } else {
        /* Grow with the queue: an idle stream that gets one small frame keeps a small chunk,
         * a stream that queues many small frames gets chunks of up to CHUNK_MIN. */
        size_t queued = atomic_load_explicit(&s->rq_bytes, memory_order_relaxed);
        size_t cap = queued < CHUNK_MIN ? queued : CHUNK_MIN;
        if (cap < n)
            cap = n;
        et_chunk *c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return false;
        c->next = NULL;
        c->cap = cap;
        c->len = n;
        c->off = 0;
        c->local = false;
        memcpy(c->data, p, n);
        if (s->rq_tail)
            s->rq_tail->next = c;
        else
            s->rq_head = c;
        s->rq_tail = c;
    }
    atomic_fetch_add_explicit(&s->rq_bytes, n, memory_order_relaxed);
    return true;
}

int et_stream_set_pending(et_stream *s, uint8_t *p, size_t n)
{
    ET_ENSURE(s->pend == NULL && n > 0, ET_E_USAGE);
    s->pend = p;
    s->pend_len = n;
    s->pend_off = 0;
    s->local_readable = true; /* there is something to send even if the fd says nothing */
    et_stream_update_ready(s);
    return ET_OK;
}

int et_stream_prepend_local(et_stream *s, const uint8_t *p, size_t n)
{
    ET_ENSURE(s->rq_head == NULL, ET_E_USAGE);
    ET_ENSURE(enqueue(s, p, n), ET_E_NOMEM);
    s->rq_head->local = true;
    return ET_OK;
}

void et_stream_on_data(et_stream *s, const uint8_t *p, size_t n, bool more)
{
    if (s->kind == ET_OPEN_HTTP && !atomic_load_explicit(&s->resp_started, memory_order_relaxed)) {
        atomic_store(&s->resp_started, true);
        et_timer_cancel(s->w->r, &s->origin_timer);
    }
    s->last_recv_ns = et_reactor_now(s->w->r);
    if (s->end_received) {
        stream_error(s, ET_WE_STREAM_STATE);
        return;
    }
    if (n > s->recv_limit) {
        stream_error(s, ET_WE_FLOW_CONTROL);
        return;
    }
    s->recv_limit -= (uint32_t)n;
    et_tsock *ts = s->ts;
    bool direct = s->rq_head == NULL && s->local_writable && !s->connecting;
    if (ts->gather_n > 0 && (ts->gather_s != s || !direct)) {
        et_stream_gather_flush(ts); /* not expected: |more| promised this frame to the run */
        if (s->closed)
            return;
        direct = s->rq_head == NULL && s->local_writable && !s->connecting;
    }
    if (!direct) {
        if (!enqueue(s, p, n))
            et_stream_cancel(s, ET_CR_LIMIT);
        return;
    }
    /* Straight to the local socket, the frames of one run together: the next frame is DATA of
     * this stream too (|more|), so this one waits for it, up to ET_GATHER_MAX at once. */
    ts->gather_s = s;
    ts->gather[ts->gather_n++] = (struct iovec){(void *)(uintptr_t)p, n};
    if (more && ts->gather_n < ET_GATHER_MAX)
        return;
    unsigned cnt = ts->gather_n;
    ts->gather_n = 0;
    ts->gather_s = NULL;
    write_gathered(s, ts->gather, cnt, more);
}

void et_stream_gather_flush(et_tsock *ts)
{
    et_stream *s = ts->gather_s;
    unsigned cnt = ts->gather_n;
    ts->gather_n = 0;
    ts->gather_s = NULL;
    if (cnt > 0 && s != NULL && !s->closed)
        write_gathered(s, ts->gather, cnt, false);
}

void et_stream_on_end(et_stream *s)
{
    if (s->end_received) {
        stream_error(s, ET_WE_STREAM_STATE);
        return;
    }
    s->end_received = true;
    shut_local_write(s);
}

void et_stream_connected(et_stream *s, bool ok)
{
    if (!ok) {
        et_stream_cancel(s, ET_CR_ORIGIN_REFUSED);
        return;
    }
    s->connecting = false;
    s->local_writable = true;
    drain_queue(s);
    if (!s->closed)
        et_stream_update_ready(s);
}

static void stream_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    et_stream *s = ET_CONTAINER_OF(io, et_stream, io);
    if (s->closed)
        return;
    if (s->connecting) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        et_stream_connected(s, et_sock_connect_result(s->fd) == ET_OK);
        if (s->closed)
            return;
    }
    if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
            /* Reset by the local peer: abortive, whatever is still queued is moot. */
            et_stream_cancel(s, gone_reason(s));
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
        s->local_readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP))
        s->local_rdhup = true;
    if (events & (EPOLLOUT | EPOLLHUP))
        s->local_writable = true;
    if (s->local_writable && s->rq_head != NULL)
        drain_queue(s);
    if (!s->closed)
        et_stream_update_ready(s);
}
