/* reactor_test.c: the event loop of reactor.h: timers, edge-triggered I/O, deferred close,
 * deferred tasks, the cross-thread inbox and stopping.
 *
 * Callbacks that run on a reactor thread never call cmocka's assertions (they would longjmp
 * across threads); they record what they saw and the test thread checks it after joining. Every
 * wait is bounded by a count and a deadline, and main() arms alarm() as a last resort. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include "et/reactor.h"

#define MS 1000000ull

static et_reactor *new_reactor(uint32_t inbox_cap)
{
    et_reactor *r = NULL;
    assert_int_equal(et_reactor_new(&r, 0, inbox_cap), ET_OK);
    assert_non_null(r);
    return r;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* ---- usage errors and zero states ---------------------------------------------------------- */

static void noop_io(et_reactor *r, et_io *io, uint32_t events)
{
}

static void noop_msg(et_reactor *r, void *arg)
{
}

static void noop_timer(et_reactor *r, et_timer *t)
{
}

static void noop_task(et_reactor *r, et_task *t)
{
}

static void test_usage_errors(void **state)
{
    et_reactor *r = (et_reactor *)1;
    assert_int_equal(et_reactor_new(NULL, 0, 0), ET_E_USAGE);
    assert_int_equal(et_reactor_new(&r, ET_REACTOR_EVENTS_MAX + 1, 0), ET_E_USAGE);
    assert_null(r);
    r = (et_reactor *)1;
    assert_int_equal(et_reactor_new(&r, 0, ET_REACTOR_INBOX_MAX + 1), ET_E_USAGE);
    assert_null(r);
    et_reactor_free(NULL);
    et_reactor_stop(NULL);
    assert_null(et_reactor_current());

    r = new_reactor(0);
    assert_int_equal(et_reactor_join(r), ET_E_USAGE); /* no thread */
    assert_int_equal(et_reactor_run(NULL), ET_E_USAGE);
    assert_int_equal(et_reactor_run_once(NULL, 0), ET_E_USAGE);

    /* I/O: zero io has no handler; a bad fd keeps its errno; double add; del of unregistered. */
    et_io io;
    memset(&io, 0, sizeof(io));
    int sv[2];
    make_pair(sv);
    assert_int_equal(et_reactor_add(r, sv[0], &io), ET_E_USAGE);
    et_io_init(&io, noop_io);
    errno = 0;
    assert_int_equal(et_reactor_add(r, -1, &io), ET_E_IO);
    assert_int_equal(errno, EBADF);
    assert_null(io.reactor);
    assert_int_equal(et_reactor_add(r, sv[0], &io), ET_OK);
    assert_int_equal(et_reactor_add(r, sv[0], &io), ET_E_USAGE);
    et_reactor_del(r, &io);
    et_reactor_del(r, &io); /* again: no-op */
    et_reactor_del(r, NULL);
    assert_null(io.reactor);

    /* Timers: zero timer has no callback; cancel of zero / NULL / disarmed is a no-op. */
    et_timer t;
    memset(&t, 0, sizeof(t));
    assert_false(et_timer_armed(&t));
    assert_false(et_timer_armed(NULL));
    assert_int_equal(et_timer_arm(r, &t, 0), ET_E_USAGE);
    et_timer_cancel(r, &t);
    et_timer_cancel(r, NULL);
    assert_int_equal(et_timer_arm(NULL, &t, 0), ET_E_USAGE);
    assert_int_equal(et_reactor_timers(r), 0);

    /* A timer armed on one reactor cannot be armed on another. */
    et_reactor *r2 = new_reactor(0);
    et_timer_init(&t, noop_timer);
    assert_int_equal(et_timer_arm(r, &t, 1), ET_OK);
    assert_int_equal(et_timer_arm(r2, &t, 1), ET_E_USAGE);
    assert_int_equal(et_reactor_timers(r2), 0);
    et_timer_cancel(r, &t);
    et_reactor_free(r2);

    /* Tasks. */
    et_task k;
    memset(&k, 0, sizeof(k));
    assert_false(et_task_queued(&k));
    assert_false(et_task_queued(NULL));
    et_task_cancel(r, &k);
    et_task_cancel(r, NULL);

    /* Inbox. */
    assert_int_equal(et_reactor_post(r, NULL, NULL), ET_E_USAGE);
    assert_int_equal(et_reactor_post(NULL, noop_msg, NULL), ET_E_USAGE);

    close(sv[0]);
    close(sv[1]);
    et_reactor_free(r);
}

