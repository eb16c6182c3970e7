/* reactor.h: one event loop per thread: edge-triggered epoll, one-shot timers, deferred tasks and
 * a bounded cross-thread inbox.
 *
 * The reactor knows nothing of tunnels, TLS or frames. Its clients embed small structs in their
 * own objects (et_io for a file descriptor, et_timer for a deadline, et_task for deferred work)
 * and get them back in callbacks; ET_CONTAINER_OF recovers the enclosing object. The reactor
 * never allocates per fd, per timer or per task, and never takes ownership of those structs.
 *
 * Threads. A reactor belongs to the thread that runs it. Everything here except et_reactor_post,
 * et_reactor_stop, et_now_ns and et_reactor_current must be called on that thread (or, before the
 * reactor first runs, on the thread that created it). et_reactor_current tells code which reactor
 * it runs on, so it can assert ownership.
 *
 * One loop iteration (et_reactor_run repeats it, et_reactor_run_once does it once):
 *
 *   1. the before-sleep hook;
 *   2. epoll_wait, for no longer than the nearest timer deadline (not at all when tasks are
 *      queued or the inbox has more work); et_reactor_post and et_reactor_stop wake it;
 *   3. the cached time (et_reactor_now) is refreshed;
 *   4. I/O handlers for every reported fd; the inbox wake-up is one of them;
 *   5. inbox messages, at most the inbox capacity per iteration;
 *   6. timers whose deadline has passed, nearest first, among those armed before step 6 began;
 *   7. tasks deferred before step 7 began, in the order they were deferred.
 *
 * Work queued while a step runs never runs in that same step (a timer armed from a timer
 * callback, a task deferred from a task), so one iteration always ends. Close is deferred: a
 * connection closed from inside its own handler calls et_reactor_del, then defers the task that
 * frees it, and the free happens in step 7, after the handler has returned. */
#ifndef ET_REACTOR_H
#define ET_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "et/result.h"

/* ET_CONTAINER_OF returns the |type| object whose |member| is at |ptr|. */
#ifndef ET_CONTAINER_OF
#define ET_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#endif

/* Default and largest number of epoll events handled per epoll_wait. */
#define ET_REACTOR_EVENTS_DEFAULT 256u
#define ET_REACTOR_EVENTS_MAX     4096u
/* Default and largest inbox capacity (messages); a capacity is rounded up to a power of two. */
#define ET_REACTOR_INBOX_DEFAULT 4096u
#define ET_REACTOR_INBOX_MAX     (1u << 20)

typedef struct et_reactor et_reactor;
typedef struct et_io et_io;
typedef struct et_timer et_timer;
typedef struct et_task et_task;

/* et_io_fn handles readiness of |io|. |events| is the epoll mask the kernel reported (EPOLLIN,
 * EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR) or the mask given to et_io_resume. Readiness is
 * edge-triggered: the handler reads and writes until EAGAIN, or remembers that it stopped early
 * and calls et_io_resume. The handler may et_reactor_del |io| (and any other io), but must not
 * free the memory of |io| before it returns: defer that with et_reactor_defer. */
typedef void (*et_io_fn)(et_reactor *r, et_io *io, uint32_t events);

/* et_timer_fn runs when |t| expires. |t| is disarmed before the call, so the callback may re-arm
 * it, arm others, or free the object that holds it. */
typedef void (*et_timer_fn)(et_reactor *r, et_timer *t);

/* et_task_fn runs a deferred task. |t| is unqueued before the call, so the callback may defer it
 * again (it then runs in the next iteration) or free the object that holds it. */
typedef void (*et_task_fn)(et_reactor *r, et_task *t);

/* et_msg_fn runs an inbox message on the target reactor's thread. The reactor does not own
 * |arg|: the message does, and whatever it owns is for |fn| to release. */
typedef void (*et_msg_fn)(et_reactor *r, void *arg);

/* et_hook_fn is the before-sleep hook (flush output queues, batch writes). */
typedef void (*et_hook_fn)(et_reactor *r, void *arg);

/* A deferred task, embedded in the caller's object. All zero is a valid, unqueued task whose
 * |fn| is not set yet. Only |fn| is for the caller to touch. */
struct et_task {
    et_task_fn fn;
    et_task *prev; /* not owned; NULL when not queued */
    et_task *next; /* not owned; NULL when not queued */
};

/* A registered file descriptor, embedded in the caller's object (a connection). All zero is a
 * valid, unregistered io. |on_event| is for the caller to set; |fd| may be read. */
