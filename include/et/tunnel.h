/* tunnel.h: the engine shared by edged and originctl: workers (one reactor thread each), tunnel
 * sockets (TLS + frames), streams (one local TCP connection each), flow control and cancel.
 *
 * Ownership across threads. A tunnel socket (et_tsock) and every stream carried on it belong to
 * one data worker: only that worker's thread touches them, with no lock. Control sockets belong
 * to a dedicated control worker that carries no data, so it is idle and wakes at once. Work that
 * crosses workers goes through the target's inbox (et_reactor_post): a public connection handed
 * to the worker of the data socket chosen for it, a CANCEL a data worker wants sent.
 *
 * The registry (engine-wide, under one mutex that the data path never takes) maps every live
 * stream and every recent cancel to its stream; it is touched when a stream opens, closes or is
 * cancelled. Each session also lists its registered streams (et_session.reg_streams, under
 * the same mutex), so that a CHANNEL cancel walks the sender's streams only. The control worker
 * also watches every stream's local socket for a reset (et_reactor_watch), so a public client that
 * goes away is turned into a CANCEL on the control socket without waiting for the stream's busy
 * data worker, and a CANCEL that arrives resets the local connection from the control worker at
 * once (connect(AF_UNSPEC) sends the RST without closing the fd the data worker still owns); the
 * data worker then cleans up.
 *
 * The cancel path (spec/protocol.md §7.3, §8): a stream keeps no queue of outgoing DATA: it reads
 * from its local socket straight into the record being built when its tunnel socket can take
 * more, so the kernel's buffers are the only queue and a cancel never waits behind our own. A
 * record is at most 16 KiB and control frames go first in every record. */
#ifndef ET_TUNNEL_H
#define ET_TUNNEL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/base.h>

#include "et/frame.h"
#include "et/reactor.h"
#include "et/result.h"
#include "et/tls.h"

#define ET_RECORD_MAX     16384u /* plaintext bytes per SSL_write: one TLS record */
#define ET_REC_BATCH      4u     /* records one stream may fill with one read of its local socket */
#define ET_GATHER_MAX     8u     /* DATA frames of one stream written to its local socket at once */
#define ET_CTRL_QUEUE_MAX (1u << 20) /* queued control bytes before a socket is dropped */
#define ET_TOMBSTONE_NS   (10ull * 1000000000ull)
#define ET_HANDSHAKE_NS   (10ull * 1000000000ull)
#define ET_DATA_LOWAT     32768u /* TCP_NOTSENT_LOWAT on data sockets */
#define ET_MAX_DATA_SOCKS 16
#define ET_MAX_WORKERS    64

typedef enum et_side {
    ET_SIDE_EDGE = 1,
    ET_SIDE_ORIGIN = 2,
} et_side;

/* --- counters --------------------------------------------------------------------------- */

/* Error reasons are counted by wire error code; et_stat_slot maps a code to its slot. */
#define ET_STAT_REASONS 64
unsigned et_stat_slot(uint16_t wire_code);

#define ET_CANCEL_BUCKETS    14
#define ET_HTTP_STATUS_SLOTS 9
#define ET_HS_SLOT_NO_ANSWER 5 /* a HEALTH probe the origin did not answer in time */
#define ET_HS_SLOTS          6

