/* edge.c: edged's side of the engine (edge.h). */
#include "et/edge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/ssl.h>

#include "et/logf.h"
#include "et/tls.h"
#include "et/token.h"

#include <xxhash.h>

#include "edge_internal.h"

edge_hub *hub_of(et_engine *eng)
{
    return eng->side_state;
}

void free_edge_sess(void *p)
{
    free(p);
}

/* --- limits ------------------------------------------------------------------------------- */

/* tunnel_get returns the entry of tunnel |name|, creating it; NULL when out of memory. Under
 * hub->mu. */
static tunnel_entry *tunnel_get(edge_hub *hub, const char *name)
{
    size_t n = strlen(name);
    size_t k = (size_t)XXH3_64bits(name, n) & (TUNNEL_BUCKETS - 1);
    for (tunnel_entry *t = hub->tunnels[k]; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    tunnel_entry *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->next = hub->tunnels[k];
    hub->tunnels[k] = t;
    return t;
}

unsigned tunnel_set_rate(edge_hub *hub, const char *name, uint32_t per_min, uint32_t burst)
{
    unsigned n = 0;
    for (size_t k = 0; k < TUNNEL_BUCKETS; k++) {
        for (tunnel_entry *t = hub->tunnels[k]; t != NULL; t = t->next) {
            if (name != NULL && strcmp(t->name, name) != 0)
                continue;
            t->rate_set = true;
            t->rate_per_min = per_min;
            t->rate_burst = burst;
            n++;
        }
    }
    return n;
}

bool rate_take(edge_hub *hub, tunnel_entry *t, uint64_t now)
{
    if (t == NULL)
        return true;
    const et_edge_config *live = edge_live(hub);
    uint64_t rate = t->rate_set ? t->rate_per_min : live->rate_per_min;
    uint64_t burst = t->rate_set ? t->rate_burst : live->rate_burst;
    if (rate == 0)
        return true;
    rate_bucket *b = &t->rate;
    uint64_t cap = (burst != 0 ? burst : 1) * 1000000u;
    if (b->tokens > cap)
        b->tokens = cap; /* a smaller burst since the last connection */
    if (b->last_ns == 0) {
        b->tokens = cap; /* a tunnel starts with a full burst */
    } else if (now > b->last_ns) {
        uint64_t dt = now - b->last_ns;
        if (dt > 3600ull * 1000000000ull)
            dt = 3600ull * 1000000000ull; /* keeps dt * rate inside 64 bits */
        /* rate/min in millionths per ns: rate * 1e6 / 60e9 = rate / 60000 */
        b->tokens += dt * rate / 60000u;
        if (b->tokens > cap)
            b->tokens = cap;
    }
    b->last_ns = now;
    if (b->tokens < 1000000u)
        return false;
    b->tokens -= 1000000u;
    return true;
}

int32_t client_admit(et_engine *eng, int fd)
{
    edge_hub *hub = hub_of(eng);
    uint32_t max = edge_live(hub)->max_client_conns;
    if (max == 0)
        return -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    const void *key = NULL;
    size_t klen = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET) {
        key = &((const struct sockaddr_in *)(const void *)&ss)->sin_addr;
        klen = 4;
    } else if (ss.ss_family == AF_INET6) {
        key = &((const struct sockaddr_in6 *)(const void *)&ss)->sin6_addr;
        klen = 16;
    } else {
        return -1; /* no address to count it by */
    }
    int32_t slot = (int32_t)(XXH3_64bits(key, klen) & (CLIENT_SLOTS - 1));
    if (atomic_fetch_add(&hub->client_conns[slot], 1) >= max) {
        atomic_fetch_sub(&hub->client_conns[slot], 1);
        ET_COUNT(eng->stats.limit_client_conns);
        return -2;
    }
    return slot;
}

void client_release(et_engine *eng, int32_t slot)
{
    if (slot >= 0)
        atomic_fetch_sub(&hub_of(eng)->client_conns[slot], 1);
}

static void edge_stream_closed(et_stream *s)
{
    client_release(s->w->eng, s->client_slot);
    s->client_slot = -1;
}

/* --- public TCP ------------------------------------------------------------------------- */

