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

/* --- public TCP ------------------------------------------------------------------------- */

static void open_public_stream(et_tsock *ts, int fd)
{
    edge_hub *hub = hub_of(ts->w->eng);
    if (ts->state != ET_TS_READY) {
        ET_COUNT(ts->w->eng->stats.public_refused);
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
        et_sock_reset_close(fd);
        return;
    }
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
} handoff;

static void handoff_run(et_reactor *r, void *arg)
{
    handoff *h = arg;
    open_public_stream(h->ts, h->fd);
    et_tsock_unref(h->ts);
    free(h);
}

/* pick_socket chooses a data socket for a public connection on |port| (a reference), or NULL. */
static et_tsock *pick_socket(edge_hub *hub, uint16_t port)
{
    et_tsock *ts = NULL;
    pthread_mutex_lock(&hub->mu);
    port_route *pr = &hub->ports[port - hub->cfg.tcp_lo];
    for (unsigned k = 0; k < pr->n && ts == NULL; k++)
        ts = et_session_pick_data(pr->sess[pr->rr++ % pr->n]);
    pthread_mutex_unlock(&hub->mu);
    return ts;
}

/* on_public_tcp hands an accepted public TCP connection to a data socket of a session serving
 * its port, or refuses it at once (RST) when the tunnel is not connected. */
static void on_public_tcp(listener *l, int fd)
{
    et_worker *w = l->w;
    et_tsock *ts = pick_socket(hub_of(w->eng), l->port);
    if (ts == NULL) {
        ET_COUNT(w->eng->stats.public_refused);
        et_sock_reset_close(fd);
        return;
    }
    if (ts->w == w) {
        open_public_stream(ts, fd);
        et_tsock_unref(ts);
        return;
    }
    handoff *h = malloc(sizeof(*h));
    if (h != NULL) {
        *h = (handoff){ts, fd};
        if (et_reactor_post(ts->w->r, handoff_run, h) == ET_OK)
            return;
        free(h);
    }
    ET_COUNT(w->eng->stats.inbox_full);
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

/* listener_on_event accepts a batch of connections for the listener's kind; after a full batch
 * it lets other work run and comes back (edge-triggered: no new event would come). */
static void listener_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    static const char *names[] = {
        [LISTEN_TUNNEL] = "tunnel", [LISTEN_TCP] = "tcp", [LISTEN_HTTP] = "http"};
    listener *l = ET_CONTAINER_OF(io, listener, io);
    void (*take)(listener *, int) = l->kind == LISTEN_TCP    ? on_public_tcp
                                    : l->kind == LISTEN_HTTP ? on_http
                                                             : on_tunnel;
    for (int i = 0; i < 256; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                et_logf(ET_LOG_WARN, "accept_failed", "listener=%s port=%u errno=%d",
                        names[l->kind], l->port, errno);
            return;
        }
        take(l, fd);
    }
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
 * Returns ET_OK or ET_E_PROTO(code). */
static int bind_session(et_engine *eng, et_tsock *ts, const et_hello *h, const et_token_claims *c)
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
        es->in_hub = true;
        char hex[2 * ET_SESSION_ID_LEN + 1];
        et_session_hex(s->id, hex);
        et_logf(ET_LOG_INFO, "session_up", "tunnel=%s session=%s legacy=%d", s->tunnel, hex,
                s->legacy);
    }
    if (ts->role == ET_ROLE_DATA) {
        /* A control socket joins the session once it is on the control worker (adopt). */
        et_tsock *none = NULL;
        int rv = et_session_attach(es->s, ts, &none);
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
    int rv = et_token_verify(hub->cfg.token_key, hub->cfg.token_key_len, h->token.p, h->token.n,
                             (int64_t)time(NULL), 0, c);
    for (size_t i = 0; rv == ET_OK && i < h->nroutes; i++)
        if (!route_within_token(&hub->cfg, c, &h->routes[i]))
            rv = ET_E_PROTO(ET_WE_AUTH_SCOPE);
    if (rv == ET_OK) {
        ts->role = h->role;
        pthread_mutex_lock(&hub->mu);
        rv = bind_session(eng, ts, h, c);
        pthread_mutex_unlock(&hub->mu);
    }
    if (rv < 0) {
        free(c);
        return et_err_class(rv) == ET_CLASS_PROTOCOL ? rv : ET_E_PROTO(ET_WE_AUTH_MALFORMED);
    }
    ts->peer_max_frame = h->max_frame;
    ts->peer_window = h->initial_window;
    et_frame wh = {0, 0, 0, ET_A_WELCOME, 0, NULL};
    ts->keepalive_ms = eng->keepalive_ms;
    et_msg wm = {.welcome = {ET_PROTO_VERSION_MAX,
                             h->role,
                             ET_FRAME_MAX_DEFAULT,
                             {0},
                             ts->id,
                             eng->keepalive_ms,
                             {(const uint8_t *)c->sub, strlen(c->sub)}}};
    memcpy(wm.welcome.session_id, h->session_id, ET_SESSION_ID_LEN);
    rv = et_tsock_queue(ts, &wh, &wm);
    if (rv == ET_OK) {
        et_tsock_set_ready(ts);
        char hex[2 * ET_SESSION_ID_LEN + 1];
        et_session_hex(h->session_id, hex);
        et_logf(ET_LOG_INFO, "socket_up", "role=%s session=%s tunnel=%s socket=%u index=%u peer=%s",
                h->role == ET_ROLE_CONTROL ? "control" : "data", hex, c->sub, ts->id,
                h->socket_index, ts->peer);
        if (h->role == ET_ROLE_CONTROL)
            et_tsock_move(ts, eng->control); /* control sockets live on the control worker */
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
                break;
            }
        }
        es->in_hub = false;
        gone = es;
    }
    pthread_mutex_unlock(&hub->mu);
    if (gone != NULL) {
        et_logf(ET_LOG_INFO, "session_down", "tunnel=%s", s->tunnel);
        et_session_unref(s, free_edge_sess); /* the hub's reference */
    }
}

static const et_side_ops edge_ops = {
    .on_handshake_frame = edge_on_hello,
    .on_open = NULL,
    .on_tsock_closed = edge_on_closed,
    .on_tls_done = NULL,
    .on_control_frame = et_edge_control_frame, /* admin.c */
};

/* --- start / stop ----------------------------------------------------------------------- */

int et_edge_start(et_engine *eng, const et_edge_config *cfg, SSL_CTX *ctx)
{
    ET_GUARD(et_engine_init(eng, ET_SIDE_EDGE, &edge_ops, ctx, cfg->threads));
    eng->keepalive_ms = cfg->keepalive_ms;
    edge_hub *hub = calloc(1, sizeof(*hub));
    ET_ENSURE(hub != NULL, ET_E_NOMEM);
    eng->side_state = hub;
    eng->session_free_side = free_edge_sess;
    hub->cfg = *cfg;
    pthread_mutex_init(&hub->mu, NULL);
    atomic_init(&hub->next_uc, 1);
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
