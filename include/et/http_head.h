/* http_head.h: the edge's reader of HTTP/1.x request heads, just enough of RFC 9112 to route a
 * public connection by its Host header and then forward the head's bytes unchanged.
 *
 * edged never rewrites or reframes a request: it reads the head (request line, fields, blank
 * line), picks a tunnel by Host, forwards buf[0..head_len) verbatim and pipes every later byte
 * untouched (bodies, pipelined requests, WebSocket frames). So this module only decides where a
 * head ends, whether it is well-formed enough to route, and what its Host is. It is pure: no
 * I/O, no allocation, no clock; every input byte is read through BoringSSL CBS cursors.
 *
 * What it accepts (anything else is an error; RFC 9112 §2-§5, RFC 9110 §5, §7.2):
 *
 *   - request-line = method SP request-target SP ("HTTP/1.1" / "HTTP/1.0"): method 1*tchar
 *     (case-sensitive), request-target 1*(%x21-7E), exactly one SP each, HTTP-version exactly
 *     (HTTP/1.x only: the edge does not speak HTTP/2 or 0.9);
 *   - at most one empty line before the request line is skipped (RFC 9112 §2.2); it stays in
 *     the forwarded bytes, et_http_head.start says where the request line begins;
 *   - field-line = field-name ":" OWS field-value OWS: field-name 1*tchar with no whitespace
 *     before the colon (§5.1), field-value any bytes but CTLs (HTAB allowed, obs-text allowed);
 *     a line starting with SP or HTAB (obs-fold, or whitespace before the first field) is
 *     rejected, as are more than ET_HTTP_FIELDS_MAX fields;
 *   - line endings: CRLF, or a bare LF (RFC 9112 §2.2 lets a recipient accept LF). A CR not
 *     followed by LF is an error. Accepting LF cannot desynchronise edge and origin: the edge
 *     does not frame anything after the head, it sends every byte to the one origin it chose;
 *   - NUL is an error anywhere;
 *   - exactly one Host field, also on HTTP/1.0: the edge routes by Host only, so a request
 *     without one (HTTP/1.0 allows that) has no route and is answered 400;
 *   - Host = host [":" port], normalised by et_http_host_parse: a DNS name of [a-z0-9-] labels
 *     or an IPv4 dotted quad; IPv6 and IPvFuture literals ("[...]") are rejected because no
 *     route can name one and the OPEN frame's host alphabet cannot carry them;
 *   - request-target: origin-form "/...", asterisk-form "*" with OPTIONS only, authority-form
 *     "host:port" with CONNECT only, or absolute-form "http://" / "https://" authority
 *     [path...] (scheme case-insensitive, no userinfo). The host of an authority- or
 *     absolute-form target must equal Host's after normalisation (ports are not compared: the
 *     route is chosen by host name only, and the origin sees both unchanged). RFC 9112 §3.2.2
 *     would have a server replace Host by the target's authority; refusing a disagreement
 *     instead means the edge and the origin can never route one request two ways.
 *
 * Errors: a malformed head is ET_E_HTTP_BAD_REQUEST (the edge answers 400), a head not complete
 * within ET_HTTP_HEAD_MAX bytes is ET_E_HTTP_TOO_LARGE (431). Both are ET_CLASS_PROTOCOL errors
 * whose detail (et_err_detail) is the HTTP status itself; et_http_head.reason names the rule
 * that was broken, for logs. */
#ifndef ET_HTTP_HEAD_H
#define ET_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "et/frame.h"
#include "et/result.h"

/* A head (request line through blank line, any skipped leading empty line included) is at most
 * this many bytes; the parser never reads past it. */
#define ET_HTTP_HEAD_MAX 16384
/* More field lines than this is a bad request. */
#define ET_HTTP_FIELDS_MAX 100
/* Room et_http_error_response needs for any status it knows (the longest, 431, is 172 bytes). */
#define ET_HTTP_ERROR_RESPONSE_MAX 256

/* Non-negative results of et_http_head_parse. */
enum {
    ET_HTTP_HEAD_NEED_MORE = 0,
    ET_HTTP_HEAD_COMPLETE = 1,
};

/* Errors of et_http_head_parse and et_http_host_parse: et_err_detail() is the HTTP status. */
enum {
    ET_E_HTTP_BAD_REQUEST = ET_ERR_MAKE(ET_CLASS_PROTOCOL, 400),
    ET_E_HTTP_TOO_LARGE = ET_ERR_MAKE(ET_CLASS_PROTOCOL, 431),
    ET_E_HTTP_LENGTH_REQUIRED = ET_ERR_MAKE(ET_CLASS_PROTOCOL, 411),
    ET_E_HTTP_BODY_TOO_LARGE = ET_ERR_MAKE(ET_CLASS_PROTOCOL, 413),
};

