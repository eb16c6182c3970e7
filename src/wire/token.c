/* token.c: HS256 JSON Web Tokens: strict base64url, header and claims parsing, signing and
 * verification, host-pattern matching and the small parsers edged's token command needs
 * (token.h). Token bytes are read through CBS cursors and written through fixed CBBs. */
#include "et/token.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bytestring.h>
#include <openssl/crypto.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>

#define E_MALFORMED ET_E_PROTO(ET_WE_AUTH_MALFORMED)
#define E_SIGNATURE ET_E_PROTO(ET_WE_AUTH_SIGNATURE)

#define LABEL_MAX 63

/* The only header we produce. Its base64url form is computed, not pasted, so the two can't
 * disagree; the unit test pins the well-known result. */
static const char sign_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* --- base64url --------------------------------------------------------------------------- */

/* b64_value returns the 6-bit value of base64url character |ch|, or -1. Branches, not a table
 * lookup: token text is not secret (the key never goes through here). */
static int b64_value(uint8_t ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

static size_t b64_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

int et_token_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    ET_ENSURE(n <= (size_t)INT_MAX / 4 * 3, ET_E_USAGE);
    size_t need = b64_encoded_len(n);
    ET_ENSURE(need <= cap && (need == 0 || out != NULL), ET_E_USAGE);
    ET_ENSURE(n == 0 || in != NULL, ET_E_USAGE);
    if (need == 0)
        return 0;

    CBS src;
    CBB dst;
    CBS_init(&src, in, n);
    if (!CBB_init_fixed(&dst, (uint8_t *)out, cap))
        return ET_RAISE(ET_E_USAGE);
    while (CBS_len(&src) > 0) {
        size_t k = CBS_len(&src) < 3 ? CBS_len(&src) : 3;
        uint32_t acc = 0;
        for (size_t i = 0; i < 3; i++) {
            uint8_t b = 0;
            if (i < k && !CBS_get_u8(&src, &b))
                goto err;
            acc = acc << 8 | b;
        }
        /* k input bytes give k + 1 output characters. */
        for (size_t i = 0; i <= k; i++) {
            if (!CBB_add_u8(&dst, (uint8_t)b64_alphabet[(acc >> (18 - 6 * i)) & 0x3f]))
                goto err;
        }
    }
    uint8_t *data;
    size_t len;
    if (!CBB_finish(&dst, &data, &len))
        goto err;
    return (int)len;
err:
    CBB_cleanup(&dst);
    return ET_RAISE(ET_E_USAGE);
}

int et_token_b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    /* A lone trailing character carries 6 bits, less than a byte: never canonical. */
    ET_ENSURE(n % 4 != 1, E_MALFORMED);
    ET_ENSURE(n == 0 || in != NULL, ET_E_USAGE);
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    ET_ENSURE(need <= (size_t)INT_MAX, ET_E_USAGE);
    ET_ENSURE(need <= cap && (need == 0 || out != NULL), ET_E_USAGE);
    if (n == 0)
        return 0;

    CBS src;
    CBB dst;
    int rv = E_MALFORMED;
    CBS_init(&src, in, n);
    if (!CBB_init_fixed(&dst, out, cap))
        return ET_RAISE(ET_E_USAGE);
    while (CBS_len(&src) > 0) {
        size_t k = CBS_len(&src) < 4 ? CBS_len(&src) : 4;
        uint32_t acc = 0;
        for (size_t i = 0; i < k; i++) {
            uint8_t ch;
            if (!CBS_get_u8(&src, &ch))
                goto err;
            int v = b64_value(ch);
            if (v < 0)
                goto err;
            acc = acc << 6 | (uint32_t)v;
        }
        /* A short final group has 2 (k = 3) or 4 (k = 2) unused low bits; an encoder writes
         * zeros there, and accepting anything else would give one token several spellings. */
        int ok;
        switch (k) {
        case 4: ok = CBB_add_u24(&dst, acc); break;
        case 3: ok = (acc & 0x3) == 0 && CBB_add_u16(&dst, (uint16_t)(acc >> 2)); break;
        case 2: ok = (acc & 0xf) == 0 && CBB_add_u8(&dst, (uint8_t)(acc >> 4)); break;
        default: ok = 0; break;
        }
        if (!ok)
            goto err;
    }
    uint8_t *data;
    size_t len;
    if (!CBB_finish(&dst, &data, &len)) {
        rv = ET_E_USAGE;
        goto err;
    }
    return (int)len;
