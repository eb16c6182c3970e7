/* engine.c: workers, counters, sessions, the per-worker stream table and cancel delivery across
 * workers (tunnel.h). */
#include "et/tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/ssl.h>

#include "et/logf.h"
#include "et/tls.h"

static _Thread_local et_worker *tl_worker;

/* all_workers returns the number of workers, the control worker included. */
static unsigned all_workers(const et_engine *eng)
{
    return eng->control != NULL ? eng->nworkers + 1 : eng->nworkers;
}

unsigned et_stat_slot(uint16_t code)
{
    unsigned slot = (unsigned)(code >> 8) * 16u + (code & 15u);
    return slot < ET_STAT_REASONS ? slot : ET_STAT_REASONS - 1;
}

et_worker *et_worker_current(et_engine *eng)
{
    et_worker *w = tl_worker;
    return w != NULL && w->eng == eng ? w : NULL;
}

uint64_t et_engine_live_streams(et_engine *eng)
{
    /* Read closed first: a stream closing between the loads can then only be counted as open
     * (never a negative count). */
    uint64_t done =
        atomic_load(&eng->stats.streams_finished) + atomic_load(&eng->stats.streams_cancelled);
    uint64_t opened = atomic_load(&eng->stats.streams_opened);
    return opened > done ? opened - done : 0;
}

unsigned et_engine_post_all(et_engine *eng, et_msg_fn fn)
{
    unsigned failed = 0;
    for (unsigned i = 0; i < all_workers(eng); i++)
        if (et_reactor_post(eng->workers[i].r, fn, &eng->workers[i]) < 0)
            failed++;
    return failed;
}

/* What a reload replaced: a TLS context or a block of settings, freed at cleanup. */
typedef struct et_retired {
    struct et_retired *next;
    SSL_CTX *ctx; /* owned, or NULL */
    void *mem;    /* owned, or NULL */
} et_retired;

static void retire(et_engine *eng, SSL_CTX *ctx, void *mem)
{
    et_retired *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        /* Leak rather than free what a worker may be reading. */
        et_logf(ET_LOG_WARN, "retire_failed", "what=%s", ctx ? "tls_context" : "settings");
        return;
    }
    r->ctx = ctx;
    r->mem = mem;
    r->next = eng->retired;
    eng->retired = r;
}

void et_engine_swap_ssl_ctx(et_engine *eng, SSL_CTX *ctx)
{
    retire(eng, atomic_exchange(&eng->ssl_ctx, ctx), NULL);
}

void et_engine_keep_until_cleanup(et_engine *eng, void *p)
{
    retire(eng, NULL, p);
}

uint64_t et_engine_drain_wait(et_engine *eng, uint64_t deadline_ns, uint64_t (*busy)(et_engine *),
                              bool (*interrupted)(void *arg), void *arg)
{
    uint64_t start = et_now_ns(), left = 0;
    bool stop = false;
    for (;;) {
        left = et_engine_live_streams(eng) + (busy != NULL ? busy(eng) : 0);
        if (left == 0 || stop || et_now_ns() >= deadline_ns)
            break;
        stop = interrupted(arg);
    }
    et_logf(left == 0 ? ET_LOG_INFO : ET_LOG_WARN, "drained", "left=%llu elapsed_ms=%llu%s",
            (unsigned long long)left, (unsigned long long)((et_now_ns() - start) / 1000000u),
            stop ? " interrupted=1" : "");
    return left;
}

void et_worker_goaway(et_worker *w, uint32_t drain_ms, const char *text)
{
    for (et_tsock *ts = w->tsocks; ts != NULL; ts = ts->next)
        et_tsock_goaway(ts, drain_ms, text);
}

/* idle_check ends a stream that moved no byte either way for the idle timeout. */
static void idle_check(et_stream *s, void *arg)
{
    uint64_t now = *(const uint64_t *)arg;
    uint64_t last = s->last_sent_ns > s->last_recv_ns ? s->last_sent_ns : s->last_recv_ns;
    if (now - last < atomic_load_explicit(&s->w->eng->idle_timeout_ns, memory_order_relaxed))
        return;
    ET_COUNT(s->w->eng->stats.idle_closed);
    et_logf(ET_LOG_INFO, "stream_idle", "uc=%u sid=%u idle_ms=%llu", s->uc, s->sid,
            (unsigned long long)((now - last) / 1000000u));
    et_stream_cancel(s, ET_CR_IDLE_TIMEOUT);
}

