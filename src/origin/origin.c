/* origin.c: originctl's side of the engine (origin.h). */
#include "et/origin.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "et/logf.h"
#include "et/proxy.h"
#include "et/resolve.h"
#include "et/token.h"
#include "et/tls.h"
#include "et/version.h"

#define BACKOFF_MAX_S    30u
#define HEALTHY_RESET_NS (60ull * 1000000000ull)

typedef struct gen gen;

/* One place in the pool: the socket it has now, and its redial schedule. Owned by the worker
 * it was assigned to; only that worker touches it once the engine runs. */
typedef struct slot {
    et_worker *w;
    gen *g; /* the generation it belongs to */
    uint8_t role;
    uint16_t index;
    et_tsock *ts; /* current socket, not a reference (cleared by on_tsock_closed) */
    unsigned backoff_s;
    uint64_t up_since;
    bool ready;
    et_timer redial;              /* redial; once retired, the check of a socket still open */
    struct sockaddr_storage addr; /* what the last dial connected to, when looked up by name */
    socklen_t addr_len;           /* 0: the edge was given as an address */
    bool reached;                 /* the last dial got through TLS */
    uint64_t retire_until;        /* retired: the socket is closed by then, streams or not */
} slot;

/* A generation: one session (control and data sockets) toward the edge, with the settings it
 * was made with. GOAWAY from the edge retires it for a new one dialled at once, which lands on
 * the instance that replaces the old one; the retired generation's sockets carry their
 * in-flight streams until the old edge closes them, and are never redialled. A reload (SIGHUP)
 * makes a new generation with the new settings and retires the old one once the new one is
 * ready: GOAWAY on the old sockets (the edge opens nothing more there), each closed once its
 * streams are done. A retired generation is small (its slots) and is kept until exit. */
struct gen {
    unsigned number;       /* 1, 2, 3 ... */
    et_origin_config *cfg; /* owned: the settings its sockets announce and serve */
    et_session *sess;      /* one reference */
    slot *slots;           /* owned */
    unsigned nslots;
    _Atomic unsigned nready;
    _Atomic bool retired;
    uint32_t drain_ms;     /* from the GOAWAY that retired it, or our drain timeout */
    bool close_idle;       /* retired by us: close each socket once it carries nothing */
    _Atomic bool replaces; /* made by a reload: retire the older one once this is ready */
    gen *older;            /* owned: the generations it replaced */
};

typedef struct origin_state {
    pthread_mutex_t mu;    /* guards cur */
    gen *cur;              /* owned: the newest generation, which links the older ones */
    _Atomic bool draining; /* SIGTERM: GOAWAY sent, no redials, no new generation */
    et_resolver *res;      /* owned: the edge's addresses when it is given by name */
} origin_state;

static origin_state *state_of(et_engine *eng)
{
    return eng->side_state;
}

static void dial(slot *sl);

/* prime_edge looks the edge up now when it is given by name (start and reload, on the main
 * thread), so the first dials need not wait for the resolver's thread. */
static void prime_edge(origin_state *os, const et_origin_config *cfg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char host[ET_RESOLVE_HOST_MAX + 1];
    uint16_t port;
    if (et_sock_parse_addr(cfg->edge_addr, &ss, &len) == ET_OK ||
        et_resolver_split(cfg->edge_addr, host, sizeof(host), &port) < 0)
        return;
    (void)et_resolver_prime(os->res, host, port); /* a failure is logged; dials ask again */
}

static void redial_fire(et_reactor *r, et_timer *t)
{
    dial(ET_CONTAINER_OF(t, slot, redial));
}

static void schedule_redial(slot *sl)
{
    et_engine *eng = sl->w->eng;
    if (atomic_load(&eng->exit_code) != 0 || atomic_load(&eng->stopping) ||
        atomic_load(&sl->g->retired) || atomic_load(&state_of(eng)->draining))
        return;
    uint64_t now = et_reactor_now(sl->w->r);
    if (sl->up_since != 0 && now - sl->up_since >= HEALTHY_RESET_NS)
        sl->backoff_s = 0; /* it was healthy for a while: start over */
    sl->backoff_s = sl->backoff_s == 0 ? 1 : sl->backoff_s * 2;
    if (sl->backoff_s > BACKOFF_MAX_S)
        sl->backoff_s = BACKOFF_MAX_S;
    uint32_t jitter;
    RAND_bytes((uint8_t *)&jitter, sizeof(jitter));
    uint64_t delay = (uint64_t)sl->backoff_s * 1000000000ull +
                     (uint64_t)(jitter % 1000u) * (uint64_t)sl->backoff_s * 250000ull;
    et_logf(ET_LOG_INFO, "redial", "role=%s index=%u in_ms=%llu",
            sl->role == ET_ROLE_CONTROL ? "control" : "data", sl->index,
            (unsigned long long)(delay / 1000000));
    if (et_timer_arm(sl->w->r, &sl->redial, now + delay) < 0)
        et_logf(ET_LOG_ERROR, "timer_failed", "what=redial");
}