static void open_public_stream(et_tsock *ts, int fd, int32_t client_slot)
{
    edge_hub *hub = hub_of(ts->w->eng);
    if (ts->state != ET_TS_READY) {
        ET_COUNT(ts->w->eng->stats.public_refused);
        client_release(ts->w->eng, client_slot);
        et_sock_reset_close(fd);
        return;
    }
    uint32_t uc = atomic_fetch_add(&hub->next_uc, 1);
    if (uc == 0)
        uc = atomic_fetch_add(&hub->next_uc, 1);
    if (et_sock_set_nodelay(fd) < 0) {
        /* not fatal: a connection without TCP_NODELAY still works */
    }
    et_open o = {.kind = ET_OPEN_TCP, .initial_window = ET_WINDOW_DEFAULT};
    et_addr_of_fd(fd, &o.client, &o.server);
    et_stream *s = NULL;
    if (et_stream_open(ts, uc, 1, ET_OPEN_TCP, &s) < 0) {
        ET_COUNT(ts->w->eng->stats.public_refused);
        client_release(ts->w->eng, client_slot);
        et_sock_reset_close(fd);
        return;
    }
    s->client_slot = client_slot; /* given back when the stream goes */
    s->send_credit = ts->peer_window;
    /* OPEN is queued before the fd can produce any DATA, so it always goes first. */
    et_frame h = {0, uc, 1, ET_A_OPEN, 0, NULL};
    et_msg m = {.open = o};
    if (et_tsock_queue(ts, &h, &m) < 0) {
        et_sock_reset_close(fd);
        (void)et_stream_reset(s);
        return;
    }
    if (et_stream_attach(s, fd, false) < 0)
        ET_COUNT(ts->w->eng->stats.public_refused);
}

typedef struct handoff {
    et_tsock *ts; /* one reference */
    int fd;
    int32_t client_slot;
} handoff;

static void handoff_run(et_reactor *r, void *arg)
{
    handoff *h = arg;
    open_public_stream(h->ts, h->fd, h->client_slot);
    atomic_fetch_sub(&hub_of(h->ts->w->eng)->pending, 1); /* a stream now, or refused */
    et_tsock_unref(h->ts);
    free(h);
}

/* pick_socket chooses a data socket for a public connection on |port| (a reference), or NULL
 * (|*limited| set when the tunnel is over its rate). */
static et_tsock *pick_socket(edge_hub *hub, uint16_t port, uint64_t now, bool *limited)
{
    et_tsock *ts = NULL;
    pthread_mutex_lock(&hub->mu);
    port_route *pr = &hub->ports[port - hub->cfg.tcp_lo];
    *limited = pr->n > 0 && !rate_take(hub, pr->t, now);
    for (unsigned k = 0; k < pr->n && ts == NULL && !*limited; k++)
        ts = et_session_pick_data(pr->sess[pr->rr++ % pr->n]);
    pthread_mutex_unlock(&hub->mu);
    return ts;
}

/* on_public_tcp hands an accepted public TCP connection to a data socket of a session serving
 * its port, or refuses it at once (RST) when the tunnel is not connected or over a limit. */
static void on_public_tcp(listener *l, int fd)
{
    et_worker *w = l->w;
    bool limited = false;
    int32_t slot = client_admit(w->eng, fd);
    et_tsock *ts =
        slot == -2 ? NULL : pick_socket(hub_of(w->eng), l->port, et_reactor_now(w->r), &limited);
    if (ts == NULL) {
        if (limited)
            ET_COUNT(w->eng->stats.rate_limited);
        ET_COUNT(w->eng->stats.public_refused);
        client_release(w->eng, slot);
        et_sock_reset_close(fd);
        return;
    }
    if (ts->w == w) {
        open_public_stream(ts, fd, slot);
        et_tsock_unref(ts);
        return;
    }
    handoff *h = malloc(sizeof(*h));
    if (h != NULL) {
        *h = (handoff){ts, fd, slot};
        atomic_fetch_add(&hub_of(w->eng)->pending, 1); /* a drain waits for it */
        if (et_reactor_post(ts->w->r, handoff_run, h) == ET_OK)
            return;
        atomic_fetch_sub(&hub_of(w->eng)->pending, 1);
        free(h);
    }
    ET_COUNT(w->eng->stats.inbox_full);
    client_release(w->eng, slot);
    et_sock_reset_close(fd);
    et_tsock_unref(ts);
}

static void on_tunnel(listener *l, int fd)
{
    /* The role is known once HELLO arrives. */
    if (et_tsock_new(l->w, fd, ET_TS_TLS, 0) == NULL)
        et_logf(ET_LOG_WARN, "socket_setup_failed", "listener=tunnel");
}

static void on_http(listener *l, int fd)
{
    http_on_accept(l->w, fd);
}

/* accept_batch accepts up to |max| connections of |l| and hands each to its kind's handler;
 * returns false when the accept queue is empty (or failed). */
