/* admin.c: edged's admin listener (edge.h): health, readiness, metrics, the tunnel list, tunnel
 * health probes (HEALTH frames) and pushes to origins (PUSH frames).
 *
 * Threads. The server runs on its own thread (httpd.h), not on the control reactor: a slow
 * scrape or a large tunnel list must never delay a CANCEL waiting on the control socket, and
 * the control worker runs at raised priority, which admin work must not borrow. From there it
 * reads the atomic counters of et_stats and of each session, and takes the hub's mutex (then a
 * session's, the order route() uses) only to copy the session list, routes and socket facts
 * out (new public connections take the hub's mutex too, the cancel path the session's, so both
 * are held for a copy, never while an answer is built). It never takes a lock or touches a
 * socket of the data path. Frames for an origin (HEALTH, PUSH) are posted
 * to the inbox of the worker that owns the socket, which queues them; a HEALTH_ANSWER comes
 * back the same way, posted by the control worker to the admin thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/sockios.h>

#include <jansson.h>

#include "et/edge.h"
#include "et/httpd.h"
#include "et/logf.h"

#include "edge_internal.h"

#define PROBE_TIMEOUT_NS (5ull * 1000000000ull) /* the origin's own probe gives up after 2 s */
#define PUSH_QUEUE_MAX   (64u * 1024u) /* bytes waiting toward one origin before a push drops */
#define JSON_TYPE        "application/json"

typedef struct probe {
    struct edge_admin *a;
    uint32_t id;
    uint32_t sess_key; /* only that session's answer counts */
    char tunnel[ET_TUNNEL_NAME_MAX + 1];
    et_httpd_conn *conn; /* owes the answer */
    et_timer timer;
    struct probe *next;
} probe;

typedef struct edge_admin {
    et_engine *eng;
    et_httpd *httpd; /* owned */
    _Atomic bool ready;
    probe *probes; /* owned; admin thread only */
    uint32_t next_probe;
    _Atomic uint32_t next_push;
} edge_admin;

/* --- frames toward an origin, queued by the socket's own worker ---------------------------- */

typedef struct frame_msg {
    et_tsock *ts; /* one reference */
    uint8_t action;
    uint32_t id;
    uint8_t kind;
    char topic[ET_HOST_MAX + 1]; /* PUSH: the topic; HEALTH: the host to probe */
    char *body;                  /* owned (PUSH) */
    size_t body_len;
} frame_msg;

static void frame_msg_run(et_reactor *r, void *arg)
{
    frame_msg *fm = arg;
    et_tsock *ts = fm->ts;
    et_engine *eng = ts->w->eng;
    uint8_t st = atomic_load(&ts->state);
    et_frame h = {0, 0, 0, fm->action, 0, NULL};
    et_msg m;
    memset(&m, 0, sizeof(m));
    if (fm->action == ET_A_HEALTH) {
        m.health.probe_id = fm->id;
        m.health.host = (et_bytes){(const uint8_t *)fm->topic, strlen(fm->topic)};
        if (st >= ET_TS_READY && st != ET_TS_CLOSED)
            (void)et_tsock_queue(ts, &h, &m);
    } else if (st < ET_TS_READY || st == ET_TS_CLOSED) {
        ET_COUNT(eng->stats.push_dropped);
        ET_COUNT(ts->sess->push_dropped);
        et_logf(ET_LOG_INFO, "push_dropped", "push_id=%u tunnel=%s why=socket_gone", fm->id,
                ts->sess->tunnel);
    } else {
        /* The origin's queue: our control queue plus what the kernel has not sent yet. A slow
         * origin fills it; pushes beyond the bound are dropped and counted, never queued
         * without limit (which would close the socket, et_tsock_queue). */
        int outq = 0;
        if (ioctl(ts->fd, SIOCOUTQ, &outq) < 0)
            outq = 0;
        size_t waiting = ts->ctrl_len + (size_t)(outq > 0 ? outq : 0);
        m.push = (et_push){fm->id,
                           fm->kind,
                           {(const uint8_t *)fm->topic, strlen(fm->topic)},
                           {(const uint8_t *)fm->body, fm->body_len}};
        if (waiting + ET_FRAME_HEADER_LEN + 8 + strlen(fm->topic) + fm->body_len > PUSH_QUEUE_MAX) {
            ET_COUNT(eng->stats.push_dropped);
            ET_COUNT(ts->sess->push_dropped);
            et_logf(ET_LOG_INFO, "push_dropped", "push_id=%u tunnel=%s why=queue_full queued=%zu",
                    fm->id, ts->sess->tunnel, waiting);
        } else if (et_tsock_queue(ts, &h, &m) == ET_OK) {
            ET_COUNT(eng->stats.push_sent);
            ET_COUNT(ts->sess->push_sent);
        } else {
            /* The socket refused it (and is closing): a push is always counted one way. */
            ET_COUNT(eng->stats.push_dropped);
            ET_COUNT(ts->sess->push_dropped);
            et_logf(ET_LOG_INFO, "push_dropped", "push_id=%u tunnel=%s why=queue_failed", fm->id,
                    ts->sess->tunnel);
        }
    }
    et_tsock_unref(ts);
    free(fm->body);
    free(fm);
}