/* report_failed tells the resolver that the slot's last dial, to an address its lookup gave,
 * did not get through TLS; not when we closed it ourselves (retired, stopping, draining). */
static void report_failed(slot *sl)
{
    et_engine *eng = sl->w->eng;
    origin_state *os = state_of(eng);
    char host[ET_RESOLVE_HOST_MAX + 1];
    uint16_t port;
    if (atomic_load(&sl->g->retired) || atomic_load(&eng->stopping) || atomic_load(&os->draining) ||
        et_resolver_split(sl->g->cfg->edge_addr, host, sizeof(host), &port) < 0)
        return;
    et_resolver_failed(os->res, host, port, &sl->addr, sl->addr_len);
}

static void dial(slot *sl)
{
    const et_origin_config *cfg = sl->g->cfg;
    if (atomic_load(&sl->g->retired))
        return;
    struct sockaddr_storage ss;
    socklen_t sl_len;
    int fd = -1;
    sl->addr_len = 0;
    sl->reached = false;
    if (et_sock_parse_addr(cfg->edge_addr, &ss, &sl_len) < 0) {
        /* A name: the address its last lookup gave (never a lookup here, on the reactor). */
        char host[ET_RESOLVE_HOST_MAX + 1];
        uint16_t port;
        if (et_resolver_split(cfg->edge_addr, host, sizeof(host), &port) < 0) {
            et_logf(ET_LOG_ERROR, "bad_edge_address", "edge=%s", cfg->edge_addr);
            return; /* originctl checked it: not reached */
        }
        if (et_resolver_pick(state_of(sl->w->eng)->res, host, port, &ss, &sl_len) < 0) {
            et_logf(ET_LOG_DEBUG, "dial_waits", "edge=%s why=\"no address known yet\"",
                    cfg->edge_addr);
            schedule_redial(sl);
            return;
        }
        sl->addr = ss;
        sl->addr_len = sl_len;
    }
    int rv = et_sock_connect_start((struct sockaddr *)&ss, sl_len, &fd);
    if (rv < 0 && rv != ET_E_AGAIN) {
        et_logf(ET_LOG_WARN, "connect_failed", "edge=%s errno=%d", cfg->edge_addr, errno);
        if (sl->addr_len > 0)
            report_failed(sl);
        schedule_redial(sl);
        return;
    }
    et_tsock *ts = et_tsock_new(sl->w, fd, rv == ET_OK ? ET_TS_TLS : ET_TS_CONNECTING, sl->role);
    if (ts == NULL) {
        schedule_redial(sl);
        return;
    }
    snprintf(ts->peer, sizeof(ts->peer), "%.63s", cfg->edge_addr);
    ts->side = sl;
    ts->sess = sl->g->sess;
    et_session_ref(ts->sess);
    sl->ts = ts;
    if (et_tls_client_prepare(ts->ssl, cfg->edge_host) < 0) {
        char buf[256];
        et_logf(ET_LOG_ERROR, "tls_setup_failed", "detail=\"%s\"",
                et_tls_err_string(buf, sizeof(buf)));
        et_tsock_close(ts, 0, "tls setup failed");
    }
}

static void dial_msg(et_reactor *r, void *arg)
{
    slot *sl = arg;
    if (!atomic_load(&sl->g->retired))
        dial(sl);
}

#define RETIRE_TICK_NS (1000000000ull)

/* retired_tick looks at a retired slot's socket once a second: closed once it carries nothing
 * (when we retired it), or at the drain time (and a grace), streams or not (cancelled). */
