/* frame.h: the tunnel's wire format (spec/protocol.md is the authoritative description).
 *
 * Every frame is a fixed 16-byte big-endian header followed by |payload_length| bytes:
 *
 *     u32 payload_length | u32 user_channel | u32 stream_id | u8 action | u8 flags | u16 reserved
 *
 * This module is pure: no sockets, no clocks, no allocation except the reader's own buffer. All
 * parsing goes through BoringSSL's CBS cursors and all encoding through fixed CBBs.
 *
 * Decoded payloads are views: et_frame.payload and every et_bytes inside an et_msg point into the
 * buffer the frame was decoded from, and stay valid only as long as those bytes do (for an
 * et_frame_reader: until the next et_frame_reader_space or et_frame_reader_next call). */
#ifndef ET_FRAME_H
#define ET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "et/result.h"

/* Protocol versions this code speaks (negotiated in HELLO/WELCOME). */
#define ET_PROTO_VERSION_MIN 1
#define ET_PROTO_VERSION_MAX 1

#define ET_FRAME_HEADER_LEN 16
/* Hard cap on payload_length whatever was negotiated: a larger length is rejected from the
 * header alone, before any payload byte is buffered. */
#define ET_FRAME_HARD_MAX (1u << 20)
/* Bounds and default of the max payload a side announces in HELLO / WELCOME. */
#define ET_FRAME_MAX_MIN     4096u
#define ET_FRAME_MAX_DEFAULT 16384u
/* The largest DATA payload our senders put in one frame: header + payload fit one TLS record
 * (16 KiB of plaintext), so a control frame never waits behind more than one record. */
#define ET_DATA_CHUNK (16384u - ET_FRAME_HEADER_LEN)

/* Flow-control windows (bytes of DATA payload). */
#define ET_WINDOW_MAX     0x7fffffffu
#define ET_WINDOW_DEFAULT (256u * 1024u)
/* Receive-window auto-tuning (not wire constants: spec §7.2 lets a receiver grant more). */
#define ET_WINDOW_GROW_MAX    (4u * 1024u * 1024u)   /* one stream's window at most */
#define ET_WINDOW_GROW_NEAR   (1024u * 1024u)        /* ... on a path under GROW_NS / 2 RTT */
#define ET_WINDOW_GROW_BUDGET (64ull << 20)          /* every grown window of a process */
#define ET_WINDOW_GROW_NS     (4ull * 1000u * 1000u) /* half a window within this: too small */

/* Field caps (bytes). */
#define ET_SESSION_ID_LEN  16
#define ET_TOKEN_MAX       4096
#define ET_AGENT_MAX       64
#define ET_TUNNEL_NAME_MAX 64
#define ET_HOST_MAX        253
#define ET_TEXT_MAX        512
#define ET_TOPIC_MAX       64
#define ET_ROUTES_MAX      32
#define ET_PUSH_BODY_MAX   4000 /* every control frame fits ET_FRAME_MAX_MIN */

/* Actions (the header's u8 action). */
typedef enum et_action {
    ET_A_HELLO = 0x01,
    ET_A_WELCOME = 0x02,
    ET_A_OPEN = 0x10,
    ET_A_DATA = 0x11,
    ET_A_END = 0x12,
    ET_A_WINDOW = 0x13,
    ET_A_CANCEL = 0x20,
    ET_A_CANCEL_ACK = 0x21,
    ET_A_PING = 0x30,
    ET_A_PONG = 0x31,
    ET_A_HEALTH = 0x32,
    ET_A_HEALTH_ANSWER = 0x33,
    ET_A_GOAWAY = 0x34,
    ET_A_PUSH = 0x35,
    ET_A_ERROR = 0x3f,
} et_action;

/* Flags. Each action accepts only the flags its et_action_info names; any other bit set is a
 * malformed header. */
#define ET_F_CANCEL_CHANNEL 0x01 /* CANCEL / CANCEL_ACK: every stream of the user channel */

