/* fuzz/http_head.c: the edge's HTTP/1.x request-head reader (et/http_head.h) under libFuzzer
 * and AFL++.
 *
 * Reaches: et_http_head_init, et_http_head_parse (the byte scanner, the request line and its
 * target forms, field lines, Connection/Upgrade, Host normalisation, the ET_HTTP_HEAD_MAX cap,
 * the sticky results), et_http_host_parse, et_http_reason_name, et_http_error_response and,
 * for a complete head, et_http_content_length (ET_OK within the bound, or 400, 411, 413).
 *
 * The input is the bytes a client sends, as is (no control bytes), so the seeds in
 * fuzz/corpus/http_head/ are plain request heads, valid and malformed. Each input is parsed
 *   - whole, twice with fresh states (the outcome must not differ: determinism);
 *   - grown into one state: one byte at a time for the first 64 bytes, then in steps of 2, 3,
 *     4... bytes (the outcome must equal the whole parse, every earlier call must be NEED_MORE,
 *     and a COMPLETE must not come before the prefix covers head_len);
 *   - as fresh prefixes at a few split points around head_len and through the input, each
 *     copied to an exactly-sized heap buffer so ASan sees any over-read (a prefix shorter than
 *     head_len is NEED_MORE, a longer one COMPLETE with the same head_len; for a refused input a
 *     prefix is NEED_MORE or the same error);
 *   - the input's first line, also as a Host value for et_http_host_parse.
 * Round trip: a COMPLETE head's host (and port) is rebuilt into a canonical head
 * "GET / HTTP/1.1\r\nHost: <host>[:<port>]\r\n\r\n" that must parse to the same host and port,
 * and a normalised host must be a fixed point of et_http_host_parse. The host must be 1..253
 * bytes of [a-z0-9.-] with no empty label. Any violation aborts.
 *
 * Deterministic: no clock, no randomness, no global state. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "et/http_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* outcome is the comparable part of one parse: views as offsets into the input. */
typedef struct outcome {
    int rv;
    et_http_reason reason;
    size_t head_len, start, method_off, method_len, target_off, target_len, host_len;
    int minor;
    bool upgrade;
    unsigned nfields;
    uint16_t port;
    char host[ET_HOST_MAX + 1];
} outcome;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void capture(outcome *o, int rv, const et_http_head *h, const uint8_t *buf, size_t len)
{
    memset(o, 0, sizeof(*o));
    o->rv = rv;
    o->reason = h->reason;
    if (rv != ET_HTTP_HEAD_COMPLETE)
        return;
    /* The views lie inside the buffer, within the head. */
    check(h->method != NULL && h->target != NULL);
    check(h->method >= buf && h->target >= buf);
    o->method_off = (size_t)(h->method - buf);
    o->target_off = (size_t)(h->target - buf);
    check(o->method_off + h->method_len <= h->head_len);
    check(o->target_off + h->target_len <= h->head_len);
    check(h->head_len <= len);
    o->head_len = h->head_len;
    o->start = h->start;
    o->method_len = h->method_len;
    o->target_len = h->target_len;
    o->host_len = h->host_len;
    o->minor = h->minor;
    o->upgrade = h->upgrade;
    o->nfields = h->nfields;
    o->port = h->port;
    memcpy(o->host, h->host, sizeof(o->host));
}

static bool same(const outcome *a, const outcome *b)
{
    return memcmp(a, b, sizeof(*a)) == 0;
}

static void parse_fresh(const uint8_t *buf, size_t len, outcome *o)
{
    et_http_head h;
    et_http_head_init(&h);
    int rv = et_http_head_parse(buf, len, &h);
    capture(o, rv, &h, buf, len);
}

/* parse_copy parses the first |len| bytes of |data| from an exactly-sized heap copy. */
static void parse_copy(const uint8_t *data, size_t len, outcome *o)
{
    uint8_t *copy = malloc(len ? len : 1);
    check(copy != NULL);
    if (len > 0)
        memcpy(copy, data, len);
    parse_fresh(copy, len, o);
    free(copy);
}

/* host_ok checks a normalised host: 1..ET_HOST_MAX bytes of [a-z0-9.-], labels 1..63 bytes,
 * and et_http_host_parse gives it back unchanged. */
