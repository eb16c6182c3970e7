/* http.c: the edge's public HTTP listener: read each connection's request head (bounded in
 * size and time) only to route it by Host, answer the errors of PRODUCT.md's table, and hand
 * the connection with the bytes already read to the worker that owns the chosen data socket. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "et/http_head.h"
#include "et/logf.h"
#include "et/tls.h"

#include "edge_internal.h"

#define LINGER_NS (2ull * 1000000000ull) /* draining a client after an error answer */

typedef struct http_conn {
    et_io io;
    et_worker *w;
    int fd;       /* owned until handed over */
    uint8_t *buf; /* owned: ET_HTTP_HEAD_MAX bytes */
    size_t len;
    bool answered; /* an error went out: drain the client until EOF or the linger time */
    bool waiting;  /* head complete, no session serves its host yet: retried on the timer */
    uint64_t wait_until, wait_step;
    et_http_head head;   /* the incremental parser's state and, once complete, the head */
    unsigned reroutes;   /* times its data socket went away before the stream could open */
    int32_t client_slot; /* its count in the per-address limit (client_admit), or -1 */
    et_timer timer;
    et_task free_task;
} http_conn;

static http_conn *conn_new(et_worker *w, int fd, uint8_t *buf);

static void conn_free_task(et_reactor *r, et_task *t)
{
    http_conn *c = ET_CONTAINER_OF(t, http_conn, free_task);
    free(c->buf);
    free(c);
}

