/* frame_test.c: the frame codec against spec/vectors.txt, round trips of every action, the
 * streaming reader split at every offset, field caps at and past their bounds. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "et/frame.h"

#define MAX_VECTORS 128
#define MAX_BYTES   8192

typedef struct vector {
    char name[64];
    uint8_t bytes[MAX_BYTES];
    size_t len;
    uint32_t max;
    char expect[64]; /* "ok", "more" or "error <name>" */
    char text[4096];
} vector;

static vector vectors[MAX_VECTORS];
static size_t nvectors;

static char *trim(char *s)
{
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
    return s;
}

/* load_vectors parses spec/vectors.txt (format described at its top). */
static void load_vectors(void)
{
    const char *path = getenv("ET_VECTORS");
    FILE *f = fopen(path ? path : "spec/vectors.txt", "r");
    if (f == NULL) {
        fprintf(stderr, "cannot open spec/vectors.txt (run from the repository root)\n");
        exit(1);
    }
    char line[8192];
    vector *v = NULL;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        char *val = trim(colon + 1);
        if (strcmp(line, "name") == 0) {
            if (nvectors == MAX_VECTORS)
                abort();
            v = &vectors[nvectors++];
            memset(v, 0, sizeof(*v));
            v->max = ET_FRAME_MAX_DEFAULT;
            snprintf(v->name, sizeof(v->name), "%s", val);
        } else if (v == NULL) {
            abort();
        } else if (strcmp(line, "hex") == 0) {
            int n = tu_unhex(val, v->bytes + v->len, MAX_BYTES - v->len);
            if (n < 0) {
                fprintf(stderr, "vector %s: bad hex\n", v->name);
                abort();
            }
            v->len += (size_t)n;
        } else if (strcmp(line, "max") == 0) {
            v->max = (uint32_t)strtoul(val, NULL, 10);
        } else if (strcmp(line, "expect") == 0) {
            snprintf(v->expect, sizeof(v->expect), "%s", val);
        } else if (strcmp(line, "text") == 0) {
            snprintf(v->text, sizeof(v->text), "%s", val);
        }
    }
    fclose(f);
}

/* expected_rv maps a vector's expect line to a decode+parse result. */
static int expected_rv(const vector *v)
{
    if (strcmp(v->expect, "ok") == 0)
        return ET_FRAME_COMPLETE;
    if (strcmp(v->expect, "more") == 0)
        return ET_FRAME_NEED_MORE;
    if (strncmp(v->expect, "error ", 6) == 0) {
        for (unsigned code = 0; code < 0x400; code++)
            if (strcmp(et_wire_error_name((uint16_t)code), v->expect + 6) == 0)
                return ET_E_PROTO(code);
    }
    fprintf(stderr, "vector %s: bad expect '%s'\n", v->name, v->expect);
    abort();
}

/* decode_and_parse runs the decoder then, for a complete frame, the payload parser. */
static int decode_and_parse(const uint8_t *p, size_t n, uint32_t max, et_frame *f, et_msg *m,
                            size_t *used)
{
    int rv = et_frame_decode(p, n, max, f, used);
    if (rv != ET_FRAME_COMPLETE)
        return rv;
    int prv = et_msg_parse(f, m);
    return prv < 0 ? prv : rv;
}

static void test_vectors(void **state)
{
    size_t ok = 0, bad = 0;
    assert_true(nvectors >= 40);
    for (size_t i = 0; i < nvectors; i++) {
        const vector *v = &vectors[i];
        uint8_t *g = tu_guarded(v->bytes, v->len);
        et_frame f;
        et_msg m;
        size_t used = 0;
        int rv = decode_and_parse(g, v->len, v->max, &f, &m, &used);
        if (rv != expected_rv(v))
            fail_msg("vector %s: got %d (%s), expected %s", v->name, rv, et_strerror(rv),
                     v->expect);
        if (rv == ET_FRAME_COMPLETE) {
            ok++;
            assert_int_equal(used, v->len); /* consumed exactly */
            char text[4096];
            et_frame_format(text, sizeof(text), &f, &m);
            if (strcmp(text, v->text) != 0)
                fail_msg("vector %s:\n got  %s\n want %s", v->name, text, v->text);
            uint8_t again[MAX_BYTES];
            int n = et_frame_encode(again, sizeof(again), &f, &m);
            assert_int_equal(n, v->len);
            assert_memory_equal(again, v->bytes, v->len);
        } else if (rv < 0) {
            bad++;
        }
        tu_guarded_free(g, v->len);
    }
    /* every action has a valid vector and there are negative vectors beyond them */
    assert_true(ok >= 19);
    assert_true(bad >= 30);
}