/* Freeing a reactor leaves the caller's armed timers and queued tasks in their zero state. */
static void test_free_detaches(void **state)
{
    et_reactor *r = new_reactor(0);
    et_timer t;
    et_task k;
    et_timer_init(&t, noop_timer);
    et_task_init(&k, noop_task);
    assert_int_equal(et_timer_arm(r, &t, et_now_ns() + 1000 * MS), ET_OK);
    et_reactor_defer(r, &k);
    assert_true(et_timer_armed(&t));
    assert_true(et_task_queued(&k));
    assert_int_equal(et_reactor_post(r, noop_msg, NULL), ET_OK); /* dropped */
    et_reactor_free(r);
    assert_false(et_timer_armed(&t));
    assert_false(et_task_queued(&k));
}

/* ---- timers -------------------------------------------------------------------------------- */

typedef struct tt {
    et_timer t;
    int id;
    uint64_t arm_seq; /* test's own arm counter, for the tie order */
    bool cancelled;
    int fired;
} tt;

static struct {
    int order[64];
    int n;
    tt *big_prev; /* 100k test: previous fired timer */
    bool big_bad;
} fired;

static void record_timer(et_reactor *r, et_timer *t)
{
    tt *x = ET_CONTAINER_OF(t, tt, t);
    x->fired++;
    if (fired.n < 64)
        fired.order[fired.n] = x->id;
    fired.n++;
}

static void tt_init(tt *x, int id, et_timer_fn fn)
{
    memset(x, 0, sizeof(*x));
    et_timer_init(&x->t, fn);
    x->id = id;
}

static void test_timers_fire_in_deadline_order(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&fired, 0, sizeof(fired));
    /* Deadlines in the past, so the test needs no waiting; equal deadlines fire in arm order. */
    uint64_t base = et_now_ns() - 1000 * MS;
    static const uint64_t off[] = {50, 10, 30, 10, 20, 40, 0};
    tt ts[7];
    for (int i = 0; i < 7; i++) {
        tt_init(&ts[i], i, record_timer);
        assert_int_equal(et_timer_arm(r, &ts[i].t, base + off[i]), ET_OK);
        assert_true(et_timer_armed(&ts[i].t));
        assert_int_equal(ts[i].t.deadline_ns, base + off[i]);
    }
    assert_int_equal(et_reactor_timers(r), 7);
    assert_int_equal(et_reactor_run_once(r, 0), 7);
    static const int want[] = {6, 1, 3, 4, 2, 5, 0};
    assert_int_equal(fired.n, 7);
    assert_memory_equal(fired.order, want, sizeof(want));
    for (int i = 0; i < 7; i++)
        assert_false(et_timer_armed(&ts[i].t));
    assert_int_equal(et_reactor_timers(r), 0);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    et_reactor_free(r);
}

static void test_timer_cancel_and_rearm(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&fired, 0, sizeof(fired));
    uint64_t base = et_now_ns() - 1000 * MS;
    tt a, b, c, d;
    tt_init(&a, 0, record_timer);
    tt_init(&b, 1, record_timer);
    tt_init(&c, 2, record_timer);
    tt_init(&d, 3, record_timer);
    assert_int_equal(et_timer_arm(r, &a.t, base + 1), ET_OK);
    assert_int_equal(et_timer_arm(r, &b.t, base + 2), ET_OK);
    assert_int_equal(et_timer_arm(r, &c.t, base + 3), ET_OK);
    assert_int_equal(et_timer_arm(r, &d.t, et_now_ns() + 10000 * MS), ET_OK); /* far future */
    et_timer_cancel(r, &b.t);
    et_timer_cancel(r, &b.t); /* twice: no-op */
    assert_false(et_timer_armed(&b.t));
    assert_int_equal(et_timer_arm(r, &a.t, base + 4), ET_OK); /* re-arm moves a after c */
    assert_int_equal(et_reactor_timers(r), 3);

    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(fired.n, 2);
    assert_int_equal(fired.order[0], 2);
    assert_int_equal(fired.order[1], 0);
    assert_int_equal(b.fired, 0);
    assert_true(et_timer_armed(&d.t));

    /* A fired timer can be armed again; a cancelled one too. */
    assert_int_equal(et_timer_arm(r, &a.t, base), ET_OK);
    assert_int_equal(et_timer_arm(r, &b.t, base), ET_OK);
    et_timer_cancel(r, &d.t);
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(fired.order[2], 0);
    assert_int_equal(fired.order[3], 1);
    assert_int_equal(a.fired, 2);
    assert_int_equal(b.fired, 1);
    assert_int_equal(d.fired, 0);
    assert_int_equal(et_reactor_timers(r), 0);
    et_reactor_free(r);
}

/* A callback that re-arms itself in the past and arms a second timer: neither runs again in the
 * same timer step, so one iteration fires each once and the loop cannot spin. */
static tt chain_other;

