/* tls.h: transport setup: TLS 1.3 contexts for both sides (spec/protocol.md §2), certificate pins,
 * and the socket helpers the tunnel needs before and around TLS.
 *
 * This module configures; it does not move bytes. The tunnel code drives nonblocking SSL_read,
 * SSL_write and SSL_do_handshake itself on SSL objects made from these contexts.
 *
 * Every context is TLS 1.3 only and speaks ALPN "edgetunnel/1":
 *   - a server context refuses, during the handshake, a client that offers no ALPN or does not
 *     offer "edgetunnel/1" (alert no_application_protocol, or handshake_failure when the
 *     extension is absent). It asks for no client certificate.
 *   - a client context offers "edgetunnel/1"; after the handshake the caller checks
 *     et_tls_alpn_ok, because a server may legally answer without ALPN.
 * Contexts use SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER (a retried SSL_write may pass the same bytes
 * at a new address, e.g. after an output queue compacts) and never SSL_MODE_ENABLE_PARTIAL_WRITE
 * (SSL_write reports all of its bytes or none).
 *
 * The client verifies the edge in exactly one of three ways (et_tls_client_opts):
 *   - CA: the chain against a CA bundle file, and the host name given to et_tls_client_prepare;
 *   - pin: SHA-256 of the DER SubjectPublicKeyInfo of the leaf certificate equals the pin;
 *   - insecure: nothing is verified. ANYONE ON THE PATH CAN READ AND FORGE THE TUNNEL. For
 *     development against a throw-away edge only.
 *
 * Errors: ET_E_CONFIG when files, pins or option combinations are wrong, ET_E_TLS when
 * BoringSSL fails (et_tls_err_string explains), ET_E_NOMEM, ET_E_USAGE for NULL arguments,
 * ET_E_IO for system calls (errno is preserved for the caller). */
#ifndef ET_TLS_H
#define ET_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/base.h>

#include "et/result.h"

/* The ALPN protocol of spec/protocol.md §2. */
#define ET_TLS_ALPN "edgetunnel/1"

/* Text form of a pin: "sha256:" + 64 lowercase hex digits; ET_TLS_PIN_LEN counts the NUL. */
#define ET_TLS_PIN_PREFIX "sha256:"
#define ET_TLS_PIN_LEN    (7 + 64 + 1)

/* ---- contexts ------------------------------------------------------------------------------ */

/* et_tls_server_ctx_new loads the certificate chain of |cert_pem_path| (leaf first) and the
 * private key of |key_pem_path| into a new server context and stores it in |*out|; the caller
 * owns it (SSL_CTX_free). Fails with ET_E_CONFIG when a file is unreadable, malformed, or the
 * key does not match the certificate. */
ET_MUST_USE int et_tls_server_ctx_new(const char *cert_pem_path, const char *key_pem_path,
                                      SSL_CTX **out);

/* et_tls_selfsigned_new generates an ECDSA P-256 key and a self-signed X.509 v3 certificate for
 * it: subject and issuer CN=|common_name|, subjectAltName DNS:localhost, IP:127.0.0.1 and
 * |common_name| itself (as a DNS name, or an IP address if it parses as one) when it is neither
 * of those two, validity from one hour ago to 30 days ahead, a random 127-bit serial, signed
 * with SHA-256. On success the caller owns |*key_out| (EVP_PKEY_free) and |*cert_out|
 * (X509_free). */
ET_MUST_USE int et_tls_selfsigned_new(const char *common_name, EVP_PKEY **key_out, X509 **cert_out);

/* et_tls_server_ctx_new_selfsigned makes a server context (as et_tls_server_ctx_new) around a
 * fresh et_tls_selfsigned_new key and certificate that live only in memory, stores it in |*out|
 * (caller owns it) and writes the certificate's pin to |pin_out|. For `edged --dev`: the origin
 * connects with that pin. */
ET_MUST_USE int et_tls_server_ctx_new_selfsigned(const char *common_name, SSL_CTX **out,
                                                 char pin_out[ET_TLS_PIN_LEN]);