static void sweep_fire(et_reactor *r, et_timer *t)
{
    et_worker *w = ET_CONTAINER_OF(t, et_worker, sweep);
    uint64_t now = et_reactor_now(r);
    et_stream_table_sweep(w->streams, now);
    if (atomic_load_explicit(&w->eng->idle_timeout_ns, memory_order_relaxed) != 0 &&
        w != w->eng->control)
        et_stream_table_each(w->streams, idle_check, &now);
    if (w == w->eng->control) {
        pthread_mutex_lock(&w->eng->reg_mu);
        et_stream_table_sweep(w->eng->reg, now);
        pthread_mutex_unlock(&w->eng->reg_mu);
    }
    if (et_timer_arm(r, t, now + 1000000000ull) < 0)
        et_logf(ET_LOG_ERROR, "timer_failed", "worker=%u", w->index);
}

/* The control worker's scheduling. It is idle almost always and runs for cancels and control
 * frames, which must not wait behind a data worker for a time slice: at nice -10 a cancel still
 * waited up to about a millisecond on a 2-core machine with both cores busy moving data
 * (bench/README.md). So it runs SCHED_FIFO at priority 1 where the process may (CAP_SYS_NICE or
 * RLIMIT_RTPRIO), else at nice -10, else at the process's nice; a result other than the one
 * asked for is logged at info. EDGETUNNEL_CONTROL_SCHED=nice asks for nice -10 only. Both
 * policies carry SCHED_RESET_ON_FORK: a thread it starts (originctl's resolver) gets neither;
 * and a thread without CAP_SYS_NICE may not clear that flag, so every change keeps it.
 *
 * A real-time thread that reads peer bytes would let the peer take a CPU from everything else
 * (a flood of PINGs or channel CANCELs on a control socket). So it has a CPU budget: within a
 * window of CTL_WINDOW_NS it may use CTL_WINDOW_NS / CTL_SHARE of CPU. When it has used more,
 * it drops to SCHED_OTHER at the nice it started with, at once, and stays there until a window
 * has begun CTL_DEMOTE_NS after the last one it overspent; then back to SCHED_FIFO and nice
 * -10. Counted (control_demotions, the control_realtime gauge) and logged. et_control_budget
 * runs before each epoll_wait, after each read turn of a control socket (at most 64 KiB of
 * records) and after each channel cancel (a walk of the session's streams), so it never runs
 * long at FIFO between two looks at its clock. Idle time does not add to the budget: a window
 * starts at the first look after the last one ended. The kernel's own limit on real-time CPU
 * (sched_rt_runtime_us) is the backstop, not the plan. */
#define CTL_WINDOW_NS 100000000ull  /* 100 ms */
#define CTL_SHARE     5u            /* 20 ms of CPU a window */
#define CTL_DEMOTE_NS 1000000000ull /* 1 s */

/* thread_cpu_ns returns the calling thread's CPU time, or 0 when the clock fails. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* set_sched puts the calling thread under SCHED_FIFO 1 (|fifo|) or SCHED_OTHER, both with
 * SCHED_RESET_ON_FORK, and at nice |nice| (it matters under SCHED_OTHER only). Returns 0 or
 * the errno of the policy change; a refused nice is left as it was. */
static int set_sched(bool fifo, int nice)
{
    struct sched_param sp = {.sched_priority = fifo ? 1 : 0};
    int e = 0;
    if (sched_setscheduler(0, (fifo ? SCHED_FIFO : SCHED_OTHER) | SCHED_RESET_ON_FORK, &sp) != 0)
        e = errno;
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
    return e;
}

/* give_up_fifo ends the budget for good: the thread stays SCHED_OTHER (|why| is logged). */
static void give_up_fifo(et_engine *eng, const char *why, int e)
{
    et_ctl_sched *cs = &eng->ctl_sched;
    int e2 = set_sched(false, cs->base_nice);
    cs->realtime = false;
    cs->demoted = false;
    atomic_store_explicit(&eng->stats.control_realtime, 0, memory_order_relaxed);
    et_reactor_set_before_sleep(eng->control->r, NULL, NULL);
    et_logf(ET_LOG_ERROR, "control_fifo_off", "why=%s errno=%d errno_other=%d", why, e, e2);
}