/* post_frame hands |fm| (owned) to the worker of fm->ts. Returns false (and frees it) when the
 * inbox is full. */
static bool post_frame(frame_msg *fm)
{
    et_engine *eng = fm->ts->w->eng;
    if (et_reactor_post(fm->ts->w->r, frame_msg_run, fm) == ET_OK)
        return true;
    ET_COUNT(eng->stats.inbox_full);
    et_tsock_unref(fm->ts);
    free(fm->body);
    free(fm);
    return false;
}

/* control_sock returns the socket of |s| that carries control frames (its control socket, or
 * in legacy mode a ready data socket) as a new reference, or NULL. */
static et_tsock *control_sock(et_session *s)
{
    et_tsock *ts = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->ctrl != NULL && atomic_load(&s->ctrl->state) == ET_TS_READY)
        ts = s->ctrl;
    for (unsigned i = 0; ts == NULL && s->ctrl == NULL && i < s->ndata; i++)
        if (s->data[i].ready && atomic_load(&s->data[i].ts->state) == ET_TS_READY)
            ts = s->data[i].ts;
    if (ts != NULL)
        et_tsock_ref(ts);
    pthread_mutex_unlock(&s->mu);
    return ts;
}

/* --- answers ------------------------------------------------------------------------------ */

static void json_answer(et_httpd_resp *resp, int status, json_t *j)
{
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        et_httpd_text(resp, 500, "out of memory\n");
        return;
    }
    size_t n = strlen(text);
    memset(resp, 0, sizeof(*resp));
    resp->status = status;
    resp->type = JSON_TYPE;
    resp->body = text; /* jansson allocates with malloc */
    resp->len = n;
}

static void json_error(et_httpd_resp *resp, int status, const char *why)
{
    json_answer(resp, status, json_pack("{s:s}", "error", why));
}

/* One (session, route) pair copied out of the hub. */
typedef struct route_ref {
    const et_session *s; /* not a reference: only compared (the caller holds one on each) */
    uint16_t port;       /* TCP, or 0 for HTTP */
    char pattern[ET_HOST_MAX + 1];
} route_ref;

static void session_key(const et_session *s, char out[32])
{
    snprintf(out, 32, "%p", (const void *)s);
}

