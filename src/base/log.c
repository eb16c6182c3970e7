/* log.c: one-line structured events of log.h. */
#include "et/log.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_format = ET_LOG_TEXT;
static atomic_int log_min = ET_LOG_INFO;
static atomic_int log_fd = 2;

void et_log_init(et_log_format fmt, et_log_level min)
{
    atomic_store_explicit(&log_format, (int)fmt, memory_order_relaxed);
    atomic_store_explicit(&log_min, (int)min, memory_order_relaxed);
}

int et_log_set_fd(int fd)
{
    return atomic_exchange_explicit(&log_fd, fd, memory_order_relaxed);
}

bool et_log_enabled(et_log_level lvl)
{
    return (int)lvl >= atomic_load_explicit(&log_min, memory_order_relaxed);
}

const char *et_log_level_name(et_log_level lvl)
{
    switch (lvl) {
    case ET_LOG_DEBUG: return "debug";
    case ET_LOG_INFO: return "info";
    case ET_LOG_WARN: return "warn";
    case ET_LOG_ERROR: return "error";
    default: return "?";
    }
}

int et_log_parse_level(const char *s, et_log_level *out)
{
    ET_ENSURE(s != NULL && out != NULL, ET_E_USAGE);
    static const struct {
        const char *name;
        et_log_level lvl;
    } names[] = {{"debug", ET_LOG_DEBUG},
                 {"info", ET_LOG_INFO},
                 {"warn", ET_LOG_WARN},
                 {"warning", ET_LOG_WARN},
                 {"error", ET_LOG_ERROR}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].lvl;
            return ET_OK;
        }
    }
    return ET_RAISE(ET_E_CONFIG);
}

int et_log_parse_format(const char *s, et_log_format *out)
{
    ET_ENSURE(s != NULL && out != NULL, ET_E_USAGE);
    if (strcasecmp(s, "text") == 0)
        *out = ET_LOG_TEXT;
    else if (strcasecmp(s, "json") == 0)
        *out = ET_LOG_JSON;
    else
        return ET_RAISE(ET_E_CONFIG);
    return ET_OK;
}

/* ---- line building ------------------------------------------------------------------------- */

/* Room kept back for closing a cut line: a quote, the truncation marker, '}' and '\n'. */
#define LINE_RESERVE 32

typedef struct line {
    char buf[ET_LOG_LINE_MAX];
    size_t len;
    size_t lim; /* appends stop here; the rest is LINE_RESERVE */
    bool json;
    bool cut;        /* something did not fit: every later append is refused */
    bool open_quote; /* inside a string whose closing quote is still due */
} line;

/* put appends |n| bytes whole, or nothing and marks the line cut. */
static bool put(line *l, const void *p, size_t n)
{
    if (l->cut || n > l->lim - l->len) {
        l->cut = true;
        return false;
    }
    memcpy(l->buf + l->len, p, n);
    l->len += n;
    return true;
}

static bool puts_(line *l, const char *s)
{
    return put(l, s, strlen(s));
}

/* utf8_len returns the length of the valid UTF-8 sequence at |p| (|n| bytes left), or 0 when the
 * byte there does not start one (RFC 3629: no overlongs, surrogates or values past U+10FFFF). */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t b = p[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf) {
        need = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        need = 3;
        if (b == 0xe0)
            lo = 0xa0;
        else if (b == 0xed)
            hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 4;
        if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return need;
}

static const char hexdig[] = "0123456789abcdef";

/* put_escaped appends |n| bytes of |p| escaped for the inside of a quoted string of the line's
 * format, one whole character or escape at a time, stopping at the first that does not fit. */