static void retired_tick(et_reactor *r, et_timer *t)
{
    slot *sl = ET_CONTAINER_OF(t, slot, redial);
    if (sl->ts == NULL)
        return;
    uint64_t now = et_reactor_now(r);
    if (now >= sl->retire_until) {
        et_tsock_close(sl->ts, ET_WE_SHUTDOWN, "drain time over");
        return;
    }
    if (sl->g->close_idle && sl->ts->nstreams == 0) {
        et_tsock_close(sl->ts, 0, "generation retired");
        return;
    }
    uint64_t at = now + RETIRE_TICK_NS < sl->retire_until ? now + RETIRE_TICK_NS : sl->retire_until;
    if (et_timer_arm(r, t, at) < 0)
        et_logf(ET_LOG_WARN, "timer_failed", "what=retire");
}

#define RETIRE_GRACE_NS (5ull * 1000000000ull)

/* retire_run stops a slot of a retired generation on its worker: no redial; a socket still in
 * its handshake is closed (it carries nothing); a ready one stays for its streams, bounded by
 * the drain time. */
static void retire_run(et_reactor *r, void *arg)
{
    slot *sl = arg;
    et_timer_cancel(r, &sl->redial);
    et_timer_init(&sl->redial, retired_tick);
    if (sl->ts == NULL)
        return;
    if (!sl->ready) {
        et_tsock_close(sl->ts, 0, "generation retired");
        return;
    }
    if (sl->g->close_idle) /* our own retirement: the edge must stop opening streams here */
        et_tsock_goaway(sl->ts, sl->g->drain_ms, "reload");
    uint64_t now = et_reactor_now(r);
    sl->retire_until = now + (uint64_t)sl->g->drain_ms * 1000000ull + RETIRE_GRACE_NS;
    if (et_timer_arm(r, &sl->redial, now + RETIRE_TICK_NS) < 0)
        et_logf(ET_LOG_WARN, "timer_failed", "what=retire");
}

/* retire_all tells every slot of retired generation |old| (on its worker) to stop. */
static void retire_all(et_engine *eng, gen *old)
{
    for (unsigned i = 0; i < old->nslots; i++)
        if (et_reactor_post(old->slots[i].w->r, retire_run, &old->slots[i]) < 0)
            ET_COUNT(eng->stats.inbox_full);
}

/* gen_new makes generation |number| with settings |src| (copied), a fresh session id and its
 * slots (not dialled). */
static gen *gen_new(et_engine *eng, unsigned number, const et_origin_config *src)
{
    gen *g = calloc(1, sizeof(*g));
    et_origin_config *cfg = malloc(sizeof(*cfg));
    if (g == NULL || cfg == NULL) {
        free(g);
        free(cfg);
        return NULL;
    }
    *cfg = *src;
    g->cfg = cfg;
    g->number = number;
    uint8_t id[ET_SESSION_ID_LEN];
    do {
        RAND_bytes(id, sizeof(id));
    } while (id[0] == 0 && memcmp(id, id + 1, sizeof(id) - 1) == 0);
    g->sess = et_session_new(eng, id);
    g->nslots = cfg->data_conns + (cfg->no_control ? 0 : 1);
    g->slots = calloc(g->nslots, sizeof(slot));
    if (g->sess == NULL || g->slots == NULL) {
        et_session_unref(g->sess, NULL);
        free(g->slots);
        free(g->cfg);
        free(g);
        return NULL;
    }
    g->sess->legacy = cfg->no_control;
    for (unsigned i = 0; i < g->nslots; i++) {
        slot *sl = &g->slots[i];
        bool ctrl = !cfg->no_control && i == 0;
        sl->g = g;
        sl->role = ctrl ? ET_ROLE_CONTROL : ET_ROLE_DATA;
        sl->index = (uint16_t)(ctrl ? 0 : cfg->no_control ? i : i - 1);
        /* The control socket lives on the control worker; data sockets spread over the rest. */
        sl->w =
            ctrl ? eng->control : &eng->workers[(i - (cfg->no_control ? 0 : 1)) % eng->nworkers];
        et_timer_init(&sl->redial, redial_fire);
    }
    return g;
}

/* gen_dial starts every socket of |g| on its worker. Returns ET_OK or the first error. */
static int gen_dial(gen *g)
{
    int rv = ET_OK;
    for (unsigned i = 0; i < g->nslots; i++) {
        int r = et_reactor_post(g->slots[i].w->r, dial_msg, &g->slots[i]);
        rv = rv == ET_OK ? r : rv;
    }
    return rv;
}

