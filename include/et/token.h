/* token.h: tunnel auth tokens, JSON Web Tokens signed with HMAC-SHA256 (RFC 7519, RFC 7515).
 *
 * A token is the JWS compact form base64url(header) "." base64url(claims) "." base64url(mac),
 * unpadded, where mac = HMAC-SHA256(key, base64url(header) "." base64url(claims)). We sign with
 * the header {"alg":"HS256","typ":"JWT"}; we accept any header object whose "alg" is "HS256" and
 * that has no "crit" member (we implement no JWS extension, so RFC 7515 §4.1.11 says refuse).
 *
 * Claims (unknown members are ignored):
 *
 *     "sub"    required  tunnel name, 1..ET_TUNNEL_NAME_MAX of [A-Za-z0-9._-]
 *     "hosts"  optional  array of 0..ET_TOKEN_HOSTS_MAX host patterns (absent = none)
 *     "tcp"    optional  array of 0..ET_TOKEN_PORTS_MAX TCP ports, integers 1..65535
 *     "iat"    required  integer seconds since the epoch, 0..ET_TOKEN_TIME_MAX
 *     "exp"    required  same range; the token is valid while now < exp (+ leeway)
 *     "nbf"    optional  same range; the token is valid from now >= nbf (- leeway)
 *     "jti"    optional  string of 0..ET_TOKEN_JTI_MAX printable ASCII bytes (no space, '"' or
 *                        '\'), an id for logs only
 *
 * A host pattern is a lowercase DNS name: labels of 1..63 bytes of [a-z0-9-] that neither start
 * nor end with '-', joined by '.', at most ET_HOST_MAX bytes in all, optionally preceded by one
 * "*." wildcard label. The wildcard stands for exactly one label, as in TLS certificates (RFC
 * 6125 §6.4.3): "*.example.com" matches "a.example.com" but neither "a.b.example.com" nor the
 * bare "example.com". A token that should serve both lists both.
 *
 * Everything here is pure: no I/O, no clock (the caller passes `now`), and no allocation except
 * jansson's transient parse trees. The key is the bytes of the key file after
 * et_token_key_normalize (for example `openssl rand -hex 32 > token.key`). */
#ifndef ET_TOKEN_H
#define ET_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "et/frame.h"
#include "et/result.h"

#define ET_TOKEN_KEY_MIN   32   /* HMAC key bytes: RFC 7518 §3.2 asks for >= the hash size */
#define ET_TOKEN_KEY_MAX   1024 /* a longer "key file" is almost certainly the wrong file */
#define ET_TOKEN_HOSTS_MAX 64
#define ET_TOKEN_PORTS_MAX 64
#define ET_TOKEN_JTI_MAX   64
/* Decoded size caps. The claims cap follows from ET_TOKEN_MAX (4 base64 chars per 3 bytes). */
#define ET_TOKEN_HEADER_MAX  512
#define ET_TOKEN_PAYLOAD_MAX (ET_TOKEN_MAX / 4 * 3)
#define ET_TOKEN_MAC_LEN     32
/* Latest accepted time claim (9999-12-31T23:59:59Z); keeps exp + leeway far from overflow. */
#define ET_TOKEN_TIME_MAX INT64_C(253402300799)
/* Clock-skew leeway bounds for et_token_verify (seconds). */
#define ET_TOKEN_LEEWAY_DEFAULT 60
#define ET_TOKEN_LEEWAY_MAX     3600
/* Room for every host pattern of a claims set, NUL terminators included. A verified token can
 * never need more than its decoded claims; the builder refuses to go beyond it. */
#define ET_TOKEN_HOST_BUF ET_TOKEN_MAX

/* et_token_claims is a decoded (or to-be-signed) claims set. It holds copies of everything, so
 * it outlives the token it came from, and it contains no pointers: it may be copied with
 * memcpy. The zero state (et_token_claims_init) is an empty, invalid set. Read the host
 * patterns with et_token_host; add them with et_token_claims_add_host. */
typedef struct et_token_claims {
    char sub[ET_TUNNEL_NAME_MAX + 1]; /* NUL-terminated tunnel name */
    char jti[ET_TOKEN_JTI_MAX + 1];   /* NUL-terminated; "" when the token has none */
    int64_t iat;                      /* issued at, seconds since the epoch */
    int64_t exp;                      /* expiry */
    int64_t nbf;                      /* not before; meaningful only when has_nbf */
    uint8_t has_nbf;
    uint8_t nhosts;
    uint8_t nports;
    uint16_t ports[ET_TOKEN_PORTS_MAX];
    uint16_t host_off[ET_TOKEN_HOSTS_MAX]; /* offset in host_buf of each NUL-terminated pattern */
    uint16_t host_used;                    /* bytes of host_buf in use */
    char host_buf[ET_TOKEN_HOST_BUF];
} et_token_claims;

