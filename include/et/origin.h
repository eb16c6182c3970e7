/* origin.h: the private side (originctl): the pool of tunnel sockets (one control socket and
 * --data-conns data sockets, all of one session), redial with backoff, and a local connection
 * per stream. */
#ifndef ET_ORIGIN_H
#define ET_ORIGIN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/base.h>

#include "et/frame.h"
#include "et/result.h"
#include "et/tunnel.h"

typedef struct et_origin_tcp_route {
    uint16_t public_port;
    struct sockaddr_storage local;
    socklen_t local_len;
} et_origin_tcp_route;

typedef struct et_origin_http_route {
    char pattern[ET_HOST_MAX + 1]; /* lowercase host, or "*." + host */
    struct sockaddr_storage local;
    socklen_t local_len;
} et_origin_http_route;

typedef struct et_origin_config {
    char edge_addr[256]; /* host:port */
    char edge_host[256]; /* host part, for SNI and the CA host check */
    char token[ET_TOKEN_MAX + 1];
    et_origin_tcp_route tcp[ET_ROUTES_MAX];
    unsigned ntcp;
    et_origin_http_route http[ET_ROUTES_MAX];
    unsigned nhttp;
    bool proxy_protocol; /* write a PROXY v2 header to the local service first */
    unsigned data_conns;
    bool no_control;
    unsigned threads;
    uint64_t drain_timeout_ns;       /* SIGTERM: how long in-flight streams may still run */
    char congestion[ET_CC_NAME_MAX]; /* TCP_CONGESTION of tunnel sockets; "" = the host's */
} et_origin_config;

/* et_origin_start sets up |eng| as an origin with |cfg| (copied) and client TLS context |ctx|
 * (ownership taken), starts the workers and dials every socket of the pool. */
ET_MUST_USE int et_origin_start(et_engine *eng, const et_origin_config *cfg, SSL_CTX *ctx);

/* et_origin_drain stops taking work and lets in-flight work finish (SIGTERM): GOAWAY goes on
 * every tunnel socket, so the edge opens no new stream here (another replica of the tunnel takes
 * them), no socket is redialled, and it waits until no stream is left, the drain timeout passes,
 * or |interrupted|(|arg|) returns true (polled every few milliseconds). Returns the number of
 * streams still open. Call from the main thread. */
uint64_t et_origin_drain(et_engine *eng, bool (*interrupted)(void *arg), void *arg);
/* et_origin_config_of returns the configuration |eng| runs with (owned by the engine). */
const et_origin_config *et_origin_config_of(et_engine *eng);

/* et_origin_session returns the session of the newest generation (a GOAWAY from the edge
 * starts a new one); owned by the engine and valid until et_origin_cleanup (the fields under
 * its mutex need it). */
et_session *et_origin_session(et_engine *eng);

/* et_origin_control_frame handles HEALTH (probes the local services, answers HEALTH_ANSWER)
 * and PUSH (logged; understood config applied) on |ts|'s worker (control.c): the side's
 * on_control_frame hook. */
void et_origin_control_frame(et_tsock *ts, const et_frame *f, const et_msg *m);

/* et_origin_admin_start serves originctl's admin API (/healthz, /metrics, /status) on |addr|
 * from a thread of its own, for origin |eng| (started). Returns ET_OK or an error (logged). */
ET_MUST_USE int et_origin_admin_start(et_engine *eng, const char *addr);

/* et_origin_admin_stop stops and frees the admin server of |eng|, before et_origin_cleanup;
 * nothing when none runs. */
void et_origin_admin_stop(et_engine *eng);

/* et_origin_status_main implements `originctl status [--admin ADDR] [--json]`: asks a running
 * originctl's admin listener for /status and prints it (a table, or the JSON). Returns the
 * process exit status. */
int et_origin_status_main(int argc, char **argv);

/* et_origin_control_cleanup frees the HEALTH probes still in flight, after et_engine_stop and
 * before et_origin_cleanup (control.c). */
void et_origin_control_cleanup(et_engine *eng);

/* et_origin_reload (SIGHUP) starts a new session with settings |cfg| (copied; --threads stays
 * as started) and TLS context |ctx| (ownership taken): a new token, pin, CA, routes or pool
 * size take effect without dropping a stream. Once every socket of the new session is ready,
 * the old session gets GOAWAY (the edge opens nothing more there) and each of its sockets closes
 * when it carries no stream, within its --drain-timeout. Main thread. */
void et_origin_reload(et_engine *eng, const et_origin_config *cfg, SSL_CTX *ctx);

/* et_origin_cleanup frees what et_origin_start set up, after et_engine_stop. */
void et_origin_cleanup(et_engine *eng);

#endif
