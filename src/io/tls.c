/* tls.c: TLS 1.3 contexts, pins and socket helpers of tls.h. */
#include "et/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* ALPN wire form: one length-prefixed protocol name. */
static const uint8_t alpn_wire[] = "\x0c" ET_TLS_ALPN;
#define ALPN_WIRE_LEN (sizeof(alpn_wire) - 1)

/* RAISE_ERRNO is ET_RAISE that keeps errno for the caller (et_error_note may clobber it). */
#define RAISE_ERRNO(err) raise_keep_errno((err), __FILE__, __LINE__)

static int raise_keep_errno(int err, const char *file, int line)
{
    int saved = errno;
    et_error_note(err, file, line);
    errno = saved;
    return err;
}

/* ---- client verification settings, attached to the SSL_CTX --------------------------------- */

enum verify_mode { VERIFY_CA = 1, VERIFY_PIN = 2, VERIFY_INSECURE = 3 };

typedef struct client_conf {
    enum verify_mode mode;
    uint8_t pin[32]; /* VERIFY_PIN: expected SHA-256 of the leaf SPKI */
} client_conf;

static pthread_once_t conf_index_once = PTHREAD_ONCE_INIT;
static int conf_index = -1;

static void conf_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl, void *argp)
{
    if (ptr != NULL)
        OPENSSL_cleanse(ptr, sizeof(client_conf));
    free(ptr);
}

static void conf_index_init(void)
{
    conf_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, conf_free);
}

static int conf_index_get(void)
{
    pthread_once(&conf_index_once, conf_index_init);
    return conf_index;
}

static const client_conf *conf_of(const SSL *ssl)
{
    int idx = conf_index_get();
    if (idx < 0)
        return NULL;
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), idx);
}

/* ---- pins ---------------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int et_tls_pin_parse(const char *text, uint8_t out[32])
{
    static const size_t plen = sizeof(ET_TLS_PIN_PREFIX) - 1;
    ET_ENSURE(text != NULL && out != NULL, ET_E_USAGE);
    ET_ENSURE(strncmp(text, ET_TLS_PIN_PREFIX, plen) == 0, ET_E_CONFIG);
    const char *hex = text + plen;
    /* strnlen bounds the scan: anything longer than 64 digits is wrong anyway. */
    ET_ENSURE(strnlen(hex, 65) == 64, ET_E_CONFIG);
    uint8_t tmp[32];
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        ET_ENSURE(hi >= 0 && lo >= 0, ET_E_CONFIG);
        tmp[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(out, tmp, sizeof(tmp));
    return ET_OK;
}

void et_tls_pin_format(const uint8_t digest[32], char out[ET_TLS_PIN_LEN])
{
    static const char digits[] = "0123456789abcdef";
    static const size_t plen = sizeof(ET_TLS_PIN_PREFIX) - 1;
    memcpy(out, ET_TLS_PIN_PREFIX, plen);
    for (size_t i = 0; i < 32; i++) {
        out[plen + 2 * i] = digits[digest[i] >> 4];
        out[plen + 2 * i + 1] = digits[digest[i] & 0xf];
    }
    out[plen + 64] = '\0';
}

int et_tls_spki_digest(const uint8_t *der, size_t len, uint8_t out[32])
{
    /* Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
     * TBSCertificate ::= SEQUENCE { [0] EXPLICIT version OPTIONAL, serialNumber, signature,
     *                               issuer, validity, subject, subjectPublicKeyInfo, ... } */
    CBS cert, tbs, spki;
    ET_ENSURE(der != NULL && out != NULL, ET_E_USAGE);
    CBS_init(&cert, der, len);
    int ok = CBS_get_asn1(&cert, &cert, CBS_ASN1_SEQUENCE) &&
             CBS_get_asn1(&cert, &tbs, CBS_ASN1_SEQUENCE) &&
             CBS_get_optional_asn1(&tbs, NULL, NULL,
                                   CBS_ASN1_CONSTRUCTED | CBS_ASN1_CONTEXT_SPECIFIC | 0) &&
             CBS_get_asn1(&tbs, NULL, CBS_ASN1_INTEGER) &&  /* serialNumber */
             CBS_get_asn1(&tbs, NULL, CBS_ASN1_SEQUENCE) && /* signature */
             CBS_get_asn1(&tbs, NULL, CBS_ASN1_SEQUENCE) && /* issuer */
             CBS_get_asn1(&tbs, NULL, CBS_ASN1_SEQUENCE) && /* validity */
             CBS_get_asn1(&tbs, NULL, CBS_ASN1_SEQUENCE) && /* subject */
             CBS_get_asn1_element(&tbs, &spki, CBS_ASN1_SEQUENCE);
    ET_ENSURE(ok, ET_E_CONFIG);
    SHA256(CBS_data(&spki), CBS_len(&spki), out);
    return ET_OK;
}

