/* tls_test.c: the TLS contexts and socket helpers of tls.h.
 *
 * Handshakes are real TLS 1.3 handshakes between a server and a client SSL over a nonblocking
 * AF_UNIX socketpair, driven in one thread by alternating SSL_do_handshake calls (bounded).
 * Certificates come from et_tls_selfsigned_new and are written as PEM files into a mkdtemp
 * directory that main() removes at the end. Socket helpers run against TCP on 127.0.0.1. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include "testutil.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "et/tls.h"

/* ---- fixture: two self-signed identities written to a temporary directory ------------------ */

typedef struct ident {
    EVP_PKEY *key;
    X509 *cert;
    char cert_path[128];
    char key_path[128];
    char pin[ET_TLS_PIN_LEN];
} ident;

static char tmpdir[64];
static ident id_a; /* CN=localhost */
static ident id_b; /* CN=other.test: a different key, SAN also carries other.test */

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok = cert != NULL ? PEM_write_X509(f, cert)
                          : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static int ident_make(ident *id, const char *cn, const char *tag)
{
    if (et_tls_selfsigned_new(cn, &id->key, &id->cert) != ET_OK)
        return -1;
    snprintf(id->cert_path, sizeof(id->cert_path), "%s/%s-cert.pem", tmpdir, tag);
    snprintf(id->key_path, sizeof(id->key_path), "%s/%s-key.pem", tmpdir, tag);
    if (write_pem(id->cert_path, id->cert, NULL) != 0 || write_pem(id->key_path, NULL, id->key))
        return -1;
    return et_tls_pin_of_cert(id->cert, id->pin) == ET_OK ? 0 : -1;
}

static void ident_free(ident *id)
{
    if (id->cert_path[0])
        unlink(id->cert_path);
    if (id->key_path[0])
        unlink(id->key_path);
    X509_free(id->cert);
    EVP_PKEY_free(id->key);
    memset(id, 0, sizeof(*id));
}

/* ---- driving a handshake ------------------------------------------------------------------- */

typedef struct pair {
    SSL *c, *s;
    int fd[2];              /* fd[0] client end, fd[1] server end */
    int c_reason, s_reason; /* ERR_GET_REASON of each side's handshake failure, 0 if none */
} pair;

/* pair_new connects a client of |cctx| and a server of |sctx| over a socketpair. When |prepare|
 * is set the client goes through et_tls_client_prepare(|host|). */
static void pair_new(pair *p, SSL_CTX *sctx, SSL_CTX *cctx, int prepare, const char *host)
{
    memset(p, 0, sizeof(*p));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->fd), 0);
    p->c = SSL_new(cctx);
    p->s = SSL_new(sctx);
    assert_non_null(p->c);
    assert_non_null(p->s);
    assert_true(SSL_set_fd(p->c, p->fd[0]));
    assert_true(SSL_set_fd(p->s, p->fd[1]));
    SSL_set_connect_state(p->c);
    SSL_set_accept_state(p->s);
    if (prepare)
        assert_int_equal(et_tls_client_prepare(p->c, host), ET_OK);
}

static void pair_free(pair *p)
{
    SSL_free(p->c);
    SSL_free(p->s);
    close(p->fd[0]);
    close(p->fd[1]);
    ERR_clear_error();
}

/* step runs one SSL_do_handshake on |ssl|: 1 done, 0 wants I/O, -1 failed (|*reason| set). */
static int step(SSL *ssl, int *reason)
{
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return 1;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    uint32_t packed = ERR_get_error();
    *reason = packed ? ERR_GET_REASON(packed) : -1;
    ERR_clear_error();
    return -1;
}

/* handshake drives both sides until each is done or failed (at most 200 rounds); returns 0 when
 * both completed. */
static int handshake(pair *p)
{
    int cs = 0, ss = 0;
    for (int round = 0; round < 200 && (cs == 0 || ss == 0); round++) {
        if (cs == 0)
            cs = step(p->c, &p->c_reason);
        if (ss == 0)
            ss = step(p->s, &p->s_reason);
    }
    return (cs == 1 && ss == 1) ? 0 : -1;
}

static SSL_CTX *server_ctx(const ident *id)
{
    SSL_CTX *ctx = NULL;
    assert_int_equal(et_tls_server_ctx_new(id->cert_path, id->key_path, &ctx), ET_OK);
    assert_non_null(ctx);
    return ctx;
}

