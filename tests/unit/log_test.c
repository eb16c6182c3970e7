/* log_test.c: the structured log of log.h, captured through a pipe (et_log_set_fd).
 *
 * Text lines are read back with a small logfmt parser below that undoes the escapes, JSON lines
 * with jansson; hostile values must come back byte for byte (text) or as their documented
 * Latin-1 reading (JSON, invalid UTF-8). Truncated lines must still parse. Threads only log and
 * drain the pipe; every assertion runs on the test thread. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "testutil.h"

#include "et/log.h"

/* ---- capture ------------------------------------------------------------------------------- */

#define CAP_MAX (1u << 20)

static int cap_fd[2] = {-1, -1};
static int saved_fd = -1;
static char cap_buf[CAP_MAX + 1];

static int cap_setup(void **state)
{
    if (pipe2(cap_fd, O_CLOEXEC) != 0)
        return -1;
    /* The read end never blocks: tests read what is there after logging. */
    if (fcntl(cap_fd[0], F_SETFL, O_NONBLOCK) != 0)
        return -1;
    saved_fd = et_log_set_fd(cap_fd[1]);
    et_log_init(ET_LOG_TEXT, ET_LOG_DEBUG);
    return 0;
}

static int cap_teardown(void **state)
{
    et_log_set_fd(saved_fd);
    et_log_init(ET_LOG_TEXT, ET_LOG_INFO);
    close(cap_fd[0]);
    close(cap_fd[1]);
    return 0;
}

/* captured returns everything written since the last call, NUL-terminated. */
static const char *captured(size_t *len)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(cap_fd[0], cap_buf + n, CAP_MAX - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    cap_buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return cap_buf;
}

/* one_line returns the single captured line (checked: exactly one '\n', at the end). */
static const char *one_line(void)
{
    size_t n;
    const char *s = captured(&n);
    assert_true(n > 0);
    assert_true(n <= ET_LOG_LINE_MAX);
    assert_int_equal(s[n - 1], '\n');
    assert_ptr_equal(memchr(s, '\n', n), s + n - 1);
    assert_null(memchr(s, '\0', n));
    return s;
}

/* ---- a logfmt reader ----------------------------------------------------------------------- */

#define KV_MAX 300

typedef struct parsed {
    int n;
    char key[KV_MAX][80];
    uint8_t val[KV_MAX][ET_LOG_LINE_MAX];
    size_t len[KV_MAX];
    int quoted[KV_MAX];
} parsed;

static parsed pv;

static int unhex1(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* parse_text reads one text line (ending in '\n') into |p|; returns 0 or -1 if malformed. */
static int parse_text(const char *s, parsed *p)
{
    p->n = 0;
    for (;;) {
        if (p->n == KV_MAX)
            return -1;
        int i = p->n;
        size_t kl = 0;
        while (*s && *s != '=' && *s != ' ' && *s != '"' && *s != '\n') {
            if (kl + 1 >= sizeof(p->key[i]))
                return -1;
            p->key[i][kl++] = *s++;
        }
        p->key[i][kl] = '\0';
        if (kl == 0 || *s != '=')
            return -1;
        s++;
        size_t vl = 0;
        p->quoted[i] = *s == '"';
        if (*s == '"') {
            s++;
            for (;;) {
                unsigned char c = (unsigned char)*s;
                if (c == '\0' || c == '\n' || c < 0x20 || c == 0x7f)
                    return -1; /* raw control bytes never appear, even quoted */
                s++;
                if (c == '"')
                    break;
                if (c == '\\') {
                    char e = *s++;
                    if (e == 'n')
                        c = '\n';
                    else if (e == 'r')
                        c = '\r';
                    else if (e == 't')
                        c = '\t';
                    else if (e == '"' || e == '\\')
                        c = (unsigned char)e;
                    else if (e == 'x') {
                        int hi = unhex1(s[0]), lo = hi < 0 ? -1 : unhex1(s[1]);
                        if (hi < 0 || lo < 0)
                            return -1;
                        c = (unsigned char)(hi << 4 | lo);
                        s += 2;
                    } else
                        return -1;
                }
                if (vl >= sizeof(p->val[i]))
                    return -1;
                p->val[i][vl++] = c;
            }
        } else {
            while (*s && *s != ' ' && *s != '\n') {
                unsigned char c = (unsigned char)*s++;
                if (c < 0x21 || c >= 0x7f || c == '"' || c == '=' || c == '\\')
                    return -1;
                p->val[i][vl++] = c;
            }
        }
        p->len[i] = vl;
        p->n++;
        if (*s == '\n')
            return s[1] == '\0' ? 0 : -1;
        if (*s != ' ')
            return -1;
        s++;
    }
}

/* find returns the index of |key| in |p|, or fails the test. */
static int find(const parsed *p, const char *key)
{
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->key[i], key) == 0)
            return i;
    }
    fail_msg("no key %s", key);
    return -1;
}