/* et_http_reason names the rule a rejected head broke (et_http_head.reason). */
typedef enum et_http_reason {
    ET_HTTP_R_NONE = 0,
    ET_HTTP_R_TOO_LARGE,          /* 431: no blank line within ET_HTTP_HEAD_MAX bytes */
    ET_HTTP_R_NUL,                /* a NUL byte */
    ET_HTTP_R_BARE_CR,            /* a CR not followed by LF */
    ET_HTTP_R_REQUEST_LINE,       /* method, separators, target; a second leading empty line */
    ET_HTTP_R_VERSION,            /* "HTTP/" followed by anything but "1.1" or "1.0" */
    ET_HTTP_R_TARGET,             /* a target form the method does not allow, a bad authority */
    ET_HTTP_R_CTL,                /* a control character (other than HTAB) in a field line */
    ET_HTTP_R_OBS_FOLD,           /* a field line starting with SP or HTAB */
    ET_HTTP_R_NO_COLON,           /* a field line without ':' */
    ET_HTTP_R_SPACE_BEFORE_COLON, /* whitespace between field name and colon */
    ET_HTTP_R_FIELD_NAME,         /* an empty field name or one that is not a token */
    ET_HTTP_R_TOO_MANY_FIELDS,    /* more than ET_HTTP_FIELDS_MAX field lines */
    ET_HTTP_R_NO_HOST,            /* no Host field */
    ET_HTTP_R_DUP_HOST,           /* more than one Host field */
    ET_HTTP_R_BAD_HOST,           /* Host empty, or not a DNS name or IPv4 address */
    ET_HTTP_R_BAD_PORT,           /* Host's port is not 1..65535 in digits */
    ET_HTTP_R_IP_LITERAL,         /* Host is an IPv6 or IPvFuture literal: not served */
    ET_HTTP_R_HOST_MISMATCH,      /* the target's authority names another host than Host */
} et_http_reason;

/* et_http_reason_name returns a static name for |r| ("obs_fold"), or "unknown". */
const char *et_http_reason_name(et_http_reason r);

/* et_http_head_state is the parser's private progress; only this module reads or writes it. */
typedef struct et_http_head_state {
    size_t scan;       /* bytes of the buffer examined so far */
    size_t line;       /* offset of the first byte of the current, unfinished line */
    size_t method_off; /* offsets of the method and the target in the buffer */
    size_t target_off;
    uint8_t phase; /* where the next complete line belongs (http_head.c's enum phase) */
    bool cr;       /* the byte before |scan| was a CR */
    bool host_seen;
    bool upgrade_field; /* an Upgrade field with a non-empty value */
    bool conn_upgrade;  /* a Connection field listing the "upgrade" option */
    int result;         /* sticky once set: ET_HTTP_HEAD_COMPLETE or an error */
} et_http_head_state;

/* et_http_head holds what et_http_head_parse found in one request head, and its progress while
 * the head is arriving. The zero state (et_http_head_init) is the start of a head. Nothing in it
 * owns memory: |method| and |target| are views into the buffer passed to the call that
 * returned ET_HTTP_HEAD_COMPLETE, valid while those bytes are. */
typedef struct et_http_head {
    /* Valid once et_http_head_parse returned ET_HTTP_HEAD_COMPLETE: */
    size_t head_len;       /* bytes of the head, blank line included; the rest is not the head's */
    size_t start;          /* offset of the request line: 0, or the skipped empty line's length */
    const uint8_t *method; /* view, |method_len| bytes, e.g. "GET" */
    size_t method_len;
    const uint8_t *target; /* view, |target_len| bytes, the request-target as sent */
    size_t target_len;
    int minor;        /* HTTP/1.<minor>: 0 or 1 */
    bool upgrade;     /* HTTP/1.1 with an Upgrade field and Connection listing "upgrade" */
    unsigned nfields; /* field lines in the head */
    char host[ET_HOST_MAX + 1]; /* Host, normalised (et_http_host_parse), NUL-terminated */
    size_t host_len;            /* strlen(host), 1..ET_HOST_MAX */
    uint16_t port;              /* Host's port, 0 when it has none */
    /* Set when et_http_head_parse fails: */
    et_http_reason reason;
    et_http_head_state st; /* private */
} et_http_head;