typedef struct et_stats {
    _Atomic uint64_t sockets_up, sockets_down;
    _Atomic uint64_t streams_opened, streams_finished, streams_cancelled;
    _Atomic uint64_t bytes_to_peer, bytes_from_peer;
    _Atomic uint64_t cancels_sent_control, cancels_sent_data;
    _Atomic uint64_t cancels_recv_control, cancels_recv_data;
    _Atomic uint64_t cancel_acks, late_frames_dropped, opens_refused_tombstone;
    _Atomic uint64_t public_refused, inbox_full;
    _Atomic uint64_t limit_streams;         /* streams refused: the session's --max-streams */
    _Atomic uint64_t limit_client_conns;    /* public connections refused: --max-client-conns */
    _Atomic uint64_t limit_tunnels;         /* sessions refused: --max-tunnels */
    _Atomic uint64_t rate_limited;          /* public connections refused: the tunnel's rate */
    _Atomic uint64_t idle_closed;           /* streams ended by --idle-timeout */
    _Atomic uint64_t route_waits;           /* edge: requests held for a session (route wait) */
    _Atomic uint64_t record_overtakes;      /* records sent ahead of built DATA (tsock.c) */
    _Atomic uint64_t window_grows;          /* receive windows doubled (stream.c, spec §7.2) */
    _Atomic uint64_t window_shrinks;        /* grown windows halved: the local reader fell behind */
    _Atomic uint64_t window_extra;          /* gauge: bytes granted beyond the initial windows */
    _Atomic uint64_t flush_yields;          /* flushes cut at FLUSH_BUDGET, resumed later */
    _Atomic uint64_t control_demotions;     /* the control worker left SCHED_FIFO: CPU budget */
    _Atomic uint64_t control_realtime;      /* gauge: 1 while the control worker is SCHED_FIFO */
    _Atomic uint64_t handshake_refused_tls; /* TLS itself failed (not a wire error code) */
    _Atomic uint64_t handshake_refused[ET_STAT_REASONS];
    _Atomic uint64_t frame_errors[ET_STAT_REASONS];
    /* Cancel delivery: CANCEL sent to its CANCEL_ACK back, as seen by the canceller (the ack
     * echoes our clock). Per-bucket counts (not cumulative), bounds in et_cancel_bucket_us. */
    _Atomic uint64_t cancel_rtt_buckets[ET_CANCEL_BUCKETS + 1]; /* the last one: +Inf */
    _Atomic uint64_t cancel_rtt_sum_ns;
    /* Edge, public HTTP: answers edged gave itself, by status (et_http_status_slot). */
    _Atomic uint64_t http_answers[ET_HTTP_STATUS_SLOTS];
    /* Admin: HEALTH probes by outcome (et_health_status, then ET_HS_SLOT_NO_ANSWER) and PUSH. */
    _Atomic uint64_t health_probes[ET_HS_SLOTS];
    _Atomic uint64_t push_sent, push_dropped, push_received;
} et_stats;

/* et_cancel_bucket_us returns the upper bound (microseconds) of cancel-delivery bucket |i| <
 * ET_CANCEL_BUCKETS. */
uint64_t et_cancel_bucket_us(unsigned i);

/* et_stats_cancel_rtt records one cancel delivery round trip of |ns| in |s|. */
void et_stats_cancel_rtt(et_stats *s, uint64_t ns);

/* et_http_status_slot maps an HTTP status edged answers (400, 404, 408, 429, 431, 502, 503, 504) to
 * its slot in et_stats.http_answers; any other status gets the last slot. et_http_slot_status
 * is the inverse (0 for the last slot). */
unsigned et_http_status_slot(int status);
int et_http_slot_status(unsigned slot);

#define ET_COUNT(field)      atomic_fetch_add_explicit(&(field), 1, memory_order_relaxed)
#define ET_COUNT_N(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)

/* --- engine ----------------------------------------------------------------------------- */

typedef struct et_engine et_engine;
typedef struct et_worker et_worker;
typedef struct et_strbuf et_strbuf;
typedef struct et_tsock et_tsock;
typedef struct et_stream et_stream;
typedef struct et_session et_session;
typedef struct et_stream_table et_stream_table;

/* et_metrics_write appends the counters of |eng| shared by both sides, in the Prometheus text
 * format (names edgetunnel_*), to |b|. Reads atomics only; any thread. */
void et_metrics_write(et_engine *eng, et_strbuf *b);

/* Side-specific behaviour, installed by edge.c or origin.c. */
typedef struct et_side_ops {
    /* A frame arrived on |ts| before its handshake completed (HELLO at the edge, WELCOME or
     * ERROR at the origin). Returns ET_OK or an error; ET_E_PROTO(code) refuses the socket
     * with an ERROR frame naming |code|. */
    int (*on_handshake_frame)(et_tsock *ts, const et_frame *f, const et_msg *m);
    /* OPEN arrived (origin). Returns ET_OK or ET_E_PROTO(code) for a connection error. */
    int (*on_open)(et_tsock *ts, const et_frame *f, const et_open *o);
    /* |ts| is closing: called once, on its worker, before its streams are failed. */
    void (*on_tsock_closed)(et_tsock *ts);
    /* The TLS handshake of |ts| completed (origin: send HELLO). Returns ET_OK or an error. */
    int (*on_tls_done)(et_tsock *ts);
    /* The peer sent GOAWAY on |ts| (which is now DRAINING); may be NULL. */
    void (*on_goaway)(et_tsock *ts, const et_goaway *g);
    /* |s| is being torn down (on its worker); may be NULL. */
    void (*on_stream_closed)(et_stream *s);
    /* HEALTH, HEALTH_ANSWER or PUSH arrived on the ready socket |ts| (on its worker); NULL
     * ignores them. The views in |m| live only for the call. */
    void (*on_control_frame)(et_tsock *ts, const et_frame *f, const et_msg *m);
} et_side_ops;