static bool accept_batch(listener *l, int max)
{
    static const char *names[] = {
        [LISTEN_TUNNEL] = "tunnel", [LISTEN_TCP] = "tcp", [LISTEN_HTTP] = "http"};
    void (*take)(listener *, int) = l->kind == LISTEN_TCP    ? on_public_tcp
                                    : l->kind == LISTEN_HTTP ? on_http
                                                             : on_tunnel;
    for (int i = 0; i < max; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                et_logf(ET_LOG_WARN, "accept_failed", "listener=%s port=%u errno=%d",
                        names[l->kind], l->port, errno);
            return false;
        }
        take(l, fd);
    }
    return true;
}

/* listener_on_event accepts a batch of connections for the listener's kind; after a full batch
 * it lets other work run and comes back (edge-triggered: no new event would come). */
static void listener_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    listener *l = ET_CONTAINER_OF(io, listener, io);
    if (accept_batch(l, 256))
        et_io_resume(r, io, EPOLLIN);
}

int add_listener(et_worker *w, const char *addr, listener_kind kind, uint16_t port)
{
    edge_worker *ew = w->side;
    listener *l = calloc(1, sizeof(*l));
    ET_ENSURE(l != NULL, ET_E_NOMEM);
    l->kind = kind;
    l->port = port;
    l->w = w;
    int rv = et_sock_listen(addr, 1, &l->fd);
    if (rv < 0) {
        et_logf(ET_LOG_ERROR, "listen_failed", "addr=%s errno=%d", addr, errno);
        free(l);
        return rv;
    }
    et_io_init(&l->io, listener_on_event);
    rv = et_reactor_add(w->r, l->fd, &l->io);
    if (rv < 0) {
        close(l->fd);
        free(l);
        return rv;
    }
    l->next = ew->listeners;
    ew->listeners = l;
    return ET_OK;
}

typedef struct listen_req {
    et_worker *w;
    uint16_t port;
} listen_req;

static void listen_port_run(et_reactor *r, void *arg)
{
    listen_req *req = arg;
    et_worker *w = req->w;
    uint16_t port = req->port;
    free(req);
    edge_hub *hub = hub_of(w->eng);
    if (atomic_load(&hub->draining))
        return; /* this worker's listeners are closed for good */
    char addr[96];
    snprintf(addr, sizeof(addr), "%s:%u", hub->cfg.tcp_bind, port);
    if (add_listener(w, addr, LISTEN_TCP, port) == ET_OK && w->index == 0)
        et_logf(ET_LOG_INFO, "tcp_listen", "port=%u", port);
}

/* --- handshake -------------------------------------------------------------------------- */

static bool route_within_token(const et_edge_config *cfg, const et_token_claims *c,
                               const et_route *rt)
{
    if (rt->kind == ET_OPEN_TCP)
        return rt->port >= cfg->tcp_lo && rt->port <= cfg->tcp_hi && cfg->tcp_lo != 0 &&
               et_token_allows_port(c, rt->port);
    /* HTTP: a wildcard route must be one of the token's patterns; a host must match one. */
    if (rt->host.n >= 2 && rt->host.p[0] == '*') {
        for (size_t i = 0; i < c->nhosts; i++) {
            const char *h = et_token_host(c, i);
            if (strlen(h) == rt->host.n && memcmp(h, rt->host.p, rt->host.n) == 0)
                return true;
        }
        return false;
    }
    return et_token_allows_host(c, (const char *)rt->host.p, rt->host.n);
}

/* bind_session finds or creates the session |h| names and attaches |ts|; under the hub lock.
 * A data socket's worker is chosen here (|*place|). Returns ET_OK or ET_E_PROTO(code). */
