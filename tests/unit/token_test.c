/* token_test.c: unit tests of the token module (et/token.h). Every input a parser reads sits
 * against a guard page (tu_guarded), so an over-read faults. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/digest.h>
#include <openssl/hmac.h>

#include "et/token.h"

#define MALFORMED ET_E_PROTO(ET_WE_AUTH_MALFORMED)
#define SIGNATURE ET_E_PROTO(ET_WE_AUTH_SIGNATURE)
#define EXPIRED   ET_E_PROTO(ET_WE_AUTH_EXPIRED)
#define NOT_YET   ET_E_PROTO(ET_WE_AUTH_NOT_YET)

/* 32 ASCII bytes: the key of the openssl-computed vector in test_sign_known_vector. */
static const uint8_t key32[] = "0123456789abcdef0123456789abcdef";
#define KEY32_LEN 32

static const char header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/* --- helpers ------------------------------------------------------------------------------ */

static int verify_str(const uint8_t *key, size_t keylen, const char *tok, size_t len, int64_t now,
                      int64_t leeway, et_token_claims *out)
{
    uint8_t *g = tu_guarded(tok, len);
    int rv = et_token_verify(key, keylen, g, len, now, leeway, out);
    tu_guarded_free(g, len);
    return rv;
}

static int verify(const char *tok, int64_t now, et_token_claims *out)
{
    return verify_str(key32, KEY32_LEN, tok, strlen(tok), now, 0, out);
}

static int parse_claims(const char *json, et_token_claims *out)
{
    size_t n = strlen(json);
    uint8_t *g = tu_guarded(json, n);
    int rv = et_token_claims_parse(g, n, out);
    tu_guarded_free(g, n);
    return rv;
}

static int b64_decode_str(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s);
    uint8_t *g = tu_guarded(s, n);
    int rv = et_token_b64_decode(g, n, out, cap);
    tu_guarded_free(g, n);
    return rv;
}

/* make_token builds base64url(header).base64url(claims).base64url(HMAC) from raw JSON texts
 * with a correct MAC under key32, so a test can reach the checks behind the signature. The MAC
 * is computed with BoringSSL directly, not through the code under test. */
static void make_token(const char *header, const char *claims, char *out, size_t cap)
{
    int n = et_token_b64_encode((const uint8_t *)header, strlen(header), out, cap);
    assert_true(n >= 0);
    size_t pos = (size_t)n;
    out[pos++] = '.';
    n = et_token_b64_encode((const uint8_t *)claims, strlen(claims), out + pos, cap - pos);
    assert_true(n >= 0);
    pos += (size_t)n;
    uint8_t mac[32];
    unsigned maclen = 0;
    assert_non_null(HMAC(EVP_sha256(), key32, KEY32_LEN, (const uint8_t *)out, pos, mac, &maclen));
    assert_int_equal(maclen, 32);
    out[pos++] = '.';
    n = et_token_b64_encode(mac, sizeof(mac), out + pos, cap - pos - 1);
    assert_int_equal(n, 43);
    out[pos + (size_t)n] = '\0';
}

static const char std_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* claims valid from 1000 to 2000 */
static const char base_claims[] = "{\"sub\":\"t\",\"hosts\":[\"a.example.com\"],\"tcp\":[22],"
                                  "\"iat\":1000,\"exp\":2000}";

static void sample_claims(et_token_claims *c)
{
    et_token_claims_init(c);
    assert_int_equal(et_token_claims_set_sub(c, "photos", 6), ET_OK);
    assert_int_equal(et_token_claims_add_host(c, "photos.example.com", 18), ET_OK);
    assert_int_equal(et_token_claims_add_host(c, "*.dev.example.com", 17), ET_OK);
    assert_int_equal(et_token_claims_add_port(c, 20022), ET_OK);
    assert_int_equal(et_token_claims_set_jti(c, "t1", 2), ET_OK);
    c->iat = 1700000000;
    c->exp = 1702592000;
}

static void assert_claims_equal(const et_token_claims *a, const et_token_claims *b)
{
    assert_string_equal(a->sub, b->sub);
    assert_string_equal(a->jti, b->jti);
    assert_int_equal(a->iat, b->iat);
    assert_int_equal(a->exp, b->exp);
    assert_int_equal(a->has_nbf, b->has_nbf);
    if (a->has_nbf)
        assert_int_equal(a->nbf, b->nbf);
    assert_int_equal(a->nhosts, b->nhosts);
    for (size_t i = 0; i < a->nhosts; i++)
        assert_string_equal(et_token_host(a, i), et_token_host(b, i));
    assert_int_equal(a->nports, b->nports);
    for (size_t i = 0; i < a->nports; i++)
        assert_int_equal(a->ports[i], b->ports[i]);
}

/* --- signing and verifying ---------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    et_token_claims c, got;
    sample_claims(&c);
    c.has_nbf = 1;
    c.nbf = 1700000100;
    char tok[ET_TOKEN_MAX + 1];
    int n = et_token_sign(key32, KEY32_LEN, &c, tok, sizeof(tok));
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(tok));
    assert_int_equal(verify(tok, 1700000100, &got), ET_OK);
    assert_claims_equal(&c, &got);
    assert_true(et_token_allows_host(&got, "photos.example.com", 18));
    assert_true(et_token_allows_host(&got, "API.dev.example.com", 19));
    assert_false(et_token_allows_host(&got, "dev.example.com", 15));
    assert_false(et_token_allows_host(&got, "other.example.com", 17));
    assert_true(et_token_allows_port(&got, 20022));
    assert_false(et_token_allows_port(&got, 22));
    assert_false(et_token_allows_port(&got, 0));

    /* The same claims and key always give the same token. */
    char again[ET_TOKEN_MAX + 1];
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &c, again, sizeof(again)), n);
    assert_string_equal(tok, again);

    /* A different key of the same length refuses it. */
    uint8_t other[KEY32_LEN];
    memcpy(other, key32, KEY32_LEN);
    other[0] ^= 1;
    assert_int_equal(verify_str(other, KEY32_LEN, tok, (size_t)n, 1700000100, 0, &got), SIGNATURE);
    assert_string_equal(got.sub, ""); /* zero state on failure */
    assert_int_equal(got.nhosts, 0);
}