static void test_every_action_has_valid_vector(void **state)
{
    for (unsigned a = 0; a < 256; a++) {
        if (et_action_lookup((uint8_t)a) == NULL)
            continue;
        int found = 0;
        for (size_t i = 0; i < nvectors && !found; i++)
            found = vectors[i].len > 12 && vectors[i].bytes[12] == a &&
                    strcmp(vectors[i].expect, "ok") == 0;
        if (!found)
            fail_msg("no valid vector for action 0x%02x", a);
    }
}

/* A stream of every valid vector back to back, and the frame texts it must yield. */
static uint8_t stream_bytes[64 * 1024];
static size_t stream_len;
static const char *stream_texts[MAX_VECTORS];
static size_t stream_frames;

static void build_stream(void)
{
    stream_len = 0;
    stream_frames = 0;
    for (size_t i = 0; i < nvectors; i++) {
        if (strcmp(vectors[i].expect, "ok") != 0)
            continue;
        memcpy(stream_bytes + stream_len, vectors[i].bytes, vectors[i].len);
        stream_len += vectors[i].len;
        stream_texts[stream_frames++] = vectors[i].text;
    }
}

/* drain_reader hands out every complete frame, checking each against the expected texts. */
static void drain_reader(et_frame_reader *r, size_t *seen)
{
    for (;;) {
        et_frame f;
        int rv = et_frame_reader_next(r, &f);
        assert_true(rv >= 0);
        if (rv == ET_FRAME_NEED_MORE)
            return;
        et_msg m;
        assert_int_equal(et_msg_parse(&f, &m), ET_OK);
        char text[4096];
        et_frame_format(text, sizeof(text), &f, &m);
        assert_true(*seen < stream_frames);
        assert_string_equal(text, stream_texts[*seen]);
        (*seen)++;
    }
}

static void feed_in_pieces(size_t piece, size_t first)
{
    et_frame_reader r;
    assert_int_equal(et_frame_reader_init(&r, ET_FRAME_MAX_DEFAULT, 4096), ET_OK);
    size_t seen = 0, off = 0;
    while (off < stream_len) {
        size_t n = off == 0 && first ? first : piece;
        if (n > stream_len - off)
            n = stream_len - off;
        size_t took = et_frame_reader_feed(&r, stream_bytes + off, n);
        off += took;
        drain_reader(&r, &seen);
    }
    assert_int_equal(seen, stream_frames);
    assert_int_equal(et_frame_reader_buffered(&r), 0);
    et_frame_reader_cleanup(&r);
}

static void test_reader_one_byte_at_a_time(void **state)
{
    build_stream();
    feed_in_pieces(1, 0);
}

static void test_reader_split_at_every_offset(void **state)
{
    build_stream();
    for (size_t k = 1; k < stream_len; k++)
        feed_in_pieces(stream_len, k); /* two pieces: [0,k) and [k,end) */
}

