/* httpd.c: the admin listeners' HTTP/1.1 server (httpd.h). */
#include "et/httpd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "et/http_head.h"
#include "et/logf.h"
#include "et/tls.h"

#define BUF_MAX (ET_HTTP_HEAD_MAX + ET_HTTPD_BODY_MAX)

typedef enum conn_phase {
    PHASE_READ = 1, /* reading the head and body */
    PHASE_WAIT,     /* the handler answers later */
    PHASE_WRITE,    /* writing the answer */
    PHASE_DRAIN,    /* answer sent and FIN too: read and drop until the client closes */
} conn_phase;

struct et_httpd_conn {
    et_io io;
    et_httpd *h;
    int fd;       /* owned */
    uint8_t *buf; /* owned: BUF_MAX bytes */
    size_t len;
    size_t need; /* head + body bytes, once the head is complete; 0 before */
    et_http_head head;
    conn_phase phase;
    char *out; /* owned: the answer, head and body */
    size_t out_len, out_off;
    et_timer timer;
    et_task free_task;
    et_httpd_conn *prev, *next; /* in h->conns */
};

struct et_httpd {
    et_reactor *r; /* owned */
    et_io lio;
    int lfd; /* owned */
    et_httpd_fn fn;
    void *arg;
    et_httpd_conn *conns; /* owned */
    unsigned nconns;
};

/* --- text buffers ------------------------------------------------------------------------- */

