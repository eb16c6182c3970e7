/* httpd.h: the small HTTP/1.1 server behind the admin listeners of edged and originctl.
 *
 * It runs its own reactor on its own thread, so nothing it does (a slow client, a large
 * /metrics answer) can delay a data worker or the control worker. One request per connection
 * (every answer says Connection: close). Request heads go through the project's incremental
 * parser (et_http_head_parse, at most ET_HTTP_HEAD_MAX bytes); a body needs a Content-Length of
 * at most ET_HTTPD_BODY_MAX (no chunked bodies); a request not complete within
 * ET_HTTPD_TIMEOUT_NS is answered 408; at most ET_HTTPD_CONNS connections at once (more are
 * closed at once). Malformed heads get 400 (431, 413, 411 for the size rules); the handler
 * answers everything else, including 404 and 405. */
#ifndef ET_HTTPD_H
#define ET_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "et/reactor.h"
#include "et/result.h"

#define ET_HTTPD_BODY_MAX   8192
#define ET_HTTPD_TIMEOUT_NS (5ull * 1000000000ull)
#define ET_HTTPD_CONNS      64
#define ET_HTTPD_PATH_MAX   256

typedef struct et_httpd et_httpd;
typedef struct et_httpd_conn et_httpd_conn;

/* A growable text buffer. The zero state is empty; a failed allocation sets |failed| and later
 * appends do nothing. */
typedef struct et_strbuf {
    char *p; /* owned, NUL-terminated once anything was appended */
    size_t len, cap;
    bool failed;
} et_strbuf;

/* et_strbuf_printf appends printf-style text to |b|. */
void et_strbuf_printf(et_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* et_strbuf_append appends the |n| bytes at |p| to |b| (does not take ownership of |p|). */
void et_strbuf_append(et_strbuf *b, const void *p, size_t n);

/* et_strbuf_cleanup frees |b|'s memory and zeroes it. */
void et_strbuf_cleanup(et_strbuf *b);

/* One request, valid for the handler call only (views into the connection's buffer). */
typedef struct et_httpd_req {
    char method[16];               /* e.g. "GET"; longer methods are answered 405 */
    char path[ET_HTTPD_PATH_MAX];  /* the target's path, without the query */
    char query[ET_HTTPD_PATH_MAX]; /* after '?', or "" */
    const uint8_t *body;           /* view, |body_len| bytes */
    size_t body_len;
    et_httpd_conn *conn; /* for an answer given later (et_httpd_answer) */
} et_httpd_req;

/* An answer. |body| is heap memory the server takes (may be NULL when |len| is 0). */
typedef struct et_httpd_resp {
    int status;
    const char *type;  /* Content-Type; static; NULL = text/plain; charset=utf-8 */
    const char *allow; /* static; an Allow field (405), or NULL */
    char *body;
    size_t len;
} et_httpd_resp;

/* et_httpd_fn handles |req| on the server's thread. It returns ET_OK with |*resp| filled, or
 * ET_E_AGAIN to answer later with et_httpd_answer (on the server's thread, within its own
 * bounded time: the connection is not timed out meanwhile). */
typedef int (*et_httpd_fn)(void *arg, const et_httpd_req *req, et_httpd_resp *resp);

/* et_httpd_start listens on |addr| ("host:port") and serves it with |fn|(|arg|, …) on a new
 * thread. Returns ET_OK with |*out| set (the caller owns it: et_httpd_free), or an error
 * (logged). Does not take ownership of |arg|. */
ET_MUST_USE int et_httpd_start(const char *addr, et_httpd_fn fn, void *arg, et_httpd **out);

/* et_httpd_reactor returns the server's reactor (to post work to its thread). Not owned. */
et_reactor *et_httpd_reactor(et_httpd *h);

/* et_httpd_answer sends |resp| (its body taken) on |c|, a connection whose handler returned
 * ET_E_AGAIN; on the server's thread. */
void et_httpd_answer(et_httpd_conn *c, et_httpd_resp *resp);

/* et_httpd_text fills |resp| with |status| and a copy of the NUL-terminated |text|. */
void et_httpd_text(et_httpd_resp *resp, int status, const char *text);

/* et_httpd_take fills |resp| with |status|, |type| and the text of |b| (ownership moved; |b| is
 * left empty). A buffer whose allocation failed gives 500. */
void et_httpd_take(et_httpd_resp *resp, int status, const char *type, et_strbuf *b);

/* et_httpd_free stops the server's thread, closes every connection and frees |h|; NULL does
 * nothing. Answers owed by handlers are dropped with their connections. */
void et_httpd_free(et_httpd *h);

#endif