static int bind_session(et_engine *eng, et_tsock *ts, const et_hello *h, const et_token_claims *c,
                        et_worker **place)
{
    edge_hub *hub = hub_of(eng);
    edge_sess *es = NULL;
    for (edge_sess *e = hub->sessions; e != NULL; e = e->next)
        if (memcmp(e->s->id, h->session_id, ET_SESSION_ID_LEN) == 0)
            es = e;
    if (es != NULL && strcmp(es->s->tunnel, c->sub) != 0)
        return ET_E_PROTO(ET_WE_AUTH_SESSION); /* a socket never joins another tenant */
    /* Ports first: refuse before anything changes if one belongs to another tunnel. */
    for (size_t i = 0; i < h->nroutes; i++) {
        if (h->routes[i].kind != ET_OPEN_TCP)
            continue;
        port_route *pr = &hub->ports[h->routes[i].port - hub->cfg.tcp_lo];
        if (pr->n > 0 && strcmp(pr->tunnel, c->sub) != 0)
            return ET_E_PROTO(ET_WE_AUTH_SCOPE); /* another tunnel serves it now */
        if (pr->n == EDGE_MAX_SESSIONS_PER_PORT)
            return ET_E_PROTO(ET_WE_LIMIT_SESSIONS);
    }
    for (size_t i = 0; i < h->nroutes; i++) {
        if (h->routes[i].kind != ET_OPEN_HTTP)
            continue;
        http_route *r = http_route_get(hub, (const char *)h->routes[i].host.p, h->routes[i].host.n);
        if (r == NULL)
            return ET_E_PROTO(ET_WE_INTERNAL);
        if (r->n > 0 && strcmp(r->tunnel, c->sub) != 0)
            return ET_E_PROTO(ET_WE_AUTH_SCOPE); /* another tunnel serves that host now */
        if (r->n == EDGE_MAX_SESSIONS_PER_PORT)
            return ET_E_PROTO(ET_WE_LIMIT_SESSIONS);
    }
    tunnel_entry *te = tunnel_get(hub, c->sub);
    if (te == NULL)
        return ET_E_PROTO(ET_WE_INTERNAL);
    uint32_t max_tunnels = edge_live(hub)->max_tunnels;
    if (es == NULL && max_tunnels != 0 && hub->nsessions >= max_tunnels) {
        ET_COUNT(eng->stats.limit_tunnels);
        return ET_E_PROTO(ET_WE_LIMIT_SESSIONS);
    }
    if (es == NULL) {
        es = calloc(1, sizeof(*es));
        et_session *s = es ? et_session_new(eng, h->session_id) : NULL;
        if (s == NULL) {
            free(es);
            return ET_E_PROTO(ET_WE_INTERNAL);
        }
        es->s = s;
        s->side = es;
        s->legacy = (h->hello_flags & ET_HELLO_LEGACY) != 0;
        snprintf(s->tunnel, sizeof(s->tunnel), "%s", c->sub);
        es->next = hub->sessions;
        hub->sessions = es;
        hub->nsessions++;
        es->in_hub = true;
        char hex[2 * ET_SESSION_ID_LEN + 1];
        et_session_hex(s->id, hex);
        et_logf(ET_LOG_INFO, "session_up", "tunnel=%s session=%s legacy=%d", s->tunnel, hex,
                s->legacy);
    }
    if (ts->role == ET_ROLE_DATA) {
        /* A control socket joins the session once it is on the control worker (adopt); a data
         * socket joins now, on the worker it is to live on (moved there after WELCOME). */
        int rv = et_session_attach_data(es->s, ts, place);
        if (rv < 0)
            return rv;
    }
    es->sockets++;
    ts->sess = es->s;
    et_session_ref(es->s);
    for (size_t i = 0; i < h->nroutes; i++) {
        if (h->routes[i].kind != ET_OPEN_HTTP)
            continue;
        http_route *r = http_route_get(hub, (const char *)h->routes[i].host.p, h->routes[i].host.n);
        bool have = false;
        for (unsigned k = 0; k < r->n; k++)
            have |= r->sess[k] == es->s;
        if (have)
            continue;
        if (r->tunnel[0] == '\0')
            et_logf(ET_LOG_INFO, "http_route", "host=%s tunnel=%s", r->pattern, c->sub);
        snprintf(r->tunnel, sizeof(r->tunnel), "%s", c->sub);
        r->t = te;
        r->sess[r->n++] = es->s;
    }
    for (size_t i = 0; i < h->nroutes; i++) {
        if (h->routes[i].kind != ET_OPEN_TCP)
            continue;
        uint16_t port = h->routes[i].port;
        port_route *pr = &hub->ports[port - hub->cfg.tcp_lo];
        bool have = false;
        for (unsigned k = 0; k < pr->n; k++)
            have |= pr->sess[k] == es->s;
        if (have)
            continue;
        snprintf(pr->tunnel, sizeof(pr->tunnel), "%s", c->sub);
        pr->t = te;
        pr->sess[pr->n++] = es->s;
        if (!pr->listening) {
            pr->listening = true;
            for (unsigned k = 0; k < eng->nworkers; k++) {
                listen_req *req = malloc(sizeof(*req));
                if (req != NULL) {
                    *req = (listen_req){&eng->workers[k], port};
                    if (et_reactor_post(eng->workers[k].r, listen_port_run, req) == ET_OK)
                        continue;
                    free(req);
                }
                ET_COUNT(eng->stats.inbox_full);
            }
        }
    }
    return ET_OK;
}