/* The expected token was computed outside this code, with coreutils and openssl:
 *   H=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | basenc --base64url | tr -d '=\n')
 *   C=$(printf '%s' '{"exp":1702592000,"hosts":["photos.example.com","*.dev.example.com"],'\
 *       '"iat":1700000000,"jti":"t1","sub":"photos","tcp":[20022]}' | basenc --base64url -w0 |
 *       tr -d '=')
 *   printf '%s' "$H.$C" | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef -binary |
 *       basenc --base64url | tr -d '=\n'                       */
static void test_sign_known_vector(void **state)
{
    static const char want[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJleHAiOjE3MDI1OTIwMDAsImhvc3RzIjpbInBob3Rvcy5leGFtcGxlLmNvbSIsIiouZGV2LmV4YW1wbGUuY29t"
        "Il0sImlhdCI6MTcwMDAwMDAwMCwianRpIjoidDEiLCJzdWIiOiJwaG90b3MiLCJ0Y3AiOlsyMDAyMl19."
        "4R4ut8hJP2GV0KvgNzULm5MDdRKPLsdp48w_iqSmYv0";
    et_token_claims c;
    sample_claims(&c);
    char tok[ET_TOKEN_MAX + 1];
    int n = et_token_sign(key32, KEY32_LEN, &c, tok, sizeof(tok));
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(tok, want);
    assert_memory_equal(tok, header_b64, strlen(header_b64));
}

static void test_sign_errors(void **state)
{
    et_token_claims c;
    sample_claims(&c);
    char tok[ET_TOKEN_MAX + 1];
    /* key too short */
    assert_int_equal(et_token_sign(key32, 31, &c, tok, sizeof(tok)), ET_E_USAGE);
    assert_int_equal(et_token_sign(NULL, 32, &c, tok, sizeof(tok)), ET_E_USAGE);
    /* output too small: the exact length fails (no room for the NUL), one more works */
    int n = et_token_sign(key32, KEY32_LEN, &c, tok, sizeof(tok));
    assert_true(n > 0);
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &c, tok, (size_t)n), ET_E_USAGE);
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &c, tok, (size_t)n + 1), n);
    /* claims the parser would refuse */
    et_token_claims bad = c;
    bad.sub[0] = '\0';
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &bad, tok, sizeof(tok)), ET_E_USAGE);
    bad = c;
    bad.exp = -1;
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &bad, tok, sizeof(tok)), ET_E_USAGE);
    bad = c;
    bad.ports[0] = 0;
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &bad, tok, sizeof(tok)), ET_E_USAGE);
    bad = c;
    bad.host_buf[0] = 'X';
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &bad, tok, sizeof(tok)), ET_E_USAGE);
    bad = c;
    bad.host_off[1] = 4000; /* beyond host_used */
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &bad, tok, sizeof(tok)), ET_E_USAGE);
    bad = c;
    memset(bad.jti, 'x', sizeof(bad.jti)); /* no NUL */
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &bad, tok, sizeof(tok)), ET_E_USAGE);

    /* 64 hosts of 60 bytes are valid claims but no token under ET_TOKEN_MAX holds them. */
    et_token_claims big;
    sample_claims(&big);
    big.nhosts = 0;
    big.host_used = 0;
    char h[61];
    int added = 0;
    for (int i = 0; i < ET_TOKEN_HOSTS_MAX; i++) {
        snprintf(h, sizeof(h), "h%02d.%056d", i, 0);
        int rv = et_token_claims_add_host(&big, h, strlen(h));
        if (rv == ET_E_LIMIT)
            break;
        assert_int_equal(rv, ET_OK);
        added++;
    }
    assert_true(added >= 60);
    assert_int_equal(et_token_sign(key32, KEY32_LEN, &big, tok, sizeof(tok)), ET_E_LIMIT);
}

/* RFC 7515 Appendix A.1: the HS256 example JWS and the JWK "k" of its key, copied from the RFC
 * text (they also appear, identical, in several JOSE libraries' test suites). The signature is
 * checked through et_token_verify_signature; the claims ("iss", "exp", no "sub") are then
 * refused by our claims rules, after the signature and never before. */