static void test_reader_assorted_piece_sizes(void **state)
{
    build_stream();
    const size_t sizes[] = {2, 3, 7, 15, 16, 17, 100, 4095, 4096, 9000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        feed_in_pieces(sizes[i], 0);
}

/* Reading straight into the reader's space, as a socket reader does, with tiny reads. */
static void test_reader_space_commit(void **state)
{
    build_stream();
    et_frame_reader r;
    assert_int_equal(et_frame_reader_init(&r, ET_FRAME_MAX_DEFAULT, 1), ET_OK);
    size_t seen = 0, off = 0;
    while (off < stream_len) {
        size_t avail;
        uint8_t *dst = et_frame_reader_space(&r, &avail);
        assert_non_null(dst);
        size_t n = avail < 5 ? avail : 5;
        if (n > stream_len - off)
            n = stream_len - off;
        memcpy(dst, stream_bytes + off, n);
        et_frame_reader_commit(&r, n);
        off += n;
        drain_reader(&r, &seen);
    }
    assert_int_equal(seen, stream_frames);
    et_frame_reader_cleanup(&r);
}

static void test_reader_max_payload_frame_fits(void **state)
{
    /* A DATA frame of exactly max payload passes through a reader whose read room is 1 byte. */
    static uint8_t frame[ET_FRAME_HEADER_LEN + ET_FRAME_MAX_DEFAULT];
    et_frame h = {ET_FRAME_MAX_DEFAULT, 5, 6, ET_A_DATA, 0, NULL};
    et_frame_header_encode(frame, &h);
    memset(frame + ET_FRAME_HEADER_LEN, 0xab, ET_FRAME_MAX_DEFAULT);
    et_frame_reader r;
    assert_int_equal(et_frame_reader_init(&r, ET_FRAME_MAX_DEFAULT, 1), ET_OK);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(et_frame_reader_feed(&r, frame, 7), 7); /* misalign the next frame */
        et_frame f;
        assert_int_equal(et_frame_reader_next(&r, &f), ET_FRAME_NEED_MORE);
        assert_int_equal(et_frame_reader_feed(&r, frame + 7, sizeof(frame) - 7), sizeof(frame) - 7);
        assert_int_equal(et_frame_reader_next(&r, &f), ET_FRAME_COMPLETE);
        assert_int_equal(f.length, ET_FRAME_MAX_DEFAULT);
        assert_int_equal(f.payload[ET_FRAME_MAX_DEFAULT - 1], 0xab);
        assert_int_equal(et_frame_reader_feed(&r, frame, ET_FRAME_HEADER_LEN - 1),
                         ET_FRAME_HEADER_LEN - 1);
        assert_int_equal(et_frame_reader_next(&r, &f), ET_FRAME_NEED_MORE);
        assert_int_equal(et_frame_reader_feed(&r, frame + ET_FRAME_HEADER_LEN - 1, 1), 1);
        assert_int_equal(et_frame_reader_next(&r, &f), ET_FRAME_NEED_MORE);
        /* complete that third frame so the buffer is empty for the next round */
        assert_int_equal(
            et_frame_reader_feed(&r, frame + ET_FRAME_HEADER_LEN, ET_FRAME_MAX_DEFAULT),
            ET_FRAME_MAX_DEFAULT);
        assert_int_equal(et_frame_reader_next(&r, &f), ET_FRAME_COMPLETE);
    }
    et_frame_reader_cleanup(&r);
}

static void test_reader_error_is_sticky(void **state)
{
    et_frame_reader r;
    assert_int_equal(et_frame_reader_init(&r, ET_FRAME_MAX_DEFAULT, 64), ET_OK);
    uint8_t bad[ET_FRAME_HEADER_LEN];
    et_frame h = {ET_FRAME_MAX_DEFAULT + 1, 1, 1, ET_A_DATA, 0, NULL};
    et_frame_header_encode(bad, &h);
    assert_int_equal(et_frame_reader_feed(&r, bad, sizeof(bad)), sizeof(bad));
    et_frame f;
    assert_int_equal(et_frame_reader_next(&r, &f), ET_E_PROTO(ET_WE_FRAME_TOO_LARGE));
    assert_int_equal(et_frame_reader_next(&r, &f), ET_E_PROTO(ET_WE_FRAME_TOO_LARGE));
    /* raising the limit after the fact does not un-fail a broken stream */
    assert_int_equal(et_frame_reader_set_max(&r, ET_FRAME_MAX_DEFAULT + 1), ET_OK);
    assert_int_equal(et_frame_reader_next(&r, &f), ET_E_PROTO(ET_WE_FRAME_TOO_LARGE));
    et_frame_reader_cleanup(&r);
    et_frame_reader_cleanup(&r); /* cleanup twice is safe */
    et_frame_reader_cleanup(NULL);
}

