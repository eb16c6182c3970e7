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
    bool answered;     /* an error went out: drain the client until EOF or the linger time */
    et_http_head head; /* the incremental parser's state and, once complete, the head */
    et_timer timer;
    et_task free_task;
} http_conn;

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
    et_logf(ET_LOG_INFO, "http_answer", "status=%d why=%s", status, why);
    ET_COUNT(eng->stats.public_refused);
    ET_COUNT(eng->stats.http_answers[et_http_status_slot(status)]);
    if (n > 0)
        (void)send(c->fd, page, (size_t)n, MSG_NOSIGNAL);
    shutdown(c->fd, SHUT_WR);
    c->answered = true;
    if (et_timer_arm(c->w->r, &c->timer, et_reactor_now(c->w->r) + LINGER_NS) < 0)
        conn_end(c, true);
}

static void timer_fire(et_reactor *r, et_timer *t)
{
    http_conn *c = ET_CONTAINER_OF(t, http_conn, timer);
    if (c->answered)
        conn_end(c, true);
    else
        answer(c, 408, "head_timeout"); /* slowloris: the head did not complete in time */
}

typedef struct handoff {
    et_tsock *ts; /* one reference */
    int fd;
    uint8_t *buf; /* the bytes read so far (head and maybe body) */
    size_t len;
    char host[ET_HOST_MAX + 1];
} handoff;

/* open_http_stream runs on the data socket's worker: OPEN, then the bytes already read, then
 * whatever the client sends next. */
static void open_http_stream(handoff *h)
{
    et_tsock *ts = h->ts;
    et_engine *eng = ts->w->eng;
    edge_hub *hub = hub_of(eng);
    et_stream *s = NULL;
    if (ts->state != ET_TS_READY) {
        /* The socket went away meanwhile: the client gets 503 from a fresh attempt. */
        et_logf(ET_LOG_INFO, "http_answer", "status=503 why=socket_gone");
        char page[512];
        int n = et_http_error_response(503, page, sizeof(page));
        ET_COUNT(eng->stats.http_answers[et_http_status_slot(503)]);
        if (n > 0)
            (void)send(h->fd, page, (size_t)n, MSG_NOSIGNAL);
        close(h->fd);
        free(h->buf);
        return;
    }
    uint32_t uc = atomic_fetch_add(&hub->next_uc, 1);
    if (uc == 0)
        uc = atomic_fetch_add(&hub->next_uc, 1);
    if (et_stream_open(ts, uc, 1, ET_OPEN_HTTP, &s) < 0) {
        et_sock_reset_close(h->fd);
        free(h->buf);
        return;
    }
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
    s->origin_timeout_ns = hub->cfg.origin_timeout_ns;
    s->last_sent_ns = et_reactor_now(ts->w->r);
    if (et_timer_arm(ts->w->r, &s->origin_timer, s->last_sent_ns + s->origin_timeout_ns) < 0)
        et_logf(ET_LOG_WARN, "timer_failed", "what=origin_timeout");
}

static void handoff_run(et_reactor *r, void *arg)
{
    handoff *h = arg;
    open_http_stream(h);
    et_tsock_unref(h->ts);
    free(h);
}

/* route finds a data socket for |host| (a reference) or says which error to answer. */
static et_tsock *route(edge_hub *hub, const char *host, int *status)
{
    et_tsock *ts = NULL;
    pthread_mutex_lock(&hub->mu);
    http_route *r = http_route_find(hub, host);
    if (r == NULL || r->tunnel[0] == '\0') {
        *status = 404; /* no tunnel has ever served this host */
    } else {
        for (unsigned k = 0; k < r->n && ts == NULL; k++)
            ts = et_session_pick_data(r->sess[r->rr++ % r->n]);
        *status = ts == NULL ? 503 : 0; /* known tunnel, not connected */
    }
    pthread_mutex_unlock(&hub->mu);
    return ts;
}

static void head_complete(http_conn *c, const et_http_head *head)
{
    edge_hub *hub = hub_of(c->w->eng);
    int status = 0;
    et_tsock *ts = route(hub, head->host, &status);
    if (ts == NULL) {
        answer(c, status, status == 404 ? "unknown_host" : "tunnel_not_connected");
        return;
    }
    handoff *h = malloc(sizeof(*h));
    if (h == NULL) {
        et_tsock_unref(ts);
        answer(c, 503, "out_of_memory");
        return;
    }
    *h = (handoff){ts, c->fd, c->buf, c->len, {0}};
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
        et_tsock_unref(h->ts);
        free(h);
    }
}

static void conn_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    http_conn *c = ET_CONTAINER_OF(io, http_conn, io);
    if (c->fd < 0)
        return;
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
            head_complete(c, &c->head);
            return;
        }
        if (rv < 0) {
            answer(c, et_err_detail(rv), et_http_reason_name(c->head.reason));
            return;
        }
    }
}

void http_on_accept(et_worker *w, int fd)
{
    edge_hub *hub = hub_of(w->eng);
    http_conn *c = calloc(1, sizeof(*c));
    uint8_t *buf = malloc(ET_HTTP_HEAD_MAX);
    if (c == NULL || buf == NULL) {
        free(c);
        free(buf);
        et_sock_reset_close(fd);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->buf = buf;
    et_http_head_init(&c->head);
    et_io_init(&c->io, conn_on_event);
    et_timer_init(&c->timer, timer_fire);
    et_task_init(&c->free_task, conn_free_task);
    if (et_sock_set_nodelay(fd) < 0) {
        /* not fatal */
    }
    if (et_reactor_add(w->r, fd, &c->io) < 0 ||
        et_timer_arm(w->r, &c->timer, et_reactor_now(w->r) + hub->cfg.head_timeout_ns) < 0) {
        et_reactor_del(w->r, &c->io);
        close(fd);
        free(buf);
        free(c);
    }
}
