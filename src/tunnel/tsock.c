/* tsock.c: tunnel sockets: nonblocking TLS under edge-triggered epoll, the frame reader and
 * dispatch, the control queue and the record builder (tunnel.h). */
#include "et/tunnel.h"

#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_min_rtt (glibc's stops short of it) */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "et/logf.h"
#include "et/tls.h"

#define READ_SIZE 65536u
/* Bytes one recv() of a tunnel socket takes in for TLS: several 16 KiB records. */
#define TLS_READ_SIZE (64u * 1024u)

static void tsock_on_event(et_reactor *r, et_io *io, uint32_t events);
static bool read_frames(et_tsock *ts);
static void move_task_fn(et_reactor *r, et_task *t);
static void flush_records(et_tsock *ts);

static void flush_task_fn(et_reactor *r, et_task *t)
{
    et_tsock_flush(ET_CONTAINER_OF(t, et_tsock, flush_task));
}

static void close_task_fn(et_reactor *r, et_task *t)
{
    et_tsock *ts = ET_CONTAINER_OF(t, et_tsock, close_task);
    et_tsock_close(ts, ts->fail_code, "control queue overflow");
}

static void free_task_fn(et_reactor *r, et_task *t)
{
    et_tsock *ts = ET_CONTAINER_OF(t, et_tsock, free_task);
    et_tsock_unref(ts); /* the worker list's reference */
}

/* sample_rtt stores the kernel's smoothed RTT of |ts| (for the admin API) and its minimum RTT
 * (for window growth, stream.c); on the owner's thread, which alone may touch the fd. */