struct et_worker {
    et_engine *eng;
    et_reactor *r; /* owned */
    unsigned index;
    et_stream_table *streams; /* owned: streams and tombstones of this worker */
    et_tsock *tsocks;         /* list of this worker's tunnel sockets (owns one ref each) */
    et_timer sweep;           /* tombstone sweep */
    void *side;               /* side-specific per-worker state (listeners); owned by the side */
};

/* The control worker's scheduling (engine.c, et_control_budget); its thread only. */
typedef struct et_ctl_sched {
    bool realtime;          /* SCHED_FIFO was granted: the budget below applies */
    bool demoted;           /* SCHED_OTHER at |base_nice| until |until_ns|: it spent its budget */
    int base_nice;          /* the thread's nice before it was raised */
    int high_nice;          /* the nice it runs at when not demoted (-10, or |base_nice|) */
    uint64_t window_ns;     /* start of the budget window (et_now_ns) */
    uint64_t window_cpu_ns; /* the thread's CPU time at |window_ns| */
    uint64_t until_ns;
} et_ctl_sched;

/* et_control_budget charges the control worker's CPU time against its budget and demotes or
 * promotes it (engine.c); a no-op on any other thread or when it is not SCHED_FIFO. Called
 * before each epoll_wait and after each read turn and channel cancel on the control worker. */
void et_control_budget(et_engine *eng);

struct et_engine {
    et_side side;
    const et_side_ops *ops;
    _Atomic(SSL_CTX *) ssl_ctx;            /* owned; new sockets take it (et_engine_swap_ssl_ctx) */
    struct et_retired *retired;            /* owned: contexts replaced by a reload, kept to exit */
    unsigned nworkers;                     /* data workers */
    et_worker workers[ET_MAX_WORKERS + 1]; /* the data workers, then the control worker */
    et_worker *control;                    /* &workers[nworkers]: owns the control sockets */
    et_ctl_sched ctl_sched;                /* the control worker's policy and CPU budget */
    pthread_mutex_t reg_mu;                /* guards reg and et_stream.cancelled */
    et_stream_table *reg;                  /* owned: the registry (see the top of this file) */
    et_stats stats;
    _Atomic uint32_t next_socket_id;
    _Atomic uint32_t next_session_key;
    _Atomic int exit_code;
    _Atomic bool stopping; /* et_engine_stop was called: no new work (redials) */
    /* Settings a reload may change while workers read them (relaxed atomics). */
    _Atomic uint32_t keepalive_ms;    /* edge: the PING interval announced in WELCOME */
    _Atomic uint32_t max_streams;     /* open streams per session; 0 = no limit */
    _Atomic uint64_t idle_timeout_ns; /* a stream with no byte either way this long ends */
    uint32_t max_frame;               /* edge: the largest payload it accepts (WELCOME), fixed */
    char congestion[ET_CC_NAME_MAX];  /* TCP_CONGESTION of tunnel sockets, "" = the host's; fixed */
    void *side_state;                 /* edge hub or origin config; owned by the side */
    _Atomic(void *) admin;            /* the admin server's state, or NULL; owned by it */
    void (*session_free_side)(void *); /* frees et_session.side */
};

/* et_session_hex writes the 32 hex digits of session id |id| and a NUL to |out|. */
void et_session_hex(const uint8_t id[ET_SESSION_ID_LEN], char out[2 * ET_SESSION_ID_LEN + 1]);

/* et_addr_of_fd fills |peer| and |local| with the addresses of connected TCP socket |fd| (an
 * unknown one as 0.0.0.0:0). */
void et_addr_of_fd(int fd, et_addr *peer, et_addr *local);

/* et_addr_format writes "ip:port" ("[v6]:port") of |sa| to |buf|. */
void et_addr_format(const struct sockaddr *sa, char *buf, size_t n);

/* et_engine_init sets up |eng| with |nworkers| data reactors and one control reactor (not yet
 * running). The engine takes
 * ownership of |ctx|. Returns ET_OK, ET_E_NOMEM, ET_E_IO or ET_E_USAGE. */
ET_MUST_USE int et_engine_init(et_engine *eng, et_side side, const et_side_ops *ops, SSL_CTX *ctx,
                               unsigned nworkers);

