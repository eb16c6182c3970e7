/* fuzz/token.c: the token module (et/token.h) under libFuzzer and AFL++.
 *
 * Reaches: et_token_verify, et_token_verify_signature (token splitting, et_token_b64_decode,
 * the header parser, the MAC check), et_token_claims_parse, et_token_check_time, et_token_sign,
 * et_token_b64_encode, et_host_match, et_token_allows_host, et_token_allows_port,
 * et_duration_parse and et_token_key_normalize.
 *
 * The first byte picks a mode (byte % 6), the rest is that mode's input:
 *   0  a token for et_token_verify as is (seeds are tokens signed with fuzz_key, so mutations
 *      start from the accepting path and hit every refusal on the way);
 *   1  "header64.claims64": the harness appends the right MAC under fuzz_key, so mutated
 *      headers and claims get past the signature and reach the header, claims and time checks;
 *   2  claims JSON for et_token_claims_parse (unauthenticated, as its header says);
 *   3  base64url text: et_token_b64_decode, and the input as raw bytes to et_token_b64_encode;
 *   4  "pattern\0host" for et_host_match and the claims helpers;
 *   5  a duration for et_duration_parse, and the same bytes as a key file.
 * Every accepted claims set is signed again and verified again, and the harness aborts if that
 * round trip changes any claim (decode -> encode -> decode, like BoringSSL's der_roundtrip);
 * an accepted base64url text must encode back to itself byte for byte (the decoder is strict).
 *
 * Deterministic: a fixed key, a fixed clock and jansson's hash seed fixed before first use. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>

#include "et/token.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_key[] = "fuzzing-key-0123456789abcdefghij";
#define FUZZ_KEY_LEN 32
#define NOW          INT64_C(1700000000)
#define LEEWAY       60

static bool same_claims(const et_token_claims *a, const et_token_claims *b)
{
    if (strcmp(a->sub, b->sub) != 0 || strcmp(a->jti, b->jti) != 0 || a->iat != b->iat ||
        a->exp != b->exp || a->has_nbf != b->has_nbf || (a->has_nbf && a->nbf != b->nbf) ||
        a->nhosts != b->nhosts || a->nports != b->nports)
        return false;
    for (size_t i = 0; i < a->nhosts; i++) {
        if (strcmp(et_token_host(a, i), et_token_host(b, i)) != 0)
            return false;
    }
    return memcmp(a->ports, b->ports, a->nports * sizeof(a->ports[0])) == 0;
}

/* round_trip signs accepted claims |c| and checks that verifying them gives |c| back. */
static void round_trip(const et_token_claims *c)
{
    char tok[ET_TOKEN_MAX + 1];
    int n = et_token_sign(fuzz_key, FUZZ_KEY_LEN, c, tok, sizeof(tok));
    if (n == ET_E_LIMIT)
        return; /* accepted claims whose canonical form is longer than a token may be */
    if (n <= 0)
        abort();
    uint8_t payload[ET_TOKEN_PAYLOAD_MAX];
    size_t plen = 0;
    if (et_token_verify_signature(fuzz_key, FUZZ_KEY_LEN, (const uint8_t *)tok, (size_t)n, payload,
                                  &plen) != ET_OK)
        abort();
    et_token_claims again;
    if (et_token_claims_parse(payload, plen, &again) != ET_OK || !same_claims(c, &again))
        abort();
    /* The canonical encoding is a fixed point. */
    char tok2[ET_TOKEN_MAX + 1];
    if (et_token_sign(fuzz_key, FUZZ_KEY_LEN, &again, tok2, sizeof(tok2)) != n ||
        memcmp(tok, tok2, (size_t)n) != 0)
        abort();
}

static void check_claims_helpers(const et_token_claims *c)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        const char *h = et_token_host(c, i);
        if (h[0] != '*' && !et_token_allows_host(c, h, strlen(h)))
            abort(); /* every exact pattern admits itself */
    }
    for (size_t i = 0; i < c->nports; i++) {
        if (!et_token_allows_port(c, c->ports[i]))
            abort();
    }
}

static void fuzz_verify(const uint8_t *tok, size_t n)
{
    et_token_claims c;
    int rv = et_token_verify(fuzz_key, FUZZ_KEY_LEN, tok, n, NOW, LEEWAY, &c);
    if (rv == ET_OK) {
        if (et_token_check_time(&c, NOW, LEEWAY) != ET_OK)
            abort();
        check_claims_helpers(&c);
        round_trip(&c);
    } else if (c.sub[0] != '\0' || c.nhosts != 0 || c.nports != 0) {
        abort(); /* a refusal leaves the zero state */
    }
}

