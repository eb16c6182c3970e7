/* tls_relay.c: the ceiling for a one-TLS-leg tunnel on this machine (bench/relay.py).
 *
 *     tls_relay edge   --listen 127.0.0.1:P --connect 127.0.0.1:T
 *     tls_relay origin --tls-listen 127.0.0.1:T --cert C --key K --target 127.0.0.1:S
 *     common options:  [--max-conns 64] [--idle-timeout 60]
 *
 * client -plain-> edge -TLS 1.3-> origin -plain-> service: the tunnel's shape with none of its
 * framing, multiplexing or reactor. The edge accepts plain TCP clients and opens ONE TLS
 * connection to the origin per client; the origin accepts TLS and opens one plain TCP
 * connection to the target per TLS connection. Bytes are copied as they come.
 *
 * Per connection and per process, two threads, one per direction: plain -> TLS reads up to 64 KiB
 * from the plain socket and writes it as 16 KiB SSL_write records; TLS -> plain reads records
 * (up to 64 KiB at a time) and writes them to the plain socket. Plain sockets are blocking.
 * BoringSSL's SSL object is not thread-safe (ssl.h: "may only be used on one thread at a
 * time"), so every call on it holds the connection's mutex, and the TLS socket is nonblocking:
 * a thread that gets WANT_READ / WANT_WRITE drops the mutex and blocks in poll(). The mutex is
 * never held across a wait, so a full pipe in one direction cannot stall the other.
 *
 * End of stream: EOF on a plain socket becomes a close_notify and shutdown(SHUT_WR) on the TLS
 * socket; a close_notify becomes shutdown(SHUT_WR) on the plain socket. Anything else (a read
 * or write error, a TLS end without close_notify, a failed setup) aborts the connection: both
 * sockets are shut down to wake the other thread and closed with SO_LINGER 0 (RST), so a
 * truncated stream never looks complete.
 *
 * Bounds: --max-conns live connections (more are reset at once), 10 s to connect and finish a
 * handshake, --idle-timeout seconds without a byte in either direction, every blocking call
 * wakes at least once a second to check them. SIGTERM / SIGINT: stop accepting, abort live
 * connections, wait up to 5 s for them, log event=stats, exit 0 (2 if some did not end).
 *
 * No certificate verification on the edge's TLS client: this is a bench ceiling on loopback,
 * NOT a tunnel. Logs are key=value lines on stderr; the origin's event=ready line names the
 * cipher suite and group its default TLS 1.3 configuration negotiates (a handshake with itself
 * over a socketpair at start), and each side logs them again for every connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define PLAIN_READ     (64 * 1024) /* one read from a plain socket; one TLS -> plain batch */
#define TLS_RECORD     (16 * 1024) /* plaintext per SSL_write: one full TLS record */
#define TICK_MS        1000        /* longest a blocked thread goes without checking its bounds */
#define SETUP_MS       10000       /* connect + handshake */
#define STOP_GRACE_MS  5000        /* SIGTERM: how long live connections get to end */
#define THREAD_STACK   (256 * 1024)
#define MAX_CONNS_CAP  4096
#define HANDSHAKE_ITER 100000 /* cap on handshake steps, on top of SETUP_MS */

enum role { ROLE_EDGE, ROLE_ORIGIN };

struct cfg {
    enum role role;
    const char *listen; /* edge: plain clients; origin: TLS from the edge */
    const char *peer;   /* edge: the origin's TLS address; origin: the service */
    const char *cert;
    const char *key;
    int max_conns;
    int idle_s;
};

struct conn {
    unsigned long id;
    int plain_fd;
    int tls_fd;
    SSL *ssl;
    pthread_mutex_t mu; /* held for every call on ssl, never across a wait */
    atomic_int refs;    /* threads using the connection; the last one frees it */
    atomic_bool aborted;
    const char *reason;   /* why it was aborted; written once, by the first conn_abort */
    atomic_llong last_ns; /* last byte moved in either direction */
    atomic_ullong p2t;    /* plaintext bytes plain -> TLS */
    atomic_ullong t2p;    /* plaintext bytes TLS -> plain */
    atomic_bool p2t_clean;
    atomic_bool t2p_clean;
};