/* et_engine_start runs every worker on its own thread. */
ET_MUST_USE int et_engine_start(et_engine *eng);

/* et_engine_stop stops and joins the workers (any thread but a worker's). */
void et_engine_stop(et_engine *eng);

/* et_engine_cleanup closes every socket and stream and frees the engine's memory; call after
 * et_engine_stop (or without start). Safe on a zeroed engine. */
void et_engine_cleanup(et_engine *eng);

/* et_engine_swap_ssl_ctx makes |ctx| (ownership taken) the context of sockets made from now
 * on; sockets already made keep theirs. The old context is kept until et_engine_cleanup (a
 * worker may be reading it this moment). Main thread. */
void et_engine_swap_ssl_ctx(et_engine *eng, SSL_CTX *ctx);

/* et_engine_keep_until_cleanup keeps |p| (heap; ownership taken) until et_engine_cleanup frees
 * it: for settings a reload replaced while workers may still read the old copy. */
void et_engine_keep_until_cleanup(et_engine *eng, void *p);

/* et_engine_log_stats logs the counters as one `stats` event. */
void et_engine_log_stats(et_engine *eng);

/* et_worker_current returns the worker running on this thread, or NULL. */
et_worker *et_worker_current(et_engine *eng);

/* et_engine_live_streams returns the number of streams open now (opened and not yet finished
 * or cancelled), from the counters; any thread. */
uint64_t et_engine_live_streams(et_engine *eng);

/* et_engine_post_all runs |fn|(reactor, worker) on every worker, the control worker included,
 * through their inboxes. Returns the number of workers it could not reach (inbox full). */
unsigned et_engine_post_all(et_engine *eng, et_msg_fn fn);

/* et_engine_drain_wait waits (main thread) until no stream is open and |busy|(eng) (may be
 * NULL) returns 0, |deadline_ns| (et_now_ns) passes, or |interrupted|(|arg|) returns true (it is
 * the loop's pause: it waits a few milliseconds). Logs `drained` and returns what is left open. */
uint64_t et_engine_drain_wait(et_engine *eng, uint64_t deadline_ns, uint64_t (*busy)(et_engine *),
                              bool (*interrupted)(void *arg), void *arg);

/* et_worker_goaway sends GOAWAY (code 0, |drain_ms|, |text|) on every ready socket of |w|, on
 * its thread: the peer opens no new stream on them and lets in-flight ones finish. */
void et_worker_goaway(et_worker *w, uint32_t drain_ms, const char *text);

/* --- sessions --------------------------------------------------------------------------- */

typedef struct et_sockref {
    et_tsock *ts;    /* one reference owned */
    unsigned worker; /* index of the worker it is on or moving to (a data socket) */
    bool ready;      /* on that worker: new streams may go to it (et_session_pick_data) */
} et_sockref;

struct et_session {
    _Atomic int refs;
    uint8_t id[ET_SESSION_ID_LEN];
    uint32_t key; /* process-unique; part of every stream key */
    bool legacy;
    char tunnel[ET_TUNNEL_NAME_MAX + 1];
    pthread_mutex_t mu; /* guards the fields below */
    et_tsock *ctrl;     /* live control socket (one reference owned), or NULL */
    et_sockref data[ET_MAX_DATA_SOCKS];
    unsigned ndata;
    unsigned rr;               /* round-robin position over data */
    et_stream *reg_streams;    /* its streams in the registry, for channel cancels (reg_mu) */
    _Atomic uint32_t nstreams; /* open streams, over all its sockets (the --max-streams limit) */
    void *side;                /* side-specific (edge: tunnel and routes); owned by the side */
    /* Per-session counters, for the admin API (written by any worker). */
    _Atomic uint64_t streams_opened, streams_closed, bytes_to_peer, bytes_from_peer;
    _Atomic uint64_t push_sent, push_dropped;
};

/* et_session_new returns a session with one reference for the caller, or NULL. */
et_session *et_session_new(et_engine *eng, const uint8_t id[ET_SESSION_ID_LEN]);
void et_session_ref(et_session *s);
/* et_session_unref drops a reference; the last frees |s| (and calls |free_side| on s->side). */
void et_session_unref(et_session *s, void (*free_side)(void *));

/* et_session_attach adds |ts| to |s| as its control socket or as a data socket; takes a
 * reference on |ts|. A control socket replaces the old one, which is handed to the caller in
 * |*replaced| (with the session's reference) to close. Returns ET_OK or
 * ET_E_PROTO(ET_WE_LIMIT_SOCKETS). */