/* How a client verifies the edge: set exactly one of the three. */
typedef struct et_tls_client_opts {
    const char *ca_file; /* PEM CA bundle; the host name is checked too (et_tls_client_prepare) */
    const char *pin;     /* "sha256:<64 hex>" of the edge's leaf SPKI (et_tls_pin_parse) */
    int insecure;        /* nonzero: verify nothing. DEVELOPMENT ONLY, see the top of this file */
} et_tls_client_opts;

/* et_tls_client_ctx_new makes a client context that verifies the edge as |o| says, stores it in
 * |*out| (caller owns it). Does not keep |o| or its strings. Fails with ET_E_CONFIG unless
 * exactly one verification mode is set, when the pin does not parse, or when the CA file cannot
 * be loaded. */
ET_MUST_USE int et_tls_client_ctx_new(const et_tls_client_opts *o, SSL_CTX **out);

/* et_tls_client_prepare readies a fresh client |ssl| (made from an et_tls_client_ctx_new
 * context) for connecting to |hostname|: sends it as SNI unless it is an IP literal and, in CA
 * mode, requires the certificate to match it: a DNS subjectAltName (the subject CN is never
 * used), or an IP address subjectAltName for an IP literal.
 * |hostname| may be NULL in pin and insecure modes (no SNI); in CA mode NULL is ET_E_USAGE.
 * Call before the first SSL_do_handshake / SSL_connect. */
ET_MUST_USE int et_tls_client_prepare(SSL *ssl, const char *hostname);

/* et_tls_set_fd attaches connected nonblocking socket |fd| (not owned) to |ssl|: writes go
 * straight to the socket, reads through a buffer of |read_size| bytes that one recv() fills.
 * BoringSSL reads a record as two reads (its 5-byte header, then its body) and has no
 * read-ahead, so a socket BIO costs two syscalls per 16 KiB record; this costs one per
 * |read_size| bytes. SSL_read still reports WANT_READ only once the buffer is empty and the
 * socket said EAGAIN, so edge-triggered readers keep their rule (read until WANT_READ).
 * Returns ET_OK or ET_E_NOMEM. */
ET_MUST_USE int et_tls_set_fd(SSL *ssl, int fd, size_t read_size);

/* et_tls_alpn_ok returns 1 if "edgetunnel/1" was negotiated on |ssl|, else 0. A client must
 * check it after its handshake and close the connection on 0. */
int et_tls_alpn_ok(const SSL *ssl);

/* ---- pins ---------------------------------------------------------------------------------- */

/* et_tls_pin_parse decodes |text| ("sha256:" followed by exactly 64 hex digits of either case,
 * nothing else) into the 32-byte digest |out|. Returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_tls_pin_parse(const char *text, uint8_t out[32]);

/* et_tls_pin_format writes the text form of |digest| (lowercase hex) to |out|. */
void et_tls_pin_format(const uint8_t digest[32], char out[ET_TLS_PIN_LEN]);

/* et_tls_spki_digest computes SHA-256 of the DER SubjectPublicKeyInfo inside the DER
 * certificate |der| (|len| bytes). Does not allocate. Returns ET_OK, or ET_E_CONFIG when |der|
 * is not a certificate. */
ET_MUST_USE int et_tls_spki_digest(const uint8_t *der, size_t len, uint8_t out[32]);

/* et_tls_pin_of_cert writes the pin of |cert| to |out|. Does not take ownership of |cert|. */
ET_MUST_USE int et_tls_pin_of_cert(X509 *cert, char out[ET_TLS_PIN_LEN]);

/* et_tls_pin_of_cert_file writes the pin of the first certificate of the PEM file |pem_path|
 * (the leaf, for a chain file) to |out|. ET_E_CONFIG if there is none. */
ET_MUST_USE int et_tls_pin_of_cert_file(const char *pem_path, char out[ET_TLS_PIN_LEN]);

/* ---- errors -------------------------------------------------------------------------------- */

/* et_tls_err_string drains this thread's BoringSSL error queue into |buf| (|n| bytes, always
 * NUL-terminated when n > 0) as "; "-separated entries, "no tls error" when the queue is empty,
 * and returns |buf|. The queue is emptied even when the text is cut. */