static void test_rfc7515_a1(void **state)
{
    static const char jws[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
        "cnVlfQ."
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    static const char jwk_k[] =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    /* The key's octets, as the RFC's "k" decodes. */
    static const char key_hex[] =
        "0323354b2b0fa5bc837e0665777ba68f5ab328e6f054c928a90f84b2d2502ebf"
        "d3fb5a92d20647ef968ab4c377623d223d2e2172052e4f08c0cd9af567d080a3";
    /* RFC 7515 A.1.1: the payload octets, {"iss":"joe",CRLF "exp":1300819380,CRLF
     * "http://example.com/is_root":true} */
    static const char payload[] = "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n "
                                  "\"http://example.com/is_root\":true}";

    uint8_t key[64], want_key[64];
    assert_int_equal(b64_decode_str(jwk_k, key, sizeof(key)), 64);
    assert_int_equal(tu_unhex(key_hex, want_key, sizeof(want_key)), 64);
    assert_memory_equal(key, want_key, 64);

    size_t n = strlen(jws);
    uint8_t *g = tu_guarded(jws, n);
    uint8_t got[ET_TOKEN_PAYLOAD_MAX];
    size_t got_len = 0;
    assert_int_equal(et_token_verify_signature(key, sizeof(key), g, n, got, &got_len), ET_OK);
    assert_int_equal(got_len, strlen(payload));
    assert_memory_equal(got, payload, got_len);
    assert_int_equal(et_token_verify_signature(key, sizeof(key), g, n, NULL, NULL), ET_OK);

    et_token_claims c;
    assert_int_equal(et_token_verify(key, sizeof(key), g, n, 1300819000, 0, &c), MALFORMED);
    tu_guarded_free(g, n);

    /* One byte of the key different, or the last MAC byte changed: refused. */
    key[63] ^= 0x80;
    g = tu_guarded(jws, n);
    assert_int_equal(et_token_verify_signature(key, sizeof(key), g, n, NULL, NULL), SIGNATURE);
    tu_guarded_free(g, n);
    key[63] ^= 0x80;
    char tampered[sizeof(jws)];
    memcpy(tampered, jws, sizeof(jws));
    tampered[n - 2] = 'Y'; /* "...jXk" -> "...jYk": still canonical, another MAC */
    g = tu_guarded(tampered, n);
    assert_int_equal(et_token_verify_signature(key, sizeof(key), g, n, NULL, NULL), SIGNATURE);
    tu_guarded_free(g, n);
}

/* Every single-bit flip of every byte of a valid token is refused: either the text is no longer
 * canonical base64url, the header breaks, or the MAC no longer matches. A strict decoder is what
 * makes this hold for the last character of each part (non-zero unused bits). */
static void test_bit_flips(void **state)
{
    et_token_claims c, got;
    sample_claims(&c);
    char tok[ET_TOKEN_MAX + 1];
    int n = et_token_sign(key32, KEY32_LEN, &c, tok, sizeof(tok));
    assert_true(n > 0);
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = strchr(dot1 + 1, '.');
    size_t part_start[3] = {0, (size_t)(dot1 - tok) + 1, (size_t)(dot2 - tok) + 1};
    size_t part_end[3] = {(size_t)(dot1 - tok), (size_t)(dot2 - tok), (size_t)n};
    for (int part = 0; part < 3; part++) {
        int sig = 0, malformed = 0;
        for (size_t i = part_start[part]; i < part_end[part]; i++) {
            for (int bit = 0; bit < 8; bit++) {
                tok[i] ^= (char)(1 << bit);
                int rv = verify_str(key32, KEY32_LEN, tok, (size_t)n, 1700000000, 0, &got);
                tok[i] ^= (char)(1 << bit);
                assert_true(rv == SIGNATURE || rv == MALFORMED);
                sig += rv == SIGNATURE;
                malformed += rv == MALFORMED;
            }
        }
        /* Each part sees both outcomes: some flips stay in the alphabet and reach the MAC. */
        assert_true(sig > 0);
        assert_true(malformed > 0);
    }
    /* Flipping the dots themselves changes the part count. */
    for (int d = 1; d < 3; d++) {
        size_t i = part_start[d] - 1;
        for (int bit = 0; bit < 8; bit++) {
            tok[i] ^= (char)(1 << bit);
            assert_int_equal(verify_str(key32, KEY32_LEN, tok, (size_t)n, 1700000000, 0, &got),
                             MALFORMED);
            tok[i] ^= (char)(1 << bit);
        }
    }
    assert_int_equal(verify(tok, 1700000000, &got), ET_OK);
}

static void test_header_alg(void **state)
{
    char tok[ET_TOKEN_MAX + 1];
    et_token_claims got;
    static const struct {
        const char *header;
        int want;
    } cases[] = {
        {"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", ET_OK},
        {"{\"alg\":\"HS256\"}", ET_OK},
        {"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}", ET_OK},
        {"{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"at+jwt\"}", ET_OK},
        {"{\"alg\":\"none\",\"typ\":\"JWT\"}", SIGNATURE},
        {"{\"alg\":\"HS512\",\"typ\":\"JWT\"}", SIGNATURE},
        {"{\"alg\":\"RS256\"}", SIGNATURE},
        {"{\"alg\":\"hs256\"}", SIGNATURE},
        {"{\"alg\":\"HS256 \"}", SIGNATURE},
        {"{\"alg\":\"HS2560\"}", SIGNATURE},
        {"{\"alg\":\"\"}", SIGNATURE},
        {"{\"typ\":\"JWT\"}", MALFORMED},
        {"{}", MALFORMED},
        {"{\"alg\":null}", MALFORMED},
        {"{\"alg\":256}", MALFORMED},
        {"{\"alg\":[\"HS256\"]}", MALFORMED},
        {"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", MALFORMED},
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", MALFORMED},
        {"{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", MALFORMED},
        {"{\"alg\":\"HS256\"} x", MALFORMED},
        {"[\"HS256\"]", MALFORMED},
        {"\"HS256\"", MALFORMED},
        {"", MALFORMED},
        {"{\"alg\":\"HS\\u0000256\"}", MALFORMED},
        {"{\"alg\":\"HS256\",\"x\":\"\xff\"}", MALFORMED}, /* not UTF-8 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        make_token(cases[i].header, base_claims, tok, sizeof(tok));
        int rv = verify(tok, 1500, &got);
        if (rv != cases[i].want)
            fail_msg("header %s: got %d (%s), want %d", cases[i].header, rv, et_strerror(rv),
                     cases[i].want);
    }

    /* alg none with an empty signature, the classic forgery */
    char none[256];
    int n = et_token_b64_encode((const uint8_t *)"{\"alg\":\"none\"}", 14, none, sizeof(none));
    assert_true(n > 0);
    none[n++] = '.';
    int m = et_token_b64_encode((const uint8_t *)base_claims, strlen(base_claims), none + n,
                                sizeof(none) - (size_t)n - 2);
    assert_true(m > 0);
    n += m;
    none[n++] = '.';
    none[n] = '\0';
    assert_int_equal(verify(none, 1500, &got), SIGNATURE);
    /* and an HS256 header with an empty or short MAC */
    make_token(std_header, base_claims, tok, sizeof(tok));
    *(strrchr(tok, '.') + 1) = '\0';
    assert_int_equal(verify(tok, 1500, &got), SIGNATURE);
    make_token(std_header, base_claims, tok, sizeof(tok));
    tok[strlen(tok) - 3] = '\0'; /* 40 chars: 30 bytes */
    assert_int_equal(verify(tok, 1500, &got), SIGNATURE);

    /* a header over ET_TOKEN_HEADER_MAX bytes */
    char big[ET_TOKEN_HEADER_MAX + 64];
    snprintf(big, sizeof(big), "{\"alg\":\"HS256\",\"kid\":\"%0*d\"}", ET_TOKEN_HEADER_MAX, 0);
    make_token(big, base_claims, tok, sizeof(tok));
    assert_int_equal(verify(tok, 1500, &got), MALFORMED);
}

static void test_time(void **state)
{
    char tok[ET_TOKEN_MAX + 1];
    et_token_claims got;
    make_token(std_header,
               "{\"sub\":\"t\",\"iat\":400,\"nbf\":1000,\"exp\":2000,\"hosts\":[],\"tcp\":[]}", tok,
               sizeof(tok));
    size_t n = strlen(tok);
    static const struct {
        int64_t now, leeway;
        int want;
    } cases[] = {
        {999, 0, NOT_YET},
        {1000, 0, ET_OK},
        {1999, 0, ET_OK},
        {2000, 0, EXPIRED},
        {995, 5, ET_OK},
        {994, 5, NOT_YET},
        {2004, 5, ET_OK},
        {2005, 5, EXPIRED},
        {0, 0, NOT_YET},
        {-5, 0, NOT_YET},
        {INT64_MAX, 0, EXPIRED},
        {INT64_MIN, 0, NOT_YET},
        {1500, -1, ET_E_USAGE},
        {1500, ET_TOKEN_LEEWAY_MAX + 1, ET_E_USAGE},
        {2000 + ET_TOKEN_LEEWAY_MAX - 1, ET_TOKEN_LEEWAY_MAX, ET_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rv = verify_str(key32, KEY32_LEN, tok, n, cases[i].now, cases[i].leeway, &got);
        if (rv != cases[i].want)
            fail_msg("now %lld leeway %lld: got %d, want %d", (long long)cases[i].now,
                     (long long)cases[i].leeway, rv, cases[i].want);
        if (rv == ET_OK)
            assert_int_equal(got.exp, 2000);
        else
            assert_int_equal(got.exp, 0);
    }

    /* without nbf, any time before exp is fine; iat is informational */
    make_token(std_header, "{\"sub\":\"t\",\"iat\":5000,\"exp\":6000}", tok, sizeof(tok));
    assert_int_equal(verify(tok, 0, &got), ET_OK);
    assert_int_equal(got.has_nbf, 0);
    assert_int_equal(verify(tok, 6000, &got), EXPIRED);

    /* et_token_check_time on a hand-made struct */
    et_token_claims c;
    et_token_claims_init(&c);
    c.exp = 10;
    assert_int_equal(et_token_check_time(&c, 9, 0), ET_OK);
    assert_int_equal(et_token_check_time(&c, 10, 0), EXPIRED);
    c.exp = INT64_MAX; /* out of range: refused rather than overflowing */
    assert_int_equal(et_token_check_time(&c, 0, 60), ET_E_USAGE);
}

static void test_token_shape(void **state)
{
    et_token_claims got;
    char tok[ET_TOKEN_MAX + 1];
    make_token(std_header, base_claims, tok, sizeof(tok));
    size_t n = strlen(tok);
    assert_int_equal(verify(tok, 1500, &got), ET_OK);
    assert_string_equal(got.sub, "t");

    /* Over ET_TOKEN_MAX: refused before any work, even when otherwise fine. */
    char *big = malloc(ET_TOKEN_MAX + 2);
    assert_non_null(big);
    memset(big, 'A', ET_TOKEN_MAX + 1);
    big[ET_TOKEN_MAX + 1] = '\0';
    assert_int_equal(verify(big, 1500, &got), MALFORMED);
    memcpy(big, tok, n + 1);
    assert_int_equal(verify_str(key32, KEY32_LEN, big, ET_TOKEN_MAX + 1, 1500, 0, &got), MALFORMED);
    free(big);
    /* empty */
    assert_int_equal(verify_str(key32, KEY32_LEN, "", 0, 1500, 0, &got), MALFORMED);

    /* part counts */
    static const char *const shapes[] = {
        "abc", "abc.def", "abc.def.ghi.jkl", "..", "...", ".eyJ9.", "eyJ9..", "a.b.c.", ".a.b",
        " ",   ".",
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        int rv = verify(shapes[i], 1500, &got);
        if (rv != MALFORMED)
            fail_msg("shape '%s': got %d", shapes[i], rv);
    }
    /* a fourth part after a valid token */
    memcpy(tok + n, ".AA", 4);
    assert_int_equal(verify(tok, 1500, &got), MALFORMED);
    tok[n] = '\0';
    /* whitespace and NUL around a valid token */
    char padded[ET_TOKEN_MAX + 2];
    snprintf(padded, sizeof(padded), "%s\n", tok);
    assert_int_equal(verify(padded, 1500, &got), MALFORMED);
    snprintf(padded, sizeof(padded), " %s", tok);
    assert_int_equal(verify(padded, 1500, &got), MALFORMED);
    assert_int_equal(verify_str(key32, KEY32_LEN, tok, n + 1, 1500, 0, &got), MALFORMED);

    /* bad keys */
    assert_int_equal(verify_str(key32, 31, tok, n, 1500, 0, &got), ET_E_USAGE);
    assert_int_equal(verify_str(NULL, 32, tok, n, 1500, 0, &got), ET_E_USAGE);
}

/* Inserts |ins| at offset |at| of |tok| (the token text) into |out|. */
static void splice(const char *tok, size_t at, const char *ins, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s%s%s", (int)at, tok, ins, tok + at);
}

static void test_token_base64(void **state)
{
    et_token_claims got;
    char tok[ET_TOKEN_MAX + 1], bad[ET_TOKEN_MAX + 16];
    /* header of 27 bytes (36 chars, no remainder); claims chosen to end in a partial group */
    make_token(std_header, base_claims, tok, sizeof(tok));
    size_t dot1 = (size_t)(strchr(tok, '.') - tok);
    size_t dot2 = (size_t)(strrchr(tok, '.') - tok);
    size_t n = strlen(tok);
    assert_int_equal(verify(tok, 1500, &got), ET_OK);
    assert_true((dot2 - dot1 - 1) % 4 != 0); /* the claims part has a short final group */

    /* padding at the end of each part */
    size_t ends[3] = {dot1, dot2, n};
    for (int p = 0; p < 3; p++) {
        splice(tok, ends[p], "=", bad, sizeof(bad));
        assert_int_equal(verify(bad, 1500, &got), MALFORMED);
        splice(tok, ends[p], "==", bad, sizeof(bad));
        assert_int_equal(verify(bad, 1500, &got), MALFORMED);
    }
    /* standard-alphabet and foreign bytes in each part */
    static const char *const foreign[] = {"+", "/", " ", "\t", "\n", "=", "\x80", "\xff", "%"};
    size_t starts[3] = {0, dot1 + 1, dot2 + 1};
    for (int p = 0; p < 3; p++) {
        for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
            memcpy(bad, tok, n + 1);
            bad[starts[p] + 2] = foreign[i][0];
            assert_int_equal(verify(bad, 1500, &got), MALFORMED);
        }
    }
    /* a NUL inside the token */
    memcpy(bad, tok, n + 1);
    bad[dot1 + 3] = '\0';
    assert_int_equal(verify_str(key32, KEY32_LEN, bad, n, 1500, 0, &got), MALFORMED);
    /* a part of length 1 mod 4 */
    splice(tok, dot1, "A", bad, sizeof(bad));
    assert_int_equal(verify(bad, 1500, &got), MALFORMED);
    /* The signature's last character carries 2 unused bits (32 bytes = 10 groups + 2 bytes):
     * the next character of the alphabet differs only there. */
    memcpy(bad, tok, n + 1);
    size_t last = n - 1;
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t idx = (size_t)(strchr(alpha, bad[last]) - alpha);
    assert_int_equal(idx & 3, 0);
    bad[last] = alpha[idx + 1];
    assert_int_equal(verify(bad, 1500, &got), MALFORMED);
}

static void test_b64_codec(void **state)
{
    /* RFC 4648 §10 vectors, unpadded */
    static const struct {
        const char *plain, *enc;
    } v[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
    };
    char enc[32];
    uint8_t dec[32];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t pn = strlen(v[i].plain);
        int n = et_token_b64_encode((const uint8_t *)v[i].plain, pn, enc, sizeof(enc));
        assert_int_equal(n, (int)strlen(v[i].enc));
        assert_memory_equal(enc, v[i].enc, (size_t)n);
        assert_int_equal(b64_decode_str(v[i].enc, dec, sizeof(dec)), (int)pn);
        assert_memory_equal(dec, v[i].plain, pn);
    }
    /* the URL-safe alphabet's two special characters */
    static const uint8_t hi[] = {0xfb, 0xff};
    assert_int_equal(et_token_b64_encode(hi, 2, enc, sizeof(enc)), 3);
    assert_memory_equal(enc, "-_8", 3);
    assert_int_equal(b64_decode_str("-_8", dec, sizeof(dec)), 2);
    assert_memory_equal(dec, hi, 2);

    /* all 256 byte values round trip */
    uint8_t all[256];
    char all_enc[400];
    uint8_t all_dec[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    int n = et_token_b64_encode(all, sizeof(all), all_enc, sizeof(all_enc));
    assert_int_equal(n, 342);
    all_enc[n] = '\0';
    assert_int_equal(b64_decode_str(all_enc, all_dec, sizeof(all_dec)), 256);
    assert_memory_equal(all, all_dec, 256);

    /* strictness */
    static const char *const bad[] = {
        "Zg==", "Zg=",   "Zm8=",  "Z",      "Zm9vY", "Zh",    "Zm9",  "Zm+v",
        "Zm/v", "Zm9v ", " Zm9v", "Zm\n9v", "Zm.v",  "Zm9v=", "====", "Zm9v\x80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rv = b64_decode_str(bad[i], dec, sizeof(dec));
        if (rv != MALFORMED)
            fail_msg("'%s' decoded to %d", bad[i], rv);
    }
    /* output space */
    assert_int_equal(b64_decode_str("Zm9vYmFy", dec, 5), ET_E_USAGE);
    assert_int_equal(b64_decode_str("Zm9vYmFy", dec, 6), 6);
    assert_int_equal(et_token_b64_encode((const uint8_t *)"foobar", 6, enc, 7), ET_E_USAGE);
    assert_int_equal(et_token_b64_encode((const uint8_t *)"foobar", 6, enc, 8), 8);
}

/* --- claims ------------------------------------------------------------------------------- */

static void test_claims_parse_ok(void **state)
{
    et_token_claims c;
    assert_int_equal(parse_claims("{\"sub\":\"Photo_s.1-x\",\"hosts\":[\"a.example.com\","
                                  "\"*.b.example.com\",\"localhost\"],\"tcp\":[1,65535,22],"
                                  "\"iat\":0,\"exp\":253402300799,\"nbf\":5,\"jti\":\"id-1:x\","
                                  "\"aud\":[\"ignored\",{\"x\":1}],\"extra\":null}",
                                  &c),
                     ET_OK);
    assert_string_equal(c.sub, "Photo_s.1-x");
    assert_int_equal(c.nhosts, 3);
    assert_string_equal(et_token_host(&c, 0), "a.example.com");
    assert_string_equal(et_token_host(&c, 1), "*.b.example.com");
    assert_string_equal(et_token_host(&c, 2), "localhost");
    assert_null(et_token_host(&c, 3));
    assert_int_equal(c.nports, 3);
    assert_int_equal(c.ports[1], 65535);
    assert_int_equal(c.iat, 0);
    assert_int_equal(c.exp, ET_TOKEN_TIME_MAX);
    assert_int_equal(c.has_nbf, 1);
    assert_int_equal(c.nbf, 5);
    assert_string_equal(c.jti, "id-1:x");

    /* hosts and tcp may be absent or empty; whitespace is JSON's business */
    assert_int_equal(parse_claims(" {\"exp\":2,\"iat\":1,\"sub\":\"x\"} ", &c), ET_OK);
    assert_int_equal(c.nhosts, 0);
    assert_int_equal(c.nports, 0);
    assert_int_equal(c.has_nbf, 0);
    assert_string_equal(c.jti, "");
    assert_int_equal(
        parse_claims("{\"exp\":2,\"iat\":1,\"sub\":\"x\",\"hosts\":[],\"tcp\":[]}", &c), ET_OK);
    /* escapes are decoded before checks */
    assert_int_equal(parse_claims("{\"exp\":2,\"iat\":1,\"sub\":\"\\u0078\"}", &c), ET_OK);
    assert_string_equal(c.sub, "x");
}

static void test_claims_parse_bad(void **state)
{
    static const char *const bad[] = {
        /* not an object, not JSON, trailing data */
        "[]",
        "\"x\"",
        "1",
        "",
        "{",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2}}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2} {}",
        /* duplicates */
        "{\"sub\":\"x\",\"sub\":\"y\",\"iat\":1,\"exp\":2}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"exp\":99999}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"u\":{\"a\":1,\"a\":2}}",
        /* sub */
        "{\"iat\":1,\"exp\":2}",
        "{\"sub\":1,\"iat\":1,\"exp\":2}",
        "{\"sub\":null,\"iat\":1,\"exp\":2}",
        "{\"sub\":\"\",\"iat\":1,\"exp\":2}",
        "{\"sub\":\"a b\",\"iat\":1,\"exp\":2}",
        "{\"sub\":\"a/b\",\"iat\":1,\"exp\":2}",
        "{\"sub\":\"\\u00e9\",\"iat\":1,\"exp\":2}",
        "{\"sub\":[\"x\"],\"iat\":1,\"exp\":2}",
        "{\"sub\":\"x\\u0000y\",\"iat\":1,\"exp\":2}",
        "{\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123"
        "4\",\"iat\":1,\"exp\":2}",
        /* times */
        "{\"sub\":\"x\",\"exp\":2}",
        "{\"sub\":\"x\",\"iat\":1}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":\"2\"}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2.0}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2e3}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":-1}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":253402300800}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":99999999999999999999999}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":null}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":true}",
        "{\"sub\":\"x\",\"iat\":1.5,\"exp\":2}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"nbf\":\"1\"}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"nbf\":-3}",
        /* hosts */
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":\"a.com\"}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":null}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[1]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[\"A.com\"]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[\"a..com\"]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[\"a.com\",[\"b.com\"]]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[\"*\"]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[\"a_b.com\"]}",
        /* tcp */
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":22}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":[0]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":[65536]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":[-22]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":[\"22\"]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":[22.0]}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"tcp\":[true]}",
        /* jti */
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"jti\":5}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"jti\":\"a b\"}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"jti\":\"a\\nb\"}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"jti\":\"a\\\"b\"}",
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"jti\":\"0123456789012345678901234567890123456789"
        "01234567890123456789012345\"}",
        /* not UTF-8 */
        "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"z\":\"\xc3\x28\"}",
    };
    et_token_claims c;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rv = parse_claims(bad[i], &c);
        if (rv != MALFORMED)
            fail_msg("claims %s: got %d", bad[i], rv);
        assert_string_equal(c.sub, "");
        assert_int_equal(c.nhosts, 0);
    }

    /* a jti of exactly 64 is fine */
    assert_int_equal(parse_claims("{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"jti\":\"012345678901234567"
                                  "8901234567890123456789012345678901234567890123\"}",
                                  &c),
                     ET_OK);
    assert_int_equal(strlen(c.jti), 64);

    /* over ET_TOKEN_PAYLOAD_MAX bytes */
    char *big = malloc(ET_TOKEN_PAYLOAD_MAX + 64);
    assert_non_null(big);
    int n = snprintf(big, ET_TOKEN_PAYLOAD_MAX + 64, "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"p\":\"");
    memset(big + n, 'a', (size_t)(ET_TOKEN_PAYLOAD_MAX - n));
    strcpy(big + ET_TOKEN_PAYLOAD_MAX - 2, "\"}");
    assert_int_equal(strlen(big), ET_TOKEN_PAYLOAD_MAX);
    assert_int_equal(parse_claims(big, &c), ET_OK);
    strcpy(big + ET_TOKEN_PAYLOAD_MAX - 2, "a\"}");
    assert_int_equal(parse_claims(big, &c), MALFORMED);
    free(big);
}