/* Wire error codes (u16), carried by ERROR and GOAWAY frames and by ET_E_PROTO errors. */
typedef enum et_wire_error {
    ET_WE_NONE = 0x0000,
    /* connection errors: the connection is closed after the ERROR frame */
    ET_WE_PROTOCOL = 0x0001,
    ET_WE_BAD_HEADER = 0x0002,
    ET_WE_FRAME_TOO_LARGE = 0x0003,
    ET_WE_UNKNOWN_ACTION = 0x0004,
    ET_WE_BAD_PAYLOAD = 0x0005,
    ET_WE_WRONG_SOCKET = 0x0006,
    ET_WE_UNEXPECTED = 0x0007,
    ET_WE_VERSION = 0x0008,
    ET_WE_HANDSHAKE_TIMEOUT = 0x0009,
    ET_WE_INTERNAL = 0x000a,
    ET_WE_SHUTDOWN = 0x000b,
    ET_WE_KEEPALIVE_TIMEOUT = 0x000c,
    /* authentication: refused handshakes */
    ET_WE_AUTH_MALFORMED = 0x0101,
    ET_WE_AUTH_SIGNATURE = 0x0102,
    ET_WE_AUTH_EXPIRED = 0x0103,
    ET_WE_AUTH_SCOPE = 0x0104,
    ET_WE_AUTH_SESSION = 0x0105,
    ET_WE_AUTH_NOT_YET = 0x0106,
    /* stream errors: only the named stream is closed */
    ET_WE_FLOW_CONTROL = 0x0201,
    ET_WE_UNKNOWN_STREAM = 0x0202,
    ET_WE_STREAM_EXISTS = 0x0203,
    ET_WE_STREAM_STATE = 0x0204,
    /* limits */
    ET_WE_LIMIT_STREAMS = 0x0301,
    ET_WE_LIMIT_SESSIONS = 0x0302,
    ET_WE_LIMIT_SOCKETS = 0x0303,
    ET_WE_RATE_LIMITED = 0x0304,
} et_wire_error;

/* et_wire_error_name returns the spec's name of |code| ("frame_too_large"), or "unknown". */
const char *et_wire_error_name(uint16_t code);

/* Cancel reasons (u16, informational: receivers accept any value). */
typedef enum et_cancel_reason {
    ET_CR_UNSPECIFIED = 0,
    ET_CR_CLIENT_GONE = 1,
    ET_CR_ORIGIN_GONE = 2,
    ET_CR_ORIGIN_REFUSED = 3,
    ET_CR_ORIGIN_TIMEOUT = 4,
    ET_CR_IDLE_TIMEOUT = 5,
    ET_CR_SHUTDOWN = 6,
    ET_CR_FLOW_CONTROL = 7,
    ET_CR_LIMIT = 8,
    ET_CR_ADMIN = 9,
    ET_CR_SOCKET_LOST = 10,
    ET_CR_PROTOCOL = 11,
} et_cancel_reason;

/* Socket roles (HELLO.role) and the mask bits of et_action_info.sockets. */
typedef enum et_role {
    ET_ROLE_CONTROL = 1,
    ET_ROLE_DATA = 2,
} et_role;
#define ET_SOCK_CONTROL 0x01
#define ET_SOCK_DATA    0x02

/* Directions, the mask bits of et_action_info.dirs. */
#define ET_DIR_EDGE_TO_ORIGIN 0x01
#define ET_DIR_ORIGIN_TO_EDGE 0x02

/* Which (user_channel, stream_id) an action may name. */
typedef enum et_scope {
    ET_SCOPE_CONN = 1,   /* both zero */
    ET_SCOPE_STREAM = 2, /* both non-zero */
    ET_SCOPE_CANCEL = 3, /* channel non-zero; stream zero iff ET_F_CANCEL_CHANNEL */
    ET_SCOPE_ANY = 4,    /* ERROR: connection (both zero) or stream (both non-zero) */
} et_scope;

