/* cancel.c: the cancel path (tunnel.h): the registry of live streams and recent cancels, the
 * control worker's watch on every stream's local socket, sending a CANCEL (control socket
 * first) and receiving one (reset at once from the receiving worker, then clean up). */
#include "et/tunnel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "et/logf.h"
#include "et/tls.h"

#include "tunnel_internal.h"

/* The control worker's watch on a stream's local fd. Created by the stream's data worker,
 * freed on the control worker (after the data worker removed it from epoll), so an event the
 * control worker already fetched never meets freed memory. */
struct et_watch {
    et_io io;
    et_engine *eng;
    et_session *sess; /* one reference */
    uint32_t uc, sid;
};

static uint16_t gone_reason(const et_engine *eng)
{
    return eng->side == ET_SIDE_EDGE ? ET_CR_CLIENT_GONE : ET_CR_ORIGIN_GONE;
}

/* --- the registry ----------------------------------------------------------------------- */

int et_registry_open(et_stream *s)
{
    et_engine *eng = s->w->eng;
    int rv = ET_OK;
    pthread_mutex_lock(&eng->reg_mu);
    if (et_stream_table_find(eng->reg, s->sess->key, s->uc, s->sid, NULL) != ET_LOOKUP_NONE)
        rv = ET_E_CLOSED; /* cancelled before it opened (or opened twice) */
    else
        rv = et_stream_table_put(eng->reg, s->sess->key, s->uc, s->sid, s);
    if (rv == ET_OK) {
        s->reg_prev = NULL;
        s->reg_next = s->sess->reg_streams;
        if (s->reg_next != NULL)
            s->reg_next->reg_prev = s;
        s->sess->reg_streams = s;
        s->registered = true;
    }
    pthread_mutex_unlock(&eng->reg_mu);
    return rv;
}

bool et_registry_claim_cancel(et_stream *s)
{
    et_engine *eng = s->w->eng;
    pthread_mutex_lock(&eng->reg_mu);
    bool first = !s->cancelled;
    s->cancelled = true;
    pthread_mutex_unlock(&eng->reg_mu);
    return first;
}

bool et_registry_cancelled(et_stream *s)
{
    et_engine *eng = s->w->eng;
    pthread_mutex_lock(&eng->reg_mu);
    bool c = s->cancelled;
    pthread_mutex_unlock(&eng->reg_mu);
    return c;
}

void et_registry_close(et_stream *s)
{
    et_engine *eng = s->w->eng;
    pthread_mutex_lock(&eng->reg_mu);
    if (et_stream_table_bury(eng->reg, s->sess->key, s->uc, s->sid, et_now_ns() + ET_TOMBSTONE_NS) <
        0)
        abort(); /* the entry exists: burying it in place cannot allocate */
    if (s->registered) {
        if (s->reg_prev != NULL)
            s->reg_prev->reg_next = s->reg_next;
        else
            s->sess->reg_streams = s->reg_next;
        if (s->reg_next != NULL)
            s->reg_next->reg_prev = s->reg_prev;
        s->reg_prev = s->reg_next = NULL;
        s->registered = false;
    }
    pthread_mutex_unlock(&eng->reg_mu);
}

/* --- sending ---------------------------------------------------------------------------- */

static bool queue_cancel(et_tsock *ts, uint32_t uc, uint32_t sid, uint16_t reason, uint64_t sent_ns)
{
    if (ts->state != ET_TS_READY && ts->state != ET_TS_DRAINING)
        return false;
    et_frame h = {0, uc, sid, ET_A_CANCEL, 0, NULL};
    et_msg m = {.cancel = {reason, sent_ns}};
    if (et_tsock_queue(ts, &h, &m) < 0)
        return false;
    et_tsock_flush(ts); /* now, not at the end of the round */
    et_logf(ET_LOG_DEBUG, "cancel_sent", "uc=%u sid=%u reason=%u path=%s", uc, sid, reason,
            ts->role == ET_ROLE_CONTROL ? "control" : "data");
    return true;
}