/* change_sched moves the thread onto SCHED_FIFO (|fifo|) or off it, at the matching nice; a
 * refusal ends the budget (give_up_fifo, |refused| logged) and returns false. */
static bool change_sched(et_engine *eng, bool fifo, const char *refused)
{
    et_ctl_sched *cs = &eng->ctl_sched;
    int e = set_sched(fifo, fifo ? cs->high_nice : cs->base_nice);
    if (e != 0) {
        give_up_fifo(eng, refused, e);
        return false;
    }
    cs->demoted = !fifo;
    atomic_store_explicit(&eng->stats.control_realtime, fifo ? 1 : 0, memory_order_relaxed);
    return true;
}

void et_control_budget(et_engine *eng)
{
    et_ctl_sched *cs = &eng->ctl_sched;
    if (tl_worker != eng->control || !cs->realtime)
        return;
    uint64_t now = et_now_ns(), cpu = thread_cpu_ns();
    if (cpu == 0 || cpu < cs->window_cpu_ns) {
        give_up_fifo(eng, "thread_clock", errno);
        return;
    }
    uint64_t spent = cpu - cs->window_cpu_ns, wall = now - cs->window_ns;
    if (spent > CTL_WINDOW_NS / CTL_SHARE) {
        cs->window_ns = now;
        cs->window_cpu_ns = cpu;
        cs->until_ns = now + CTL_DEMOTE_NS;
        if (cs->demoted || !change_sched(eng, false, "demote_refused"))
            return;
        ET_COUNT(eng->stats.control_demotions);
        et_logf(ET_LOG_WARN, "control_demoted", "cpu_us=%llu wall_us=%llu nice=%d for_ms=%llu",
                (unsigned long long)(spent / 1000), (unsigned long long)(wall / 1000),
                cs->base_nice, (unsigned long long)(CTL_DEMOTE_NS / 1000000));
        return;
    }
    if (wall < CTL_WINDOW_NS)
        return;
    cs->window_ns = now; /* a new window; what idled before it does not count */
    cs->window_cpu_ns = cpu;
    if (!cs->demoted || now < cs->until_ns || !change_sched(eng, true, "promote_refused"))
        return;
    et_logf(ET_LOG_INFO, "control_promoted", "policy=fifo nice=%d", cs->high_nice);
}

static void control_budget_hook(et_reactor *r, void *arg)
{
    (void)r;
    et_control_budget(arg);
}

/* et_pi_mutex_init makes |mu| priority-inheriting: the SCHED_FIFO control worker takes the
 * registry's and a session's lock, which data workers hold too; one that holds it while it
 * waits for a CPU then runs at the control worker's priority until it lets go. */
static void et_pi_mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT) != 0 ||
        pthread_mutex_init(mu, &a) != 0)
        pthread_mutex_init(mu, NULL);
    pthread_mutexattr_destroy(&a);
}

/* control_sched sets the control worker's policy at its start (see above). */
static void control_sched(et_reactor *r, et_engine *eng)
{
    et_ctl_sched *cs = &eng->ctl_sched;
    id_t tid = (id_t)syscall(SYS_gettid);
    errno = 0;
    int was = getpriority(PRIO_PROCESS, tid);
    cs->base_nice = errno == 0 ? was : 0;
    int nice_e = setpriority(PRIO_PROCESS, tid, -10) == 0 ? 0 : errno;
    cs->high_nice = nice_e == 0 ? -10 : cs->base_nice;
    const char *want = getenv("EDGETUNNEL_CONTROL_SCHED");
    bool fifo = want == NULL || strcmp(want, "nice") != 0;
    if (want != NULL && want[0] != '\0' && strcmp(want, "fifo") != 0 && strcmp(want, "nice") != 0)
        et_logf(ET_LOG_WARN, "control_sched_unknown", "value=\"%.32s\" means=fifo", want);
    int fifo_e = set_sched(fifo, cs->high_nice);
    cs->realtime = fifo && fifo_e == 0;
    if (cs->realtime) {
        cs->window_ns = et_now_ns();
        cs->window_cpu_ns = thread_cpu_ns();
        atomic_store_explicit(&eng->stats.control_realtime, 1, memory_order_relaxed);
        et_reactor_set_before_sleep(r, control_budget_hook, eng);
    }
    bool as_asked = (fifo ? cs->realtime : true) && nice_e == 0;
    et_logf(as_asked ? ET_LOG_DEBUG : ET_LOG_INFO, "control_sched",
            "policy=%s nice=%d asked=%s errno=%d", cs->realtime ? "fifo" : "other", cs->high_nice,
            fifo ? "fifo" : "nice", fifo_e != 0 ? fifo_e : nice_e);
}