static struct cfg g_cfg = {.max_conns = 64, .idle_s = 60};
static SSL_CTX *g_ctx;
static struct sockaddr_in g_listen_addr, g_peer_addr;
static atomic_bool g_stop;
static pthread_mutex_t g_live_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_live_cv = PTHREAD_COND_INITIALIZER;
static int g_live;
static unsigned long g_next_id;
static atomic_ullong g_bytes_p2t, g_bytes_t2p;
static atomic_ulong g_conns, g_conns_clean, g_conns_failed, g_conns_refused;

__attribute__((format(printf, 1, 2))) static void logmsg(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s role=%s\n", line, g_cfg.role == ROLE_EDGE ? "edge" : "origin");
}

static const char *tls_err(char *buf, size_t n)
{
    uint32_t e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, n, "none");
    } else {
        ERR_error_string_n(e, buf, n);
    }
    ERR_clear_error();
    for (char *p = buf; *p != '\0'; p++) {
        if (*p == ' ') {
            *p = '_'; /* keep key=value lines one token per value */
        }
    }
    return buf;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- sockets ------------------------------------------------------------------------------- */

/* "a.b.c.d:port" or "localhost:port"; no name resolution. */
static int parse_addr(const char *text, struct sockaddr_in *out)
{
    const char *colon = strrchr(text, ':');
    char host[64];
    if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof host) {
        return -1;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof host, "127.0.0.1");
    }
    char *end = NULL;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port > 65535) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int listen_on(const struct sockaddr_in *sa)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 || listen(fd, 512) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        return -1;
    }
    return fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

/* A plain socket: blocking, TCP_NODELAY, every send/recv returns within TICK_MS. */
static int plain_opts(int fd)
{
    int one = 1;
    struct timeval tv = {.tv_sec = TICK_MS / 1000, .tv_usec = (TICK_MS % 1000) * 1000};
    if (set_nonblock(fd, false) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
        return -1;
    }
    return 0;
}

/* The TLS socket: nonblocking (waits are poll()s with the mutex dropped), TCP_NODELAY. */
static int tls_opts(int fd)
{
    int one = 1;
    if (set_nonblock(fd, true) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        return -1;
    }
    return 0;
}

static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Waits for |ev| on |fd| until |deadline| (monotonic ns), in TICK-sized polls that check
 * g_stop. Returns 0 when ready, -1 otherwise. */
static int wait_until(int fd, short ev, long long deadline)
{
    for (int i = 0; i < SETUP_MS / 100 + 10; i++) {
        long long left_ms = (deadline - now_ns()) / 1000000;
        if (atomic_load(&g_stop) || left_ms <= 0) {
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, left_ms < 100 ? (int)left_ms : 100);
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
    return -1;
}

/* A connected TCP socket to |sa| within SETUP_MS (left nonblocking), or -1. */
static int dial(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0) {
        return fd;
    }
    int err = errno;
    if (err == EINPROGRESS) {
        socklen_t len = sizeof err;
        if (wait_until(fd, POLLOUT, now_ns() + SETUP_MS * 1000000LL) != 0) {
            err = ETIMEDOUT;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
    }
    if (err == 0) {
        return fd;
    }
    close(fd);
    errno = err;
    return -1;
}

/* ---- TLS contexts -------------------------------------------------------------------------- */

static SSL_CTX *ctx_new(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static SSL_CTX *client_ctx_new(void)
{
    SSL_CTX *ctx = ctx_new();
    if (ctx != NULL) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* bench ceiling: see the top */
    }
    return ctx;
}

static SSL_CTX *server_ctx_new(const char *cert, const char *key)
{
    SSL_CTX *ctx = ctx_new();
    if (ctx == NULL) {
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert) ||
        !SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(ctx)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static const char *cipher_name(const SSL *ssl)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    return c != NULL ? SSL_CIPHER_standard_name(c) : "none";
}

static const char *group_name(const SSL *ssl)
{
    const char *g = SSL_get_curve_name(SSL_get_curve_id(ssl));
    return g != NULL ? g : "none";
}

/* The origin's start-up check: a handshake between the edge's client configuration and this
 * server context over a socketpair, to name the cipher suite they negotiate. */
static char g_cipher[64] = "none", g_group[32] = "none", g_version[16] = "none";

static int selfcheck(SSL_CTX *server_ctx)
{
    int sv[2] = {-1, -1};
    int rc = -1;
    SSL_CTX *cctx = client_ctx_new();
    SSL *c = NULL, *s = NULL;
    if (cctx == NULL ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        goto out;
    }
    c = SSL_new(cctx);
    s = SSL_new(server_ctx);
    if (c == NULL || s == NULL || !SSL_set_fd(c, sv[0]) || !SSL_set_fd(s, sv[1])) {
        goto out;
    }
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    bool cdone = false, sdone = false;
    for (int i = 0; i < 1000 && !(cdone && sdone); i++) {
        SSL *side[2] = {c, s};
        bool *done[2] = {&cdone, &sdone};
        for (int k = 0; k < 2; k++) {
            if (*done[k]) {
                continue;
            }
            int r = SSL_do_handshake(side[k]);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(side[k], r);
            if (r == 1) {
                *done[k] = true;
            } else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                goto out;
            }
        }
    }
    if (cdone && sdone) {
        snprintf(g_cipher, sizeof g_cipher, "%s", cipher_name(c));
        snprintf(g_group, sizeof g_group, "%s", group_name(c));
        snprintf(g_version, sizeof g_version, "%s", SSL_get_version(c));
        rc = 0;
    }
out:
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    for (int k = 0; k < 2; k++) {
        if (sv[k] >= 0) {
            close(sv[k]);
        }
    }
    return rc;
}