static int edge_on_hello(et_tsock *ts, const et_frame *f, const et_msg *m)
{
    et_engine *eng = ts->w->eng;
    edge_hub *hub = hub_of(eng);
    const et_hello *h = &m->hello;
    if (f->action != ET_A_HELLO)
        return ET_E_PROTO(ET_WE_UNEXPECTED);
    if (h->version_min > ET_PROTO_VERSION_MAX || h->version_max < ET_PROTO_VERSION_MIN)
        return ET_E_PROTO(ET_WE_VERSION);
    et_token_claims *c = malloc(sizeof(*c));
    ET_ENSURE(c != NULL, ET_E_PROTO(ET_WE_INTERNAL));
    et_worker *place = ts->w;
    const et_edge_config *live = edge_live(hub);
    int rv = et_token_verify(live->token_key, live->token_key_len, h->token.p, h->token.n,
                             (int64_t)time(NULL), 0, c);
    for (size_t i = 0; rv == ET_OK && i < h->nroutes; i++)
        if (!route_within_token(&hub->cfg, c, &h->routes[i]))
            rv = ET_E_PROTO(ET_WE_AUTH_SCOPE);
    if (rv == ET_OK) {
        ts->role = h->role;
        pthread_mutex_lock(&hub->mu);
        rv = bind_session(eng, ts, h, c, &place);
        pthread_mutex_unlock(&hub->mu);
    }
    if (rv < 0) {
        free(c);
        return et_err_class(rv) == ET_CLASS_PROTOCOL ? rv : ET_E_PROTO(ET_WE_AUTH_MALFORMED);
    }
    ts->peer_max_frame = h->max_frame;
    ts->peer_window = h->initial_window;
    et_frame wh = {0, 0, 0, ET_A_WELCOME, 0, NULL};
    ts->keepalive_ms = atomic_load_explicit(&eng->keepalive_ms, memory_order_relaxed);
    et_msg wm = {.welcome = {ET_PROTO_VERSION_MAX,
                             h->role,
                             eng->max_frame,
                             {0},
                             ts->id,
                             ts->keepalive_ms,
                             {(const uint8_t *)c->sub, strlen(c->sub)}}};
    memcpy(wm.welcome.session_id, h->session_id, ET_SESSION_ID_LEN);
    rv = et_tsock_queue(ts, &wh, &wm);
    if (rv == ET_OK)
        rv = et_frame_reader_set_max(&ts->rd, eng->max_frame); /* what WELCOME announces */
    if (rv == ET_OK) {
        et_tsock_set_ready(ts);
        char hex[2 * ET_SESSION_ID_LEN + 1];
        et_session_hex(h->session_id, hex);
        et_logf(ET_LOG_INFO, "socket_up", "role=%s session=%s tunnel=%s socket=%u index=%u peer=%s",
                h->role == ET_ROLE_CONTROL ? "control" : "data", hex, c->sub, ts->id,
                h->socket_index, ts->peer);
        if (atomic_load(&hub->draining)) {
            /* It reached this instance before its listener closed: serve it, but send the
             * origin on to the instance that replaces this one. */
            uint64_t now = et_now_ns(), end = atomic_load(&hub->drain_deadline_ns);
            et_tsock_goaway(ts, end > now ? (uint32_t)((end - now) / 1000000u) : 0, "shutdown");
        }
        /* Control sockets live on the control worker, data sockets spread over the others. */
        et_tsock_move(ts, h->role == ET_ROLE_CONTROL ? eng->control : place);
    }
    free(c);
    return rv < 0 ? ET_E_PROTO(ET_WE_INTERNAL) : ET_OK;
}

static void edge_on_closed(et_tsock *ts)
{
    if (ts->sess == NULL)
        return;
    edge_hub *hub = hub_of(ts->w->eng);
    et_session *s = ts->sess;
    edge_sess *es = s->side;
    edge_sess *gone = NULL;
    et_session_detach(s, ts);
    pthread_mutex_lock(&hub->mu);
    if (--es->sockets == 0 && es->in_hub) {
        /* The session's last socket: it serves nothing any more. Every route is scanned, not
         * only the ones the session noted, so no route can keep a freed session. */
        size_t nports = hub->ports != NULL ? (size_t)(hub->cfg.tcp_hi - hub->cfg.tcp_lo) + 1 : 0;
        for (size_t i = 0; i < nports; i++) {
            port_route *pr = &hub->ports[i];
            for (unsigned k = 0; k < pr->n; k++) {
                if (pr->sess[k] == s) {
                    pr->sess[k] = pr->sess[--pr->n];
                    break;
                }
            }
        }
        for (size_t i = 0; i < hub->http_buckets; i++) {
            for (http_route *r = hub->http[i]; r != NULL; r = r->next) {
                for (unsigned k = 0; k < r->n; k++) {
                    if (r->sess[k] == s) {
                        r->sess[k] = r->sess[--r->n];
                        break;
                    }
                }
            }
        }
        for (edge_sess **pp = &hub->sessions; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == es) {
                *pp = es->next;
                hub->nsessions--;
                break;
            }
        }
        es->in_hub = false;
        gone = es;
    }
    pthread_mutex_unlock(&hub->mu);
    if (gone != NULL) {
        char hex[2 * ET_SESSION_ID_LEN + 1];
        et_session_hex(s->id, hex);
        et_logf(ET_LOG_INFO, "session_down", "tunnel=%s session=%s", s->tunnel, hex);
        et_session_unref(s, free_edge_sess); /* the hub's reference */
    }
}