static void worker_hello(et_reactor *r, void *arg)
{
    tl_worker = arg;
    et_worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "et-worker-%u", w->index);
    if (w == w->eng->control)
        control_sched(r, w->eng);
    pthread_setname_np(pthread_self(), w == w->eng->control ? "et-control" : name);
    if (et_timer_arm(r, &w->sweep, et_reactor_now(r) + 1000000000ull) < 0)
        et_logf(ET_LOG_ERROR, "timer_failed", "worker=%u", w->index);
}

int et_engine_init(et_engine *eng, et_side side, const et_side_ops *ops, SSL_CTX *ctx,
                   unsigned nworkers)
{
    memset(eng, 0, sizeof(*eng));
    eng->ssl_ctx = ctx;
    ET_ENSURE(nworkers >= 1 && nworkers <= ET_MAX_WORKERS, ET_E_USAGE);
    eng->side = side;
    eng->ops = ops;
    atomic_init(&eng->next_socket_id, 1);
    atomic_init(&eng->next_session_key, 1);
    et_pi_mutex_init(&eng->reg_mu);
    eng->reg = et_stream_table_new();
    ET_ENSURE(eng->reg != NULL, ET_E_NOMEM);
    for (unsigned i = 0; i <= nworkers; i++) {
        et_worker *w = &eng->workers[i];
        w->eng = eng;
        w->index = i;
        ET_GUARD(et_reactor_new(&w->r, 0, 0));
        if (i == nworkers)
            eng->control = w;
        else
            eng->nworkers = i + 1;
        w->streams = et_stream_table_new();
        ET_ENSURE(w->streams != NULL, ET_E_NOMEM);
        et_timer_init(&w->sweep, sweep_fire);
    }
    return ET_OK;
}

int et_engine_start(et_engine *eng)
{
    for (unsigned i = 0; i < all_workers(eng); i++) {
        et_worker *w = &eng->workers[i];
        ET_GUARD(et_reactor_post(w->r, worker_hello, w));
        ET_GUARD(et_reactor_start_thread(w->r));
    }
    return ET_OK;
}

void et_engine_stop(et_engine *eng)
{
    atomic_store(&eng->stopping, true);
    for (unsigned i = 0; i < all_workers(eng); i++)
        et_reactor_stop(eng->workers[i].r);
    for (unsigned i = 0; i < all_workers(eng); i++) {
        if (eng->workers[i].r != NULL && et_reactor_join(eng->workers[i].r) < 0)
            et_logf(ET_LOG_WARN, "join_failed", "worker=%u", i);
    }
    /* The cleanup runs the control reactor on this thread: not its budget hook. */
    if (eng->control != NULL && eng->control->r != NULL)
        et_reactor_set_before_sleep(eng->control->r, NULL, NULL);
}

static void cleanup_stream(et_stream *s, void *arg)
{
    (void)arg;
    (void)et_stream_reset(s);
}

void et_engine_cleanup(et_engine *eng)
{
    unsigned n = all_workers(eng);
    /* Quiescent: no thread runs the reactors, so closing here is like closing on them. Each
     * round closes what is there, then runs what the closes queued (deferred frees, watches to
     * free, a socket that was on its way to another worker and lands now). */
    for (int round = 0; round < 8; round++) {
        for (unsigned i = 0; i < n; i++) {
            et_worker *w = &eng->workers[i];
            if (w->r == NULL)
                continue;
            if (w->streams != NULL)
                et_stream_table_each(w->streams, cleanup_stream, NULL);
            while (w->tsocks != NULL)
                et_tsock_close(w->tsocks, 0, "shutdown");
        }
        for (unsigned i = 0; i < n; i++)
            if (eng->workers[i].r != NULL && et_reactor_run_once(eng->workers[i].r, 0) < 0)
                break;
    }
    for (unsigned i = 0; i < n; i++) {
        et_worker *w = &eng->workers[i];
        if (w->r != NULL)
            et_timer_cancel(w->r, &w->sweep);
    }
    for (unsigned i = 0; i < n; i++) {
        et_worker *w = &eng->workers[i];
        et_reactor_free(w->r);
        w->r = NULL;
        et_stream_table_free(w->streams);
        w->streams = NULL;
    }
    eng->control = NULL;
    et_stream_table_free(eng->reg);
    eng->reg = NULL;
    pthread_mutex_destroy(&eng->reg_mu);
    SSL_CTX_free(atomic_exchange(&eng->ssl_ctx, NULL));
    while (eng->retired != NULL) {
        et_retired *r = eng->retired;
        eng->retired = r->next;
        SSL_CTX_free(r->ctx);
        free(r->mem);
        free(r);
    }
}