ET_MUST_USE int et_session_attach(et_session *s, et_tsock *ts, et_tsock **replaced);

/* et_session_attach_data adds the data socket |ts| to |s| like et_session_attach and returns
 * in |*to| the worker it should live on: the one of its engine's workers holding the fewest of
 * |s|'s data sockets, its own on a tie (the kernel spreads accepted sockets over the workers'
 * listeners at random, so a session's sockets can all land on one core). When |*to| is another
 * worker the socket is not offered to new streams until et_session_data_ready() runs on |*to|;
 * the caller moves it there (et_tsock_move). */
ET_MUST_USE int et_session_attach_data(et_session *s, et_tsock *ts, et_worker **to);

/* et_session_data_ready marks the data socket |ts| of |s| as on its worker (a moved socket, on
 * the worker that adopted it): et_session_pick_data may hand it streams again. */
void et_session_data_ready(et_session *s, et_tsock *ts);

/* et_session_detach removes |ts| from |s| (dropping the session's reference). */
void et_session_detach(et_session *s, et_tsock *ts);

/* A copy of one socket's facts for the admin API. */
typedef struct et_sock_info {
    uint32_t id;
    uint32_t rtt_us;         /* et_tsock.rtt_us */
    char cc[ET_CC_NAME_MAX]; /* et_tsock.cc */
    uint8_t role;            /* et_role */
    uint8_t state;           /* et_tsock_state */
    int worker;              /* a data socket's worker index; -1 for a control socket */
    char peer[64];
} et_sock_info;

/* et_session_sockets copies the facts of |s|'s sockets (control first) into |out|, which has
 * room for |cap|, holding the session's mutex for the copy only (the cancel path takes it too);
 * returns how many it copied. */
unsigned et_session_sockets(et_session *s, et_sock_info *out, unsigned cap);

/* et_tsock_state_name returns a static name of et_tsock_state |state| ("ready"). */
const char *et_tsock_state_name(uint8_t state);

/* et_session_pick_data returns the next live data socket of |s| round-robin (a new reference
 * for the caller), or NULL when there is none. */
et_tsock *et_session_pick_data(et_session *s);

/* --- tunnel sockets --------------------------------------------------------------------- */

typedef enum et_tsock_state {
    ET_TS_CONNECTING = 1, /* origin: TCP connect in progress */
    ET_TS_TLS,            /* TLS handshake */
    ET_TS_HELLO,          /* edge: waiting for HELLO; origin: HELLO sent, waiting for WELCOME */
    ET_TS_READY,
    ET_TS_DRAINING, /* GOAWAY seen: no new streams */
    ET_TS_CLOSED,
} et_tsock_state;

/* A stream list (intrusive, doubly linked through et_stream.ready_prev/next). */
typedef struct et_stream_list {
    et_stream *head, *tail;
} et_stream_list;

struct et_tsock {
    _Atomic int refs;
    et_io io;
    et_worker *w;          /* owning worker */
    et_tsock *next;        /* in w->tsocks */
    int fd;                /* owned */
    SSL *ssl;              /* owned */
    uint32_t id;           /* process-unique socket id */
    uint8_t role;          /* et_role */
    _Atomic uint8_t state; /* et_tsock_state; written by the owner, read anywhere as a hint */
    bool readable, writable;
    bool moving;   /* being handed to another worker: stop touching it here */
    bool flushing; /* inside et_tsock_flush: a nested call only schedules another */
    bool failed;   /* a queue overflowed: closes after the current round */
    uint16_t fail_code;
    et_session *sess; /* one reference owned, once bound */
    char peer[64];

    et_frame_reader rd;
    uint32_t peer_max_frame; /* largest payload the peer accepts */
    uint32_t peer_window;    /* the peer's per-stream window (edge: HELLO.initial_window) */

