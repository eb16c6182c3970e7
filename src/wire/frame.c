/* frame.c: frame header codec, the action table and the streaming reader (frame.h). */
#include "et/frame.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>

#include "frame_internal.h"

/* Static payload bounds per action; spec/protocol.md §5 derives each from the field layout. */
#define HELLO_FIXED   32 /* versions 4, role 1, flags 1, index 2, max 4, window 4, session 16 */
#define WELCOME_FIXED 32
#define ADDR_MIN      7  /* family 1, IPv4 4, port 2 */
#define ADDR_MAX      19 /* family 1, IPv6 16, port 2 */

static const et_action_info action_table[256] = {
    [ET_A_HELLO] = {"HELLO", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA,
                    ET_SOCK_CONTROL | ET_SOCK_DATA, ET_DIR_ORIGIN_TO_EDGE, 1,
                    HELLO_FIXED + 2 + 1 + 2 + 1,
                    HELLO_FIXED + 2 + ET_TOKEN_MAX + 2 + ET_AGENT_MAX + 1 +
                        ET_ROUTES_MAX *(2 + ET_HOST_MAX)},
    [ET_A_WELCOME] = {"WELCOME", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA,
                      ET_SOCK_CONTROL | ET_SOCK_DATA, ET_DIR_EDGE_TO_ORIGIN, 1,
                      WELCOME_FIXED + 1 + 1, WELCOME_FIXED + 1 + ET_TUNNEL_NAME_MAX},
    [ET_A_OPEN] = {"OPEN", 0, ET_SCOPE_STREAM, ET_SOCK_DATA, ET_SOCK_DATA, ET_DIR_EDGE_TO_ORIGIN, 0,
                   6 + 2 * ADDR_MIN + 1, 6 + 2 * ADDR_MAX + 1 + ET_HOST_MAX},
    [ET_A_DATA] = {"DATA", 0, ET_SCOPE_STREAM, ET_SOCK_DATA, ET_SOCK_DATA,
                   ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0, 1, ET_FRAME_HARD_MAX},
    [ET_A_END] = {"END", 0, ET_SCOPE_STREAM, ET_SOCK_DATA, ET_SOCK_DATA,
                  ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0, 0, 0},
    [ET_A_WINDOW] = {"WINDOW", 0, ET_SCOPE_STREAM, ET_SOCK_DATA, ET_SOCK_DATA,
                     ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0, 4, 4},
    [ET_A_CANCEL] = {"CANCEL", ET_F_CANCEL_CHANNEL, ET_SCOPE_CANCEL, ET_SOCK_CONTROL | ET_SOCK_DATA,
                     ET_SOCK_CONTROL, ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0, 10, 10},
    [ET_A_CANCEL_ACK] = {"CANCEL_ACK", ET_F_CANCEL_CHANNEL, ET_SCOPE_CANCEL,
                         ET_SOCK_CONTROL | ET_SOCK_DATA, ET_SOCK_CONTROL,
                         ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0, 21, 21},
    [ET_A_PING] = {"PING", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA,
                   ET_SOCK_CONTROL | ET_SOCK_DATA, ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0,
                   8, 8},
    [ET_A_PONG] = {"PONG", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA,
                   ET_SOCK_CONTROL | ET_SOCK_DATA, ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE, 0,
                   8, 8},
    [ET_A_HEALTH] = {"HEALTH", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA, ET_SOCK_CONTROL,
                     ET_DIR_EDGE_TO_ORIGIN, 0, 5, 5 + ET_HOST_MAX},
    [ET_A_HEALTH_ANSWER] = {"HEALTH_ANSWER", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA,
                            ET_SOCK_CONTROL, ET_DIR_ORIGIN_TO_EDGE, 0, 11, 11 + ET_TEXT_MAX},
    [ET_A_GOAWAY] = {"GOAWAY", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA,
                     ET_SOCK_CONTROL | ET_SOCK_DATA, ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE,
                     0, 8, 8 + ET_TEXT_MAX},
    [ET_A_PUSH] = {"PUSH", 0, ET_SCOPE_CONN, ET_SOCK_CONTROL | ET_SOCK_DATA, ET_SOCK_CONTROL,
                   ET_DIR_EDGE_TO_ORIGIN, 0, 8, 8 + ET_TOPIC_MAX + ET_PUSH_BODY_MAX},
    [ET_A_ERROR] = {"ERROR", 0, ET_SCOPE_ANY, ET_SOCK_CONTROL | ET_SOCK_DATA,
                    ET_SOCK_CONTROL | ET_SOCK_DATA, ET_DIR_EDGE_TO_ORIGIN | ET_DIR_ORIGIN_TO_EDGE,
                    0, 4, 4 + ET_TEXT_MAX},
};

const et_action_info *et_action_lookup(uint8_t action)
{
    const et_action_info *info = &action_table[action];
    return info->name ? info : NULL;
}