static void test_reader_peek_does_not_consume(void **state)
{
    build_stream();
    et_frame_reader r;
    assert_int_equal(et_frame_reader_init(&r, ET_FRAME_MAX_DEFAULT, 4096), ET_OK);
    et_frame f, g;
    assert_int_equal(et_frame_reader_peek(&r, &f), ET_FRAME_NEED_MORE);
    assert_int_equal(et_frame_reader_feed(&r, stream_bytes, stream_len), stream_len);
    for (size_t i = 0; i < stream_frames; i++) {
        assert_int_equal(et_frame_reader_peek(&r, &f), ET_FRAME_COMPLETE);
        assert_int_equal(et_frame_reader_peek(&r, &g), ET_FRAME_COMPLETE); /* twice: same */
        assert_ptr_equal(f.payload, g.payload);
        assert_int_equal(et_frame_reader_next(&r, &g), ET_FRAME_COMPLETE);
        assert_int_equal(f.action, g.action);
        assert_int_equal(f.length, g.length);
        assert_ptr_equal(f.payload, g.payload);
    }
    assert_int_equal(et_frame_reader_peek(&r, &f), ET_FRAME_NEED_MORE);
    et_frame_reader_cleanup(&r);
}

static void test_reader_set_max_bounds(void **state)
{
    et_frame_reader r;
    assert_int_equal(et_frame_reader_init(&r, 8192, 16), ET_OK);
    assert_int_equal(et_frame_reader_set_max(&r, 4096), ET_OK);
    assert_int_equal(et_frame_reader_set_max(&r, 8192), ET_OK);
    assert_int_equal(et_frame_reader_set_max(&r, 1 << 20), ET_E_USAGE); /* buffer too small */
    et_frame_reader_cleanup(&r);
    assert_int_equal(et_frame_reader_init(&r, ET_FRAME_HARD_MAX + 1, 16), ET_E_USAGE);
    assert_int_equal(et_frame_reader_init(&r, 4096, 0), ET_E_USAGE);
}

static void test_decode_need_more_reports_size(void **state)
{
    uint8_t buf[ET_FRAME_HEADER_LEN + 100];
    et_frame h = {100, 1, 1, ET_A_DATA, 0, NULL};
    et_frame_header_encode(buf, &h);
    et_frame f;
    size_t used = 0;
    assert_int_equal(et_frame_decode(buf, 3, 16384, &f, &used), ET_FRAME_NEED_MORE);
    assert_int_equal(used, ET_FRAME_HEADER_LEN);
    assert_int_equal(et_frame_decode(buf, ET_FRAME_HEADER_LEN + 99, 16384, &f, &used),
                     ET_FRAME_NEED_MORE);
    assert_int_equal(used, ET_FRAME_HEADER_LEN + 100);
    assert_int_equal(et_frame_decode(buf, sizeof(buf), 16384, &f, &used), ET_FRAME_COMPLETE);
    assert_int_equal(used, sizeof(buf));
    assert_ptr_equal(f.payload, buf + ET_FRAME_HEADER_LEN); /* a view, not a copy */
}

static void test_decode_consumes_one_frame_only(void **state)
{
    uint8_t buf[64];
    et_msg m = {.window = 77};
    et_frame h = {0, 4, 2, ET_A_WINDOW, 0, NULL};
    int n1 = et_frame_encode(buf, sizeof(buf), &h, &m);
    assert_int_equal(n1, ET_FRAME_HEADER_LEN + 4);
    m.window = 78;
    int n2 = et_frame_encode(buf + n1, sizeof(buf) - (size_t)n1, &h, &m);
    assert_int_equal(n2, n1);
    et_frame f;
    size_t used;
    assert_int_equal(et_frame_decode(buf, (size_t)(n1 + n2), 16384, &f, &used), 1);
    assert_int_equal(used, n1);
    et_msg out;
    assert_int_equal(et_msg_parse(&f, &out), ET_OK);
    assert_int_equal(out.window, 77);
}