static void gen_free_all(gen *g)
{
    while (g != NULL) {
        gen *older = g->older;
        et_session_unref(g->sess, NULL);
        free(g->slots);
        free(g->cfg);
        free(g);
        g = older;
    }
}

/* origin_goaway: the edge instance of |ts|'s generation is going away. The first GOAWAY of the
 * newest generation starts the next one at once; the old one keeps its ready sockets for the
 * streams they carry (the edge may still open streams there for public connections it had
 * already accepted) and is never redialled. */
static void origin_goaway(et_tsock *ts, const et_goaway *ga)
{
    et_engine *eng = ts->w->eng;
    origin_state *os = state_of(eng);
    slot *sl = ts->side;
    if (sl == NULL || atomic_load(&os->draining) || atomic_load(&eng->stopping))
        return;
    gen *old = sl->g, *g = NULL;
    pthread_mutex_lock(&os->mu);
    if (os->cur == old && !atomic_load(&old->retired)) {
        g = gen_new(eng, old->number + 1, old->cfg);
        if (g != NULL) {
            old->drain_ms = ga->drain_ms;
            atomic_store(&old->retired, true);
            g->older = old;
            os->cur = g;
        }
    }
    pthread_mutex_unlock(&os->mu);
    if (g == NULL)
        return; /* already moving (or out of memory: the redials of the old one go on) */
    char hex[2 * ET_SESSION_ID_LEN + 1];
    et_session_hex(g->sess->id, hex);
    et_logf(ET_LOG_INFO, "session_renew", "generation=%u session=%s drain_ms=%u", g->number, hex,
            ga->drain_ms);
    if (gen_dial(g) < 0)
        ET_COUNT(eng->stats.inbox_full);
    retire_all(eng, old);
}

void et_origin_reload(et_engine *eng, const et_origin_config *cfg, SSL_CTX *ctx)
{
    origin_state *os = state_of(eng);
    gen *g = NULL;
    pthread_mutex_lock(&os->mu);
    if (!atomic_load(&os->draining)) {
        g = gen_new(eng, os->cur->number + 1, cfg);
        if (g != NULL) {
            g->cfg->threads = os->cur->cfg->threads; /* the reactors stay as started */
            if (strcmp(g->cfg->congestion, eng->congestion) != 0)
                et_logf(ET_LOG_WARN, "reload_partial",
                        "why=\"--threads and --tcp-congestion change on restart only\"");
            memcpy(g->cfg->congestion, eng->congestion, sizeof(g->cfg->congestion)); /* also */
            atomic_store(&g->replaces, true);
            g->older = os->cur;
            os->cur = g;
        }
    }
    pthread_mutex_unlock(&os->mu);
    if (g == NULL) {
        SSL_CTX_free(ctx);
        et_logf(ET_LOG_WARN, "reload_failed", "why=\"draining or out of memory\"");
        return;
    }
    et_engine_swap_ssl_ctx(eng, ctx); /* the new generation's sockets use it */
    prime_edge(os, g->cfg);
    char hex[2 * ET_SESSION_ID_LEN + 1];
    et_session_hex(g->sess->id, hex);
    et_logf(ET_LOG_INFO, "reloaded", "generation=%u session=%s data=%u control=%d", g->number, hex,
            g->cfg->data_conns, g->cfg->no_control ? 0 : 1);
    if (gen_dial(g) < 0)
        ET_COUNT(eng->stats.inbox_full);
}

/* retire_replaced retires the generation that reload generation |g| replaces, now that |g| is
 * ready (make before break); once. */
static void retire_replaced(et_engine *eng, gen *g)
{
    origin_state *os = state_of(eng);
    if (!atomic_exchange(&g->replaces, false))
        return;
    pthread_mutex_lock(&os->mu);
    gen *old = g->older;
    bool retire = old != NULL && !atomic_load(&old->retired);
    if (retire) {
        old->close_idle = true;
        old->drain_ms = (uint32_t)(old->cfg->drain_timeout_ns / 1000000u);
        atomic_store(&old->retired, true);
    }
    pthread_mutex_unlock(&os->mu);
    if (retire)
        retire_all(eng, old);
}