    uint8_t *ctrl; /* owned: queued control frames, encoded */
    size_t ctrl_len, ctrl_cap;
    /* The records being written, ET_RECORD_MAX apart: rec_n built, rec_i the next to write
     * (kept until SSL_write takes it: rec_tried once it returned WANT_WRITE). Control frames
     * queued meanwhile, and DATA of other streams, go into the slot before rec_i, ahead of the
     * records not yet tried (never DATA of batch_s itself, which would overtake its own). */
    uint8_t *rec; /* owned: ET_REC_BATCH * ET_RECORD_MAX bytes */
    uint16_t rec_lens[ET_REC_BATCH];
    uint8_t rec_n, rec_i;
    bool rec_tried;
    uint8_t rec_batch;    /* bit i: slot i holds DATA of batch_s */
    bool data_overtook;   /* other DATA overtook since batch_s's last record: next, batch_s */
    et_stream *batch_s;   /* the stream whose DATA fills the built records, or NULL */
    et_stream_list ready; /* streams with local bytes to send and credit */
    /* Consecutive DATA frames of one stream in one read pass, written to its local socket
     * together by one sendmsg (et_stream_on_data): views into rd, written before the pass
     * ends (et_stream_gather_flush) and dropped if the stream goes first. */
    et_stream *gather_s;
    struct iovec gather[ET_GATHER_MAX];
    unsigned gather_n;
    unsigned nstreams;

    et_task flush_task;
    et_task free_task;
    et_task move_task;  /* hands the socket over after the current round (et_tsock_move) */
    et_task close_task; /* closes a failed socket after the current round */
    et_worker *move_to;
    et_timer timer;        /* handshake timeout, then the keepalive tick */
    uint32_t keepalive_ms; /* PING after this long without a frame; dead after three; 0 = off */
    uint64_t last_rx_ns;   /* when a frame last arrived */
    void *side;            /* side-specific (origin: pool slot) */

    /* The kernel's smoothed RTT (TCP_INFO) in microseconds, sampled by the owner at ready and
     * every keepalive tick, read by the admin API; 0 = not known yet. */
    _Atomic uint32_t rtt_us;
    _Atomic uint32_t min_rtt_us; /* the kernel's minimum RTT (tcpi_min_rtt), sampled alike */
    /* The congestion control the kernel runs on fd (TCP_CONGESTION, read back after asking for
     * eng->congestion); written before the socket joins a session, then constant. */
    char cc[ET_CC_NAME_MAX];
};

/* et_tsock_new creates a tunnel socket on |w| for the connected or connecting |fd| (ownership
 * taken) in |state|, with an SSL object from the engine's context (server at the edge, client at
 * the origin), and registers it with the reactor. Returns it with one reference owned by the
 * worker's list, or NULL (the fd is closed). Must run on |w|'s thread. */
et_tsock *et_tsock_new(et_worker *w, int fd, et_tsock_state state, uint8_t role);

void et_tsock_ref(et_tsock *ts);
/* et_tsock_unref drops a reference from any thread; the last frees the memory (the socket
 * itself was closed by et_tsock_close on its worker). */
void et_tsock_unref(et_tsock *ts);

/* et_tsock_close closes |ts| (at most once): ERROR |code| first when non-zero, then the
 * connection; its streams are failed (their other ends cancelled). Deferred free. */
void et_tsock_close(et_tsock *ts, uint16_t code, const char *why);

/* et_tsock_queue encodes frame |h|/|m| into the control queue of |ts| (ahead of all DATA) and
 * schedules a flush. Returns ET_OK or an error (the socket is then closed). */
int et_tsock_queue(et_tsock *ts, const et_frame *h, const et_msg *m);

/* et_tsock_flush writes what |ts| can now: queued control frames first, then DATA read from its
 * ready streams, one record per SSL_write, until the socket would block. */
void et_tsock_flush(et_tsock *ts);

/* et_tsock_schedule_flush flushes |ts| after the current dispatch round. */
void et_tsock_schedule_flush(et_tsock *ts);

/* et_tsock_goaway queues GOAWAY (code 0, |drain_ms|, |text|) on |ts| when it is ready or
 * draining; the socket itself carries on (spec §5.12). */
void et_tsock_goaway(et_tsock *ts, uint32_t drain_ms, const char *text);

/* et_tsock_drop_built drops the built records of |ts| not yet handed to SSL_write that hold
 * DATA of |s| (every such record when |s| is NULL, for a socket's last word). */
void et_tsock_drop_built(et_tsock *ts, et_stream *s);

/* et_tsock_set_ready marks the handshake done: READY state, the reader limit set to what we
 * announced, the handshake timer stopped. */
void et_tsock_set_ready(et_tsock *ts);

/* --- streams ---------------------------------------------------------------------------- */

typedef struct et_chunk et_chunk;

