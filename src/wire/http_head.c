/* http_head.c: the incremental HTTP/1.x request-head reader of the edge (http_head.h).
 *
 * Shape: a byte scanner walks each new byte once, checks it against what the current line may
 * hold (so NUL, bare CR and binary garbage fail at once, not 16 KiB later), and hands every
 * complete line to a line parser that works on a CBS of exactly that line. Between calls only
 * offsets are kept, never pointers, so the caller may move its buffer. Because a byte is checked
 * only after every byte before it, and a line is parsed as soon as its LF is scanned, the
 * sequence of checks, and so the outcome, is the same however the input is split.
 *
 * The helpers below return an et_http_reason (ET_HTTP_R_NONE when the rule holds) rather than
 * an int error: the reason is the named error a log wants, and the single conversion in fail()
 * turns it into the ET_E_HTTP_* result. */
#include "et/http_head.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bytestring.h>

/* Where the next complete line belongs. */
enum phase {
    PH_START = 0, /* the request line, or the one empty line allowed before it */
    PH_REQUEST,   /* the request line, an empty line having been skipped */
    PH_FIELDS,    /* a field line, or the blank line that ends the head */
};

#define LABEL_MAX 63

void et_http_head_init(et_http_head *h)
{
    memset(h, 0, sizeof(*h));
}

const char *et_http_reason_name(et_http_reason r)
{
    switch (r) {
    case ET_HTTP_R_NONE: return "none";
    case ET_HTTP_R_TOO_LARGE: return "too_large";
    case ET_HTTP_R_NUL: return "nul";
    case ET_HTTP_R_BARE_CR: return "bare_cr";
    case ET_HTTP_R_REQUEST_LINE: return "request_line";
    case ET_HTTP_R_VERSION: return "version";
    case ET_HTTP_R_TARGET: return "target";
    case ET_HTTP_R_CTL: return "ctl";
    case ET_HTTP_R_OBS_FOLD: return "obs_fold";
    case ET_HTTP_R_NO_COLON: return "no_colon";
    case ET_HTTP_R_SPACE_BEFORE_COLON: return "space_before_colon";
    case ET_HTTP_R_FIELD_NAME: return "field_name";
    case ET_HTTP_R_TOO_MANY_FIELDS: return "too_many_fields";
    case ET_HTTP_R_NO_HOST: return "no_host";
    case ET_HTTP_R_DUP_HOST: return "dup_host";
    case ET_HTTP_R_BAD_HOST: return "bad_host";
    case ET_HTTP_R_BAD_PORT: return "bad_port";
    case ET_HTTP_R_IP_LITERAL: return "ip_literal";
    case ET_HTTP_R_HOST_MISMATCH: return "host_mismatch";
    default: return "unknown";
    }
}

/* --- cursors and character classes ------------------------------------------------------- */

/* cursor_at sets |*out| to the |n| bytes at offset |off| of the |len| bytes at |buf| and returns
 * true, or returns false when they are not all inside. This is the one place offsets kept
 * between calls become pointers again; CBS does the bounds arithmetic. */