int et_tls_pin_of_cert(X509 *cert, char out[ET_TLS_PIN_LEN])
{
    ET_ENSURE(cert != NULL && out != NULL, ET_E_USAGE);
    uint8_t *der = NULL;
    int n = i2d_X509(cert, &der);
    ET_ENSURE(n > 0, ET_E_TLS);
    uint8_t digest[32];
    int rv = et_tls_spki_digest(der, (size_t)n, digest);
    OPENSSL_free(der);
    ET_GUARD(rv);
    et_tls_pin_format(digest, out);
    return ET_OK;
}

int et_tls_pin_of_cert_file(const char *pem_path, char out[ET_TLS_PIN_LEN])
{
    ET_ENSURE(pem_path != NULL && out != NULL, ET_E_USAGE);
    FILE *f = fopen(pem_path, "r");
    ET_ENSURE(f != NULL, ET_E_CONFIG);
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ET_ENSURE(cert != NULL, ET_E_CONFIG);
    int rv = et_tls_pin_of_cert(cert, out);
    X509_free(cert);
    return rv;
}

/* ---- errors -------------------------------------------------------------------------------- */

const char *et_tls_err_string(char *buf, size_t n)
{
    size_t used = 0;
    const char *file;
    int line;
    uint32_t e;
    if (n > 0)
        buf[0] = '\0';
    while ((e = ERR_get_error_line(&file, &line)) != 0) {
        if (n == 0 || used + 1 >= n)
            continue; /* keep draining */
        char one[256];
        ERR_error_string_n(e, one, sizeof(one));
        int w = snprintf(buf + used, n - used, "%s%s (%s:%d)", used ? "; " : "", one, file, line);
        if (w < 0)
            break;
        used += (size_t)w < n - used ? (size_t)w : n - used - 1;
    }
    if (n > 0 && used == 0)
        snprintf(buf, n, "no tls error");
    return buf;
}

/* ---- contexts ------------------------------------------------------------------------------ */

/* base_ctx makes a TLS 1.3-only context with the modes every tunnel socket uses. */
static int base_ctx(SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    ET_ENSURE(ctx != NULL, ET_E_NOMEM);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
        SSL_CTX_free(ctx);
        return ET_RAISE(ET_E_TLS);
    }
    SSL_CTX_clear_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    *out = ctx;
    return ET_OK;
}

/* alpn_select picks "edgetunnel/1" from the client's list or ends the handshake with
 * no_application_protocol. */