/* Builds a HELLO whose token and agent have the given sizes. */
static int encode_hello(uint8_t *out, size_t cap, size_t token_len, size_t agent_len)
{
    static uint8_t filler[ET_TOKEN_MAX + 2];
    memset(filler, 'a', sizeof(filler));
    et_msg m = {.hello = {1,
                          1,
                          ET_ROLE_DATA,
                          0,
                          1,
                          16384,
                          1000,
                          {1},
                          {filler, token_len},
                          {filler, agent_len},
                          0,
                          {{0}}}};
    et_frame h = {0, 0, 0, ET_A_HELLO, 0, NULL};
    return et_frame_encode(out, cap, &h, &m);
}

static void test_field_caps(void **state)
{
    static uint8_t buf[8192];
    int n = encode_hello(buf, sizeof(buf), ET_TOKEN_MAX, ET_AGENT_MAX);
    assert_true(n > 0);
    et_frame f;
    et_msg m;
    size_t used;
    assert_int_equal(decode_and_parse(buf, (size_t)n, 16384, &f, &m, &used), 1);
    assert_int_equal(m.hello.token.n, ET_TOKEN_MAX);
    assert_int_equal(m.hello.agent.n, ET_AGENT_MAX);
    assert_int_equal(encode_hello(buf, sizeof(buf), ET_TOKEN_MAX + 1, 0), ET_E_USAGE);
    assert_int_equal(encode_hello(buf, sizeof(buf), 1, ET_AGENT_MAX + 1), ET_E_USAGE);
    assert_int_equal(encode_hello(buf, sizeof(buf), 0, 0), ET_E_USAGE);
    /* too small an output buffer fails cleanly */
    assert_int_equal(encode_hello(buf, 40, 10, 0), ET_E_USAGE);
    assert_int_equal(encode_hello(buf, 8, 10, 0), ET_E_USAGE);

    /* A wire HELLO whose token is 4097 bytes is refused by the parser: grow the max-size
     * HELLO's token by one byte in place and fix up the lengths. */
    n = encode_hello(buf, sizeof(buf), ET_TOKEN_MAX, 0);
    assert_true(n > 0);
    const size_t tok = ET_FRAME_HEADER_LEN + 32; /* the token's u16 length prefix */
    memmove(buf + tok + 2 + ET_TOKEN_MAX + 1, buf + tok + 2 + ET_TOKEN_MAX,
            (size_t)n - (tok + 2 + ET_TOKEN_MAX));
    buf[tok + 2 + ET_TOKEN_MAX] = 'a';
    buf[tok] = (ET_TOKEN_MAX + 1) >> 8;
    buf[tok + 1] = (ET_TOKEN_MAX + 1) & 0xff;
    et_frame big = {(uint32_t)(n - ET_FRAME_HEADER_LEN + 1), 0, 0, ET_A_HELLO, 0, NULL};
    et_frame_header_encode(buf, &big);
    assert_int_equal(et_frame_decode(buf, (size_t)n + 1, 16384, &f, &used), ET_FRAME_COMPLETE);
    assert_int_equal(et_msg_parse(&f, &m), ET_E_PROTO(ET_WE_BAD_PAYLOAD));

    /* Routes: 32 is the cap; 33 is refused by the encoder. */
    et_msg r = {
        .hello = {1, 1, ET_ROLE_DATA, 0, 1, 16384, 1000, {1}, {buf, 1}, {buf, 0}, 0, {{0}}}};
    for (size_t i = 0; i < ET_ROUTES_MAX; i++)
        r.hello.routes[i] = (et_route){ET_OPEN_TCP, (uint16_t)(20000 + i), {NULL, 0}};
    r.hello.nroutes = ET_ROUTES_MAX;
    static uint8_t rbuf[ET_FRAME_HEADER_LEN + ET_FRAME_MAX_DEFAULT];
    et_frame rh = {0, 0, 0, ET_A_HELLO, 0, NULL};
    n = et_frame_encode(rbuf, sizeof(rbuf), &rh, &r);
    assert_true(n > 0);
    assert_int_equal(decode_and_parse(rbuf, (size_t)n, 16384, &f, &m, &used), 1);
    assert_int_equal(m.hello.nroutes, ET_ROUTES_MAX);
    assert_int_equal(m.hello.routes[31].port, 20031);
    r.hello.nroutes = ET_ROUTES_MAX + 1;
    assert_int_equal(et_frame_encode(rbuf, sizeof(rbuf), &rh, &r), ET_E_USAGE);

    /* Text fields: ERROR text at 512 is fine, 513 is not. */
    static uint8_t text[ET_TEXT_MAX + 1];
    memset(text, 'x', sizeof(text));
    et_msg e = {.error = {ET_WE_PROTOCOL, {text, ET_TEXT_MAX}}};
    et_frame eh = {0, 0, 0, ET_A_ERROR, 0, NULL};
    assert_true(et_frame_encode(buf, sizeof(buf), &eh, &e) > 0);
    e.error.text.n = ET_TEXT_MAX + 1;
    assert_int_equal(et_frame_encode(buf, sizeof(buf), &eh, &e), ET_E_USAGE);

    /* PUSH body at its cap still fits the smallest negotiable frame. */
    static uint8_t body[ET_PUSH_BODY_MAX + 1];
    et_msg p = {.push = {1, ET_PUSH_NOTICE, {body, ET_TOPIC_MAX}, {body, ET_PUSH_BODY_MAX}}};
    et_frame ph = {0, 0, 0, ET_A_PUSH, 0, NULL};
    n = et_frame_encode(buf, sizeof(buf), &ph, &p);
    assert_true(n > 0 && (size_t)n - ET_FRAME_HEADER_LEN <= ET_FRAME_MAX_MIN);
    p.push.body.n = ET_PUSH_BODY_MAX + 1;
    assert_int_equal(et_frame_encode(buf, sizeof(buf), &ph, &p), ET_E_USAGE);
}