static const et_side_ops edge_ops = {
    .on_handshake_frame = edge_on_hello,
    .on_open = NULL,
    .on_tsock_closed = edge_on_closed,
    .on_tls_done = NULL,
    .on_stream_closed = edge_stream_closed,
    .on_control_frame = et_edge_control_frame, /* admin.c */
};

/* --- start / stop ----------------------------------------------------------------------- */

/* close_listeners_run closes every listener of a worker for good, taking first the connections
 * already queued on it (they are served); on its thread. */
static void close_listeners_run(et_reactor *r, void *arg)
{
    et_worker *w = arg;
    edge_hub *hub = hub_of(w->eng);
    edge_worker *ew = w->side;
    while (ew != NULL && ew->listeners != NULL) {
        listener *l = ew->listeners;
        ew->listeners = l->next;
        for (int k = 0; k < 64 && accept_batch(l, 256); k++) {
        }
        et_reactor_del(r, &l->io);
        close(l->fd);
        free(l);
    }
    atomic_fetch_add(&hub->drain_acks, 1);
}

static void goaway_run(et_reactor *r, void *arg)
{
    et_worker *w = arg;
    edge_hub *hub = hub_of(w->eng);
    uint64_t now = et_now_ns(), end = atomic_load(&hub->drain_deadline_ns);
    et_worker_goaway(w, end > now ? (uint32_t)((end - now) / 1000000u) : 0, "shutdown");
}

/* pending_public: public connections not yet streams (a drain waits for them too). */
static uint64_t pending_public(et_engine *eng)
{
    int64_t pending = atomic_load(&hub_of(eng)->pending);
    return pending > 0 ? (uint64_t)pending : 0;
}

uint64_t et_edge_drain(et_engine *eng, bool (*interrupted)(void *arg), void *arg)
{
    edge_hub *hub = hub_of(eng);
    uint64_t start = et_now_ns();
    uint64_t timeout = edge_live(hub)->drain_timeout_ns;
    atomic_store(&hub->drain_deadline_ns, start + timeout);
    atomic_store(&hub->draining, true);
    unsigned workers = eng->nworkers + 1;
    /* Listeners first, on every worker, and only then GOAWAY: an origin that redials at once
     * must not land on a listener of this instance that is still open. */
    unsigned lost = et_engine_post_all(eng, close_listeners_run);
    bool stop = false;
    for (int i = 0; i < 500 && !stop && atomic_load(&hub->drain_acks) + lost < workers; i++)
        stop = interrupted(arg);
    if (et_engine_post_all(eng, goaway_run) != 0)
        ET_COUNT(eng->stats.inbox_full);
    et_logf(ET_LOG_INFO, "draining", "timeout_ms=%llu streams=%llu pending=%lld",
            (unsigned long long)(timeout / 1000000u),
            (unsigned long long)et_engine_live_streams(eng), (long long)atomic_load(&hub->pending));
    return et_engine_drain_wait(eng, stop ? start : start + timeout, pending_public, interrupted,
                                arg);
}

