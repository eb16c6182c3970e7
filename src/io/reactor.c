/* reactor.c: the event loop of reactor.h: epoll backend, timer heap, deferred tasks, inbox.
 *
 * One file on purpose: the four parts share the reactor struct, and splitting them would need a
 * private header for it. Sections: clock and thread identity, tasks, reactor lifetime, I/O,
 * timers (binary min-heap), inbox (bounded MPSC ring), the loop, the thread helper. */
#include "et/reactor.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Producer-side fields of the inbox sit on their own cache lines, away from the consumer's. */
#define CACHE_LINE 64

/* One heap entry. The deadline and arm order are copied next to the pointer so that sifting
 * compares within the array instead of chasing 100k timer pointers. */
typedef struct timer_ent {
    uint64_t deadline;
    uint64_t seq; /* arm order: ties fire first-armed first, and bounds one timer round */
    et_timer *t;  /* not owned */
} timer_ent;

/* One inbox slot (Vyukov's bounded queue). |seq| == ticket: free for the producer holding that
 * ticket; |seq| == ticket + 1: holds that ticket's message; ticket + cap: free for the next lap. */
typedef struct inbox_slot {
    atomic_size_t seq;
    et_msg_fn fn;
    void *arg;
} inbox_slot;

struct et_reactor {
    int epfd;
    int wakefd; /* eventfd: producers and et_reactor_stop write it */
    et_io wake_io;

    struct epoll_event *events; /* owned; |nevents| long */
    int nevents;
    int batch_len; /* events of the batch being dispatched; 0 outside step 4 */
    bool in_loop;  /* inside run / run_once: they are not reentrant */

    uint64_t now_ns;

    timer_ent *heap; /* owned; |heap_cap| long, |heap_len| used */
    uint32_t heap_len;
    uint32_t heap_cap;
    uint64_t timer_seq;

    et_task tasks; /* sentinel of the circular list of queued tasks */

    et_hook_fn before_sleep;
    void *before_sleep_arg; /* not owned */

    /* Inbox, consumer side: only the reactor's thread touches these. */
    inbox_slot *slots; /* owned; |inbox_mask| + 1 long (a power of two) */
    size_t inbox_mask;
    size_t deq_pos;
    bool inbox_check; /* the inbox may hold messages: drain it in step 5 */

    pthread_t thread;
    bool thread_started;
    int thread_rv;

    atomic_bool running; /* inside run / run_once, for the ownership assertions */
    atomic_bool stop;

    /* Inbox, producer side: written by every posting thread. */
    char pad0_[CACHE_LINE];
    atomic_size_t enq_pos;
    char pad1_[CACHE_LINE - sizeof(atomic_size_t)];
    atomic_bool wake_pending; /* the eventfd was written and the reactor has not reset it yet */
    char pad2_[CACHE_LINE - sizeof(atomic_bool)];
};

/* ---- clock and thread identity ------------------------------------------------------------- */

static _Thread_local et_reactor *tl_current;

uint64_t et_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

et_reactor *et_reactor_current(void)
{
    return tl_current;
}

uint64_t et_reactor_now(const et_reactor *r)
{
    return r->now_ns;
}

/* on_owner tells whether the calling thread may touch |r|: it runs |r|, or nobody runs |r| and
 * the caller runs no other reactor. Used in assertions only. */
static bool on_owner(const et_reactor *r)
{
    et_reactor *c = tl_current;
    return c == r || (c == NULL && !atomic_load_explicit(&r->running, memory_order_relaxed));
}

/* io_error raises ET_E_IO and keeps the errno of the failed call for the caller. */
static int io_error(const char *file, int line)
{
    int saved = errno;
    et_error_note(ET_E_IO, file, line);
    errno = saved;
    return ET_E_IO;
}
#define IO_ERROR() io_error(__FILE__, __LINE__)

/* ---- tasks: an intrusive circular list, so cancel is O(1) -------------------------------- */

static void task_unlink(et_task *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = NULL;
    t->next = NULL;
}