static const char *reason_name(unsigned slot)
{
    uint16_t code = (uint16_t)(((slot / 16u) << 8) | (slot % 16u));
    return et_wire_error_name(code);
}

void et_engine_log_stats(et_engine *eng)
{
    et_stats *s = &eng->stats;
    char extra[2048];
    size_t n = 0;
    extra[0] = '\0';
    for (unsigned i = 0; i < ET_STAT_REASONS; i++) {
        uint64_t hr = atomic_load(&s->handshake_refused[i]);
        uint64_t fe = atomic_load(&s->frame_errors[i]);
        if (hr && n < sizeof(extra))
            n += (size_t)snprintf(extra + n, sizeof(extra) - n, " handshake_refused_%s=%llu",
                                  reason_name(i), (unsigned long long)hr);
        if (fe && n < sizeof(extra))
            n += (size_t)snprintf(extra + n, sizeof(extra) - n, " frame_errors_%s=%llu",
                                  reason_name(i), (unsigned long long)fe);
    }
#define V(f) (unsigned long long)atomic_load(&s->f)
    et_logf(ET_LOG_INFO, "stats",
            "sockets_up=%llu sockets_down=%llu streams_opened=%llu streams_finished=%llu "
            "streams_cancelled=%llu bytes_to_peer=%llu bytes_from_peer=%llu "
            "cancels_sent_control=%llu cancels_sent_data=%llu cancels_recv_control=%llu "
            "cancels_recv_data=%llu cancel_acks=%llu late_frames_dropped=%llu "
            "opens_refused_tombstone=%llu public_refused=%llu inbox_full=%llu "
            "handshake_refused_tls=%llu limit_streams=%llu limit_client_conns=%llu "
            "limit_tunnels=%llu rate_limited=%llu idle_closed=%llu record_overtakes=%llu "
            "window_grows=%llu window_shrinks=%llu window_extra=%llu flush_yields=%llu "
            "control_demotions=%llu%s",
            V(sockets_up), V(sockets_down), V(streams_opened), V(streams_finished),
            V(streams_cancelled), V(bytes_to_peer), V(bytes_from_peer), V(cancels_sent_control),
            V(cancels_sent_data), V(cancels_recv_control), V(cancels_recv_data), V(cancel_acks),
            V(late_frames_dropped), V(opens_refused_tombstone), V(public_refused), V(inbox_full),
            V(handshake_refused_tls), V(limit_streams), V(limit_client_conns), V(limit_tunnels),
            V(rate_limited), V(idle_closed), V(record_overtakes), V(window_grows),
            V(window_shrinks), V(window_extra), V(flush_yields), V(control_demotions), extra);
#undef V
}

void et_session_hex(const uint8_t id[ET_SESSION_ID_LEN], char out[2 * ET_SESSION_ID_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < ET_SESSION_ID_LEN; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * ET_SESSION_ID_LEN] = '\0';
}

void et_addr_of_fd(int fd, et_addr *peer, et_addr *local)
{
    for (int k = 0; k < 2; k++) {
        et_addr *a = k == 0 ? peer : local;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        memset(a, 0, sizeof(*a));
        a->family = 4;
        int rc = k == 0 ? getpeername(fd, (struct sockaddr *)&ss, &sl)
                        : getsockname(fd, (struct sockaddr *)&ss, &sl);
        if (rc == 0 && ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&ss;
            memcpy(a->addr, &in->sin_addr, 4);
            a->port = ntohs(in->sin_port);
        } else if (rc == 0 && ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&ss;
            a->family = 6;
            memcpy(a->addr, &in6->sin6_addr, 16);
            a->port = ntohs(in6->sin6_port);
        }
    }
}