static void chain_timer(et_reactor *r, et_timer *t)
{
    tt *x = ET_CONTAINER_OF(t, tt, t);
    record_timer(r, t);
    if (x->fired < 3) {
        if (et_timer_arm(r, t, et_reactor_now(r) - 1) != ET_OK)
            fired.big_bad = true;
        if (et_timer_arm(r, &chain_other.t, 0) != ET_OK)
            fired.big_bad = true;
    }
}

static void test_timer_armed_from_callback(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&fired, 0, sizeof(fired));
    tt self;
    tt_init(&self, 1, chain_timer);
    tt_init(&chain_other, 2, record_timer);
    assert_int_equal(et_timer_arm(r, &self.t, 0), ET_OK);

    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_int_equal(self.fired, 1);
    assert_int_equal(chain_other.fired, 0);
    assert_int_equal(et_reactor_timers(r), 2);
    /* Next iteration: both due and both fire; self re-arms both again, for the next one. */
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(self.fired, 2);
    assert_int_equal(chain_other.fired, 1);
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(self.fired, 3);
    assert_int_equal(chain_other.fired, 2);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    assert_false(fired.big_bad);
    assert_int_equal(et_reactor_timers(r), 0);
    et_reactor_free(r);
}

/* A timer in the near future: not due at once, and a blocking iteration waits for it. */
static void test_timer_waits_for_deadline(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&fired, 0, sizeof(fired));
    tt a;
    tt_init(&a, 0, record_timer);
    uint64_t start = et_now_ns();
    uint64_t deadline = start + 10 * MS;
    assert_int_equal(et_timer_arm(r, &a.t, deadline), ET_OK);
    /* Not due yet at the iteration's cached time: not fired. (A slow machine may already be past
     * the deadline; then it fires, and the blocking part below is skipped.) */
    int n = et_reactor_run_once(r, 0);
    assert_int_equal(n, et_reactor_now(r) < deadline ? 0 : 1);
    /* run_once(-1) with only a timer armed blocks until the timer. */
    for (int i = 0; i < 100 && a.fired == 0; i++)
        assert_true(et_reactor_run_once(r, -1) >= 0);
    uint64_t elapsed = et_now_ns() - start;
    assert_int_equal(a.fired, 1);
    assert_true(elapsed >= 10 * MS);
    assert_true(elapsed < 5000 * MS);
    assert_true(et_reactor_now(r) >= deadline);

    /* A timeout shorter than the nearest deadline bounds the wait. */
    assert_int_equal(et_timer_arm(r, &a.t, et_now_ns() + 10000 * MS), ET_OK);
    start = et_now_ns();
    assert_int_equal(et_reactor_run_once(r, 2), 0);
    assert_true(et_now_ns() - start < 2000 * MS);
    et_timer_cancel(r, &a.t);
    et_reactor_free(r);
}

/* 100,000 timers with random (past) deadlines, half cancelled in random order and some moved:
 * the rest fire in (deadline, arm order) order, each exactly once. */
#define BIG_N 100000

static void big_timer(et_reactor *r, et_timer *t)
{
    tt *x = ET_CONTAINER_OF(t, tt, t);
    tt *p = fired.big_prev;
    if (x->cancelled || x->fired != 0)
        fired.big_bad = true;
    if (p != NULL && (p->t.deadline_ns > x->t.deadline_ns ||
                      (p->t.deadline_ns == x->t.deadline_ns && p->arm_seq >= x->arm_seq)))
        fired.big_bad = true;
    x->fired++;
    fired.big_prev = x;
    fired.n++;
}