static bool cursor_at(const uint8_t *buf, size_t len, size_t off, size_t n, CBS *out)
{
    CBS all;
    CBS_init(&all, buf, len);
    return CBS_skip(&all, off) && CBS_get_bytes(&all, out, n);
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static uint8_t to_lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* tchar of RFC 9110 §5.6.2. */
static bool is_tchar(uint8_t c)
{
    return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

static bool all_tchar(CBS c)
{
    uint8_t b;
    while (CBS_get_u8(&c, &b)) {
        if (!is_tchar(b))
            return false;
    }
    return true;
}

/* Visible US-ASCII: what a request-target may hold here. */
static bool all_vchar(CBS c)
{
    uint8_t b;
    while (CBS_get_u8(&c, &b)) {
        if (b < 0x21 || b > 0x7e)
            return false;
    }
    return true;
}

/* field-value bytes: VCHAR, obs-text, SP and HTAB (RFC 9110 §5.5). */
static bool all_field_value(CBS c)
{
    uint8_t b;
    while (CBS_get_u8(&c, &b)) {
        if ((b < 0x20 && b != '\t') || b == 0x7f)
            return false;
    }
    return true;
}

/* peek_u8 sets |*c| to the first byte of |c| without consuming it. */
static bool peek_u8(CBS c, uint8_t *out)
{
    return CBS_get_u8(&c, out);
}

static void trim_ows(CBS *v)
{
    CBS t = *v;
    uint8_t c;
    while (CBS_get_u8(&t, &c) && is_ows(c))
        *v = t;
    t = *v;
    while (CBS_get_last_u8(&t, &c) && is_ows(c))
        *v = t;
}

/* equals_lower returns true when |c| equals the lowercase literal |lit| ignoring ASCII case. */
static bool equals_lower(CBS c, const char *lit)
{
    size_t n = strlen(lit);
    if (CBS_len(&c) != n)
        return false;
    uint8_t b;
    for (size_t i = 0; i < n && CBS_get_u8(&c, &b); i++) {
        if (to_lower(b) != (uint8_t)lit[i])
            return false;
    }
    return true;
}

static bool equals(CBS c, const char *lit)
{
    return CBS_mem_equal(&c, (const uint8_t *)lit, strlen(lit));
}

/* get_until_any sets |*out| to the bytes of |in| before the first byte in |stop| (all of |in|
 * when there is none) and advances |in| to that byte. */
static void get_until_any(CBS *in, CBS *out, const char *stop)
{
    CBS scan = *in;
    size_t n = 0;
    uint8_t c;
    while (CBS_get_u8(&scan, &c) && strchr(stop, c) == NULL)
        n++;
    if (!CBS_get_bytes(in, out, n)) /* cannot fail: n bytes were just read */
        CBS_init(out, NULL, 0);
}

/* --- Host -------------------------------------------------------------------------------- */

/* port_parse reads 1..5 digits with a value of 1..65535. */
static et_http_reason port_parse(CBS p, uint16_t *port)
{
    size_t n = CBS_len(&p);
    if (n < 1 || n > 5)
        return ET_HTTP_R_BAD_PORT;
    uint32_t v = 0;
    uint8_t c;
    while (CBS_get_u8(&p, &c)) {
        if (!is_digit(c))
            return ET_HTTP_R_BAD_PORT;
        v = v * 10 + (uint32_t)(c - '0');
    }
    if (v < 1 || v > 65535)
        return ET_HTTP_R_BAD_PORT;
    *port = (uint16_t)v;
    return ET_HTTP_R_NONE;
}

/* ipv4_valid checks that the |n| bytes of |s| (our own normalised copy, [0-9.] known) are a
 * dotted quad of decimal octets without leading zeros. */
static bool ipv4_valid(const char *s, size_t n)
{
    unsigned parts = 0, digits = 0, value = 0;
    bool lead_zero = false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (digits == 0 || value > 255 || (lead_zero && digits > 1) || ++parts > 4)
                return false;
            digits = value = 0;
            lead_zero = false;
            continue;
        }
        if (!is_digit((uint8_t)s[i]) || ++digits > 3)
            return false;
        if (digits == 1)
            lead_zero = s[i] == '0';
        value = value * 10 + (unsigned)(s[i] - '0');
    }
    return parts == 4;
}

/* host_normalize is host_parse without the clean-up of a failure. */
static et_http_reason host_normalize(CBS in, char out[ET_HOST_MAX + 1], size_t *len, uint16_t *port)
{
    uint8_t c;
    if (peek_u8(in, &c) && c == '[')
        return ET_HTTP_R_IP_LITERAL;
    CBS name, port_text;
    bool has_port = CBS_get_until_first(&in, &name, ':');
    if (has_port) {
        port_text = in;
        if (!CBS_skip(&port_text, 1)) /* the ':' */
            return ET_HTTP_R_BAD_PORT;
    } else {
        name = in;
    }

    /* Copy lowercased, checking the alphabet and the labels on the way. One trailing dot may
     * take the copy to ET_HOST_MAX + 1 bytes before it is dropped. */
    size_t n = 0, label = 0, prev_label = 0;
    bool digits = true, prev_digits = true;
    while (CBS_get_u8(&name, &c)) {
        if (n == ET_HOST_MAX + 1)
            return ET_HTTP_R_BAD_HOST;
        c = to_lower(c);
        if (c == '.') {
            if (label == 0)
                return ET_HTTP_R_BAD_HOST; /* leading dot, or two in a row */
            prev_label = label;
            prev_digits = digits;
            label = 0;
            digits = true;
        } else if ((c >= 'a' && c <= 'z') || is_digit(c) || c == '-') {
            if (++label > LABEL_MAX)
                return ET_HTTP_R_BAD_HOST;
            digits = digits && is_digit(c);
        } else {
            return ET_HTTP_R_BAD_HOST;
        }
        out[n++] = (char)c;
    }
    if (n > 0 && label == 0) { /* a trailing dot: drop it, its label is the last one */
        n--;
        label = prev_label;
        digits = prev_digits;
    }
    if (n == 0 || n > ET_HOST_MAX || label == 0)
        return ET_HTTP_R_BAD_HOST;
    out[n] = '\0';
    /* A numeric last label means an address was meant: "1.2.3" must not route as a name. */
    if (digits && !ipv4_valid(out, n))
        return ET_HTTP_R_BAD_HOST;
    if (has_port) {
        et_http_reason why = port_parse(port_text, port);
        if (why != ET_HTTP_R_NONE)
            return why;
    }
    *len = n;
    return ET_HTTP_R_NONE;
}