static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *out_len, const uint8_t *in,
                       unsigned in_len, void *arg)
{
    CBS list, proto;
    CBS_init(&list, in, in_len);
    while (CBS_len(&list) > 0) {
        if (!CBS_get_u8_length_prefixed(&list, &proto))
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        if (CBS_len(&proto) == ALPN_WIRE_LEN - 1 &&
            memcmp(CBS_data(&proto), alpn_wire + 1, ALPN_WIRE_LEN - 1) == 0) {
            *out = alpn_wire + 1;
            *out_len = (uint8_t)(ALPN_WIRE_LEN - 1);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* require_alpn refuses a ClientHello without the ALPN extension: the ALPN callback is not
 * called at all then, and the protocol requires ALPN (spec/protocol.md §2). */
static enum ssl_select_cert_result_t require_alpn(const SSL_CLIENT_HELLO *hello)
{
    const uint8_t *data;
    size_t len;
    if (!SSL_early_callback_ctx_extension_get(
            hello, TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &len))
        return ssl_select_cert_error;
    return ssl_select_cert_success;
}

/* server_ctx_finish applies the server-only settings to |ctx| holding a key and certificate. */
static int server_ctx_finish(SSL_CTX *ctx)
{
    ET_ENSURE(SSL_CTX_check_private_key(ctx), ET_E_CONFIG);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_select_certificate_cb(ctx, require_alpn);
    return ET_OK;
}

int et_tls_server_ctx_new(const char *cert_pem_path, const char *key_pem_path, SSL_CTX **out)
{
    ET_ENSURE(cert_pem_path != NULL && key_pem_path != NULL && out != NULL, ET_E_USAGE);
    *out = NULL;
    SSL_CTX *ctx = NULL;
    int rv;
    ET_GUARD(base_ctx(&ctx));
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert_pem_path) ||
        !SSL_CTX_use_PrivateKey_file(ctx, key_pem_path, SSL_FILETYPE_PEM)) {
        rv = ET_RAISE(ET_E_CONFIG);
        goto err;
    }
    ET_GUARD_GOTO(rv, server_ctx_finish(ctx), err);
    *out = ctx;
    return ET_OK;
err:
    SSL_CTX_free(ctx);
    return rv;
}

/* san_add appends |name| to |gens|: an IP address SAN when it parses as one, else a DNS SAN. */
static int san_add(GENERAL_NAMES *gens, const char *name)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ET_ENSURE(g != NULL, ET_E_NOMEM);
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
    ERR_clear_error(); /* a2i_IPADDRESS leaves an error behind for a non-address */
    if (ip != NULL) {
        GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
    } else {
        ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
        size_t nl = strlen(name);
        if (dns == NULL || nl > INT_MAX || !ASN1_STRING_set(dns, name, (int)nl)) {
            ASN1_IA5STRING_free(dns);
            GENERAL_NAME_free(g);
            return ET_RAISE(ET_E_NOMEM);
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, dns);
    }
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return ET_RAISE(ET_E_NOMEM);
    }
    return ET_OK;
}

static int make_p256_key(EVP_PKEY **out)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (ec == NULL || pkey == NULL || !EC_KEY_generate_key(ec) ||
        !EVP_PKEY_assign_EC_KEY(pkey, ec)) {
        EC_KEY_free(ec);
        EVP_PKEY_free(pkey);
        return ET_RAISE(ET_E_TLS);
    }
    *out = pkey; /* owns |ec| now */
    return ET_OK;
}

/* set_random_serial gives |x| a positive random serial of at most 127 bits (RFC 5280 allows 20
 * octets; a clear top bit keeps the DER INTEGER positive without a pad byte). */
static int set_random_serial(X509 *x)
{
    uint8_t raw[16];
    ET_ENSURE(RAND_bytes(raw, sizeof(raw)), ET_E_TLS);
    raw[0] &= 0x7f;
    raw[15] |= 0x01; /* never zero */
    BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
    ASN1_INTEGER *serial = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    int ok = serial != NULL && X509_set_serialNumber(x, serial);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    ET_ENSURE(ok, ET_E_TLS);
    return ET_OK;
}