static void test_timer_heap_100k(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&fired, 0, sizeof(fired));
    tt *ts = calloc(BIG_N, sizeof(*ts));
    int *perm = calloc(BIG_N, sizeof(*perm));
    assert_non_null(ts);
    assert_non_null(perm);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    uint64_t seq = 0;
    /* Deadlines below 2^20 ns: in the past, and dense enough to give many ties. */
    assert_true(et_reactor_now(r) > (1u << 20));
    for (int i = 0; i < BIG_N; i++) {
        tt_init(&ts[i], i, big_timer);
        ts[i].arm_seq = seq++;
        assert_int_equal(et_timer_arm(r, &ts[i].t, xorshift(&seed) % (1u << 20)), ET_OK);
        perm[i] = i;
    }
    assert_int_equal(et_reactor_timers(r), BIG_N);
    for (int i = BIG_N - 1; i > 0; i--) {
        int j = (int)(xorshift(&seed) % (uint64_t)(i + 1));
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int i = 0; i < BIG_N / 2; i++) {
        tt *x = &ts[perm[i]];
        et_timer_cancel(r, &x->t);
        x->cancelled = true;
        assert_false(et_timer_armed(&x->t));
    }
    /* Move 5,000 survivors; re-arm 1,000 cancelled ones and cancel them again. */
    for (int i = BIG_N / 2; i < BIG_N / 2 + 5000; i++) {
        tt *x = &ts[perm[i]];
        x->arm_seq = seq++;
        assert_int_equal(et_timer_arm(r, &x->t, xorshift(&seed) % (1u << 20)), ET_OK);
    }
    for (int i = 0; i < 1000; i++) {
        tt *x = &ts[perm[i]];
        assert_int_equal(et_timer_arm(r, &x->t, xorshift(&seed) % (1u << 20)), ET_OK);
        et_timer_cancel(r, &x->t);
    }
    assert_int_equal(et_reactor_timers(r), BIG_N / 2);

    assert_int_equal(et_reactor_run_once(r, 0), BIG_N / 2);
    assert_false(fired.big_bad);
    assert_int_equal(fired.n, BIG_N / 2);
    for (int i = 0; i < BIG_N; i++)
        assert_int_equal(ts[i].fired, ts[i].cancelled ? 0 : 1);
    assert_int_equal(et_reactor_timers(r), 0);
    free(perm);
    free(ts);
    et_reactor_free(r);
}

/* ---- edge-triggered I/O -------------------------------------------------------------------- */

#define RD_CAP (256 * 1024)

typedef struct reader {
    et_io io;
    uint8_t *buf; /* owned; RD_CAP bytes */
    size_t len;
    int calls;
    uint32_t events; /* or of every mask seen */
    int per_call;    /* bytes to read per call at most (0: until EAGAIN), then et_io_resume */
    bool eof;
    bool again; /* the last call ended on EAGAIN */
    int read_errno;
} reader;

static void reader_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    reader *rd = ET_CONTAINER_OF(io, reader, io);
    rd->calls++;
    rd->events |= events;
    rd->again = false;
    size_t budget = rd->per_call > 0 ? (size_t)rd->per_call : RD_CAP;
    while (!rd->eof && rd->len < RD_CAP) {
        if (budget == 0) {
            et_io_resume(r, io, EPOLLIN); /* stopped early on purpose: no new edge will come */
            return;
        }
        size_t want = RD_CAP - rd->len < budget ? RD_CAP - rd->len : budget;
        ssize_t n = read(io->fd, rd->buf + rd->len, want);
        if (n > 0) {
            rd->len += (size_t)n;
            budget -= (size_t)n;
        } else if (n == 0) {
            rd->eof = true;
        } else if (errno == EAGAIN) {
            rd->again = true;
            return;
        } else if (errno != EINTR) {
            rd->read_errno = errno;
            return;
        }
    }
}

static void reader_init(reader *rd)
{
    memset(rd, 0, sizeof(*rd));
    et_io_init(&rd->io, reader_on_event);
    rd->buf = malloc(RD_CAP);
    assert_non_null(rd->buf);
}

static void test_io_edge_triggered(void **state)
{
    et_reactor *r = new_reactor(0);
    int sv[2];
    make_pair(sv);
    reader rd;
    reader_init(&rd);
    assert_int_equal(et_reactor_add(r, sv[0], &rd.io), ET_OK);
    assert_int_equal(rd.io.fd, sv[0]);
    assert_ptr_equal(rd.io.reactor, r);

    /* The first edge: writable. Then silence: an edge is reported once. */
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_true(rd.events & EPOLLOUT);
    assert_int_equal(et_reactor_run_once(r, 0), 0);

    assert_int_equal(write(sv[1], "hello", 5), 5);
    rd.events = 0;
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_true(rd.events & EPOLLIN);
    assert_true(rd.again);
    assert_int_equal(rd.len, 5);
    assert_memory_equal(rd.buf, "hello", 5);
    assert_int_equal(et_reactor_run_once(r, 0), 0);

    /* A stream larger than the socket buffer: the handler gets exactly the bytes, in order. */
    const size_t total = 200000;
    uint8_t chunk[4096];
    size_t sent = 0;
    for (int iter = 0; iter < 10000 && (sent < total || rd.len < 5 + total); iter++) {
        while (sent < total) {
            size_t n = total - sent < sizeof(chunk) ? total - sent : sizeof(chunk);
            for (size_t i = 0; i < n; i++)
                chunk[i] = (uint8_t)((sent + i) * 7u + 3u);
            ssize_t w = write(sv[1], chunk, n);
            if (w < 0) {
                assert_int_equal(errno, EAGAIN);
                break;
            }
            sent += (size_t)w;
        }
        assert_true(et_reactor_run_once(r, 0) >= 0);
    }
    assert_int_equal(rd.len, 5 + total);
    for (size_t i = 0; i < total; i++) {
        if (rd.buf[5 + i] != (uint8_t)(i * 7u + 3u))
            fail_msg("byte %zu differs", i);
    }
    assert_int_equal(rd.read_errno, 0);

    /* The peer shuts its write side: EPOLLRDHUP, and read() returns 0. */
    rd.events = 0;
    assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_true(rd.events & EPOLLRDHUP);
    assert_true(rd.eof);
    /* Then closes: a hangup. */
    rd.events = 0;
    close(sv[1]);
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_true(rd.events & (EPOLLHUP | EPOLLRDHUP));

    et_reactor_del(r, &rd.io);
    assert_null(rd.io.reactor);
    close(sv[0]);
    free(rd.buf);
    et_reactor_free(r);
}