static void fuzz_fix_mac(const uint8_t *in, size_t n)
{
    uint8_t tok[ET_TOKEN_MAX + 64];
    if (n > ET_TOKEN_MAX)
        return;
    memcpy(tok, in, n);
    uint8_t mac[32];
    unsigned maclen = 0;
    if (HMAC(EVP_sha256(), fuzz_key, FUZZ_KEY_LEN, in, n, mac, &maclen) == NULL)
        abort();
    tok[n] = '.';
    int m = et_token_b64_encode(mac, sizeof(mac), (char *)tok + n + 1, sizeof(tok) - n - 1);
    if (m != 43)
        abort();
    fuzz_verify(tok, n + 1 + (size_t)m);
}

static void fuzz_claims(const uint8_t *in, size_t n)
{
    et_token_claims c;
    if (et_token_claims_parse(in, n, &c) != ET_OK)
        return;
    check_claims_helpers(&c);
    int rv = et_token_check_time(&c, NOW, LEEWAY);
    if (rv != ET_OK && rv != ET_E_PROTO(ET_WE_AUTH_EXPIRED) && rv != ET_E_PROTO(ET_WE_AUTH_NOT_YET))
        abort();
    round_trip(&c);
}

static void fuzz_b64(const uint8_t *in, size_t n)
{
    static uint8_t dec[ET_TOKEN_MAX * 3];
    static char enc[ET_TOKEN_MAX * 4 + 8];
    if (n > ET_TOKEN_MAX * 2)
        return;
    int d = et_token_b64_decode(in, n, dec, sizeof(dec));
    if (d >= 0) {
        int e = et_token_b64_encode(dec, (size_t)d, enc, sizeof(enc));
        if (e < 0 || (size_t)e != n || memcmp(enc, in, n) != 0)
            abort();
    } else if (d != ET_E_PROTO(ET_WE_AUTH_MALFORMED)) {
        abort();
    }
    int e = et_token_b64_encode(in, n, enc, sizeof(enc));
    if (e < 0)
        abort();
    d = et_token_b64_decode((const uint8_t *)enc, (size_t)e, dec, sizeof(dec));
    if (d < 0 || (size_t)d != n || memcmp(dec, in, n) != 0)
        abort();
}

static void fuzz_host(const uint8_t *in, size_t n)
{
    char pattern[ET_HOST_MAX + 8];
    const uint8_t *nul = memchr(in, '\0', n);
    size_t plen = nul ? (size_t)(nul - in) : n;
    if (plen >= sizeof(pattern))
        return;
    memcpy(pattern, in, plen);
    pattern[plen] = '\0';
    const char *host = nul ? (const char *)nul + 1 : "";
    size_t hlen = nul ? n - plen - 1 : 0;

    bool m = et_host_match(pattern, host, hlen);
    if (m && pattern[0] != '*' && hlen != plen)
        abort();
    /* Matching ignores ASCII case on the host side. */
    if (hlen <= ET_HOST_MAX) {
        char upper[ET_HOST_MAX];
        for (size_t i = 0; i < hlen; i++)
            upper[i] = host[i] >= 'a' && host[i] <= 'z' ? (char)(host[i] - 32) : host[i];
        if (et_host_match(pattern, upper, hlen) != m)
            abort();
    }
    /* The builder agrees with the matcher about which patterns are valid. */
    et_token_claims c;
    et_token_claims_init(&c);
    int rv = et_token_claims_add_host(&c, pattern, plen);
    if (rv == ET_OK) {
        if (et_token_allows_host(&c, host, hlen) != et_host_match(et_token_host(&c, 0), host, hlen))
            abort();
    } else if (m) {
        abort(); /* a pattern the builder refuses must match nothing */
    }
}

static void fuzz_config(const uint8_t *in, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        return;
    memcpy(s, in, n);
    s[n] = '\0';
    int64_t secs = -1;
    if (et_duration_parse(s, &secs) == ET_OK && (secs <= 0 || secs > ET_TOKEN_TIME_MAX))
        abort();
    size_t keylen = 0;
    if (et_token_key_normalize(in, n, &keylen) == ET_OK &&
        (keylen < ET_TOKEN_KEY_MIN || keylen > n || n - keylen > 2))
        abort();
    free(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    switch (data[0] % 6) {
    case 0: fuzz_verify(in, n); break;
    case 1: fuzz_fix_mac(in, n); break;
    case 2: fuzz_claims(in, n); break;
    case 3: fuzz_b64(in, n); break;
    case 4: fuzz_host(in, n); break;
    case 5: fuzz_config(in, n); break;
    default: break;
    }
    return 0;
}