/* Duplicate keys and wrong types also fail through et_token_verify with a valid MAC. */
static void test_claims_through_verify(void **state)
{
    char tok[ET_TOKEN_MAX + 1];
    et_token_claims got;
    make_token(std_header, "{\"sub\":\"a\",\"sub\":\"b\",\"iat\":1000,\"exp\":2000}", tok,
               sizeof(tok));
    assert_int_equal(verify(tok, 1500, &got), MALFORMED);
    make_token(std_header, "{\"sub\":\"a\",\"iat\":1000,\"exp\":\"2000\"}", tok, sizeof(tok));
    assert_int_equal(verify(tok, 1500, &got), MALFORMED);
    make_token(std_header, "{\"sub\":\"a\",\"iat\":1000,\"exp\":2000,\"hosts\":[\"*.*.a\"]}", tok,
               sizeof(tok));
    assert_int_equal(verify(tok, 1500, &got), MALFORMED);
    /* claims that fail their own checks still get a signature check first */
    make_token(std_header, "not json", tok, sizeof(tok));
    assert_int_equal(verify(tok, 1500, &got), ET_E_PROTO(ET_WE_AUTH_MALFORMED));
    tok[strlen(tok) - 1] = tok[strlen(tok) - 1] == 'A' ? 'Q' : 'A';
    assert_int_equal(verify(tok, 1500, &got), SIGNATURE);
}