/* A handler that reads one byte per call and resumes itself: no new edge is needed. */
static void test_io_resume(void **state)
{
    et_reactor *r = new_reactor(0);
    int sv[2];
    make_pair(sv);
    reader rd;
    reader_init(&rd);
    rd.per_call = 1;
    assert_int_equal(write(sv[1], "abcde", 5), 5);
    assert_int_equal(et_reactor_add(r, sv[0], &rd.io), ET_OK);

    /* Iteration 1: the edge (1 byte) and the resume in step 7 (1 byte). Then 1 byte each. */
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(rd.len, 2);
    int iters = 0;
    while (!rd.again && iters < 20) {
        assert_int_equal(et_reactor_run_once(r, 0), 1);
        iters++;
    }
    assert_int_equal(iters, 4); /* c, d, e, then EAGAIN */
    assert_int_equal(rd.len, 5);
    assert_memory_equal(rd.buf, "abcde", 5);
    assert_false(et_task_queued(&rd.io.resume));
    assert_int_equal(et_reactor_run_once(r, 0), 0);

    /* et_reactor_del cancels a pending resume. */
    assert_int_equal(write(sv[1], "xy", 2), 2);
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(write(sv[1], "zw", 2), 2);
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_true(et_task_queued(&rd.io.resume));
    int calls = rd.calls;
    et_reactor_del(r, &rd.io);
    assert_false(et_task_queued(&rd.io.resume));
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    assert_int_equal(rd.calls, calls);

    close(sv[0]);
    close(sv[1]);
    free(rd.buf);
    et_reactor_free(r);
}

/* ---- deferred close ------------------------------------------------------------------------ */

typedef struct conn {
    et_io io;
    et_task close_task;
    int fd;
    bool in_handler;
    bool closing;
    int handler_calls;
    struct conn *victim; /* not owned; the del-in-batch test frees it */
} conn;

static struct {
    int freed;
    bool freed_in_handler;
    int handled;
    conn *ran; /* not owned; the last conn whose handler ran */
} closes;

static void conn_free_task(et_reactor *r, et_task *t)
{
    conn *c = ET_CONTAINER_OF(t, conn, close_task);
    if (c->in_handler)
        closes.freed_in_handler = true;
    closes.freed++;
    free(c);
}

static void conn_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    conn *c = ET_CONTAINER_OF(io, conn, io);
    c->in_handler = true;
    c->handler_calls++;
    uint8_t buf[256];
    bool eof = false;
    for (int i = 0; i < 1000; i++) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n == 0)
            eof = true;
        if (n <= 0)
            break;
    }
    if (eof || (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        /* Close from inside the handler: unregister and close now, free after we return. */
        et_reactor_del(r, io);
        close(c->fd);
        c->fd = -1;
        et_reactor_defer(r, &c->close_task);
        c->closing = true;
    }
    /* Still touching |c| after the close was requested: ASan reports it if freed early. */
    closes.handled++;
    c->in_handler = false;
}

static conn *conn_new(int fd)
{
    conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    et_io_init(&c->io, conn_on_event);
    et_task_init(&c->close_task, conn_free_task);
    c->fd = fd;
    return c;
}

static void test_deferred_close_in_handler(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&closes, 0, sizeof(closes));
    int sv[2];
    make_pair(sv);
    conn *c = conn_new(sv[0]);
    assert_int_equal(et_reactor_add(r, sv[0], &c->io), ET_OK);
    assert_int_equal(et_reactor_run_once(r, 0), 1); /* writable */
    assert_int_equal(closes.freed, 0);

    assert_int_equal(write(sv[1], "bye", 3), 3);
    close(sv[1]);
    /* One iteration: the handler closes, then the deferred task frees. */
    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(closes.freed, 1);
    assert_false(closes.freed_in_handler);
    assert_int_equal(closes.handled, 2);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    et_reactor_free(r);
}

