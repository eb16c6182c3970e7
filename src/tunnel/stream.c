/* stream.c: one stream: its local TCP connection, credit windows, END as half-close, cancel
 * (tunnel.h). */
#include "et/tunnel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "et/logf.h"
#include "et/tls.h"

/* Received DATA that the local socket could not take yet. */
struct et_chunk {
    et_chunk *next;
    size_t len, off;
    uint8_t data[];
};

static void stream_on_event(et_reactor *r, et_io *io, uint32_t events);

static void free_task_fn(et_reactor *r, et_task *t)
{
    free(ET_CONTAINER_OF(t, et_stream, free_task));
}

static uint16_t gone_reason(const et_stream *s)
{
    return s->w->eng->side == ET_SIDE_EDGE ? ET_CR_CLIENT_GONE : ET_CR_ORIGIN_GONE;
}

et_stream *et_stream_new(et_tsock *ts, uint32_t uc, uint32_t sid, int fd, bool connecting)
{
    et_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto err;
    s->w = ts->w;
    s->ts = ts;
    s->sess = ts->sess;
    s->fd = fd;
    s->uc = uc;
    s->sid = sid;
    s->connecting = connecting;
    s->recv_window = s->recv_limit = ET_WINDOW_DEFAULT;
    s->opened_ns = et_reactor_now(ts->w->r);
    et_io_init(&s->io, stream_on_event);
    et_task_init(&s->free_task, free_task_fn);
    if (et_stream_table_put(ts->w->streams, ts->sess->key, uc, sid, s) < 0)
        goto err;
    if (fd >= 0 && et_reactor_add(ts->w->r, fd, &s->io) < 0) {
        if (et_stream_table_bury(ts->w->streams, ts->sess->key, uc, sid,
                                 et_reactor_now(ts->w->r) + ET_TOMBSTONE_NS) < 0)
            abort(); /* the slot exists: burying it cannot allocate */
        goto err;
    }
    ts->nstreams++;
    ET_COUNT(ts->w->eng->stats.streams_opened);
    return s;
err:
    if (fd >= 0)
        et_sock_reset_close(fd);
    free(s);
    return NULL;
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

void et_stream_update_ready(et_stream *s)
{
    uint8_t st = s->ts->state;
    bool want = !s->closed && s->local_readable && !s->end_sent && !s->connecting &&
                s->send_credit > 0 && (st == ET_TS_READY || st == ET_TS_DRAINING);
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
    uint64_t dropped = s->rq_bytes;
    while (s->rq_head != NULL) {
        et_chunk *c = s->rq_head;
        s->rq_head = c->next;
        free(c);
    }
    s->rq_tail = NULL;
    s->rq_bytes = 0;
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
    if (s->fd >= 0) {
        et_reactor_del(s->w->r, &s->io);
        if (reset)
            et_sock_reset_close(s->fd);
        else
            close(s->fd);
        s->fd = -1;
    }
    (void)drop_queue(s);
    if (et_stream_table_bury(s->w->streams, s->sess->key, s->uc, s->sid,
                             et_reactor_now(s->w->r) + ET_TOMBSTONE_NS) < 0)
        abort(); /* the entry exists: burying it in place cannot allocate */
    s->ts->nstreams--;
    et_reactor_defer(s->w->r, &s->free_task);
}

uint64_t et_stream_reset(et_stream *s)
{
    if (s->closed)
        return 0;
    uint64_t dropped = s->rq_bytes;
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

typedef struct cancel_msg {
    et_tsock *ctrl; /* one reference */
    uint32_t uc, sid;
    uint16_t reason;
    uint64_t sent_ns;
} cancel_msg;

static bool queue_cancel(et_tsock *ts, uint32_t uc, uint32_t sid, uint16_t reason, uint64_t sent_ns)
{
    if (ts->state != ET_TS_READY && ts->state != ET_TS_DRAINING)
        return false;
    et_frame h = {0, uc, sid, ET_A_CANCEL, 0, NULL};
    et_msg m = {.cancel = {reason, sent_ns}};
    if (et_tsock_queue(ts, &h, &m) < 0)
        return false;
    et_tsock_flush(ts); /* now, not at the end of the round */
    return true;
}

static void cancel_on_ctrl(et_reactor *r, void *arg)
{
    cancel_msg *c = arg;
    if (!queue_cancel(c->ctrl, c->uc, c->sid, c->reason, c->sent_ns))
        et_logf(ET_LOG_WARN, "cancel_lost", "uc=%u sid=%u why=control_socket_gone", c->uc, c->sid);
    et_tsock_unref(c->ctrl);
    free(c);
}

void et_stream_send_cancel(et_worker *w, et_session *sess, et_tsock *data_ts, uint32_t uc,
                           uint32_t sid, uint16_t reason)
{
    et_stats *st = &w->eng->stats;
    uint64_t sent_ns = et_now_ns();
    et_tsock *ctrl = NULL;
    pthread_mutex_lock(&sess->mu);
    if (sess->ctrl != NULL && sess->ctrl->state == ET_TS_READY) {
        ctrl = sess->ctrl;
        et_tsock_ref(ctrl);
    }
    pthread_mutex_unlock(&sess->mu);
    if (ctrl != NULL) {
        if (ctrl->w == w) {
            bool ok = queue_cancel(ctrl, uc, sid, reason, sent_ns);
            et_tsock_unref(ctrl);
            if (ok) {
                ET_COUNT(st->cancels_sent_control);
                return;
            }
        } else {
            cancel_msg *c = malloc(sizeof(*c));
            if (c != NULL) {
                *c = (cancel_msg){ctrl, uc, sid, reason, sent_ns};
                if (et_reactor_post(ctrl->w->r, cancel_on_ctrl, c) == ET_OK) {
                    ET_COUNT(st->cancels_sent_control);
                    return;
                }
                ET_COUNT(st->inbox_full);
                free(c);
            }
            et_tsock_unref(ctrl);
        }
    }
    /* No control socket (legacy mode, or it is down): the stream's own data socket, ahead of
     * every queued DATA frame. */
    if (data_ts != NULL && queue_cancel(data_ts, uc, sid, reason, sent_ns))
        ET_COUNT(st->cancels_sent_data);
}

void et_stream_cancel(et_stream *s, uint16_t reason)
{
    if (s->closed)
        return;
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
    if (want == 0)
        return 0;
    ssize_t n = recv(s->fd, dst + ET_FRAME_HEADER_LEN, want, 0);
    if (n > 0) {
        et_frame h = {(uint32_t)n, s->uc, s->sid, ET_A_DATA, 0, NULL};
        et_frame_header_encode(dst, &h);
        s->send_credit -= n;
        ET_COUNT_N(s->w->eng->stats.bytes_to_peer, (uint64_t)n);
        if ((size_t)n < want && !s->local_rdhup)
            s->local_readable = false; /* drained for now: the next edge says when */
        et_stream_update_ready(s);
        return ET_FRAME_HEADER_LEN + (size_t)n;
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

static void consumed(et_stream *s, size_t n)
{
    s->recv_unacked += (uint32_t)n;
    if (s->recv_unacked < s->recv_window / 2 || s->closed)
        return;
    et_frame h = {0, s->uc, s->sid, ET_A_WINDOW, 0, NULL};
    et_msg m = {.window = s->recv_unacked};
    if (et_tsock_queue(s->ts, &h, &m) == ET_OK) {
        s->recv_limit += s->recv_unacked;
        s->recv_unacked = 0;
    }
}

/* local_write writes to the local socket; returns bytes written, or -1 after cancelling. */
static ssize_t local_write(et_stream *s, const uint8_t *p, size_t n)
{
    ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
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
        ssize_t w = local_write(s, c->data + c->off, c->len - c->off);
        if (w < 0)
            return;
        c->off += (size_t)w;
        s->rq_bytes -= (size_t)w;
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
    et_chunk *c = malloc(sizeof(*c) + n);
    if (c == NULL)
        return false;
    c->next = NULL;
    c->len = n;
    c->off = 0;
    memcpy(c->data, p, n);
    if (s->rq_tail)
        s->rq_tail->next = c;
    else
        s->rq_head = c;
    s->rq_tail = c;
    s->rq_bytes += n;
    return true;
}

void et_stream_on_data(et_stream *s, const uint8_t *p, size_t n)
{
    if (s->end_received) {
        stream_error(s, ET_WE_STREAM_STATE);
        return;
    }
    if (n > s->recv_limit) {
        stream_error(s, ET_WE_FLOW_CONTROL);
        return;
    }
    s->recv_limit -= (uint32_t)n;
    size_t done = 0;
    if (s->rq_head == NULL && s->local_writable && !s->connecting) {
        ssize_t w = local_write(s, p, n);
        if (w < 0)
            return;
        done = (size_t)w;
        consumed(s, done);
    }
    if (done < n && !enqueue(s, p + done, n - done))
        et_stream_cancel(s, ET_CR_LIMIT);
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
