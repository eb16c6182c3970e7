/* edge.h: the public side (edged): the tunnel listener and handshake checks, the hub of
 * sessions and routes, public TCP listeners and the hand-over of public connections to the
 * worker that owns the chosen data socket. */
#ifndef ET_EDGE_H
#define ET_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>

#include "et/result.h"
#include "et/tunnel.h"

#define ET_EDGE_KEY_MAX 1024

typedef struct et_edge_config {
    char tunnel_addr[128];      /* tunnel listener, "host:port" */
    char http_addr[128];        /* public HTTP listener, or "" for none */
    uint64_t origin_timeout_ns; /* HTTP: no answer from the origin in time -> 504 */
    uint64_t head_timeout_ns;   /* HTTP: request head not complete in time -> 408 */
    uint64_t route_wait_ns;     /* HTTP: how long a request waits for its tunnel to connect */
    uint64_t drain_timeout_ns;  /* SIGTERM: how long in-flight streams may still run */
    uint64_t idle_timeout_ns;   /* a stream with no byte either way this long ends; 0 = never */
    uint32_t max_tunnels;       /* sessions at once (every replica counts); 0 = no limit */
    uint32_t max_streams;       /* open streams per session; 0 = no limit */
    uint32_t max_client_conns;  /* public connections per client address; 0 = no limit */
    uint32_t rate_per_min;      /* new public connections per tunnel and minute; 0 = no limit */
    uint32_t rate_burst;        /* ... of which this many may come at once */
    uint32_t max_frame;         /* largest frame payload accepted from origins, 4096..16384 */
    char congestion[ET_CC_NAME_MAX]; /* TCP_CONGESTION of tunnel sockets; "" = the host's */
    uint32_t keepalive_ms;           /* PING interval; a socket quiet for three is dead */
    char tcp_bind[64];               /* address public TCP listeners bind */
    uint16_t tcp_lo, tcp_hi;         /* --tcp-ports; 0-0 = none */
    uint8_t token_key[ET_EDGE_KEY_MAX];
    size_t token_key_len;
    unsigned threads;
} et_edge_config;

/* et_edge_start sets up |eng| as an edge with |cfg| (copied) and TLS context |ctx| (ownership
 * taken), opens the tunnel listener on every worker and starts the workers. Returns ET_OK or an
 * error (logged). */
ET_MUST_USE int et_edge_start(et_engine *eng, const et_edge_config *cfg, SSL_CTX *ctx);

/* et_edge_drain stops taking work and lets in-flight work finish (SIGTERM): every listener is
 * closed (connections already queued on them are taken first), GOAWAY goes to every tunnel
 * socket so origins open a new session at once (to the instance that replaces this one on the
 * same ports), and it waits until no stream and no public connection is left, the drain timeout
 * passes, or |interrupted|(|arg|) returns true (polled every few milliseconds). Returns the
 * number of streams and connections still open. Call from the main thread. */
uint64_t et_edge_drain(et_engine *eng, bool (*interrupted)(void *arg), void *arg);

/* et_edge_reload (SIGHUP) puts in force, for new connections and handshakes, the token key,
 * timeouts and limits of |cfg| and the TLS context |ctx| (ownership taken); sessions and
 * streams carry on. Listener addresses, --tcp-ports and --threads stay as started (logged when
 * they differ). Main thread. */
void et_edge_reload(et_engine *eng, const et_edge_config *cfg, SSL_CTX *ctx);

/* et_edge_cleanup frees what et_edge_start set up, after et_engine_stop. */
void et_edge_cleanup(et_engine *eng);

/* et_edge_admin_start serves edged's admin API (README.md, "Admin API") on |addr| from a
 * thread of its own, for edge |eng| (started). Returns ET_OK or an error (logged). */
ET_MUST_USE int et_edge_admin_start(et_engine *eng, const char *addr);

/* et_edge_admin_set_ready sets what GET /readyz answers (200 when |ready|, else 503). */
void et_edge_admin_set_ready(et_engine *eng, bool ready);

/* et_edge_admin_stop stops and frees the admin server of |eng|, after et_engine_stop and
 * before et_edge_cleanup; nothing when none runs. */
void et_edge_admin_stop(et_engine *eng);

/* et_read_key_file reads a token key file (text, at least 32 bytes, one trailing newline
 * ignored) into |out|. Returns ET_OK or ET_E_CONFIG (logged). */
ET_MUST_USE int et_read_key_file(const char *path, uint8_t out[ET_EDGE_KEY_MAX], size_t *len);

/* et_edged_token_main implements `edged token …`: prints a token as the last line of stdout.
 * Returns the process exit status. */
int et_edged_token_main(int argc, char **argv);

#endif