/* A handler deletes and frees (at once, not deferred) another connection whose event is in the
 * same batch: the reactor must not dispatch it. */
static void killer_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    conn *c = ET_CONTAINER_OF(io, conn, io);
    c->handler_calls++;
    closes.handled++;
    closes.ran = c;
    conn *v = c->victim;
    if (v != NULL) {
        v->victim = NULL;
        c->victim = NULL;
        et_reactor_del(r, &v->io);
        close(v->fd);
        free(v);
        closes.freed++;
    }
}

static void test_del_drops_batched_events(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&closes, 0, sizeof(closes));
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    conn *ca = conn_new(a[0]);
    conn *cb = conn_new(b[0]);
    ca->io.on_event = killer_on_event;
    cb->io.on_event = killer_on_event;
    ca->victim = cb;
    cb->victim = ca;
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "x", 1), 1);
    assert_int_equal(et_reactor_add(r, a[0], &ca->io), ET_OK);
    assert_int_equal(et_reactor_add(r, b[0], &cb->io), ET_OK);

    /* Both are ready in one batch; whichever runs first frees the other. */
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_int_equal(closes.handled, 1);
    assert_int_equal(closes.freed, 1);
    conn *alive = closes.ran; /* the freed one must not be read */
    assert_true(alive == ca || alive == cb);
    assert_int_equal(alive->handler_calls, 1);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    et_reactor_del(r, &alive->io);
    close(alive->fd);
    free(alive);
    close(a[1]);
    close(b[1]);
    et_reactor_free(r);
}

/* ---- deferred tasks and the before-sleep hook ---------------------------------------------- */

typedef struct task_rec {
    et_task task;
    int id;
    int runs;
    int again;       /* re-defer itself this many times */
    et_task *cancel; /* not owned; cancelled when this task runs */
} task_rec;

static struct {
    int order[16];
    int n;
    int hook_calls;
    et_task *hook_defers; /* not owned */
} tasks;

static void rec_task(et_reactor *r, et_task *t)
{
    task_rec *k = ET_CONTAINER_OF(t, task_rec, task);
    k->runs++;
    if (tasks.n < 16)
        tasks.order[tasks.n] = k->id;
    tasks.n++;
    if (k->cancel != NULL)
        et_task_cancel(r, k->cancel);
    if (k->again > 0) {
        k->again--;
        et_reactor_defer(r, t);
    }
}

static void rec_init(task_rec *k, int id)
{
    memset(k, 0, sizeof(*k));
    et_task_init(&k->task, rec_task);
    k->id = id;
}

static void hook(et_reactor *r, void *arg)
{
    tasks.hook_calls++;
    if (arg != (void *)&tasks)
        tasks.hook_calls += 1000;
    if (tasks.hook_defers != NULL) {
        et_reactor_defer(r, tasks.hook_defers);
        tasks.hook_defers = NULL;
    }
}

static void test_tasks_and_hook(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&tasks, 0, sizeof(tasks));
    task_rec k1, k2, k3, k4;
    rec_init(&k1, 1);
    rec_init(&k2, 2);
    rec_init(&k3, 3);
    rec_init(&k4, 4);
    k1.cancel = &k3.task; /* k1 runs first and cancels k3, queued in the same round */
    k2.again = 2;         /* re-defers itself: runs once per iteration, not in a loop */
    et_reactor_defer(r, &k1.task);
    et_reactor_defer(r, &k2.task);
    et_reactor_defer(r, &k1.task); /* already queued: once */
    et_reactor_defer(r, &k3.task);
    et_reactor_defer(r, &k4.task);
    et_task_cancel(r, &k4.task);
    assert_false(et_task_queued(&k4.task));

    assert_int_equal(et_reactor_run_once(r, 0), 2);
    assert_int_equal(tasks.n, 2);
    assert_int_equal(tasks.order[0], 1);
    assert_int_equal(tasks.order[1], 2);
    assert_int_equal(k3.runs, 0);
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    assert_int_equal(k2.runs, 3);
    assert_int_equal(k1.runs, 1);

    /* The hook runs before every wait; a task it defers keeps that wait from blocking. */
    et_reactor_set_before_sleep(r, hook, &tasks);
    tasks.hook_defers = &k4.task;
    uint64_t start = et_now_ns();
    assert_int_equal(et_reactor_run_once(r, 5000), 1);
    assert_true(et_now_ns() - start < 2000 * MS);
    assert_int_equal(k4.runs, 1);
    assert_int_equal(tasks.hook_calls, 1);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    assert_int_equal(tasks.hook_calls, 2);
    et_reactor_set_before_sleep(r, NULL, NULL);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    assert_int_equal(tasks.hook_calls, 2);
    et_reactor_free(r);
}