static void test_claims_limits(void **state)
{
    /* 64 hosts and 64 ports are fine; 65 are not */
    char json[4096];
    for (int extra = 0; extra <= 1; extra++) {
        size_t pos = (size_t)snprintf(json, sizeof(json),
                                      "{\"sub\":\"x\",\"iat\":1,\"exp\":2,"
                                      "\"hosts\":[");
        for (int i = 0; i < ET_TOKEN_HOSTS_MAX + extra; i++)
            pos +=
                (size_t)snprintf(json + pos, sizeof(json) - pos, "%s\"h%d.io\"", i ? "," : "", i);
        pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "],\"tcp\":[");
        for (int i = 0; i < ET_TOKEN_PORTS_MAX; i++)
            pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "%s%d", i ? "," : "", i + 1);
        snprintf(json + pos, sizeof(json) - pos, "]}");
        et_token_claims c;
        int rv = parse_claims(json, &c);
        assert_int_equal(rv, extra ? MALFORMED : ET_OK);
        if (!extra) {
            assert_int_equal(c.nhosts, 64);
            assert_string_equal(et_token_host(&c, 63), "h63.io");
            assert_int_equal(c.nports, 64);
            assert_int_equal(c.ports[63], 64);
        }
    }
    for (int extra = 0; extra <= 1; extra++) {
        size_t pos = (size_t)snprintf(json, sizeof(json),
                                      "{\"sub\":\"x\",\"iat\":1,\"exp\":2,"
                                      "\"tcp\":[");
        for (int i = 0; i < ET_TOKEN_PORTS_MAX + extra; i++)
            pos += (size_t)snprintf(json + pos, sizeof(json) - pos, "%s%d", i ? "," : "", 1000 + i);
        snprintf(json + pos, sizeof(json) - pos, "]}");
        et_token_claims c;
        assert_int_equal(parse_claims(json, &c), extra ? MALFORMED : ET_OK);
    }

    /* the builder's limits */
    et_token_claims c;
    et_token_claims_init(&c);
    for (int i = 0; i < ET_TOKEN_HOSTS_MAX; i++) {
        char h[16];
        int n = snprintf(h, sizeof(h), "h%d.io", i);
        assert_int_equal(et_token_claims_add_host(&c, h, (size_t)n), ET_OK);
    }
    assert_int_equal(et_token_claims_add_host(&c, "x.io", 4), ET_E_LIMIT);
    for (uint32_t p = 1; p <= ET_TOKEN_PORTS_MAX; p++)
        assert_int_equal(et_token_claims_add_port(&c, p), ET_OK);
    assert_int_equal(et_token_claims_add_port(&c, 100), ET_E_LIMIT);
}

