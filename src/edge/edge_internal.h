/* edge_internal.h: the edge's hub of sessions and routes, shared by edge.c and http.c. */
#ifndef ET_EDGE_INTERNAL_H
#define ET_EDGE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "et/edge.h"
#include "et/tunnel.h"

#define EDGE_MAX_SESSIONS_PER_PORT 64

/* A token bucket for new public connections of one tunnel (--rate-limit): |tokens| in
 * millionths, refilled from |last_ns| at rate_per_min; under the hub's mutex. */
typedef struct rate_bucket {
    uint64_t tokens;
    uint64_t last_ns;
} rate_bucket;

/* A tunnel (token name) the edge has seen: its rate bucket, shared by every replica's session
 * and every route of the tunnel. Kept for the life of the edge (like routes); under hub->mu. */
typedef struct tunnel_entry {
    char name[ET_TUNNEL_NAME_MAX + 1];
    rate_bucket rate;
    bool rate_set; /* a rate_limit push set the two below for this tunnel (else --rate-limit) */
    uint32_t rate_per_min, rate_burst;
    struct tunnel_entry *next; /* hash chain */
} tunnel_entry;

#define TUNNEL_BUCKETS 256u

/* A public TCP port and the sessions serving it (guarded by the hub's mutex). */
typedef struct port_route {
    char tunnel[ET_TUNNEL_NAME_MAX + 1];          /* the tunnel that owns the port; "" = none */
    tunnel_entry *t;                              /* that tunnel, once one served it */
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
    tunnel_entry *t;         /* the tunnel serving it, once one did */
    struct http_route *next; /* hash chain */
} http_route;

/* Public connections per client address are counted in a fixed table of counters indexed by
 * a hash of the address: no allocation per client and no lock, at the price that two addresses
 * sharing a slot share its limit (65536 slots: rare until hundreds of thousands of clients). */
#define CLIENT_SLOTS 65536u

/* Per-session edge state (et_session.side). */
typedef struct edge_sess {
    et_session *s;
    struct edge_sess *next; /* in the hub's list */
    unsigned sockets;       /* attached sockets; the hub drops the session at 0 */
    bool in_hub;
} edge_sess;

typedef struct edge_hub {
    et_edge_config cfg; /* as started: the addresses and ports (a reload leaves them) */
    /* The settings a reload may change (token key, limits, timeouts): read with edge_live();
     * a reload publishes a new copy and keeps the old one until exit (et_engine_keep_...). */
    _Atomic(et_edge_config *) live;
    pthread_mutex_t mu;
    edge_sess *sessions; /* each holds one session reference */
    unsigned nsessions;
    port_route *ports;   /* tcp_hi - tcp_lo + 1 entries, or NULL */
    http_route **http;   /* owned: hash buckets (XXH3 of the pattern) */
    size_t http_buckets; /* power of two */
    size_t nhttp;
    _Atomic uint32_t next_uc;
    uint64_t started_ns; /* when the edge started (et_now_ns): unknown hosts wait only early */
    /* Public connections accepted but not yet streams nor answered (reading their head,
     * waiting for a route, or in an inbox): a drain waits for them too. */
    _Atomic int64_t pending;
    _Atomic bool draining;       /* SIGTERM: listeners closed, GOAWAY sent */
    _Atomic unsigned drain_acks; /* workers that closed their listeners */
    _Atomic uint64_t drain_deadline_ns;
    _Atomic uint32_t *client_conns;        /* owned: CLIENT_SLOTS counters, or NULL (no limit) */
    tunnel_entry *tunnels[TUNNEL_BUCKETS]; /* owned: every tunnel seen, by XXH3 of the name */
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

/* edge_live returns the settings in force now (see edge_hub.live); any thread. */
static inline const et_edge_config *edge_live(edge_hub *hub)
{
    return atomic_load_explicit(&hub->live, memory_order_acquire);
}

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

/* rate_take takes one token from tunnel |t|'s bucket for a new public connection; false when
 * the tunnel is over its rate. Under hub->mu. */
bool rate_take(edge_hub *hub, tunnel_entry *t, uint64_t now_ns);

/* tunnel_set_rate gives tunnel |name| (every tunnel the edge has seen when NULL) its own rate
 * limit, in place of --rate-limit (a rate_limit config push); per_min 0 = no limit. Returns the
 * number of tunnels changed. Under hub->mu. */
unsigned tunnel_set_rate(edge_hub *hub, const char *name, uint32_t per_min, uint32_t burst);

/* client_admit counts a new public connection from |fd|'s peer address: returns its slot (to
 * give back with client_release), -1 when no limit is set, or -2 when the address is at its
 * limit (counted; the caller refuses the connection). */
int32_t client_admit(et_engine *eng, int fd);

/* client_release gives back the count of slot |slot| (client_admit); -1 does nothing. */
void client_release(et_engine *eng, int32_t slot);
/* et_edge_control_frame handles HEALTH_ANSWER for the admin API (admin.c): the side's
 * on_control_frame hook. */
void et_edge_control_frame(et_tsock *ts, const et_frame *f, const et_msg *m);

/* http_on_accept handles one accepted public HTTP connection on |w| (http.c). */
void http_on_accept(et_worker *w, int fd);

#endif