/* Callbacks see their reactor as current, and cannot re-enter the loop. */
static struct {
    et_reactor *seen;
    int nested_run;
    int nested_once;
} reent;

static void reent_task(et_reactor *r, et_task *t)
{
    reent.seen = et_reactor_current();
    reent.nested_run = et_reactor_run(r);
    reent.nested_once = et_reactor_run_once(r, 0);
}

static void test_current_and_reentry(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&reent, 0, sizeof(reent));
    et_task k;
    et_task_init(&k, reent_task);
    et_reactor_defer(r, &k);
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_ptr_equal(reent.seen, r);
    assert_int_equal(reent.nested_run, ET_E_USAGE);
    assert_int_equal(reent.nested_once, ET_E_USAGE);
    assert_null(et_reactor_current());
    et_reactor_free(r);
}

/* ---- inbox --------------------------------------------------------------------------------- */

static struct {
    uintptr_t got[32];
    int n;
} inbox1;

static void inbox1_msg(et_reactor *r, void *arg)
{
    if (inbox1.n < 32)
        inbox1.got[inbox1.n] = (uintptr_t)arg;
    inbox1.n++;
}

static void test_inbox_full(void **state)
{
    et_reactor *r = new_reactor(5); /* rounded up to 8 */
    memset(&inbox1, 0, sizeof(inbox1));
    for (uintptr_t i = 0; i < 8; i++)
        assert_int_equal(et_reactor_post(r, inbox1_msg, (void *)(i + 100)), ET_OK);
    assert_int_equal(et_reactor_post(r, inbox1_msg, (void *)999), ET_E_LIMIT);
    assert_int_equal(et_reactor_post(r, inbox1_msg, (void *)999), ET_E_LIMIT);

    /* One iteration delivers all, in order, on this thread (run_once makes it the owner). */
    assert_int_equal(et_reactor_run_once(r, 0), 8);
    assert_int_equal(inbox1.n, 8);
    for (uintptr_t i = 0; i < 8; i++)
        assert_int_equal(inbox1.got[i], i + 100);

    /* Room again; the ring wraps. */
    for (int lap = 0; lap < 3; lap++) {
        for (uintptr_t i = 0; i < 6; i++)
            assert_int_equal(et_reactor_post(r, inbox1_msg, (void *)i), ET_OK);
        assert_int_equal(et_reactor_run_once(r, 0), 6);
    }
    assert_int_equal(inbox1.n, 26);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    et_reactor_free(r);
}

/* A message posted by a callback to its own reactor needs no eventfd and is not lost. */
static void self_post_task(et_reactor *r, et_task *t)
{
    if (et_reactor_post(r, inbox1_msg, (void *)7) != ET_OK)
        inbox1.n = -100;
}

static void test_inbox_post_to_self(void **state)
{
    et_reactor *r = new_reactor(0);
    memset(&inbox1, 0, sizeof(inbox1));
    et_task k;
    et_task_init(&k, self_post_task);
    et_reactor_defer(r, &k);
    assert_int_equal(et_reactor_run_once(r, 0), 1);
    assert_int_equal(inbox1.n, 0);
    uint64_t start = et_now_ns();
    assert_int_equal(et_reactor_run_once(r, 5000), 1); /* must not sleep */
    assert_true(et_now_ns() - start < 2000 * MS);
    assert_int_equal(inbox1.n, 1);
    assert_int_equal(inbox1.got[0], 7);
    assert_int_equal(et_reactor_run_once(r, 0), 0);
    et_reactor_free(r);
}

#define PRODUCERS    4
#define PER_PRODUCER 10000

static struct {
    et_reactor *r;
    uint32_t next[PRODUCERS]; /* reactor thread only */
    bool bad;                 /* reactor thread only */
    atomic_uint delivered;
    atomic_uint limits; /* ET_E_LIMIT answers seen by producers */
    atomic_uint failures;
} mp;

static void mp_msg(et_reactor *r, void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned id = (unsigned)(v >> 24);
    uint32_t seq = (uint32_t)(v & 0xffffffu);
    if (et_reactor_current() != mp.r || r != mp.r || id >= PRODUCERS || mp.next[id] != seq)
        mp.bad = true;
    else
        mp.next[id]++;
    atomic_fetch_add_explicit(&mp.delivered, 1, memory_order_release);
}

static void *producer_main(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint64_t deadline = et_now_ns() + 30000 * MS;
    for (uintptr_t seq = 0; seq < PER_PRODUCER; seq++) {
        int rv;
        while ((rv = et_reactor_post(mp.r, mp_msg, (void *)((id << 24) | seq))) == ET_E_LIMIT) {
            atomic_fetch_add_explicit(&mp.limits, 1, memory_order_relaxed);
            if (et_now_ns() > deadline)
                break;
            sched_yield();
        }
        if (rv != ET_OK) {
            atomic_fetch_add_explicit(&mp.failures, 1, memory_order_relaxed);
            return NULL;
        }
    }
    return NULL;
}