/* host_parse is et_http_host_parse on a cursor; |*len| gets the host's length. On failure
 * |out| is the empty string, |*len| and |*port| are 0. */
static et_http_reason host_parse(CBS in, char out[ET_HOST_MAX + 1], size_t *len, uint16_t *port)
{
    *len = 0;
    *port = 0;
    et_http_reason why = host_normalize(in, out, len, port);
    if (why != ET_HTTP_R_NONE) {
        out[0] = '\0';
        *len = 0;
        *port = 0;
    }
    return why;
}

int et_http_host_parse(const uint8_t *p, size_t n, char out[ET_HOST_MAX + 1], uint16_t *port,
                       et_http_reason *why)
{
    size_t len = 0;
    et_http_reason r = ET_HTTP_R_BAD_HOST;
    if (p != NULL || n == 0) {
        CBS in;
        CBS_init(&in, p, n);
        r = host_parse(in, out, &len, port);
    }
    if (why != NULL)
        *why = r;
    ET_ENSURE(r == ET_HTTP_R_NONE, ET_E_HTTP_BAD_REQUEST);
    return (int)len;
}

/* --- request line ------------------------------------------------------------------------ */

/* target_authority checks that |target| has a form |method| allows and, for the authority- and
 * absolute-forms, normalises the host it names into |host| (|*host_len| = 0 for the others). */
static et_http_reason target_authority(CBS method, CBS target, char host[ET_HOST_MAX + 1],
                                       size_t *host_len)
{
    uint16_t port = 0;
    uint8_t first = 0;
    *host_len = 0;
    if (equals(method, "CONNECT")) {
        /* authority-form: host ":" port, the port required (RFC 9110 §9.3.6). */
        if (host_parse(target, host, host_len, &port) != ET_HTTP_R_NONE || port == 0)
            return ET_HTTP_R_TARGET;
        return ET_HTTP_R_NONE;
    }
    if (equals(target, "*"))
        return equals(method, "OPTIONS") ? ET_HTTP_R_NONE : ET_HTTP_R_TARGET;
    if (peek_u8(target, &first) && first == '/')
        return ET_HTTP_R_NONE;

    /* absolute-form: "http" / "https" "://" authority [ "/" / "?" / "#" ... ] */
    CBS scheme, authority;
    if (!CBS_get_until_first(&target, &scheme, ':') ||
        !(equals_lower(scheme, "http") || equals_lower(scheme, "https")))
        return ET_HTTP_R_TARGET;
    CBS sep;
    if (!CBS_get_bytes(&target, &sep, 3) || !equals(sep, "://"))
        return ET_HTTP_R_TARGET;
    get_until_any(&target, &authority, "/?#");
    CBS at = authority, userinfo;
    if (CBS_get_until_first(&at, &userinfo, '@')) /* userinfo: refused (RFC 9110 §4.2.4) */
        return ET_HTTP_R_TARGET;
    if (host_parse(authority, host, host_len, &port) != ET_HTTP_R_NONE)
        return ET_HTTP_R_TARGET;
    return ET_HTTP_R_NONE;
}