struct et_stream {
    et_io io;
    et_worker *w;
    et_tsock *ts;     /* the data socket carrying it (not a reference: the socket fails its streams
                       * before it goes) */
    et_session *sess; /* not a reference: ts holds one */
    et_stream *reg_prev, *reg_next; /* the session's registered streams (eng->reg_mu) */
    bool registered;                /* on that list (eng->reg_mu) */
    int fd; /* owned: the local connection (public client or local service) */
    uint32_t uc, sid;
    bool connecting; /* origin: connect in progress */
    bool local_readable, local_writable;
    bool local_rdhup;  /* the local peer's FIN arrived (EPOLLRDHUP): no edge will follow */
    bool end_sent;     /* local EOF seen and END queued */
    bool end_received; /* peer's END arrived */
    bool shut_wr_done; /* shutdown(SHUT_WR) done on the local fd */
    bool in_ready;
    bool closed;                 /* torn down; memory freed after the current round */
    int64_t send_credit;         /* DATA bytes we may still send */
    uint32_t recv_limit;         /* DATA bytes the peer may still send */
    uint32_t recv_window;        /* the window we grant (for the half-window WINDOW rule) */
    uint64_t window_ns;          /* when recv_window was last returned with WINDOW (or opened) */
    uint32_t recv_unacked;       /* consumed bytes not yet returned with WINDOW */
    et_chunk *rq_head, *rq_tail; /* owned: received DATA not yet written locally */
    uint8_t *pend;               /* owned: bytes to send before reading fd (an HTTP head) */
    size_t pend_len, pend_off;
    _Atomic size_t rq_bytes;    /* written by the owner, read by the control worker */
    bool cancelled;             /* under eng->reg_mu: a CANCEL went or came for it */
    uint8_t kind;               /* et_open_kind; constant */
    _Atomic bool resp_started;  /* edge, HTTP: the origin has sent response bytes */
    uint16_t answer_status;     /* edge, HTTP: answer this error instead of a reset */
    et_timer origin_timer;      /* edge, HTTP: no response in time -> 504 */
    uint64_t origin_timeout_ns; /* edge, HTTP: counted from the last request byte sent */
    uint64_t last_sent_ns;      /* last DATA sent to the peer */
    uint64_t last_recv_ns;      /* last DATA from the peer (with last_sent_ns: --idle-timeout) */
    int32_t client_slot;        /* edge: its slot in the per-client-address counts, or -1 */
    struct et_watch *watch;     /* the control worker's watch on fd; freed by that worker */
    et_stream *ready_prev, *ready_next;
    uint64_t opened_ns;
    et_task free_task;
};

/* et_stream_open reserves stream (uc, sid) on |ts| (a data socket) in the registry and in its
 * worker's table, without a local fd yet. Returns ET_OK with |*out| set, ET_E_CLOSED when the
 * peer already cancelled it (its CANCEL overtook the OPEN: a tombstone is left for its late
 * frames), ET_E_LIMIT when the session has eng->max_streams open (counted), or ET_E_NOMEM.
 * |kind| is the OPEN's (et_open_kind). */
ET_MUST_USE int et_stream_open(et_tsock *ts, uint32_t uc, uint32_t sid, uint8_t kind,
                               et_stream **out);

/* et_stream_attach gives |s| its local |fd| (ownership taken; |connecting| while an origin's
 * connect is in progress) and registers it with the data worker and the control worker's watch.
 * Returns ET_OK, or an error after which |s| is gone (cancelled meanwhile, or setup failed). */
ET_MUST_USE int et_stream_attach(et_stream *s, int fd, bool connecting);

/* et_stream_cancel ends |s| abortively from our side: CANCEL to the peer (control socket when
 * the session has one, else |s|'s data socket ahead of its data), the local fd reset, a
 * tombstone left. */
void et_stream_cancel(et_stream *s, uint16_t reason);

/* et_stream_reset ends |s| because the peer cancelled it (or its socket failed): the local fd
 * reset, queued bytes dropped (their count returned), a tombstone left; no CANCEL is sent. */
uint64_t et_stream_reset(et_stream *s);

/* et_stream_set_pending gives |s| |n| bytes (heap, ownership taken) to send to the peer before
 * anything read from its fd: the bytes the edge read to route the connection. */
ET_MUST_USE int et_stream_set_pending(et_stream *s, uint8_t *p, size_t n);

/* et_stream_prepend_local queues |n| bytes for the local socket ahead of everything the peer
 * sends (a PROXY protocol header); they return no credit. Call before any DATA arrives. */
ET_MUST_USE int et_stream_prepend_local(et_stream *s, const uint8_t *p, size_t n);