err:
    CBB_cleanup(&dst);
    return ET_RAISE(rv);
}

/* --- syntax of names ---------------------------------------------------------------------- */

static bool is_lower_digit(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static char ascii_lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

static bool sub_valid(const char *s, size_t n)
{
    if (n == 0 || n > ET_TUNNEL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!is_lower_digit(ascii_lower(ch)) && ch != '.' && ch != '_' && ch != '-')
            return false;
    }
    return true;
}

static bool jti_valid(const char *s, size_t n)
{
    if (n > ET_TOKEN_JTI_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        /* Printable, no space or quote: a jti can't break a key=value or JSON log line. */
        if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

/* dns_name_valid: labels of 1..63 bytes of [a-z0-9-], no '-' at either end of a label. */
static bool dns_name_valid(const char *p, size_t n)
{
    size_t label = 0;
    char prev = '.';
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '.') {
            if (label == 0 || prev == '-')
                return false;
            label = 0;
        } else if (is_lower_digit(ch) || ch == '-') {
            if (label == 0 && ch == '-')
                return false;
            if (++label > LABEL_MAX)
                return false;
        } else {
            return false;
        }
        prev = ch;
    }
    return label > 0 && prev != '-';
}

static bool host_pattern_valid(const char *p, size_t n)
{
    if (n == 0 || n > ET_HOST_MAX)
        return false;
    if (n >= 2 && p[0] == '*' && p[1] == '.')
        return dns_name_valid(p + 2, n - 2);
    return dns_name_valid(p, n);
}

static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    }
    return true;
}

/* wild_label_char: what one label of a Host may hold where a wildcard stands (the OPEN frame's
 * host alphabet without the dot, any case). */
static bool wild_label_char(char ch)
{
    return is_lower_digit(ascii_lower(ch)) || ch == '-' || ch == '_';
}

bool et_host_match(const char *pattern, const char *host, size_t host_len)
{
    if (pattern == NULL || host == NULL || host_len == 0 || host_len > ET_HOST_MAX)
        return false;
    size_t plen = strnlen(pattern, ET_HOST_MAX + 1);
    if (!host_pattern_valid(pattern, plen))
        return false;
    if (pattern[0] != '*')
        return host_len == plen && ascii_caseeq(host, pattern, plen);

    /* "*.example.com": exactly one non-empty label, then ".example.com". */
    const char *suffix = pattern + 1;
    size_t slen = plen - 1;
    if (host_len <= slen)
        return false;
    size_t llen = host_len - slen;
    if (llen > LABEL_MAX)
        return false;
    for (size_t i = 0; i < llen; i++) {
        if (!wild_label_char(host[i]))
            return false;
    }
    return ascii_caseeq(host + llen, suffix, slen);
}

/* --- claims ------------------------------------------------------------------------------- */

void et_token_claims_init(et_token_claims *c)
{
    memset(c, 0, sizeof(*c));
}

const char *et_token_host(const et_token_claims *c, size_t i)
{
    if (c == NULL || i >= c->nhosts || i >= ET_TOKEN_HOSTS_MAX)
        return NULL;
    return &c->host_buf[c->host_off[i]];
}