/* et_action_info is one row of the dispatch table of spec/protocol.md §4. */
typedef struct et_action_info {
    const char *name;     /* "HELLO" */
    uint8_t flags;        /* flag bits the action accepts */
    uint8_t scope;        /* et_scope */
    uint8_t sockets;      /* ET_SOCK_* kinds a receiver accepts it on */
    uint8_t preferred;    /* ET_SOCK_* kind a sender uses when the session has one */
    uint8_t dirs;         /* ET_DIR_* */
    uint8_t handshake;    /* 1: only as the first frame of a socket (HELLO, WELCOME) */
    uint32_t min_payload; /* static payload bounds; max is also capped by the negotiated max */
    uint32_t max_payload;
} et_action_info;

/* et_action_lookup returns the table row of |action|, or NULL for an unknown action. */
const et_action_info *et_action_lookup(uint8_t action);

/* A decoded frame. |payload| is a view of |length| bytes (see the top of this file). */
typedef struct et_frame {
    uint32_t length;
    uint32_t user_channel;
    uint32_t stream_id;
    uint8_t action;
    uint8_t flags;
    const uint8_t *payload;
} et_frame;

/* A view of bytes inside a decoded payload, or the bytes to encode (not owned). */
typedef struct et_bytes {
    const uint8_t *p;
    size_t n;
} et_bytes;

/* An IPv4 or IPv6 socket address as OPEN carries it. */
typedef struct et_addr {
    uint8_t family; /* 4 or 6 */
    uint8_t addr[16];
    uint16_t port;
} et_addr;

typedef enum et_open_kind {
    ET_OPEN_TCP = 1,
    ET_OPEN_HTTP = 2,
} et_open_kind;

/* A route an origin serves, announced in HELLO and checked against its token. */
typedef struct et_route {
    uint8_t kind;  /* et_open_kind: ET_OPEN_TCP or ET_OPEN_HTTP */
    uint16_t port; /* TCP: the public port, 1..65535; HTTP: 0 */
    et_bytes host; /* HTTP: host pattern, [a-z0-9._-] with an optional leading "*." label */
} et_route;

typedef struct et_hello {
    uint16_t version_min, version_max;
    uint8_t role;            /* et_role */
    uint8_t hello_flags;     /* ET_HELLO_* */
    uint16_t socket_index;   /* the socket's place in the origin's pool (control: 0) */
    uint32_t max_frame;      /* largest payload this side accepts */
    uint32_t initial_window; /* per-stream receive window the origin grants the edge */
    uint8_t session_id[ET_SESSION_ID_LEN];
    et_bytes token;  /* 1..ET_TOKEN_MAX */
    et_bytes agent;  /* 0..ET_AGENT_MAX, software name for logs */
    uint8_t nroutes; /* 0..ET_ROUTES_MAX */
    et_route routes[ET_ROUTES_MAX];
} et_hello;
#define ET_HELLO_LEGACY 0x01 /* the session has no control socket (originctl --no-control) */

typedef struct et_welcome {
    uint16_t version;
    uint8_t role; /* echo of HELLO.role */
    uint32_t max_frame;
    uint8_t session_id[ET_SESSION_ID_LEN];
    uint32_t socket_id;    /* the edge's id for this socket (logs, metrics) */
    uint32_t keepalive_ms; /* PING interval the edge expects; 0 = none */
    et_bytes tunnel;       /* 1..ET_TUNNEL_NAME_MAX: the token's tunnel name */
} et_welcome;

typedef struct et_open {
    uint8_t kind;            /* et_open_kind */
    uint32_t initial_window; /* the edge's receive window for this stream */
    et_addr client;          /* the public client's address */
    et_addr server;          /* the public listener address it connected to */
    et_bytes host;           /* HTTP: 1..ET_HOST_MAX of [a-z0-9._-]; TCP: empty */
} et_open;

typedef struct et_cancel {
    uint16_t reason;  /* et_cancel_reason */
    uint64_t sent_ns; /* sender's monotonic clock when it decided to cancel; echoed */
} et_cancel;