const char *et_wire_error_name(uint16_t code)
{
    switch (code) {
    case ET_WE_NONE: return "none";
    case ET_WE_PROTOCOL: return "protocol";
    case ET_WE_BAD_HEADER: return "bad_header";
    case ET_WE_FRAME_TOO_LARGE: return "frame_too_large";
    case ET_WE_UNKNOWN_ACTION: return "unknown_action";
    case ET_WE_BAD_PAYLOAD: return "bad_payload";
    case ET_WE_WRONG_SOCKET: return "wrong_socket";
    case ET_WE_UNEXPECTED: return "unexpected";
    case ET_WE_VERSION: return "version";
    case ET_WE_HANDSHAKE_TIMEOUT: return "handshake_timeout";
    case ET_WE_INTERNAL: return "internal";
    case ET_WE_SHUTDOWN: return "shutdown";
    case ET_WE_KEEPALIVE_TIMEOUT: return "keepalive_timeout";
    case ET_WE_AUTH_MALFORMED: return "auth_malformed";
    case ET_WE_AUTH_SIGNATURE: return "auth_signature";
    case ET_WE_AUTH_EXPIRED: return "auth_expired";
    case ET_WE_AUTH_SCOPE: return "auth_scope";
    case ET_WE_AUTH_SESSION: return "auth_session";
    case ET_WE_AUTH_NOT_YET: return "auth_not_yet";
    case ET_WE_FLOW_CONTROL: return "flow_control";
    case ET_WE_UNKNOWN_STREAM: return "unknown_stream";
    case ET_WE_STREAM_EXISTS: return "stream_exists";
    case ET_WE_STREAM_STATE: return "stream_state";
    case ET_WE_LIMIT_STREAMS: return "limit_streams";
    case ET_WE_LIMIT_SESSIONS: return "limit_sessions";
    case ET_WE_LIMIT_SOCKETS: return "limit_sockets";
    case ET_WE_RATE_LIMITED: return "rate_limited";
    default: return "unknown";
    }
}

/* header_check returns the wire error of a header whose fields break the action table, or
 * ET_WE_NONE. Shared by the decoder and the encoder so neither accepts what the other refuses. */
static uint16_t header_check(const et_frame *h, const et_action_info *info)
{
    if (h->flags & ~info->flags)
        return ET_WE_BAD_HEADER;
    int conn = h->user_channel == 0 && h->stream_id == 0;
    int stream = h->user_channel != 0 && h->stream_id != 0;
    switch (info->scope) {
    case ET_SCOPE_CONN:
        if (!conn)
            return ET_WE_BAD_HEADER;
        break;
    case ET_SCOPE_STREAM:
        if (!stream)
            return ET_WE_BAD_HEADER;
        break;
    case ET_SCOPE_CANCEL:
        if (h->user_channel == 0 || (h->stream_id == 0) != !!(h->flags & ET_F_CANCEL_CHANNEL))
            return ET_WE_BAD_HEADER;
        break;
    case ET_SCOPE_ANY:
        if (!conn && !stream)
            return ET_WE_BAD_HEADER;
        break;
    default: return ET_WE_BAD_HEADER;
    }
    return ET_WE_NONE;
}

int et_frame_decode(const uint8_t *buf, size_t len, uint32_t max_payload, et_frame *out,
                    size_t *used)
{
    if (len < ET_FRAME_HEADER_LEN) {
        *used = ET_FRAME_HEADER_LEN;
        return ET_FRAME_NEED_MORE;
    }
    CBS cbs;
    CBS_init(&cbs, buf, len);
    et_frame f = {0};
    uint16_t reserved;
    if (!CBS_get_u32(&cbs, &f.length) || !CBS_get_u32(&cbs, &f.user_channel) ||
        !CBS_get_u32(&cbs, &f.stream_id) || !CBS_get_u8(&cbs, &f.action) ||
        !CBS_get_u8(&cbs, &f.flags) || !CBS_get_u16(&cbs, &reserved))
        return ET_RAISE(ET_E_PROTO(ET_WE_BAD_HEADER)); /* unreachable: 16 bytes are there */
    ET_ENSURE(reserved == 0, ET_E_PROTO(ET_WE_BAD_HEADER));
    const et_action_info *info = et_action_lookup(f.action);
    ET_ENSURE(info != NULL, ET_E_PROTO(ET_WE_UNKNOWN_ACTION));
    uint16_t werr = header_check(&f, info);
    ET_ENSURE(werr == ET_WE_NONE, ET_E_PROTO(werr));
    uint32_t limit = max_payload < ET_FRAME_HARD_MAX ? max_payload : ET_FRAME_HARD_MAX;
    ET_ENSURE(f.length <= limit, ET_E_PROTO(ET_WE_FRAME_TOO_LARGE));
    ET_ENSURE(f.length >= info->min_payload && f.length <= info->max_payload,
              ET_E_PROTO(ET_WE_BAD_PAYLOAD));

    CBS payload;
    if (!CBS_get_bytes(&cbs, &payload, f.length)) {
        *used = ET_FRAME_HEADER_LEN + (size_t)f.length;
        return ET_FRAME_NEED_MORE;
    }
    f.payload = CBS_data(&payload);
    *out = f;
    *used = ET_FRAME_HEADER_LEN + (size_t)f.length;
    return ET_FRAME_COMPLETE;
}