static void check_host(const char *host, size_t n)
{
    check(n >= 1 && n <= ET_HOST_MAX && strlen(host) == n);
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = host[i];
        if (c == '.') {
            check(label > 0);
            label = 0;
            continue;
        }
        check((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
        check(++label <= 63);
    }
    check(label > 0);
    char again[ET_HOST_MAX + 1];
    uint16_t port = 1;
    et_http_reason why = ET_HTTP_R_TOO_LARGE;
    check(et_http_host_parse((const uint8_t *)host, n, again, &port, &why) == (int)n);
    check(why == ET_HTTP_R_NONE && port == 0 && memcmp(again, host, n + 1) == 0);
}

static void check_outcome(const outcome *o)
{
    if (o->rv == ET_HTTP_HEAD_COMPLETE) {
        check(o->reason == ET_HTTP_R_NONE);
        check(o->head_len <= ET_HTTP_HEAD_MAX);
        check(o->minor == 0 || o->minor == 1);
        check(!o->upgrade || o->minor == 1);
        check(o->nfields >= 1 && o->nfields <= ET_HTTP_FIELDS_MAX);
        check(o->start <= 2 && o->method_off == o->start);
        check_host(o->host, o->host_len);
        return;
    }
    if (o->rv == ET_HTTP_HEAD_NEED_MORE)
        return;
    check(o->rv == ET_E_HTTP_BAD_REQUEST || o->rv == ET_E_HTTP_TOO_LARGE);
    check((o->rv == ET_E_HTTP_TOO_LARGE) == (o->reason == ET_HTTP_R_TOO_LARGE));
    check(o->reason != ET_HTTP_R_NONE);
    check(strcmp(et_http_reason_name(o->reason), "unknown") != 0);
    char resp[ET_HTTP_ERROR_RESPONSE_MAX];
    check(et_http_error_response(et_err_detail(o->rv), resp, sizeof(resp)) > 0);
}

/* check_prefix checks a fresh parse of the first |k| bytes against the whole input's result. */
static void check_prefix(const uint8_t *data, size_t k, const outcome *whole)
{
    outcome o;
    parse_copy(data, k, &o);
    if (whole->rv == ET_HTTP_HEAD_COMPLETE) {
        if (k < whole->head_len)
            check(o.rv == ET_HTTP_HEAD_NEED_MORE);
        else
            check(same(&o, whole));
        return;
    }
    check(o.rv == ET_HTTP_HEAD_NEED_MORE || same(&o, whole));
}

/* grow feeds |data| to one state in growing prefixes and checks the calls against |whole|. */
static void grow(const uint8_t *data, size_t size, const outcome *whole)
{
    et_http_head h;
    et_http_head_init(&h);
    size_t k = 0, prev = 0, step = 1;
    for (;;) {
        int rv = et_http_head_parse(data, k, &h);
        if (rv != ET_HTTP_HEAD_NEED_MORE || k == size) {
            outcome o;
            capture(&o, rv, &h, data, k);
            if (rv == ET_HTTP_HEAD_COMPLETE) {
                check(o.head_len <= k && (k == 0 || o.head_len > prev));
                /* The same state, called again with everything: still the same head. */
                check(et_http_head_parse(data, size, &h) == ET_HTTP_HEAD_COMPLETE);
                capture(&o, ET_HTTP_HEAD_COMPLETE, &h, data, size);
            } else {
                check(et_http_head_parse(data, size, &h) == rv); /* sticky */
            }
            check(same(&o, whole));
            return;
        }
        prev = k;
        if (k >= 64)
            step++;
        k = size - k < step ? size : k + step;
    }
}

/* round_trip rebuilds a canonical head from |o|'s host and port and checks it parses back. */
static void round_trip(const outcome *o)
{
    char head[ET_HOST_MAX + 64];
    int n = o->port ? snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: %s:%u\r\n\r\n", o->host,
                               (unsigned)o->port)
                    : snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", o->host);
    check(n > 0 && (size_t)n < sizeof(head));
    outcome back;
    parse_fresh((const uint8_t *)head, (size_t)n, &back);
    check(back.rv == ET_HTTP_HEAD_COMPLETE && back.head_len == (size_t)n);
    check(back.port == o->port && back.host_len == o->host_len && strcmp(back.host, o->host) == 0);
}

/* host_value runs et_http_host_parse on the input's first line (up to CR or LF). */
static void host_value(const uint8_t *data, size_t size)
{
    size_t n = 0;
    while (n < size && n < 600 && data[n] != '\r' && data[n] != '\n')
        n++;
    char out[ET_HOST_MAX + 1];
    uint16_t port = 0;
    et_http_reason why = ET_HTTP_R_NONE;
    int rv = et_http_host_parse(data, n, out, &port, &why);
    if (rv < 0) {
        check(rv == ET_E_HTTP_BAD_REQUEST && out[0] == '\0' && port == 0);
        check(why == ET_HTTP_R_BAD_HOST || why == ET_HTTP_R_BAD_PORT ||
              why == ET_HTTP_R_IP_LITERAL);
        return;
    }
    check(why == ET_HTTP_R_NONE);
    check_host(out, (size_t)rv);
}

/* content_length checks et_http_content_length on the complete head at the start of |data|,
 * copied to an exactly-sized buffer. */
static void content_length(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    check(copy != NULL);
    memcpy(copy, data, size);
    et_http_head h;
    et_http_head_init(&h);
    check(et_http_head_parse(copy, size, &h) == ET_HTTP_HEAD_COMPLETE);
    uint64_t len = 0;
    int rv = et_http_content_length(copy, &h, 8192, &len);
    check(rv == ET_OK ? len <= 8192
                      : rv == ET_E_HTTP_BAD_REQUEST || rv == ET_E_HTTP_LENGTH_REQUIRED ||
                            rv == ET_E_HTTP_BODY_TOO_LARGE);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    outcome whole, again;
    parse_fresh(data, size, &whole);
    check_outcome(&whole);
    parse_fresh(data, size, &again);
    check(same(&whole, &again));
    /* Only the first ET_HTTP_HEAD_MAX bytes count. */
    if (size >= ET_HTTP_HEAD_MAX)
        check(whole.rv != ET_HTTP_HEAD_NEED_MORE);

    grow(data, size, &whole);

    size_t splits[6] = {size / 2, size / 3, size - (size > 0), size};
    size_t nsplits = 4;
    if (whole.rv == ET_HTTP_HEAD_COMPLETE) {
        splits[nsplits++] = whole.head_len;
        splits[nsplits++] = whole.head_len - 1; /* head_len >= 1 */
    }
    for (size_t i = 0; i < nsplits; i++)
        check_prefix(data, splits[i], &whole);

    if (whole.rv == ET_HTTP_HEAD_COMPLETE) {
        content_length(data, size);
        round_trip(&whole);
        /* The head alone is a complete head: it delimits itself. */
        outcome head;
        parse_copy(data, whole.head_len, &head);
        check(same(&head, &whole));
    }
    host_value(data, size);
    return 0;
}