typedef enum et_cancel_outcome {
    ET_CO_RESET = 0,    /* the stream was live and has been reset */
    ET_CO_UNKNOWN = 1,  /* no such stream yet: a tombstone will refuse its OPEN */
    ET_CO_FINISHED = 2, /* the stream had already finished */
} et_cancel_outcome;

typedef struct et_cancel_ack {
    uint8_t outcome;        /* et_cancel_outcome */
    uint64_t echo_ns;       /* CANCEL.sent_ns */
    uint32_t handle_ns;     /* receipt of the CANCEL to reset done, at the receiver */
    uint64_t dropped_bytes; /* queued bytes of the stream the receiver discarded */
} et_cancel_ack;

typedef struct et_health {
    uint32_t probe_id;
    et_bytes host; /* 0..ET_HOST_MAX: route to probe; empty = every route */
} et_health;

typedef enum et_health_status {
    ET_HS_OK = 0,
    ET_HS_REFUSED = 1,
    ET_HS_TIMEOUT = 2,
    ET_HS_NO_ROUTE = 3,
    ET_HS_ERROR = 4,
} et_health_status;

typedef struct et_health_answer {
    uint32_t probe_id;
    uint8_t status; /* et_health_status */
    uint32_t latency_us;
    et_bytes detail; /* 0..ET_TEXT_MAX */
} et_health_answer;

typedef struct et_goaway {
    uint16_t code;     /* et_wire_error; ET_WE_NONE for a graceful drain */
    uint32_t drain_ms; /* how long in-flight streams may still run */
    et_bytes text;     /* 0..ET_TEXT_MAX */
} et_goaway;

typedef enum et_push_kind {
    ET_PUSH_NOTICE = 1,
    ET_PUSH_CONFIG = 2,
} et_push_kind;

typedef struct et_push {
    uint32_t push_id;
    uint8_t kind;   /* et_push_kind */
    et_bytes topic; /* 0..ET_TOPIC_MAX */
    et_bytes body;  /* 0..ET_PUSH_BODY_MAX, u16-length-prefixed */
} et_push;

typedef struct et_error_msg {
    uint16_t code; /* et_wire_error (receivers accept unknown codes) */
    et_bytes text; /* 0..ET_TEXT_MAX */
} et_error_msg;

/* A parsed payload; which member is live is the frame's action. END has no member (empty
 * payload); DATA's member is the payload view itself. */
typedef union et_msg {
    et_hello hello;
    et_welcome welcome;
    et_open open;
    et_bytes data;
    uint32_t window; /* WINDOW: increment, 1..ET_WINDOW_MAX */
    et_cancel cancel;
    et_cancel_ack cancel_ack;
    uint64_t ping; /* PING and PONG: opaque, echoed */
    et_health health;
    et_health_answer health_answer;
    et_goaway goaway;
    et_push push;
    et_error_msg error;
} et_msg;

/* Results of the decoders. */
#define ET_FRAME_NEED_MORE 0
#define ET_FRAME_COMPLETE  1

/* et_frame_decode decodes one frame from the |len| bytes at |buf|, accepting payloads of at most
 * |max_payload| bytes (itself capped at ET_FRAME_HARD_MAX). It returns ET_FRAME_COMPLETE with
 * |*out| filled (a view into |buf|) and |*used| = bytes consumed; ET_FRAME_NEED_MORE with |*used|
 * = the total bytes needed to make progress; or ET_E_PROTO(bad_header | frame_too_large |
 * unknown_action) as soon as the header shows it, before the payload has arrived. Only the
 * header is checked here; et_msg_parse checks the payload. */
ET_MUST_USE int et_frame_decode(const uint8_t *buf, size_t len, uint32_t max_payload, et_frame *out,
                                size_t *used);

/* et_msg_parse parses the payload of |f| (per its action) into |*out|, whose views point into
 * f->payload. It returns ET_OK or ET_E_PROTO(ET_WE_BAD_PAYLOAD). Every field is bounds-checked,
 * reserved bits must be zero and the payload must be consumed exactly. */
ET_MUST_USE int et_msg_parse(const et_frame *f, et_msg *out);