static void task_append(et_task *head, et_task *t)
{
    t->prev = head->prev;
    t->next = head;
    head->prev->next = t;
    head->prev = t;
}

static bool task_list_empty(const et_task *head)
{
    return head->next == head;
}

void et_task_init(et_task *t, et_task_fn fn)
{
    memset(t, 0, sizeof(*t));
    t->fn = fn;
}

bool et_task_queued(const et_task *t)
{
    return t != NULL && t->next != NULL;
}

void et_reactor_defer(et_reactor *r, et_task *t)
{
    assert(on_owner(r));
    assert(t->fn != NULL);
    if (t->next != NULL)
        return;
    task_append(&r->tasks, t);
}

void et_task_cancel(et_reactor *r, et_task *t)
{
    (void)r;
    if (t == NULL || t->next == NULL)
        return;
    assert(on_owner(r));
    task_unlink(t);
}

/* run_tasks runs the tasks queued before it started (step 7); returns how many ran. The queue is
 * moved to a local list first, so a task deferred by a task waits for the next iteration, and a
 * task cancelled by an earlier one is simply gone from the local list. */
static int run_tasks(et_reactor *r)
{
    if (task_list_empty(&r->tasks))
        return 0;
    et_task round;
    round.next = r->tasks.next;
    round.prev = r->tasks.prev;
    round.next->prev = &round;
    round.prev->next = &round;
    r->tasks.next = &r->tasks;
    r->tasks.prev = &r->tasks;

    int n = 0;
    while (!task_list_empty(&round)) {
        et_task *t = round.next;
        task_unlink(t);
        t->fn(r, t);
        n++;
    }
    return n;
}

/* ---- reactor lifetime ---------------------------------------------------------------------- */

static void wake_on_event(et_reactor *r, et_io *io, uint32_t events);

static size_t round_pow2(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

int et_reactor_new(et_reactor **out, uint32_t size_hint, uint32_t inbox_cap)
{
    ET_ENSURE(out != NULL, ET_E_USAGE);
    *out = NULL;
    ET_ENSURE(size_hint <= ET_REACTOR_EVENTS_MAX, ET_E_USAGE);
    ET_ENSURE(inbox_cap <= ET_REACTOR_INBOX_MAX, ET_E_USAGE);
    if (size_hint == 0)
        size_hint = ET_REACTOR_EVENTS_DEFAULT;
    size_t cap = round_pow2(inbox_cap == 0 ? ET_REACTOR_INBOX_DEFAULT : inbox_cap);

    int rv = ET_E_NOMEM;
    et_reactor *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return ET_RAISE(ET_E_NOMEM);
    r->epfd = -1;
    r->wakefd = -1;
    r->tasks.next = &r->tasks;
    r->tasks.prev = &r->tasks;
    atomic_init(&r->running, false);
    atomic_init(&r->stop, false);
    atomic_init(&r->enq_pos, 0);
    atomic_init(&r->wake_pending, false);

    r->nevents = (int)size_hint;
    r->events = calloc(size_hint, sizeof(*r->events));
    r->slots = calloc(cap, sizeof(*r->slots));
    if (r->events == NULL || r->slots == NULL) {
        rv = ET_RAISE(ET_E_NOMEM);
        goto err;
    }
    for (size_t i = 0; i < cap; i++)
        atomic_init(&r->slots[i].seq, i);
    r->inbox_mask = cap - 1;

    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epfd < 0) {
        rv = IO_ERROR();
        goto err;
    }
    r->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wakefd < 0) {
        rv = IO_ERROR();
        goto err;
    }
    et_io_init(&r->wake_io, wake_on_event);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = &r->wake_io};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wakefd, &ev) != 0) {
        rv = IO_ERROR();
        goto err;
    }
    r->wake_io.fd = r->wakefd;
    r->wake_io.reactor = r;
    r->now_ns = et_now_ns();
    *out = r;
    return ET_OK;

err:;
    int saved = errno;
    et_reactor_free(r);
    errno = saved;
    return rv;
}

