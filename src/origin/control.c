/* control.c: what originctl does with the edge's HEALTH and PUSH frames (origin.h).
 *
 * HEALTH: connect to the local service of the route it names (or of every route) with a
 * timeout and answer HEALTH_ANSWER with the outcome, on the socket the HEALTH came on. The
 * probe runs on that socket's worker (the control worker, or a data worker in legacy mode),
 * non-blocking like everything else there.
 *
 * PUSH: logged; config the origin understands is applied: "drain" drains and stops this
 * originctl as SIGTERM does (the edge sends the tunnel's new streams to its other replicas);
 * "rate_limit" is applied by the edge itself (logged here as not applied). */
#include "et/origin.h"

#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "et/log.h"
#include "et/logf.h"
#include "et/tls.h"
#include "et/token.h"

#define PROBE_TIMEOUT_NS (2ull * 1000000000ull)
#define PROBE_TARGETS    (2 * ET_ROUTES_MAX)

typedef struct probe probe;

typedef struct target {
    et_io io;
    probe *p;
    int fd;         /* owned while the connect is in progress */
    uint8_t status; /* et_health_status once done */
    bool done;
    char addr[64];
} target;

struct probe {
    probe *prev, *next; /* in the list of probes in flight (probes_mu) */
    et_tsock *ts;       /* one reference: where the answer goes */
    uint32_t probe_id;
    uint64_t start_ns;
    et_timer timer;
    et_task free_task;
    bool answered;
    unsigned n, left;
    target t[PROBE_TARGETS];
};

/* Probes in flight, so that a stop in the middle of one frees it (et_origin_control_cleanup).
 * Taken when a probe starts and ends only, never on the data path. */
static pthread_mutex_t probes_mu = PTHREAD_MUTEX_INITIALIZER;
static probe *probes;

static void probes_unlink(probe *p)
{
    pthread_mutex_lock(&probes_mu);
    if (p->prev != NULL)
        p->prev->next = p->next;
    else if (probes == p)
        probes = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    pthread_mutex_unlock(&probes_mu);
}

static const char *status_name(uint8_t st)
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

static void probe_free_task(et_reactor *r, et_task *t)
{
    probe *p = ET_CONTAINER_OF(t, probe, free_task);
    et_tsock_unref(p->ts);
    free(p);
}

static void target_end(probe *p, target *t, uint8_t status)
{
    if (t->done)
        return;
    t->done = true;
    t->status = status;
    if (t->fd >= 0) {
        et_reactor_del(p->ts->w->r, &t->io);
        close(t->fd);
        t->fd = -1;
    }
    p->left--;
}

/* answer sends HEALTH_ANSWER once every target is done (or the time is up), then frees |p|
 * after the current round (we may be inside one of its targets' handlers). */
static void answer(probe *p, uint8_t no_target_status, const char *no_target_detail)
{
    if (p->answered)
        return;
    p->answered = true;
    probes_unlink(p);
    et_tsock *ts = p->ts;
    et_worker *w = ts->w;
    et_timer_cancel(w->r, &p->timer);
    for (unsigned i = 0; i < p->n; i++)
        target_end(p, &p->t[i], ET_HS_TIMEOUT);
    uint8_t status = p->n == 0 ? no_target_status : ET_HS_OK;
    char detail[ET_TEXT_MAX + 1];
    size_t len = 0;
    detail[0] = '\0';
    if (p->n == 0)
        len = (size_t)snprintf(detail, sizeof(detail), "%s", no_target_detail);
    for (unsigned i = 0; i < p->n; i++) {
        if (status == ET_HS_OK && p->t[i].status != ET_HS_OK)
            status = p->t[i].status; /* the first failure names the outcome */
        if (len < sizeof(detail))
            len += (size_t)snprintf(detail + len, sizeof(detail) - len, "%s%s %s",
                                    i > 0 ? "; " : "", p->t[i].addr, status_name(p->t[i].status));
    }
    if (len >= sizeof(detail))
        len = sizeof(detail) - 1;
    uint64_t us = (et_now_ns() - p->start_ns) / 1000u;
    et_frame h = {0, 0, 0, ET_A_HEALTH_ANSWER, 0, NULL};
    et_msg m = {.health_answer = {p->probe_id,
                                  status,
                                  us > UINT32_MAX ? UINT32_MAX : (uint32_t)us,
                                  {(const uint8_t *)detail, len}}};
    uint8_t st = atomic_load(&ts->state);
    if (st >= ET_TS_READY && st != ET_TS_CLOSED && et_tsock_queue(ts, &h, &m) == ET_OK)
        ET_COUNT(w->eng->stats.health_probes[status]);
    et_logf(ET_LOG_INFO, "health_probe", "probe=%u status=%s latency_us=%llu detail=\"%s\"",
            p->probe_id, status_name(status), (unsigned long long)us, detail);
    et_reactor_defer(w->r, &p->free_task);
}

static void target_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    target *t = ET_CONTAINER_OF(io, target, io);
    probe *p = t->p;
    if (t->done || !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        return;
    int rv = et_sock_connect_result(t->fd);
    target_end(p, t, rv == ET_OK ? ET_HS_OK : errno == ECONNREFUSED ? ET_HS_REFUSED : ET_HS_ERROR);
    if (p->left == 0)
        answer(p, ET_HS_OK, "");
}

static void probe_timeout(et_reactor *r, et_timer *tm)
{
    answer(ET_CONTAINER_OF(tm, probe, timer), ET_HS_TIMEOUT, "");
}