int et_edge_start(et_engine *eng, const et_edge_config *cfg, SSL_CTX *ctx)
{
    ET_GUARD(et_engine_init(eng, ET_SIDE_EDGE, &edge_ops, ctx, cfg->threads));
    eng->keepalive_ms = cfg->keepalive_ms;
    eng->max_streams = cfg->max_streams;
    eng->max_frame = cfg->max_frame != 0 ? cfg->max_frame : ET_FRAME_MAX_DEFAULT;
    ET_ENSURE(eng->max_frame >= ET_FRAME_MAX_MIN && eng->max_frame <= ET_FRAME_MAX_DEFAULT,
              ET_E_CONFIG);
    eng->idle_timeout_ns = cfg->idle_timeout_ns;
    snprintf(eng->congestion, sizeof(eng->congestion), "%s", cfg->congestion);
    edge_hub *hub = calloc(1, sizeof(*hub));
    ET_ENSURE(hub != NULL, ET_E_NOMEM);
    eng->side_state = hub;
    eng->session_free_side = free_edge_sess;
    hub->cfg = *cfg;
    pthread_mutex_init(&hub->mu, NULL);
    atomic_init(&hub->next_uc, 1);
    hub->started_ns = et_now_ns();
    et_edge_config *live = malloc(sizeof(*live));
    ET_ENSURE(live != NULL, ET_E_NOMEM);
    *live = *cfg;
    atomic_init(&hub->live, live);
    /* calloc'd pages stay unbacked until a client address touches them (and a reload may
     * turn the limit on) */
    hub->client_conns = calloc(CLIENT_SLOTS, sizeof(*hub->client_conns));
    ET_ENSURE(hub->client_conns != NULL, ET_E_NOMEM);
    hub->http_buckets = 256;
    hub->http = calloc(hub->http_buckets, sizeof(*hub->http));
    ET_ENSURE(hub->http != NULL, ET_E_NOMEM);
    if (cfg->tcp_lo != 0) {
        hub->ports = calloc((size_t)(cfg->tcp_hi - cfg->tcp_lo) + 1, sizeof(port_route));
        ET_ENSURE(hub->ports != NULL, ET_E_NOMEM);
    }
    for (unsigned i = 0; i < eng->nworkers; i++) {
        et_worker *w = &eng->workers[i];
        w->side = calloc(1, sizeof(edge_worker));
        ET_ENSURE(w->side != NULL, ET_E_NOMEM);
        ET_GUARD(add_listener(w, cfg->tunnel_addr, LISTEN_TUNNEL, 0));
        if (cfg->http_addr[0] != '\0')
            ET_GUARD(add_listener(w, cfg->http_addr, LISTEN_HTTP, 0));
    }
    ET_GUARD(et_engine_start(eng));
    et_logf(ET_LOG_INFO, "listening", "tunnel=%s http=%s threads=%u", cfg->tunnel_addr,
            cfg->http_addr[0] ? cfg->http_addr : "off", eng->nworkers);
    return ET_OK;
}

void et_edge_reload(et_engine *eng, const et_edge_config *cfg, SSL_CTX *ctx)
{
    edge_hub *hub = hub_of(eng);
    et_edge_config *live = malloc(sizeof(*live));
    if (live == NULL) {
        SSL_CTX_free(ctx);
        et_logf(ET_LOG_WARN, "reload_failed", "why=out_of_memory");
        return;
    }
    *live = *cfg;
    /* What the listeners and workers were made with stays until a restart. */
    const et_edge_config *was = &hub->cfg;
    if (strcmp(cfg->tunnel_addr, was->tunnel_addr) != 0 ||
        strcmp(cfg->http_addr, was->http_addr) != 0 || strcmp(cfg->tcp_bind, was->tcp_bind) != 0 ||
        cfg->tcp_lo != was->tcp_lo || cfg->tcp_hi != was->tcp_hi || cfg->threads != was->threads ||
        strcmp(cfg->congestion, was->congestion) != 0)
        et_logf(ET_LOG_WARN, "reload_partial",
                "why=\"listener addresses, --tcp-ports, --threads and --tcp-congestion change on "
                "restart only\"");
    memcpy(live->tunnel_addr, was->tunnel_addr, sizeof(live->tunnel_addr));
    memcpy(live->http_addr, was->http_addr, sizeof(live->http_addr));
    memcpy(live->tcp_bind, was->tcp_bind, sizeof(live->tcp_bind));
    live->tcp_lo = was->tcp_lo;
    live->tcp_hi = was->tcp_hi;
    live->threads = was->threads;
    memcpy(live->congestion, was->congestion, sizeof(live->congestion));
    et_edge_config *old = atomic_exchange_explicit(&hub->live, live, memory_order_acq_rel);
    et_engine_keep_until_cleanup(eng, old);
    atomic_store_explicit(&eng->keepalive_ms, cfg->keepalive_ms, memory_order_relaxed);
    atomic_store_explicit(&eng->max_streams, cfg->max_streams, memory_order_relaxed);
    atomic_store_explicit(&eng->idle_timeout_ns, cfg->idle_timeout_ns, memory_order_relaxed);
    et_engine_swap_ssl_ctx(eng, ctx);
    et_logf(ET_LOG_INFO, "reloaded",
            "rate_limit=%u rate_burst=%u max_tunnels=%u max_streams=%u max_client_conns=%u",
            cfg->rate_per_min, cfg->rate_burst, cfg->max_tunnels, cfg->max_streams,
            cfg->max_client_conns);
}