static void sample_rtt(et_tsock *ts)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (ts->fd < 0 || getsockopt(ts->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return;
    if (len >= offsetof(struct tcp_info, tcpi_rtt) + sizeof(ti.tcpi_rtt))
        atomic_store_explicit(&ts->rtt_us, ti.tcpi_rtt, memory_order_relaxed);
    if (len >= offsetof(struct tcp_info, tcpi_min_rtt) + sizeof(ti.tcpi_min_rtt))
        atomic_store_explicit(&ts->min_rtt_us, ti.tcpi_min_rtt, memory_order_relaxed);
}

static void arm_keepalive(et_tsock *ts)
{
    if (ts->keepalive_ms == 0)
        return;
    uint64_t at = et_reactor_now(ts->w->r) + (uint64_t)ts->keepalive_ms * 1000000ull;
    if (et_timer_arm(ts->w->r, &ts->timer, at) < 0)
        et_logf(ET_LOG_WARN, "timer_failed", "what=keepalive socket=%u", ts->id);
}

/* keepalive_tick: a socket that has heard nothing for a keepalive interval sends a PING; one
 * that has heard nothing for three is dead (its peer stopped, or the path did) and is closed,
 * even when TCP itself has not noticed (spec §9.2). */
static void keepalive_tick(et_tsock *ts)
{
    uint64_t now = et_reactor_now(ts->w->r);
    uint64_t iv = (uint64_t)ts->keepalive_ms * 1000000ull;
    uint64_t quiet = now - ts->last_rx_ns;
    sample_rtt(ts);
    if (quiet >= 3 * iv) {
        ET_COUNT(ts->w->eng->stats.frame_errors[et_stat_slot(ET_WE_KEEPALIVE_TIMEOUT)]);
        et_logf(ET_LOG_WARN, "keepalive_timeout", "socket=%u peer=%s quiet_ms=%llu", ts->id,
                ts->peer, (unsigned long long)(quiet / 1000000));
        et_tsock_close(ts, ET_WE_KEEPALIVE_TIMEOUT, "keepalive timeout");
        return;
    }
    if (quiet >= iv) {
        et_frame h = {0, 0, 0, ET_A_PING, 0, NULL};
        et_msg m = {.ping = now};
        if (et_tsock_queue(ts, &h, &m) < 0)
            return;
    }
    arm_keepalive(ts);
}

static void handshake_timeout(et_reactor *r, et_timer *t)
{
    et_tsock *ts = ET_CONTAINER_OF(t, et_tsock, timer);
    if (ts->state >= ET_TS_READY) {
        keepalive_tick(ts);
        return;
    }
    if (ts->w->eng->side == ET_SIDE_EDGE)
        ET_COUNT(ts->w->eng->stats.handshake_refused[et_stat_slot(ET_WE_HANDSHAKE_TIMEOUT)]);
    et_logf(ET_LOG_WARN, "handshake_refused", "reason=handshake_timeout peer=%s", ts->peer);
    et_tsock_close(ts, ET_WE_HANDSHAKE_TIMEOUT, "handshake timeout");
}

et_tsock *et_tsock_new(et_worker *w, int fd, et_tsock_state state, uint8_t role)
{
    et_tsock *ts = calloc(1, sizeof(*ts));
    if (ts == NULL) {
        close(fd);
        return NULL;
    }
    atomic_init(&ts->refs, 1);
    atomic_init(&ts->state, (uint8_t)state);
    ts->w = w;
    ts->fd = fd;
    ts->role = role;
    ts->id = atomic_fetch_add(&w->eng->next_socket_id, 1);
    ts->peer_max_frame = ET_FRAME_MAX_DEFAULT;
    ts->peer_window = ET_WINDOW_DEFAULT;
    et_task_init(&ts->flush_task, flush_task_fn);
    et_task_init(&ts->free_task, free_task_fn);
    et_task_init(&ts->move_task, move_task_fn);
    et_task_init(&ts->close_task, close_task_fn);
    et_timer_init(&ts->timer, handshake_timeout);
    et_io_init(&ts->io, tsock_on_event);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        et_addr_format((struct sockaddr *)&ss, ts->peer, sizeof(ts->peer));

    /* malloc, not calloc: the pages of records a socket never fills stay untouched (an idle
     * socket writes small control records into the first one only). */
    ts->rec = malloc(ET_RECORD_MAX * ET_REC_BATCH);
    ts->ssl = SSL_new(atomic_load_explicit(&w->eng->ssl_ctx, memory_order_acquire));
    if (ts->rec == NULL || ts->ssl == NULL || et_tls_set_fd(ts->ssl, fd, TLS_READ_SIZE) < 0 ||
        et_frame_reader_init(&ts->rd, ET_FRAME_MAX_DEFAULT, READ_SIZE) < 0 ||
        et_sock_set_nodelay(fd) < 0)
        goto err;
    if (w->eng->side == ET_SIDE_EDGE)
        SSL_set_accept_state(ts->ssl);
    else
        SSL_set_connect_state(ts->ssl);
    if (role == ET_ROLE_DATA && et_sock_set_notsent_lowat(fd, ET_DATA_LOWAT) < 0)
        goto err;
    const char *cc = w->eng->congestion;
    if (cc[0] != '\0' && et_sock_set_congestion(fd, cc) < 0) {
        /* Not fatal: the socket runs the host's default. Said once at WARN (a host that lacks
         * it or keeps it for root lacks it for every socket and redial), then at DEBUG. */
        static atomic_bool warned;
        bool first = !atomic_exchange_explicit(&warned, true, memory_order_relaxed);
        et_logf(first ? ET_LOG_WARN : ET_LOG_DEBUG, "sockopt_failed",
                "socket=%u opt=TCP_CONGESTION value=%s err=\"%s\"", ts->id, cc, strerror(errno));
    }
    et_sock_congestion(fd, ts->cc);
    if (et_reactor_add(w->r, fd, &ts->io) < 0)
        goto err;
    if (et_timer_arm(w->r, &ts->timer, et_reactor_now(w->r) + ET_HANDSHAKE_NS) < 0) {
        et_reactor_del(w->r, &ts->io);
        goto err;
    }
    ts->next = w->tsocks;
    w->tsocks = ts;
    return ts;
err:
    SSL_free(ts->ssl);
    et_frame_reader_cleanup(&ts->rd);
    close(fd);
    free(ts->rec);
    free(ts);
    return NULL;
}

void et_tsock_ref(et_tsock *ts)
{
    atomic_fetch_add_explicit(&ts->refs, 1, memory_order_relaxed);
}

void et_tsock_unref(et_tsock *ts)
{
    if (ts == NULL || atomic_fetch_sub_explicit(&ts->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Closed on its worker before the worker's reference went; only memory is left. */
    free(ts->ctrl);
    free(ts->rec);
    free(ts);
}

static void fail_stream(et_stream *s, void *arg)
{
    if (s->ts == arg)
        (void)et_stream_reset(s);
}

void et_tsock_close(et_tsock *ts, uint16_t code, const char *why)
{
    if (ts->state == ET_TS_CLOSED)
        return;
    et_worker *w = ts->w;
    bool was_up = ts->state >= ET_TS_READY;
    if (code != 0 && ts->state >= ET_TS_HELLO) {
        /* Best effort: the ERROR goes out if the socket can take it now. */
        et_frame h = {0, 0, 0, ET_A_ERROR, 0, NULL};
        et_msg m = {.error = {code, {(const uint8_t *)why, why ? strlen(why) : 0}}};
        if (m.error.text.n > ET_TEXT_MAX)
            m.error.text.n = ET_TEXT_MAX;
        ts->ready.head = ts->ready.tail = NULL; /* no more DATA ahead of it */
        ts->ctrl_len = 0;                       /* nor anything else: it is the last word */
        et_tsock_drop_built(ts, NULL);
        ts->failed = false;
        if (et_tsock_queue(ts, &h, &m) == ET_OK) {
            ts->writable = true;
            et_tsock_flush(ts);
        }
    }
    if (ts->state == ET_TS_CLOSED)
        return; /* the flush above failed and closed it */
    atomic_store(&ts->state, ET_TS_CLOSED);
    char hex[2 * ET_SESSION_ID_LEN + 1] = "none";
    if (ts->sess != NULL)
        et_session_hex(ts->sess->id, hex);
    et_logf(was_up ? ET_LOG_INFO : ET_LOG_DEBUG, "socket_down",
            "socket=%u role=%s session=%s peer=%s code=%s why=\"%s\"", ts->id,
            ts->role == ET_ROLE_CONTROL ? "control" : "data", hex, ts->peer,
            et_wire_error_name(code), why ? why : "");
    if (was_up)
        ET_COUNT(w->eng->stats.sockets_down);
    et_timer_cancel(w->r, &ts->timer);
    et_task_cancel(w->r, &ts->flush_task);
    et_task_cancel(w->r, &ts->move_task);
    et_task_cancel(w->r, &ts->close_task);
    et_reactor_del(w->r, &ts->io);
    if (w->eng->ops->on_tsock_closed != NULL)
        w->eng->ops->on_tsock_closed(ts);
    /* Streams on this socket lose their tunnel: reset their local ends. */
    if (ts->nstreams > 0)
        et_stream_table_each(w->streams, fail_stream, ts);
    ts->ready.head = ts->ready.tail = NULL;
    SSL_free(ts->ssl);
    ts->ssl = NULL;
    close(ts->fd);
    ts->fd = -1;
    et_frame_reader_cleanup(&ts->rd);
    if (ts->sess != NULL) {
        et_session_unref(ts->sess, w->eng->session_free_side);
        ts->sess = NULL;
    }
    /* Unlink from the worker's list now; free the memory after the current round. */
    for (et_tsock **pp = &w->tsocks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == ts) {
            *pp = ts->next;
            break;
        }
    }
    et_reactor_defer(w->r, &ts->free_task);
}

void et_tsock_goaway(et_tsock *ts, uint32_t drain_ms, const char *text)
{
    if (ts->state != ET_TS_READY && ts->state != ET_TS_DRAINING)
        return;
    et_frame h = {0, 0, 0, ET_A_GOAWAY, 0, NULL};
    et_msg m = {.goaway = {ET_WE_NONE, drain_ms, {(const uint8_t *)text, strlen(text)}}};
    (void)et_tsock_queue(ts, &h, &m); /* a failure closes the socket, which drains it too */
}

void et_tsock_schedule_flush(et_tsock *ts)
{
    if (ts->state != ET_TS_CLOSED)
        et_reactor_defer(ts->w->r, &ts->flush_task);
}

int et_tsock_queue(et_tsock *ts, const et_frame *h, const et_msg *m)
{
    const et_action_info *info = et_action_lookup(h->action);
    ET_ENSURE(info != NULL && ts->state != ET_TS_CLOSED, ET_E_USAGE);
    size_t need = ET_FRAME_HEADER_LEN + (h->action == ET_A_DATA ? m->data.n : info->max_payload);
    ET_ENSURE(!ts->failed, ET_E_CLOSED);
    if (ts->ctrl_cap - ts->ctrl_len < need) {
        size_t cap = ts->ctrl_cap ? ts->ctrl_cap : 1024;
        while (cap - ts->ctrl_len < need)
            cap *= 2;
        uint8_t *p = ts->ctrl_len + need > ET_CTRL_QUEUE_MAX ? NULL : realloc(ts->ctrl, cap);
        if (p == NULL) {
            /* A peer that does not read: close it, but not from under our callers, who may be
             * in the middle of a stream of this socket (the close fails its streams). */
            ts->failed = true;
            ts->fail_code = ET_WE_INTERNAL;
            et_reactor_defer(ts->w->r, &ts->close_task);
            return ET_RAISE(ET_E_LIMIT);
        }
        ts->ctrl = p;
        ts->ctrl_cap = cap;
    }
    int n = et_frame_encode(ts->ctrl + ts->ctrl_len, ts->ctrl_cap - ts->ctrl_len, h, m);
    if (n < 0) {
        et_logf(ET_LOG_ERROR, "encode_failed", "action=%s", info->name);
        return n;
    }
    ts->ctrl_len += (size_t)n;
    et_tsock_schedule_flush(ts);
    return ET_OK;
}

/* pack_control copies whole queued control frames into |dst| (at most one record) and takes
 * them off the queue; returns the bytes copied. */
static size_t pack_control(et_tsock *ts, uint8_t *dst)
{
    size_t len = 0;
    size_t off = 0;
    while (off < ts->ctrl_len) {
        uint32_t plen = (uint32_t)ts->ctrl[off] << 24 | (uint32_t)ts->ctrl[off + 1] << 16 |
                        (uint32_t)ts->ctrl[off + 2] << 8 | ts->ctrl[off + 3];
        size_t flen = ET_FRAME_HEADER_LEN + plen; /* our own encoder wrote it */
        if (len + flen > ET_RECORD_MAX && len > 0)
            break;
        if (flen > ET_RECORD_MAX)
            abort(); /* no control frame is larger than a record (frame.h caps) */
        memcpy(dst + len, ts->ctrl + off, flen);
        len += flen;
        off += flen;
    }
    if (off > 0) {
        memmove(ts->ctrl, ts->ctrl + off, ts->ctrl_len - off);
        ts->ctrl_len -= off;
    }
    return len;
}

void et_tsock_drop_built(et_tsock *ts, et_stream *s)
{
    /* The record SSL_write already tried must go as it is; past it, a batch's records. */
    unsigned keep = ts->rec_i + (ts->rec_tried ? 1u : 0u);
    if (s == NULL) {
        if (keep < ts->rec_n)
            ts->rec_n = (uint8_t)keep;
    } else if (s == ts->batch_s) {
        unsigned n = keep;
        while (n < ts->rec_n && !(ts->rec_batch & (1u << n)))
            n++; /* an overtaking record not yet tried: not |s|'s, it goes */
        if (n < ts->rec_n)
            ts->rec_n = (uint8_t)n; /* the batch slots are the last ones */
    }
    if (s == NULL || s == ts->batch_s) {
        ts->batch_s = NULL;
        ts->rec_batch = 0;
    }
}

/* build_mixed fills one record at |dst|: whole control frames first, then (with |data|) DATA
 * from ready streams in round-robin order, none from |skip| (whose earlier DATA is built and not
 * yet written). Returns its length; |*took_data| says whether it holds DATA. */
static size_t build_mixed(et_tsock *ts, uint8_t *dst, et_stream *skip, bool data, bool *took_data)
{
    size_t len = pack_control(ts, dst);
    size_t ctrl = len;
    *took_data = false;
    if (!data || ts->state < ET_TS_READY || ts->ctrl_len > 0)
        return len; /* DATA only once every control frame is out: a stream's OPEN (queued
                     * there) must go before its first DATA, and control frames go first */
    bool parked = skip != NULL && skip->in_ready;
    if (parked)
        et_stream_ready_park(skip);
    /* Each stream gets one turn per pass; one that still has bytes and credit goes back to
     * the tail, so streams share records fairly. */
    unsigned turns = 0;
    while (ts->ready.head != NULL && len + ET_FRAME_HEADER_LEN < ET_RECORD_MAX && turns++ < 1024) {
        size_t n = et_stream_pull(ts->ready.head, dst + len, ET_RECORD_MAX - len);
        len += n;
        if (ts->state == ET_TS_CLOSED)
            break;
    }
    if (parked && ts->batch_s == skip && ts->state != ET_TS_CLOSED) /* still open */
        et_stream_update_ready(skip);
    *took_data = len > ctrl;
    return len;
}

/* build_records fills ts->rec: one record (build_mixed); or, when one stream alone is ready
 * and no control frame waits, up to ET_REC_BATCH records of it from one read of its socket. */
static void build_records(et_tsock *ts)
{
    ts->rec_i = 0;
    ts->rec_n = 0;
    ts->rec_tried = false;
    ts->rec_batch = 0;
    ts->data_overtook = false;
    ts->batch_s = NULL;
    et_stream *only = ts->ready.head;
    if (ts->state >= ET_TS_READY && ts->ctrl_len == 0 && only != NULL && only == ts->ready.tail) {
        /* One stream (a bulk transfer): several records from one readv() of its socket,
         * written one record per SSL_write; control frames and other streams' DATA that come
         * meanwhile still go ahead of those not yet written (flush_records). */
        unsigned k = et_stream_pull_records(only, ts->rec, ts->rec_lens);
        if (ts->state == ET_TS_CLOSED)
            return;
        if (k > 0) {
            ts->rec_n = (uint8_t)k;
            if (k > 1 && !only->closed) {
                ts->batch_s = only;
                ts->rec_batch = (uint8_t)((1u << k) - 1u);
            }
            return;
        }
    }
    bool took;
    size_t len = build_mixed(ts, ts->rec, NULL, true, &took);
    if (ts->state != ET_TS_CLOSED && len > 0) {
        ts->rec_lens[0] = (uint16_t)len;
        ts->rec_n = 1;
    }
}

/* others_data_ready: a stream besides the built records' own has DATA to go. */
static bool others_data_ready(const et_tsock *ts)
{
    const et_stream *h = ts->ready.head;
    return h != NULL && (h != ts->batch_s || h != ts->ready.tail);
}

void et_tsock_flush(et_tsock *ts)
{
    if (ts->state < ET_TS_HELLO || ts->state == ET_TS_CLOSED || ts->moving)
        return;
    if (ts->flushing) {
        /* Called from inside the record builder (a stream cancelled while it was pulled): the
         * record being built must not be overwritten; flush again after this round. */
        et_tsock_schedule_flush(ts);
        return;
    }
    et_task_cancel(ts->w->r, &ts->flush_task);
    ts->flushing = true;
    flush_records(ts);
    ts->flushing = false;
}

/* The most DATA one flush writes before it lets the reactor look at its other events: a flush
 * that wrote this much goes on in a deferred task (reactor.h step 7), and one that already runs
 * in a task goes on in the next iteration's, after epoll_wait and the inbox. While the peer
 * keeps taking bytes (large windows on a fast link), a flush would otherwise run until the
 * socket stops being writable, and a cancel for this reactor (a CANCEL read on another socket,
 * one posted by the control worker, a client's reset) would wait for all of it. One batch of
 * records (ET_REC_BATCH): about 0.1 ms of one stream's 500-600 MB/s here. */
#define FLUSH_BUDGET (ET_REC_BATCH * ET_RECORD_MAX)

static void flush_records(et_tsock *ts)
{
    size_t budget = FLUSH_BUDGET;
    while (ts->writable) {
        if (budget == 0) {
            ET_COUNT(ts->w->eng->stats.flush_yields);
            et_tsock_schedule_flush(ts);
            return;
        }
        if (ts->rec_i == ts->rec_n) {
            build_records(ts);
            if (ts->state == ET_TS_CLOSED)
                return;
            if (ts->rec_n == 0) {
                if (ts->ctrl_len > 0)
                    continue; /* a cancel queued while the build read: it goes now */
                return;
            }
        } else if (ts->rec_i > 0 && !ts->rec_tried &&
                   (ts->ctrl_len > 0 || (!ts->data_overtook && others_data_ready(ts)))) {
            /* Control frames, and other streams' DATA (one record of it per record of the
             * batch, so neither starves), overtake the built records not yet handed to
             * SSL_write: into the slot just written, which goes next. */
            bool took;
            unsigned slot = ts->rec_i - 1u;
            size_t len = build_mixed(ts, ts->rec + slot * ET_RECORD_MAX, ts->batch_s,
                                     !ts->data_overtook, &took);
            if (ts->state == ET_TS_CLOSED)
                return;
            if (len > 0) {
                ts->rec_i = (uint8_t)slot;
                ts->rec_lens[slot] = (uint16_t)len;
                ts->rec_batch &= (uint8_t) ~(1u << slot);
                ts->data_overtook = ts->data_overtook || took;
                ET_COUNT(ts->w->eng->stats.record_overtakes);
            }
            if (ts->rec_i == ts->rec_n)
                continue; /* the batch went meanwhile (its stream ended) */
        }
        ERR_clear_error();
        int n = SSL_write(ts->ssl, ts->rec + ts->rec_i * ET_RECORD_MAX, ts->rec_lens[ts->rec_i]);
        if (n > 0) {
            budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
            if (ts->rec_batch & (1u << ts->rec_i))
                ts->data_overtook = false;
            ts->rec_i++;
            ts->rec_tried = false;
            continue;
        }
        int e = SSL_get_error(ts->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) {
            ts->rec_tried = true;
            ts->writable = false;
            return;
        }
        if (e == SSL_ERROR_WANT_READ) {
            ts->rec_tried = true;
            return; /* resumes when readable (TLS 1.3 key update) */
        }
        char buf[256];
        et_logf(ET_LOG_WARN, "tls_write_failed", "socket=%u err=%d detail=\"%s\"", ts->id, e,
                et_tls_err_string(buf, sizeof(buf)));
        et_tsock_close(ts, 0, "tls write failed");
        return;
    }
}

void et_tsock_set_ready(et_tsock *ts)
{
    atomic_store(&ts->state, ET_TS_READY);
    et_timer_cancel(ts->w->r, &ts->timer);
    ts->last_rx_ns = et_reactor_now(ts->w->r);
    arm_keepalive(ts);
    sample_rtt(ts);
    if (ts->role == ET_ROLE_DATA && et_sock_set_notsent_lowat(ts->fd, ET_DATA_LOWAT) < 0)
        et_logf(ET_LOG_WARN, "sockopt_failed", "socket=%u opt=TCP_NOTSENT_LOWAT", ts->id);
    ET_COUNT(ts->w->eng->stats.sockets_up);
}

/* --- dispatch --------------------------------------------------------------------------- */

static void stream_error(et_tsock *ts, const et_frame *f, uint16_t code)
{
    ET_COUNT(ts->w->eng->stats.frame_errors[et_stat_slot(code)]);
    et_frame h = {0, f->user_channel, f->stream_id, ET_A_ERROR, 0, NULL};
    et_msg m = {.error = {code, {NULL, 0}}};
    (void)et_tsock_queue(ts, &h, &m);
}

/* stream_for finds the live stream a stream-scoped frame names, or handles the miss (a late
 * frame for a tombstone is dropped; a stream never seen is a stream error). */
static et_stream *stream_for(et_tsock *ts, const et_frame *f)
{
    et_stream *s = NULL;
    switch (
        et_stream_table_find(ts->w->streams, ts->sess->key, f->user_channel, f->stream_id, &s)) {
    case ET_LOOKUP_LIVE:
        if (s->ts == ts)
            return s;
        stream_error(ts, f, ET_WE_UNKNOWN_STREAM);
        return NULL;
    case ET_LOOKUP_TOMBSTONE: ET_COUNT(ts->w->eng->stats.late_frames_dropped); return NULL;
    case ET_LOOKUP_NONE:
    default: stream_error(ts, f, ET_WE_UNKNOWN_STREAM); return NULL;
    }
}

static void on_cancel_ack(et_tsock *ts, const et_frame *f, const et_cancel_ack *a)
{
    ET_COUNT(ts->w->eng->stats.cancel_acks);
    uint64_t now = et_now_ns();
    if (now >= a->echo_ns) /* echo_ns is our own clock: a forged one only skews our metric */
        et_stats_cancel_rtt(&ts->w->eng->stats, now - a->echo_ns);
    char hex[2 * ET_SESSION_ID_LEN + 1];
    et_session_hex(ts->sess->id, hex);
    et_logf(ET_LOG_INFO, "cancel_ack",
            "session=%s uc=%u sid=%u outcome=%u rtt_ns=%llu handle_ns=%u dropped=%llu path=%s", hex,
            f->user_channel, f->stream_id, a->outcome,
            (unsigned long long)(now > a->echo_ns ? now - a->echo_ns : 0), a->handle_ns,
            (unsigned long long)a->dropped_bytes, ts->role == ET_ROLE_CONTROL ? "control" : "data");
}

/* dispatch handles one frame; returns ET_OK, or a wire error code (> 0) that closes |ts|. */
static uint16_t dispatch(et_tsock *ts, const et_frame *f)
{
    et_engine *eng = ts->w->eng;
    const et_action_info *info = et_action_lookup(f->action);
    uint8_t incoming = eng->side == ET_SIDE_EDGE ? ET_DIR_ORIGIN_TO_EDGE : ET_DIR_EDGE_TO_ORIGIN;
    /* Before the handshake only HELLO (WELCOME or ERROR) is expected: anything else is out of
     * order (unexpected), whatever its direction. */
    if (ts->state == ET_TS_HELLO &&
        !(eng->side == ET_SIDE_EDGE ? f->action == ET_A_HELLO
                                    : f->action == ET_A_WELCOME || f->action == ET_A_ERROR))
        return ET_WE_UNEXPECTED;
    if (!(info->dirs & incoming))
        return ET_WE_WRONG_SOCKET;
    et_msg m;
    if (et_msg_parse(f, &m) < 0)
        return ET_WE_BAD_PAYLOAD;

    if (ts->state == ET_TS_HELLO) {
        int rv = eng->ops->on_handshake_frame(ts, f, &m);
        if (rv < 0)
            return et_err_class(rv) == ET_CLASS_PROTOCOL ? et_err_detail(rv) : ET_WE_INTERNAL;
        return ET_WE_NONE;
    }
    if (info->handshake)
        return ET_WE_UNEXPECTED;
    if (!(info->sockets & (ts->role == ET_ROLE_CONTROL ? ET_SOCK_CONTROL : ET_SOCK_DATA)))
        return ET_WE_WRONG_SOCKET;

    et_stream *s;
    switch (f->action) {
    case ET_A_OPEN: {
        /* An OPEN the edge sent before our GOAWAY reached it is still served (spec §5.12). */
        if (ts->state != ET_TS_READY && ts->state != ET_TS_DRAINING)
            return ET_WE_UNEXPECTED;
        et_lookup l = et_stream_table_find(ts->w->streams, ts->sess->key, f->user_channel,
                                           f->stream_id, NULL);
        if (l == ET_LOOKUP_TOMBSTONE) {
            /* cancelled before it opened (the CANCEL overtook it): fail at once */
            ET_COUNT(eng->stats.opens_refused_tombstone);
            return ET_WE_NONE;
        }
        if (l == ET_LOOKUP_LIVE) {
            stream_error(ts, f, ET_WE_STREAM_EXISTS);
            return ET_WE_NONE;
        }
        int rv = eng->ops->on_open(ts, f, &m.open);
        return rv < 0 && et_err_class(rv) == ET_CLASS_PROTOCOL ? et_err_detail(rv) : ET_WE_NONE;
    }
    case ET_A_DATA: {
        ET_COUNT_N(eng->stats.bytes_from_peer, f->length);
        ET_COUNT_N(ts->sess->bytes_from_peer, f->length);
        if ((s = stream_for(ts, f)) == NULL)
            return ET_WE_NONE;
        et_frame next;
        bool more = et_frame_reader_peek(&ts->rd, &next) == ET_FRAME_COMPLETE &&
                    next.action == ET_A_DATA && next.user_channel == f->user_channel &&
                    next.stream_id == f->stream_id;
        et_stream_on_data(s, m.data.p, m.data.n, more);
        return ET_WE_NONE;
    }
    case ET_A_END:
        if ((s = stream_for(ts, f)) != NULL)
            et_stream_on_end(s);
        return ET_WE_NONE;
    case ET_A_WINDOW:
        if ((s = stream_for(ts, f)) != NULL)
            et_stream_on_window(s, m.window);
        return ET_WE_NONE;
    case ET_A_CANCEL: et_cancel_received(ts, f, &m.cancel); return ET_WE_NONE;
    case ET_A_CANCEL_ACK: on_cancel_ack(ts, f, &m.cancel_ack); return ET_WE_NONE;
    case ET_A_PING: {
        et_frame h = {0, 0, 0, ET_A_PONG, 0, NULL};
        (void)et_tsock_queue(ts, &h, &m);
        return ET_WE_NONE;
    }
    case ET_A_PONG: return ET_WE_NONE;
    case ET_A_GOAWAY:
        atomic_store(&ts->state, ET_TS_DRAINING);
        et_logf(ET_LOG_INFO, "goaway", "socket=%u role=%s code=%s drain_ms=%u", ts->id,
                ts->role == ET_ROLE_CONTROL ? "control" : "data", et_wire_error_name(m.goaway.code),
                m.goaway.drain_ms);
        if (eng->ops->on_goaway != NULL)
            eng->ops->on_goaway(ts, &m.goaway);
        return ET_WE_NONE;
    case ET_A_HEALTH:
    case ET_A_HEALTH_ANSWER:
    case ET_A_PUSH:
        /* The table already checked the direction and socket kind: the side decides. */
        if (eng->ops->on_control_frame != NULL)
            eng->ops->on_control_frame(ts, f, &m);
        else
            et_logf(ET_LOG_DEBUG, "frame_ignored", "socket=%u action=%s", ts->id, info->name);
        return ET_WE_NONE;
    case ET_A_ERROR:
        if (f->user_channel == 0) {
            et_logf(ET_LOG_WARN, "peer_error", "socket=%u code=%s", ts->id,
                    et_wire_error_name(m.error.code));
            et_tsock_close(ts, 0, "peer sent ERROR");
            return ET_WE_NONE;
        }
        if (et_stream_table_find(ts->w->streams, ts->sess->key, f->user_channel, f->stream_id,
                                 &s) == ET_LOOKUP_LIVE &&
            s->ts == ts)
            (void)et_stream_reset(s);
        return ET_WE_NONE;
    default: return ET_WE_UNKNOWN_ACTION;
    }
}

/* read_frames hands every complete frame in the reader to dispatch; returns false once |ts| is
 * closed. */
static bool read_frames(et_tsock *ts)
{
    for (;;) {
        et_frame f;
        int rv = et_frame_reader_next(&ts->rd, &f);
        if (rv == ET_FRAME_NEED_MORE) {
            et_stream_gather_flush(ts); /* before the reader moves the bytes it points at */
            return ts->state != ET_TS_CLOSED && !ts->moving;
        }
        uint16_t code = rv < 0 ? et_err_detail(rv) : dispatch(ts, &f);
        if (ts->state != ET_TS_CLOSED && (ts->moving || code != ET_WE_NONE))
            et_stream_gather_flush(ts);
        if (ts->state == ET_TS_CLOSED || ts->moving)
            return false;
        if (code != ET_WE_NONE) {
            et_engine *eng = ts->w->eng;
            bool handshake = ts->state == ET_TS_HELLO;
            if (handshake && eng->side == ET_SIDE_EDGE)
                ET_COUNT(eng->stats.handshake_refused[et_stat_slot(code)]);
            else
                ET_COUNT(eng->stats.frame_errors[et_stat_slot(code)]);
            et_logf(ET_LOG_WARN, handshake ? "handshake_refused" : "frame_error",
                    "reason=%s peer=%s socket=%u", et_wire_error_name(code), ts->peer, ts->id);
            et_tsock_close(ts, code, et_wire_error_name(code));
            return false;
        }
    }
}

/* Bytes one read turn may take before yielding: a saturated socket must not keep its worker
 * from the inbox, where cancels from other workers wait. */
#define READ_BUDGET (64u * 1024u)

static void read_loop(et_tsock *ts)
{
    size_t budget = READ_BUDGET;
    while (ts->readable && ts->state != ET_TS_CLOSED && !ts->moving) {
        if (budget == 0) {
            et_io_resume(ts->w->r, &ts->io, EPOLLIN);
            return;
        }
        /* Take in every record already here (while a whole one still fits), then hand the
         * frames out together: consecutive DATA of one stream can then be written to its local
         * socket as one burst (MSG_MORE), one wake-up of the reader instead of one a record. */
        int e = SSL_ERROR_NONE;
        bool got = false;
        for (;;) {
            size_t avail;
            uint8_t *p = et_frame_reader_space(&ts->rd, &avail);
            if (p == NULL) {
                if (got)
                    break;
                et_tsock_close(ts, ET_WE_INTERNAL, "reader full");
                return;
            }
            if (got && (avail < ET_RECORD_MAX || budget == 0))
                break;
            ERR_clear_error();
            int n = SSL_read(ts->ssl, p, avail > INT32_MAX ? INT32_MAX : (int)avail);
            if (n <= 0) {
                e = SSL_get_error(ts->ssl, n);
                break;
            }
            et_frame_reader_commit(&ts->rd, (size_t)n);
            got = true;
            budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
        }
        if (got) {
            ts->last_rx_ns = et_reactor_now(ts->w->r);
            if (!read_frames(ts))
                return;
            if (ts->w == ts->w->eng->control)
                et_control_budget(ts->w->eng);
        }
        if (e == SSL_ERROR_NONE)
            continue;
        if (e == SSL_ERROR_WANT_READ) {
            ts->readable = false;
            return;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            ts->writable = false;
            return;
        }
        char buf[256];
        et_logf(e == SSL_ERROR_ZERO_RETURN ? ET_LOG_INFO : ET_LOG_WARN, "tls_read_end",
                "socket=%u err=%d detail=\"%s\"", ts->id, e, et_tls_err_string(buf, sizeof(buf)));
        et_tsock_close(ts, 0, e == SSL_ERROR_ZERO_RETURN ? "peer closed" : "tls read failed");
        return;
    }
}

static void drive_handshake(et_tsock *ts)
{
    et_engine *eng = ts->w->eng;
    ERR_clear_error();
    int rc = SSL_do_handshake(ts->ssl);
    if (rc == 1) {
        atomic_store(&ts->state, ET_TS_HELLO);
        /* The read buffer (et_tls_set_fd) may hold records that came with the peer's last
         * handshake message, even when this event was EPOLLOUT only: the kernel will not say
         * so again, so read on until WANT_READ. */
        ts->readable = true;
        if (eng->ops->on_tls_done != NULL && eng->ops->on_tls_done(ts) < 0)
            et_tsock_close(ts, 0, "handshake setup failed");
        return;
    }
    int e = SSL_get_error(ts->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        ts->readable = false;
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        ts->writable = false;
        return;
    }
    char buf[256];
    if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
        /* The peer went away mid-handshake (EOF or reset): nothing was refused. */
        et_logf(ET_LOG_DEBUG, "handshake_aborted", "peer=%s err=%d", ts->peer, e);
        et_tsock_close(ts, 0, "peer left during TLS handshake");
        return;
    }
    if (eng->side == ET_SIDE_EDGE) {
        ET_COUNT(eng->stats.handshake_refused_tls);
        et_logf(ET_LOG_WARN, "handshake_refused", "reason=tls peer=%s detail=\"%s\"", ts->peer,
                et_tls_err_string(buf, sizeof(buf)));
    } else {
        et_logf(ET_LOG_WARN, "tls_failed", "peer=%s detail=\"%s\"", ts->peer,
                et_tls_err_string(buf, sizeof(buf)));
    }
    et_tsock_close(ts, 0, "tls handshake failed");
}

static void tsock_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    et_tsock *ts = ET_CONTAINER_OF(io, et_tsock, io);
    if (ts->moving)
        return; /* on its way to another worker, which will look at it again */
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        ts->readable = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        ts->writable = true;
    if (ts->state == ET_TS_CONNECTING) {
        if (!ts->writable)
            return;
        if (et_sock_connect_result(ts->fd) < 0) {
            et_logf(ET_LOG_WARN, "connect_failed", "socket=%u errno=%d", ts->id, errno);
            et_tsock_close(ts, 0, "connect failed");
            return;
        }
        atomic_store(&ts->state, ET_TS_TLS);
    }
    if (ts->state == ET_TS_TLS) {
        drive_handshake(ts);
        if (ts->state != ET_TS_HELLO)
            return;
    }
    if (ts->readable)
        read_loop(ts);
    if (ts->state != ET_TS_CLOSED && !ts->moving)
        et_tsock_flush(ts);
}