static void add_target(probe *p, const struct sockaddr_storage *sa, socklen_t len)
{
    if (p->n == PROBE_TARGETS)
        return;
    target *t = &p->t[p->n++];
    p->left++;
    t->p = p;
    t->fd = -1;
    et_addr_format((const struct sockaddr *)sa, t->addr, sizeof(t->addr));
    et_io_init(&t->io, target_on_event);
    int fd = -1;
    int rv = et_sock_connect_start((const struct sockaddr *)sa, len, &fd);
    if (rv == ET_OK) {
        close(fd);
        target_end(p, t, ET_HS_OK);
    } else if (rv != ET_E_AGAIN) {
        target_end(p, t, errno == ECONNREFUSED ? ET_HS_REFUSED : ET_HS_ERROR);
    } else {
        t->fd = fd;
        if (et_reactor_add(p->ts->w->r, fd, &t->io) < 0) {
            et_reactor_del(p->ts->w->r, &t->io);
            target_end(p, t, ET_HS_ERROR);
        }
    }
}

static bool host_ok(const et_bytes *h)
{
    for (size_t i = 0; i < h->n; i++) {
        uint8_t c = h->p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static void on_health(et_tsock *ts, const et_health *hm)
{
    et_engine *eng = ts->w->eng;
    const et_origin_config *cfg = et_origin_config_of(eng);
    probe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return; /* the edge times the probe out */
    p->ts = ts;
    et_tsock_ref(ts);
    pthread_mutex_lock(&probes_mu);
    p->next = probes;
    if (probes != NULL)
        probes->prev = p;
    probes = p;
    pthread_mutex_unlock(&probes_mu);
    p->probe_id = hm->probe_id;
    p->start_ns = et_now_ns();
    et_timer_init(&p->timer, probe_timeout);
    et_task_init(&p->free_task, probe_free_task);
    if (hm->host.n == 0) {
        for (unsigned i = 0; i < cfg->nhttp; i++)
            add_target(p, &cfg->http[i].local, cfg->http[i].local_len);
        for (unsigned i = 0; i < cfg->ntcp; i++)
            add_target(p, &cfg->tcp[i].local, cfg->tcp[i].local_len);
    } else if (host_ok(&hm->host)) {
        /* The route OPEN would take: an exact pattern first, then a wildcard. */
        for (int pass = 0; pass < 2 && p->n == 0; pass++) {
            for (unsigned i = 0; i < cfg->nhttp && p->n == 0; i++) {
                const et_origin_http_route *r = &cfg->http[i];
                if ((r->pattern[0] == '*') == (pass == 1) &&
                    et_host_match(r->pattern, (const char *)hm->host.p, hm->host.n))
                    add_target(p, &r->local, r->local_len);
            }
        }
    }
    if (p->n == 0) {
        answer(p, ET_HS_NO_ROUTE, "no route for this host");
        return;
    }
    if (p->left == 0) {
        answer(p, ET_HS_OK, "");
        return;
    }
    et_logf(ET_LOG_INFO, "health_probe_start", "probe=%u targets=%u pending=%u", p->probe_id, p->n,
            p->left);
    if (et_timer_arm(ts->w->r, &p->timer, et_reactor_now(ts->w->r) + PROBE_TIMEOUT_NS) < 0)
        answer(p, ET_HS_ERROR, "");
}

static void on_push(et_tsock *ts, const et_push *pm)
{
    et_engine *eng = ts->w->eng;
    ET_COUNT(eng->stats.push_received);
    const char *kind = pm->kind == ET_PUSH_NOTICE ? "notice" : "config";
    /* topic and body are text from the network: the typed logger escapes them */
    et_log(ET_LOG_INFO, "push", ET_KV_UINT("push_id", pm->push_id), ET_KV_STR("kind", kind),
           ET_KV_STRN("topic", pm->topic.p, pm->topic.n),
           ET_KV_STRN("body", pm->body.p, pm->body.n));
    if (pm->kind != ET_PUSH_CONFIG)
        return;
    const char *why = "unknown topic";
    int applied = 0;
    if (pm->topic.n == 10 && memcmp(pm->topic.p, "rate_limit", 10) == 0) {
        why = "the edge applies rate limits to new streams itself";
    } else if (pm->topic.n == 5 && memcmp(pm->topic.p, "drain", 5) == 0) {
        /* What SIGTERM does: the main thread drains (GOAWAY, streams finish) and exits. */
        why = "draining";
        applied = kill(getpid(), SIGTERM) == 0;
    }
    et_log(ET_LOG_INFO, "push_config", ET_KV_UINT("push_id", pm->push_id),
           ET_KV_STRN("topic", pm->topic.p, pm->topic.n), ET_KV_INT("applied", applied),
           ET_KV_STR("why", why));
}

void et_origin_control_cleanup(et_engine *eng)
{
    pthread_mutex_lock(&probes_mu);
    probe *list = probes;
    probes = NULL;
    pthread_mutex_unlock(&probes_mu);
    /* The workers are stopped: touching their reactors from here is safe. */
    while (list != NULL) {
        probe *p = list;
        list = p->next;
        et_timer_cancel(p->ts->w->r, &p->timer);
        for (unsigned i = 0; i < p->n; i++)
            target_end(p, &p->t[i], ET_HS_TIMEOUT);
        et_tsock_unref(p->ts);
        free(p);
    }
}

void et_origin_control_frame(et_tsock *ts, const et_frame *f, const et_msg *m)
{
    switch (f->action) {
    case ET_A_HEALTH: on_health(ts, &m->health); break;
    case ET_A_PUSH: on_push(ts, &m->push); break;
    default: break; /* HEALTH_ANSWER goes origin to edge: the dispatch table refused it */
    }
}