/* val_long reads |key|'s value in |p| as a decimal number. */
static long val_long(parsed *p, const char *key)
{
    int k = find(p, key);
    assert_true(p->len[k] < sizeof(p->val[k]));
    p->val[k][p->len[k]] = '\0';
    return strtol((const char *)p->val[k], NULL, 10);
}

static void check_ts(const char *ts)
{
    /* 2026-11-22T03:10:00.123456Z */
    assert_int_equal(strlen(ts), 27);
    const char *shape = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    for (int i = 0; i < 27; i++) {
        if (shape[i] == 'd')
            assert_true(ts[i] >= '0' && ts[i] <= '9');
        else
            assert_int_equal(ts[i], shape[i]);
    }
}

static json_t *parse_json(const char *line)
{
    json_error_t err;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (j == NULL)
        fail_msg("bad JSON (%s) in: %s", err.text, line);
    assert_true(json_is_object(j));
    return j;
}

/* ---- tests --------------------------------------------------------------------------------- */

static const uint8_t session_id[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                       0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};

static void test_text_basic(void **state)
{
    et_log(ET_LOG_INFO, "session_up", ET_KV_STR("tunnel", "photos"),
           ET_KV_HEX("session", session_id, 16), ET_KV_INT("sockets", 5));
    const char *s = one_line();
    assert_int_equal(strncmp(s, "ts=", 3), 0);
    char ts[32];
    memcpy(ts, s + 3, 27);
    ts[27] = '\0';
    check_ts(ts);
    assert_string_equal(s + 30, " level=info event=session_up tunnel=photos "
                                "session=00112233445566778899aabbccddeeff sockets=5\n");

    /* No fields at all; every level name. */
    et_log(ET_LOG_DEBUG, "tick");
    assert_non_null(strstr(one_line(), " level=debug event=tick\n"));
    et_log(ET_LOG_WARN, "w");
    assert_non_null(strstr(one_line(), " level=warn event=w\n"));
    et_log(ET_LOG_ERROR, "e");
    assert_non_null(strstr(one_line(), " level=error event=e\n"));

    /* Every type. */
    et_log(ET_LOG_INFO, "types", ET_KV_INT("neg", -42), ET_KV_UINT("big", UINT64_MAX),
           ET_KV_BOOL("yes", 1), ET_KV_BOOL("no", 0), ET_KV_DOUBLE("ratio", 0.25),
           ET_KV_STR("nothing", NULL), ET_KV_STRN("part", "abcdef", 3), ET_KV_HEX("none", "", 0),
           ET_KV_ERR(ET_E_AGAIN));
    s = one_line();
    assert_non_null(strstr(s, " neg=-42 big=18446744073709551615 yes=true no=false ratio=0.25 "
                              "nothing=(null) part=abc none=\"\" err=\"blocked: would block\"\n"));
    assert_int_equal(parse_text(s, &pv), 0);
}