int et_tls_selfsigned_new(const char *common_name, EVP_PKEY **key_out, X509 **cert_out)
{
    ET_ENSURE(common_name != NULL && common_name[0] != '\0' && key_out != NULL && cert_out != NULL,
              ET_E_USAGE);
    *key_out = NULL;
    *cert_out = NULL;
    EVP_PKEY *pkey = NULL;
    X509 *x = NULL;
    GENERAL_NAMES *gens = NULL;
    int rv;

    ET_GUARD_GOTO(rv, make_p256_key(&pkey), err);
    x = X509_new();
    if (x == NULL) {
        rv = ET_RAISE(ET_E_NOMEM);
        goto err;
    }
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, X509_VERSION_3) ||
        !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                    (const uint8_t *)common_name, -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600) == NULL ||
        !X509_set_pubkey(x, pkey)) {
        rv = ET_RAISE(ET_E_TLS);
        goto err;
    }
    ET_GUARD_GOTO(rv, set_random_serial(x), err);

    gens = sk_GENERAL_NAME_new_null();
    if (gens == NULL) {
        rv = ET_RAISE(ET_E_NOMEM);
        goto err;
    }
    ET_GUARD_GOTO(rv, san_add(gens, "localhost"), err);
    ET_GUARD_GOTO(rv, san_add(gens, "127.0.0.1"), err);
    if (strcmp(common_name, "localhost") != 0 && strcmp(common_name, "127.0.0.1") != 0)
        ET_GUARD_GOTO(rv, san_add(gens, common_name), err);
    if (!X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) ||
        X509_sign(x, pkey, EVP_sha256()) <= 0) {
        rv = ET_RAISE(ET_E_TLS);
        goto err;
    }
    GENERAL_NAMES_free(gens);
    *key_out = pkey;
    *cert_out = x;
    return ET_OK;
err:
    GENERAL_NAMES_free(gens);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rv;
}

int et_tls_server_ctx_new_selfsigned(const char *common_name, SSL_CTX **out,
                                     char pin_out[ET_TLS_PIN_LEN])
{
    ET_ENSURE(out != NULL && pin_out != NULL, ET_E_USAGE);
    *out = NULL;
    EVP_PKEY *pkey = NULL;
    X509 *x = NULL;
    SSL_CTX *ctx = NULL;
    int rv;
    ET_GUARD(et_tls_selfsigned_new(common_name, &pkey, &x));
    ET_GUARD_GOTO(rv, et_tls_pin_of_cert(x, pin_out), err);
    ET_GUARD_GOTO(rv, base_ctx(&ctx), err);
    if (!SSL_CTX_use_certificate(ctx, x) || !SSL_CTX_use_PrivateKey(ctx, pkey)) {
        rv = ET_RAISE(ET_E_TLS);
        goto err;
    }
    ET_GUARD_GOTO(rv, server_ctx_finish(ctx), err);
    X509_free(x); /* the context holds its own references */
    EVP_PKEY_free(pkey);
    *out = ctx;
    return ET_OK;
err:
    SSL_CTX_free(ctx);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rv;
}

/* verify_pin accepts the peer iff SHA-256 of its leaf SPKI equals the context's pin. The
 * handshake separately checks that the peer holds the leaf's private key (CertificateVerify),
 * so a matching pin proves the key. */
static enum ssl_verify_result_t verify_pin(SSL *ssl, uint8_t *out_alert)
{
    const client_conf *conf = conf_of(ssl);
    const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(ssl);
    *out_alert = SSL_AD_BAD_CERTIFICATE;
    if (conf == NULL || conf->mode != VERIFY_PIN || chain == NULL ||
        sk_CRYPTO_BUFFER_num(chain) == 0)
        return ssl_verify_invalid;
    const CRYPTO_BUFFER *leaf = sk_CRYPTO_BUFFER_value(chain, 0);
    uint8_t digest[32];
    if (et_tls_spki_digest(CRYPTO_BUFFER_data(leaf), CRYPTO_BUFFER_len(leaf), digest) != ET_OK)
        return ssl_verify_invalid;
    if (CRYPTO_memcmp(digest, conf->pin, sizeof(digest)) != 0)
        return ssl_verify_invalid;
    return ssl_verify_ok;
}

/* verify_insecure accepts any certificate: the --insecure development mode. */
static enum ssl_verify_result_t verify_insecure(SSL *ssl, uint8_t *out_alert)
{
    return ssl_verify_ok;
}

