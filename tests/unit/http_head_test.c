/* http_head_test.c: the request-head reader against tables of valid and invalid heads, each fed
 * whole, grown one byte at a time with one state, and as fresh prefixes, always against a guard
 * page; the 16 KiB cap at and past its bound; Host normalisation; the error responses. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "et/http_head.h"

#define CRLF "\r\n"

/* --- helpers ----------------------------------------------------------------------------- */

/* outcome is what one parse left, copied out before the guarded buffer goes away. */
typedef struct outcome {
    int rv;
    et_http_head h;
    char method[64];
    char target[512];
} outcome;

static void capture(outcome *o, int rv, const et_http_head *h)
{
    memset(o, 0, sizeof(*o));
    o->rv = rv;
    o->h = *h;
    if (rv == ET_HTTP_HEAD_COMPLETE) {
        assert_non_null(h->method);
        assert_non_null(h->target);
        assert_true(h->method_len < sizeof(o->method));
        assert_true(h->target_len < sizeof(o->target));
        memcpy(o->method, h->method, h->method_len);
        memcpy(o->target, h->target, h->target_len);
    }
    o->h.method = NULL;
    o->h.target = NULL;
}

/* parse_whole parses the |n| bytes at |p| in one call, placed against a guard page. */
static void parse_whole(const void *p, size_t n, outcome *o)
{
    uint8_t *g = tu_guarded(p, n);
    et_http_head h;
    et_http_head_init(&h);
    int rv = et_http_head_parse(g, n, &h);
    capture(o, rv, &h);
    tu_guarded_free(g, n);
}

/* parse_grown feeds the |n| bytes at |p| to one state as prefixes growing by |step| bytes, each
 * prefix a fresh copy against a guard page (so the buffer also moves between calls). It checks
 * the results are NEED_MORE until the final one, which it returns; and that a COMPLETE never
 * comes before the prefix covers the head. */
static void parse_grown(const void *p, size_t n, size_t step, outcome *o)
{
    et_http_head h;
    et_http_head_init(&h);
    size_t k = 0, prev = 0;
    for (;;) {
        uint8_t *g = tu_guarded(p, k);
        int rv = et_http_head_parse(g, k, &h);
        if (rv == ET_HTTP_HEAD_COMPLETE) {
            assert_true(h.head_len <= k);
            assert_true(k == 0 || h.head_len > prev); /* it was not complete a step ago */
        }
        if (rv != ET_HTTP_HEAD_NEED_MORE || k == n) {
            capture(o, rv, &h);
            tu_guarded_free(g, k);
            break;
        }
        tu_guarded_free(g, k);
        prev = k;
        k = n - k < step ? n : k + step;
    }
    /* Sticky: a further call with the whole input gives the same answer. */
    uint8_t *g = tu_guarded(p, n);
    int again = et_http_head_parse(g, n, &h);
    tu_guarded_free(g, n);
    assert_int_equal(again, o->rv);
}

static void assert_same(const outcome *a, const outcome *b)
{
    assert_int_equal(a->rv, b->rv);
    assert_int_equal(a->h.reason, b->h.reason);
    if (a->rv != ET_HTTP_HEAD_COMPLETE)
        return;
    assert_int_equal(a->h.head_len, b->h.head_len);
    assert_int_equal(a->h.start, b->h.start);
    assert_string_equal(a->h.host, b->h.host);
    assert_int_equal(a->h.host_len, b->h.host_len);
    assert_int_equal(a->h.port, b->h.port);
    assert_int_equal(a->h.minor, b->h.minor);
    assert_int_equal(a->h.upgrade, b->h.upgrade);
    assert_int_equal(a->h.nfields, b->h.nfields);
    assert_string_equal(a->method, b->method);
    assert_string_equal(a->target, b->target);
}

/* check_all_ways parses |p| whole, grown one byte at a time, grown in steps of 7 and 100, and
 * (when |fresh|) as every prefix with a fresh state; all must agree. Returns the whole parse. */
static void check_all_ways(const void *p, size_t n, bool fresh, outcome *whole)
{
    parse_whole(p, n, whole);
    const size_t steps[] = {1, 7, 100};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        outcome grown;
        parse_grown(p, n, steps[i], &grown);
        assert_same(whole, &grown);
    }
    if (!fresh)
        return;
    /* Every prefix on its own: NEED_MORE below the head's end (or the error's position),
     * then the whole answer, never anything else. */
    bool reached = false;
    for (size_t k = 0; k <= n; k++) {
        outcome o;
        parse_whole(p, k, &o);
        if (o.rv == ET_HTTP_HEAD_NEED_MORE) {
            assert_false(reached);
            continue;
        }
        reached = true;
        assert_same(whole, &o);
    }
}

/* --- valid heads ------------------------------------------------------------------------- */

typedef struct valid_case {
    const char *name;
    const char *head;
    const char *after; /* bytes after the head (body, next request) */
    const char *host;
    uint16_t port;
    int minor;
    bool upgrade;
    unsigned nfields;
    const char *method;
    size_t start;
} valid_case;