struct et_io {
    et_io_fn on_event;
    int fd;                 /* the fd given to et_reactor_add; not owned, never closed here */
    uint32_t resume_events; /* events for the pending et_io_resume */
    et_reactor *reactor;    /* not owned; NULL when not registered */
    et_task resume;         /* queued by et_io_resume */
};

/* A one-shot timer, embedded in the caller's object. All zero is a valid, disarmed timer whose
 * |fn| is not set yet. |fn| is for the caller to set; |deadline_ns| may be read. */
struct et_timer {
    et_timer_fn fn;
    uint64_t deadline_ns; /* of the last et_timer_arm */
    uint32_t heap_index;  /* 1-based slot in the reactor's heap; 0 when disarmed */
};

/* et_now_ns returns the CLOCK_MONOTONIC time in nanoseconds. Any thread. */
uint64_t et_now_ns(void);

/* et_reactor_new creates a reactor and stores it in |*out|; returns 0, ET_E_NOMEM, ET_E_IO
 * (epoll or eventfd failed, errno kept) or ET_E_USAGE (|out| NULL). The caller owns the reactor
 * and frees it with et_reactor_free. |size_hint| is the number of epoll events handled per
 * wait (0 for ET_REACTOR_EVENTS_DEFAULT, at most ET_REACTOR_EVENTS_MAX), |inbox_cap| the number
 * of inbox messages that can wait (0 for ET_REACTOR_INBOX_DEFAULT, rounded up to a power of two,
 * at most ET_REACTOR_INBOX_MAX). On failure |*out| is NULL. */
ET_MUST_USE int et_reactor_new(et_reactor **out, uint32_t size_hint, uint32_t inbox_cap);

/* et_reactor_free stops and joins the reactor's thread if et_reactor_start_thread started one,
 * then frees |r|; NULL does nothing. Armed timers are disarmed and queued tasks unqueued (so a
 * later cancel of them is a no-op); messages still in the inbox are dropped without running
 * (stop the producers and call et_reactor_run_once first to deliver them). Every io must have
 * been removed with et_reactor_del before: the reactor does not list them. Must not be called
 * from one of |r|'s own callbacks. */
void et_reactor_free(et_reactor *r);

/* et_io_init sets |io| to the unregistered state with handler |fn|. */
void et_io_init(et_io *io, et_io_fn fn);

/* et_reactor_add registers |fd| on |r| for |io| (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, once,
 * never modified) and returns 0, ET_E_IO (epoll_ctl failed, errno kept) or ET_E_USAGE (|io| has
 * no handler or is already registered). Does not take ownership of |fd| or |io|; |io| must stay
 * valid until et_reactor_del. The first event usually arrives at once (a socket is writable). */
ET_MUST_USE int et_reactor_add(et_reactor *r, int fd, et_io *io);

/* et_reactor_del unregisters |io| from |r|; NULL or an unregistered io does nothing. Events of
 * |io| already fetched in the current iteration are dropped and a pending et_io_resume is
 * cancelled, so once it returns the reactor will not touch |io| again. Call it before closing
 * the fd; it does not close it. */
void et_reactor_del(et_reactor *r, et_io *io);

/* et_reactor_watch registers |fd| on |r| for |io| with |events| | EPOLLET, from ANY thread (the
 * one exception to the ownership rule: epoll_ctl is thread-safe). |io|'s handler then runs on
 * |r|'s thread. For a thread that must hear about another thread's socket at once (a reset seen
 * by an idle control thread while the owner is busy). The watcher does not own |fd| and is not a
 * regular registration: do not pass |io| to et_reactor_del or et_io_resume. Returns 0, ET_E_IO
 * (errno kept) or ET_E_USAGE. */
ET_MUST_USE int et_reactor_watch(et_reactor *r, int fd, et_io *io, uint32_t events);

/* et_reactor_unwatch removes the watch on |fd| from |r|, from any thread, before |fd| is closed.
 * Events already fetched by |r| may still run |io|'s handler: free |io| only from a message
 * posted to |r| after this call (it runs after any handler of that batch). */
void et_reactor_unwatch(et_reactor *r, int fd);

/* et_io_resume makes |r| call |io|'s handler with |events| after the current dispatch round (in
 * step 7), as if the kernel had reported them again; returns nothing. For a handler that
 * stopped reading or writing early on purpose and will get no new edge. Resumes not yet run are
 * merged (their masks or-ed). |io| must be registered on |r|. */
void et_io_resume(et_reactor *r, et_io *io, uint32_t events);

/* et_timer_init sets |t| to the disarmed state with callback |fn|. */
void et_timer_init(et_timer *t, et_timer_fn fn);