static et_http_reason parse_request_line(et_http_head *h, CBS line, size_t off)
{
    CBS method, target;
    if (!CBS_get_until_first(&line, &method, ' ') || CBS_len(&method) == 0 || !all_tchar(method) ||
        !CBS_skip(&line, 1))
        return ET_HTTP_R_REQUEST_LINE;
    if (!CBS_get_until_first(&line, &target, ' ') || CBS_len(&target) == 0 || !all_vchar(target) ||
        !CBS_skip(&line, 1))
        return ET_HTTP_R_REQUEST_LINE;

    /* HTTP-version, case-sensitive (RFC 9112 §2.3); whatever else starts "HTTP/" is a version
     * we do not serve. */
    CBS name = line;
    CBS prefix;
    if (!CBS_get_bytes(&name, &prefix, 5) || !equals(prefix, "HTTP/"))
        return ET_HTTP_R_REQUEST_LINE;
    if (equals(line, "HTTP/1.1"))
        h->minor = 1;
    else if (equals(line, "HTTP/1.0"))
        h->minor = 0;
    else
        return ET_HTTP_R_VERSION;

    char host[ET_HOST_MAX + 1];
    size_t host_len;
    et_http_reason why = target_authority(method, target, host, &host_len);
    if (why != ET_HTTP_R_NONE)
        return why;
    h->st.method_off = off;
    h->method_len = CBS_len(&method);
    h->st.target_off = off + CBS_len(&method) + 1;
    h->target_len = CBS_len(&target);
    return ET_HTTP_R_NONE;
}

/* --- field lines ------------------------------------------------------------------------- */

/* list_has returns true when the comma-separated list |v| has an element equal to the
 * lowercase |token| ignoring case (RFC 9110 §5.6.1; empty elements are skipped). */
static bool list_has(CBS v, const char *token)
{
    for (;;) {
        CBS item;
        bool more = CBS_get_until_first(&v, &item, ',');
        if (!more)
            item = v;
        trim_ows(&item);
        if (equals_lower(item, token))
            return true;
        if (!more || !CBS_skip(&v, 1))
            return false;
    }
}

static et_http_reason parse_field(et_http_head *h, CBS line)
{
    if (h->nfields >= ET_HTTP_FIELDS_MAX)
        return ET_HTTP_R_TOO_MANY_FIELDS;
    h->nfields++;
    uint8_t c;
    if (peek_u8(line, &c) && is_ows(c))
        return ET_HTTP_R_OBS_FOLD;
    CBS name;
    if (!CBS_get_until_first(&line, &name, ':') || !CBS_skip(&line, 1))
        return ET_HTTP_R_NO_COLON;
    CBS last = name;
    if (!CBS_get_last_u8(&last, &c))
        return ET_HTTP_R_FIELD_NAME;
    if (is_ows(c))
        return ET_HTTP_R_SPACE_BEFORE_COLON;
    if (!all_tchar(name))
        return ET_HTTP_R_FIELD_NAME;
    CBS value = line;
    trim_ows(&value);
    if (!all_field_value(value)) /* the byte scanner refused these already; kept as the rule */
        return ET_HTTP_R_CTL;

    if (equals_lower(name, "host")) {
        if (h->st.host_seen)
            return ET_HTTP_R_DUP_HOST;
        h->st.host_seen = true;
        return host_parse(value, h->host, &h->host_len, &h->port);
    }
    if (equals_lower(name, "connection") && list_has(value, "upgrade"))
        h->st.conn_upgrade = true;
    else if (equals_lower(name, "upgrade") && CBS_len(&value) > 0)
        h->st.upgrade_field = true;
    return ET_HTTP_R_NONE;
}

/* --- the scanner ------------------------------------------------------------------------- */

/* check_byte returns why byte |c| cannot come next in the current line, or ET_HTTP_R_NONE. */
static et_http_reason check_byte(const et_http_head_state *st, uint8_t c)
{
    if (st->cr && c != '\n')
        return ET_HTTP_R_BARE_CR;
    if (c == 0)
        return ET_HTTP_R_NUL;
    if (c == '\r' || c == '\n')
        return ET_HTTP_R_NONE;
    if (st->phase != PH_FIELDS) /* request line: visible ASCII and SP only */
        return c >= 0x20 && c < 0x7f ? ET_HTTP_R_NONE : ET_HTTP_R_REQUEST_LINE;
    return (c < 0x20 && c != '\t') || c == 0x7f ? ET_HTTP_R_CTL : ET_HTTP_R_NONE;
}

static int fail(et_http_head *h, et_http_reason why)
{
    h->reason = why;
    h->st.result = why == ET_HTTP_R_TOO_LARGE ? ET_E_HTTP_TOO_LARGE : ET_E_HTTP_BAD_REQUEST;
    return ET_RAISE(h->st.result);
}