static SSL_CTX *client_ctx(const char *ca, const char *pin, int insecure)
{
    et_tls_client_opts o = {.ca_file = ca, .pin = pin, .insecure = insecure};
    SSL_CTX *ctx = NULL;
    assert_int_equal(et_tls_client_ctx_new(&o, &ctx), ET_OK);
    assert_non_null(ctx);
    return ctx;
}

/* handshake_with runs a whole handshake from fresh contexts' SSLs; returns 0 on success. */
static int handshake_with(SSL_CTX *sctx, SSL_CTX *cctx, const char *host, pair *out)
{
    pair_new(out, sctx, cctx, 1, host);
    return handshake(out);
}

/* ---- pins ---------------------------------------------------------------------------------- */

static const char hex64[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static void test_pin_parse_ok(void **state)
{
    uint8_t d[32], d2[32];
    char text[ET_TLS_PIN_LEN + 8];
    snprintf(text, sizeof(text), "sha256:%s", hex64);
    assert_int_equal(et_tls_pin_parse(text, d), ET_OK);
    assert_int_equal(d[0], 0x00);
    assert_int_equal(d[1], 0x11);
    assert_int_equal(d[31], 0xff);

    char back[ET_TLS_PIN_LEN];
    et_tls_pin_format(d, back);
    assert_string_equal(back, text);

    /* Upper and mixed case parse to the same digest; formatting is lowercase. */
    assert_int_equal(et_tls_pin_parse("sha256:00112233445566778899AABBCCDDEEFF"
                                      "00112233445566778899aAbBcCdDeEfF",
                                      d2),
                     ET_OK);
    assert_memory_equal(d, d2, 32);
}

static void test_pin_parse_bad(void **state)
{
    uint8_t d[32];
    memset(d, 0x5a, sizeof(d));
    char text[160];
    const char *bad[] = {
        "",
        "sha256:",
        "sha256",
        /* 63 digits */
        "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeef",
        /* 65 digits */
        "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0",
        /* 128 digits */
        ("sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
         "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
        /* wrong prefixes */
        "SHA256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "sha-256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "sha1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        " sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        /* non-hex digits */
        "sha256:g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeefz",
        "sha256: 0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "sha256:0x112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (et_tls_pin_parse(bad[i], d) != ET_E_CONFIG)
            fail_msg("accepted bad pin #%zu \"%s\"", i, bad[i]);
    }
    /* trailing garbage after 64 valid digits */
    snprintf(text, sizeof(text), "sha256:%s ", hex64);
    assert_int_equal(et_tls_pin_parse(text, d), ET_E_CONFIG);
    /* a failed parse leaves |out| alone */
    for (size_t i = 0; i < sizeof(d); i++)
        assert_int_equal(d[i], 0x5a);
    assert_int_equal(et_tls_pin_parse(NULL, d), ET_E_USAGE);
}

static void test_pin_of_cert_file(void **state)
{
    char pin[ET_TLS_PIN_LEN];
    assert_int_equal(et_tls_pin_of_cert_file(id_a.cert_path, pin), ET_OK);
    assert_string_equal(pin, id_a.pin);
    assert_int_equal(strlen(pin), ET_TLS_PIN_LEN - 1);
    assert_int_equal(strncmp(pin, "sha256:", 7), 0);
    uint8_t d[32];
    assert_int_equal(et_tls_pin_parse(pin, d), ET_OK);
    assert_string_not_equal(id_a.pin, id_b.pin);

    /* The pin is the hash of the SPKI exactly as i2d_PUBKEY writes it. */
    uint8_t *spki = NULL;
    int n = i2d_PUBKEY(id_a.key, &spki);
    assert_true(n > 0);
    uint8_t want[32];
    SHA256(spki, (size_t)n, want);
    OPENSSL_free(spki);
    char want_text[ET_TLS_PIN_LEN];
    et_tls_pin_format(want, want_text);
    assert_string_equal(pin, want_text);

    /* A key file holds no certificate; a missing file is a config error. */
    assert_int_equal(et_tls_pin_of_cert_file(id_a.key_path, pin), ET_E_CONFIG);
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/nope.pem", tmpdir);
    assert_int_equal(et_tls_pin_of_cert_file(missing, pin), ET_E_CONFIG);
    ERR_clear_error();
}

static void test_spki_digest_bad(void **state)
{
    uint8_t d[32];
    static const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
    assert_int_equal(et_tls_spki_digest(junk, sizeof(junk), d), ET_E_CONFIG);
    assert_int_equal(et_tls_spki_digest(junk, 0, d), ET_E_CONFIG);

    /* Every truncation of a real certificate is refused, read against a guard page. */
    uint8_t *der = NULL;
    int n = i2d_X509(id_a.cert, &der);
    assert_true(n > 0);
    for (int cut = 0; cut < n; cut++) {
        uint8_t *g = tu_guarded(der, (size_t)cut);
        assert_int_equal(et_tls_spki_digest(g, (size_t)cut, d), ET_E_CONFIG);
        tu_guarded_free(g, (size_t)cut);
    }
    uint8_t *g = tu_guarded(der, (size_t)n);
    assert_int_equal(et_tls_spki_digest(g, (size_t)n, d), ET_OK);
    tu_guarded_free(g, (size_t)n);
    OPENSSL_free(der);
}

static void test_selfsigned_cert(void **state)
{
    X509 *x = id_b.cert;
    /* Valid now, from about an hour ago until about 30 days ahead. */
    assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
    assert_true(X509_cmp_current_time(X509_get0_notAfter(x)) > 0);
    int days, secs;
    assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
    assert_int_equal(days, 30);
    assert_int_equal(secs, 3600);
    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    /* SANs: localhost, 127.0.0.1 and the common name. */
    assert_int_equal(X509_check_host(x, "localhost", 9, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.test", 10, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_host(x, "example.com", 11, 0, NULL), 0);
    assert_int_equal(X509_check_host(id_a.cert, "other.test", 10, 0, NULL), 0);
    /* Self-signed with its own key, a random positive serial. */
    assert_int_equal(X509_verify(x, id_b.key), 1);
    const ASN1_INTEGER *sa = X509_get0_serialNumber(id_a.cert);
    const ASN1_INTEGER *sb = X509_get0_serialNumber(id_b.cert);
    assert_int_equal(ASN1_STRING_type(sa), V_ASN1_INTEGER);
    assert_true(ASN1_INTEGER_cmp(sa, sb) != 0);
    EVP_PKEY *pub = X509_get_pubkey(x);
    assert_non_null(pub);
    assert_int_equal(EVP_PKEY_id(pub), EVP_PKEY_EC);
    EVP_PKEY_free(pub);

    EVP_PKEY *k = NULL;
    X509 *c = NULL;
    assert_int_equal(et_tls_selfsigned_new("", &k, &c), ET_E_USAGE);
    assert_int_equal(et_tls_selfsigned_new(NULL, &k, &c), ET_E_USAGE);
    assert_null(k);
    assert_null(c);
}

/* ---- handshakes ---------------------------------------------------------------------------- */

static void test_handshake_pin_ok(void **state)
{
    SSL_CTX *s = server_ctx(&id_a), *c = client_ctx(NULL, id_a.pin, 0);
    pair p;
    assert_int_equal(handshake_with(s, c, "localhost", &p), 0);
    assert_int_equal(SSL_version(p.c), TLS1_3_VERSION);
    assert_int_equal(SSL_version(p.s), TLS1_3_VERSION);
    assert_true(et_tls_alpn_ok(p.c));
    assert_true(et_tls_alpn_ok(p.s));
    assert_string_equal(SSL_get_servername(p.s, TLSEXT_NAMETYPE_host_name), "localhost");
    /* Modes every tunnel socket relies on. */
    assert_true(SSL_get_mode(p.c) & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    assert_true(SSL_get_mode(p.s) & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    assert_false(SSL_get_mode(p.c) & SSL_MODE_ENABLE_PARTIAL_WRITE);
    assert_false(SSL_get_mode(p.s) & SSL_MODE_ENABLE_PARTIAL_WRITE);
    pair_free(&p);

    /* No host name at all is fine in pin mode (no SNI). */
    assert_int_equal(handshake_with(s, c, NULL, &p), 0);
    assert_null(SSL_get_servername(p.s, TLSEXT_NAMETYPE_host_name));
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_handshake_pin_wrong(void **state)
{
    SSL_CTX *s = server_ctx(&id_a), *c = client_ctx(NULL, id_b.pin, 0);
    pair p;
    assert_int_not_equal(handshake_with(s, c, "localhost", &p), 0);
    assert_int_equal(p.c_reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
    assert_int_equal(p.s_reason, SSL_R_SSLV3_ALERT_BAD_CERTIFICATE); /* the server saw why */
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);

    /* A pin of all zeros, too. */
    char zero[ET_TLS_PIN_LEN];
    uint8_t z[32] = {0};
    et_tls_pin_format(z, zero);
    s = server_ctx(&id_a);
    c = client_ctx(NULL, zero, 0);
    assert_int_not_equal(handshake_with(s, c, "localhost", &p), 0);
    assert_int_equal(p.c_reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_handshake_selfsigned_ctx(void **state)
{
    SSL_CTX *s = NULL;
    char pin[ET_TLS_PIN_LEN];
    assert_int_equal(et_tls_server_ctx_new_selfsigned("edge.dev.test", &s, pin), ET_OK);
    uint8_t d[32];
    assert_int_equal(et_tls_pin_parse(pin, d), ET_OK);
    SSL_CTX *c = client_ctx(NULL, pin, 0);
    pair p;
    assert_int_equal(handshake_with(s, c, "edge.dev.test", &p), 0);
    assert_true(et_tls_alpn_ok(p.c));
    pair_free(&p);
    SSL_CTX_free(c);

    /* Another identity's pin is refused by the same server. */
    c = client_ctx(NULL, id_a.pin, 0);
    assert_int_not_equal(handshake_with(s, c, "edge.dev.test", &p), 0);
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

/* raw_client makes a TLS 1.3 client context that accepts any certificate and offers |alpn|
 * (wire form, may be NULL), bypassing et_tls_client_ctx_new. */
static enum ssl_verify_result_t accept_all(SSL *ssl, uint8_t *alert)
{
    return ssl_verify_ok;
}

static SSL_CTX *raw_client(const uint8_t *alpn, size_t alpn_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    assert_non_null(ctx);
    assert_true(SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION));
    assert_true(SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION));
    SSL_CTX_set_custom_verify(ctx, SSL_VERIFY_PEER, accept_all);
    if (alpn != NULL)
        assert_int_equal(SSL_CTX_set_alpn_protos(ctx, alpn, alpn_len), 0);
    return ctx;
}

static void test_handshake_alpn_required(void **state)
{
    SSL_CTX *s = server_ctx(&id_a);
    pair p;

    /* Control: the raw client with our ALPN gets through. */
    SSL_CTX *c = raw_client((const uint8_t *)"\x0c"
                                             "edgetunnel/1",
                            13);
    pair_new(&p, s, c, 0, NULL);
    assert_int_equal(handshake(&p), 0);
    assert_true(et_tls_alpn_ok(p.c));
    pair_free(&p);
    SSL_CTX_free(c);

    /* No ALPN extension at all. */
    c = raw_client(NULL, 0);
    pair_new(&p, s, c, 0, NULL);
    assert_int_not_equal(handshake(&p), 0);
    assert_int_equal(p.s_reason, SSL_R_CONNECTION_REJECTED); /* require_alpn refused it */
    assert_int_equal(p.c_reason, SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE);
    assert_false(et_tls_alpn_ok(p.c));
    pair_free(&p);
    SSL_CTX_free(c);

    /* ALPN without our protocol (and one that only shares a prefix). */
    c = raw_client((const uint8_t *)"\x02h2\x08http/1.1\x0b"
                                    "edgetunnel/",
                   24);
    pair_new(&p, s, c, 0, NULL);
    assert_int_not_equal(handshake(&p), 0);
    assert_int_equal(p.s_reason, SSL_R_NO_APPLICATION_PROTOCOL);
    assert_int_equal(p.c_reason, SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
    pair_free(&p);
    SSL_CTX_free(c);

    /* Ours among others is chosen. */
    c = raw_client((const uint8_t *)"\x02h2\x0c"
                                    "edgetunnel/1",
                   16);
    pair_new(&p, s, c, 0, NULL);
    assert_int_equal(handshake(&p), 0);
    assert_true(et_tls_alpn_ok(p.s));
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_handshake_ca_mode(void **state)
{
    SSL_CTX *s = server_ctx(&id_a), *c = client_ctx(id_a.cert_path, NULL, 0);
    pair p;

    assert_int_equal(handshake_with(s, c, "localhost", &p), 0);
    assert_int_equal(SSL_get_verify_result(p.c), X509_V_OK);
    assert_true(et_tls_alpn_ok(p.c));
    pair_free(&p);

    /* An IP literal is checked against the IP SAN (and sent as no SNI). */
    assert_int_equal(handshake_with(s, c, "127.0.0.1", &p), 0);
    assert_null(SSL_get_servername(p.s, TLSEXT_NAMETYPE_host_name));
    pair_free(&p);

    /* Wrong host names and addresses fail verification. */
    const char *wrong[] = {"wrong.example", "other.test", "localhost.evil", "127.0.0.2", "::1"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        if (handshake_with(s, c, wrong[i], &p) == 0)
            fail_msg("host %s accepted", wrong[i]);
        assert_int_equal(p.c_reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
        long vr = SSL_get_verify_result(p.c);
        assert_true(vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH);
        pair_free(&p);
    }

    /* CA mode needs a host name. */
    SSL *ssl = SSL_new(c);
    assert_int_equal(et_tls_client_prepare(ssl, NULL), ET_E_USAGE);
    assert_int_equal(et_tls_client_prepare(ssl, ""), ET_E_USAGE);
    SSL_free(ssl);
    SSL_CTX_free(c);

    /* Another CA does not vouch for this server. */
    c = client_ctx(id_b.cert_path, NULL, 0);
    assert_int_not_equal(handshake_with(s, c, "localhost", &p), 0);
    assert_int_equal(p.c_reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
    pair_free(&p);
    SSL_CTX_free(s);

    /* ...but does for its own server, under its common name too. */
    s = server_ctx(&id_b);
    assert_int_equal(handshake_with(s, c, "other.test", &p), 0);
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_handshake_insecure(void **state)
{
    SSL_CTX *s = server_ctx(&id_b), *c = client_ctx(NULL, NULL, 1);
    pair p;
    assert_int_equal(handshake_with(s, c, "anything.example", &p), 0);
    assert_true(et_tls_alpn_ok(p.c));
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_client_opts_bad(void **state)
{
    SSL_CTX *ctx = (SSL_CTX *)(uintptr_t)1;
    et_tls_client_opts none = {0};
    assert_int_equal(et_tls_client_ctx_new(&none, &ctx), ET_E_CONFIG);
    assert_null(ctx);

    et_tls_client_opts two = {.ca_file = id_a.cert_path, .pin = id_a.pin};
    assert_int_equal(et_tls_client_ctx_new(&two, &ctx), ET_E_CONFIG);
    et_tls_client_opts three = {.ca_file = id_a.cert_path, .pin = id_a.pin, .insecure = 1};
    assert_int_equal(et_tls_client_ctx_new(&three, &ctx), ET_E_CONFIG);
    et_tls_client_opts pin_insecure = {.pin = id_a.pin, .insecure = 1};
    assert_int_equal(et_tls_client_ctx_new(&pin_insecure, &ctx), ET_E_CONFIG);

    et_tls_client_opts badpin = {.pin = "sha256:1234"};
    assert_int_equal(et_tls_client_ctx_new(&badpin, &ctx), ET_E_CONFIG);

    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no-such-ca.pem", tmpdir);
    et_tls_client_opts noca = {.ca_file = missing};
    assert_int_equal(et_tls_client_ctx_new(&noca, &ctx), ET_E_CONFIG);
    assert_null(ctx);
    ERR_clear_error();

    assert_int_equal(et_tls_client_ctx_new(NULL, &ctx), ET_E_USAGE);

    /* prepare refuses an SSL that is not from our client contexts. */
    SSL_CTX *raw = raw_client(NULL, 0);
    SSL *ssl = SSL_new(raw);
    assert_int_equal(et_tls_client_prepare(ssl, "localhost"), ET_E_USAGE);
    SSL_free(ssl);
    SSL_CTX_free(raw);
}

static void test_server_ctx_bad(void **state)
{
    SSL_CTX *ctx = NULL;
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no-such.pem", tmpdir);
    assert_int_equal(et_tls_server_ctx_new(missing, id_a.key_path, &ctx), ET_E_CONFIG);
    assert_int_equal(et_tls_server_ctx_new(id_a.cert_path, missing, &ctx), ET_E_CONFIG);
    assert_null(ctx);
    /* The key of another identity does not match the certificate. */
    assert_int_equal(et_tls_server_ctx_new(id_a.cert_path, id_b.key_path, &ctx), ET_E_CONFIG);
    assert_null(ctx);
    /* Certificate and key swapped. */
    assert_int_equal(et_tls_server_ctx_new(id_a.key_path, id_a.cert_path, &ctx), ET_E_CONFIG);

    char buf[512];
    et_tls_err_string(buf, sizeof(buf));
    assert_string_not_equal(buf, "no tls error");
    assert_int_equal(ERR_peek_error(), 0); /* drained */
}

static void test_err_string(void **state)
{
    char buf[64];
    ERR_clear_error();
    assert_string_equal(et_tls_err_string(buf, sizeof(buf)), "no tls error");

    /* Many errors into a small buffer: cut, terminated, queue drained. */
    for (int i = 0; i < 20; i++)
        ERR_put_error(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED, "file.c", i);
    et_tls_err_string(buf, sizeof(buf));
    assert_true(strlen(buf) < sizeof(buf));
    assert_true(strlen(buf) > 0);
    assert_int_equal(ERR_peek_error(), 0);

    ERR_put_error(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED, "file.c", 1);
    char one[1];
    assert_string_equal(et_tls_err_string(one, sizeof(one)), "");
    assert_int_equal(ERR_peek_error(), 0);
    ERR_put_error(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED, "file.c", 1);
    et_tls_err_string(NULL, 0);
    assert_int_equal(ERR_peek_error(), 0);
}

/* ---- data after the handshake -------------------------------------------------------------- */

#define XFER_TOTAL (1u << 20)
#define XFER_PIECE (16u << 10)

static void test_transfer_1mib(void **state)
{
    SSL_CTX *s = server_ctx(&id_a), *c = client_ctx(NULL, id_a.pin, 0);
    pair p;
    assert_int_equal(handshake_with(s, c, "localhost", &p), 0);

    uint8_t *src = malloc(XFER_TOTAL), *dst = malloc(XFER_TOTAL);
    uint8_t *stage[2] = {malloc(XFER_PIECE), malloc(XFER_PIECE)};
    assert_non_null(src);
    assert_non_null(dst);
    assert_non_null(stage[0]);
    assert_non_null(stage[1]);
    for (size_t i = 0; i < XFER_TOTAL; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);

    size_t sent = 0, got = 0, retries = 0, flip = 0;
    for (long iter = 0; got < XFER_TOTAL; iter++) {
        assert_true(iter < 1000000);
        /* Writer: whole 16 KiB pieces until the socket is full. A retry after WANT_WRITE passes
         * the same bytes from the other staging buffer (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */
        while (sent < XFER_TOTAL) {
            size_t n = XFER_TOTAL - sent < XFER_PIECE ? XFER_TOTAL - sent : XFER_PIECE;
            uint8_t *buf = stage[flip & 1];
            memcpy(buf, src + sent, n);
            int w = SSL_write(p.c, buf, (int)n);
            if (w > 0) {
                assert_int_equal(w, (int)n); /* no partial writes */
                sent += n;
                continue;
            }
            assert_int_equal(SSL_get_error(p.c, w), SSL_ERROR_WANT_WRITE);
            memset(buf, 0xee, n); /* the old buffer must not be read again */
            flip++;
            retries++;
            break;
        }
        /* Reader: until WANT_READ. */
        for (;;) {
            int r = SSL_read(p.s, dst + got,
                             (int)(XFER_TOTAL - got < 65536 ? XFER_TOTAL - got : 65536));
            if (r > 0) {
                got += (size_t)r;
                continue;
            }
            assert_int_equal(SSL_get_error(p.s, r), SSL_ERROR_WANT_READ);
            break;
        }
    }
    assert_int_equal(sent, XFER_TOTAL);
    assert_memory_equal(src, dst, XFER_TOTAL);
    assert_true(retries > 0); /* the socketpair did push back: the retry path ran */

    /* And back the other way, one piece, to show both directions work. */
    assert_int_equal(SSL_write(p.s, src, 1000), 1000);
    assert_int_equal(SSL_read(p.c, dst, 4096), 1000);
    assert_memory_equal(src, dst, 1000);

    free(stage[0]);
    free(stage[1]);
    free(src);
    free(dst);
    pair_free(&p);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

/* ---- sockets ------------------------------------------------------------------------------- */

static void test_parse_addr(void **state)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
    char text[INET6_ADDRSTRLEN];

    assert_int_equal(et_sock_parse_addr("127.0.0.1:443", &ss, &sl), ET_OK);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(sl, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(sin->sin_port), 443);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);

    assert_int_equal(et_sock_parse_addr("localhost:8080", &ss, &sl), ET_OK);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 8080);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);

    assert_int_equal(et_sock_parse_addr("0.0.0.0:0", &ss, &sl), ET_OK);
    assert_int_equal(sin->sin_addr.s_addr, 0);
    assert_int_equal(sin->sin_port, 0);

    assert_int_equal(et_sock_parse_addr("10.1.2.3:65535", &ss, &sl), ET_OK);
    assert_int_equal(ntohs(sin->sin_port), 65535);
    assert_string_equal(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)), "10.1.2.3");

    assert_int_equal(et_sock_parse_addr("[::1]:8443", &ss, &sl), ET_OK);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(sl, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(sin6->sin6_port), 8443);
    assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

    assert_int_equal(et_sock_parse_addr("[::]:1", &ss, &sl), ET_OK);
    assert_true(IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr));

    assert_int_equal(et_sock_parse_addr("[2001:db8::a:b]:80", &ss, &sl), ET_OK);
    assert_string_equal(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)), "2001:db8::a:b");

    assert_int_equal(et_sock_parse_addr("[fe80::1%1]:80", &ss, &sl), ET_OK);
    assert_int_equal(sin6->sin6_scope_id, 1);
    assert_int_equal(et_sock_parse_addr("[fe80::1%lo]:80", &ss, &sl), ET_OK);
    assert_true(sin6->sin6_scope_id > 0);

    const char *bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":80",
        "127.0.0.1:65536",
        "127.0.0.1:99999",
        "127.0.0.1:123456",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:80x",
        "127.0.0.1: 80",
        " 127.0.0.1:80",
        "127.1:80",
        "0x7f.0.0.1:80",
        "256.0.0.1:80",
        "1.2.3.4.5:80",
        "example.com:80",
        "localhost.:80",
        "LOCALHOST:80",
        "::1:80",
        "::1",
        "[::1]",
        "[::1]:",
        "[::1]80",
        "[::1",
        "[]:80",
        "[127.0.0.1]:80",
        "[::1]:80:80",
        "[fe80::1%]:80",
        "[fe80::1%no-such-if0]:80",
        "[::g]:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (et_sock_parse_addr(bad[i], &ss, &sl) != ET_E_CONFIG)
            fail_msg("accepted bad address #%zu \"%s\"", i, bad[i]);
    }
    assert_int_equal(et_sock_parse_addr(NULL, &ss, &sl), ET_E_USAGE);
}

/* local_port returns the port |fd| is bound to. */
static uint16_t local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    return ntohs(((const struct sockaddr_in *)&ss)->sin_port);
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

static void wait_for(int fd, short ev)
{
    struct pollfd pfd = {.fd = fd, .events = ev};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
}

/* tcp_pair connects a client to a fresh listener and accepts it. */
static void tcp_pair(int *lfd, int *cfd, int *afd)
{
    assert_int_equal(et_sock_listen("127.0.0.1:0", 0, lfd), ET_OK);
    assert_true(fcntl(*lfd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(*lfd, F_GETFD) & FD_CLOEXEC);
    struct sockaddr_in sin = loopback(local_port(*lfd));
    int rv = et_sock_connect_start((const struct sockaddr *)&sin, sizeof(sin), cfd);
    assert_true(rv == ET_OK || rv == ET_E_AGAIN);
    assert_true(*cfd >= 0);
    wait_for(*cfd, POLLOUT);
    assert_int_equal(et_sock_connect_result(*cfd), ET_OK);
    wait_for(*lfd, POLLIN);
    *afd = accept4(*lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(*afd >= 0);
}

static void test_reset_close(void **state)
{
    int lfd, cfd, afd;
    tcp_pair(&lfd, &cfd, &afd);
    /* Unread data on the accepted side makes no difference: the peer gets a RST either way. */
    assert_int_equal(write(cfd, "hello", 5), 5);
    et_sock_reset_close(afd);
    wait_for(cfd, POLLIN);
    char buf[16];
    errno = 0;
    assert_int_equal(read(cfd, buf, sizeof(buf)), -1);
    assert_int_equal(errno, ECONNRESET);
    et_sock_reset_close(-1); /* does nothing */
    close(cfd);
    close(lfd);
}

static void test_connect_refused(void **state)
{
    int lfd;
    assert_int_equal(et_sock_listen("127.0.0.1:0", 0, &lfd), ET_OK);
    struct sockaddr_in sin = loopback(local_port(lfd));
    close(lfd); /* nobody listens there now */
    int fd = -2;
    int rv = et_sock_connect_start((const struct sockaddr *)&sin, sizeof(sin), &fd);
    if (rv == ET_E_IO) {
        assert_int_equal(errno, ECONNREFUSED);
        assert_int_equal(fd, -1);
        return;
    }
    assert_int_equal(rv, ET_E_AGAIN);
    wait_for(fd, POLLOUT);
    errno = 0;
    assert_int_equal(et_sock_connect_result(fd), ET_E_IO);
    assert_int_equal(errno, ECONNREFUSED);
    close(fd);
}

static void test_sock_options(void **state)
{
    int lfd, cfd, afd;
    tcp_pair(&lfd, &cfd, &afd);
    int v = 0;
    socklen_t vl = sizeof(v);

    /* connect_start already set TCP_NODELAY on the client side. */
    assert_int_equal(getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    assert_true(v != 0);
    assert_int_equal(et_sock_set_nodelay(afd), ET_OK);
    vl = sizeof(v);
    assert_int_equal(getsockopt(afd, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    assert_true(v != 0);

    assert_int_equal(et_sock_set_notsent_lowat(afd, 32768), ET_OK);
    vl = sizeof(v);
    assert_int_equal(getsockopt(afd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, &vl), 0);
    assert_int_equal(v, 32768);

    assert_false(fcntl(afd, F_GETFL) & O_NONBLOCK);
    assert_int_equal(et_sock_set_nonblock(afd), ET_OK);
    assert_true(fcntl(afd, F_GETFL) & O_NONBLOCK);

    /* Failures report ET_E_IO with errno. */
    errno = 0;
    assert_int_equal(et_sock_set_nodelay(-1), ET_E_IO);
    assert_int_equal(errno, EBADF);
    assert_int_equal(et_sock_set_nonblock(-1), ET_E_IO);
    assert_int_equal(et_sock_set_notsent_lowat(-1, 1), ET_E_IO);
    assert_int_equal(et_sock_set_notsent_lowat(afd, 0x80000000u), ET_E_USAGE);

    close(afd);
    close(cfd);
    close(lfd);
}

static void test_listen(void **state)
{
    int a, b;
    assert_int_equal(et_sock_listen("127.0.0.1:0", 1, &a), ET_OK);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", local_port(a));
    /* SO_REUSEPORT lets a second reactor listen on the same port... */
    assert_int_equal(et_sock_listen(addr, 1, &b), ET_OK);
    close(b);
    /* ...without it the port is taken. */
    errno = 0;
    assert_int_equal(et_sock_listen(addr, 0, &b), ET_E_IO);
    assert_int_equal(errno, EADDRINUSE);
    assert_int_equal(b, -1);
    close(a);

    assert_int_equal(et_sock_listen("nonsense", 0, &b), ET_E_CONFIG);
    /* IPv6 loopback, where the machine has it. */
    if (et_sock_listen("[::1]:0", 0, &b) == ET_OK)
        close(b);
    else
        assert_true(errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/et_tls_test_XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    int rc = 1;
    if (ident_make(&id_a, "localhost", "a") != 0 || ident_make(&id_b, "other.test", "b") != 0) {
        fprintf(stderr, "fixture setup failed\n");
        goto out;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pin_parse_ok),
        cmocka_unit_test(test_pin_parse_bad),
        cmocka_unit_test(test_pin_of_cert_file),
        cmocka_unit_test(test_spki_digest_bad),
        cmocka_unit_test(test_selfsigned_cert),
        cmocka_unit_test(test_handshake_pin_ok),
        cmocka_unit_test(test_handshake_pin_wrong),
        cmocka_unit_test(test_handshake_selfsigned_ctx),
        cmocka_unit_test(test_handshake_alpn_required),
        cmocka_unit_test(test_handshake_ca_mode),
        cmocka_unit_test(test_handshake_insecure),
        cmocka_unit_test(test_client_opts_bad),
        cmocka_unit_test(test_server_ctx_bad),
        cmocka_unit_test(test_err_string),
        cmocka_unit_test(test_transfer_1mib),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_reset_close),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_sock_options),
        cmocka_unit_test(test_listen),
    };
    rc = TU_RUN("tls", tests);
out:
    ident_free(&id_a);
    ident_free(&id_b);
    rmdir(tmpdir);
    return rc;
}