int et_tls_client_ctx_new(const et_tls_client_opts *o, SSL_CTX **out)
{
    ET_ENSURE(o != NULL && out != NULL, ET_E_USAGE);
    *out = NULL;
    int modes = (o->ca_file != NULL) + (o->pin != NULL) + (o->insecure != 0);
    ET_ENSURE(modes == 1, ET_E_CONFIG);
    int idx = conf_index_get();
    ET_ENSURE(idx >= 0, ET_E_TLS);

    client_conf *conf = calloc(1, sizeof(*conf));
    ET_ENSURE(conf != NULL, ET_E_NOMEM);
    SSL_CTX *ctx = NULL;
    int rv;
    if (o->pin != NULL) {
        conf->mode = VERIFY_PIN;
        ET_GUARD_GOTO(rv, et_tls_pin_parse(o->pin, conf->pin), err);
    } else if (o->ca_file != NULL) {
        conf->mode = VERIFY_CA;
    } else {
        conf->mode = VERIFY_INSECURE;
    }
    ET_GUARD_GOTO(rv, base_ctx(&ctx), err);
    if (!SSL_CTX_set_ex_data(ctx, idx, conf)) {
        rv = ET_RAISE(ET_E_NOMEM);
        goto err;
    }
    client_conf *owned = conf;
    conf = NULL; /* freed with |ctx| by conf_free from here on */

    /* SSL_CTX_set_alpn_protos returns zero on success. */
    if (SSL_CTX_set_alpn_protos(ctx, alpn_wire, ALPN_WIRE_LEN) != 0) {
        rv = ET_RAISE(ET_E_NOMEM);
        goto err;
    }
    switch (owned->mode) {
    case VERIFY_CA:
        if (!SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)) {
            rv = ET_RAISE(ET_E_CONFIG);
            goto err;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        break;
    case VERIFY_PIN: SSL_CTX_set_custom_verify(ctx, SSL_VERIFY_PEER, verify_pin); break;
    case VERIFY_INSECURE: SSL_CTX_set_custom_verify(ctx, SSL_VERIFY_PEER, verify_insecure); break;
    default: rv = ET_RAISE(ET_E_USAGE); goto err;
    }
    *out = ctx;
    return ET_OK;
err:
    if (conf != NULL) {
        OPENSSL_cleanse(conf, sizeof(*conf));
        free(conf);
    }
    SSL_CTX_free(ctx);
    return rv;
}

/* is_ip_literal returns 1 if |host| is an IPv4 or IPv6 address in text form. */
static int is_ip_literal(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

int et_tls_client_prepare(SSL *ssl, const char *hostname)
{
    ET_ENSURE(ssl != NULL, ET_E_USAGE);
    const client_conf *conf = conf_of(ssl);
    ET_ENSURE(conf != NULL, ET_E_USAGE); /* not an et_tls_client_ctx_new context */
    if (hostname == NULL) {
        ET_ENSURE(conf->mode != VERIFY_CA, ET_E_USAGE);
        return ET_OK;
    }
    ET_ENSURE(hostname[0] != '\0', ET_E_USAGE);
    int ip = is_ip_literal(hostname);
    /* RFC 6066 §3: SNI carries host names only, never address literals. */
    if (!ip)
        ET_ENSURE(SSL_set_tlsext_host_name(ssl, hostname), ET_E_TLS);
    if (conf->mode != VERIFY_CA)
        return ET_OK;
    if (ip) {
        ET_ENSURE(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), hostname), ET_E_TLS);
    } else {
        ET_ENSURE(SSL_set1_host(ssl, hostname), ET_E_TLS);
        /* Names come from subjectAltName only, never from the subject CN (RFC 6125 §6.4.4). */
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    }
    return ET_OK;
}

int et_tls_alpn_ok(const SSL *ssl)
{
    const uint8_t *p;
    unsigned n;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == ALPN_WIRE_LEN - 1 && memcmp(p, alpn_wire + 1, n) == 0;
}

/* ---- sockets ------------------------------------------------------------------------------- */

int et_sock_set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        return RAISE_ERRNO(ET_E_IO);
    return ET_OK;
}

int et_sock_set_notsent_lowat(int fd, unsigned bytes)
{
    ET_ENSURE(bytes <= INT_MAX, ET_E_USAGE);
    int v = (int)bytes;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v)) != 0)
        return RAISE_ERRNO(ET_E_IO);
    return ET_OK;
}