static void test_inbox_four_producers(void **state)
{
    memset(&mp, 0, sizeof(mp));
    mp.r = new_reactor(256); /* small, so producers also meet a full inbox */
    assert_int_equal(et_reactor_start_thread(mp.r), ET_OK);
    assert_int_equal(et_reactor_start_thread(mp.r), ET_E_USAGE);
    pthread_t th[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, producer_main, (void *)i), 0);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&mp.failures), 0);

    uint64_t deadline = et_now_ns() + 30000 * MS;
    while (atomic_load_explicit(&mp.delivered, memory_order_acquire) < PRODUCERS * PER_PRODUCER &&
           et_now_ns() < deadline)
        sleep_ns(1 * MS);
    et_reactor_stop(mp.r);
    assert_int_equal(et_reactor_join(mp.r), ET_OK);

    assert_int_equal(atomic_load(&mp.delivered), PRODUCERS * PER_PRODUCER);
    assert_false(mp.bad);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(mp.next[i], PER_PRODUCER);
    print_message("    inbox: %u ET_E_LIMIT answers on the way\n", atomic_load(&mp.limits));
    et_reactor_free(mp.r);
}

/* ---- stopping ------------------------------------------------------------------------------ */

static struct {
    atomic_bool started;
    bool on_reactor; /* reactor thread; read after join */
} stopper;

static void stopper_msg(et_reactor *r, void *arg)
{
    stopper.on_reactor = et_reactor_current() == r;
    atomic_store(&stopper.started, true);
}

static void test_stop_from_another_thread(void **state)
{
    memset(&stopper, 0, sizeof(stopper));
    et_reactor *r = new_reactor(0);
    assert_int_equal(et_reactor_start_thread(r), ET_OK);
    assert_int_equal(et_reactor_post(r, stopper_msg, NULL), ET_OK);
    uint64_t deadline = et_now_ns() + 10000 * MS;
    while (!atomic_load(&stopper.started) && et_now_ns() < deadline)
        sleep_ns(1 * MS);
    assert_true(atomic_load(&stopper.started));
    /* The reactor now sleeps in epoll_wait with no timeout; stop must wake it. */
    sleep_ns(2 * MS);
    et_reactor_stop(r);
    assert_int_equal(et_reactor_join(r), ET_OK);
    assert_true(stopper.on_reactor);
    assert_int_equal(et_reactor_join(r), ET_E_USAGE);

    /* A stop requested before run: run returns at once (here, on this thread). */
    et_reactor_stop(r);
    assert_int_equal(et_reactor_run(r), ET_OK);

    /* It can start again, and et_reactor_free stops and joins a running thread. */
    assert_int_equal(et_reactor_start_thread(r), ET_OK);
    et_reactor_free(r);
}

static void stop_timer(et_reactor *r, et_timer *t)
{
    et_reactor_stop(r);
}

/* A timer callback stops its own reactor; the iteration finishes, then run returns. */
static void test_stop_from_own_timer(void **state)
{
    et_reactor *r = new_reactor(0);
    et_timer t;
    et_timer_init(&t, stop_timer);
    assert_int_equal(et_timer_arm(r, &t, et_now_ns() + 2 * MS), ET_OK);
    assert_int_equal(et_reactor_start_thread(r), ET_OK);
    assert_int_equal(et_reactor_join(r), ET_OK);
    assert_false(et_timer_armed(&t));
    et_reactor_free(r);
}

int main(void)
{
    alarm(120); /* last resort against a hang: every wait below is bounded much tighter */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_free_detaches),
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_timer_cancel_and_rearm),
        cmocka_unit_test(test_timer_armed_from_callback),
        cmocka_unit_test(test_timer_waits_for_deadline),
        cmocka_unit_test(test_timer_heap_100k),
        cmocka_unit_test(test_io_edge_triggered),
        cmocka_unit_test(test_io_resume),
        cmocka_unit_test(test_deferred_close_in_handler),
        cmocka_unit_test(test_del_drops_batched_events),
        cmocka_unit_test(test_tasks_and_hook),
        cmocka_unit_test(test_current_and_reentry),
        cmocka_unit_test(test_inbox_full),
        cmocka_unit_test(test_inbox_post_to_self),
        cmocka_unit_test(test_inbox_four_producers),
        cmocka_unit_test(test_stop_from_another_thread),
        cmocka_unit_test(test_stop_from_own_timer),
    };
    return TU_RUN("reactor", tests);
}