static const valid_case valid_cases[] = {
    {"get", "GET / HTTP/1.1" CRLF "Host: example.com" CRLF CRLF, "", "example.com", 0, 1, false, 1,
     "GET", 0},
    {"port", "GET /a?b=c HTTP/1.1" CRLF "Host: example.com:8080" CRLF CRLF, "", "example.com", 8080,
     1, false, 1, "GET", 0},
    {"uppercase host", "GET / HTTP/1.1" CRLF "Host: ExAmPlE.CoM" CRLF CRLF, "", "example.com", 0, 1,
     false, 1, "GET", 0},
    {"trailing dot", "GET / HTTP/1.1" CRLF "Host: example.com.:443" CRLF CRLF, "", "example.com",
     443, 1, false, 1, "GET", 0},
    {"absolute-form agrees",
     "GET http://Example.COM:80/x?y HTTP/1.1" CRLF "Host: example.com" CRLF CRLF, "", "example.com",
     0, 1, false, 1, "GET", 0},
    {"absolute-form https no path",
     "GET HTTPS://example.com HTTP/1.1" CRLF "Host: example.com.:443" CRLF CRLF, "", "example.com",
     443, 1, false, 1, "GET", 0},
    {"absolute-form query only", "GET http://a.example?q HTTP/1.1" CRLF "Host: a.example" CRLF CRLF,
     "", "a.example", 0, 1, false, 1, "GET", 0},
    {"http/1.0 with host", "GET / HTTP/1.0" CRLF "Host: example.com" CRLF CRLF, "", "example.com",
     0, 0, false, 1, "GET", 0},
    {"post with body",
     "POST /form HTTP/1.1" CRLF "Host: api.example.com" CRLF "Content-Length: 11" CRLF
     "Content-Type: text/plain" CRLF CRLF,
     "hello world", "api.example.com", 0, 1, false, 3, "POST", 0},
    {"chunked body",
     "PUT /up HTTP/1.1" CRLF "Host: a.b" CRLF "Transfer-Encoding: chunked" CRLF CRLF,
     "5\r\nhello\r\n0\r\n\r\n", "a.b", 0, 1, false, 2, "PUT", 0},
    {"websocket upgrade",
     "GET /chat HTTP/1.1" CRLF "Host: ws.example.com" CRLF "Upgrade: websocket" CRLF
     "Connection: keep-alive, Upgrade" CRLF "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" CRLF
     "Sec-WebSocket-Version: 13" CRLF CRLF,
     "\x81\x85", "ws.example.com", 0, 1, true, 5, "GET", 0},
    {"upgrade in second connection field",
     "GET / HTTP/1.1" CRLF "Connection: keep-alive" CRLF "Host: a.example" CRLF
     "connection:  ,\tuPgRaDe ,x" CRLF "upgrade: h2c" CRLF CRLF,
     "", "a.example", 0, 1, true, 4, "GET", 0},
    {"upgrade ignored on http/1.0",
     "GET / HTTP/1.0" CRLF "Host: a.example" CRLF "Upgrade: websocket" CRLF
     "Connection: upgrade" CRLF CRLF,
     "", "a.example", 0, 0, false, 3, "GET", 0},
    {"upgrade without connection option",
     "GET / HTTP/1.1" CRLF "Host: a.example" CRLF "Upgrade: websocket" CRLF
     "Connection: upgrades" CRLF CRLF,
     "", "a.example", 0, 1, false, 3, "GET", 0},
    {"empty upgrade value",
     "GET / HTTP/1.1" CRLF "Host: a.example" CRLF "Upgrade: " CRLF "Connection: upgrade" CRLF CRLF,
     "", "a.example", 0, 1, false, 3, "GET", 0},
    {"lf only", "GET / HTTP/1.1\nHost: example.com\nAccept: */*\n\n", "BODY", "example.com", 0, 1,
     false, 2, "GET", 0},
    {"mixed line ends", "GET / HTTP/1.1\r\nHost: example.com\nAccept: */*\r\n\n", "", "example.com",
     0, 1, false, 2, "GET", 0},
    {"leading crlf", CRLF "GET / HTTP/1.1" CRLF "Host: example.com" CRLF CRLF, "", "example.com", 0,
     1, false, 1, "GET", 2},
    {"leading lf", "\nGET / HTTP/1.1" CRLF "Host: example.com" CRLF CRLF, "", "example.com", 0, 1,
     false, 1, "GET", 1},
    {"ipv4 host", "GET / HTTP/1.1" CRLF "Host: 192.168.0.1:8080" CRLF CRLF, "", "192.168.0.1", 8080,
     1, false, 1, "GET", 0},
    {"ipv4 zeros", "GET / HTTP/1.1" CRLF "Host: 0.0.0.0" CRLF CRLF, "", "0.0.0.0", 0, 1, false, 1,
     "GET", 0},
    {"ows around host", "GET / HTTP/1.1" CRLF "Host: \t example.com \t" CRLF CRLF, "",
     "example.com", 0, 1, false, 1, "GET", 0},
    {"no ows", "GET / HTTP/1.1" CRLF "hOsT:example.com" CRLF CRLF, "", "example.com", 0, 1, false,
     1, "GET", 0},
    {"obs-text and htab in values",
     "GET / HTTP/1.1" CRLF "Host: example.com" CRLF "X-Name: caf\xc3\xa9\tau lait" CRLF CRLF, "",
     "example.com", 0, 1, false, 2, "GET", 0},
    {"empty field value", "GET / HTTP/1.1" CRLF "X-Empty:" CRLF "Host: e.x" CRLF CRLF, "", "e.x", 0,
     1, false, 2, "GET", 0},
    {"pipelined", "GET /1 HTTP/1.1" CRLF "Host: example.com" CRLF CRLF,
     "GET /2 HTTP/1.1" CRLF "Host: other.example" CRLF CRLF, "example.com", 0, 1, false, 1, "GET",
     0},
    {"options asterisk", "OPTIONS * HTTP/1.1" CRLF "Host: example.com" CRLF CRLF, "", "example.com",
     0, 1, false, 1, "OPTIONS", 0},
    {"connect", "CONNECT example.com:443 HTTP/1.1" CRLF "Host: example.com:443" CRLF CRLF, "",
     "example.com", 443, 1, false, 1, "CONNECT", 0},
    {"odd method token", "M-SEARCH!#$%&'*+.^_`|~ /x HTTP/1.1" CRLF "Host: h" CRLF CRLF, "", "h", 0,
     1, false, 1, "M-SEARCH!#$%&'*+.^_`|~", 0},
    {"lowercase method", "get / HTTP/1.1" CRLF "Host: h" CRLF CRLF, "", "h", 0, 1, false, 1, "get",
     0},
    {"max port and labels", "GET / HTTP/1.1" CRLF "Host: a-1.b--c.9x:65535" CRLF CRLF, "",
     "a-1.b--c.9x", 65535, 1, false, 1, "GET", 0},
    {"odd target bytes", "GET /~a!$&'()*+,;=:@%20[]{}|^`\"<> HTTP/1.1" CRLF "Host: h" CRLF CRLF, "",
     "h", 0, 1, false, 1, "GET", 0},
};