int et_sock_set_congestion(int fd, const char *name)
{
    size_t n = strlen(name);
    ET_ENSURE(n > 0 && n < ET_CC_NAME_MAX, ET_E_USAGE);
    if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)n) != 0)
        return RAISE_ERRNO(ET_E_IO);
    return ET_OK;
}

void et_sock_congestion(int fd, char *out)
{
    socklen_t len = ET_CC_NAME_MAX - 1;
    if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, out, &len) != 0)
        len = 0;
    out[len] = '\0';
}

int et_sock_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return RAISE_ERRNO(ET_E_IO);
    return ET_OK;
}

void et_sock_reset_close(int fd)
{
    if (fd < 0)
        return;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    /* A failure here (not a TCP socket) leaves an ordinary close, which is all we can do. */
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* parse_port reads 0..65535: decimal digits only, at most 5 of them. */
static int parse_port(const char *s, uint16_t *out)
{
    size_t n = strlen(s);
    ET_ENSURE(n >= 1 && n <= 5, ET_E_CONFIG);
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        ET_ENSURE(s[i] >= '0' && s[i] <= '9', ET_E_CONFIG);
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    ET_ENSURE(v <= 65535, ET_E_CONFIG);
    *out = (uint16_t)v;
    return ET_OK;
}

int et_sock_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len)
{
    ET_ENSURE(text != NULL && out != NULL && len != NULL, ET_E_USAGE);
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    const char *port;
    uint16_t portnum;
    if (text[0] == '[') {
        const char *close_br = strchr(text, ']');
        ET_ENSURE(close_br != NULL && close_br[1] == ':', ET_E_CONFIG);
        size_t hl = (size_t)(close_br - (text + 1));
        ET_ENSURE(hl > 0 && hl < sizeof(host), ET_E_CONFIG);
        memcpy(host, text + 1, hl);
        host[hl] = '\0';
        port = close_br + 2;
        ET_GUARD(parse_port(port, &portnum));

        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(portnum);
        char *pct = strchr(host, '%');
        if (pct != NULL) { /* zone: interface name or index */
            *pct = '\0';
            const char *zone = pct + 1;
            ET_ENSURE(zone[0] != '\0', ET_E_CONFIG);
            unsigned idx = if_nametoindex(zone);
            if (idx == 0) {
                uint16_t num; /* a numeric zone; parse_port's rules are strict enough */
                ET_ENSURE(parse_port(zone, &num) == ET_OK && num > 0, ET_E_CONFIG);
                idx = num;
            }
            sin6.sin6_scope_id = idx;
        }
        ET_ENSURE(inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1, ET_E_CONFIG);
        memset(out, 0, sizeof(*out));
        memcpy(out, &sin6, sizeof(sin6));
        *len = sizeof(sin6);
        return ET_OK;
    }

    const char *colon = strrchr(text, ':');
    ET_ENSURE(colon != NULL, ET_E_CONFIG);
    size_t hl = (size_t)(colon - text);
    ET_ENSURE(hl > 0 && hl < sizeof(host), ET_E_CONFIG);
    memcpy(host, text, hl);
    host[hl] = '\0';
    ET_ENSURE(strchr(host, ':') == NULL, ET_E_CONFIG); /* IPv6 needs brackets */
    ET_GUARD(parse_port(colon + 1, &portnum));

    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(portnum);
    if (strcmp(host, "localhost") == 0)
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else /* inet_pton, unlike inet_aton, takes exactly four decimal parts */
        ET_ENSURE(inet_pton(AF_INET, host, &sin.sin_addr) == 1, ET_E_CONFIG);
    memset(out, 0, sizeof(*out));
    memcpy(out, &sin, sizeof(sin));
    *len = sizeof(sin);
    return ET_OK;
}