/* session_json describes |s| (a reference the caller holds) with its entry of |routes|. */
static json_t *session_json(et_session *s, json_t *routes)
{
    char hex[2 * ET_SESSION_ID_LEN + 1], key[32];
    et_session_hex(s->id, hex);
    session_key(s, key);
    et_sock_info info[ET_MAX_DATA_SOCKS + 1];
    unsigned n = et_session_sockets(s, info, ET_MAX_DATA_SOCKS + 1);
    json_t *socks = json_array();
    const char *peer = n > 0 ? info[0].peer : "";
    for (unsigned i = 0; i < n; i++)
        json_array_append_new(socks, json_pack("{s:I,s:s,s:s,s:s,s:I,s:s,s:i}", "id",
                                               (json_int_t)info[i].id, "role",
                                               info[i].role == ET_ROLE_CONTROL ? "control" : "data",
                                               "state", et_tsock_state_name(info[i].state), "peer",
                                               info[i].peer, "rtt_us", (json_int_t)info[i].rtt_us,
                                               "congestion", info[i].cc, "worker", info[i].worker));
    uint64_t opened = atomic_load(&s->streams_opened), closed = atomic_load(&s->streams_closed);
    return json_pack(
        "{s:s,s:s,s:b,s:s,s:o,s:{s:I,s:I},s:{s:I,s:I},s:{s:I,s:I},s:O}", "name", s->tunnel,
        "session", hex, "legacy", s->legacy, "peer", peer, "sockets", socks, "streams", "open",
        (json_int_t)(opened >= closed ? opened - closed : 0), "total", (json_int_t)opened, "bytes",
        "to_origin", (json_int_t)atomic_load(&s->bytes_to_peer), "from_origin",
        (json_int_t)atomic_load(&s->bytes_from_peer), "push", "sent",
        (json_int_t)atomic_load(&s->push_sent), "dropped",
        (json_int_t)atomic_load(&s->push_dropped), "routes", json_object_get(routes, key));
}

/* get_tunnels copies the sessions (a reference each) and their routes under the hub's mutex,
 * which new public connections take too, and builds the answer after letting it go. */
static void get_tunnels(edge_admin *a, et_httpd_resp *resp)
{
    edge_hub *hub = hub_of(a->eng);
    size_t ns = 0, nr = 0, cs = 0, cr = 0;
    pthread_mutex_lock(&hub->mu);
    size_t nports = hub->ports != NULL ? (size_t)(hub->cfg.tcp_hi - hub->cfg.tcp_lo) + 1 : 0;
    for (edge_sess *es = hub->sessions; es != NULL; es = es->next)
        cs++;
    for (size_t i = 0; i < nports; i++)
        cr += hub->ports[i].n;
    for (size_t i = 0; i < hub->http_buckets; i++)
        for (http_route *r = hub->http[i]; r != NULL; r = r->next)
            cr += r->n;
    et_session **ss = malloc((cs + 1) * sizeof(*ss));
    route_ref *rr = malloc((cr + 1) * sizeof(*rr));
    if (ss != NULL && rr != NULL) {
        for (edge_sess *es = hub->sessions; es != NULL && ns < cs; es = es->next) {
            et_session_ref(es->s);
            ss[ns++] = es->s;
        }
        for (size_t i = 0; i < nports; i++)
            for (unsigned k = 0; k < hub->ports[i].n && nr < cr; k++)
                rr[nr++] = (route_ref){hub->ports[i].sess[k], (uint16_t)(hub->cfg.tcp_lo + i), ""};
        for (size_t i = 0; i < hub->http_buckets; i++) {
            for (http_route *r = hub->http[i]; r != NULL; r = r->next) {
                for (unsigned k = 0; k < r->n && nr < cr; k++) {
                    rr[nr] = (route_ref){r->sess[k], 0, ""};
                    memcpy(rr[nr++].pattern, r->pattern, sizeof(r->pattern));
                }
            }
        }
    }
    pthread_mutex_unlock(&hub->mu);
    if (ss == NULL || rr == NULL) {
        free(ss);
        free(rr);
        et_httpd_text(resp, 500, "out of memory\n");
        return;
    }
    json_t *routes = json_object(), *list = json_array();
    char key[32];
    for (size_t i = 0; i < ns; i++) {
        session_key(ss[i], key);
        json_object_set_new(routes, key, json_pack("{s:[],s:[]}", "http", "tcp"));
    }
    for (size_t i = 0; i < nr; i++) {
        session_key(rr[i].s, key);
        json_t *entry = json_object_get(routes, key);
        if (rr[i].port != 0)
            json_array_append_new(json_object_get(entry, "tcp"), json_integer(rr[i].port));
        else
            json_array_append_new(json_object_get(entry, "http"), json_string(rr[i].pattern));
    }
    for (size_t i = 0; i < ns; i++) {
        json_array_append_new(list, session_json(ss[i], routes));
        et_session_unref(ss[i], free_edge_sess);
    }
    json_decref(routes);
    free(ss);
    free(rr);
    json_answer(resp, 200, json_pack("{s:o}", "tunnels", list));
}