/* conn_end forgets |c| (its fd closed or handed over) and frees it after the round. */
static void conn_end(http_conn *c, bool close_fd)
{
    et_timer_cancel(c->w->r, &c->timer);
    et_reactor_del(c->w->r, &c->io);
    if (close_fd) { /* else the handoff carries both */
        atomic_fetch_sub(&hub_of(c->w->eng)->pending, 1);
        client_release(c->w->eng, c->client_slot);
        c->client_slot = -1;
    }
    if (close_fd && c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    et_reactor_defer(c->w->r, &c->free_task);
}

/* answer writes the error page |status| and half-closes; the client is drained until it closes
 * (or LINGER_NS), so the page is not lost to a reset when request bytes are still unread. */
static void answer(http_conn *c, int status, const char *why)
{
    et_engine *eng = c->w->eng;
    char page[512];
    int n = et_http_error_response(status, page, sizeof(page));
    /* a routing answer names its host (checked by the head parser: [a-z0-9.-] only) */
    bool routed = status == 404 || status == 429 || status == 503;
    et_logf(ET_LOG_INFO, "http_answer", "status=%d why=%s host=%s", status, why,
            routed && c->head.host[0] != '\0' ? c->head.host : "-");
    ET_COUNT(eng->stats.public_refused);
    ET_COUNT(eng->stats.http_answers[et_http_status_slot(status)]);
    if (n > 0)
        (void)send(c->fd, page, (size_t)n, MSG_NOSIGNAL);
    shutdown(c->fd, SHUT_WR);
    c->answered = true;
    if (et_timer_arm(c->w->r, &c->timer, et_reactor_now(c->w->r) + LINGER_NS) < 0)
        conn_end(c, true);
}

static void head_complete(http_conn *c);

static void timer_fire(et_reactor *r, et_timer *t)
{
    http_conn *c = ET_CONTAINER_OF(t, http_conn, timer);
    if (c->answered)
        conn_end(c, true);
    else if (c->waiting)
        head_complete(c); /* route again, or answer once the wait is over */
    else
        answer(c, 408, "head_timeout"); /* slowloris: the head did not complete in time */
}

typedef struct handoff {
    et_tsock *ts; /* one reference */
    int fd;
    uint8_t *buf; /* owned: the bytes read so far (head and maybe body), ET_HTTP_HEAD_MAX */
    size_t len;
    unsigned reroutes;
    int32_t client_slot;
    char host[ET_HOST_MAX + 1];
} handoff;

/* answer_handoff answers |status| to a handed-over connection that has no http_conn any more
 * (counted and logged like answer()) and closes it; the page goes out before the FIN. */
static void answer_handoff(et_engine *eng, handoff *h, int status, const char *why)
{
    char page[512];
    int n = et_http_error_response(status, page, sizeof(page));
    et_logf(ET_LOG_INFO, "http_answer", "status=%d why=%s host=%s", status, why, h->host);
    ET_COUNT(eng->stats.public_refused);
    ET_COUNT(eng->stats.http_answers[et_http_status_slot(status)]);
    if (n > 0)
        (void)send(h->fd, page, (size_t)n, MSG_NOSIGNAL);
    close(h->fd);
}

/* Times a request is routed again when its data socket went away (or began draining) while it
 * was handed over, before it is answered 503. */
#define REROUTES_MAX 3

/* reroute routes a handed-over request again on this worker (its data socket went away or
 * began draining meanwhile); takes ownership of h->fd and h->buf. */
static void reroute(et_worker *w, handoff *h)
{
    http_conn *c = h->reroutes < REROUTES_MAX ? conn_new(w, h->fd, h->buf) : NULL;
    if (c == NULL) {
        client_release(w->eng, h->client_slot);
        answer_handoff(w->eng, h, 503, "socket_gone");
        free(h->buf);
        return;
    }
    atomic_fetch_add(&hub_of(w->eng)->pending, 1);
    c->len = h->len;
    c->reroutes = h->reroutes + 1;
    c->client_slot = h->client_slot;
    /* The same bytes parse to the same complete head. */
    if (et_http_head_parse(c->buf, c->len, &c->head) != ET_HTTP_HEAD_COMPLETE) {
        answer(c, 503, "reparse_failed");
        return;
    }
    head_complete(c);
}

/* open_http_stream runs on the data socket's worker: OPEN, then the bytes already read, then
 * whatever the client sends next. */
static void open_http_stream(handoff *h)
{
    et_tsock *ts = h->ts;
    et_engine *eng = ts->w->eng;
    edge_hub *hub = hub_of(eng);
    et_stream *s = NULL;
    if (ts->state != ET_TS_READY) {
        reroute(ts->w, h);
        return;
    }
    uint32_t uc = atomic_fetch_add(&hub->next_uc, 1);
    if (uc == 0)
        uc = atomic_fetch_add(&hub->next_uc, 1);
    int rv = et_stream_open(ts, uc, 1, ET_OPEN_HTTP, &s);
    if (rv < 0) {
        client_release(eng, h->client_slot);
        if (rv == ET_E_LIMIT)
            answer_handoff(eng, h, 503, "stream_limit");
        else
            et_sock_reset_close(h->fd);
        free(h->buf);
        return;
    }
    s->client_slot = h->client_slot; /* given back when the stream goes */
    et_open o = {.kind = ET_OPEN_HTTP, .initial_window = ET_WINDOW_DEFAULT};
    et_addr_of_fd(h->fd, &o.client, &o.server);
    o.host = (et_bytes){(const uint8_t *)h->host, strlen(h->host)};
    s->send_credit = ts->peer_window;
    et_frame fh = {0, uc, 1, ET_A_OPEN, 0, NULL};
    et_msg m = {.open = o};
    if (et_tsock_queue(ts, &fh, &m) < 0 || et_stream_set_pending(s, h->buf, h->len) < 0) {
        free(h->buf);
        et_sock_reset_close(h->fd);
        (void)et_stream_reset(s);
        return;
    }
    if (et_stream_attach(s, h->fd, false) < 0)
        return;
    s->origin_timeout_ns = edge_live(hub)->origin_timeout_ns;
    s->last_sent_ns = et_reactor_now(ts->w->r);
    if (et_timer_arm(ts->w->r, &s->origin_timer, s->last_sent_ns + s->origin_timeout_ns) < 0)
        et_logf(ET_LOG_WARN, "timer_failed", "what=origin_timeout");
}

static void handoff_run(et_reactor *r, void *arg)
{
    handoff *h = arg;
    edge_hub *hub = hub_of(h->ts->w->eng);
    open_http_stream(h);
    atomic_fetch_sub(&hub->pending, 1); /* a stream now (or answered) */
    et_tsock_unref(h->ts);
    free(h);
}

/* route finds a data socket for |host| (a reference) or says which error to answer. */
static et_tsock *route(edge_hub *hub, const char *host, uint64_t now, int *status)
{
    et_tsock *ts = NULL;
    pthread_mutex_lock(&hub->mu);
    http_route *r = http_route_find(hub, host);
    if (r == NULL || r->tunnel[0] == '\0') {
        *status = 404; /* no tunnel has ever served this host */
    } else if (r->n > 0 && !rate_take(hub, r->t, now)) {
        *status = 429; /* the tunnel's --rate-limit */
    } else {
        for (unsigned k = 0; k < r->n && ts == NULL; k++)
            ts = et_session_pick_data(r->sess[r->rr++ % r->n]);
        *status = ts == NULL ? 503 : 0; /* known tunnel, not connected */
    }
    pthread_mutex_unlock(&hub->mu);
    return ts;
}

/* Polling steps while a request waits for its tunnel: short at first (a session that is being
 * set up arrives within milliseconds), then at most this long between two looks. */
#define WAIT_STEP_MIN_NS (2ull * 1000000ull)
#define WAIT_STEP_MAX_NS (50ull * 1000000ull)

/* start_wait holds |c| until a session serves its host (a tunnel reconnecting, or, just after
 * this edge started, an origin still moving over from the instance it replaces) or the route
 * wait ends. Returns false when waiting is not allowed: the caller answers |status| now. */
static bool start_wait(http_conn *c, int status)
{
    edge_hub *hub = hub_of(c->w->eng);
    et_reactor *r = c->w->r;
    uint64_t now = et_reactor_now(r);
    if (!c->waiting) {
        uint64_t wait = edge_live(hub)->route_wait_ns;
        /* An unknown host waits only while this edge is new: later it is a plain 404. */
        if (wait == 0 || (status == 404 && now >= hub->started_ns + wait))
            return false;
        c->waiting = true;
        c->wait_until = now + wait;
        c->wait_step = WAIT_STEP_MIN_NS;
        ET_COUNT(c->w->eng->stats.route_waits);
    } else if (now >= c->wait_until) {
        return false;
    }
    uint64_t at = now + c->wait_step;
    c->wait_step = c->wait_step * 2 > WAIT_STEP_MAX_NS ? WAIT_STEP_MAX_NS : c->wait_step * 2;
    if (at > c->wait_until)
        at = c->wait_until;
    et_timer_cancel(r, &c->timer);
    return et_timer_arm(r, &c->timer, at) == ET_OK;
}

static void head_complete(http_conn *c)
{
    const et_http_head *head = &c->head;
    edge_hub *hub = hub_of(c->w->eng);
    int status = 0;
    et_tsock *ts = route(hub, head->host, et_reactor_now(c->w->r), &status);
    if (ts == NULL) {
        if (status == 429) {
            ET_COUNT(c->w->eng->stats.rate_limited);
            answer(c, 429, "rate_limited");
        } else if (!start_wait(c, status)) {
            answer(c, status, status == 404 ? "unknown_host" : "tunnel_not_connected");
        }
        return;
    }
    if (c->waiting)
        et_logf(ET_LOG_DEBUG, "route_waited", "host=%s", head->host);
    handoff *h = malloc(sizeof(*h));
    if (h == NULL) {
        et_tsock_unref(ts);
        answer(c, 503, "out_of_memory");
        return;
    }
    *h = (handoff){ts, c->fd, c->buf, c->len, c->reroutes, c->client_slot, {0}};
    c->client_slot = -1; /* now the handoff's */
    snprintf(h->host, sizeof(h->host), "%s", head->host);
    c->buf = NULL; /* now the handoff's */
    et_worker *to = ts->w, *from = c->w;
    conn_end(c, false);
    if (to == from) {
        handoff_run(to->r, h);
        return;
    }
    if (et_reactor_post(to->r, handoff_run, h) < 0) {
        ET_COUNT(to->eng->stats.inbox_full);
        et_sock_reset_close(h->fd);
        free(h->buf);
        client_release(from->eng, h->client_slot);
        atomic_fetch_sub(&hub_of(from->eng)->pending, 1);
        et_tsock_unref(h->ts);
        free(h);
    }
}

static void conn_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    http_conn *c = ET_CONTAINER_OF(io, http_conn, io);
    if (c->fd < 0)
        return;
    if (c->waiting) {
        /* Bytes after the head stay in the kernel for the stream; a client that gives up while
         * it waits is let go. */
        if (events & (EPOLLERR | EPOLLHUP))
            conn_end(c, true);
        return;
    }
    if (c->answered) {
        /* Drain and drop what the client still sends; end at its EOF or error. */
        char sink[4096];
        for (int i = 0; i < 64; i++) {
            ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0 && errno == EINTR)
                continue;
            conn_end(c, true);
            return;
        }
        et_io_resume(r, io, EPOLLIN);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return;
    for (;;) {
        if (c->len == ET_HTTP_HEAD_MAX) {
            answer(c, 431, "head_too_large");
            return;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, ET_HTTP_HEAD_MAX - c->len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_end(c, true); /* gone before its head was complete */
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* wait for more */
        }
        c->len += (size_t)n;
        int rv = et_http_head_parse(c->buf, c->len, &c->head);
        if (rv == ET_HTTP_HEAD_COMPLETE) {
            head_complete(c);
            return;
        }
        if (rv < 0) {
            answer(c, et_err_detail(rv), et_http_reason_name(c->head.reason));
            return;
        }
    }
}