void et_strbuf_printf(et_strbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (int pass = 0; pass < 2; pass++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void et_strbuf_append(et_strbuf *b, const void *p, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void et_strbuf_cleanup(et_strbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void et_httpd_text(et_httpd_resp *resp, int status, const char *text)
{
    memset(resp, 0, sizeof(*resp));
    resp->status = status;
    resp->body = strdup(text);
    resp->len = resp->body != NULL ? strlen(text) : 0;
}

void et_httpd_take(et_httpd_resp *resp, int status, const char *type, et_strbuf *b)
{
    memset(resp, 0, sizeof(*resp));
    if (b->failed) {
        et_strbuf_cleanup(b);
        et_httpd_text(resp, 500, "out of memory\n");
        return;
    }
    resp->status = status;
    resp->type = type;
    resp->body = b->p;
    resp->len = b->len;
    memset(b, 0, sizeof(*b));
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* --- connections -------------------------------------------------------------------------- */

static void conn_free_task(et_reactor *r, et_task *t)
{
    et_httpd_conn *c = ET_CONTAINER_OF(t, et_httpd_conn, free_task);
    free(c->buf);
    free(c->out);
    free(c);
}

static void conn_close(et_httpd_conn *c)
{
    et_httpd *h = c->h;
    et_timer_cancel(h->r, &c->timer);
    et_reactor_del(h->r, &c->io);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    et_reactor_defer(h->r, &c->free_task);
}

static void conn_drain(et_httpd_conn *c)
{
    char sink[4096];
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c); /* EOF or error: the client is done */
        return;
    }
    et_io_resume(c->h->r, &c->io, EPOLLIN);
}

static void conn_write(et_httpd_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* EPOLLOUT brings us back */
        conn_close(c);
        return;
    }
    /* Closing with unread request bytes would reset the connection and could destroy the
     * answer before the client reads it: half-close and drain instead (bounded by the timer). */
    shutdown(c->fd, SHUT_WR);
    c->phase = PHASE_DRAIN;
    conn_drain(c);
}

void et_httpd_answer(et_httpd_conn *c, et_httpd_resp *resp)
{
    et_strbuf b = {0};
    et_strbuf_printf(&b,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n%s%s%s\r\n",
                     resp->status, reason_phrase(resp->status),
                     resp->type ? resp->type : "text/plain; charset=utf-8", resp->len,
                     resp->allow ? "Allow: " : "", resp->allow ? resp->allow : "",
                     resp->allow ? "\r\n" : "");
    et_strbuf_append(&b, resp->body, resp->len);
    free(resp->body);
    resp->body = NULL;
    if (b.failed) {
        et_strbuf_cleanup(&b);
        conn_close(c);
        return;
    }
    et_logf(ET_LOG_DEBUG, "admin_answer", "status=%d bytes=%zu", resp->status, resp->len);
    c->out = b.p;
    c->out_len = b.len;
    c->out_off = 0;
    c->phase = PHASE_WRITE;
    /* The write is bounded in time too: a client that does not read is dropped. */
    if (et_timer_arm(c->h->r, &c->timer, et_reactor_now(c->h->r) + ET_HTTPD_TIMEOUT_NS) < 0) {
        conn_close(c);
        return;
    }
    conn_write(c);
}

static void answer_now(et_httpd_conn *c, int status, const char *text)
{
    et_httpd_resp resp;
    et_httpd_text(&resp, status, text);
    et_httpd_answer(c, &resp);
}

/* copy_view copies the |n| bytes at |p| into |out| (|cap| bytes) as a string; false if long. */
static bool copy_view(char *out, size_t cap, const uint8_t *p, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static void dispatch(et_httpd_conn *c)
{
    et_httpd *h = c->h;
    et_httpd_req req;
    memset(&req, 0, sizeof(req));
    req.conn = c;
    req.body = c->buf + c->head.head_len;
    req.body_len = c->need - c->head.head_len;
    if (!copy_view(req.method, sizeof(req.method), c->head.method, c->head.method_len)) {
        answer_now(c, 405, "method not allowed\n");
        return;
    }
    const uint8_t *t = c->head.target;
    size_t tn = c->head.target_len;
    const uint8_t *q = memchr(t, '?', tn);
    size_t pn = q != NULL ? (size_t)(q - t) : tn;
    if (pn == 0 || t[0] != '/' || !copy_view(req.path, sizeof(req.path), t, pn) ||
        (q != NULL && !copy_view(req.query, sizeof(req.query), q + 1, tn - pn - 1))) {
        answer_now(c, 404, "not found\n");
        return;
    }
    et_httpd_resp resp;
    memset(&resp, 0, sizeof(resp));
    c->phase = PHASE_WAIT;
    et_timer_cancel(h->r, &c->timer);
    int rv = h->fn(h->arg, &req, &resp);
    if (rv == ET_E_AGAIN)
        return;
    if (rv < 0) {
        free(resp.body);
        et_httpd_text(&resp, 500, "internal error\n");
    }
    et_httpd_answer(c, &resp);
}

static void conn_read(et_httpd_conn *c)
{
    for (int turns = 0; turns < 64; turns++) {
        if (c->len == BUF_MAX) {
            answer_now(c, 413, "request too large\n");
            return;
        }
        size_t want = c->need != 0 ? c->need - c->len : BUF_MAX - c->len;
        if (c->need == 0 && c->len + want > ET_HTTP_HEAD_MAX)
            want = ET_HTTP_HEAD_MAX - c->len; /* the head first: its size rule is 431 */
        if (want == 0 && c->need == 0) {
            answer_now(c, 431, "request head too large\n");
            return;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, want, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(c); /* gone before its request was complete */
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        c->len += (size_t)n;
        if (c->need == 0) {
            int rv = et_http_head_parse(c->buf, c->len, &c->head);
            if (rv == ET_HTTP_HEAD_NEED_MORE)
                continue;
            if (rv < 0) {
                et_logf(ET_LOG_INFO, "admin_bad_request", "reason=%s",
                        et_http_reason_name(c->head.reason));
                answer_now(c, et_err_detail(rv) == 431 ? 431 : 400, "bad request\n");
                return;
            }
            uint64_t body = 0;
            rv = et_http_content_length(c->buf, &c->head, ET_HTTPD_BODY_MAX, &body);
            if (rv < 0) {
                int st = et_err_detail(rv);
                answer_now(c, st == 411 || st == 413 ? st : 400,
                           st == 413 ? "body too large\n" : "bad request\n");
                return;
            }
            c->need = c->head.head_len + (size_t)body;
            if (c->len > c->need) {
                answer_now(c, 400, "one request per connection\n");
                return;
            }
        }
        if (c->len == c->need) {
            dispatch(c);
            return;
        }
    }
    et_io_resume(c->h->r, &c->io, EPOLLIN);
}

static void conn_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    et_httpd_conn *c = ET_CONTAINER_OF(io, et_httpd_conn, io);
    if (c->fd < 0)
        return;
    switch (c->phase) {
    case PHASE_READ:
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            conn_read(c);
        return;
    case PHASE_WRITE:
        if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            conn_write(c);
        return;
    case PHASE_DRAIN:
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            conn_drain(c);
        return;
    case PHASE_WAIT:
    default: return; /* the handler owes the answer and will give it in bounded time */
    }
}

static void conn_timer(et_reactor *r, et_timer *t)
{
    et_httpd_conn *c = ET_CONTAINER_OF(t, et_httpd_conn, timer);
    if (c->phase == PHASE_READ)
        answer_now(c, 408, "request timeout\n"); /* slow client */
    else
        conn_close(c); /* did not read its answer, or close, in time */
}

static void accept_one(et_httpd *h, int fd)
{
    if (h->nconns >= ET_HTTPD_CONNS) {
        et_logf(ET_LOG_WARN, "admin_busy", "conns=%u", h->nconns);
        close(fd);
        return;
    }
    et_httpd_conn *c = calloc(1, sizeof(*c));
    uint8_t *buf = malloc(BUF_MAX);
    if (c == NULL || buf == NULL) {
        free(c);
        free(buf);
        close(fd);
        return;
    }
    c->h = h;
    c->fd = fd;
    c->buf = buf;
    c->phase = PHASE_READ;
    et_http_head_init(&c->head);
    et_io_init(&c->io, conn_on_event);
    et_timer_init(&c->timer, conn_timer);
    et_task_init(&c->free_task, conn_free_task);
    if (et_reactor_add(h->r, fd, &c->io) < 0 ||
        et_timer_arm(h->r, &c->timer, et_reactor_now(h->r) + ET_HTTPD_TIMEOUT_NS) < 0) {
        et_reactor_del(h->r, &c->io);
        close(fd);
        free(buf);
        free(c);
        return;
    }
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
}

static void listener_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    et_httpd *h = ET_CONTAINER_OF(io, et_httpd, lio);
    for (int i = 0; i < 64; i++) {
        int fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                et_logf(ET_LOG_WARN, "accept_failed", "listener=admin errno=%d", errno);
            return;
        }
        accept_one(h, fd);
    }
    et_io_resume(r, io, EPOLLIN);
}

int et_httpd_start(const char *addr, et_httpd_fn fn, void *arg, et_httpd **out)
{
    *out = NULL;
    et_httpd *h = calloc(1, sizeof(*h));
    ET_ENSURE(h != NULL, ET_E_NOMEM);
    h->lfd = -1;
    h->fn = fn;
    h->arg = arg;
    int rv = et_reactor_new(&h->r, 64, 256);
    if (rv < 0)
        goto err;
    rv = et_sock_listen(addr, 0, &h->lfd);
    if (rv < 0) {
        et_logf(ET_LOG_ERROR, "listen_failed", "addr=%s errno=%d", addr, errno);
        goto err;
    }
    et_io_init(&h->lio, listener_on_event);
    ET_GUARD_GOTO(rv, et_reactor_add(h->r, h->lfd, &h->lio), err);
    *out = h; /* before the thread starts: its handlers may read it */
    ET_GUARD_GOTO(rv, et_reactor_start_thread(h->r), err);
    return ET_OK;
err:
    *out = NULL;
    if (h->lfd >= 0) {
        et_reactor_del(h->r, &h->lio);
        close(h->lfd);
    }
    et_reactor_free(h->r);
    free(h);
    return rv;
}

et_reactor *et_httpd_reactor(et_httpd *h)
{
    return h->r;
}

void et_httpd_free(et_httpd *h)
{
    if (h == NULL)
        return;
    et_reactor_stop(h->r);
    if (et_reactor_join(h->r) < 0)
        et_logf(ET_LOG_WARN, "join_failed", "what=admin");
    /* The thread is gone: this thread may now touch the reactor. Deliver what was posted
     * (the frees it defers run in the same iteration), then close what is left. */
    for (int i = 0; i < 2; i++)
        if (et_reactor_run_once(h->r, 0) < 0)
            break;
    while (h->conns != NULL) {
        et_httpd_conn *c = h->conns;
        conn_close(c);
        et_task_cancel(h->r, &c->free_task);
        conn_free_task(h->r, &c->free_task);
    }
    et_reactor_del(h->r, &h->lio);
    close(h->lfd);
    et_reactor_free(h->r);
    free(h);
}