/* cur_cfg returns the settings of the newest generation (kept until exit). */
static const et_origin_config *cur_cfg(origin_state *os)
{
    pthread_mutex_lock(&os->mu);
    const et_origin_config *cfg = os->cur->cfg;
    pthread_mutex_unlock(&os->mu);
    return cfg;
}

static void goaway_run(et_reactor *r, void *arg)
{
    et_worker *w = arg;
    et_worker_goaway(w, (uint32_t)(cur_cfg(state_of(w->eng))->drain_timeout_ns / 1000000u),
                     "shutdown");
}

uint64_t et_origin_drain(et_engine *eng, bool (*interrupted)(void *arg), void *arg)
{
    origin_state *os = state_of(eng);
    uint64_t start = et_now_ns();
    atomic_store(&os->draining, true);
    uint64_t timeout = cur_cfg(os)->drain_timeout_ns;
    if (et_engine_post_all(eng, goaway_run) != 0)
        ET_COUNT(eng->stats.inbox_full);
    et_logf(ET_LOG_INFO, "draining", "timeout_ms=%llu streams=%llu",
            (unsigned long long)(timeout / 1000000u),
            (unsigned long long)et_engine_live_streams(eng));
    return et_engine_drain_wait(eng, start + timeout, NULL, interrupted, arg);
}

/* --- handshake -------------------------------------------------------------------------- */

static int origin_tls_done(et_tsock *ts)
{
    slot *sl = ts->side;
    const et_origin_config *cfg = sl->g->cfg;
    sl->reached = true;
    if (!et_tls_alpn_ok(ts->ssl)) {
        et_logf(ET_LOG_WARN, "tls_failed", "why=\"edge did not select ALPN %s\"", ET_TLS_ALPN);
        return ET_E_TLS;
    }
    et_frame h = {0, 0, 0, ET_A_HELLO, 0, NULL};
    static const char agent[] = "originctl/" ET_VERSION;
    et_msg m = {.hello = {
                    .version_min = ET_PROTO_VERSION_MIN,
                    .version_max = ET_PROTO_VERSION_MAX,
                    .role = sl->role,
                    .hello_flags = cfg->no_control ? ET_HELLO_LEGACY : 0,
                    .socket_index = sl->index,
                    .max_frame = ET_FRAME_MAX_DEFAULT,
                    .initial_window = ET_WINDOW_DEFAULT,
                    .token = {(const uint8_t *)cfg->token, strlen(cfg->token)},
                    .agent = {(const uint8_t *)agent, sizeof(agent) - 1},
                }};
    memcpy(m.hello.session_id, sl->g->sess->id, ET_SESSION_ID_LEN);
    for (unsigned i = 0; i < cfg->ntcp && m.hello.nroutes < ET_ROUTES_MAX; i++)
        m.hello.routes[m.hello.nroutes++] =
            (et_route){ET_OPEN_TCP, cfg->tcp[i].public_port, {NULL, 0}};
    for (unsigned i = 0; i < cfg->nhttp && m.hello.nroutes < ET_ROUTES_MAX; i++) {
        const char *p = cfg->http[i].pattern;
        m.hello.routes[m.hello.nroutes++] =
            (et_route){ET_OPEN_HTTP, 0, {(const uint8_t *)p, strlen(p)}};
    }
    return et_tsock_queue(ts, &h, &m);
}

static bool permanent(uint16_t code)
{
    return (code >> 8) == 0x01 || code == ET_WE_VERSION;
}