/* hosts_append copies a pattern already known to be valid. */
static int hosts_append(et_token_claims *c, const char *p, size_t n)
{
    ET_ENSURE(c->nhosts < ET_TOKEN_HOSTS_MAX, ET_E_LIMIT);
    ET_ENSURE(c->host_used <= ET_TOKEN_HOST_BUF && n < (size_t)ET_TOKEN_HOST_BUF - c->host_used,
              ET_E_LIMIT);
    c->host_off[c->nhosts++] = c->host_used;
    memcpy(&c->host_buf[c->host_used], p, n);
    c->host_buf[c->host_used + n] = '\0';
    c->host_used = (uint16_t)(c->host_used + n + 1);
    return ET_OK;
}

int et_token_claims_set_sub(et_token_claims *c, const char *name, size_t len)
{
    ET_ENSURE(name != NULL && sub_valid(name, len), ET_E_CONFIG);
    memcpy(c->sub, name, len);
    c->sub[len] = '\0';
    return ET_OK;
}

int et_token_claims_add_host(et_token_claims *c, const char *pattern, size_t len)
{
    char lower[ET_HOST_MAX];
    ET_ENSURE(pattern != NULL && len > 0 && len <= sizeof(lower), ET_E_CONFIG);
    for (size_t i = 0; i < len; i++)
        lower[i] = ascii_lower(pattern[i]);
    ET_ENSURE(host_pattern_valid(lower, len), ET_E_CONFIG);
    return hosts_append(c, lower, len);
}

int et_token_claims_add_port(et_token_claims *c, uint32_t port)
{
    ET_ENSURE(port >= 1 && port <= 65535, ET_E_CONFIG);
    ET_ENSURE(c->nports < ET_TOKEN_PORTS_MAX, ET_E_LIMIT);
    c->ports[c->nports++] = (uint16_t)port;
    return ET_OK;
}

int et_token_claims_set_jti(et_token_claims *c, const char *jti, size_t len)
{
    ET_ENSURE((jti != NULL || len == 0) && jti_valid(jti, len), ET_E_CONFIG);
    if (len > 0)
        memcpy(c->jti, jti, len);
    c->jti[len] = '\0';
    return ET_OK;
}

static bool time_valid(int64_t t)
{
    return t >= 0 && t <= ET_TOKEN_TIME_MAX;
}

/* claims_valid says whether |c| is a set et_token_claims_parse could have produced: the
 * signer's guard, since every field of the struct is public. */
static bool claims_valid(const et_token_claims *c)
{
    if (!sub_valid(c->sub, strnlen(c->sub, sizeof(c->sub))))
        return false;
    if (!jti_valid(c->jti, strnlen(c->jti, sizeof(c->jti))))
        return false;
    if (!time_valid(c->iat) || !time_valid(c->exp) || (c->has_nbf && !time_valid(c->nbf)))
        return false;
    if (c->nhosts > ET_TOKEN_HOSTS_MAX || c->nports > ET_TOKEN_PORTS_MAX ||
        c->host_used > ET_TOKEN_HOST_BUF)
        return false;
    for (size_t i = 0; i < c->nhosts; i++) {
        size_t off = c->host_off[i];
        if (off >= c->host_used)
            return false;
        const char *p = &c->host_buf[off];
        const char *nul = memchr(p, '\0', c->host_used - off);
        if (nul == NULL || !host_pattern_valid(p, (size_t)(nul - p)))
            return false;
    }
    for (size_t i = 0; i < c->nports; i++) {
        if (c->ports[i] == 0)
            return false;
    }
    return true;
}

/* json_load maps jansson's failure to ours: out of memory, or malformed. Duplicate keys are
 * refused, since two parsers that disagree on which one wins could disagree on the claims. */
static int json_load(const uint8_t *p, size_t n, json_t **out)
{
    json_error_t jerr;
    *out = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (*out != NULL)
        return ET_OK;
    return ET_RAISE(json_error_code(&jerr) == json_error_out_of_memory ? ET_E_NOMEM : E_MALFORMED);
}