static void test_builder(void **state)
{
    et_token_claims c;
    et_token_claims_init(&c);
    assert_int_equal(et_token_claims_set_sub(&c, "", 0), ET_E_CONFIG);
    assert_int_equal(et_token_claims_set_sub(&c, "a b", 3), ET_E_CONFIG);
    assert_int_equal(et_token_claims_set_sub(&c, "a\0b", 3), ET_E_CONFIG);
    char name[ET_TUNNEL_NAME_MAX + 1];
    memset(name, 'n', sizeof(name));
    assert_int_equal(et_token_claims_set_sub(&c, name, sizeof(name)), ET_E_CONFIG);
    assert_int_equal(et_token_claims_set_sub(&c, name, ET_TUNNEL_NAME_MAX), ET_OK);
    assert_int_equal(strlen(c.sub), ET_TUNNEL_NAME_MAX);
    assert_int_equal(et_token_claims_set_sub(&c, "photos-2", 8), ET_OK);
    assert_string_equal(c.sub, "photos-2");

    /* hosts are lowercased by the builder, then checked */
    assert_int_equal(et_token_claims_add_host(&c, "Photos.Example.COM", 18), ET_OK);
    assert_string_equal(et_token_host(&c, 0), "photos.example.com");
    assert_int_equal(et_token_claims_add_host(&c, "bad host", 8), ET_E_CONFIG);
    assert_int_equal(et_token_claims_add_host(&c, "", 0), ET_E_CONFIG);
    assert_int_equal(et_token_claims_add_host(&c, "a.com\0", 6), ET_E_CONFIG);
    assert_int_equal(c.nhosts, 1);

    assert_int_equal(et_token_claims_add_port(&c, 0), ET_E_CONFIG);
    assert_int_equal(et_token_claims_add_port(&c, 65536), ET_E_CONFIG);
    assert_int_equal(et_token_claims_add_port(&c, 65535), ET_OK);

    assert_int_equal(et_token_claims_set_jti(&c, "a b", 3), ET_E_CONFIG);
    assert_int_equal(et_token_claims_set_jti(&c, "x\\", 2), ET_E_CONFIG);
    assert_int_equal(et_token_claims_set_jti(&c, "abc", 3), ET_OK);
    assert_int_equal(et_token_claims_set_jti(&c, NULL, 0), ET_OK);
    assert_string_equal(c.jti, "");
}