/* conn_new makes a connection object for |fd| and |buf| (ET_HTTP_HEAD_MAX bytes) on |w|,
 * registered with its reactor; ownership of both is taken only on success (else NULL). */
static http_conn *conn_new(et_worker *w, int fd, uint8_t *buf)
{
    http_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->w = w;
    c->fd = fd;
    c->buf = buf;
    c->client_slot = -1;
    et_http_head_init(&c->head);
    et_io_init(&c->io, conn_on_event);
    et_timer_init(&c->timer, timer_fire);
    et_task_init(&c->free_task, conn_free_task);
    if (et_reactor_add(w->r, fd, &c->io) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

void http_on_accept(et_worker *w, int fd)
{
    edge_hub *hub = hub_of(w->eng);
    uint8_t *buf = malloc(ET_HTTP_HEAD_MAX);
    http_conn *c = buf != NULL ? conn_new(w, fd, buf) : NULL;
    if (c == NULL) {
        free(buf);
        et_sock_reset_close(fd);
        return;
    }
    atomic_fetch_add(&hub->pending, 1);
    if (et_sock_set_nodelay(fd) < 0) {
        /* not fatal */
    }
    c->client_slot = client_admit(w->eng, fd);
    if (c->client_slot == -2) {
        c->client_slot = -1;
        answer(c, 429, "client_limit"); /* this address has --max-client-conns open */
        return;
    }
    if (et_timer_arm(w->r, &c->timer, et_reactor_now(w->r) + edge_live(hub)->head_timeout_ns) < 0)
        conn_end(c, true);
}