static void put_escaped(line *l, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        size_t u = utf8_len(p + i, n - i);
        char esc[8];
        const char *out = esc;
        size_t olen = 2;
        esc[0] = '\\';
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
        } else if (c == '\n') {
            esc[1] = 'n';
        } else if (c == '\r') {
            esc[1] = 'r';
        } else if (c == '\t') {
            esc[1] = 't';
        } else if (l->json && c == '\b') {
            esc[1] = 'b';
        } else if (l->json && c == '\f') {
            esc[1] = 'f';
        } else if (c < 0x20 || c == 0x7f || u == 0) {
            if (l->json) { /* \u00XX: a stray byte reads as its Latin-1 character */
                memcpy(esc, "\\u00", 4);
                esc[4] = hexdig[c >> 4];
                esc[5] = hexdig[c & 15];
                olen = 6;
            } else {
                esc[1] = 'x';
                esc[2] = hexdig[c >> 4];
                esc[3] = hexdig[c & 15];
                olen = 4;
            }
            u = 1;
        } else {
            out = (const char *)p + i; /* a plain character, possibly multibyte */
            olen = u;
        }
        if (!put(l, out, olen))
            return;
        i += u ? u : 1;
    }
}

/* text_needs_quotes says whether a text-format value must be quoted. */
static bool text_needs_quotes(const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\')
            return true;
    }
    return false;
}

/* put_string appends a string value (quoted and escaped as the format needs). */
static void put_string(line *l, const uint8_t *p, size_t n)
{
    if (!l->json && !text_needs_quotes(p, n)) {
        /* Only printable ASCII here: cutting between any two bytes is safe. */
        size_t room = l->lim - l->len;
        if (l->cut)
            return;
        if (n > room) {
            put(l, p, room);
            l->cut = true;
            return;
        }
        put(l, p, n);
        return;
    }
    if (!put(l, "\"", 1))
        return;
    l->open_quote = true;
    put_escaped(l, p, n);
    if (put(l, "\"", 1))
        l->open_quote = false;
}

/* put_key appends the separator and |key| of a field. */
static void put_key(line *l, const char *key)
{
    if (key == NULL || key[0] == '\0')
        key = "_";
    if (l->json) {
        if (!put(l, ",\"", 2))
            return;
        l->open_quote = true;
        put_escaped(l, (const uint8_t *)key, strlen(key));
        if (put(l, "\":", 2))
            l->open_quote = false;
        return;
    }
    if (!put(l, " ", 1))
        return;
    for (const char *k = key; *k; k++) {
        char c = *k;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!put(l, ok ? &c : "_", 1))
            return;
    }
    put(l, "=", 1);
}

static void put_hex(line *l, const uint8_t *p, size_t n)
{
    if (n == 0) { /* empty values are quoted in both formats */
        put(l, "\"\"", 2);
        return;
    }
    if (l->json && !put(l, "\"", 1))
        return;
    l->open_quote = l->json;
    for (size_t i = 0; i < n; i++) {
        char h[2] = {hexdig[p[i] >> 4], hexdig[p[i] & 15]};
        if (!put(l, h, 2))
            return;
    }
    if (!l->json || put(l, "\"", 1))
        l->open_quote = false;
}

/* is_int_text says whether |p| (|n| bytes) is a JSON integer of at most 20 digits. */
static bool is_int_text(const char *p, size_t n)
{
    if (n > 0 && p[0] == '-') {
        p++;
        n--;
    }
    if (n == 0 || n > 20 || (p[0] == '0' && n > 1))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
    }
    return true;
}

/* put_field appends one field. Strings and hex cut short keep their prefix (closed by
 * line_end); a field cut anywhere else (key, number, before its value started) is removed whole,
 * since a partial number would lie. */