const char *et_tls_err_string(char *buf, size_t n);

/* ---- sockets ------------------------------------------------------------------------------- */

/* et_sock_set_nodelay sets TCP_NODELAY on |fd|. */
ET_MUST_USE int et_sock_set_nodelay(int fd);

/* et_sock_set_notsent_lowat sets TCP_NOTSENT_LOWAT on |fd| to |bytes|: EPOLLOUT then means the
 * unsent part of the kernel buffer is below |bytes| (ENGINE.md, "Keeping cancels out of
 * queues"). */
ET_MUST_USE int et_sock_set_notsent_lowat(int fd, unsigned bytes);

/* ET_CC_NAME_MAX: the longest congestion-control name (the kernel's TCP_CA_NAME_MAX, 16, with
 * its NUL). */
#define ET_CC_NAME_MAX 16
/* ET_CC_DEFAULT: what --tcp-congestion asks for unless told (bench/README.md, "Across a shaped
 * link": BBR keeps the bottleneck queue, and so what crosses it behind a flood, 4x shorter). */
#define ET_CC_DEFAULT "bbr"

/* et_sock_set_congestion sets TCP_CONGESTION on |fd| to |name| ("bbr", "cubic", ...). Fails
 * (ET_E_IO, errno kept) when the kernel has no such algorithm (ENOENT) or does not let this
 * process pick it (EPERM: net.ipv4.tcp_allowed_congestion_control). */
ET_MUST_USE int et_sock_set_congestion(int fd, const char *name);

/* et_sock_congestion writes the name of the congestion control |fd| uses to |out| (at least
 * ET_CC_NAME_MAX bytes, NUL-terminated; "" when the kernel does not say). */
void et_sock_congestion(int fd, char *out);

/* et_sock_set_nonblock sets O_NONBLOCK on |fd|. */
ET_MUST_USE int et_sock_set_nonblock(int fd);

/* et_sock_reset_close closes |fd| with SO_LINGER {1, 0}: unsent data is dropped and the peer
 * gets a RST (its reads fail with ECONNRESET) instead of a FIN. Always closes |fd|; a negative
 * |fd| does nothing. For cancelling toward clients and origins. */
void et_sock_reset_close(int fd);

/* et_sock_parse_addr parses "host:port" where host is a dotted-quad IPv4 address, "localhost"
 * (127.0.0.1), or a bracketed IPv6 address ("[::1]:443", "[fe80::1%eth0]:443"), and port is
 * 0..65535 in decimal. Never resolves names. Writes the address to |*out| and its length to
 * |*len|. Returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_sock_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len);

/* et_sock_listen opens a nonblocking, close-on-exec TCP listening socket on |addr|
 * (et_sock_parse_addr syntax) with SO_REUSEADDR, SO_REUSEPORT if |reuseport|, backlog 4096, and
 * stores it in |*fd_out| (caller owns it). ET_E_CONFIG for a bad address, else ET_E_IO. */
ET_MUST_USE int et_sock_listen(const char *addr, int reuseport, int *fd_out);

/* et_sock_connect_start opens a nonblocking, close-on-exec TCP socket with TCP_NODELAY and starts
 * connecting it to |sa|. Returns ET_OK when connected at once, ET_E_AGAIN while in progress (wait
 * for EPOLLOUT, then et_sock_connect_result); in both cases |*fd_out| is the socket and the
 * caller owns it. On ET_E_IO nothing is left open and |*fd_out| is -1. */
ET_MUST_USE int et_sock_connect_start(const struct sockaddr *sa, socklen_t len, int *fd_out);

/* et_sock_connect_result reads the outcome of a connect started by et_sock_connect_start once
 * the socket reported EPOLLOUT (or EPOLLERR/EPOLLHUP): ET_OK when connected, ET_E_IO with errno
 * set to the reason (ECONNREFUSED, ETIMEDOUT, ...) otherwise. */
ET_MUST_USE int et_sock_connect_result(int fd);

#endif