void et_reactor_free(et_reactor *r)
{
    if (r == NULL)
        return;
    assert(tl_current != r);
    if (r->thread_started) {
        et_reactor_stop(r);
        int rv = et_reactor_join(r);
        (void)rv;
    }
    /* Leave the caller's timers and tasks in their zero state, so cancelling them later is a
     * no-op rather than a write into freed memory. */
    for (uint32_t i = 0; i < r->heap_len; i++)
        r->heap[i].t->heap_index = 0;
    while (!task_list_empty(&r->tasks))
        task_unlink(r->tasks.next);
    if (r->wakefd >= 0)
        close(r->wakefd);
    if (r->epfd >= 0)
        close(r->epfd);
    free(r->heap);
    free(r->slots);
    free(r->events);
    free(r);
}

void et_reactor_set_before_sleep(et_reactor *r, et_hook_fn fn, void *arg)
{
    assert(on_owner(r));
    r->before_sleep = fn;
    r->before_sleep_arg = arg;
}

/* ---- I/O ----------------------------------------------------------------------------------- */

static void io_resume_task(et_reactor *r, et_task *t)
{
    et_io *io = ET_CONTAINER_OF(t, et_io, resume);
    uint32_t events = io->resume_events;
    io->resume_events = 0;
    io->on_event(r, io, events);
}

void et_io_init(et_io *io, et_io_fn fn)
{
    memset(io, 0, sizeof(*io));
    io->on_event = fn;
    io->fd = -1;
}

int et_reactor_add(et_reactor *r, int fd, et_io *io)
{
    ET_ENSURE(r != NULL && io != NULL && io->on_event != NULL, ET_E_USAGE);
    ET_ENSURE(io->reactor == NULL, ET_E_USAGE);
    assert(on_owner(r));
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.ptr = io,
    };
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return IO_ERROR();
    io->fd = fd;
    io->reactor = r;
    io->resume_events = 0;
    et_task_init(&io->resume, io_resume_task);
    return ET_OK;
}

int et_reactor_watch(et_reactor *r, int fd, et_io *io, uint32_t events)
{
    ET_ENSURE(r != NULL && io != NULL && io->on_event != NULL, ET_E_USAGE);
    io->fd = fd;
    /* epoll_ctl(ADD) publishes |io| to the thread that gets it from epoll_wait (the kernel
     * orders them; ThreadSanitizer models it as release / acquire on the epoll fd). */
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return IO_ERROR();
    return ET_OK;
}

void et_reactor_unwatch(et_reactor *r, int fd)
{
    struct epoll_event ev = {0};
    (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, &ev);
}

void et_reactor_del(et_reactor *r, et_io *io)
{
    if (io == NULL || io->reactor == NULL)
        return;
    assert(io->reactor == r && io != &r->wake_io);
    assert(on_owner(r));
    /* Fails with EBADF when the fd was closed first (the kernel already forgot it), or ENOENT;
     * either way it is no longer registered. The event argument is for pre-2.6.9 kernels. */
    struct epoll_event ev = {0};
    (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, io->fd, &ev);
    /* The batch being dispatched may still name |io|; its owner may free it as soon as we
     * return, so forget those entries (libuv does the same in uv__platform_invalidate_fd). */
    for (int i = 0; i < r->batch_len; i++) {
        if (r->events[i].data.ptr == io)
            r->events[i].data.ptr = NULL;
    }
    et_task_cancel(r, &io->resume);
    io->resume_events = 0;
    io->reactor = NULL;
}

void et_io_resume(et_reactor *r, et_io *io, uint32_t events)
{
    assert(io->reactor == r);
    io->resume_events |= events;
    et_reactor_defer(r, &io->resume);
}

/* ---- timers: binary min-heap ordered by (deadline, seq) ------------------------------------ */

static bool ent_less(const timer_ent *a, const timer_ent *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_put(et_reactor *r, uint32_t i, timer_ent e)
{
    r->heap[i] = e;
    e.t->heap_index = i + 1;
}

static void heap_sift_up(et_reactor *r, uint32_t i)
{
    timer_ent e = r->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!ent_less(&e, &r->heap[parent]))
            break;
        heap_put(r, i, r->heap[parent]);
        i = parent;
    }
    heap_put(r, i, e);
}