/* ---- connections --------------------------------------------------------------------------- */

static void conn_touch(struct conn *c)
{
    atomic_store(&c->last_ns, now_ns());
}

/* True when a thread of |c| should give up waiting: stopping, aborted, or idle too long. */
static bool conn_should_quit(struct conn *c)
{
    if (atomic_load(&g_stop) || atomic_load(&c->aborted)) {
        return true;
    }
    return now_ns() - atomic_load(&c->last_ns) > (long long)g_cfg.idle_s * 1000000000LL;
}

static const char *quit_reason(void)
{
    return atomic_load(&g_stop) ? "stopping" : "idle_timeout";
}

/* Ends |c| abruptly and makes the final close a RST. shutdown(SHUT_RD) sends nothing (a FIN
 * here would show the peer a clean end before the RST) but wakes a thread blocked in recv() on
 * either socket; one blocked in send() or poll(POLLOUT) sees |aborted| at its next tick. */
static void conn_abort(struct conn *c, const char *reason)
{
    if (atomic_exchange(&c->aborted, true)) {
        return;
    }
    c->reason = reason;
    if (c->plain_fd >= 0) {
        shutdown(c->plain_fd, SHUT_RD);
    }
    if (c->tls_fd >= 0) {
        shutdown(c->tls_fd, SHUT_RD);
    }
}

static void conn_release(struct conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1) {
        return;
    }
    bool aborted = atomic_load(&c->aborted);
    bool clean = !aborted && atomic_load(&c->p2t_clean) && atomic_load(&c->t2p_clean);
    SSL_free(c->ssl);
    int fds[2] = {c->plain_fd, c->tls_fd};
    for (int k = 0; k < 2; k++) {
        if (fds[k] < 0) {
            continue;
        }
        if (aborted) {
            reset_close(fds[k]);
        } else {
            close(fds[k]);
        }
    }
    unsigned long long p2t = atomic_load(&c->p2t), t2p = atomic_load(&c->t2p);
    atomic_fetch_add(&g_bytes_p2t, p2t);
    atomic_fetch_add(&g_bytes_t2p, t2p);
    if (clean) {
        atomic_fetch_add(&g_conns_clean, 1);
    }
    logmsg("event=close id=%lu p2t=%llu t2p=%llu clean=%d reason=%s", c->id, p2t, t2p,
           clean ? 1 : 0, aborted && c->reason != NULL ? c->reason : "eof");
    pthread_mutex_destroy(&c->mu);
    free(c);
    pthread_mutex_lock(&g_live_mu);
    g_live--;
    pthread_cond_broadcast(&g_live_cv);
    pthread_mutex_unlock(&g_live_mu);
}