static int origin_handshake_frame(et_tsock *ts, const et_frame *f, const et_msg *m)
{
    et_engine *eng = ts->w->eng;
    slot *sl = ts->side;
    if (f->action == ET_A_ERROR) {
        uint16_t code = m->error.code;
        et_logf(ET_LOG_ERROR, "refused", "reason=%s role=%s index=%u text=\"%.*s\"",
                et_wire_error_name(code), sl->role == ET_ROLE_CONTROL ? "control" : "data",
                sl->index, (int)m->error.text.n, (const char *)m->error.text.p);
        if (permanent(code) && atomic_load(&eng->exit_code) == 0) {
            /* The edge will say the same again: stop instead of redialling forever. */
            atomic_store(&eng->exit_code, 3);
            kill(getpid(), SIGTERM);
        }
        et_tsock_close(ts, 0, "refused by edge");
        return ET_OK;
    }
    const et_welcome *w = &m->welcome;
    gen *g = sl->g;
    if (w->version < ET_PROTO_VERSION_MIN || w->version > ET_PROTO_VERSION_MAX ||
        w->role != sl->role || memcmp(w->session_id, g->sess->id, ET_SESSION_ID_LEN) != 0)
        return ET_E_PROTO(ET_WE_PROTOCOL);
    ts->peer_max_frame = w->max_frame;
    /* The edge's interval; without one our own default, so a dead edge is still noticed. */
    ts->keepalive_ms = w->keepalive_ms != 0 ? w->keepalive_ms : 5000;
    et_tsock *old = NULL;
    int rv = et_session_attach(g->sess, ts, &old);
    if (rv < 0)
        return rv;
    if (old != NULL) { /* a control socket that was not closed yet: this one replaces it */
        et_tsock_close(old, ET_WE_SHUTDOWN, "replaced by a new control socket");
        et_tsock_unref(old);
    }
    et_tsock_set_ready(ts);
    sl->ready = true;
    sl->up_since = et_reactor_now(ts->w->r);
    unsigned ready = atomic_fetch_add(&g->nready, 1) + 1;
    et_logf(ET_LOG_INFO, "socket_up", "role=%s index=%u socket=%u edge_socket=%u tunnel=%.*s",
            sl->role == ET_ROLE_CONTROL ? "control" : "data", sl->index, ts->id, w->socket_id,
            (int)w->tunnel.n, (const char *)w->tunnel.p);
    if (ready == g->nslots) {
        char hex[2 * ET_SESSION_ID_LEN + 1];
        et_session_hex(g->sess->id, hex);
        et_logf(ET_LOG_INFO, "ready", "session=%s control=%d data=%u generation=%u", hex,
                g->cfg->no_control ? 0 : 1, g->cfg->data_conns, g->number);
        retire_replaced(eng, g); /* a reload's new generation is up: the old one goes */
    }
    return ET_OK;
}

static void origin_closed(et_tsock *ts)
{
    slot *sl = ts->side;
    if (sl == NULL)
        return;
    et_session_detach(sl->g->sess, ts);
    if (sl->ts != ts)
        return;
    sl->ts = NULL;
    if (sl->addr_len > 0 && !sl->reached) /* that address did not answer: the next one */
        report_failed(sl);
    if (sl->ready) {
        sl->ready = false;
        atomic_fetch_sub(&sl->g->nready, 1);
    }
    if (atomic_load(&sl->g->retired))
        et_timer_cancel(ts->w->r, &sl->redial);
    else
        schedule_redial(sl);
}

/* --- streams ---------------------------------------------------------------------------- */