static void test_json_basic(void **state)
{
    et_log_init(ET_LOG_JSON, ET_LOG_DEBUG);
    et_log(ET_LOG_INFO, "session_up", ET_KV_STR("tunnel", "photos"),
           ET_KV_HEX("session", session_id, 16), ET_KV_INT("sockets", 5));
    const char *s = one_line();
    assert_int_equal(strncmp(s, "{\"ts\":\"", 7), 0);
    assert_non_null(strstr(s, "\",\"level\":\"info\",\"event\":\"session_up\",\"tunnel\":"
                              "\"photos\",\"session\":\"00112233445566778899aabbccddeeff\","
                              "\"sockets\":5}\n"));
    json_t *j = parse_json(s);
    check_ts(json_string_value(json_object_get(j, "ts")));
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_int_equal(json_integer_value(json_object_get(j, "sockets")), 5);
    json_decref(j);

    et_log(ET_LOG_ERROR, "types", ET_KV_INT("neg", INT64_MIN), ET_KV_UINT("u", 7),
           ET_KV_BOOL("yes", 2), ET_KV_DOUBLE("ratio", 1.5), ET_KV_DOUBLE("nan", 0.0 / 0.0),
           ET_KV_STR("nothing", NULL), ET_KV_STRN("part", "ab\0cd", 5), ET_KV_STR("empty", ""));
    j = parse_json(one_line());
    assert_true(json_integer_value(json_object_get(j, "neg")) == INT64_MIN);
    assert_int_equal(json_integer_value(json_object_get(j, "u")), 7);
    assert_true(json_is_true(json_object_get(j, "yes")));
    assert_true(json_real_value(json_object_get(j, "ratio")) == 1.5);
    assert_true(json_is_null(json_object_get(j, "nan")));
    assert_true(json_is_null(json_object_get(j, "nothing")));
    assert_int_equal(json_string_length(json_object_get(j, "part")), 5);
    assert_memory_equal(json_string_value(json_object_get(j, "part")), "ab\0cd", 5);
    assert_string_equal(json_string_value(json_object_get(j, "empty")), "");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    json_decref(j);
}

typedef struct hostile {
    const char *name;
    const char *v;
    size_t n;
    const char *text; /* exact text-mode rendering */
    const char *json; /* exact JSON rendering */
} hostile;

#define H(name, lit, text, json)               \
    {                                          \
        name, lit, sizeof(lit) - 1, text, json \
    }