static void heap_sift_down(et_reactor *r, uint32_t i)
{
    timer_ent e = r->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= r->heap_len)
            break;
        if (child + 1 < r->heap_len && ent_less(&r->heap[child + 1], &r->heap[child]))
            child++;
        if (!ent_less(&r->heap[child], &e))
            break;
        heap_put(r, i, r->heap[child]);
        i = child;
    }
    heap_put(r, i, e);
}

/* heap_fix restores the order around slot |i| after its entry changed in either direction. */
static void heap_fix(et_reactor *r, uint32_t i)
{
    if (i > 0 && ent_less(&r->heap[i], &r->heap[(i - 1) / 2]))
        heap_sift_up(r, i);
    else
        heap_sift_down(r, i);
}

static void heap_remove(et_reactor *r, uint32_t i)
{
    et_timer *t = r->heap[i].t;
    r->heap_len--;
    if (i != r->heap_len) {
        r->heap[i] = r->heap[r->heap_len];
        heap_fix(r, i);
    }
    t->heap_index = 0;
}

/* timer_slot returns the heap slot of |t| on |r|, or -1 when |t| is not armed there. */
static int64_t timer_slot(const et_reactor *r, const et_timer *t)
{
    uint32_t idx = t->heap_index;
    if (idx == 0 || idx > r->heap_len || r->heap[idx - 1].t != t)
        return -1;
    return (int64_t)idx - 1;
}

void et_timer_init(et_timer *t, et_timer_fn fn)
{
    memset(t, 0, sizeof(*t));
    t->fn = fn;
}

bool et_timer_armed(const et_timer *t)
{
    return t != NULL && t->heap_index != 0;
}

size_t et_reactor_timers(const et_reactor *r)
{
    return r->heap_len;
}

int et_timer_arm(et_reactor *r, et_timer *t, uint64_t deadline_ns)
{
    ET_ENSURE(r != NULL && t != NULL && t->fn != NULL, ET_E_USAGE);
    assert(on_owner(r));
    timer_ent e = {.deadline = deadline_ns, .seq = r->timer_seq, .t = t};
    int64_t slot = timer_slot(r, t);
    if (slot >= 0) {
        r->timer_seq++;
        t->deadline_ns = deadline_ns;
        r->heap[slot] = e;
        heap_fix(r, (uint32_t)slot);
        return ET_OK;
    }
    ET_ENSURE(t->heap_index == 0, ET_E_USAGE);
    if (r->heap_len == r->heap_cap) {
        ET_ENSURE(r->heap_cap <= UINT32_MAX / 2, ET_E_NOMEM);
        uint32_t cap = r->heap_cap == 0 ? 64 : r->heap_cap * 2;
        timer_ent *h = realloc(r->heap, (size_t)cap * sizeof(*h));
        if (h == NULL)
            return ET_RAISE(ET_E_NOMEM);
        r->heap = h;
        r->heap_cap = cap;
    }
    r->timer_seq++;
    t->deadline_ns = deadline_ns;
    r->heap[r->heap_len] = e;
    r->heap_len++;
    heap_sift_up(r, r->heap_len - 1);
    return ET_OK;
}

void et_timer_cancel(et_reactor *r, et_timer *t)
{
    if (t == NULL || t->heap_index == 0)
        return;
    assert(on_owner(r));
    int64_t slot = timer_slot(r, t);
    assert(slot >= 0); /* armed on another reactor */
    if (slot >= 0)
        heap_remove(r, (uint32_t)slot);
}

/* run_timers fires the timers due at the cached time that were armed before it started (step
 * 6), nearest first; returns how many fired. A timer armed by a callback, even one already due,
 * waits for the next iteration, so a callback re-arming itself in the past cannot spin here. */