/* get_time reads integer claim |name| into |*t|; returns 1 if present, 0 if absent. */
static int get_time(const json_t *root, const char *name, int64_t *t)
{
    const json_t *v = json_object_get(root, name);
    if (v == NULL)
        return 0;
    ET_ENSURE(json_is_integer(v), E_MALFORMED);
    json_int_t x = json_integer_value(v);
    ET_ENSURE(x >= 0 && x <= ET_TOKEN_TIME_MAX, E_MALFORMED);
    *t = (int64_t)x;
    return 1;
}

static int claims_from_json(const json_t *root, et_token_claims *c)
{
    ET_ENSURE(json_is_object(root), E_MALFORMED);

    const json_t *sub = json_object_get(root, "sub");
    ET_ENSURE(json_is_string(sub), E_MALFORMED);
    ET_ENSURE(et_token_claims_set_sub(c, json_string_value(sub), json_string_length(sub)) == 0,
              E_MALFORMED);

    const json_t *hosts = json_object_get(root, "hosts");
    if (hosts != NULL) {
        ET_ENSURE(json_is_array(hosts) && json_array_size(hosts) <= ET_TOKEN_HOSTS_MAX,
                  E_MALFORMED);
        for (size_t i = 0; i < json_array_size(hosts); i++) {
            const json_t *h = json_array_get(hosts, i);
            ET_ENSURE(json_is_string(h), E_MALFORMED);
            const char *p = json_string_value(h);
            size_t n = json_string_length(h);
            ET_ENSURE(host_pattern_valid(p, n), E_MALFORMED);
            ET_ENSURE(hosts_append(c, p, n) == 0, E_MALFORMED);
        }
    }

    const json_t *tcp = json_object_get(root, "tcp");
    if (tcp != NULL) {
        ET_ENSURE(json_is_array(tcp) && json_array_size(tcp) <= ET_TOKEN_PORTS_MAX, E_MALFORMED);
        for (size_t i = 0; i < json_array_size(tcp); i++) {
            const json_t *port = json_array_get(tcp, i);
            ET_ENSURE(json_is_integer(port), E_MALFORMED);
            json_int_t x = json_integer_value(port);
            ET_ENSURE(x >= 1 && x <= 65535, E_MALFORMED);
            c->ports[c->nports++] = (uint16_t)x;
        }
    }

    int r;
    ET_GUARD(r = get_time(root, "iat", &c->iat));
    ET_ENSURE(r == 1, E_MALFORMED);
    ET_GUARD(r = get_time(root, "exp", &c->exp));
    ET_ENSURE(r == 1, E_MALFORMED);
    ET_GUARD(r = get_time(root, "nbf", &c->nbf));
    c->has_nbf = (uint8_t)r;

    const json_t *jti = json_object_get(root, "jti");
    if (jti != NULL) {
        ET_ENSURE(json_is_string(jti), E_MALFORMED);
        ET_ENSURE(et_token_claims_set_jti(c, json_string_value(jti), json_string_length(jti)) == 0,
                  E_MALFORMED);
    }
    return ET_OK;
}

int et_token_claims_parse(const uint8_t *json, size_t len, et_token_claims *out)
{
    et_token_claims_init(out);
    ET_ENSURE(json != NULL && len <= ET_TOKEN_PAYLOAD_MAX, E_MALFORMED);
    json_t *root;
    ET_GUARD(json_load(json, len, &root));
    int rv = claims_from_json(root, out);
    json_decref(root);
    if (rv < 0)
        et_token_claims_init(out);
    return rv;
}

int et_token_check_time(const et_token_claims *c, int64_t now, int64_t leeway)
{
    ET_ENSURE(leeway >= 0 && leeway <= ET_TOKEN_LEEWAY_MAX, ET_E_USAGE);
    /* Range checks keep nbf - leeway and exp + leeway from overflowing on a hand-made struct. */
    ET_ENSURE(time_valid(c->exp) && (!c->has_nbf || time_valid(c->nbf)), ET_E_USAGE);
    ET_ENSURE(!c->has_nbf || now >= c->nbf - leeway, ET_E_PROTO(ET_WE_AUTH_NOT_YET));
    ET_ENSURE(now < c->exp + leeway, ET_E_PROTO(ET_WE_AUTH_EXPIRED));
    return ET_OK;
}