/* et_token_claims_init sets |c| to the zero state (no name, no hosts, no ports, no times). */
void et_token_claims_init(et_token_claims *c);

/* et_token_host returns host pattern |i| (< c->nhosts) of |c| as a NUL-terminated string owned
 * by |c|, or NULL when |i| is out of range. */
const char *et_token_host(const et_token_claims *c, size_t i);

/* et_token_claims_set_sub copies the |len| bytes at |name| into c->sub. It returns ET_OK, or
 * ET_E_CONFIG when |name| is not 1..ET_TUNNEL_NAME_MAX bytes of [A-Za-z0-9._-]. Does not take
 * ownership of |name|. */
ET_MUST_USE int et_token_claims_set_sub(et_token_claims *c, const char *name, size_t len);

/* et_token_claims_add_host appends a copy of host pattern |pattern| (|len| bytes), lowercased,
 * to |c|. It returns ET_OK, ET_E_CONFIG when the lowercased pattern is not a valid host pattern
 * (see the top of this file), or ET_E_LIMIT when |c| already holds ET_TOKEN_HOSTS_MAX patterns
 * or ET_TOKEN_HOST_BUF bytes of them. */
ET_MUST_USE int et_token_claims_add_host(et_token_claims *c, const char *pattern, size_t len);

/* et_token_claims_add_port appends TCP port |port| to |c|. It returns ET_OK, ET_E_CONFIG when
 * |port| is not 1..65535, or ET_E_LIMIT when |c| already holds ET_TOKEN_PORTS_MAX ports. */
ET_MUST_USE int et_token_claims_add_port(et_token_claims *c, uint32_t port);

/* et_token_claims_set_jti copies the |len| bytes at |jti| into c->jti. It returns ET_OK, or
 * ET_E_CONFIG when |jti| is longer than ET_TOKEN_JTI_MAX or holds a byte outside 0x21..0x7e or
 * a '"' or '\'. */
ET_MUST_USE int et_token_claims_set_jti(et_token_claims *c, const char *jti, size_t len);

/* et_token_sign writes the token for claims |c| signed with the |keylen| bytes at |key| into
 * |out| (|cap| bytes) followed by a NUL, and returns the token's length (without the NUL). The
 * claims are encoded as compact JSON with sorted keys, "hosts" and "tcp" always present, "nbf"
 * only when c->has_nbf and "jti" only when non-empty. It returns ET_E_USAGE when |keylen| is
 * outside ET_TOKEN_KEY_MIN..ET_TOKEN_KEY_MAX, when |c| is not a claims set that
 * et_token_claims_parse would accept (iat and exp are the caller's to set) or when |cap| is too
 * small, and ET_E_LIMIT when the token would exceed ET_TOKEN_MAX bytes. Does not take ownership
 * of |key| or |c|. */
ET_MUST_USE int et_token_sign(const uint8_t *key, size_t keylen, const et_token_claims *c,
                              char *out, size_t cap);

/* et_token_verify authenticates the |len|-byte token at |token| with the |keylen| bytes at |key|
 * and, only once the signature has been checked, parses its claims into |*out| and checks them
 * against |now| (seconds since the epoch) with |leeway| seconds of clock skew allowed each way.
 * It returns ET_OK, or, leaving |*out| in the zero state:
 *   ET_E_PROTO(ET_WE_AUTH_MALFORMED)  over ET_TOKEN_MAX bytes, not three parts, bad base64url,
 *                                     a header that is not a JSON object with a string "alg",
 *                                     a "crit" header, or (after the signature) bad claims;
 *   ET_E_PROTO(ET_WE_AUTH_SIGNATURE)  "alg" is not "HS256" ("none" included), the MAC is not
 *                                     32 bytes, or it does not match (compared in constant time);
 *   ET_E_PROTO(ET_WE_AUTH_EXPIRED)    now >= exp + leeway;
 *   ET_E_PROTO(ET_WE_AUTH_NOT_YET)    now < nbf - leeway;
 *   ET_E_USAGE                        a bad key length, or |leeway| outside
 *                                     0..ET_TOKEN_LEEWAY_MAX;
 *   ET_E_NOMEM                        jansson ran out of memory.
 * Checks run in that order: size, split, base64url, header, MAC, claims, time. Does not take
 * ownership of |key| or |token|; |*out| holds copies. */
ET_MUST_USE int et_token_verify(const uint8_t *key, size_t keylen, const uint8_t *token, size_t len,
                                int64_t now, int64_t leeway, et_token_claims *out);