/* et_frame_encode writes the frame with header fields from |h| (its length and payload are
 * ignored) and payload |m| into |out|, which has |cap| bytes. It returns the number of bytes
 * written, or ET_E_USAGE when |m| breaks a field cap or |cap| is too small. It produces exactly
 * the bytes et_msg_parse accepts: decode(encode(m)) == m. */
ET_MUST_USE int et_frame_encode(uint8_t *out, size_t cap, const et_frame *h, const et_msg *m);

/* et_frame_header_encode writes the 16 header bytes of |h| (including h->length) to |out|: the
 * fast path for DATA, whose payload the caller places right after. */
void et_frame_header_encode(uint8_t out[ET_FRAME_HEADER_LEN], const et_frame *h);

/* et_frame_format writes a one-line canonical text of frame |f| with parsed payload |m| into
 * |buf| (NUL-terminated, truncated to |n|), as spec/vectors.txt and logs show it. Bytes fields
 * print as escaped text; DATA prints its length and XXH3-64 digest. Returns strlen of the full
 * text (like snprintf). */
int et_frame_format(char *buf, size_t n, const et_frame *f, const et_msg *m);

/* et_frame_reader buffers a byte stream and hands out the frames in it (the streaming decoder).
 * Bytes may arrive in pieces of any size, one at a time included. */
typedef struct et_frame_reader {
    uint8_t *buf; /* owned: |cap| bytes, allocated by init */
    size_t cap;
    size_t start;         /* first unconsumed byte */
    size_t end;           /* one past the last received byte */
    uint32_t max_payload; /* negotiated limit (et_frame_reader_set_max may lower or raise it) */
    int error;            /* sticky: once a decode fails, every later next() returns it */
} et_frame_reader;

/* et_frame_reader_init allocates a reader for payloads up to |max_payload| bytes with room for
 * reads of at least |read_size| bytes. Returns ET_OK or ET_E_NOMEM / ET_E_USAGE. */
ET_MUST_USE int et_frame_reader_init(et_frame_reader *r, uint32_t max_payload, size_t read_size);

/* et_frame_reader_cleanup frees the reader's buffer; safe on a zeroed or cleaned reader. */
void et_frame_reader_cleanup(et_frame_reader *r);

/* et_frame_reader_set_max changes the payload limit (after negotiation). Returns ET_E_USAGE if
 * |max_payload| exceeds what the buffer was sized for. */
ET_MUST_USE int et_frame_reader_set_max(et_frame_reader *r, uint32_t max_payload);

/* et_frame_reader_space returns where the next received bytes go and their room in |*avail|
 * (never 0). It may move unconsumed bytes, invalidating views from earlier frames. */
uint8_t *et_frame_reader_space(et_frame_reader *r, size_t *avail);

/* et_frame_reader_commit records that |n| bytes (n <= avail) were written at the space. */
void et_frame_reader_commit(et_frame_reader *r, size_t n);

/* et_frame_reader_feed copies up to |n| bytes from |p| into the reader and returns how many it
 * took (less than |n| only when the buffer holds a full frame the caller has not consumed). */
size_t et_frame_reader_feed(et_frame_reader *r, const uint8_t *p, size_t n);

/* et_frame_reader_next returns ET_FRAME_COMPLETE with the next frame in |*out| (its payload a
 * view valid until the next call to next() or space()), ET_FRAME_NEED_MORE, or the sticky
 * ET_E_PROTO error of a bad header. */
ET_MUST_USE int et_frame_reader_next(et_frame_reader *r, et_frame *out);

/* et_frame_reader_peek returns ET_FRAME_COMPLETE with the next frame in |*out| without
 * consuming it (a view valid as next()'s), ET_FRAME_NEED_MORE, or the error next() would give
 * (not made sticky here). For look-ahead: is more of the same stream already here? */
ET_MUST_USE int et_frame_reader_peek(const et_frame_reader *r, et_frame *out);

/* et_frame_reader_buffered returns the bytes received but not yet handed out as frames. */
size_t et_frame_reader_buffered(const et_frame_reader *r);

#endif