int et_sock_listen(const char *addr, int reuseport, int *fd_out)
{
    ET_ENSURE(addr != NULL && fd_out != NULL, ET_E_USAGE);
    *fd_out = -1;
    struct sockaddr_storage ss;
    socklen_t sl;
    ET_GUARD(et_sock_parse_addr(addr, &ss, &sl));
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return RAISE_ERRNO(ET_E_IO);
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)&ss, sl) != 0 || listen(fd, 4096) != 0) {
        int rv = RAISE_ERRNO(ET_E_IO);
        int saved = errno;
        close(fd);
        errno = saved;
        return rv;
    }
    *fd_out = fd;
    return ET_OK;
}

int et_sock_connect_start(const struct sockaddr *sa, socklen_t len, int *fd_out)
{
    ET_ENSURE(sa != NULL && fd_out != NULL, ET_E_USAGE);
    *fd_out = -1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return RAISE_ERRNO(ET_E_IO);
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        goto fail;
    if (connect(fd, sa, len) == 0) {
        *fd_out = fd;
        return ET_OK;
    }
    if (errno == EINPROGRESS) {
        *fd_out = fd;
        return ET_E_AGAIN; /* not an error worth a where-note: the normal path */
    }
fail:;
    int rv = RAISE_ERRNO(ET_E_IO);
    int saved = errno;
    close(fd);
    errno = saved;
    return rv;
}

int et_sock_connect_result(int fd)
{
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        return RAISE_ERRNO(ET_E_IO);
    if (soerr != 0) {
        errno = soerr;
        return RAISE_ERRNO(ET_E_IO);
    }
    return ET_OK;
}

/* --- buffered reads ----------------------------------------------------------------------- */

/* The read side of a tunnel socket: bytes one recv() brought in, handed to BoringSSL as it asks
 * for them. */
typedef struct rbuf {
    int fd;        /* not owned */
    size_t off;    /* next byte to hand out */
    size_t len;    /* bytes in buf */
    size_t cap;    /* size of buf */
    uint8_t buf[]; /* owned with the struct */
} rbuf;

static int rbio_read(BIO *b, char *out, int outl)
{
    rbuf *r = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (outl <= 0)
        return 0;
    if (r->off == r->len) {
        ssize_t n;
        do {
            n = recv(r->fd, r->buf, r->cap, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                BIO_set_retry_read(b);
            return -1; /* errno says why, as with a socket BIO */
        }
        if (n == 0)
            return 0; /* EOF */
        r->off = 0;
        r->len = (size_t)n;
    }
    size_t k = r->len - r->off < (size_t)outl ? r->len - r->off : (size_t)outl;
    memcpy(out, r->buf + r->off, k);
    r->off += k;
    return (int)k;
}

static long rbio_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    (void)larg;
    (void)parg;
    rbuf *r = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return r != NULL ? (long)(r->len - r->off) : 0;
    default: return 0;
    }
}

static int rbio_destroy(BIO *b)
{
    free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    BIO_set_init(b, 0);
    return 1;
}

static BIO_METHOD *rbio_method;
static pthread_once_t rbio_once = PTHREAD_ONCE_INIT;

static void rbio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "et buffered socket reads");
    if (m != NULL && BIO_meth_set_read(m, rbio_read) && BIO_meth_set_ctrl(m, rbio_ctrl) &&
        BIO_meth_set_destroy(m, rbio_destroy))
        rbio_method = m; /* process-wide, never freed */
}

int et_tls_set_fd(SSL *ssl, int fd, size_t read_size)
{
    ET_ENSURE(read_size > 0, ET_E_USAGE);
    pthread_once(&rbio_once, rbio_method_init);
    ET_ENSURE(rbio_method != NULL, ET_E_NOMEM);
    /* The socket BIO for both directions first, then our reader for reads. */
    ET_ENSURE(SSL_set_fd(ssl, fd), ET_E_NOMEM);
    rbuf *r = malloc(sizeof(*r) + read_size);
    BIO *b = r != NULL ? BIO_new(rbio_method) : NULL;
    if (b == NULL) {
        free(r);
        return ET_RAISE(ET_E_NOMEM);
    }
    *r = (rbuf){fd, 0, 0, read_size};
    BIO_set_data(b, r);
    BIO_set_init(b, 1);
    SSL_set0_rbio(ssl, b); /* takes ownership */
    return ET_OK;
}