/* Drops the mutex and waits for |ev| on the TLS socket, at most TICK_MS. 0: try again. */
static int tls_wait(struct conn *c, short ev)
{
    struct pollfd p = {.fd = c->tls_fd, .events = ev};
    int r = poll(&p, 1, TICK_MS);
    if (r < 0 && errno != EINTR) {
        return -1;
    }
    if (atomic_load(&c->aborted) || atomic_load(&g_stop)) {
        return -1;
    }
    if (r == 0 && conn_should_quit(c)) {
        return -1;
    }
    return 0;
}

/* Runs one SSL_* step under the mutex. Returns 1 on success, else the SSL_get_error code as a
 * negative number. */
enum tls_op { OP_HANDSHAKE, OP_WRITE, OP_SHUTDOWN };

static int tls_step(struct conn *c, enum tls_op op, const uint8_t *p, size_t len)
{
    int r;
    bool ok;
    pthread_mutex_lock(&c->mu);
    switch (op) {
    case OP_HANDSHAKE:
        r = SSL_do_handshake(c->ssl);
        ok = r == 1;
        break;
    case OP_WRITE:
        r = SSL_write(c->ssl, p, (int)len);
        ok = r > 0;
        break;
    default:
        r = SSL_shutdown(c->ssl); /* 0 or 1: close_notify sent */
        ok = r >= 0;
        break;
    }
    int e = ok ? 1 : -SSL_get_error(c->ssl, r); /* under the mutex: it reads |ssl|'s state */
    pthread_mutex_unlock(&c->mu);
    return e;
}

/* Writes |len| <= TLS_RECORD bytes as one record (no partial writes: BoringSSL reports all or
 * nothing, and a retry passes the same bytes). */
static int tls_write(struct conn *c, const uint8_t *p, size_t len)
{
    for (;;) {
        int e = tls_step(c, OP_WRITE, p, len);
        if (e == 1) {
            return 0;
        }
        if (e == -SSL_ERROR_WANT_WRITE || e == -SSL_ERROR_WANT_READ) {
            if (tls_wait(c, e == -SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN) != 0) {
                return -1;
            }
            continue;
        }
        char buf[160];
        logmsg("event=tls_error id=%lu op=write err=%d detail=%s", c->id, -e,
               tls_err(buf, sizeof buf));
        return -1;
    }
}

/* Sends close_notify, then shutdown(SHUT_WR) on the TLS socket. */
static int tls_close_notify(struct conn *c)
{
    for (int i = 0; i < 1000; i++) {
        int e = tls_step(c, OP_SHUTDOWN, NULL, 0);
        /* -WANT_READ only after the alert went out (the second stage of SSL_shutdown). */
        if (e == 1 || e == -SSL_ERROR_WANT_READ) {
            return shutdown(c->tls_fd, SHUT_WR) == 0 ? 0 : -1;
        }
        if (e != -SSL_ERROR_WANT_WRITE || tls_wait(c, POLLOUT) != 0) {
            return -1;
        }
    }
    return -1;
}

static int send_all(struct conn *c, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->plain_fd, p + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !conn_should_quit(c)) {
            continue; /* SO_SNDTIMEO tick: still within bounds */
        } else {
            return -1;
        }
    }
    return 0;
}