bool et_token_allows_host(const et_token_claims *c, const char *host, size_t host_len)
{
    for (size_t i = 0; i < c->nhosts && i < ET_TOKEN_HOSTS_MAX; i++) {
        if (et_host_match(et_token_host(c, i), host, host_len))
            return true;
    }
    return false;
}

bool et_token_allows_port(const et_token_claims *c, uint16_t port)
{
    if (port == 0)
        return false;
    for (size_t i = 0; i < c->nports && i < ET_TOKEN_PORTS_MAX; i++) {
        if (c->ports[i] == port)
            return true;
    }
    return false;
}

/* --- header and signature ----------------------------------------------------------------- */

/* header_check accepts a JSON object whose "alg" is the string "HS256" and that has no "crit"
 * (RFC 7515 §4.1.11: a recipient must refuse critical extensions it does not implement, and we
 * implement none, "b64" of RFC 7797 included). Other members ("typ", "kid") are ignored. */
static int header_check(const uint8_t *p, size_t n)
{
    json_t *root;
    ET_GUARD(json_load(p, n, &root));
    int rv = E_MALFORMED;
    if (!json_is_object(root) || json_object_get(root, "crit") != NULL)
        goto out;
    const json_t *alg = json_object_get(root, "alg");
    if (!json_is_string(alg))
        goto out;
    /* Anything but our one algorithm, "none" first of all, is a signature we won't check. */
    rv = E_SIGNATURE;
    if (json_string_length(alg) != 5 || memcmp(json_string_value(alg), "HS256", 5) != 0)
        goto out;
    rv = ET_OK;
out:
    json_decref(root);
    return rv < 0 ? ET_RAISE(rv) : rv;
}

/* cbs_get_part moves the bytes of |in| before the next '.' into |out| and skips the dot. */
static bool cbs_get_part(CBS *in, CBS *out)
{
    if (CBS_len(in) == 0)
        return false;
    const uint8_t *dot = memchr(CBS_data(in), '.', CBS_len(in));
    return dot != NULL && CBS_get_bytes(in, out, (size_t)(dot - CBS_data(in))) && CBS_skip(in, 1);
}

static bool key_len_valid(const uint8_t *key, size_t keylen)
{
    return key != NULL && keylen >= ET_TOKEN_KEY_MIN && keylen <= ET_TOKEN_KEY_MAX;
}

/* decode_part decodes one token part; whatever is wrong with it, the token is malformed. */
static int decode_part(const CBS *part, uint8_t *out, size_t cap)
{
    int n = et_token_b64_decode(CBS_data(part), CBS_len(part), out, cap);
    return n < 0 ? ET_RAISE(E_MALFORMED) : n;
}