/* et_token_verify_signature is the signature half of et_token_verify: it returns ET_OK when the
 * |len|-byte token at |token| is a well-formed HS256 JWS whose MAC matches the |keylen|-byte
 * |key|, with the same errors as et_token_verify up to and including the MAC. On success, when
 * |payload| is not NULL, it copies the decoded (authenticated, not parsed) claims bytes into
 * |payload|, which has room for ET_TOKEN_PAYLOAD_MAX bytes, and their count into |*payload_len|.
 * Does not take ownership of anything. */
ET_MUST_USE int et_token_verify_signature(const uint8_t *key, size_t keylen, const uint8_t *token,
                                          size_t len, uint8_t *payload, size_t *payload_len);

/* et_token_claims_parse parses the |len| bytes of claims JSON at |json| into |*out| and returns
 * ET_OK, ET_E_PROTO(ET_WE_AUTH_MALFORMED) (leaving |*out| zeroed) or ET_E_NOMEM. It is for
 * fuzzing and tests; it does not authenticate anything: the edge calls et_token_verify. JSON
 * with duplicate keys, over ET_TOKEN_PAYLOAD_MAX bytes, or any claim of the wrong type or out
 * of range is refused; unknown members are ignored. Does not take ownership of |json|. */
ET_MUST_USE int et_token_claims_parse(const uint8_t *json, size_t len, et_token_claims *out);

/* et_token_check_time returns ET_OK when claims |c| are valid at |now| give or take |leeway|
 * seconds (nbf - leeway <= now < exp + leeway), ET_E_PROTO(ET_WE_AUTH_NOT_YET),
 * ET_E_PROTO(ET_WE_AUTH_EXPIRED), or ET_E_USAGE for |leeway| outside 0..ET_TOKEN_LEEWAY_MAX. */
ET_MUST_USE int et_token_check_time(const et_token_claims *c, int64_t now, int64_t leeway);

/* et_host_match returns true when the |host_len|-byte host name at |host| (a Host header value
 * with any port and trailing dot already removed; not NUL-terminated) is matched by the
 * NUL-terminated host pattern |pattern|, comparing ASCII case-insensitively. "*.example.com"
 * matches one extra leftmost label of [A-Za-z0-9_-] (1..63 bytes): "a.example.com", not
 * "a.b.example.com" nor "example.com". An invalid pattern matches nothing. */
bool et_host_match(const char *pattern, const char *host, size_t host_len);

/* et_token_allows_host returns true when one of the host patterns of |c| matches the
 * |host_len|-byte |host| (et_host_match). */
bool et_token_allows_host(const et_token_claims *c, const char *host, size_t host_len);

/* et_token_allows_port returns true when |c| names TCP port |port| (never for port 0). */
bool et_token_allows_port(const et_token_claims *c, uint16_t port);

/* et_duration_parse parses the NUL-terminated duration |s|, decimal digits followed by exactly
 * one unit of s, m, h or d ("90s", "15m", "1h", "30d"), into |*seconds| and returns ET_OK, or
 * ET_E_CONFIG (leaving |*seconds| alone) for an empty string, a sign, spaces, a missing or
 * unknown unit, zero, or a value over ET_TOKEN_TIME_MAX seconds. */
ET_MUST_USE int et_duration_parse(const char *s, int64_t *seconds);

/* et_token_key_normalize returns in |*keylen| how many of the |len| bytes read from a key file
 * at |buf| are the HMAC key: all of them but one trailing "\n" or "\r\n". It returns ET_OK, or
 * ET_E_CONFIG when that leaves fewer than ET_TOKEN_KEY_MIN or more than ET_TOKEN_KEY_MAX bytes.
 * The key is then the first |*keylen| bytes of |buf|; nothing is copied. */
ET_MUST_USE int et_token_key_normalize(const uint8_t *buf, size_t len, size_t *keylen);

/* et_token_b64_encode writes the unpadded base64url (RFC 4648 §5) text of the |n| bytes at |in|
 * to |out| (|cap| bytes, no NUL added) and returns its length, or ET_E_USAGE when |cap| is too
 * small. */
ET_MUST_USE int et_token_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/* et_token_b64_decode decodes the |n| bytes of unpadded base64url text at |in| into |out| (|cap|
 * bytes) and returns the decoded length. It is strict, so every byte string has exactly one
 * accepted encoding: padding, bytes outside [A-Za-z0-9_-], a length of 1 mod 4 and non-zero
 * unused trailing bits are ET_E_PROTO(ET_WE_AUTH_MALFORMED); a too small |cap| is ET_E_USAGE. */
ET_MUST_USE int et_token_b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

#endif