/* plain -> TLS: 64 KiB reads, 16 KiB records; EOF becomes close_notify. */
static void pump_p2t(struct conn *c)
{
    uint8_t *buf = malloc(PLAIN_READ);
    if (buf == NULL) {
        conn_abort(c, "nomem");
        return;
    }
    for (;;) {
        ssize_t n = recv(c->plain_fd, buf, PLAIN_READ, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if ((errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (!conn_should_quit(c)) {
                    continue; /* SO_RCVTIMEO tick */
                }
                conn_abort(c, quit_reason());
            } else {
                conn_abort(c, "plain_read_error");
            }
            break;
        }
        if (n == 0) {
            if (atomic_load(&c->aborted)) {
                break; /* woken by conn_abort's SHUT_RD, not the peer's FIN */
            }
            if (tls_close_notify(c) != 0) {
                conn_abort(c, "tls_close_notify_failed");
            } else {
                atomic_store(&c->p2t_clean, true);
            }
            break;
        }
        for (size_t off = 0; off < (size_t)n; off += TLS_RECORD) {
            size_t k = (size_t)n - off < TLS_RECORD ? (size_t)n - off : TLS_RECORD;
            if (tls_write(c, buf + off, k) != 0) {
                conn_abort(c, atomic_load(&c->aborted) || atomic_load(&g_stop)
                                  ? "stopping"
                                  : "tls_write_failed");
                goto out;
            }
        }
        atomic_fetch_add(&c->p2t, (unsigned long long)n);
        conn_touch(c);
    }
out:
    free(buf);
}

/* TLS -> plain: up to 64 KiB of records per plain write; close_notify becomes SHUT_WR. */
static void pump_t2p(struct conn *c)
{
    uint8_t *buf = malloc(PLAIN_READ);
    if (buf == NULL) {
        conn_abort(c, "nomem");
        return;
    }
    for (;;) {
        size_t have = 0;
        int err = SSL_ERROR_NONE;
        pthread_mutex_lock(&c->mu);
        while (have + TLS_RECORD <= PLAIN_READ) {
            int r = SSL_read(c->ssl, buf + have, (int)(PLAIN_READ - have));
            if (r <= 0) {
                err = SSL_get_error(c->ssl, r);
                break;
            }
            have += (size_t)r;
        }
        pthread_mutex_unlock(&c->mu);
        if (have > 0) {
            if (send_all(c, buf, have) != 0) {
                conn_abort(c, conn_should_quit(c) ? quit_reason() : "plain_write_error");
                break;
            }
            atomic_fetch_add(&c->t2p, (unsigned long long)have);
            conn_touch(c);
        }
        if (err == SSL_ERROR_NONE) {
            continue;
        }
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            if (have == 0 && tls_wait(c, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) != 0) {
                conn_abort(c, atomic_load(&c->aborted) ? "aborted" : quit_reason());
                break;
            }
            continue;
        }
        if (err == SSL_ERROR_ZERO_RETURN) { /* close_notify: the peer's half is done */
            if (shutdown(c->plain_fd, SHUT_WR) != 0) {
                conn_abort(c, "plain_shutdown_error");
            } else {
                atomic_store(&c->t2p_clean, true);
            }
            break;
        }
        if (!atomic_load(&c->aborted)) {
            char detail[160];
            logmsg("event=tls_error id=%lu op=read err=%d detail=%s", c->id, err,
                   tls_err(detail, sizeof detail));
        }
        conn_abort(c, err == SSL_ERROR_SYSCALL ? "tls_eof_without_close_notify" : "tls_error");
        break;
    }
    free(buf);
}

static void *t2p_main(void *arg)
{
    struct conn *c = arg;
    pump_t2p(c);
    conn_release(c);
    return NULL;
}

/* Dials what is missing (edge: the TLS leg; origin: the service) and runs the handshake. */
static int conn_setup(struct conn *c)
{
    long long deadline = now_ns() + SETUP_MS * 1000000LL;
    const char *what = "setup";
    if (g_cfg.role == ROLE_EDGE) {
        what = "dial_origin";
        if (plain_opts(c->plain_fd) != 0 || (c->tls_fd = dial(&g_peer_addr)) < 0) {
            goto fail;
        }
    }
    what = "tls_socket";
    if (tls_opts(c->tls_fd) != 0 || (c->ssl = SSL_new(g_ctx)) == NULL ||
        !SSL_set_fd(c->ssl, c->tls_fd)) {
        goto fail;
    }
    if (g_cfg.role == ROLE_EDGE) {
        SSL_set_connect_state(c->ssl);
    } else {
        SSL_set_accept_state(c->ssl);
    }
    what = "handshake";
    for (int i = 0;; i++) {
        int e = tls_step(c, OP_HANDSHAKE, NULL, 0);
        if (e == 1) {
            break;
        }
        if (i >= HANDSHAKE_ITER || (e != -SSL_ERROR_WANT_READ && e != -SSL_ERROR_WANT_WRITE) ||
            wait_until(c->tls_fd, e == -SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) != 0) {
            char buf[160];
            logmsg("event=setup_failed id=%lu step=%s err=%d detail=%s", c->id, what, -e,
                   tls_err(buf, sizeof buf));
            return -1;
        }
    }
    if (g_cfg.role == ROLE_ORIGIN) {
        what = "dial_target";
        if ((c->plain_fd = dial(&g_peer_addr)) < 0 || plain_opts(c->plain_fd) != 0) {
            goto fail;
        }
    }
    logmsg("event=open id=%lu cipher=%s group=%s version=%s", c->id, cipher_name(c->ssl),
           group_name(c->ssl), SSL_get_version(c->ssl));
    return 0;
fail:
    logmsg("event=setup_failed id=%lu step=%s errno=%d detail=%s", c->id, what, errno,
           strerror(errno));
    return -1;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    conn_touch(c);
    if (conn_setup(c) != 0) {
        atomic_fetch_add(&g_conns_failed, 1);
        conn_abort(c, "setup_failed");
        conn_release(c);
        return NULL;
    }
    conn_touch(c);
    atomic_store(&c->refs, 2);
    pthread_attr_t attr;
    pthread_t t;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setstacksize(&attr, THREAD_STACK);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &attr, t2p_main, c);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        atomic_store(&c->refs, 1);
        conn_abort(c, "thread_create_failed");
    } else {
        pump_p2t(c);
    }
    conn_release(c);
    return NULL;
}