int et_token_verify_signature(const uint8_t *key, size_t keylen, const uint8_t *token, size_t len,
                              uint8_t *payload, size_t *payload_len)
{
    ET_ENSURE(key_len_valid(key, keylen), ET_E_USAGE);
    ET_ENSURE(token != NULL && len > 0 && len <= ET_TOKEN_MAX, E_MALFORMED);

    CBS all, rest, h64, c64, s64, signing_input;
    CBS_init(&all, token, len);
    rest = all;
    ET_ENSURE(cbs_get_part(&rest, &h64) && cbs_get_part(&rest, &c64), E_MALFORMED);
    s64 = rest; /* a third dot is not base64url and fails below */

    /* Every part is decoded before any is interpreted, so a non-canonical part is refused
     * whatever else is wrong; the buffers hold anything a token under ET_TOKEN_MAX carries. */
    uint8_t hdr[ET_TOKEN_HEADER_MAX];
    uint8_t claims[ET_TOKEN_PAYLOAD_MAX];
    uint8_t sig[ET_TOKEN_PAYLOAD_MAX];
    int hn, cn, sn;
    ET_GUARD(hn = decode_part(&h64, hdr, sizeof(hdr)));
    ET_GUARD(cn = decode_part(&c64, claims, sizeof(claims)));
    ET_GUARD(sn = decode_part(&s64, sig, sizeof(sig)));
    ET_GUARD(header_check(hdr, (size_t)hn));
    ET_ENSURE(sn == ET_TOKEN_MAC_LEN, E_SIGNATURE);

    /* The MAC covers the text "header.claims" exactly as received. */
    CBS prefix = all;
    ET_ENSURE(CBS_get_bytes(&prefix, &signing_input, CBS_len(&h64) + 1 + CBS_len(&c64)),
              E_MALFORMED);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    ET_ENSURE(HMAC(EVP_sha256(), key, keylen, CBS_data(&signing_input), CBS_len(&signing_input),
                   mac, &maclen) != NULL &&
                  maclen == ET_TOKEN_MAC_LEN,
              ET_E_NOMEM);
    int same = CRYPTO_memcmp(mac, sig, ET_TOKEN_MAC_LEN) == 0;
    /* The expected MAC is a valid signature over the attacker's text: don't leave it around. */
    OPENSSL_cleanse(mac, sizeof(mac));
    ET_ENSURE(same, E_SIGNATURE);

    if (payload != NULL) {
        memcpy(payload, claims, (size_t)cn);
        if (payload_len != NULL)
            *payload_len = (size_t)cn;
    }
    return ET_OK;
}

int et_token_verify(const uint8_t *key, size_t keylen, const uint8_t *token, size_t len,
                    int64_t now, int64_t leeway, et_token_claims *out)
{
    et_token_claims_init(out);
    ET_ENSURE(leeway >= 0 && leeway <= ET_TOKEN_LEEWAY_MAX, ET_E_USAGE);
    uint8_t payload[ET_TOKEN_PAYLOAD_MAX];
    size_t plen = 0;
    ET_GUARD(et_token_verify_signature(key, keylen, token, len, payload, &plen));
    ET_GUARD(et_token_claims_parse(payload, plen, out));
    int rv = et_token_check_time(out, now, leeway);
    if (rv < 0)
        et_token_claims_init(out);
    return rv;
}

/* --- signing ------------------------------------------------------------------------------ */

static bool cbb_add_str(CBB *cbb, const char *s)
{
    return CBB_add_bytes(cbb, (const uint8_t *)s, strlen(s));
}

static bool cbb_add_int(CBB *cbb, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", (long long)v);
    return n > 0 && (size_t)n < sizeof(num) && CBB_add_bytes(cbb, (const uint8_t *)num, (size_t)n);
}

/* claims_write writes the canonical claims JSON: compact, keys sorted (exp, hosts, iat, jti,
 * nbf, sub, tcp). No string needs escaping: claims_valid has restricted every one of them to
 * printable ASCII without '"' or '\'. */
static bool claims_write(CBB *cbb, const et_token_claims *c)
{
    bool ok = cbb_add_str(cbb, "{\"exp\":") && cbb_add_int(cbb, c->exp) &&
              cbb_add_str(cbb, ",\"hosts\":[");
    for (size_t i = 0; ok && i < c->nhosts; i++) {
        ok = (i == 0 || cbb_add_str(cbb, ",")) && cbb_add_str(cbb, "\"") &&
             cbb_add_str(cbb, et_token_host(c, i)) && cbb_add_str(cbb, "\"");
    }
    ok = ok && cbb_add_str(cbb, "],\"iat\":") && cbb_add_int(cbb, c->iat);
    if (ok && c->jti[0] != '\0')
        ok = cbb_add_str(cbb, ",\"jti\":\"") && cbb_add_str(cbb, c->jti) && cbb_add_str(cbb, "\"");
    if (ok && c->has_nbf)
        ok = cbb_add_str(cbb, ",\"nbf\":") && cbb_add_int(cbb, c->nbf);
    ok = ok && cbb_add_str(cbb, ",\"sub\":\"") && cbb_add_str(cbb, c->sub) &&
         cbb_add_str(cbb, "\",\"tcp\":[");
    for (size_t i = 0; ok && i < c->nports; i++)
        ok = (i == 0 || cbb_add_str(cbb, ",")) && cbb_add_int(cbb, c->ports[i]);
    return ok && cbb_add_str(cbb, "]}");
}