/* et_timer_arm arms |t| on |r| to fire once at |deadline_ns| (et_now_ns clock; a deadline in the
 * past fires in the next timer step, step 6); re-arming an armed timer moves it. Returns 0,
 * ET_E_NOMEM (the heap could not grow; |t| keeps its previous state) or ET_E_USAGE (|t| has no
 * callback or is armed on another reactor). Does not take ownership of |t|, which must stay valid
 * while armed. Timers with equal deadlines fire in the order they were armed. O(log n). */
ET_MUST_USE int et_timer_arm(et_reactor *r, et_timer *t, uint64_t deadline_ns);

/* et_timer_cancel disarms |t|; NULL or a disarmed timer does nothing. O(log n). */
void et_timer_cancel(et_reactor *r, et_timer *t);

/* et_timer_armed returns whether |t| is armed (false for NULL). */
bool et_timer_armed(const et_timer *t);

/* et_reactor_timers returns the number of timers armed on |r|. */
size_t et_reactor_timers(const et_reactor *r);

/* et_task_init sets |t| to the unqueued state with callback |fn|. */
void et_task_init(et_task *t, et_task_fn fn);

/* et_reactor_defer queues |t| to run on |r| after the current dispatch round (step 7 of this
 * iteration, or of the next one when called from a task); a queued task stays queued once.
 * Does not take ownership of |t|, which must stay valid while queued. */
void et_reactor_defer(et_reactor *r, et_task *t);

/* et_task_cancel unqueues |t| from |r|; NULL or an unqueued task does nothing. */
void et_task_cancel(et_reactor *r, et_task *t);

/* et_task_queued returns whether |t| is queued (false for NULL). */
bool et_task_queued(const et_task *t);

/* et_reactor_post queues |fn|(|arg|) to run on |r|'s thread and wakes it; returns 0,
 * ET_E_LIMIT (the inbox is full: nothing was queued, retry later or drop) or ET_E_USAGE. Any
 * thread, never blocks, lock-free; at most one eventfd write per wake-up of |r|, none when
 * posting from |r|'s own thread. Messages from one thread run in the order they were posted.
 * On success the message owns |arg| until |fn| runs; on failure the caller keeps it. */
ET_MUST_USE int et_reactor_post(et_reactor *r, et_msg_fn fn, void *arg);

/* et_reactor_stop asks |r| to return from et_reactor_run after the current iteration; any
 * thread. A stop requested while the reactor is not running makes the next et_reactor_run
 * return after at most one iteration. NULL does nothing. */
void et_reactor_stop(et_reactor *r);

/* et_reactor_set_before_sleep installs |fn|(|r|, |arg|) to run before every epoll_wait (step 1),
 * NULL to remove it. Does not take ownership of |arg|. */
void et_reactor_set_before_sleep(et_reactor *r, et_hook_fn fn, void *arg);

/* et_reactor_run runs iterations on the calling thread until et_reactor_stop; returns 0 when
 * stopped, ET_E_IO if epoll_wait failed (errno kept) or ET_E_USAGE when called while this thread
 * already runs a reactor. */
ET_MUST_USE int et_reactor_run(et_reactor *r);

/* et_reactor_run_once runs one iteration, waiting in epoll_wait at most |timeout_ms| (-1: until
 * something happens; 0: not at all) and never past the nearest timer; returns the number of
 * callbacks it ran (handlers, messages, timers, tasks), ET_E_IO or ET_E_USAGE as et_reactor_run.
 * It does not look at stop requests. */
ET_MUST_USE int et_reactor_run_once(et_reactor *r, int timeout_ms);

/* et_reactor_now returns the time cached at the start of the current iteration (et_now_ns
 * clock), cheaper than et_now_ns and the same for every callback of one iteration. */
uint64_t et_reactor_now(const et_reactor *r);

/* et_reactor_start_thread runs et_reactor_run(|r|) on a new thread; returns 0, ET_E_IO
 * (pthread_create failed, errno set) or ET_E_USAGE (a thread is already started). After it
 * returns, only that thread may use |r| (except the any-thread functions). */
ET_MUST_USE int et_reactor_start_thread(et_reactor *r);

/* et_reactor_join waits for the thread of et_reactor_start_thread to end (stop it first with
 * et_reactor_stop) and returns what its et_reactor_run returned, ET_E_IO (pthread_join failed)
 * or ET_E_USAGE (no thread started). */
ET_MUST_USE int et_reactor_join(et_reactor *r);

/* et_reactor_current returns the reactor running on the calling thread (inside et_reactor_run or
 * et_reactor_run_once), or NULL. Not owned. */
et_reactor *et_reactor_current(void);

#endif