static void check_valid(const valid_case *c)
{
    static char text[8192];
    size_t hn = strlen(c->head), an = strlen(c->after);
    assert_true(hn + an < sizeof(text));
    memcpy(text, c->head, hn);
    memcpy(text + hn, c->after, an);
    size_t n = hn + an;
    outcome o;
    check_all_ways(text, n, n <= 2048, &o);
    if (o.rv != ET_HTTP_HEAD_COMPLETE)
        fail_msg("%s: rv %d reason %s", c->name, o.rv, et_http_reason_name(o.h.reason));
    assert_int_equal(o.h.head_len, hn);
    assert_int_equal(o.h.start, c->start);
    assert_string_equal(o.h.host, c->host);
    assert_int_equal(o.h.host_len, strlen(c->host));
    assert_int_equal(o.h.port, c->port);
    assert_int_equal(o.h.minor, c->minor);
    assert_int_equal(o.h.upgrade, c->upgrade);
    assert_int_equal(o.h.nfields, c->nfields);
    assert_string_equal(o.method, c->method);
    assert_int_equal(o.h.reason, ET_HTTP_R_NONE);
    /* The head alone is complete too: it is self-delimiting. */
    outcome head;
    parse_whole(text, o.h.head_len, &head);
    assert_same(&o, &head);
}

static void test_valid(void **state)
{
    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        check_valid(&valid_cases[i]);
    }
}

/* --- invalid heads ----------------------------------------------------------------------- */

typedef struct invalid_case {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen(text) */
    et_http_reason reason;
} invalid_case;

#define GET11 "GET / HTTP/1.1" CRLF
#define HOST  "Host: example.com" CRLF