static void put_field(line *l, const et_log_field *f)
{
    size_t start = l->len;
    char num[64];
    int nl = -1;
    bool prefix_ok = false;
    put_key(l, f->key);
    size_t value_start = l->len;
    if (l->cut)
        goto cut;
    switch (f->type) {
    case ET_LOG_T_STR:
        if (f->s == NULL)
            nl = snprintf(num, sizeof(num), "%s", l->json ? "null" : "(null)");
        else
            put_string(l, (const uint8_t *)f->s, strlen(f->s));
        prefix_ok = true;
        break;
    case ET_LOG_T_STRN:
        put_string(l, f->p, f->p != NULL ? f->n : 0);
        prefix_ok = true;
        break;
    case ET_LOG_T_INTTEXT:
        if (f->p != NULL && is_int_text(f->p, f->n)) {
            put(l, f->p, f->n); /* whole or not at all: a partial number would lie */
        } else {
            put_string(l, f->p, f->p != NULL ? f->n : 0);
            prefix_ok = true;
        }
        break;
    case ET_LOG_T_HEX:
        put_hex(l, f->p, f->p != NULL ? f->n : 0);
        prefix_ok = true;
        break;
    case ET_LOG_T_INT: nl = snprintf(num, sizeof(num), "%lld", f->i); break;
    case ET_LOG_T_UINT: nl = snprintf(num, sizeof(num), "%llu", f->u); break;
    case ET_LOG_T_BOOL: nl = snprintf(num, sizeof(num), "%s", f->b ? "true" : "false"); break;
    case ET_LOG_T_DOUBLE:
        if (isfinite(f->d))
            nl = snprintf(num, sizeof(num), "%.6g", f->d);
        else if (l->json)
            nl = snprintf(num, sizeof(num), "null");
        else
            nl = snprintf(num, sizeof(num), "%s", isnan(f->d) ? "nan" : f->d > 0 ? "inf" : "-inf");
        break;
    case ET_LOG_T_END:
    default: nl = snprintf(num, sizeof(num), "%s", l->json ? "null" : "?"); break;
    }
    if (nl >= 0) {
        prefix_ok = false;
        put(l, num, (size_t)nl < sizeof(num) ? (size_t)nl : sizeof(num) - 1);
    }
cut:
    if (l->cut && !(prefix_ok && (l->open_quote || l->len > value_start))) {
        l->len = start;
        l->open_quote = false;
    }
}

/* line_begin writes ts, level and event. They always fit: only |event| is unbounded, and it is
 * a string that a cut leaves well-formed. */
static void line_begin(line *l, et_log_level lvl, const char *event)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96]; /* 28 bytes in practice; sized for any int values so nothing is cut */
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000 % 1000000));
    if (event == NULL || event[0] == '\0')
        event = "_";
    if (l->json) {
        puts_(l, "{\"ts\":\"");
        puts_(l, stamp);
        puts_(l, "\",\"level\":\"");
        puts_(l, et_log_level_name(lvl));
        puts_(l, "\",\"event\":");
    } else {
        puts_(l, "ts=");
        puts_(l, stamp);
        puts_(l, " level=");
        puts_(l, et_log_level_name(lvl));
        puts_(l, " event=");
    }
    put_string(l, (const uint8_t *)event, strlen(event));
}

/* line_end closes a cut string, marks truncation, ends the line: LINE_RESERVE covers it. */
static void line_end(line *l)
{
    static const char text_mark[] = " truncated=true";
    static const char json_mark[] = ",\"truncated\":true";
    size_t cap = sizeof(l->buf);
    if (l->open_quote && l->len < cap)
        l->buf[l->len++] = '"';
    if (l->cut) {
        const char *m = l->json ? json_mark : text_mark;
        size_t ml = l->json ? sizeof(json_mark) - 1 : sizeof(text_mark) - 1;
        memcpy(l->buf + l->len, m, ml);
        l->len += ml;
    }
    if (l->json)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
}

static void line_write(const line *l)
{
    int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
    size_t off = 0;
    int saved = errno; /* logging must not disturb the caller's errno */
    while (off < l->len) {
        ssize_t w = write(fd, l->buf + off, l->len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        break; /* nowhere to report a failure of the log itself */
    }
    errno = saved;
}

static void line_init(line *l)
{
    l->len = 0;
    l->lim = sizeof(l->buf) - LINE_RESERVE;
    l->json = atomic_load_explicit(&log_format, memory_order_relaxed) == ET_LOG_JSON;
    l->cut = false;
    l->open_quote = false;
}

void et_log_emit(et_log_level lvl, const char *event, const et_log_field *fields)
{
    if (!et_log_enabled(lvl))
        return;
    line l;
    line_init(&l);
    line_begin(&l, lvl, event);
    for (size_t i = 0; fields != NULL && !l.cut && fields[i].type != ET_LOG_T_END; i++)
        put_field(&l, &fields[i]);
    line_end(&l);
    line_write(&l);
}