static void conn_start(int fd)
{
    pthread_mutex_lock(&g_live_mu);
    bool full = g_live >= g_cfg.max_conns;
    unsigned long id = ++g_next_id;
    if (!full) {
        g_live++;
    }
    pthread_mutex_unlock(&g_live_mu);
    if (full) {
        atomic_fetch_add(&g_conns_refused, 1);
        logmsg("event=refused id=%lu reason=max_conns", id);
        reset_close(fd);
        return;
    }
    atomic_fetch_add(&g_conns, 1);
    struct conn *c = calloc(1, sizeof *c);
    int rc = -1;
    if (c != NULL) {
        c->id = id;
        c->plain_fd = g_cfg.role == ROLE_EDGE ? fd : -1;
        c->tls_fd = g_cfg.role == ROLE_ORIGIN ? fd : -1;
        atomic_init(&c->refs, 1);
        pthread_mutex_init(&c->mu, NULL);
        pthread_attr_t attr;
        pthread_t t;
        rc = pthread_attr_init(&attr);
        if (rc == 0) {
            pthread_attr_setstacksize(&attr, THREAD_STACK);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            rc = pthread_create(&t, &attr, conn_main, c);
            pthread_attr_destroy(&attr);
        }
    }
    if (rc != 0) {
        logmsg("event=refused id=%lu reason=no_thread", id);
        atomic_fetch_add(&g_conns_failed, 1);
        if (c != NULL) {
            c->plain_fd = c->tls_fd = -1;
            conn_release(c); /* balances g_live++ */
        } else {
            pthread_mutex_lock(&g_live_mu);
            g_live--;
            pthread_mutex_unlock(&g_live_mu);
        }
        reset_close(fd);
    }
}

static void *acceptor_main(void *arg)
{
    int lfd = *(const int *)arg;
    while (!atomic_load(&g_stop)) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int r = poll(&p, 1, TICK_MS);
        if (r <= 0) {
            if (r < 0 && errno != EINTR) {
                logmsg("event=fatal what=poll_listener errno=%d", errno);
                break;
            }
            continue;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                logmsg("event=accept_error errno=%d", errno);
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        conn_start(fd);
    }
    if (!atomic_load(&g_stop)) {
        kill(getpid(), SIGTERM); /* wake main: the listener is gone */
    }
    return NULL;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: tls_relay edge   --listen ADDR:PORT --connect ADDR:PORT [options]\n"
            "       tls_relay origin --tls-listen ADDR:PORT --cert PEM --key PEM "
            "--target ADDR:PORT [options]\n"
            "options: --max-conns N (64, at most %d)  --idle-timeout SECONDS (60)\n",
            MAX_CONNS_CAP);
    exit(2);
}

static int parse_int(const char *s, int lo, int hi)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        usage();
    }
    return (int)v;
}