void et_addr_format(const struct sockaddr *sa, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
        snprintf(buf, n, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
        snprintf(buf, n, "[%s]:%u", ip, port);
    } else {
        snprintf(buf, n, "?");
    }
}

/* --- sessions --------------------------------------------------------------------------- */

et_session *et_session_new(et_engine *eng, const uint8_t id[ET_SESSION_ID_LEN])
{
    et_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    memcpy(s->id, id, ET_SESSION_ID_LEN);
    s->key = atomic_fetch_add(&eng->next_session_key, 1);
    et_pi_mutex_init(&s->mu);
    return s;
}

void et_session_ref(et_session *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void et_session_unref(et_session *s, void (*free_side)(void *))
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (free_side != NULL && s->side != NULL)
        free_side(s->side);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int et_session_attach(et_session *s, et_tsock *ts, et_tsock **replaced)
{
    et_tsock *old = NULL;
    int rv = ET_OK;
    *replaced = NULL;
    pthread_mutex_lock(&s->mu);
    if (ts->role == ET_ROLE_CONTROL) {
        old = s->ctrl;
        s->ctrl = ts;
        et_tsock_ref(ts);
    } else if (s->ndata < ET_MAX_DATA_SOCKS) {
        s->data[s->ndata++] = (et_sockref){ts, ts->w->index, true};
        et_tsock_ref(ts);
    } else {
        rv = ET_E_PROTO(ET_WE_LIMIT_SOCKETS);
    }
    pthread_mutex_unlock(&s->mu);
    *replaced = old;
    return rv;
}

int et_session_attach_data(et_session *s, et_tsock *ts, et_worker **to)
{
    et_engine *eng = ts->w->eng;
    int rv = ET_OK;
    *to = ts->w;
    pthread_mutex_lock(&s->mu);
    if (s->ndata < ET_MAX_DATA_SOCKS) {
        unsigned best = ts->w->index, best_n = UINT_MAX;
        for (unsigned k = 0; k < eng->nworkers; k++) {
            unsigned w = (ts->w->index + k) % eng->nworkers, n = 0; /* its own first: ties */
            for (unsigned i = 0; i < s->ndata; i++)
                n += s->data[i].worker == w;
            if (n < best_n) {
                best = w;
                best_n = n;
            }
        }
        *to = &eng->workers[best];
        s->data[s->ndata++] = (et_sockref){ts, best, *to == ts->w};
        et_tsock_ref(ts);
    } else {
        rv = ET_E_PROTO(ET_WE_LIMIT_SOCKETS);
    }
    pthread_mutex_unlock(&s->mu);
    return rv;
}

void et_session_data_ready(et_session *s, et_tsock *ts)
{
    pthread_mutex_lock(&s->mu);
    for (unsigned i = 0; i < s->ndata; i++)
        if (s->data[i].ts == ts)
            s->data[i].ready = true;
    pthread_mutex_unlock(&s->mu);
}

void et_session_detach(et_session *s, et_tsock *ts)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    if (s->ctrl == ts) {
        s->ctrl = NULL;
        found = true;
    }
    for (unsigned i = 0; i < s->ndata; i++) {
        if (s->data[i].ts == ts) {
            s->data[i] = s->data[--s->ndata];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (found)
        et_tsock_unref(ts);
}

et_tsock *et_session_pick_data(et_session *s)
{
    et_tsock *pick = NULL;
    pthread_mutex_lock(&s->mu);
    for (unsigned k = 0; k < s->ndata && pick == NULL; k++) {
        const et_sockref *ref = &s->data[s->rr++ % s->ndata];
        et_tsock *ts = ref->ts;
        /* Reading state here is a hint only (it belongs to the socket's worker); the worker
         * checks again when the handed-over connection arrives. A socket still moving to its
         * worker is skipped: the caller posts to ts->w, which the move is changing. */
        if (ref->ready && atomic_load_explicit(&ts->state, memory_order_relaxed) == ET_TS_READY) {
            pick = ts;
            et_tsock_ref(ts);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return pick;
}