/* set_views points h->method and h->target into |buf| (|len| bytes). */
static bool set_views(et_http_head *h, const uint8_t *buf, size_t len)
{
    CBS m, t;
    if (!cursor_at(buf, len, h->st.method_off, h->method_len, &m) ||
        !cursor_at(buf, len, h->st.target_off, h->target_len, &t))
        return false;
    h->method = CBS_data(&m);
    h->target = CBS_data(&t);
    return true;
}

/* finish applies the rules that need the whole head, once its blank line has arrived. */
static et_http_reason finish(et_http_head *h, const uint8_t *buf, size_t len)
{
    if (!h->st.host_seen)
        return ET_HTTP_R_NO_HOST;
    CBS method, target;
    if (!cursor_at(buf, len, h->st.method_off, h->method_len, &method) ||
        !cursor_at(buf, len, h->st.target_off, h->target_len, &target))
        return ET_HTTP_R_REQUEST_LINE; /* unreachable: both were inside when parsed */
    char host[ET_HOST_MAX + 1];
    size_t host_len;
    et_http_reason why = target_authority(method, target, host, &host_len);
    if (why != ET_HTTP_R_NONE)
        return why;
    if (host_len > 0 && (host_len != h->host_len || memcmp(host, h->host, host_len) != 0))
        return ET_HTTP_R_HOST_MISMATCH;
    h->upgrade = h->minor == 1 && h->st.upgrade_field && h->st.conn_upgrade;
    return ET_HTTP_R_NONE;
}

/* end_line handles the complete line |line| (terminator removed) that starts at |off|. */
static et_http_reason end_line(et_http_head *h, const uint8_t *buf, size_t len, CBS line,
                               size_t off)
{
    et_http_head_state *st = &h->st;
    switch (st->phase) {
    case PH_START:
    case PH_REQUEST:
        if (CBS_len(&line) == 0) {
            if (st->phase == PH_REQUEST)
                return ET_HTTP_R_REQUEST_LINE; /* only one empty line is tolerated */
            st->phase = PH_REQUEST;
            h->start = st->scan;
            return ET_HTTP_R_NONE;
        }
        st->phase = PH_FIELDS;
        return parse_request_line(h, line, off);
    case PH_FIELDS: {
        if (CBS_len(&line) > 0)
            return parse_field(h, line);
        et_http_reason why = finish(h, buf, len);
        if (why == ET_HTTP_R_NONE) {
            h->head_len = st->scan;
            st->result = ET_HTTP_HEAD_COMPLETE;
        }
        return why;
    }
    default: return ET_HTTP_R_REQUEST_LINE;
    }
}

int et_http_head_parse(const uint8_t *buf, size_t len, et_http_head *h)
{
    et_http_head_state *st = &h->st;
    if (st->result < 0)
        return st->result;
    ET_ENSURE(buf != NULL || len == 0, ET_E_USAGE);
    ET_ENSURE(len >= st->scan, ET_E_USAGE);
    size_t limit = len < ET_HTTP_HEAD_MAX ? len : ET_HTTP_HEAD_MAX;
    if (st->result == ET_HTTP_HEAD_COMPLETE) {
        ET_ENSURE(set_views(h, buf, limit), ET_E_USAGE);
        return ET_HTTP_HEAD_COMPLETE;
    }

    CBS in;
    ET_ENSURE(cursor_at(buf, limit, st->scan, limit - st->scan, &in), ET_E_USAGE);
    uint8_t c;
    while (CBS_get_u8(&in, &c)) {
        et_http_reason why = check_byte(st, c);
        if (why != ET_HTTP_R_NONE)
            return fail(h, why);
        bool cr_before = st->cr;
        st->cr = c == '\r';
        st->scan++;
        if (c != '\n')
            continue;
        /* The line is [st->line, LF), less the CR before the LF if there is one. */
        size_t off = st->line;
        size_t n = st->scan - 1 - off - (cr_before ? 1 : 0);
        st->line = st->scan;
        CBS line;
        if (!cursor_at(buf, limit, off, n, &line))
            return fail(h, ET_HTTP_R_REQUEST_LINE); /* unreachable: the line was just scanned */
        why = end_line(h, buf, limit, line, off);
        if (why != ET_HTTP_R_NONE)
            return fail(h, why);
        if (st->result == ET_HTTP_HEAD_COMPLETE) {
            ET_ENSURE(set_views(h, buf, limit), ET_E_USAGE);
            return ET_HTTP_HEAD_COMPLETE;
        }
    }
    if (limit == ET_HTTP_HEAD_MAX)
        return fail(h, ET_HTTP_R_TOO_LARGE);
    return ET_HTTP_HEAD_NEED_MORE;
}