int et_token_sign(const uint8_t *key, size_t keylen, const et_token_claims *c, char *out,
                  size_t cap)
{
    ET_ENSURE(key_len_valid(key, keylen), ET_E_USAGE);
    ET_ENSURE(c != NULL && out != NULL && claims_valid(c), ET_E_USAGE);

    /* Claims that don't fit ET_TOKEN_PAYLOAD_MAX can't fit a token either. */
    uint8_t json[ET_TOKEN_PAYLOAD_MAX];
    uint8_t *json_data;
    size_t json_len;
    CBB cbb;
    ET_ENSURE(CBB_init_fixed(&cbb, json, sizeof(json)), ET_E_USAGE);
    if (!claims_write(&cbb, c) || !CBB_finish(&cbb, &json_data, &json_len)) {
        CBB_cleanup(&cbb);
        return ET_RAISE(ET_E_LIMIT);
    }

    size_t hlen = sizeof(sign_header) - 1;
    size_t total = b64_encoded_len(hlen) + 1 + b64_encoded_len(json_len) + 1 +
                   b64_encoded_len(ET_TOKEN_MAC_LEN);
    ET_ENSURE(total <= ET_TOKEN_MAX, ET_E_LIMIT);
    ET_ENSURE(total < cap, ET_E_USAGE);

    size_t pos = 0;
    int n;
    ET_GUARD(n = et_token_b64_encode((const uint8_t *)sign_header, hlen, out, cap));
    pos += (size_t)n;
    out[pos++] = '.';
    ET_GUARD(n = et_token_b64_encode(json, json_len, out + pos, cap - pos));
    pos += (size_t)n;

    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    ET_ENSURE(HMAC(EVP_sha256(), key, keylen, (const uint8_t *)out, pos, mac, &maclen) != NULL &&
                  maclen == ET_TOKEN_MAC_LEN,
              ET_E_NOMEM);
    out[pos++] = '.';
    n = et_token_b64_encode(mac, ET_TOKEN_MAC_LEN, out + pos, cap - pos);
    OPENSSL_cleanse(mac, sizeof(mac));
    ET_GUARD(n);
    pos += (size_t)n;
    out[pos] = '\0';
    return (int)pos;
}

/* --- configuration helpers ---------------------------------------------------------------- */

int et_duration_parse(const char *s, int64_t *seconds)
{
    ET_ENSURE(s != NULL && seconds != NULL, ET_E_CONFIG);
    int64_t v = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        int d = s[i] - '0';
        ET_ENSURE(v <= (INT64_MAX - d) / 10, ET_E_CONFIG);
        v = v * 10 + d;
    }
    ET_ENSURE(i > 0 && s[i] != '\0' && s[i + 1] == '\0', ET_E_CONFIG);
    int64_t unit;
    switch (s[i]) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    default: return ET_RAISE(ET_E_CONFIG);
    }
    ET_ENSURE(v > 0 && v <= ET_TOKEN_TIME_MAX / unit, ET_E_CONFIG);
    *seconds = v * unit;
    return ET_OK;
}

int et_token_key_normalize(const uint8_t *buf, size_t len, size_t *keylen)
{
    ET_ENSURE(buf != NULL || len == 0, ET_E_CONFIG);
    size_t n = len;
    if (n >= 2 && buf[n - 2] == '\r' && buf[n - 1] == '\n')
        n -= 2;
    else if (n >= 1 && buf[n - 1] == '\n')
        n -= 1;
    ET_ENSURE(n >= ET_TOKEN_KEY_MIN && n <= ET_TOKEN_KEY_MAX, ET_E_CONFIG);
    *keylen = n;
    return ET_OK;
}