/* --- moving to another worker ------------------------------------------------------------- */

static void adopt(et_reactor *r, void *arg)
{
    et_tsock *ts = arg;
    et_worker *w = ts->w; /* already the new worker */
    ts->moving = false;
    ts->next = w->tsocks;
    w->tsocks = ts;
    if (et_reactor_add(w->r, ts->fd, &ts->io) < 0) {
        et_tsock_close(ts, ET_WE_INTERNAL, "cannot adopt socket");
        return;
    }
    /* A control socket joins its session only here, on the worker that writes to it. */
    if (ts->role == ET_ROLE_CONTROL && ts->sess != NULL) {
        et_tsock *old = NULL;
        if (et_session_attach(ts->sess, ts, &old) < 0) {
            et_tsock_close(ts, ET_WE_LIMIT_SOCKETS, "cannot join session");
            return;
        }
        if (old != NULL) {
            et_tsock_close(old, ET_WE_SHUTDOWN, "replaced by a new control socket");
            et_tsock_unref(old);
        }
    }
    if (ts->role == ET_ROLE_DATA && ts->sess != NULL)
        et_session_data_ready(ts->sess, ts); /* streams may come to it here now */
    if (ts->state >= ET_TS_READY)
        arm_keepalive(ts); /* the timer stayed with the old worker */
    /* Frames may wait in the reader (read before the move) and records in TLS: go on. */
    ts->readable = ts->writable = true;
    if (read_frames(ts))
        tsock_on_event(r, &ts->io, 0);
}