static void test_host_syntax(void **state)
{
    static const char *const good[] = {
        "a",           "localhost",
        "example.com", "*.example.com",
        "*.com",       "xn--bcher-kva.example",
        "a-b.c0",      "0.0.0.0",
        "a1-2-3.b",    "123456789012345678901234567890123456789012345678901234567890123.com",
    };
    static const char *const bad[] = {
        "",
        "Example.com",
        "a..b",
        ".a",
        "a.",
        "*",
        "*.",
        "**.a",
        "*a.com",
        "a.*.com",
        "*.*.a",
        "-a.com",
        "a-.com",
        "a.-b",
        "a_b.com",
        "a b.com",
        "a:80",
        "a/b",
        "1234567890123456789012345678901234567890123456789012345678901234.com",
    };
    et_token_claims c;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        et_token_claims_init(&c);
        if (et_token_claims_add_host(&c, good[i], strlen(good[i])) != ET_OK)
            fail_msg("good host '%s' refused", good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[512];
        snprintf(json, sizeof(json), "{\"sub\":\"x\",\"iat\":1,\"exp\":2,\"hosts\":[\"%s\"]}",
                 bad[i]);
        if (parse_claims(json, &c) != MALFORMED)
            fail_msg("bad host '%s' accepted", bad[i]);
        assert_false(et_host_match(bad[i], "a.com", 5));
    }

    /* length: 253 accepted, 254 refused (labels of 63 keep every label legal) */
    char name[ET_HOST_MAX + 2];
    memset(name, 'a', sizeof(name));
    for (size_t i = 63; i < sizeof(name); i += 64)
        name[i] = '.';
    name[ET_HOST_MAX] = '\0'; /* 253 bytes: 3 labels of 63, dots, and 61 */
    assert_int_equal(strlen(name), 253);
    et_token_claims_init(&c);
    assert_int_equal(et_token_claims_add_host(&c, name, 253), ET_OK);
    name[ET_HOST_MAX] = 'a';
    name[ET_HOST_MAX + 1] = '\0';
    assert_int_equal(et_token_claims_add_host(&c, name, 254), ET_E_CONFIG);
    /* a wildcard counts toward the 253 */
    char wild[ET_HOST_MAX + 3];
    snprintf(wild, sizeof(wild), "*.%.*s", ET_HOST_MAX - 2, name + 2);
    assert_int_equal(strlen(wild), 253);
    assert_int_equal(et_token_claims_add_host(&c, wild, 253), ET_OK);
    snprintf(wild, sizeof(wild), "*.%.*s", ET_HOST_MAX - 1, name + 1);
    assert_int_equal(et_token_claims_add_host(&c, wild, 254), ET_E_CONFIG);
}