/* --- error responses --------------------------------------------------------------------- */

int et_http_error_response(int status, char *buf, size_t cap)
{
    const char *phrase, *body;
    switch (status) {
    case 400:
        phrase = "Bad Request";
        body = "edged: malformed request head\n";
        break;
    case 404:
        phrase = "Not Found";
        body = "edged: no tunnel serves this host\n";
        break;
    case 408:
        phrase = "Request Timeout";
        body = "edged: the request head did not arrive in time\n";
        break;
    case 429:
        phrase = "Too Many Requests";
        body = "edged: too many requests for this tunnel or from this address\n";
        break;
    case 431:
        phrase = "Request Header Fields Too Large";
        body = "edged: request head larger than 16384 bytes\n";
        break;
    case 502:
        phrase = "Bad Gateway";
        body = "edged: the tunnel could not reach its origin\n";
        break;
    case 503:
        phrase = "Service Unavailable";
        body = "edged: the tunnel is busy or going away\n";
        break;
    case 504:
        phrase = "Gateway Timeout";
        body = "edged: the origin did not answer in time\n";
        break;
    default: return ET_RAISE(ET_E_USAGE);
    }
    ET_ENSURE(buf != NULL && cap > 0, ET_E_USAGE);
    int n = snprintf(buf, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "%s",
                     status, phrase, strlen(body), body);
    ET_ENSURE(n > 0 && (size_t)n < cap, ET_E_USAGE);
    return n;
}

/* --- request bodies (admin listeners) --------------------------------------------------- */

int et_http_content_length(const uint8_t *buf, const et_http_head *h, uint64_t max, uint64_t *out)
{
    ET_ENSURE(buf != NULL && h != NULL && out != NULL && h->st.result == ET_HTTP_HEAD_COMPLETE &&
                  h->start <= h->head_len,
              ET_E_USAGE);
    CBS head;
    CBS_init(&head, buf + h->start, h->head_len - h->start);
    bool first = true, seen = false;
    uint64_t len = 0;
    while (CBS_len(&head) > 0) {
        const uint8_t *lf = memchr(CBS_data(&head), '\n', CBS_len(&head));
        CBS line;
        if (lf == NULL || !CBS_get_bytes(&head, &line, (size_t)(lf - CBS_data(&head)) + 1))
            return ET_RAISE(ET_E_HTTP_BAD_REQUEST); /* a complete head ends every line */
        if (first) {
            first = false; /* the request line */
            continue;
        }
        const uint8_t *colon = memchr(CBS_data(&line), ':', CBS_len(&line));
        CBS name, value;
        if (colon == NULL)
            continue; /* the blank line that ends the head */
        if (!CBS_get_bytes(&line, &name, (size_t)(colon - CBS_data(&line))) || !CBS_skip(&line, 1))
            return ET_RAISE(ET_E_HTTP_BAD_REQUEST);
        if (equals_lower(name, "transfer-encoding"))
            return ET_RAISE(ET_E_HTTP_LENGTH_REQUIRED);
        if (!equals_lower(name, "content-length"))
            continue;
        ET_ENSURE(!seen, ET_E_HTTP_BAD_REQUEST); /* two lengths: which one frames the body? */
        seen = true;
        value = line;
        uint8_t c;
        for (CBS t = value; CBS_get_last_u8(&t, &c) && (c == '\n' || c == '\r'); value = t) {
        }
        trim_ows(&value);
        ET_ENSURE(CBS_len(&value) > 0, ET_E_HTTP_BAD_REQUEST);
        bool big = false;
        while (CBS_get_u8(&value, &c)) {
            ET_ENSURE(c >= '0' && c <= '9', ET_E_HTTP_BAD_REQUEST);
            if (!big)
                len = len * 10 + (uint64_t)(c - '0');
            big = big || len > max; /* keep checking the digits, stop counting */
        }
        if (big)
            return ET_RAISE(ET_E_HTTP_BODY_TOO_LARGE);
    }
    *out = len;
    return ET_OK;
}
