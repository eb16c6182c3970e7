/* edge_internal.h: the edge's hub of sessions and routes, shared by edge.c and http.c. */
#ifndef ET_EDGE_INTERNAL_H
#define ET_EDGE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "et/edge.h"
#include "et/tunnel.h"

#define EDGE_MAX_SESSIONS_PER_PORT 64

/* A public TCP port and the sessions serving it (guarded by the hub's mutex). */
typedef struct port_route {
    char tunnel[ET_TUNNEL_NAME_MAX + 1];          /* the tunnel that owns the port; "" = none */
    et_session *sess[EDGE_MAX_SESSIONS_PER_PORT]; /* not references: the hub's list holds them */
    unsigned n, rr;
    bool listening;
} port_route;

/* An HTTP host pattern ("photos.example.com" or "*.example.com") and the sessions serving it.
 * Entries stay after their last session leaves, so a known tunnel answers 503, not 404. */
typedef struct http_route {
    char pattern[ET_HOST_MAX + 1];
    char tunnel[ET_TUNNEL_NAME_MAX + 1];
    et_session *sess[EDGE_MAX_SESSIONS_PER_PORT]; /* not references */
    unsigned n, rr;
    struct http_route *next; /* hash chain */
} http_route;

/* Per-session edge state (et_session.side). */
typedef struct edge_sess {
    et_session *s;
    struct edge_sess *next; /* in the hub's list */
    unsigned sockets;       /* attached sockets; the hub drops the session at 0 */
    bool in_hub;
} edge_sess;

typedef struct edge_hub {
    et_edge_config cfg;
    pthread_mutex_t mu;
    edge_sess *sessions; /* each holds one session reference */
    port_route *ports;   /* tcp_hi - tcp_lo + 1 entries, or NULL */
    http_route **http;   /* owned: hash buckets (XXH3 of the pattern) */
    size_t http_buckets; /* power of two */
    size_t nhttp;
    _Atomic uint32_t next_uc;
} edge_hub;

/* A listening socket on one worker. */
typedef enum listener_kind {
    LISTEN_TUNNEL = 1,
    LISTEN_TCP = 2,
    LISTEN_HTTP = 3,
} listener_kind;

typedef struct listener {
    et_io io;
    int fd;
    listener_kind kind;
    uint16_t port; /* LISTEN_TCP: the public port */
    et_worker *w;
    struct listener *next;
} listener;

typedef struct edge_worker {
    listener *listeners;
} edge_worker;

/* hub_of returns the edge hub of |eng|. */
edge_hub *hub_of(et_engine *eng);

/* free_edge_sess frees an edge_sess (et_session.side). */
void free_edge_sess(void *p);

/* add_listener opens a listener of |kind| on |addr| for worker |w| (on its thread, or before
 * the workers start). */
ET_MUST_USE int add_listener(et_worker *w, const char *addr, listener_kind kind, uint16_t port);

/* http_route_find returns the route for |host| (exact pattern first, then "*." + the host
 * without its first label), or NULL; under hub->mu. */
http_route *http_route_find(edge_hub *hub, const char *host);

/* http_route_get returns the route of |pattern|, creating it; NULL when out of memory; under
 * hub->mu. */
http_route *http_route_get(edge_hub *hub, const char *pattern, size_t len);

/* http_route_free_all frees every route (shutdown). */
void http_route_free_all(edge_hub *hub);

/* et_edge_control_frame handles HEALTH_ANSWER for the admin API (admin.c): the side's
 * on_control_frame hook. */
void et_edge_control_frame(et_tsock *ts, const et_frame *f, const et_msg *m);

/* http_on_accept handles one accepted public HTTP connection on |w| (http.c). */
void http_on_accept(et_worker *w, int fd);

#endif