static void test_host_match(void **state)
{
    static const struct {
        const char *pattern, *host;
        bool want;
    } cases[] = {
        {"example.com", "example.com", true},
        {"example.com", "EXAMPLE.com", true},
        {"example.com", "www.example.com", false},
        {"example.com", "example.co", false},
        {"example.com", "example.comm", false},
        {"example.com", "xexample.com", false},
        {"example.com", "", false},
        {"*.example.com", "a.example.com", true},
        {"*.example.com", "A-1_b.Example.COM", true},
        {"*.example.com", "a.b.example.com", false}, /* one label only, like TLS */
        {"*.example.com", "example.com", false},
        {"*.example.com", ".example.com", false},
        {"*.example.com", "aexample.com", false},
        {"*.example.com", "a.example.com.", false},
        {"*.example.com", "a.example.org", false},
        {"*.example.com", "*.example.com", false},
        {"*.example.com", "a b.example.com", false},
        {"*.example.com", "a:1.example.com", false},
        {"*.example.com", "a.example.co", false},
        {"*.example.com",
         "1234567890123456789012345678901234567890123456789012345678901234.example.com", false},
        {"*.example.com",
         "123456789012345678901234567890123456789012345678901234567890123.example.com", true},
        {"*.com", "example.com", true},
        {"*.com", "com", false},
        {"localhost", "localhost", true},
        {"Example.com", "example.com", false}, /* patterns are lowercase; others match nothing */
        {"", "", false},
        {"a..b", "a..b", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].host);
        uint8_t *g = tu_guarded(cases[i].host, n);
        bool got = et_host_match(cases[i].pattern, (const char *)g, n);
        tu_guarded_free(g, n);
        if (got != cases[i].want)
            fail_msg("et_host_match(%s, %s) = %d", cases[i].pattern, cases[i].host, got);
    }
    /* the host is a length-delimited view, not a C string */
    assert_true(et_host_match("a.io", "a.io:8080", 4));
    assert_false(et_host_match(NULL, "a.io", 4));
    assert_false(et_host_match("a.io", NULL, 4));

    /* et_token_allows_host / et_token_allows_port over several entries */
    et_token_claims c;
    et_token_claims_init(&c);
    assert_false(et_token_allows_host(&c, "a.io", 4));
    assert_false(et_token_allows_port(&c, 22));
    assert_int_equal(et_token_claims_add_host(&c, "a.io", 4), ET_OK);
    assert_int_equal(et_token_claims_add_host(&c, "*.b.io", 6), ET_OK);
    assert_int_equal(et_token_claims_add_port(&c, 22), ET_OK);
    assert_int_equal(et_token_claims_add_port(&c, 20000), ET_OK);
    assert_true(et_token_allows_host(&c, "a.io", 4));
    assert_true(et_token_allows_host(&c, "x.b.io", 6));
    assert_false(et_token_allows_host(&c, "b.io", 4));
    assert_false(et_token_allows_host(&c, "x.a.io", 6));
    assert_true(et_token_allows_port(&c, 20000));
    assert_false(et_token_allows_port(&c, 20001));
}

static void test_duration(void **state)
{
    static const struct {
        const char *s;
        int64_t want; /* -1: refused */
    } cases[] = {
        {"90s", 90},
        {"15m", 900},
        {"1h", 3600},
        {"30d", 2592000},
        {"1s", 1},
        {"007m", 420},
        {"2930000d", INT64_C(253152000000)},
        {"253402300799s", ET_TOKEN_TIME_MAX},
        {"253402300800s", -1},
        {"2932897d", -1},
        {"99999999999999999999s", -1},
        {"9223372036854775807s", -1},
        {"9223372036854775808s", -1},
        {"", -1},
        {"s", -1},
        {"0s", -1},
        {"00d", -1},
        {"-5m", -1},
        {"+5m", -1},
        {" 5m", -1},
        {"5 m", -1},
        {"5m ", -1},
        {"5", -1},
        {"5w", -1},
        {"5M", -1},
        {"5ms", -1},
        {"1h30m", -1},
        {"1.5h", -1},
        {"0x10s", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = 12345;
        int rv = et_duration_parse(cases[i].s, &got);
        if (cases[i].want < 0) {
            if (rv != ET_E_CONFIG || got != 12345)
                fail_msg("'%s' accepted (%d, %lld)", cases[i].s, rv, (long long)got);
        } else if (rv != ET_OK || got != cases[i].want) {
            fail_msg("'%s': %d, %lld", cases[i].s, rv, (long long)got);
        }
    }
    int64_t got;
    assert_int_equal(et_duration_parse(NULL, &got), ET_E_CONFIG);
}

static void test_key_normalize(void **state)
{
    uint8_t buf[ET_TOKEN_KEY_MAX + 4];
    memset(buf, 'k', sizeof(buf));
    size_t n = 0;
    static const struct {
        size_t len;
        const char *tail; /* replaces the last bytes */
        int want_rv;
        size_t want_len;
    } cases[] = {
        {32, "", ET_OK, 32},
        {33, "\n", ET_OK, 32},
        {34, "\r\n", ET_OK, 32},
        {34, "\n\n", ET_OK, 33}, /* only one newline goes */
        {33, "\r", ET_OK, 33},   /* a lone CR stays */
        {32, "\n", ET_E_CONFIG, 0},
        {33, "\r\n", ET_E_CONFIG, 0},
        {31, "", ET_E_CONFIG, 0},
        {0, "", ET_E_CONFIG, 0},
        {65, "\n", ET_OK, 64},
        {ET_TOKEN_KEY_MAX, "", ET_OK, ET_TOKEN_KEY_MAX},
        {ET_TOKEN_KEY_MAX + 1, "\n", ET_OK, ET_TOKEN_KEY_MAX},
        {ET_TOKEN_KEY_MAX + 2, "\r\n", ET_OK, ET_TOKEN_KEY_MAX},
        {ET_TOKEN_KEY_MAX + 1, "", ET_E_CONFIG, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(buf, 'k', sizeof(buf));
        size_t tl = strlen(cases[i].tail);
        memcpy(buf + cases[i].len - tl, cases[i].tail, tl);
        uint8_t *g = tu_guarded(buf, cases[i].len);
        n = 0;
        int rv = et_token_key_normalize(g, cases[i].len, &n);
        tu_guarded_free(g, cases[i].len);
        if (rv != cases[i].want_rv || (rv == ET_OK && n != cases[i].want_len))
            fail_msg("case %zu: rv %d len %zu", i, rv, n);
    }

    /* a normalized key file verifies what the plain key signed */
    uint8_t file[KEY32_LEN + 1];
    memcpy(file, key32, KEY32_LEN);
    file[KEY32_LEN] = '\n';
    assert_int_equal(et_token_key_normalize(file, sizeof(file), &n), ET_OK);
    et_token_claims c, got;
    sample_claims(&c);
    char tok[ET_TOKEN_MAX + 1];
    int len = et_token_sign(file, n, &c, tok, sizeof(tok));
    assert_true(len > 0);
    assert_int_equal(verify(tok, 1700000000, &got), ET_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_sign_known_vector),
        cmocka_unit_test(test_sign_errors),
        cmocka_unit_test(test_rfc7515_a1),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_header_alg),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_token_shape),
        cmocka_unit_test(test_token_base64),
        cmocka_unit_test(test_b64_codec),
        cmocka_unit_test(test_claims_parse_ok),
        cmocka_unit_test(test_claims_parse_bad),
        cmocka_unit_test(test_claims_through_verify),
        cmocka_unit_test(test_claims_limits),
        cmocka_unit_test(test_builder),
        cmocka_unit_test(test_host_syntax),
        cmocka_unit_test(test_host_match),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_key_normalize),
    };
    return TU_RUN("token", tests);
}