typedef struct cancel_msg {
    et_session *sess; /* one reference */
    et_tsock *data;   /* one reference: the stream's data socket, for the fallback */
    uint32_t uc, sid;
    uint16_t reason;
    uint64_t sent_ns;
} cancel_msg;

static void cancel_msg_free(cancel_msg *c)
{
    void (*free_side)(void *) = c->data->w->eng->session_free_side;
    et_tsock_unref(c->data);
    et_session_unref(c->sess, free_side);
    free(c);
}

/* On the data socket's worker: the control socket was gone; send on the data socket. */
static void cancel_on_data(et_reactor *r, void *arg)
{
    cancel_msg *c = arg;
    if (queue_cancel(c->data, c->uc, c->sid, c->reason, c->sent_ns))
        ET_COUNT(c->data->w->eng->stats.cancels_sent_data);
    else
        et_logf(ET_LOG_WARN, "cancel_lost", "uc=%u sid=%u why=no_socket", c->uc, c->sid);
    cancel_msg_free(c);
}

/* On the control worker: the session's control socket if it has one, else the fallback.
 * Takes ownership of |c|. */
static void send_from_control(cancel_msg *c)
{
    et_engine *eng = c->data->w->eng;
    et_tsock *ctrl = NULL;
    pthread_mutex_lock(&c->sess->mu);
    ctrl = c->sess->ctrl;
    pthread_mutex_unlock(&c->sess->mu);
    /* A control socket is attached only once it lives on this (the control) worker, so it
     * is this thread's to write; check anyway rather than touch another worker's socket. */
    if (ctrl != NULL && ctrl->w == eng->control && !ctrl->moving &&
        queue_cancel(ctrl, c->uc, c->sid, c->reason, c->sent_ns)) {
        ET_COUNT(eng->stats.cancels_sent_control);
        cancel_msg_free(c);
        return;
    }
    if (et_reactor_post(c->data->w->r, cancel_on_data, c) < 0) {
        ET_COUNT(eng->stats.inbox_full);
        cancel_msg_free(c);
    }
}

static void cancel_on_control(et_reactor *r, void *arg)
{
    send_from_control(arg);
}

static cancel_msg *cancel_msg_new(et_session *sess, et_tsock *data, uint32_t uc, uint32_t sid,
                                  uint16_t reason, uint64_t sent_ns)
{
    cancel_msg *c = malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    *c = (cancel_msg){sess, data, uc, sid, reason, sent_ns};
    et_session_ref(sess);
    et_tsock_ref(data);
    return c;
}

void et_stream_send_cancel(et_worker *w, et_session *sess, et_tsock *data_ts, uint32_t uc,
                           uint32_t sid, uint16_t reason)
{
    et_engine *eng = w->eng;
    uint64_t sent_ns = et_now_ns();
    bool has_ctrl;
    pthread_mutex_lock(&sess->mu);
    has_ctrl = sess->ctrl != NULL;
    pthread_mutex_unlock(&sess->mu);
    if (has_ctrl && w != eng->control) {
        cancel_msg *c = cancel_msg_new(sess, data_ts, uc, sid, reason, sent_ns);
        if (c != NULL) {
            if (et_reactor_post(eng->control->r, cancel_on_control, c) == ET_OK)
                return;
            ET_COUNT(eng->stats.inbox_full);
            cancel_msg_free(c);
        }
    }
    /* No control socket (legacy mode, or it is down): the stream's own data socket, ahead of
     * every queued DATA frame. */
    if (queue_cancel(data_ts, uc, sid, reason, sent_ns))
        ET_COUNT(eng->stats.cancels_sent_data);
}

typedef struct reset_msg {
    et_worker *w;
    uint32_t sess_key, uc, sid;
} reset_msg;

/* On the stream's data worker: finish a stream the peer cancelled. */
static void reset_on_owner(et_worker *w, uint32_t sess_key, uint32_t uc, uint32_t sid)
{
    et_stream *s = NULL;
    if (et_stream_table_find(w->streams, sess_key, uc, sid, &s) == ET_LOOKUP_LIVE)
        (void)et_stream_reset(s);
}

static void reset_msg_run(et_reactor *r, void *arg)
{
    reset_msg *m = arg;
    reset_on_owner(m->w, m->sess_key, m->uc, m->sid);
    free(m);
}