static void parse_args(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }
    if (strcmp(argv[1], "edge") == 0) {
        g_cfg.role = ROLE_EDGE;
    } else if (strcmp(argv[1], "origin") == 0) {
        g_cfg.role = ROLE_ORIGIN;
    } else {
        usage();
    }
    for (int i = 2; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage();
        }
        bool edge = g_cfg.role == ROLE_EDGE;
        if (edge && strcmp(k, "--listen") == 0) {
            g_cfg.listen = v;
        } else if (edge && strcmp(k, "--connect") == 0) {
            g_cfg.peer = v;
        } else if (!edge && strcmp(k, "--tls-listen") == 0) {
            g_cfg.listen = v;
        } else if (!edge && strcmp(k, "--target") == 0) {
            g_cfg.peer = v;
        } else if (!edge && strcmp(k, "--cert") == 0) {
            g_cfg.cert = v;
        } else if (!edge && strcmp(k, "--key") == 0) {
            g_cfg.key = v;
        } else if (strcmp(k, "--max-conns") == 0) {
            g_cfg.max_conns = parse_int(v, 1, MAX_CONNS_CAP);
        } else if (strcmp(k, "--idle-timeout") == 0) {
            g_cfg.idle_s = parse_int(v, 1, 86400);
        } else {
            usage();
        }
    }
    if (g_cfg.listen == NULL || g_cfg.peer == NULL ||
        (g_cfg.role == ROLE_ORIGIN && (g_cfg.cert == NULL || g_cfg.key == NULL))) {
        usage();
    }
    if (parse_addr(g_cfg.listen, &g_listen_addr) != 0 || parse_addr(g_cfg.peer, &g_peer_addr)) {
        fprintf(stderr, "tls_relay: addresses are IPv4 a.b.c.d:port or localhost:port\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits it; main sigwait()s */

    char buf[160];
    g_ctx = g_cfg.role == ROLE_EDGE ? client_ctx_new() : server_ctx_new(g_cfg.cert, g_cfg.key);
    if (g_ctx == NULL) {
        logmsg("event=fatal what=tls_context detail=%s", tls_err(buf, sizeof buf));
        return 1;
    }
    if (g_cfg.role == ROLE_ORIGIN && selfcheck(g_ctx) != 0) {
        logmsg("event=fatal what=selfcheck_handshake detail=%s", tls_err(buf, sizeof buf));
        SSL_CTX_free(g_ctx);
        return 1;
    }
    int lfd = listen_on(&g_listen_addr);
    if (lfd < 0) {
        logmsg("event=fatal what=listen addr=%s errno=%d", g_cfg.listen, errno);
        SSL_CTX_free(g_ctx);
        return 1;
    }
    if (g_cfg.role == ROLE_EDGE) {
        logmsg("event=ready listen=%s connect=%s verify=none aes_hw=%d max_conns=%d "
               "idle_timeout_s=%d",
               g_cfg.listen, g_cfg.peer, EVP_has_aes_hardware(), g_cfg.max_conns, g_cfg.idle_s);
    } else {
        logmsg("event=ready listen=%s target=%s cipher=%s group=%s version=%s aes_hw=%d "
               "max_conns=%d idle_timeout_s=%d",
               g_cfg.listen, g_cfg.peer, g_cipher, g_group, g_version, EVP_has_aes_hardware(),
               g_cfg.max_conns, g_cfg.idle_s);
    }
    pthread_t acceptor;
    if (pthread_create(&acceptor, NULL, acceptor_main, &lfd) != 0) {
        logmsg("event=fatal what=thread_create");
        close(lfd);
        SSL_CTX_free(g_ctx);
        return 1;
    }
    int sig = 0;
    if (sigwait(&set, &sig) != 0) {
        sig = 0;
    }
    atomic_store(&g_stop, true);
    pthread_join(acceptor, NULL);
    close(lfd);

    /* Live connections see g_stop within TICK_MS and abort; wait for them, bounded. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += STOP_GRACE_MS / 1000;
    pthread_mutex_lock(&g_live_mu);
    while (g_live > 0) {
        if (pthread_cond_timedwait(&g_live_cv, &g_live_mu, &until) != 0) {
            break;
        }
    }
    int live = g_live;
    pthread_mutex_unlock(&g_live_mu);
    logmsg("event=stats signal=%d conns=%lu clean=%lu failed=%lu refused=%lu bytes_p2t=%llu "
           "bytes_t2p=%llu live_at_exit=%d",
           sig, atomic_load(&g_conns), atomic_load(&g_conns_clean), atomic_load(&g_conns_failed),
           atomic_load(&g_conns_refused), atomic_load(&g_bytes_p2t), atomic_load(&g_bytes_t2p),
           live);
    if (live > 0) {
        return 2; /* threads still hold g_ctx: leave it to the exit */
    }
    SSL_CTX_free(g_ctx);
    return 0;
}