/* et_stream_on_data / _on_end / _on_window handle those frames for |s|. |more|: the next frame
 * already received is DATA for |s| too, so the local write may wait for it (MSG_MORE). */
void et_stream_on_data(et_stream *s, const uint8_t *p, size_t n, bool more);
void et_stream_on_end(et_stream *s);
void et_stream_on_window(et_stream *s, uint32_t inc);

/* et_stream_gather_flush writes the DATA that et_stream_on_data gathered on |ts| (its views
 * into the frame reader) to the stream's local socket; the read pass calls it before the reader
 * can move its bytes. */
void et_stream_gather_flush(et_tsock *ts);

/* et_stream_connected is called by the origin when its local connect finished (ok or not). */
void et_stream_connected(et_stream *s, bool ok);

/* et_stream_pull appends |s|'s next frames (DATA read from its local socket, or END at its
 * EOF) to a record at |dst| with |room| bytes left, and returns the bytes appended. Called by
 * the record builder for the head of the ready list, which it takes |s| off (and puts back at
 * the tail while |s| still has bytes and credit). */
size_t et_stream_pull(et_stream *s, uint8_t *dst, size_t room);

/* et_stream_pull_records fills up to ET_REC_BATCH records at |base|, ET_RECORD_MAX apart, with
 * |s|'s next bytes in one readv(): a full-size DATA frame per record (only the last may be
 * shorter), each record's length in |lens|. Where that does not apply (an HTTP head still to
 * send, frames smaller than a record, little credit, EOF) it is one et_stream_pull into the
 * first record. Returns the records filled. The record builder calls it for the only stream
 * on the ready list, like et_stream_pull. */
unsigned et_stream_pull_records(et_stream *s, uint8_t *base, uint16_t *lens);

/* et_stream_ready_park takes |s| off its socket's ready list until et_stream_update_ready. */
void et_stream_ready_park(et_stream *s);

/* et_stream_update_ready puts |s| on (or takes it off) its socket's ready list. */
void et_stream_update_ready(et_stream *s);

/* et_stream_send_cancel sends CANCEL(|uc|,|sid|) for session |sess| from worker |w|: through
 * the control socket when there is one, else through |data_ts| (may be NULL). */
void et_stream_send_cancel(et_worker *w, et_session *sess, et_tsock *data_ts, uint32_t uc,
                           uint32_t sid, uint16_t reason);

/* --- stream table ----------------------------------------------------------------------- */

typedef enum et_lookup {
    ET_LOOKUP_NONE = 0,
    ET_LOOKUP_LIVE = 1,
    ET_LOOKUP_TOMBSTONE = 2,
} et_lookup;

et_stream_table *et_stream_table_new(void);
void et_stream_table_free(et_stream_table *t);
/* et_stream_table_find returns whether (sess_key, uc, sid) is live (|*out| set), a tombstone,
 * or unknown. */
et_lookup et_stream_table_find(et_stream_table *t, uint32_t sess_key, uint32_t uc, uint32_t sid,
                               et_stream **out);
ET_MUST_USE int et_stream_table_put(et_stream_table *t, uint32_t sess_key, uint32_t uc,
                                    uint32_t sid, et_stream *s);
/* et_stream_table_bury turns the entry into a tombstone until |expiry_ns| (adding it if absent). */
ET_MUST_USE int et_stream_table_bury(et_stream_table *t, uint32_t sess_key, uint32_t uc,
                                     uint32_t sid, uint64_t expiry_ns);
/* et_stream_table_sweep drops tombstones that expired before |now|. */
void et_stream_table_sweep(et_stream_table *t, uint64_t now);
/* et_stream_table_each calls |fn| for every live stream (it may bury or remove it). */
void et_stream_table_each(et_stream_table *t, void (*fn)(et_stream *s, void *arg), void *arg);
size_t et_stream_table_count(const et_stream_table *t);

/* --- cancel delivery ---------------------------------------------------------------------- */

/* et_cancel_received handles a CANCEL read on |ts| (any role, any worker): resets the local
 * connection of the stream(s) at once through the registry, tells their data workers, and
 * answers CANCEL_ACK on |ts|. */
void et_cancel_received(et_tsock *ts, const et_frame *f, const et_cancel *c);

/* et_tsock_move hands |ts| (on its worker's thread) over to worker |to|: it stops on this worker
 * at once and resumes on |to| with whatever it had buffered. */
void et_tsock_move(et_tsock *ts, et_worker *to);

#endif