static int run_timers(et_reactor *r)
{
    uint64_t now = r->now_ns;
    uint64_t limit = r->timer_seq;
    int n = 0;
    while (r->heap_len > 0) {
        timer_ent top = r->heap[0];
        if (top.deadline > now || top.seq >= limit)
            break;
        heap_remove(r, 0);
        top.t->fn(r, top.t);
        n++;
    }
    return n;
}

/* ---- inbox: bounded MPSC ring with per-slot sequence numbers, plus an eventfd -------------- */

/* The wake-up protocol. A producer publishes its slot and then sets |wake_pending|, writing the
 * eventfd only if the flag was clear. The reactor reads the eventfd, clears the flag, then
 * drains. Both sides use seq_cst for the publish/flag/first-read so the orders cannot cross: a
 * producer that saw the flag still set published before the reactor cleared it, so the drain
 * after the clear sees its message. At most one eventfd write per reactor wake-up. */
static void wake(et_reactor *r)
{
    if (atomic_exchange_explicit(&r->wake_pending, true, memory_order_seq_cst))
        return;
    uint64_t one = 1;
    ssize_t w;
    do {
        w = write(r->wakefd, &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
    /* EAGAIN would mean the counter is near 2^64: the reactor is woken already. */
}

static void wake_on_event(et_reactor *r, et_io *io, uint32_t events)
{
    uint64_t v;
    ssize_t n;
    do {
        n = read(r->wakefd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
    /* Reset the counter before clearing the flag: the other order could swallow the write of a
     * producer that saw the flag clear, leaving the flag set with no wake-up on the way. */
    atomic_store_explicit(&r->wake_pending, false, memory_order_seq_cst);
    r->inbox_check = true;
}

int et_reactor_post(et_reactor *r, et_msg_fn fn, void *arg)
{
    ET_ENSURE(r != NULL && fn != NULL, ET_E_USAGE);
    size_t pos = atomic_load_explicit(&r->enq_pos, memory_order_relaxed);
    inbox_slot *s;
    for (;;) {
        s = &r->slots[pos & r->inbox_mask];
        size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        intptr_t diff = (intptr_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->enq_pos, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed))
                break;
            /* |pos| now holds the current ticket; try again. */
        } else if (diff < 0) {
            /* The slot still holds a message from the previous lap: full. */
            return ET_E_LIMIT;
        } else {
            pos = atomic_load_explicit(&r->enq_pos, memory_order_relaxed);
        }
    }
    s->fn = fn;
    s->arg = arg;
    atomic_store_explicit(&s->seq, pos + 1, memory_order_seq_cst);
    if (tl_current == r)
        r->inbox_check = true; /* posted to ourselves: no eventfd round trip needed */
    else
        wake(r);
    return ET_OK;
}

/* inbox_pop takes the next message, if its producer has published it. */
static bool inbox_pop(et_reactor *r, et_msg_fn *fn, void **arg)
{
    size_t pos = r->deq_pos;
    inbox_slot *s = &r->slots[pos & r->inbox_mask];
    size_t seq = atomic_load_explicit(&s->seq, memory_order_seq_cst);
    if (seq != pos + 1)
        return false; /* empty, or the next ticket's producer has not published yet */
    *fn = s->fn;
    *arg = s->arg;
    atomic_store_explicit(&s->seq, pos + r->inbox_mask + 1, memory_order_release);
    r->deq_pos = pos + 1;
    return true;
}

/* run_inbox runs at most one inbox-full of messages (step 5), so producers refilling it cannot
 * keep the reactor from its fds and timers; returns how many ran. */
static int run_inbox(et_reactor *r)
{
    if (!r->inbox_check)
        return 0;
    r->inbox_check = false;
    size_t budget = r->inbox_mask + 1;
    int n = 0;
    et_msg_fn fn;
    void *arg;
    while (budget > 0 && inbox_pop(r, &fn, &arg)) {
        fn(r, arg);
        budget--;
        n++;
    }
    if (budget == 0)
        r->inbox_check = true; /* maybe more: look again next iteration without sleeping */
    return n;
}

void et_reactor_stop(et_reactor *r)
{
    if (r == NULL)
        return;
    atomic_store_explicit(&r->stop, true, memory_order_seq_cst);
    if (tl_current != r)
        wake(r); /* from its own callback the loop checks the flag before sleeping again */
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* poll_timeout returns the epoll_wait timeout in ms: |cap_ms| (-1: none) shortened to the
 * nearest deadline, rounded up so a timer is never woken for early, or 0 when work is waiting. */
static int poll_timeout(et_reactor *r, int cap_ms)
{
    if (!task_list_empty(&r->tasks) || r->inbox_check)
        return 0;
    if (r->heap_len == 0)
        return cap_ms;
    uint64_t now = et_now_ns();
    uint64_t deadline = r->heap[0].deadline;
    if (deadline <= now)
        return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    if (ms > INT_MAX)
        ms = INT_MAX;
    if (cap_ms >= 0 && (uint64_t)cap_ms < ms)
        return cap_ms;
    return (int)ms;
}

static int iterate(et_reactor *r, int timeout_ms)
{
    if (r->before_sleep != NULL)
        r->before_sleep(r, r->before_sleep_arg);

    int nev = epoll_wait(r->epfd, r->events, r->nevents, poll_timeout(r, timeout_ms));
    if (nev < 0) {
        if (errno != EINTR)
            return IO_ERROR();
        nev = 0;
    }
    r->now_ns = et_now_ns();

    int n = 0;
    r->batch_len = nev;
    for (int i = 0; i < nev; i++) {
        et_io *io = r->events[i].data.ptr;
        if (io == NULL)
            continue; /* deleted by an earlier handler of this batch */
        io->on_event(r, io, r->events[i].events);
        if (io != &r->wake_io)
            n++;
    }
    r->batch_len = 0;

    n += run_inbox(r);
    n += run_timers(r);
    n += run_tasks(r);
    return n;
}

/* loop_enter claims |r| for the calling thread; returns 0 or ET_E_USAGE. */
static int loop_enter(et_reactor *r)
{
    ET_ENSURE(r != NULL, ET_E_USAGE);
    ET_ENSURE(tl_current == NULL && !r->in_loop, ET_E_USAGE);
    tl_current = r;
    r->in_loop = true;
    atomic_store_explicit(&r->running, true, memory_order_relaxed);
    return ET_OK;
}

static void loop_leave(et_reactor *r)
{
    atomic_store_explicit(&r->running, false, memory_order_relaxed);
    r->in_loop = false;
    tl_current = NULL;
}

int et_reactor_run(et_reactor *r)
{
    ET_GUARD(loop_enter(r));
    int rv = ET_OK;
    while (!atomic_exchange_explicit(&r->stop, false, memory_order_seq_cst)) {
        rv = iterate(r, -1);
        if (rv < 0)
            break;
        rv = ET_OK;
    }
    loop_leave(r);
    return rv;
}

int et_reactor_run_once(et_reactor *r, int timeout_ms)
{
    ET_GUARD(loop_enter(r));
    int rv = iterate(r, timeout_ms < 0 ? -1 : timeout_ms);
    loop_leave(r);
    return rv;
}

/* ---- thread helper ------------------------------------------------------------------------- */

static void *reactor_thread(void *arg)
{
    et_reactor *r = arg;
    r->thread_rv = et_reactor_run(r);
    return NULL;
}

int et_reactor_start_thread(et_reactor *r)
{
    ET_ENSURE(r != NULL && !r->thread_started, ET_E_USAGE);
    int e = pthread_create(&r->thread, NULL, reactor_thread, r);
    if (e != 0) {
        errno = e;
        return IO_ERROR();
    }
    r->thread_started = true;
    return ET_OK;
}

int et_reactor_join(et_reactor *r)
{
    ET_ENSURE(r != NULL && r->thread_started, ET_E_USAGE);
    ET_ENSURE(tl_current != r, ET_E_USAGE);
    int e = pthread_join(r->thread, NULL);
    if (e != 0) {
        errno = e;
        return IO_ERROR();
    }
    r->thread_started = false;
    return r->thread_rv;
}