static const invalid_case invalid_cases[] = {
    /* request line */
    {"method not a token", "GE(T / HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"method with slash", "GET/ / HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"empty method", " / HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"two spaces", "GET  / HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"tab separator", "GET\t/ HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"space in target", "GET /a b HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"non-ascii target", "GET /\x80 HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"del in target", "GET /\x7f HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"no version", "GET /" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"method only", "GET" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"empty version", "GET / " CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"lowercase version", "GET / http/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"http/0.9 style", "GET /" CRLF CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"two leading empty lines", CRLF CRLF GET11 HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"leading space line", " " CRLF GET11 HOST CRLF, 0, ET_HTTP_R_REQUEST_LINE},
    {"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11,
     ET_HTTP_R_REQUEST_LINE},
    {"http/1.2", "GET / HTTP/1.2" CRLF HOST CRLF, 0, ET_HTTP_R_VERSION},
    {"http/2.0", "GET / HTTP/2.0" CRLF HOST CRLF, 0, ET_HTTP_R_VERSION},
    {"http/1.10", "GET / HTTP/1.10" CRLF HOST CRLF, 0, ET_HTTP_R_VERSION},
    {"trailing space", "GET / HTTP/1.1 " CRLF HOST CRLF, 0, ET_HTTP_R_VERSION},
    {"prism preface", "PRI * HTTP/2.0" CRLF CRLF "SM" CRLF CRLF, 0, ET_HTTP_R_VERSION},
    /* request-target forms */
    {"asterisk with get", "GET * HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"relative target", "GET index.html HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"ftp scheme", "GET ftp://example.com/ HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"scheme without slashes", "GET http:example.com HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"empty authority", "GET http:///x HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"userinfo", "GET http://u:p@example.com/ HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"bad authority port", "GET http://example.com:0/ HTTP/1.1" CRLF HOST CRLF, 0,
     ET_HTTP_R_TARGET},
    {"connect without port", "CONNECT example.com HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"connect origin-form", "CONNECT / HTTP/1.1" CRLF HOST CRLF, 0, ET_HTTP_R_TARGET},
    {"absolute-form mismatch", "GET http://other.example/ HTTP/1.1" CRLF HOST CRLF, 0,
     ET_HTTP_R_HOST_MISMATCH},
    {"connect mismatch", "CONNECT other.example:443 HTTP/1.1" CRLF HOST CRLF, 0,
     ET_HTTP_R_HOST_MISMATCH},
    /* field lines */
    {"no colon", GET11 "Host example.com" CRLF CRLF, 0, ET_HTTP_R_NO_COLON},
    {"space before colon", GET11 "Host : example.com" CRLF CRLF, 0, ET_HTTP_R_SPACE_BEFORE_COLON},
    {"tab before colon", GET11 HOST "X-A\t: b" CRLF CRLF, 0, ET_HTTP_R_SPACE_BEFORE_COLON},
    {"obs-fold", GET11 HOST "X-A: b" CRLF " c" CRLF CRLF, 0, ET_HTTP_R_OBS_FOLD},
    {"obs-fold tab", GET11 HOST "X-A: b" CRLF "\tc" CRLF CRLF, 0, ET_HTTP_R_OBS_FOLD},
    {"space before first field", GET11 " Host: example.com" CRLF CRLF, 0, ET_HTTP_R_OBS_FOLD},
    {"name not a token", GET11 HOST "X(A): b" CRLF CRLF, 0, ET_HTTP_R_FIELD_NAME},
    {"space inside name", GET11 HOST "X A: b" CRLF CRLF, 0, ET_HTTP_R_FIELD_NAME},
    {"empty name", GET11 HOST ": b" CRLF CRLF, 0, ET_HTTP_R_FIELD_NAME},
    {"non-ascii name", GET11 HOST "X\xc3\xa9: b" CRLF CRLF, 0, ET_HTTP_R_FIELD_NAME},
    {"ctl in value",
     GET11 HOST "X-A: a\x01"
                "b" CRLF CRLF,
     0, ET_HTTP_R_CTL},
    {"del in value", GET11 HOST "X-A: a\x7f" CRLF CRLF, 0, ET_HTTP_R_CTL},
    {"escape in value", GET11 HOST "X-A: \x1b[31m" CRLF CRLF, 0, ET_HTTP_R_CTL},
    {"ctl in name", GET11 HOST "X\x02: b" CRLF CRLF, 0, ET_HTTP_R_CTL},
    {"bare cr in value", GET11 HOST "X-A: a\rb" CRLF CRLF, 0, ET_HTTP_R_BARE_CR},
    {"bare cr ends line", GET11 "Host: example.com\r\r\n" CRLF, 0, ET_HTTP_R_BARE_CR},
    {"bare cr request line", "GET / HTTP/1.1\rHost: example.com" CRLF CRLF, 0, ET_HTTP_R_BARE_CR},
    {"bare cr blank line", GET11 HOST "\r\r\n", 0, ET_HTTP_R_BARE_CR},
    {"nul in value", GET11 HOST "X-A: a\0b" CRLF CRLF, sizeof(GET11 HOST "X-A: a\0b" CRLF CRLF) - 1,
     ET_HTTP_R_NUL},
    {"nul in request line", "GET /\0 HTTP/1.1" CRLF HOST CRLF,
     sizeof("GET /\0 HTTP/1.1" CRLF HOST CRLF) - 1, ET_HTTP_R_NUL},
    {"nul first", "\0", 1, ET_HTTP_R_NUL},
    {"nul after cr", GET11 HOST "\r\0", sizeof(GET11 HOST "\r\0") - 1, ET_HTTP_R_BARE_CR},
    /* Host */
    {"no host", GET11 "Accept: */*" CRLF CRLF, 0, ET_HTTP_R_NO_HOST},
    {"no host http/1.0", "GET / HTTP/1.0" CRLF CRLF, 0, ET_HTTP_R_NO_HOST},
    {"no host absolute-form", "GET http://example.com/ HTTP/1.1" CRLF CRLF, 0, ET_HTTP_R_NO_HOST},
    {"two hosts", GET11 HOST HOST CRLF, 0, ET_HTTP_R_DUP_HOST},
    {"two hosts differ", GET11 HOST "host: other.example" CRLF CRLF, 0, ET_HTTP_R_DUP_HOST},
    {"two hosts one empty", GET11 "Host:" CRLF HOST CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"empty host", GET11 "Host:" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"blank host", GET11 "Host:  \t " CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"underscore", GET11 "Host: my_app.example.com" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"double dot", GET11 "Host: a..example" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"leading dot", GET11 "Host: .example" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"only dot", GET11 "Host: ." CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"two trailing dots", GET11 "Host: example.." CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"percent", GET11 "Host: ex%61mple.com" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"userinfo in host", GET11 "Host: u@example.com" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"space in host", GET11 "Host: exa mple.com" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"utf-8 host",
     GET11 "Host: b\xc3\xbc"
           "cher.example" CRLF CRLF,
     0, ET_HTTP_R_BAD_HOST},
    {"three numbers", GET11 "Host: 1.2.3" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"octet too big", GET11 "Host: 1.2.3.256" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"octal-looking", GET11 "Host: 01.2.3.4" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"five numbers", GET11 "Host: 1.2.3.4.5" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"numeric tld", GET11 "Host: example.123" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"decimal address", GET11 "Host: 3232235521" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"port zero", GET11 "Host: example.com:0" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"port too big", GET11 "Host: example.com:65536" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"port six digits", GET11 "Host: example.com:000080" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"empty port", GET11 "Host: example.com:" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"signed port", GET11 "Host: example.com:+80" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"port letters", GET11 "Host: example.com:http" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"two ports", GET11 "Host: example.com:80:81" CRLF CRLF, 0, ET_HTTP_R_BAD_PORT},
    {"port only", GET11 "Host: :80" CRLF CRLF, 0, ET_HTTP_R_BAD_HOST},
    {"ipv6 literal", GET11 "Host: [::1]:8080" CRLF CRLF, 0, ET_HTTP_R_IP_LITERAL},
    {"ipvfuture literal", GET11 "Host: [v1.x]" CRLF CRLF, 0, ET_HTTP_R_IP_LITERAL},
};

static void test_invalid(void **state)
{
    for (size_t i = 0; i < sizeof(invalid_cases) / sizeof(invalid_cases[0]); i++) {
        const invalid_case *c = &invalid_cases[i];
        size_t n = c->len ? c->len : strlen(c->text);
        outcome o;
        check_all_ways(c->text, n, true, &o);
        if (o.rv != ET_E_HTTP_BAD_REQUEST || o.h.reason != c->reason)
            fail_msg("%s: rv %d reason %s, want 400 %s", c->name, o.rv,
                     et_http_reason_name(o.h.reason), et_http_reason_name(c->reason));
        assert_int_equal(et_err_class(o.rv), ET_CLASS_PROTOCOL);
        assert_int_equal(et_err_detail(o.rv), 400);
    }
}

/* Errors show before the head is complete: these prefixes have no blank line yet. */
static void test_early_errors(void **state)
{
    static const struct {
        const char *text;
        size_t len;
        et_http_reason reason;
    } cases[] = {
        {"GET / HT\0", 9, ET_HTTP_R_NUL},
        {"\x16\x03\x01", 3, ET_HTTP_R_REQUEST_LINE},
        {"GET / HTTP/1.1\r\nX: \x01", 20, ET_HTTP_R_CTL},
        {"GET / HTTP/1.1\rX", 16, ET_HTTP_R_BARE_CR},
        {"GET / HTTP/1.1\r\nX : y\r\n", 23, ET_HTTP_R_SPACE_BEFORE_COLON},
        {"GET / HTTP/3\r\n", 14, ET_HTTP_R_VERSION},
        {"GET / HTTP/1.1\r\nHost: [::1]\r\n", 29, ET_HTTP_R_IP_LITERAL},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n", 34, ET_HTTP_R_DUP_HOST},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        outcome o;
        check_all_ways(cases[i].text, cases[i].len, true, &o);
        assert_int_equal(o.rv, ET_E_HTTP_BAD_REQUEST);
        assert_int_equal(o.h.reason, cases[i].reason);
    }
    /* A CR at the end waits for the next byte. */
    outcome o;
    parse_whole("GET / HTTP/1.1\r", 15, &o);
    assert_int_equal(o.rv, ET_HTTP_HEAD_NEED_MORE);
}

/* --- field count ------------------------------------------------------------------------- */

/* fields_head writes a head with Host and |extra| more fields into |buf|. */
static size_t fields_head(char *buf, size_t cap, unsigned extra)
{
    size_t n = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: example.com\r\n");
    for (unsigned i = 0; i < extra; i++)
        n += (size_t)snprintf(buf + n, cap - n, "X-Field-%u: value %u\r\n", i, i);
    n += (size_t)snprintf(buf + n, cap - n, "\r\n");
    assert_true(n < cap);
    return n;
}

static void test_field_count(void **state)
{
    static char buf[8192];
    fields_head(buf, sizeof(buf), ET_HTTP_FIELDS_MAX - 1);
    valid_case c = {"100 fields",       buf,   "", "example.com", 0, 1, false,
                    ET_HTTP_FIELDS_MAX, "GET", 0};
    check_valid(&c);

    size_t n = fields_head(buf, sizeof(buf), ET_HTTP_FIELDS_MAX);
    outcome o;
    check_all_ways(buf, n, false, &o);
    assert_int_equal(o.rv, ET_E_HTTP_BAD_REQUEST);
    assert_int_equal(o.h.reason, ET_HTTP_R_TOO_MANY_FIELDS);
}

/* --- the 16 KiB cap ---------------------------------------------------------------------- */

/* sized_head writes a valid head of exactly |n| bytes (n >= 64) into |buf| by padding one
 * field; |lf| uses bare LF line ends. */
static void sized_head(char *buf, size_t n, bool lf)
{
    const char *eol = lf ? "\n" : "\r\n";
    size_t e = strlen(eol);
    int pre = snprintf(buf, n, "GET / HTTP/1.1%sHost: example.com%sX-Pad: ", eol, eol);
    assert_true(pre > 0 && (size_t)pre + 2 * e < n);
    size_t pad = n - (size_t)pre - 2 * e;
    memset(buf + pre, 'a', pad);
    memcpy(buf + (size_t)pre + pad, eol, e);
    memcpy(buf + (size_t)pre + pad + e, eol, e);
}

static void test_size_limit(void **state)
{
    size_t cap = ET_HTTP_HEAD_MAX + 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);

    /* Exactly ET_HTTP_HEAD_MAX bytes: complete, alone and with a body after it. */
    for (int lf = 0; lf <= 1; lf++) {
        sized_head(buf, ET_HTTP_HEAD_MAX, lf);
        memset(buf + ET_HTTP_HEAD_MAX, 'b', 100);
        outcome o;
        check_all_ways(buf, ET_HTTP_HEAD_MAX, false, &o);
        assert_int_equal(o.rv, ET_HTTP_HEAD_COMPLETE);
        assert_int_equal(o.h.head_len, ET_HTTP_HEAD_MAX);
        check_all_ways(buf, ET_HTTP_HEAD_MAX + 100, false, &o);
        assert_int_equal(o.rv, ET_HTTP_HEAD_COMPLETE);
        assert_int_equal(o.h.head_len, ET_HTTP_HEAD_MAX);
    }

    /* One byte more: 431, decided at ET_HTTP_HEAD_MAX bytes, before the end arrives. */
    sized_head(buf, ET_HTTP_HEAD_MAX + 1, false);
    outcome o;
    check_all_ways(buf, ET_HTTP_HEAD_MAX + 1, false, &o);
    assert_int_equal(o.rv, ET_E_HTTP_TOO_LARGE);
    assert_int_equal(o.h.reason, ET_HTTP_R_TOO_LARGE);
    assert_int_equal(et_err_detail(o.rv), 431);
    parse_whole(buf, ET_HTTP_HEAD_MAX, &o);
    assert_int_equal(o.rv, ET_E_HTTP_TOO_LARGE);
    parse_whole(buf, ET_HTTP_HEAD_MAX - 1, &o);
    assert_int_equal(o.rv, ET_HTTP_HEAD_NEED_MORE);

    /* The CRLF of the blank line split by the bound: CR is byte 16384, LF would be 16385. */
    sized_head(buf, ET_HTTP_HEAD_MAX + 2, false);
    parse_whole(buf, ET_HTTP_HEAD_MAX + 2, &o);
    assert_int_equal(o.rv, ET_E_HTTP_TOO_LARGE);

    /* No terminator at all by ET_HTTP_HEAD_MAX: 431 without asking for more. The buffer ends at
     * a guard page but |len| claims 4096 more bytes: touching any byte past ET_HTTP_HEAD_MAX
     * would fault, so this shows the parser never reads beyond the cap. */
    sized_head(buf, cap, false);
    uint8_t *g = tu_guarded(buf, ET_HTTP_HEAD_MAX);
    et_http_head h;
    et_http_head_init(&h);
    assert_int_equal(et_http_head_parse(g, ET_HTTP_HEAD_MAX - 1, &h), ET_HTTP_HEAD_NEED_MORE);
    assert_int_equal(et_http_head_parse(g, cap, &h), ET_E_HTTP_TOO_LARGE);
    et_http_head_init(&h);
    assert_int_equal(et_http_head_parse(g, cap, &h), ET_E_HTTP_TOO_LARGE);
    tu_guarded_free(g, ET_HTTP_HEAD_MAX);

    /* The same for a head made of many short lines. */
    size_t n = 0;
    n += (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: example.com\r\n");
    while (n + 8 < cap) {
        memcpy(buf + n, "X: 1\r\n", 6);
        n += 6;
    }
    parse_whole(buf, n, &o);
    assert_int_equal(o.rv, ET_E_HTTP_BAD_REQUEST); /* > 100 fields comes first */
    assert_int_equal(o.h.reason, ET_HTTP_R_TOO_MANY_FIELDS);
    free(buf);
}

/* --- API behaviour ----------------------------------------------------------------------- */

static void test_sticky_and_usage(void **state)
{
    const char *text = "GET /x HTTP/1.1\r\nHost: example.com\r\n\r\nBODY";
    size_t n = strlen(text);
    et_http_head h;
    et_http_head_init(&h);
    assert_int_equal(et_http_head_parse(NULL, 0, &h), ET_HTTP_HEAD_NEED_MORE);
    assert_int_equal(et_http_head_parse(NULL, 1, &h), ET_E_USAGE);
    assert_int_equal(et_http_head_parse((const uint8_t *)text, 10, &h), ET_HTTP_HEAD_NEED_MORE);
    assert_int_equal(et_http_head_parse((const uint8_t *)text, 9, &h), ET_E_USAGE); /* shrank */
    assert_int_equal(et_http_head_parse((const uint8_t *)text, n, &h), ET_HTTP_HEAD_COMPLETE);
    assert_int_equal(h.head_len, n - 4);
    assert_ptr_equal(h.method, (const uint8_t *)text);
    assert_ptr_equal(h.target, (const uint8_t *)text + 4);
    assert_int_equal(h.target_len, 2);

    /* After COMPLETE: the same answer, the views re-pointed into the buffer passed. */
    char copy[128];
    memcpy(copy, text, n);
    assert_int_equal(et_http_head_parse((const uint8_t *)copy, n, &h), ET_HTTP_HEAD_COMPLETE);
    assert_ptr_equal(h.method, (const uint8_t *)copy);
    assert_int_equal(h.head_len, n - 4);
    assert_int_equal(et_http_head_parse((const uint8_t *)copy, 5, &h), ET_E_USAGE);

    /* After an error: the same error, whatever follows. */
    et_http_head_init(&h);
    assert_int_equal(et_http_head_parse((const uint8_t *)"\x01", 1, &h), ET_E_HTTP_BAD_REQUEST);
    assert_int_equal(h.reason, ET_HTTP_R_REQUEST_LINE);
    assert_int_equal(et_http_head_parse((const uint8_t *)text, n, &h), ET_E_HTTP_BAD_REQUEST);

    /* A zeroed struct is the initial state. */
    et_http_head z = {0};
    assert_int_equal(et_http_head_parse((const uint8_t *)text, n, &z), ET_HTTP_HEAD_COMPLETE);

    for (int r = ET_HTTP_R_NONE; r <= ET_HTTP_R_HOST_MISMATCH; r++)
        assert_string_not_equal(et_http_reason_name((et_http_reason)r), "unknown");
    assert_string_equal(et_http_reason_name((et_http_reason)999), "unknown");
}

/* --- Host normalisation ------------------------------------------------------------------ */

static void test_host_parse(void **state)
{
    static const struct {
        const char *in;
        const char *out; /* NULL: refused */
        uint16_t port;
        et_http_reason why;
    } cases[] = {
        {"Example.COM", "example.com", 0, ET_HTTP_R_NONE},
        {"example.com.", "example.com", 0, ET_HTTP_R_NONE},
        {"EXAMPLE.COM.:1", "example.com", 1, ET_HTTP_R_NONE},
        {"localhost:00080", "localhost", 80, ET_HTTP_R_NONE},
        {"a", "a", 0, ET_HTTP_R_NONE},
        {"xn--bcher-kva.example", "xn--bcher-kva.example", 0, ET_HTTP_R_NONE},
        {"10.0.0.1", "10.0.0.1", 0, ET_HTTP_R_NONE},
        {"255.255.255.255:65535", "255.255.255.255", 65535, ET_HTTP_R_NONE},
        {"1.2.3.4.", "1.2.3.4", 0, ET_HTTP_R_NONE},
        {"1a.2.3.4", NULL, 0, ET_HTTP_R_BAD_HOST}, /* numeric last label: must be a quad */
        {"1.2.3.a4", "1.2.3.a4", 0, ET_HTTP_R_NONE},
        {"", NULL, 0, ET_HTTP_R_BAD_HOST},
        {".", NULL, 0, ET_HTTP_R_BAD_HOST},
        {"a.", "a", 0, ET_HTTP_R_NONE},
        {"a..", NULL, 0, ET_HTTP_R_BAD_HOST},
        {" a", NULL, 0, ET_HTTP_R_BAD_HOST},
        {"a_b", NULL, 0, ET_HTTP_R_BAD_HOST},
        {"a:65536", NULL, 0, ET_HTTP_R_BAD_PORT},
        {"a:99999", NULL, 0, ET_HTTP_R_BAD_PORT},
        {"a:-1", NULL, 0, ET_HTTP_R_BAD_PORT},
        {"[::1]", NULL, 0, ET_HTTP_R_IP_LITERAL},
        {"::1", NULL, 0, ET_HTTP_R_BAD_HOST},
        {"1.2.3.04", NULL, 0, ET_HTTP_R_BAD_HOST},
        {"1.2.3.1234", NULL, 0, ET_HTTP_R_BAD_HOST},
        {"1..2.3", NULL, 0, ET_HTTP_R_BAD_HOST},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[ET_HOST_MAX + 1];
        uint16_t port = 7;
        et_http_reason why = ET_HTTP_R_TOO_LARGE;
        size_t n = strlen(cases[i].in);
        uint8_t *g = tu_guarded(cases[i].in, n);
        int rv = et_http_host_parse(g, n, out, &port, &why);
        tu_guarded_free(g, n);
        if (cases[i].out == NULL) {
            if (rv != ET_E_HTTP_BAD_REQUEST || why != cases[i].why)
                fail_msg("host %s: rv %d why %s", cases[i].in, rv, et_http_reason_name(why));
            assert_string_equal(out, "");
            assert_int_equal(port, 0);
            continue;
        }
        if (rv < 0)
            fail_msg("host %s: refused (%s)", cases[i].in, et_http_reason_name(why));
        assert_int_equal(rv, strlen(cases[i].out));
        assert_string_equal(out, cases[i].out);
        assert_int_equal(port, cases[i].port);
        assert_int_equal(why, ET_HTTP_R_NONE);
        /* A normalised host is a fixed point. */
        char again[ET_HOST_MAX + 1];
        uint16_t p2;
        assert_int_equal(et_http_host_parse((const uint8_t *)out, strlen(out), again, &p2, NULL),
                         rv);
        assert_string_equal(again, out);
    }
}

/* The length bounds: labels of 63 and 64 bytes, names of 253 and 254 bytes. */
static void test_host_lengths(void **state)
{
    char in[600], out[ET_HOST_MAX + 1];
    uint16_t port;
    et_http_reason why;

    memset(in, 'a', 63);
    memcpy(in + 63, ".b", 2);
    assert_int_equal(et_http_host_parse((const uint8_t *)in, 65, out, &port, &why), 65);
    memset(in, 'a', 64);
    memcpy(in + 64, ".b", 2);
    assert_int_equal(et_http_host_parse((const uint8_t *)in, 66, out, &port, &why),
                     ET_E_HTTP_BAD_REQUEST);
    assert_int_equal(why, ET_HTTP_R_BAD_HOST);

    /* 253 bytes: 63.63.63.61 */
    size_t n = 0;
    const size_t labels[] = {63, 63, 63, 61};
    for (size_t i = 0; i < 4; i++) {
        if (i > 0)
            in[n++] = '.';
        memset(in + n, 'A' + (char)i, labels[i]);
        n += labels[i];
    }
    assert_int_equal(n, ET_HOST_MAX);
    uint8_t *g = tu_guarded(in, n);
    assert_int_equal(et_http_host_parse(g, n, out, &port, &why), ET_HOST_MAX);
    tu_guarded_free(g, n);
    assert_int_equal(strlen(out), ET_HOST_MAX);
    in[n] = '.'; /* 254 with the trailing dot: still 253 */
    assert_int_equal(et_http_host_parse((const uint8_t *)in, n + 1, out, &port, &why), ET_HOST_MAX);
    memcpy(in + n + 1, ":8080", 5);
    assert_int_equal(et_http_host_parse((const uint8_t *)in, n + 6, out, &port, &why), ET_HOST_MAX);
    assert_int_equal(port, 8080);
    in[n] = 'x'; /* 254 without: too long */
    assert_int_equal(et_http_host_parse((const uint8_t *)in, n + 1, out, &port, &why),
                     ET_E_HTTP_BAD_REQUEST);
    assert_int_equal(why, ET_HTTP_R_BAD_HOST);
    memset(in, 'a', sizeof(in)); /* far too long, one label */
    assert_int_equal(et_http_host_parse((const uint8_t *)in, sizeof(in), out, &port, &why),
                     ET_E_HTTP_BAD_REQUEST);

    /* The 253-byte name as a Host field of a full head. */
    char head[512];
    memset(in, 'a', 63);
    in[63] = '\0';
    n = (size_t)snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: %s.%s.%s.%.61s.:443\r\n\r\n",
                         in, in, in, in);
    outcome o;
    check_all_ways(head, n, true, &o);
    assert_int_equal(o.rv, ET_HTTP_HEAD_COMPLETE);
    assert_int_equal(o.h.host_len, ET_HOST_MAX);
    assert_int_equal(o.h.port, 443);
}

/* --- error responses --------------------------------------------------------------------- */

/* check_response parses |r| (|n| bytes) as an HTTP/1.1 response with status |status|: a status
 * line, header fields, a blank line and exactly Content-Length bytes of body. */
static void check_response(const char *r, size_t n, int status)
{
    char line[64];
    snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
    assert_memory_equal(r, line, strlen(line));
    const char *end = strstr(r, "\r\n\r\n");
    assert_non_null(end);
    size_t head = (size_t)(end - r) + 4;
    const char *cl = strstr(r, "\r\nContent-Length: ");
    assert_non_null(cl);
    assert_true(cl < end);
    size_t len = strtoul(cl + 18, NULL, 10);
    assert_int_equal(head + len, n);
    assert_int_equal(r[n - 1], '\n');
    assert_memory_equal(r + head, "edged: ", 7);
    assert_non_null(strstr(r, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(r, "\r\nConnection: close\r\n"));
    assert_true(memchr(r + head, '\n', len) == r + n - 1); /* one line */
    /* Every line of the head ends in CRLF and holds no other control byte. */
    for (size_t i = 0; i < head; i++) {
        unsigned char c = (unsigned char)r[i];
        if (c == '\r')
            assert_int_equal(r[i + 1], '\n');
        else if (c == '\n')
            assert_int_equal(r[i - 1], '\r');
        else
            assert_true(c >= 0x20 && c < 0x7f);
    }
}

static void test_error_responses(void **state)
{
    const int statuses[] = {400, 404, 408, 431, 502, 503, 504};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        char buf[ET_HTTP_ERROR_RESPONSE_MAX];
        int n = et_http_error_response(statuses[i], buf, sizeof(buf));
        assert_true(n > 0 && (size_t)n < sizeof(buf));
        assert_int_equal(strlen(buf), n);
        check_response(buf, (size_t)n, statuses[i]);
        /* Exactly n + 1 bytes is enough, n is not. */
        char small[ET_HTTP_ERROR_RESPONSE_MAX];
        assert_int_equal(et_http_error_response(statuses[i], small, (size_t)n + 1), n);
        assert_int_equal(et_http_error_response(statuses[i], small, (size_t)n), ET_E_USAGE);
    }
    char buf[ET_HTTP_ERROR_RESPONSE_MAX];
    assert_int_equal(et_http_error_response(200, buf, sizeof(buf)), ET_E_USAGE);
    assert_int_equal(et_http_error_response(500, buf, sizeof(buf)), ET_E_USAGE);
    assert_int_equal(et_http_error_response(400, NULL, 0), ET_E_USAGE);
    char b404[ET_HTTP_ERROR_RESPONSE_MAX];
    int n = et_http_error_response(404, b404, sizeof(b404));
    assert_true(n > 0);
    assert_non_null(strstr(b404, "\r\n\r\nedged: no tunnel serves this host\n"));
}

/* --- Content-Length (admin listeners) ------------------------------------------------------ */

/* length_of parses |text| (a complete head, placed against a guard page) and returns
 * et_http_content_length's result with |*len| set. */
static int length_of(const char *text, uint64_t max, uint64_t *len)
{
    size_t n = strlen(text);
    uint8_t *g = tu_guarded(text, n);
    et_http_head h;
    et_http_head_init(&h);
    assert_int_equal(et_http_head_parse(g, n, &h), ET_HTTP_HEAD_COMPLETE);
    *len = 12345;
    int rv = et_http_content_length(g, &h, max, len);
    tu_guarded_free(g, n);
    return rv;
}

static void test_content_length(void **state)
{
    uint64_t len;
    assert_int_equal(length_of("GET / HTTP/1.1" CRLF "Host: a" CRLF CRLF, 100, &len), ET_OK);
    assert_int_equal(len, 0);
    assert_int_equal(length_of("POST / HTTP/1.1" CRLF "Host: a" CRLF "content-LENGTH:  42 " CRLF
                               "X: y" CRLF CRLF,
                               100, &len),
                     ET_OK);
    assert_int_equal(len, 42);
    assert_int_equal(length_of(CRLF "POST / HTTP/1.1\nHost: a\nContent-Length: 7\n\n", 7, &len),
                     ET_OK); /* bare LF, a leading empty line */
    assert_int_equal(len, 7);
    assert_int_equal(length_of("POST / HTTP/1.1" CRLF "Host: a" CRLF
                               "Content-Length: 0100" CRLF CRLF,
                               100, &len),
                     ET_OK);
    assert_int_equal(len, 100);
    static const char *bad[] = {
        "POST / HTTP/1.1" CRLF "Host: a" CRLF "Content-Length:" CRLF CRLF,
        "POST / HTTP/1.1" CRLF "Host: a" CRLF "Content-Length: -1" CRLF CRLF,
        "POST / HTTP/1.1" CRLF "Host: a" CRLF "Content-Length: 1 2" CRLF CRLF,
        "POST / HTTP/1.1" CRLF "Host: a" CRLF "Content-Length: 0x10" CRLF CRLF,
        "POST / HTTP/1.1" CRLF "Host: a" CRLF "Content-Length: 1" CRLF
        "Content-Length: 1" CRLF CRLF,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(length_of(bad[i], 100, &len), ET_E_HTTP_BAD_REQUEST);
    assert_int_equal(
        length_of("POST / HTTP/1.1" CRLF "Host: a" CRLF "Content-Length: 101" CRLF CRLF, 100, &len),
        ET_E_HTTP_BODY_TOO_LARGE);
    assert_int_equal(length_of("POST / HTTP/1.1" CRLF "Host: a" CRLF
                               "Content-Length: 99999999999999999999999999" CRLF CRLF,
                               100, &len),
                     ET_E_HTTP_BODY_TOO_LARGE); /* no overflow */
    assert_int_equal(length_of("POST / HTTP/1.1" CRLF "Host: a" CRLF
                               "Transfer-Encoding: chunked" CRLF CRLF,
                               100, &len),
                     ET_E_HTTP_LENGTH_REQUIRED);
    /* Not a complete head: a usage error, nothing read. */
    et_http_head h;
    et_http_head_init(&h);
    assert_int_equal(et_http_content_length((const uint8_t *)"GET", &h, 100, &len), ET_E_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_early_errors),    cmocka_unit_test(test_field_count),
        cmocka_unit_test(test_size_limit),      cmocka_unit_test(test_sticky_and_usage),
        cmocka_unit_test(test_host_parse),      cmocka_unit_test(test_host_lengths),
        cmocka_unit_test(test_error_responses), cmocka_unit_test(test_content_length),
    };
    return TU_RUN("http_head", tests);
}