static void test_encoder_refuses_bad_headers(void **state)
{
    uint8_t buf[64];
    et_msg m = {.ping = 1};
    et_frame h = {0, 1, 0, ET_A_PING, 0, NULL}; /* PING naming a channel */
    assert_int_equal(et_frame_encode(buf, sizeof(buf), &h, &m), ET_E_USAGE);
    et_frame u = {0, 0, 0, 0x7f, 0, NULL}; /* unknown action */
    assert_int_equal(et_frame_encode(buf, sizeof(buf), &u, &m), ET_E_USAGE);
    m.cancel = (et_cancel){1, 2};
    et_frame c = {0, 1, 1, ET_A_CANCEL, ET_F_CANCEL_CHANNEL, NULL};
    assert_int_equal(et_frame_encode(buf, sizeof(buf), &c, &m), ET_E_USAGE);
    c.stream_id = 0;
    assert_true(et_frame_encode(buf, sizeof(buf), &c, &m) > 0);
    m.window = 0;
    et_frame w = {0, 1, 1, ET_A_WINDOW, 0, NULL};
    assert_int_equal(et_frame_encode(buf, sizeof(buf), &w, &m), ET_E_USAGE);
}

static void test_action_table(void **state)
{
    int known = 0;
    for (unsigned a = 0; a < 256; a++) {
        const et_action_info *info = et_action_lookup((uint8_t)a);
        if (info == NULL)
            continue;
        known++;
        assert_true(info->min_payload <= info->max_payload);
        assert_true(info->sockets != 0 && info->dirs != 0);
        assert_true((info->preferred & ~info->sockets) == 0);
        /* every control-class frame fits the smallest max a peer may announce, but HELLO,
         * which is read under the default limit before anything is negotiated */
        if (a != ET_A_DATA && a != ET_A_HELLO)
            assert_true(info->max_payload <= ET_FRAME_MAX_MIN);
        if (a == ET_A_HELLO)
            assert_true(info->max_payload <= ET_FRAME_MAX_DEFAULT);
    }
    assert_int_equal(known, 15);
    /* cancels are preferred on the control socket but accepted on data sockets (legacy) */
    const et_action_info *c = et_action_lookup(ET_A_CANCEL);
    assert_int_equal(c->preferred, ET_SOCK_CONTROL);
    assert_true(c->sockets & ET_SOCK_DATA);
    assert_int_equal(et_action_lookup(ET_A_OPEN)->sockets, ET_SOCK_DATA);
}