static void post_reset(et_worker *w, uint32_t sess_key, uint32_t uc, uint32_t sid)
{
    reset_msg *rm = malloc(sizeof(*rm));
    if (rm != NULL) {
        *rm = (reset_msg){w, sess_key, uc, sid};
        if (et_reactor_post(w->r, reset_msg_run, rm) == ET_OK)
            return;
        free(rm);
    }
    /* Its data worker will see the reset on the fd by itself. */
    ET_COUNT(w->eng->stats.inbox_full);
}

/* --- the control worker's watch --------------------------------------------------------- */

static void watch_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    et_watch *wt = ET_CONTAINER_OF(io, et_watch, io);
    if (!(events & (EPOLLERR | EPOLLHUP)))
        return;
    et_engine *eng = wt->eng;
    et_stream *s = NULL;
    cancel_msg *c = NULL;
    et_worker *owner = NULL;
    pthread_mutex_lock(&eng->reg_mu);
    /* While the entry is live its data worker has not closed the fd: checking it is safe. */
    if (et_stream_table_find(eng->reg, wt->sess->key, wt->uc, wt->sid, &s) == ET_LOOKUP_LIVE &&
        !s->cancelled && s->fd >= 0) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
            /* Reset by the local peer: cancel now, whatever its data worker is doing. */
            s->cancelled = true;
            owner = s->w;
            c = cancel_msg_new(wt->sess, s->ts, wt->uc, wt->sid, gone_reason(eng), et_now_ns());
        }
    }
    pthread_mutex_unlock(&eng->reg_mu);
    if (c != NULL) {
        et_logf(ET_LOG_DEBUG, "cancel_watch", "uc=%u sid=%u", wt->uc, wt->sid);
        send_from_control(c);
    }
    if (owner != NULL) /* its data worker finishes the stream (it may never read again) */
        post_reset(owner, wt->sess->key, wt->uc, wt->sid);
}

static void watch_free_msg(et_reactor *r, void *arg)
{
    et_watch *wt = arg;
    et_session_unref(wt->sess, wt->eng->session_free_side);
    free(wt);
}

int et_watch_start(et_stream *s)
{
    et_engine *eng = s->w->eng;
    et_watch *wt = calloc(1, sizeof(*wt));
    ET_ENSURE(wt != NULL, ET_E_NOMEM);
    wt->eng = eng;
    wt->sess = s->sess;
    et_session_ref(s->sess);
    wt->uc = s->uc;
    wt->sid = s->sid;
    et_io_init(&wt->io, watch_on_event);
    int rv = et_reactor_watch(eng->control->r, s->fd, &wt->io, 0);
    if (rv < 0) {
        et_session_unref(wt->sess, eng->session_free_side);
        free(wt);
        return rv;
    }
    s->watch = wt;
    return ET_OK;
}

void et_watch_stop(et_stream *s)
{
    et_watch *wt = s->watch;
    if (wt == NULL)
        return;
    s->watch = NULL;
    et_engine *eng = s->w->eng;
    et_reactor_unwatch(eng->control->r, s->fd);
    if (et_reactor_post(eng->control->r, watch_free_msg, wt) < 0) {
        /* Freeing here could race with an event the control worker holds: leak it instead. */
        ET_COUNT(eng->stats.inbox_full);
    }
}

/* --- receiving -------------------------------------------------------------------------- */

/* abort_local sends the RST to the stream's local peer now, without closing the fd that its
 * data worker owns: a TCP "disconnect" resets an established connection. */