/* move_task_fn runs after the handler that decided the move has returned, so nothing on this
 * worker touches the socket after it is posted to its new worker. */
static void move_task_fn(et_reactor *r, et_task *t)
{
    et_tsock *ts = ET_CONTAINER_OF(t, et_tsock, move_task);
    et_worker *from = ts->w, *to = ts->move_to;
    if (ts->state == ET_TS_CLOSED)
        return;
    et_timer_cancel(from->r, &ts->timer);
    et_task_cancel(from->r, &ts->flush_task);
    et_reactor_del(from->r, &ts->io);
    for (et_tsock **pp = &from->tsocks; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == ts) {
            *pp = ts->next;
            break;
        }
    }
    ts->next = NULL;
    ts->w = to;
    if (et_reactor_post(to->r, adopt, ts) < 0) {
        /* Cannot hand it over: close it here, where it still is. */
        ET_COUNT(from->eng->stats.inbox_full);
        ts->w = from;
        ts->moving = false;
        ts->next = from->tsocks;
        from->tsocks = ts;
        et_tsock_close(ts, ET_WE_INTERNAL, "cannot move socket");
    }
}

void et_tsock_move(et_tsock *ts, et_worker *to)
{
    if (to == ts->w || ts->state == ET_TS_CLOSED || ts->moving)
        return;
    ts->moving = true;
    ts->move_to = to;
    et_reactor_defer(ts->w->r, &ts->move_task);
}
