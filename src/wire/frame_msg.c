/* frame_msg.c: payload parsers, encoders and the canonical text form of every action.
 *
 * Each action has three pieces: a parser that extracts the fields through a CBS cursor, an
 * encoder that writes them through a fixed CBB, and one validity predicate (*_ok) that both
 * call. Because parser and encoder accept exactly the same set of messages, decode(encode(m))
 * == m and encode(decode(b)) == b hold for every valid frame (fuzz/roundtrip.c checks both). */
#include "et/frame.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <xxhash.h>

#include "frame_internal.h"

/* --- field predicates, shared by parse and encode ------------------------------------------ */

static int bytes_in(et_bytes b, size_t min, size_t max)
{
    return b.n >= min && b.n <= max && (b.n == 0 || b.p != NULL);
}

/* A host as routes carry it: lowercase DNS characters, no port. */
static int host_ok(et_bytes b, size_t min)
{
    if (!bytes_in(b, min, ET_HOST_MAX))
        return 0;
    for (size_t i = 0; i < b.n; i++) {
        uint8_t c = b.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* A host pattern as routes announce it: a host, or "*." followed by a host. */
static int pattern_ok(et_bytes b)
{
    if (b.n >= 2 && b.p[0] == '*' && b.p[1] == '.')
        b = (et_bytes){b.p + 2, b.n - 2};
    return host_ok(b, 1);
}

static int route_ok(const et_route *r)
{
    if (r->kind == ET_OPEN_TCP)
        return r->port != 0 && r->host.n == 0;
    return r->kind == ET_OPEN_HTTP && r->port == 0 && pattern_ok(r->host);
}

static int routes_ok(const et_hello *h)
{
    if (h->nroutes > ET_ROUTES_MAX)
        return 0;
    for (size_t i = 0; i < h->nroutes; i++)
        if (!route_ok(&h->routes[i]))
            return 0;
    return 1;
}

/* A tunnel name: 1..64 of [A-Za-z0-9._-]. */
static int name_ok(et_bytes b)
{
    if (!bytes_in(b, 1, ET_TUNNEL_NAME_MAX))
        return 0;
    for (size_t i = 0; i < b.n; i++) {
        uint8_t c = b.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

static int session_ok(const uint8_t id[ET_SESSION_ID_LEN])
{
    uint8_t any = 0;
    for (size_t i = 0; i < ET_SESSION_ID_LEN; i++)
        any |= id[i];
    return any != 0;
}

static int max_frame_ok(uint32_t m)
{
    return m >= ET_FRAME_MAX_MIN && m <= ET_FRAME_HARD_MAX;
}

static int addr_ok(const et_addr *a)
{
    if (a->family == 4) {
        for (size_t i = 4; i < sizeof(a->addr); i++)
            if (a->addr[i] != 0)
                return 0;
        return 1;
    }
    return a->family == 6;
}

static int hello_ok(const et_hello *h)
{
    return h->version_min >= 1 && h->version_min <= h->version_max &&
           (h->role == ET_ROLE_CONTROL || h->role == ET_ROLE_DATA) &&
           (h->hello_flags & ~ET_HELLO_LEGACY) == 0 &&
           !(h->role == ET_ROLE_CONTROL && (h->hello_flags & ET_HELLO_LEGACY)) &&
           max_frame_ok(h->max_frame) && h->initial_window <= ET_WINDOW_MAX &&
           session_ok(h->session_id) && bytes_in(h->token, 1, ET_TOKEN_MAX) &&
           bytes_in(h->agent, 0, ET_AGENT_MAX) && routes_ok(h);
}

static int welcome_ok(const et_welcome *w)
{
    return w->version >= 1 && (w->role == ET_ROLE_CONTROL || w->role == ET_ROLE_DATA) &&
           max_frame_ok(w->max_frame) && session_ok(w->session_id) && name_ok(w->tunnel);
}

static int open_ok(const et_open *o)
{
    if (o->kind != ET_OPEN_TCP && o->kind != ET_OPEN_HTTP)
        return 0;
    if (o->initial_window > ET_WINDOW_MAX || !addr_ok(&o->client) || !addr_ok(&o->server))
        return 0;
    return o->kind == ET_OPEN_HTTP ? host_ok(o->host, 1) : o->host.n == 0;
}

static int cancel_ack_ok(const et_cancel_ack *a)
{
    return a->outcome <= ET_CO_FINISHED;
}

static int health_answer_ok(const et_health_answer *a)
{
    return a->status <= ET_HS_ERROR && bytes_in(a->detail, 0, ET_TEXT_MAX);
}

static int push_ok(const et_push *p)
{
    return (p->kind == ET_PUSH_NOTICE || p->kind == ET_PUSH_CONFIG) &&
           bytes_in(p->topic, 0, ET_TOPIC_MAX) && bytes_in(p->body, 0, ET_PUSH_BODY_MAX);
}

/* --- parsing ---------------------------------------------------------------------------- */

static int get_u8_bytes(CBS *c, et_bytes *out)
{
    CBS v;
    if (!CBS_get_u8_length_prefixed(c, &v))
        return 0;
    out->p = CBS_data(&v);
    out->n = CBS_len(&v);
    return 1;
}

static int get_u16_bytes(CBS *c, et_bytes *out)
{
    CBS v;
    if (!CBS_get_u16_length_prefixed(c, &v))
        return 0;
    out->p = CBS_data(&v);
    out->n = CBS_len(&v);
    return 1;
}

static int get_addr(CBS *c, et_addr *a)
{
    memset(a, 0, sizeof(*a));
    if (!CBS_get_u8(c, &a->family))
        return 0;
    size_t n = a->family == 4 ? 4 : a->family == 6 ? 16 : 0;
    return n != 0 && CBS_copy_bytes(c, a->addr, n) && CBS_get_u16(c, &a->port);
}

static int get_routes(CBS *c, et_hello *h)
{
    if (!CBS_get_u8(c, &h->nroutes) || h->nroutes > ET_ROUTES_MAX)
        return 0;
    for (size_t i = 0; i < h->nroutes; i++) {
        et_route *r = &h->routes[i];
        if (!CBS_get_u8(c, &r->kind))
            return 0;
        if (r->kind == ET_OPEN_TCP && !CBS_get_u16(c, &r->port))
            return 0;
        if (r->kind == ET_OPEN_HTTP && !get_u8_bytes(c, &r->host))
            return 0;
        if (r->kind != ET_OPEN_TCP && r->kind != ET_OPEN_HTTP)
            return 0;
    }
    return 1;
}

static int parse_payload(CBS *c, uint8_t action, et_msg *m)
{
    uint8_t reserved;
    switch (action) {
    case ET_A_HELLO: {
        et_hello *h = &m->hello;
        return CBS_get_u16(c, &h->version_min) && CBS_get_u16(c, &h->version_max) &&
               CBS_get_u8(c, &h->role) && CBS_get_u8(c, &h->hello_flags) &&
               CBS_get_u16(c, &h->socket_index) && CBS_get_u32(c, &h->max_frame) &&
               CBS_get_u32(c, &h->initial_window) &&
               CBS_copy_bytes(c, h->session_id, ET_SESSION_ID_LEN) && get_u16_bytes(c, &h->token) &&
               get_u16_bytes(c, &h->agent) && get_routes(c, h) && hello_ok(h);
    }
    case ET_A_WELCOME: {
        et_welcome *w = &m->welcome;
        return CBS_get_u16(c, &w->version) && CBS_get_u8(c, &w->role) && CBS_get_u8(c, &reserved) &&
               reserved == 0 && CBS_get_u32(c, &w->max_frame) &&
               CBS_copy_bytes(c, w->session_id, ET_SESSION_ID_LEN) &&
               CBS_get_u32(c, &w->socket_id) && CBS_get_u32(c, &w->keepalive_ms) &&
               get_u8_bytes(c, &w->tunnel) && welcome_ok(w);
    }
    case ET_A_OPEN: {
        et_open *o = &m->open;
        return CBS_get_u8(c, &o->kind) && CBS_get_u8(c, &reserved) && reserved == 0 &&
               CBS_get_u32(c, &o->initial_window) && get_addr(c, &o->client) &&
               get_addr(c, &o->server) && get_u8_bytes(c, &o->host) && open_ok(o);
    }
    case ET_A_DATA:
        m->data.p = CBS_data(c);
        m->data.n = CBS_len(c);
        return CBS_skip(c, CBS_len(c));
    case ET_A_END: return 1;
    case ET_A_WINDOW:
        return CBS_get_u32(c, &m->window) && m->window >= 1 && m->window <= ET_WINDOW_MAX;
    case ET_A_CANCEL:
        return CBS_get_u16(c, &m->cancel.reason) && CBS_get_u64(c, &m->cancel.sent_ns);
    case ET_A_CANCEL_ACK: {
        et_cancel_ack *a = &m->cancel_ack;
        return CBS_get_u8(c, &a->outcome) && CBS_get_u64(c, &a->echo_ns) &&
               CBS_get_u32(c, &a->handle_ns) && CBS_get_u64(c, &a->dropped_bytes) &&
               cancel_ack_ok(a);
    }
    case ET_A_PING:
    case ET_A_PONG: return CBS_get_u64(c, &m->ping);
    case ET_A_HEALTH:
        return CBS_get_u32(c, &m->health.probe_id) && get_u8_bytes(c, &m->health.host) &&
               host_ok(m->health.host, 0);
    case ET_A_HEALTH_ANSWER: {
        et_health_answer *a = &m->health_answer;
        return CBS_get_u32(c, &a->probe_id) && CBS_get_u8(c, &a->status) &&
               CBS_get_u32(c, &a->latency_us) && get_u16_bytes(c, &a->detail) &&
               health_answer_ok(a);
    }
    case ET_A_GOAWAY:
        return CBS_get_u16(c, &m->goaway.code) && CBS_get_u32(c, &m->goaway.drain_ms) &&
               get_u16_bytes(c, &m->goaway.text) && m->goaway.text.n <= ET_TEXT_MAX;
    case ET_A_PUSH:
        return CBS_get_u32(c, &m->push.push_id) && CBS_get_u8(c, &m->push.kind) &&
               get_u8_bytes(c, &m->push.topic) && get_u16_bytes(c, &m->push.body) &&
               push_ok(&m->push);
    case ET_A_ERROR:
        return CBS_get_u16(c, &m->error.code) && get_u16_bytes(c, &m->error.text) &&
               m->error.text.n <= ET_TEXT_MAX;
    default: return 0;
    }
}

int et_msg_parse(const et_frame *f, et_msg *out)
{
    memset(out, 0, sizeof(*out));
    CBS c;
    CBS_init(&c, f->payload, f->length);
    ET_ENSURE(parse_payload(&c, f->action, out) && CBS_len(&c) == 0, ET_E_PROTO(ET_WE_BAD_PAYLOAD));
    return ET_OK;
}

/* --- encoding --------------------------------------------------------------------------- */

static int put_u8_bytes(CBB *c, et_bytes b)
{
    CBB v;
    return CBB_add_u8_length_prefixed(c, &v) && CBB_add_bytes(&v, b.p, b.n) && CBB_flush(c);
}

static int put_u16_bytes(CBB *c, et_bytes b)
{
    CBB v;
    return CBB_add_u16_length_prefixed(c, &v) && CBB_add_bytes(&v, b.p, b.n) && CBB_flush(c);
}

static int put_addr(CBB *c, const et_addr *a)
{
    return CBB_add_u8(c, a->family) && CBB_add_bytes(c, a->addr, a->family == 4 ? 4 : 16) &&
           CBB_add_u16(c, a->port);
}

static int put_routes(CBB *c, const et_hello *h)
{
    if (!CBB_add_u8(c, h->nroutes))
        return 0;
    for (size_t i = 0; i < h->nroutes; i++) {
        const et_route *r = &h->routes[i];
        if (!CBB_add_u8(c, r->kind))
            return 0;
        if (r->kind == ET_OPEN_TCP ? !CBB_add_u16(c, r->port) : !put_u8_bytes(c, r->host))
            return 0;
    }
    return 1;
}

static int encode_payload(CBB *c, uint8_t action, const et_msg *m)
{
    switch (action) {
    case ET_A_HELLO: {
        const et_hello *h = &m->hello;
        return hello_ok(h) && CBB_add_u16(c, h->version_min) && CBB_add_u16(c, h->version_max) &&
               CBB_add_u8(c, h->role) && CBB_add_u8(c, h->hello_flags) &&
               CBB_add_u16(c, h->socket_index) && CBB_add_u32(c, h->max_frame) &&
               CBB_add_u32(c, h->initial_window) &&
               CBB_add_bytes(c, h->session_id, ET_SESSION_ID_LEN) && put_u16_bytes(c, h->token) &&
               put_u16_bytes(c, h->agent) && put_routes(c, h);
    }
    case ET_A_WELCOME: {
        const et_welcome *w = &m->welcome;
        return welcome_ok(w) && CBB_add_u16(c, w->version) && CBB_add_u8(c, w->role) &&
               CBB_add_u8(c, 0) && CBB_add_u32(c, w->max_frame) &&
               CBB_add_bytes(c, w->session_id, ET_SESSION_ID_LEN) && CBB_add_u32(c, w->socket_id) &&
               CBB_add_u32(c, w->keepalive_ms) && put_u8_bytes(c, w->tunnel);
    }
    case ET_A_OPEN: {
        const et_open *o = &m->open;
        return open_ok(o) && CBB_add_u8(c, o->kind) && CBB_add_u8(c, 0) &&
               CBB_add_u32(c, o->initial_window) && put_addr(c, &o->client) &&
               put_addr(c, &o->server) && put_u8_bytes(c, o->host);
    }
    case ET_A_DATA:
        return bytes_in(m->data, 1, ET_FRAME_HARD_MAX) && CBB_add_bytes(c, m->data.p, m->data.n);
    case ET_A_END: return 1;
    case ET_A_WINDOW:
        return m->window >= 1 && m->window <= ET_WINDOW_MAX && CBB_add_u32(c, m->window);
    case ET_A_CANCEL: return CBB_add_u16(c, m->cancel.reason) && CBB_add_u64(c, m->cancel.sent_ns);
    case ET_A_CANCEL_ACK: {
        const et_cancel_ack *a = &m->cancel_ack;
        return cancel_ack_ok(a) && CBB_add_u8(c, a->outcome) && CBB_add_u64(c, a->echo_ns) &&
               CBB_add_u32(c, a->handle_ns) && CBB_add_u64(c, a->dropped_bytes);
    }
    case ET_A_PING:
    case ET_A_PONG: return CBB_add_u64(c, m->ping);
    case ET_A_HEALTH:
        return host_ok(m->health.host, 0) && CBB_add_u32(c, m->health.probe_id) &&
               put_u8_bytes(c, m->health.host);
    case ET_A_HEALTH_ANSWER: {
        const et_health_answer *a = &m->health_answer;
        return health_answer_ok(a) && CBB_add_u32(c, a->probe_id) && CBB_add_u8(c, a->status) &&
               CBB_add_u32(c, a->latency_us) && put_u16_bytes(c, a->detail);
    }
    case ET_A_GOAWAY:
        return bytes_in(m->goaway.text, 0, ET_TEXT_MAX) && CBB_add_u16(c, m->goaway.code) &&
               CBB_add_u32(c, m->goaway.drain_ms) && put_u16_bytes(c, m->goaway.text);
    case ET_A_PUSH:
        return push_ok(&m->push) && CBB_add_u32(c, m->push.push_id) &&
               CBB_add_u8(c, m->push.kind) && put_u8_bytes(c, m->push.topic) &&
               put_u16_bytes(c, m->push.body);
    case ET_A_ERROR:
        return bytes_in(m->error.text, 0, ET_TEXT_MAX) && CBB_add_u16(c, m->error.code) &&
               put_u16_bytes(c, m->error.text);
    default: return 0;
    }
}

int et_frame_encode(uint8_t *out, size_t cap, const et_frame *h, const et_msg *m)
{
    ET_ENSURE(cap >= ET_FRAME_HEADER_LEN, ET_E_USAGE);
    CBB c;
    if (!CBB_init_fixed(&c, out + ET_FRAME_HEADER_LEN, cap - ET_FRAME_HEADER_LEN))
        return ET_RAISE(ET_E_USAGE);
    int ok = encode_payload(&c, h->action, m) && CBB_flush(&c);
    size_t n = CBB_len(&c);
    CBB_cleanup(&c);
    ET_ENSURE(ok && n <= UINT32_MAX, ET_E_USAGE);
    et_frame hdr = *h;
    hdr.length = (uint32_t)n;
    ET_GUARD(et_frame_check_header(&hdr));
    et_frame_header_encode(out, &hdr);
    return (int)(ET_FRAME_HEADER_LEN + n);
}

/* --- canonical text --------------------------------------------------------------------- */

/* A bounded appender: |len| counts the full text even when |cap| truncates it (snprintf's
 * contract), so et_frame_format can return the length a caller would need. */
typedef struct text_out {
    char *buf;
    size_t cap;
    size_t len;
} text_out;

__attribute__((format(printf, 2, 3))) static void out_printf(text_out *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = t->len < t->cap ? t->cap - t->len : 0;
    int n = vsnprintf(room ? t->buf + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n;
}

/* out_bytes prints |b| as a quoted string, escaping anything but printable ASCII. */
static void out_bytes(text_out *t, const char *key, et_bytes b)
{
    out_printf(t, " %s=\"", key);
    for (size_t i = 0; i < b.n; i++) {
        uint8_t ch = b.p[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            out_printf(t, "%c", ch);
        else
            out_printf(t, "\\x%02x", ch);
    }
    out_printf(t, "\"");
}

static void out_hex(text_out *t, const char *key, const uint8_t *p, size_t n)
{
    out_printf(t, " %s=", key);
    for (size_t i = 0; i < n; i++)
        out_printf(t, "%02x", p[i]);
}

static void out_addr(text_out *t, const char *key, const et_addr *a)
{
    if (a->family == 4) {
        out_printf(t, " %s=%u.%u.%u.%u:%u", key, a->addr[0], a->addr[1], a->addr[2], a->addr[3],
                   a->port);
        return;
    }
    out_printf(t, " %s=[", key);
    for (size_t i = 0; i < 16; i += 2)
        out_printf(t, "%s%x", i ? ":" : "", (unsigned)(a->addr[i] << 8 | a->addr[i + 1]));
    out_printf(t, "]:%u", a->port);
}

int et_frame_format(char *buf, size_t n, const et_frame *f, const et_msg *m)
{
    text_out t = {buf, n, 0};
    if (n > 0)
        buf[0] = '\0';
    const et_action_info *info = et_action_lookup(f->action);
    out_printf(&t, "%s uc=%" PRIu32 " sid=%" PRIu32 " flags=0x%02x len=%" PRIu32,
               info ? info->name : "UNKNOWN", f->user_channel, f->stream_id, f->flags, f->length);
    switch (f->action) {
    case ET_A_HELLO:
        out_printf(
            &t, " versions=%u-%u role=%s legacy=%u index=%u max_frame=%" PRIu32 " window=%" PRIu32,
            m->hello.version_min, m->hello.version_max,
            m->hello.role == ET_ROLE_CONTROL ? "control" : "data",
            m->hello.hello_flags & ET_HELLO_LEGACY, m->hello.socket_index, m->hello.max_frame,
            m->hello.initial_window);
        out_hex(&t, "session", m->hello.session_id, ET_SESSION_ID_LEN);
        out_bytes(&t, "token", m->hello.token);
        out_bytes(&t, "agent", m->hello.agent);
        out_printf(&t, " routes=%u", m->hello.nroutes);
        for (size_t i = 0; i < m->hello.nroutes; i++) {
            const et_route *r = &m->hello.routes[i];
            if (r->kind == ET_OPEN_TCP)
                out_printf(&t, " tcp:%u", r->port);
            else
                out_bytes(&t, "http", r->host);
        }
        break;
    case ET_A_WELCOME:
        out_printf(&t, " version=%u role=%s max_frame=%" PRIu32, m->welcome.version,
                   m->welcome.role == ET_ROLE_CONTROL ? "control" : "data", m->welcome.max_frame);
        out_hex(&t, "session", m->welcome.session_id, ET_SESSION_ID_LEN);
        out_printf(&t, " socket=%" PRIu32 " keepalive_ms=%" PRIu32, m->welcome.socket_id,
                   m->welcome.keepalive_ms);
        out_bytes(&t, "tunnel", m->welcome.tunnel);
        break;
    case ET_A_OPEN:
        out_printf(&t, " kind=%s window=%" PRIu32, m->open.kind == ET_OPEN_HTTP ? "http" : "tcp",
                   m->open.initial_window);
        out_addr(&t, "client", &m->open.client);
        out_addr(&t, "server", &m->open.server);
        out_bytes(&t, "host", m->open.host);
        break;
    case ET_A_DATA:
        out_printf(&t, " xxh3=%016" PRIx64, (uint64_t)XXH3_64bits(m->data.p, m->data.n));
        break;
    case ET_A_END: break;
    case ET_A_WINDOW: out_printf(&t, " increment=%" PRIu32, m->window); break;
    case ET_A_CANCEL:
        out_printf(&t, " reason=%u sent_ns=%" PRIu64, m->cancel.reason, m->cancel.sent_ns);
        break;
    case ET_A_CANCEL_ACK:
        out_printf(&t, " outcome=%u echo_ns=%" PRIu64 " handle_ns=%" PRIu32 " dropped=%" PRIu64,
                   m->cancel_ack.outcome, m->cancel_ack.echo_ns, m->cancel_ack.handle_ns,
                   m->cancel_ack.dropped_bytes);
        break;
    case ET_A_PING:
    case ET_A_PONG: out_printf(&t, " opaque=%016" PRIx64, m->ping); break;
    case ET_A_HEALTH:
        out_printf(&t, " probe=%" PRIu32, m->health.probe_id);
        out_bytes(&t, "host", m->health.host);
        break;
    case ET_A_HEALTH_ANSWER:
        out_printf(&t, " probe=%" PRIu32 " status=%u latency_us=%" PRIu32,
                   m->health_answer.probe_id, m->health_answer.status, m->health_answer.latency_us);
        out_bytes(&t, "detail", m->health_answer.detail);
        break;
    case ET_A_GOAWAY:
        out_printf(&t, " code=%s(0x%04x) drain_ms=%" PRIu32, et_wire_error_name(m->goaway.code),
                   m->goaway.code, m->goaway.drain_ms);
        out_bytes(&t, "text", m->goaway.text);
        break;
    case ET_A_PUSH:
        out_printf(&t, " id=%" PRIu32 " kind=%s", m->push.push_id,
                   m->push.kind == ET_PUSH_CONFIG ? "config" : "notice");
        out_bytes(&t, "topic", m->push.topic);
        out_bytes(&t, "body", m->push.body);
        break;
    case ET_A_ERROR:
        out_printf(&t, " code=%s(0x%04x)", et_wire_error_name(m->error.code), m->error.code);
        out_bytes(&t, "text", m->error.text);
        break;
    default: break;
    }
    return t.len > INT32_MAX ? INT32_MAX : (int)t.len;
}