static void test_error_names(void **state)
{
    assert_string_equal(et_strerror(ET_E_PROTO(ET_WE_FRAME_TOO_LARGE)), "frame_too_large");
    assert_int_equal(et_err_class(ET_E_PROTO(ET_WE_AUTH_SCOPE)), ET_CLASS_PROTOCOL);
    assert_int_equal(et_err_detail(ET_E_PROTO(ET_WE_AUTH_SCOPE)), ET_WE_AUTH_SCOPE);
    assert_int_equal(et_err_class(ET_E_AGAIN), ET_CLASS_BLOCKED);
    assert_int_equal(et_err_class(ET_OK), ET_CLASS_NONE);
    assert_string_equal(et_wire_error_name(0xfff0), "unknown");
}

static void test_format_truncates_safely(void **state)
{
    const vector *v = &vectors[0];
    et_frame f;
    et_msg m;
    size_t used;
    assert_int_equal(decode_and_parse(v->bytes, v->len, v->max, &f, &m, &used), 1);
    char small[10];
    int full = et_frame_format(small, sizeof(small), &f, &m);
    assert_int_equal((size_t)full, strlen(v->text));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, v->text, sizeof(small) - 1);
}

/* spec/protocol.md's tables must say what the code does: the action table (§4) and the wire
 * error codes (§11.1) are read from the markdown and compared with the codec's. */
static void test_spec_tables_match_code(void **state)
{
    FILE *f = fopen("spec/protocol.md", "r");
    assert_non_null(f);
    char line[1024];
    int actions = 0, errors = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned code, lo, hi;
        char name[64];
        if (sscanf(line, "| 0x%2x | %63[A-Z_] | %u..%u |", &code, name, &lo, &hi) == 4 ||
            (sscanf(line, "| 0x%2x | %63[A-Z_] | %u |", &code, name, &lo) == 3 && (hi = lo, 1))) {
            const et_action_info *info = et_action_lookup((uint8_t)code);
            if (info == NULL || strcmp(info->name, name) != 0)
                fail_msg("spec names action 0x%02x %s, code does not", code, name);
            if (info->min_payload != lo || (code != ET_A_DATA && info->max_payload != hi))
                fail_msg("spec bounds of %s: %u..%u, code: %u..%u", name, lo, hi, info->min_payload,
                         info->max_payload);
            actions++;
        } else if (sscanf(line, "| 0x%4x | %63[a-z_] |", &code, name) == 2 && strlen(line) > 12 &&
                   line[7] != ' ') {
            if (strcmp(et_wire_error_name((uint16_t)code), name) != 0)
                fail_msg("spec names error 0x%04x %s, code says %s", code, name,
                         et_wire_error_name((uint16_t)code));
            errors++;
        }
    }
    fclose(f);
    assert_int_equal(actions, 15);
    assert_int_equal(errors, 27);
}

int main(void)
{
    load_vectors();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_every_action_has_valid_vector),
        cmocka_unit_test(test_reader_one_byte_at_a_time),
        cmocka_unit_test(test_reader_split_at_every_offset),
        cmocka_unit_test(test_reader_assorted_piece_sizes),
        cmocka_unit_test(test_reader_space_commit),
        cmocka_unit_test(test_reader_max_payload_frame_fits),
        cmocka_unit_test(test_reader_error_is_sticky),
        cmocka_unit_test(test_reader_peek_does_not_consume),
        cmocka_unit_test(test_reader_set_max_bounds),
        cmocka_unit_test(test_decode_need_more_reports_size),
        cmocka_unit_test(test_decode_consumes_one_frame_only),
        cmocka_unit_test(test_field_caps),
        cmocka_unit_test(test_encoder_refuses_bad_headers),
        cmocka_unit_test(test_action_table),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_format_truncates_safely),
        cmocka_unit_test(test_spec_tables_match_code),
    };
    return TU_RUN("frame", tests);
}