void et_frame_header_encode(uint8_t out[ET_FRAME_HEADER_LEN], const et_frame *h)
{
    CBB cbb;
    /* A fixed 16-byte CBB cannot fail for 16 bytes of fields; the results are still checked so
     * a future field change that overflows aborts in tests rather than writing garbage. */
    int ok = CBB_init_fixed(&cbb, out, ET_FRAME_HEADER_LEN) && CBB_add_u32(&cbb, h->length) &&
             CBB_add_u32(&cbb, h->user_channel) && CBB_add_u32(&cbb, h->stream_id) &&
             CBB_add_u8(&cbb, h->action) && CBB_add_u8(&cbb, h->flags) && CBB_add_u16(&cbb, 0);
    if (!ok)
        abort();
    CBB_cleanup(&cbb);
}

int et_frame_check_header(const et_frame *h)
{
    const et_action_info *info = et_action_lookup(h->action);
    ET_ENSURE(info != NULL, ET_E_USAGE);
    ET_ENSURE(header_check(h, info) == ET_WE_NONE, ET_E_USAGE);
    ET_ENSURE(h->length >= info->min_payload && h->length <= info->max_payload, ET_E_USAGE);
    return ET_OK;
}

/* --- the streaming reader ---------------------------------------------------------------- */

int et_frame_reader_init(et_frame_reader *r, uint32_t max_payload, size_t read_size)
{
    memset(r, 0, sizeof(*r));
    ET_ENSURE(max_payload <= ET_FRAME_HARD_MAX && read_size > 0 && read_size <= (1u << 24),
              ET_E_USAGE);
    r->cap = ET_FRAME_HEADER_LEN + (size_t)max_payload + read_size;
    r->buf = malloc(r->cap);
    ET_ENSURE(r->buf != NULL, ET_E_NOMEM);
    r->max_payload = max_payload;
    return ET_OK;
}

void et_frame_reader_cleanup(et_frame_reader *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

int et_frame_reader_set_max(et_frame_reader *r, uint32_t max_payload)
{
    ET_ENSURE(max_payload <= ET_FRAME_HARD_MAX &&
                  ET_FRAME_HEADER_LEN + (size_t)max_payload < r->cap,
              ET_E_USAGE);
    r->max_payload = max_payload;
    return ET_OK;
}

uint8_t *et_frame_reader_space(et_frame_reader *r, size_t *avail)
{
    if (r->start == r->end) {
        r->start = r->end = 0;
    } else if (r->start > 0 && r->cap - r->end < r->cap - ET_FRAME_HEADER_LEN - r->max_payload) {
        /* Less room at the tail than one read: move the unconsumed bytes (at most one partial
         * frame when the caller drains frames before reading) to the front. */
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    *avail = r->cap - r->end;
    return *avail ? r->buf + r->end : NULL;
}

void et_frame_reader_commit(et_frame_reader *r, size_t n)
{
    if (n > r->cap - r->end)
        abort(); /* the caller wrote past the space it was given */
    r->end += n;
}

size_t et_frame_reader_feed(et_frame_reader *r, const uint8_t *p, size_t n)
{
    size_t taken = 0;
    while (taken < n) {
        size_t avail;
        uint8_t *dst = et_frame_reader_space(r, &avail);
        if (dst == NULL)
            break;
        size_t k = n - taken < avail ? n - taken : avail;
        memcpy(dst, p + taken, k);
        et_frame_reader_commit(r, k);
        taken += k;
    }
    return taken;
}

int et_frame_reader_next(et_frame_reader *r, et_frame *out)
{
    if (r->error < 0)
        return r->error;
    size_t used = 0;
    int rv = et_frame_decode(r->buf + r->start, r->end - r->start, r->max_payload, out, &used);
    if (rv < 0) {
        r->error = rv;
        return rv;
    }
    if (rv == ET_FRAME_COMPLETE)
        r->start += used;
    return rv;
}

int et_frame_reader_peek(const et_frame_reader *r, et_frame *out)
{
    if (r->error < 0)
        return r->error;
    size_t used;
    return et_frame_decode(r->buf + r->start, r->end - r->start, r->max_payload, out, &used);
}

size_t et_frame_reader_buffered(const et_frame_reader *r)
{
    return r->end - r->start;
}