static const hostile hostiles[] = {
    H("plain", "photos", "photos", "\"photos\""),
    H("space", "a b", "\"a b\"", "\"a b\""),
    H("quote", "say \"hi\"", "\"say \\\"hi\\\"\"", "\"say \\\"hi\\\"\""),
    H("backslash", "c:\\dir", "\"c:\\\\dir\"", "\"c:\\\\dir\""),
    H("equals", "a=b", "\"a=b\"", "\"a=b\""),
    H("newline", "line1\nline2\r\n", "\"line1\\nline2\\r\\n\"", "\"line1\\nline2\\r\\n\""),
    H("tab", "a\tb", "\"a\\tb\"", "\"a\\tb\""),
    H("ctl", "\x01\x1f\x7f", "\"\\x01\\x1f\\x7f\"", "\"\\u0001\\u001f\\u007f\""),
    H("bs_ff", "\b\f", "\"\\x08\\x0c\"", "\"\\b\\f\""),
    H("empty", "", "\"\"", "\"\""),
    H("nul", "a\0b", "\"a\\x00b\"", "\"a\\u0000b\""),
    H("utf8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
      "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
      "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""),
    H("invalid", "\xff\xfe", "\"\\xff\\xfe\"", "\"\\u00ff\\u00fe\""),
    H("overlong", "\xc0\xaf", "\"\\xc0\\xaf\"", "\"\\u00c0\\u00af\""),
    H("surrogate", "\xed\xa0\x80", "\"\\xed\\xa0\\x80\"", "\"\\u00ed\\u00a0\\u0080\""),
    H("truncated_seq", "ok\xe2\x82", "\"ok\\xe2\\x82\"", "\"ok\\u00e2\\u0082\""),
    H("lone_cont", "\x80x", "\"\\x80x\"", "\"\\u0080x\""),
    H("too_big", "\xf4\x90\x80\x80", "\"\\xf4\\x90\\x80\\x80\"",
      "\"\\u00f4\\u0090\\u0080\\u0080\""),
    H("injection", "x level=error event=pwned", "\"x level=error event=pwned\"",
      "\"x level=error event=pwned\""),
    H("json_injection", "\",\"level\":\"error", "\"\\\",\\\"level\\\":\\\"error\"",
      "\"\\\",\\\"level\\\":\\\"error\""),
};

/* latin1_of maps the bytes of |h| as the JSON mode promises: valid UTF-8 stays, any other byte
 * becomes the code point of the same value. Writes UTF-8 to |out|; returns its length. */
static size_t latin1_of(const hostile *h, char *out)
{
    /* The table only mixes invalid bytes with ASCII or whole valid sequences; decide per case. */
    int invalid = strcmp(h->name, "invalid") == 0 || strcmp(h->name, "overlong") == 0 ||
                  strcmp(h->name, "surrogate") == 0 || strcmp(h->name, "truncated_seq") == 0 ||
                  strcmp(h->name, "lone_cont") == 0 || strcmp(h->name, "too_big") == 0;
    size_t o = 0;
    for (size_t i = 0; i < h->n; i++) {
        unsigned char c = (unsigned char)h->v[i];
        if (invalid && c >= 0x80) {
            out[o++] = (char)(0xc0 | c >> 6);
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

static void test_text_escaping(void **state)
{
    for (size_t i = 0; i < sizeof(hostiles) / sizeof(hostiles[0]); i++) {
        const hostile *h = &hostiles[i];
        et_log(ET_LOG_INFO, "hostile", ET_KV_STRN("v", h->v, h->n), ET_KV_INT("after", 1));
        const char *s = one_line();
        char want[256];
        snprintf(want, sizeof(want), " event=hostile v=%s after=1\n", h->text);
        if (strstr(s, want) == NULL)
            fail_msg("%s: got %s want ...%s", h->name, s, want);
        if (parse_text(s, &pv) != 0)
            fail_msg("%s: unparsable %s", h->name, s);
        int k = find(&pv, "v");
        assert_int_equal(pv.len[k], h->n);
        assert_memory_equal(pv.val[k], h->v, h->n);
        assert_int_equal(pv.n, 5);
    }
    /* The event and keys are escaped too. */
    et_log(ET_LOG_INFO, "bad event\n", ET_KV_STR("we\"ird key=\n", "v"), ET_KV_STR("", "x"));
    const char *s = one_line();
    assert_non_null(strstr(s, " event=\"bad event\\n\" we_ird_key__=v _=x\n"));
    assert_int_equal(parse_text(s, &pv), 0);
}

static void test_json_escaping(void **state)
{
    et_log_init(ET_LOG_JSON, ET_LOG_DEBUG);
    for (size_t i = 0; i < sizeof(hostiles) / sizeof(hostiles[0]); i++) {
        const hostile *h = &hostiles[i];
        et_log(ET_LOG_INFO, "hostile", ET_KV_STRN("v", h->v, h->n), ET_KV_INT("after", 1));
        const char *s = one_line();
        char want[256];
        snprintf(want, sizeof(want), ",\"event\":\"hostile\",\"v\":%s,\"after\":1}\n", h->json);
        if (strstr(s, want) == NULL)
            fail_msg("%s: got %s want ...%s", h->name, s, want);
        json_t *j = parse_json(s);
        char expect[64];
        size_t el = latin1_of(h, expect);
        json_t *v = json_object_get(j, "v");
        assert_int_equal(json_string_length(v), el);
        assert_memory_equal(json_string_value(v), expect, el);
        assert_int_equal(json_object_size(j), 5);
        json_decref(j);
    }
    et_log(ET_LOG_INFO, "bad\"event\xff", ET_KV_STR("we\"ird\nkey", "v"));
    json_t *j = parse_json(one_line());
    assert_string_equal(json_string_value(json_object_get(j, "event")), "bad\"event\xc3\xbf");
    assert_string_equal(json_string_value(json_object_get(j, "we\"ird\nkey")), "v");
    json_decref(j);
}

/* check_cut checks a truncated line: marker present, |key|'s value (if kept) a prefix of
 * |orig|, |after| dropped. */
static void check_cut_text(const char *s, const char *key, const uint8_t *orig, size_t n)
{
    if (parse_text(s, &pv) != 0)
        fail_msg("unparsable cut line: %s", s);
    assert_string_equal(pv.key[pv.n - 1], "truncated");
    assert_int_equal(pv.len[pv.n - 1], 4);
    for (int i = 0; i < pv.n; i++) {
        assert_string_not_equal(pv.key[i], "after");
        if (strcmp(pv.key[i], key) == 0) {
            assert_true(pv.len[i] <= n);
            assert_memory_equal(pv.val[i], orig, pv.len[i]);
        }
    }
}

static void check_cut_json(const char *s, const char *key, size_t min_len)
{
    json_t *j = parse_json(s);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    assert_null(json_object_get(j, "after"));
    json_t *v = json_object_get(j, key);
    if (v != NULL)
        assert_true(json_string_length(v) >= min_len);
    json_decref(j);
}

static void test_truncation(void **state)
{
    enum { BIG = 10 * 1024 };
    static uint8_t big[BIG], esc[BIG], utf[BIG], mixed[BIG];
    memset(big, 'a', sizeof(big));
    memset(esc, 0x01, sizeof(esc)); /* 4 bytes each in text, 6 in JSON */
    for (size_t i = 0; i + 1 < sizeof(utf); i += 2) {
        utf[i] = 0xc3; /* U+00E9, cutting it in half would be invalid UTF-8 */
        utf[i + 1] = 0xa9;
    }
    for (size_t i = 0; i < sizeof(mixed); i++)
        mixed[i] = (uint8_t) "a\"\\\n\xff\xc3\xa9 ="[i % 9];
    static uint8_t hexbig[2 * BIG];
    for (size_t i = 0; i < sizeof(hexbig); i++)
        hexbig[i] = (uint8_t) "61"[i % 2];
    const uint8_t *vals[] = {big, esc, utf, mixed};
    char pad[80];

    for (int json = 0; json <= 1; json++) {
        et_log_init(json ? ET_LOG_JSON : ET_LOG_TEXT, ET_LOG_DEBUG);
        for (size_t v = 0; v < sizeof(vals) / sizeof(vals[0]); v++) {
            /* Shift the cut across every alignment of the escapes. */
            for (size_t shift = 0; shift < 16; shift++) {
                memset(pad, 'p', shift);
                pad[shift] = '\0';
                et_log(ET_LOG_INFO, "big", ET_KV_STR("pad", pad), ET_KV_INT("before", 7),
                       ET_KV_STRN("v", vals[v], BIG), ET_KV_INT("after", 8));
                const char *s = one_line();
                assert_true(strlen(s) <= ET_LOG_LINE_MAX);
                assert_true(strlen(s) > ET_LOG_LINE_MAX - 64); /* the room was used */
                if (json) {
                    check_cut_json(s, "v", 100);
                    json_t *j = parse_json(s);
                    assert_int_equal(json_integer_value(json_object_get(j, "before")), 7);
                    json_decref(j);
                } else {
                    check_cut_text(s, "v", vals[v], BIG);
                    assert_int_equal(pv.len[find(&pv, "before")], 1);
                }
            }
        }
        /* A huge hex value, a huge event, many small fields, a huge key. */
        et_log(ET_LOG_INFO, "hex", ET_KV_HEX("h", big, BIG), ET_KV_INT("after", 1));
        const char *s = one_line();
        if (json)
            check_cut_json(s, "h", 100);
        else
            check_cut_text(s, "h", hexbig, sizeof(hexbig));

        char *ev = malloc(BIG + 1);
        assert_non_null(ev);
        memset(ev, 'e', BIG);
        ev[BIG] = '\0';
        et_log(ET_LOG_INFO, ev, ET_KV_INT("after", 1));
        s = one_line();
        if (json)
            check_cut_json(s, "event", 1000);
        else
            check_cut_text(s, "event", (const uint8_t *)ev, BIG);

        /* A key that does not fit drops its whole field. */
        et_log(ET_LOG_INFO, "k", ET_KV_STRN("v", big, 4000), ET_KV_INT(ev, 5),
               ET_KV_INT("after", 1));
        s = one_line();
        if (json) {
            check_cut_json(s, "v", 100);
        } else {
            check_cut_text(s, "v", big, BIG);
            assert_null(strstr(s, "eeeeeeeeee="));
        }
        free(ev);

        for (int n = 0; n < 2; n++) {
            /* 400 numeric fields: the cut falls between whole fields. */
            et_log_field f[401];
            char keys[400][24];
            for (int i = 0; i < 400; i++) {
                snprintf(keys[i], sizeof(keys[i]), "field%d", i);
                f[i] = ET_KV_UINT(keys[i], 1000000000000ull + (unsigned)i + (unsigned)n);
            }
            f[400] = ET_LOG_END_;
            et_log_emit(ET_LOG_INFO, "many", f);
            s = one_line();
            if (json) {
                json_t *j = parse_json(s);
                assert_true(json_is_true(json_object_get(j, "truncated")));
                json_decref(j);
            } else {
                assert_int_equal(parse_text(s, &pv), 0);
                /* every kept number is whole */
                for (int i = 3; i < pv.n - 1; i++)
                    assert_int_equal(pv.len[i], 13);
            }
        }
    }
}

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

static void test_level_filter(void **state)
{
    et_log_init(ET_LOG_TEXT, ET_LOG_WARN);
    assert_false(et_log_enabled(ET_LOG_DEBUG));
    assert_false(et_log_enabled(ET_LOG_INFO));
    assert_true(et_log_enabled(ET_LOG_WARN));
    assert_true(et_log_enabled(ET_LOG_ERROR));
    evaluated = 0;
    et_log(ET_LOG_DEBUG, "no", ET_KV_INT("n", side_effect()));
    et_log(ET_LOG_INFO, "no", ET_KV_INT("n", side_effect()));
    assert_int_equal(evaluated, 0); /* arguments of filtered lines are not evaluated */
    size_t n;
    captured(&n);
    assert_int_equal(n, 0);
    et_log(ET_LOG_WARN, "yes", ET_KV_INT("n", side_effect()));
    et_log(ET_LOG_ERROR, "yes", ET_KV_INT("n", side_effect()));
    assert_int_equal(evaluated, 2);
    const char *s = captured(&n);
    assert_non_null(strstr(s, "level=warn event=yes n=1\n"));
    assert_non_null(strstr(s, "level=error event=yes n=2\n"));

    et_log_init(ET_LOG_TEXT, ET_LOG_ERROR);
    et_log(ET_LOG_WARN, "no");
    et_log_field none[] = {ET_LOG_END_};
    et_log_emit(ET_LOG_WARN, "no", none);
    captured(&n);
    assert_int_equal(n, 0);
}

static void test_inttext(void **state)
{
    /* Integer text is bare; anything else falls back to a string, never a broken line. */
    static const struct {
        const char *in, *text, *json;
    } cases[] = {
        {"0", "0", "0"},
        {"-12", "-12", "-12"},
        {"18446744073709551615", "18446744073709551615", "18446744073709551615"},
        {"123456789012345678901", "123456789012345678901", "\"123456789012345678901\""},
        {"007", "007", "\"007\""},
        {"-", "-", "\"-\""},
        {"", "\"\"", "\"\""},
        {"1.5", "1.5", "\"1.5\""},
        {"1e9", "1e9", "\"1e9\""},
        {"5}", "5}", "\"5}\""},
        {"1 2", "\"1 2\"", "\"1 2\""},
        {"--1", "--1", "\"--1\""},
    };
    for (int json = 0; json <= 1; json++) {
        et_log_init(json ? ET_LOG_JSON : ET_LOG_TEXT, ET_LOG_DEBUG);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            et_log(ET_LOG_INFO, "n", ET_KV_INTTEXT("v", cases[i].in, strlen(cases[i].in)));
            const char *s = one_line();
            char want[96];
            snprintf(want, sizeof(want), json ? "\"v\":%s}\n" : " v=%s\n",
                     json ? cases[i].json : cases[i].text);
            if (strstr(s, want) == NULL)
                fail_msg("%s: got %s", cases[i].in, s);
            if (json &&
                strlen(cases[i].in) < 20) /* jansson holds int64 only; 2^64-1 is valid JSON */
                json_decref(parse_json(s));
            else if (!json)
                assert_int_equal(parse_text(s, &pv), 0);
        }
    }
}

static void test_errno_kept(void **state)
{
    errno = EADDRINUSE;
    et_log(ET_LOG_INFO, "x", ET_KV_INT("a", 1));
    assert_int_equal(errno, EADDRINUSE);
    /* A closed fd: the line is lost, nothing else happens. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    int prev = et_log_set_fd(fds[1]);
    errno = ETIMEDOUT;
    et_log(ET_LOG_ERROR, "lost", ET_KV_INT("a", 1));
    assert_int_equal(errno, ETIMEDOUT);
    et_log_set_fd(prev);
}

static void test_parse_names(void **state)
{
    et_log_level l;
    et_log_format f;
    assert_int_equal(et_log_parse_level("debug", &l), ET_OK);
    assert_int_equal(l, ET_LOG_DEBUG);
    assert_int_equal(et_log_parse_level("INFO", &l), ET_OK);
    assert_int_equal(l, ET_LOG_INFO);
    assert_int_equal(et_log_parse_level("warning", &l), ET_OK);
    assert_int_equal(l, ET_LOG_WARN);
    assert_int_equal(et_log_parse_level("error", &l), ET_OK);
    assert_int_equal(l, ET_LOG_ERROR);
    assert_int_equal(et_log_parse_level("verbose", &l), ET_E_CONFIG);
    assert_int_equal(et_log_parse_level("", &l), ET_E_CONFIG);
    assert_int_equal(et_log_parse_level(NULL, &l), ET_E_USAGE);
    assert_int_equal(et_log_parse_format("json", &f), ET_OK);
    assert_int_equal(f, ET_LOG_JSON);
    assert_int_equal(et_log_parse_format("text", &f), ET_OK);
    assert_int_equal(f, ET_LOG_TEXT);
    assert_int_equal(et_log_parse_format("logfmt", &f), ET_E_CONFIG);
    assert_string_equal(et_log_level_name(ET_LOG_WARN), "warn");
    assert_string_equal(et_log_level_name((et_log_level)9), "?");
}

/* ---- threads ------------------------------------------------------------------------------- */

#define THREADS 4
#define LINES   1000

typedef struct drain {
    int fd;
    char *buf;
    size_t len, cap;
} drain;

static void *drain_main(void *arg)
{
    drain *d = arg;
    for (;;) {
        if (d->len == d->cap)
            break;
        ssize_t r = read(d->fd, d->buf + d->len, d->cap - d->len);
        if (r > 0)
            d->len += (size_t)r;
        else if (r == 0 || errno != EINTR)
            break;
    }
    return NULL;
}

static void *logger_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    char filler[300];
    memset(filler, 'a' + t, sizeof(filler) - 1);
    filler[sizeof(filler) - 1] = '\0';
    for (int i = 0; i < LINES; i++) {
        /* Lines of varying length, with escapes, so writes of different sizes race. */
        et_log(ET_LOG_INFO, "tick", ET_KV_INT("thread", t), ET_KV_INT("seq", i),
               ET_KV_STR("quote", "a \"q\" \\ b\n"),
               ET_KV_STRN("fill", filler, (size_t)(i * 7 % (int)sizeof(filler))));
    }
    return NULL;
}

static void run_threads(int json)
{
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    drain d = {.fd = fds[0], .cap = 16u << 20};
    d.buf = malloc(d.cap + 1);
    assert_non_null(d.buf);
    pthread_t reader, th[THREADS];
    assert_int_equal(pthread_create(&reader, NULL, drain_main, &d), 0);

    et_log_init(json ? ET_LOG_JSON : ET_LOG_TEXT, ET_LOG_DEBUG);
    int prev = et_log_set_fd(fds[1]);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, logger_main, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    et_log_set_fd(prev);
    close(fds[1]);
    assert_int_equal(pthread_join(reader, NULL), 0);
    close(fds[0]);
    d.buf[d.len] = '\0';

    static unsigned char seen[THREADS][LINES];
    memset(seen, 0, sizeof(seen));
    int lines = 0;
    for (char *ln = d.buf; ln < d.buf + d.len; lines++) {
        char *nl = strchr(ln, '\n');
        assert_non_null(nl);
        char keep = nl[1];
        nl[1] = '\0';
        long t, i;
        if (json) {
            json_t *j = parse_json(ln);
            t = (long)json_integer_value(json_object_get(j, "thread"));
            i = (long)json_integer_value(json_object_get(j, "seq"));
            assert_string_equal(json_string_value(json_object_get(j, "quote")), "a \"q\" \\ b\n");
            json_decref(j);
        } else {
            if (parse_text(ln, &pv) != 0)
                fail_msg("bad line %d: %s", lines, ln);
            assert_int_equal(pv.n, 7);
            t = val_long(&pv, "thread");
            i = val_long(&pv, "seq");
        }
        assert_true(t >= 0 && t < THREADS && i >= 0 && i < LINES);
        assert_int_equal(seen[t][i], 0);
        seen[t][i] = 1;
        nl[1] = keep;
        ln = nl + 1;
    }
    assert_int_equal(lines, THREADS * LINES);
    free(d.buf);
}

static void test_threads_text(void **state)
{
    run_threads(0);
}

static void test_threads_json(void **state)
{
    run_threads(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_text_basic, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_json_basic, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_text_escaping, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_json_escaping, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_truncation, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_level_filter, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_inttext, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_errno_kept, cap_setup, cap_teardown),
        cmocka_unit_test(test_parse_names),
        cmocka_unit_test_setup_teardown(test_threads_text, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_threads_json, cap_setup, cap_teardown),
    };
    return TU_RUN("log", tests);
}