void et_edge_cleanup(et_engine *eng)
{
    for (unsigned i = 0; i < eng->nworkers; i++) {
        et_worker *w = &eng->workers[i];
        edge_worker *ew = w->side;
        while (ew != NULL && ew->listeners != NULL) {
            listener *l = ew->listeners;
            ew->listeners = l->next;
            et_reactor_del(w->r, &l->io);
            close(l->fd);
            free(l);
        }
    }
    et_engine_cleanup(eng); /* closes the sockets: sessions leave the hub */
    for (unsigned i = 0; i < eng->nworkers; i++) {
        free(eng->workers[i].side);
        eng->workers[i].side = NULL;
    }
    edge_hub *hub = hub_of(eng);
    if (hub != NULL) {
        while (hub->sessions != NULL) {
            edge_sess *es = hub->sessions;
            hub->sessions = es->next;
            et_session_unref(es->s, free_edge_sess);
        }
        free(hub->ports);
        free(hub->client_conns);
        free(atomic_load(&hub->live));
        for (size_t k = 0; k < TUNNEL_BUCKETS; k++) {
            while (hub->tunnels[k] != NULL) {
                tunnel_entry *t = hub->tunnels[k];
                hub->tunnels[k] = t->next;
                free(t);
            }
        }
        http_route_free_all(hub);
        pthread_mutex_destroy(&hub->mu);
        free(hub);
        eng->side_state = NULL;
    }
}

int et_read_key_file(const char *path, uint8_t out[ET_EDGE_KEY_MAX], size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        et_logf(ET_LOG_ERROR, "key_file_unreadable", "path=%s errno=%d", path, errno);
        return ET_RAISE(ET_E_CONFIG);
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, out + n, ET_EDGE_KEY_MAX - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == ET_EDGE_KEY_MAX)
            break;
    }
    close(fd);
    int rv = et_token_key_normalize(out, n, len);
    if (rv < 0)
        et_logf(ET_LOG_ERROR, "key_file_invalid", "path=%s why=\"need 32..1024 bytes\"", path);
    return rv;
}

/* --- HTTP routes ---------------------------------------------------------------------------- */

static size_t bucket_of(const edge_hub *hub, const char *p, size_t n)
{
    return (size_t)XXH3_64bits(p, n) & (hub->http_buckets - 1);
}

static http_route *lookup(edge_hub *hub, const char *p, size_t n)
{
    for (http_route *r = hub->http[bucket_of(hub, p, n)]; r != NULL; r = r->next)
        if (strlen(r->pattern) == n && memcmp(r->pattern, p, n) == 0)
            return r;
    return NULL;
}

http_route *http_route_find(edge_hub *hub, const char *host)
{
    size_t n = strlen(host);
    http_route *r = lookup(hub, host, n);
    if (r != NULL)
        return r;
    const char *dot = memchr(host, '.', n);
    if (dot == NULL || dot == host)
        return NULL;
    char wild[ET_HOST_MAX + 2];
    int k = snprintf(wild, sizeof(wild), "*%s", dot);
    return k > 0 && (size_t)k < sizeof(wild) ? lookup(hub, wild, (size_t)k) : NULL;
}

static void grow_routes(edge_hub *hub)
{
    size_t nb = hub->http_buckets * 2;
    http_route **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return; /* keep the longer chains */
    for (size_t i = 0; i < hub->http_buckets; i++) {
        while (hub->http[i] != NULL) {
            http_route *r = hub->http[i];
            hub->http[i] = r->next;
            size_t k = (size_t)XXH3_64bits(r->pattern, strlen(r->pattern)) & (nb - 1);
            r->next = b[k];
            b[k] = r;
        }
    }
    free(hub->http);
    hub->http = b;
    hub->http_buckets = nb;
}

http_route *http_route_get(edge_hub *hub, const char *p, size_t n)
{
    if (n == 0 || n > ET_HOST_MAX)
        return NULL;
    http_route *r = lookup(hub, p, n);
    if (r != NULL)
        return r;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    memcpy(r->pattern, p, n);
    size_t k = bucket_of(hub, p, n);
    r->next = hub->http[k];
    hub->http[k] = r;
    if (++hub->nhttp > hub->http_buckets * 4)
        grow_routes(hub);
    return r;
}

void http_route_free_all(edge_hub *hub)
{
    for (size_t i = 0; hub->http != NULL && i < hub->http_buckets; i++) {
        while (hub->http[i] != NULL) {
            http_route *r = hub->http[i];
            hub->http[i] = r->next;
            free(r);
        }
    }
    free(hub->http);
    hub->http = NULL;
}