/* et_http_head_init sets |h| to the zero state, ready for the first bytes of a head. */
void et_http_head_init(et_http_head *h);

/* et_http_head_parse reads the request head at the start of the |len| bytes at |buf| and returns
 * ET_HTTP_HEAD_COMPLETE with |*h| filled in (h->head_len <= min(len, ET_HTTP_HEAD_MAX) bytes
 * are the head; any bytes after belong to a body or the next request), ET_HTTP_HEAD_NEED_MORE,
 * ET_E_HTTP_BAD_REQUEST or ET_E_HTTP_TOO_LARGE with h->reason set, or ET_E_USAGE when |len| is
 * smaller than the bytes earlier calls examined or |buf| is NULL with |len| > 0. It does not take
 * ownership of |buf|.
 *
 * Incremental: after NEED_MORE, call it again with the same |h| and the buffer grown by any
 * number of bytes (the first |len| bytes unchanged; the buffer may have moved). Each byte is
 * examined once over all calls, so a head arriving one byte at a time costs O(head) in all.
 * Errors show as soon as the bytes that break a rule have arrived (a NUL, a bare CR, a byte no
 * request line can hold), not only at the end of the head. Only the first ET_HTTP_HEAD_MAX bytes
 * are ever read: once |len| reaches ET_HTTP_HEAD_MAX without a complete head the result is
 * ET_E_HTTP_TOO_LARGE. The result is sticky: once COMPLETE or an error, later calls return the
 * same (COMPLETE re-points the views into the new |buf|). The outcome does not depend on how the
 * bytes were split across calls. */
ET_MUST_USE int et_http_head_parse(const uint8_t *buf, size_t len, et_http_head *h);

/* et_http_host_parse normalises the |n|-byte Host value at |p| (OWS already removed) =
 * host [":" port] into |out|: it returns the host's length (1..ET_HOST_MAX) with |out|
 * NUL-terminated and |*port| set (0 when absent), or ET_E_HTTP_BAD_REQUEST with |*why| set to
 * ET_HTTP_R_BAD_HOST, ET_HTTP_R_BAD_PORT or ET_HTTP_R_IP_LITERAL (|why| may be NULL). The host
 * is lowercased and loses one trailing dot; it must then be a DNS name (labels of 1..63 bytes
 * of [a-z0-9-] joined by '.', ET_HOST_MAX bytes at most) or an IPv4 dotted quad (decimal,
 * 0..255, no leading zeros). A name whose last label is all digits must be a dotted quad, so
 * "1.2.3" or "1.2.3.256" are refused rather than routed as names. The port is 1 to 5 digits
 * with a value of 1..65535. Does not take ownership of |p|; |out| is the caller's. */
ET_MUST_USE int et_http_host_parse(const uint8_t *p, size_t n, char out[ET_HOST_MAX + 1],
                                   uint16_t *port, et_http_reason *why);

/* et_http_content_length reads the body length of the request whose complete head |h| was
 * parsed from |buf| (et_http_head_parse returned ET_HTTP_HEAD_COMPLETE for it): ET_OK with
 * |*out| = the Content-Length (0 when there is none), ET_E_HTTP_BAD_REQUEST for a value that is
 * not 1*DIGIT (OWS around it allowed) or a second Content-Length field,
 * ET_E_HTTP_LENGTH_REQUIRED (411) for a Transfer-Encoding field (no chunked bodies here), or
 * ET_E_HTTP_BODY_TOO_LARGE (413) for a length over |max|; ET_E_USAGE when |h| is not complete.
 * For the admin listeners: the public path never frames bodies. Does not take ownership of
 * |buf|. */
ET_MUST_USE int et_http_content_length(const uint8_t *buf, const et_http_head *h, uint64_t max,
                                       uint64_t *out);

/* et_http_error_response writes a complete HTTP/1.1 response for |status| (400, 404, 408, 429, 431,
 * 502, 503 or 504) into |buf| (|cap| bytes): status line, Content-Type: text/plain;
 * charset=utf-8, Content-Length, Connection: close, and a one-line body ("edged: no tunnel
 * serves this host\n"). It returns the response's length (the bytes to send; a NUL follows them
 * in |buf|), or ET_E_USAGE for another status or a |cap| too small (ET_HTTP_ERROR_RESPONSE_MAX
 * is always enough). */
ET_MUST_USE int et_http_error_response(int status, char *buf, size_t cap);

#endif