static int origin_open(et_tsock *ts, const et_frame *f, const et_open *o)
{
    et_engine *eng = ts->w->eng;
    const et_origin_config *cfg = ((slot *)ts->side)->g->cfg; /* its generation's routes */
    const struct sockaddr_storage *local = NULL;
    socklen_t local_len = 0;
    if (o->kind == ET_OPEN_TCP) {
        for (unsigned i = 0; i < cfg->ntcp && local == NULL; i++) {
            if (cfg->tcp[i].public_port == o->server.port) {
                local = &cfg->tcp[i].local;
                local_len = cfg->tcp[i].local_len;
            }
        }
    } else {
        /* An exact pattern wins over a wildcard. */
        for (int pass = 0; pass < 2 && local == NULL; pass++) {
            for (unsigned i = 0; i < cfg->nhttp && local == NULL; i++) {
                const et_origin_http_route *r = &cfg->http[i];
                if ((r->pattern[0] == '*') != (pass == 1))
                    continue;
                if (et_host_match(r->pattern, (const char *)o->host.p, o->host.n)) {
                    local = &r->local;
                    local_len = r->local_len;
                }
            }
        }
    }
    if (local == NULL) {
        et_logf(ET_LOG_WARN, "no_route", "uc=%u kind=%u port=%u host=\"%.*s\"", f->user_channel,
                o->kind, o->server.port, (int)o->host.n, (const char *)o->host.p);
        et_stream_send_cancel(ts->w, ts->sess, ts, f->user_channel, f->stream_id,
                              ET_CR_ORIGIN_REFUSED);
        /* DATA already on its way for it is dropped quietly, not answered as unknown */
        if (et_stream_table_bury(ts->w->streams, ts->sess->key, f->user_channel, f->stream_id,
                                 et_reactor_now(ts->w->r) + ET_TOMBSTONE_NS) < 0)
            return ET_E_NOMEM;
        return ET_OK;
    }
    et_stream *s = NULL;
    int rv = et_stream_open(ts, f->user_channel, f->stream_id, o->kind, &s);
    if (rv == ET_E_CLOSED) {
        /* The CANCEL overtook this OPEN: never connect to the local service. */
        ET_COUNT(eng->stats.opens_refused_tombstone);
        return ET_OK;
    }
    if (rv < 0) {
        et_stream_send_cancel(ts->w, ts->sess, ts, f->user_channel, f->stream_id, ET_CR_LIMIT);
        return ET_OK;
    }
    s->send_credit = o->initial_window;
    int fd = -1;
    if (cfg->proxy_protocol) {
        uint8_t hdr[ET_PROXY_V2_MAX];
        int n = et_proxy_v2_encode(&o->client, &o->server, hdr, sizeof(hdr));
        if (n < 0 || et_stream_prepend_local(s, hdr, (size_t)n) < 0) {
            et_stream_cancel(s, ET_CR_ORIGIN_REFUSED);
            return ET_OK;
        }
    }
    rv = et_sock_connect_start((const struct sockaddr *)local, local_len, &fd);
    if (rv < 0 && rv != ET_E_AGAIN) {
        et_stream_cancel(s, ET_CR_ORIGIN_REFUSED);
        return ET_OK;
    }
    if (et_stream_attach(s, fd, rv == ET_E_AGAIN) == ET_OK && rv == ET_OK)
        et_stream_connected(s, true);
    return ET_OK;
}

static const et_side_ops origin_ops = {
    .on_handshake_frame = origin_handshake_frame,
    .on_open = origin_open,
    .on_tsock_closed = origin_closed,
    .on_tls_done = origin_tls_done,
    .on_goaway = origin_goaway,
    .on_control_frame = et_origin_control_frame, /* control.c */
};

int et_origin_start(et_engine *eng, const et_origin_config *cfg, SSL_CTX *ctx)
{
    ET_GUARD(et_engine_init(eng, ET_SIDE_ORIGIN, &origin_ops, ctx, cfg->threads));
    snprintf(eng->congestion, sizeof(eng->congestion), "%s", cfg->congestion);
    origin_state *os = calloc(1, sizeof(*os));
    ET_ENSURE(os != NULL, ET_E_NOMEM);
    eng->side_state = os;
    pthread_mutex_init(&os->mu, NULL);
    os->res = et_resolver_new();
    ET_ENSURE(os->res != NULL, ET_E_NOMEM);
    prime_edge(os, cfg);
    gen *first = gen_new(eng, 1, cfg);
    ET_ENSURE(first != NULL, ET_E_NOMEM);
    os->cur = first; /* from the start on, read and written under os->mu */
    ET_GUARD(et_engine_start(eng));
    ET_GUARD(gen_dial(first));
    et_logf(ET_LOG_INFO, "starting", "edge=%s sockets=%u threads=%u", cfg->edge_addr, first->nslots,
            eng->nworkers);
    return ET_OK;
}

const et_origin_config *et_origin_config_of(et_engine *eng)
{
    return cur_cfg(state_of(eng));
}

et_session *et_origin_session(et_engine *eng)
{
    origin_state *os = state_of(eng);
    pthread_mutex_lock(&os->mu);
    et_session *s = os->cur->sess; /* generations live until et_origin_cleanup */
    pthread_mutex_unlock(&os->mu);
    return s;
}

void et_origin_cleanup(et_engine *eng)
{
    origin_state *os = state_of(eng);
    for (gen *g = os != NULL ? os->cur : NULL; g != NULL; g = g->older)
        for (unsigned i = 0; i < g->nslots; i++)
            et_timer_cancel(g->slots[i].w->r, &g->slots[i].redial);
    et_engine_cleanup(eng);
    if (os != NULL) {
        gen_free_all(os->cur);
        et_resolver_free(os->res);
        pthread_mutex_destroy(&os->mu);
        free(os);
        eng->side_state = NULL;
    }
}