static int name_cmp(const void *x, const void *y)
{
    return strcmp(x, y);
}

static void get_metrics(edge_admin *a, et_httpd_resp *resp)
{
    et_engine *eng = a->eng;
    edge_hub *hub = hub_of(eng);
    /* Names are copied under the lock and counted outside it: the hub's mutex is also taken
     * by new public connections, so it is held for a copy only. */
    typedef char name_t[ET_TUNNEL_NAME_MAX + 1];
    unsigned sessions = 0, tunnels = 0, cap = 0;
    name_t *names = NULL;
    pthread_mutex_lock(&hub->mu);
    for (edge_sess *es = hub->sessions; es != NULL; es = es->next)
        cap++;
    names = cap > 0 ? malloc(cap * sizeof(*names)) : NULL;
    for (edge_sess *es = hub->sessions; es != NULL && sessions < cap && names != NULL;
         es = es->next)
        memcpy(names[sessions++], es->s->tunnel, sizeof(*names));
    pthread_mutex_unlock(&hub->mu);
    if (cap > 0 && names == NULL) {
        et_httpd_text(resp, 500, "out of memory\n");
        return;
    }
    if (sessions > 1)
        qsort(names, sessions, sizeof(*names), name_cmp);
    for (unsigned i = 0; i < sessions; i++)
        tunnels += i == 0 || strcmp(names[i], names[i - 1]) != 0; /* replicas count once */
    free(names);
    et_strbuf b = {0};
    et_strbuf_printf(&b,
                     "# HELP edgetunnel_tunnels_connected Tunnel names with a session now.\n"
                     "# TYPE edgetunnel_tunnels_connected gauge\n"
                     "edgetunnel_tunnels_connected %u\n"
                     "# HELP edgetunnel_sessions_connected Origin sessions now.\n"
                     "# TYPE edgetunnel_sessions_connected gauge\n"
                     "edgetunnel_sessions_connected %u\n",
                     tunnels, sessions);
    et_metrics_write(eng, &b);
    et_strbuf_printf(&b, "# HELP edgetunnel_public_answers_total Public HTTP answers edged gave "
                         "itself, by status code.\n"
                         "# TYPE edgetunnel_public_answers_total counter\n");
    for (unsigned i = 0; i + 1 < ET_HTTP_STATUS_SLOTS; i++)
        et_strbuf_printf(&b, "edgetunnel_public_answers_total{code=\"%d\"} %llu\n",
                         et_http_slot_status(i),
                         (unsigned long long)atomic_load(&eng->stats.http_answers[i]));
    et_strbuf_printf(
        &b,
        "# HELP edgetunnel_public_refused_total Public connections refused or answered with "
        "an error.\n"
        "# TYPE edgetunnel_public_refused_total counter\n"
        "edgetunnel_public_refused_total %llu\n",
        (unsigned long long)atomic_load(&eng->stats.public_refused));
    et_httpd_take(resp, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

/* --- tunnel health ------------------------------------------------------------------------ */

static void probe_done(probe *p, et_httpd_resp *resp)
{
    edge_admin *a = p->a;
    et_timer_cancel(et_httpd_reactor(a->httpd), &p->timer);
    for (probe **pp = &a->probes; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    et_httpd_answer(p->conn, resp);
    free(p);
}

static void probe_timeout(et_reactor *r, et_timer *t)
{
    probe *p = ET_CONTAINER_OF(t, probe, timer);
    ET_COUNT(p->a->eng->stats.health_probes[ET_HS_SLOT_NO_ANSWER]);
    et_logf(ET_LOG_INFO, "health_probe", "tunnel=%s probe=%u status=no_answer", p->tunnel, p->id);
    et_httpd_resp resp;
    json_answer(&resp, 503,
                json_pack("{s:s,s:s,s:s}", "tunnel", p->tunnel, "status", "no_answer", "detail",
                          "the origin did not answer the probe in time"));
    probe_done(p, &resp);
}

typedef struct answer_msg {
    edge_admin *a;
    uint32_t sess_key;
    uint32_t probe_id;
    uint8_t status;
    uint32_t latency_us;
    char detail[ET_TEXT_MAX + 1];
} answer_msg;

static const char *health_status_name(uint8_t st)
{
    switch (st) {
    case ET_HS_OK: return "ok";
    case ET_HS_REFUSED: return "refused";
    case ET_HS_TIMEOUT: return "timeout";
    case ET_HS_NO_ROUTE: return "no_route";
    case ET_HS_ERROR: return "error";
    default: return "unknown";
    }
}

static void answer_run(et_reactor *r, void *arg)
{
    answer_msg *am = arg;
    probe *p = am->a->probes;
    while (p != NULL && !(p->id == am->probe_id && p->sess_key == am->sess_key))
        p = p->next;
    if (p != NULL) {
        uint8_t st = am->status <= ET_HS_ERROR ? am->status : ET_HS_ERROR;
        ET_COUNT(am->a->eng->stats.health_probes[st]);
        et_logf(ET_LOG_INFO, "health_probe", "tunnel=%s probe=%u status=%s latency_us=%u",
                p->tunnel, p->id, health_status_name(st), am->latency_us);
        et_httpd_resp resp;
        json_answer(&resp, st == ET_HS_OK ? 200 : 503,
                    json_pack("{s:s,s:s,s:I,s:s}", "tunnel", p->tunnel, "status",
                              health_status_name(st), "latency_us", (json_int_t)am->latency_us,
                              "detail", am->detail));
        probe_done(p, &resp);
    }
    free(am);
}

void et_edge_control_frame(et_tsock *ts, const et_frame *f, const et_msg *m)
{
    edge_admin *a = atomic_load(&ts->w->eng->admin);
    if (f->action != ET_A_HEALTH_ANSWER || a == NULL)
        return; /* HEALTH and PUSH go edge to origin only: the dispatch table refused them */
    answer_msg *am = calloc(1, sizeof(*am));
    if (am == NULL)
        return;
    const et_health_answer *ha = &m->health_answer;
    *am = (answer_msg){a, ts->sess->key, ha->probe_id, ha->status, ha->latency_us, {0}};
    /* detail is text from the network: keep printable ASCII only (it goes into logs, JSON) */
    size_t n = ha->detail.n < ET_TEXT_MAX ? ha->detail.n : ET_TEXT_MAX;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = ha->detail.p[i];
        am->detail[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (et_reactor_post(et_httpd_reactor(a->httpd), answer_run, am) < 0) {
        ET_COUNT(ts->w->eng->stats.inbox_full);
        free(am);
    }
}

static bool name_ok(const char *p, size_t n)
{
    if (n == 0 || n > ET_TUNNEL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool host_ok(const char *h)
{
    size_t n = strlen(h);
    if (n > ET_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* tunnel_known says whether a route names |name| (a tunnel that was connected once); under
 * hub->mu. */
static bool tunnel_known(edge_hub *hub, const char *name)
{
    size_t nports = hub->ports != NULL ? (size_t)(hub->cfg.tcp_hi - hub->cfg.tcp_lo) + 1 : 0;
    for (size_t i = 0; i < nports; i++)
        if (strcmp(hub->ports[i].tunnel, name) == 0)
            return true;
    for (size_t i = 0; i < hub->http_buckets; i++)
        for (http_route *r = hub->http[i]; r != NULL; r = r->next)
            if (strcmp(r->tunnel, name) == 0)
                return true;
    return false;
}

static int get_health(edge_admin *a, const char *name, const char *host, et_httpd_conn *conn,
                      et_httpd_resp *resp)
{
    edge_hub *hub = hub_of(a->eng);
    et_tsock *ts = NULL;
    bool known = false;
    pthread_mutex_lock(&hub->mu);
    for (edge_sess *es = hub->sessions; es != NULL && ts == NULL; es = es->next) {
        if (strcmp(es->s->tunnel, name) != 0)
            continue;
        known = true;
        ts = control_sock(es->s);
    }
    known = known || tunnel_known(hub, name);
    pthread_mutex_unlock(&hub->mu);
    if (ts == NULL) {
        if (!known) {
            json_error(resp, 404, "unknown tunnel");
            return ET_OK;
        }
        json_answer(resp, 503,
                    json_pack("{s:s,s:s,s:s}", "tunnel", name, "status", "not_connected", "detail",
                              "no session of this tunnel is connected"));
        return ET_OK;
    }
    probe *p = calloc(1, sizeof(*p));
    frame_msg *fm = calloc(1, sizeof(*fm));
    if (p == NULL || fm == NULL) {
        free(p);
        free(fm);
        et_tsock_unref(ts);
        json_error(resp, 500, "out of memory");
        return ET_OK;
    }
    p->a = a;
    p->conn = conn;
    p->id = ++a->next_probe;
    p->sess_key = ts->sess->key;
    snprintf(p->tunnel, sizeof(p->tunnel), "%s", name);
    et_timer_init(&p->timer, probe_timeout);
    *fm = (frame_msg){ts, ET_A_HEALTH, p->id, 0, {0}, NULL, 0};
    snprintf(fm->topic, sizeof(fm->topic), "%s", host);
    et_reactor *r = et_httpd_reactor(a->httpd);
    if (et_timer_arm(r, &p->timer, et_reactor_now(r) + PROBE_TIMEOUT_NS) < 0 || !post_frame(fm)) {
        et_timer_cancel(r, &p->timer);
        free(p);
        json_error(resp, 503, "cannot reach the tunnel's worker");
        return ET_OK;
    }
    p->next = a->probes;
    a->probes = p;
    return ET_E_AGAIN;
}

/* --- push --------------------------------------------------------------------------------- */

static bool listed(json_t *names, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return true;
    }
    return false;
}

static void post_push(edge_admin *a, const et_httpd_req *req, et_httpd_resp *resp)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        json_error(resp, 400, "the body must be a JSON object");
        return;
    }
    const char *kind = json_string_value(json_object_get(j, "kind"));
    json_t *jtopic = json_object_get(j, "topic");
    json_t *jbody = json_object_get(j, "body");
    json_t *names = json_object_get(j, "tunnels");
    const char *topic = jtopic != NULL ? json_string_value(jtopic) : "";
    uint8_t k = kind == NULL                  ? 0
                : strcmp(kind, "notice") == 0 ? ET_PUSH_NOTICE
                : strcmp(kind, "config") == 0 ? ET_PUSH_CONFIG
                                              : 0;
    bool names_ok = names == NULL || json_is_array(names);
    size_t i;
    json_t *v;
    if (names_ok && names != NULL)
        json_array_foreach(names, i, v) names_ok = names_ok && json_is_string(v);
    char *body = NULL;
    if (jbody == NULL)
        body = strdup("");
    else if (json_is_string(jbody))
        body = strdup(json_string_value(jbody));
    else if (json_is_object(jbody))
        body = json_dumps(jbody, JSON_COMPACT);
    const char *why = k == 0                            ? "kind must be \"notice\" or \"config\""
                      : topic == NULL                   ? "topic must be a string"
                      : strlen(topic) > ET_TOPIC_MAX    ? "topic over 64 bytes"
                      : !names_ok                       ? "tunnels must be an array of names"
                      : body == NULL                    ? "body must be a string or an object"
                      : strlen(body) > ET_PUSH_BODY_MAX ? "body over 4000 bytes"
                                                        : NULL;
    if (why != NULL) {
        free(body);
        json_decref(j);
        json_error(resp, 400, why);
        return;
    }
    /* A rate_limit config is the edge's own to apply: {"per_minute": N, "burst": B} replaces
     * --rate-limit for the tunnels named (or every tunnel); origins are told as well. */
    bool rate = k == ET_PUSH_CONFIG && strcmp(topic, "rate_limit") == 0;
    json_int_t per_min = 0, burst = 0;
    if (rate) {
        json_t *pm = json_is_object(jbody) ? json_object_get(jbody, "per_minute") : NULL;
        json_t *jb = json_is_object(jbody) ? json_object_get(jbody, "burst") : NULL;
        per_min = json_is_integer(pm) ? json_integer_value(pm) : -1;
        burst = jb == NULL            ? (per_min / 10 > 0 ? per_min / 10 : 1)
                : json_is_integer(jb) ? json_integer_value(jb)
                                      : -1;
        if (per_min < 0 || per_min > 1000000 || burst < 1 || burst > 1000000) {
            free(body);
            json_decref(j);
            json_error(resp, 400, "rate_limit body: {\"per_minute\": 0..1000000, \"burst\": 1..}");
            return;
        }
    }
    uint32_t id = atomic_fetch_add(&a->next_push, 1) + 1;
    size_t blen = strlen(body);
    edge_hub *hub = hub_of(a->eng);
    json_t *sent = json_array(), *missing = json_array();
    unsigned nsess = 0, nfailed = 0, nrate = 0;
    pthread_mutex_lock(&hub->mu);
    if (rate && names == NULL)
        nrate = tunnel_set_rate(hub, NULL, (uint32_t)per_min, (uint32_t)burst);
    else if (rate)
        json_array_foreach(names, i, v) nrate +=
            tunnel_set_rate(hub, json_string_value(v), (uint32_t)per_min, (uint32_t)burst);
    if (rate)
        et_logf(ET_LOG_INFO, "rate_limit_set", "tunnels=%u per_minute=%lld burst=%lld", nrate,
                (long long)per_min, (long long)burst);
    for (edge_sess *es = hub->sessions; es != NULL; es = es->next) {
        if (names != NULL && !listed(names, es->s->tunnel))
            continue;
        et_tsock *ts = control_sock(es->s);
        frame_msg *fm = ts != NULL ? calloc(1, sizeof(*fm)) : NULL;
        char *copy = fm != NULL ? malloc(blen + 1) : NULL;
        if (copy == NULL) {
            free(fm);
            if (ts != NULL)
                et_tsock_unref(ts);
            nfailed++;
            continue;
        }
        memcpy(copy, body, blen + 1);
        *fm = (frame_msg){ts, ET_A_PUSH, id, k, {0}, copy, blen};
        snprintf(fm->topic, sizeof(fm->topic), "%s", topic);
        if (!post_frame(fm)) {
            nfailed++;
            continue;
        }
        nsess++;
        if (!listed(sent, es->s->tunnel))
            json_array_append_new(sent, json_string(es->s->tunnel));
    }
    pthread_mutex_unlock(&hub->mu);
    if (names != NULL)
        json_array_foreach(names, i, v) if (!listed(sent, json_string_value(v)))
            json_array_append_new(missing, json_string(json_string_value(v)));
    et_logf(ET_LOG_INFO, "push", "push_id=%u kind=%s topic=%s sessions=%u failed=%u bytes=%zu", id,
            kind, topic, nsess, nfailed, blen);
    free(body);
    json_decref(j);
    json_answer(resp, 202,
                json_pack("{s:I,s:I,s:I,s:o,s:o}", "push_id", (json_int_t)id, "sessions",
                          (json_int_t)nsess, "failed", (json_int_t)nfailed, "tunnels", sent,
                          "not_connected", missing));
}

/* --- routing ------------------------------------------------------------------------------ */

static int handle(void *arg, const et_httpd_req *req, et_httpd_resp *resp)
{
    edge_admin *a = arg;
    const char *p = req->path;
    bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
    static const char prefix[] = "/api/tunnel/", suffix[] = "/health";
    size_t n = strlen(p), np = sizeof(prefix) - 1, ns = sizeof(suffix) - 1;
    bool health = n > np + ns && strncmp(p, prefix, np) == 0 && strcmp(p + n - ns, suffix) == 0;
    bool known = strcmp(p, "/healthz") == 0 || strcmp(p, "/readyz") == 0 ||
                 strcmp(p, "/metrics") == 0 || strcmp(p, "/api/v1/tunnels") == 0 || health;
    if (strcmp(p, "/api/v1/push") == 0) {
        if (!post) {
            et_httpd_text(resp, 405, "method not allowed\n");
            resp->allow = "POST";
            return ET_OK;
        }
        post_push(a, req, resp);
        return ET_OK;
    }
    if (!known) {
        et_httpd_text(resp, 404, "not found\n");
        return ET_OK;
    }
    if (!get) {
        et_httpd_text(resp, 405, "method not allowed\n");
        resp->allow = "GET";
        return ET_OK;
    }
    if (strcmp(p, "/healthz") == 0) {
        et_httpd_text(resp, 200, "ok\n");
    } else if (strcmp(p, "/readyz") == 0) {
        bool ready = atomic_load(&a->ready) && !atomic_load(&a->eng->stopping);
        et_httpd_text(resp, ready ? 200 : 503, ready ? "ready\n" : "not ready\n");
    } else if (strcmp(p, "/metrics") == 0) {
        get_metrics(a, resp);
    } else if (strcmp(p, "/api/v1/tunnels") == 0) {
        get_tunnels(a, resp);
    } else {
        char name[ET_TUNNEL_NAME_MAX + 1];
        size_t len = n - np - ns;
        if (!name_ok(p + np, len)) {
            json_error(resp, 404, "unknown tunnel");
            return ET_OK;
        }
        memcpy(name, p + np, len);
        name[len] = '\0';
        /* ?host=NAME probes the route of that host only */
        const char *host = "";
        if (strncmp(req->query, "host=", 5) == 0)
            host = req->query + 5;
        else if (req->query[0] != '\0')
            host = NULL;
        if (host == NULL || !host_ok(host)) {
            json_error(resp, 400, "the only parameter is host=NAME");
            return ET_OK;
        }
        return get_health(a, name, host, req->conn, resp);
    }
    return ET_OK;
}

int et_edge_admin_start(et_engine *eng, const char *addr)
{
    edge_admin *a = calloc(1, sizeof(*a));
    ET_ENSURE(a != NULL, ET_E_NOMEM);
    a->eng = eng;
    int rv = et_httpd_start(addr, handle, a, &a->httpd);
    if (rv < 0) {
        free(a);
        return rv;
    }
    atomic_store(&eng->admin, a);
    et_logf(ET_LOG_INFO, "admin_listening", "addr=%s", addr);
    return ET_OK;
}

void et_edge_admin_set_ready(et_engine *eng, bool ready)
{
    edge_admin *a = atomic_load(&eng->admin);
    if (a != NULL)
        atomic_store(&a->ready, ready);
}

void et_edge_admin_stop(et_engine *eng)
{
    edge_admin *a = atomic_load(&eng->admin);
    if (a == NULL)
        return;
    et_httpd_free(a->httpd); /* delivers what workers posted, then drops owed answers */
    while (a->probes != NULL) {
        probe *p = a->probes;
        a->probes = p->next;
        free(p);
    }
    atomic_store(&eng->admin, NULL);
    free(a);
}