static void abort_local(int fd)
{
    struct sockaddr sa = {.sa_family = AF_UNSPEC};
    struct linger lg = {1, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    (void)connect(fd, &sa, sizeof(sa));
}

#define CANCEL_BATCH 64

typedef struct victim {
    et_worker *w;
    uint32_t sid;
} victim;

typedef struct cancel_ctx {
    uint32_t key, uc;
    victim v[CANCEL_BATCH];
    size_t nv;
    uint64_t dropped;
    uint8_t outcome;
} cancel_ctx;

/* hit resets live stream |s| (under the registry lock). */
static void hit(cancel_ctx *x, et_stream *s)
{
    /* An HTTP client that has no answer yet gets an error page from the stream's worker. */
    bool awaiting = s->kind == ET_OPEN_HTTP && s->w->eng->side == ET_SIDE_EDGE &&
                    !atomic_load(&s->resp_started);
    if (!s->cancelled && s->fd >= 0 && !awaiting)
        abort_local(s->fd);
    s->cancelled = true;
    x->dropped += atomic_load_explicit(&s->rq_bytes, memory_order_relaxed);
    x->outcome = ET_CO_RESET;
    if (x->nv < CANCEL_BATCH)
        x->v[x->nv++] = (victim){s->w, s->sid};
}

void et_cancel_received(et_tsock *ts, const et_frame *f, const et_cancel *c)
{
    et_engine *eng = ts->w->eng;
    uint64_t recv_ns = et_now_ns();
    et_logf(ET_LOG_DEBUG, "cancel_received", "uc=%u sid=%u", f->user_channel, f->stream_id);
    if (ts->role == ET_ROLE_CONTROL)
        ET_COUNT(eng->stats.cancels_recv_control);
    else
        ET_COUNT(eng->stats.cancels_recv_data);
    cancel_ctx x = {.key = ts->sess->key, .uc = f->user_channel, .outcome = ET_CO_UNKNOWN};
    uint32_t key = x.key, uc = x.uc;

    pthread_mutex_lock(&eng->reg_mu);
    et_stream *s = NULL;
    if (f->flags & ET_F_CANCEL_CHANNEL) {
        /* Only this session's streams: a peer's channel cancels cost it, not other tenants. */
        for (et_stream *p = ts->sess->reg_streams; p != NULL; p = p->reg_next)
            if (p->uc == uc)
                hit(&x, p);
    } else {
        switch (et_stream_table_find(eng->reg, key, uc, f->stream_id, &s)) {
        case ET_LOOKUP_LIVE: hit(&x, s); break;
        case ET_LOOKUP_TOMBSTONE: x.outcome = ET_CO_FINISHED; break;
        case ET_LOOKUP_NONE:
        default:
            /* At the origin the CANCEL may have overtaken its OPEN: the tombstone makes the OPEN
             * fail at once. The edge chooses user channels itself, so no OPEN can come late
             * there: no tombstone, or a CANCEL flood would fill the registry. */
            if (eng->side == ET_SIDE_EDGE)
                break;
            if (et_stream_table_bury(eng->reg, key, uc, f->stream_id, recv_ns + ET_TOMBSTONE_NS) <
                0)
                et_logf(ET_LOG_ERROR, "tombstone_failed", "uc=%u", uc);
            break;
        }
    }
    pthread_mutex_unlock(&eng->reg_mu);
    uint64_t reset_ns = et_now_ns();
    if (f->flags & ET_F_CANCEL_CHANNEL)
        et_control_budget(eng); /* a walk of the session's streams: charge it at once */

    /* The RSTs are out: answer first, then let the data workers clean up. */
    et_frame h = {0, uc, f->stream_id, ET_A_CANCEL_ACK, f->flags, NULL};
    uint64_t handle = reset_ns - recv_ns;
    et_msg m = {.cancel_ack = {x.outcome, c->sent_ns,
                               handle > UINT32_MAX ? UINT32_MAX : (uint32_t)handle, x.dropped}};
    if (et_tsock_queue(ts, &h, &m) == ET_OK)
        et_tsock_flush(ts);
    victim *v = x.v;
    for (size_t i = 0; i < x.nv; i++) {
        et_logf(ET_LOG_INFO, "stream_cancel", "uc=%u sid=%u reason=%u handle_ns=%llu path=%s", uc,
                v[i].sid, c->reason, (unsigned long long)handle,
                ts->role == ET_ROLE_CONTROL ? "control" : "data");
        if (v[i].w == ts->w)
            reset_on_owner(ts->w, key, uc, v[i].sid);
        else
            post_reset(v[i].w, key, uc, v[i].sid);
    }
}
