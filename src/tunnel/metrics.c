/* metrics.c: what the admin listeners of both binaries read (tunnel.h): the counters of
 * et_stats in the Prometheus text format (atomics only, never a lock), and copies of a
 * session's socket facts. */
#include "et/tunnel.h"

#include <string.h>

#include "et/httpd.h"

static const uint64_t bucket_us[ET_CANCEL_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000,
};

uint64_t et_cancel_bucket_us(unsigned i)
{
    return i < ET_CANCEL_BUCKETS ? bucket_us[i] : UINT64_MAX;
}

void et_stats_cancel_rtt(et_stats *s, uint64_t ns)
{
    unsigned i = 0;
    while (i < ET_CANCEL_BUCKETS && ns > bucket_us[i] * 1000u)
        i++;
    ET_COUNT(s->cancel_rtt_buckets[i]);
    ET_COUNT_N(s->cancel_rtt_sum_ns, ns);
}

static const int http_statuses[ET_HTTP_STATUS_SLOTS - 1] = {400, 404, 408, 429, 431, 502, 503, 504};

unsigned et_http_status_slot(int status)
{
    for (unsigned i = 0; i < ET_HTTP_STATUS_SLOTS - 1; i++)
        if (http_statuses[i] == status)
            return i;
    return ET_HTTP_STATUS_SLOTS - 1;
}

int et_http_slot_status(unsigned slot)
{
    return slot < ET_HTTP_STATUS_SLOTS - 1 ? http_statuses[slot] : 0;
}

#define LOAD(f) ((unsigned long long)atomic_load_explicit(&(f), memory_order_relaxed))

static void head(et_strbuf *b, const char *name, const char *type, const char *help)
{
    et_strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* sample writes a metric of one unlabelled sample: its HELP and TYPE lines, then |v|. */
static void sample(et_strbuf *b, const char *name, const char *type, const char *help,
                   unsigned long long v)
{
    head(b, name, type, help);
    et_strbuf_printf(b, "%s %llu\n", name, v);
}

/* reasons writes one sample per named wire error code of |v| (slots of et_stat_slot). */
static void reasons(et_strbuf *b, const char *name, _Atomic uint64_t *v)
{
    for (unsigned slot = 0; slot < ET_STAT_REASONS - 1; slot++) {
        uint16_t code = (uint16_t)(((slot / 16u) << 8) | (slot % 16u));
        const char *rn = et_wire_error_name(code);
        if (code == 0 || strcmp(rn, "unknown") == 0 || et_stat_slot(code) != slot)
            continue;
        et_strbuf_printf(b, "%s{reason=\"%s\"} %llu\n", name, rn, LOAD(v[slot]));
    }
}

static const char *health_name(unsigned i)
{
    static const char *names[ET_HS_SLOTS] = {"ok",       "refused", "timeout",
                                             "no_route", "error",   "no_answer"};
    return i < ET_HS_SLOTS ? names[i] : "unknown";
}

void et_metrics_write(et_engine *eng, et_strbuf *b)
{
    et_stats *s = &eng->stats;
    unsigned long long up = LOAD(s->sockets_up), down = LOAD(s->sockets_down);
    sample(b, "edgetunnel_sockets_connected", "gauge", "Tunnel sockets past their handshake now.",
           up >= down ? up - down : 0);
    head(b, "edgetunnel_socket_events_total", "counter", "Tunnel sockets that came up, went down.");
    et_strbuf_printf(b, "edgetunnel_socket_events_total{event=\"up\"} %llu\n", up);
    et_strbuf_printf(b, "edgetunnel_socket_events_total{event=\"down\"} %llu\n", down);

    unsigned long long opened = LOAD(s->streams_opened), fin = LOAD(s->streams_finished),
                       canc = LOAD(s->streams_cancelled);
    sample(b, "edgetunnel_streams_open", "gauge", "Streams open now.",
           opened >= fin + canc ? opened - fin - canc : 0);
    sample(b, "edgetunnel_streams_opened_total", "counter", "Streams opened.", opened);
    head(b, "edgetunnel_streams_closed_total", "counter",
         "Streams ended: finished (both ENDs) or cancelled (CANCEL, reset, socket lost).");
    et_strbuf_printf(b, "edgetunnel_streams_closed_total{outcome=\"finished\"} %llu\n", fin);
    et_strbuf_printf(b, "edgetunnel_streams_closed_total{outcome=\"cancelled\"} %llu\n", canc);

    head(b, "edgetunnel_bytes_total", "counter", "DATA payload bytes through the tunnel.");
    et_strbuf_printf(b, "edgetunnel_bytes_total{direction=\"to_peer\"} %llu\n",
                     LOAD(s->bytes_to_peer));
    et_strbuf_printf(b, "edgetunnel_bytes_total{direction=\"from_peer\"} %llu\n",
                     LOAD(s->bytes_from_peer));

    head(b, "edgetunnel_cancels_total", "counter",
         "CANCEL frames by direction and by path (control socket, or data socket fallback).");
    et_strbuf_printf(b, "edgetunnel_cancels_total{direction=\"sent\",path=\"control\"} %llu\n",
                     LOAD(s->cancels_sent_control));
    et_strbuf_printf(b, "edgetunnel_cancels_total{direction=\"sent\",path=\"data\"} %llu\n",
                     LOAD(s->cancels_sent_data));
    et_strbuf_printf(b, "edgetunnel_cancels_total{direction=\"received\",path=\"control\"} %llu\n",
                     LOAD(s->cancels_recv_control));
    et_strbuf_printf(b, "edgetunnel_cancels_total{direction=\"received\",path=\"data\"} %llu\n",
                     LOAD(s->cancels_recv_data));

    /* Buckets are read once each and summed here, so the +Inf bucket is _count exactly even
     * while acks arrive during the scrape. */
    head(b, "edgetunnel_cancel_delivery_seconds", "histogram",
         "CANCEL sent to its CANCEL_ACK back, from the acknowledgements.");
    unsigned long long cum = 0;
    for (unsigned i = 0; i <= ET_CANCEL_BUCKETS; i++) {
        cum += LOAD(s->cancel_rtt_buckets[i]);
        if (i < ET_CANCEL_BUCKETS)
            et_strbuf_printf(b, "edgetunnel_cancel_delivery_seconds_bucket{le=\"%g\"} %llu\n",
                             (double)bucket_us[i] / 1e6, cum);
        else
            et_strbuf_printf(b, "edgetunnel_cancel_delivery_seconds_bucket{le=\"+Inf\"} %llu\n",
                             cum);
    }
    et_strbuf_printf(b, "edgetunnel_cancel_delivery_seconds_sum %.9f\n",
                     (double)LOAD(s->cancel_rtt_sum_ns) / 1e9);
    et_strbuf_printf(b, "edgetunnel_cancel_delivery_seconds_count %llu\n", cum);

    head(b, "edgetunnel_frame_errors_total", "counter",
         "Connection and stream errors on ready sockets, by wire error code.");
    reasons(b, "edgetunnel_frame_errors_total", s->frame_errors);
    head(b, "edgetunnel_handshake_errors_total", "counter",
         "Refused tunnel handshakes, by wire error code (tls: the TLS handshake failed).");
    reasons(b, "edgetunnel_handshake_errors_total", s->handshake_refused);
    et_strbuf_printf(b, "edgetunnel_handshake_errors_total{reason=\"tls\"} %llu\n",
                     LOAD(s->handshake_refused_tls));

    head(b, "edgetunnel_limit_rejections_total", "counter",
         "Refusals because a limit was reached (handshakes and frames together).");
    /* streams: --max-streams (counted where the stream is refused, plus a peer's stream
     * errors); sessions: --max-tunnels and the per-route session cap (handshakes refused);
     * sockets: data sockets per session; client_conns: --max-client-conns. */
    unsigned ks = et_stat_slot(ET_WE_LIMIT_STREAMS), kt = et_stat_slot(ET_WE_LIMIT_SESSIONS);
    unsigned kk = et_stat_slot(ET_WE_LIMIT_SOCKETS);
    et_strbuf_printf(b, "edgetunnel_limit_rejections_total{limit=\"streams\"} %llu\n",
                     LOAD(s->limit_streams) + LOAD(s->frame_errors[ks]));
    et_strbuf_printf(b, "edgetunnel_limit_rejections_total{limit=\"sessions\"} %llu\n",
                     LOAD(s->handshake_refused[kt]) + LOAD(s->frame_errors[kt]));
    et_strbuf_printf(b, "edgetunnel_limit_rejections_total{limit=\"sockets\"} %llu\n",
                     LOAD(s->handshake_refused[kk]) + LOAD(s->frame_errors[kk]));
    et_strbuf_printf(b, "edgetunnel_limit_rejections_total{limit=\"client_conns\"} %llu\n",
                     LOAD(s->limit_client_conns));
    sample(b, "edgetunnel_rate_limited_total", "counter",
           "New public connections refused by a tunnel's rate limit (--rate-limit).",
           LOAD(s->rate_limited));
    sample(b, "edgetunnel_streams_idle_closed_total", "counter",
           "Streams ended because they moved no byte for --idle-timeout.", LOAD(s->idle_closed));
    sample(b, "edgetunnel_record_overtakes_total", "counter",
           "Records (control frames, other streams' DATA) written ahead of a bulk stream's DATA "
           "records already built.",
           LOAD(s->record_overtakes));
    sample(b, "edgetunnel_flush_yields_total", "counter",
           "Socket flushes that stopped after 64 KiB to let the reactor see other events first.",
           LOAD(s->flush_yields));
    sample(b, "edgetunnel_control_realtime", "gauge",
           "1 while the control worker (cancels, control frames) runs SCHED_FIFO, else 0.",
           LOAD(s->control_realtime));
    sample(b, "edgetunnel_control_demotions_total", "counter",
           "Times the control worker left SCHED_FIFO for a while: it used over 20% of a CPU.",
           LOAD(s->control_demotions));
    sample(b, "edgetunnel_window_grows_total", "counter",
           "Stream receive windows doubled: the window, not the reader, held the stream back.",
           LOAD(s->window_grows));
    sample(b, "edgetunnel_window_shrinks_total", "counter",
           "Grown stream receive windows halved again: the reader fell behind.",
           LOAD(s->window_shrinks));
    sample(b, "edgetunnel_window_extra_bytes", "gauge",
           "Receive window granted beyond the initial windows, over every open stream.",
           LOAD(s->window_extra));
    sample(b, "edgetunnel_route_waits_total", "counter",
           "Public requests held until a session served their host (--route-wait).",
           LOAD(s->route_waits));

    sample(b, "edgetunnel_late_frames_dropped_total", "counter",
           "Frames for streams already cancelled (tombstones), dropped quietly.",
           LOAD(s->late_frames_dropped));
    sample(b, "edgetunnel_opens_refused_tombstone_total", "counter",
           "OPENs refused because their CANCEL overtook them.", LOAD(s->opens_refused_tombstone));
    sample(b, "edgetunnel_inbox_full_total", "counter", "Cross-thread hand-overs refused (full).",
           LOAD(s->inbox_full));

    head(b, "edgetunnel_health_probes_total", "counter",
         "HEALTH probes of tunnels by outcome (edge: answers received; origin: answers sent).");
    for (unsigned i = 0; i < ET_HS_SLOTS; i++)
        et_strbuf_printf(b, "edgetunnel_health_probes_total{result=\"%s\"} %llu\n", health_name(i),
                         LOAD(s->health_probes[i]));
    head(b, "edgetunnel_push_total", "counter",
         "PUSH frames: sent (queued toward an origin), dropped (its queue was full), received.");
    et_strbuf_printf(b, "edgetunnel_push_total{result=\"sent\"} %llu\n", LOAD(s->push_sent));
    et_strbuf_printf(b, "edgetunnel_push_total{result=\"dropped\"} %llu\n", LOAD(s->push_dropped));
    et_strbuf_printf(b, "edgetunnel_push_total{result=\"received\"} %llu\n",
                     LOAD(s->push_received));
}

const char *et_tsock_state_name(uint8_t state)
{
    switch (state) {
    case ET_TS_CONNECTING: return "connecting";
    case ET_TS_TLS: return "tls";
    case ET_TS_HELLO: return "hello";
    case ET_TS_READY: return "ready";
    case ET_TS_DRAINING: return "draining";
    case ET_TS_CLOSED: return "closed";
    default: return "unknown";
    }
}

static void sock_info(const et_tsock *ts, et_sock_info *out)
{
    out->id = ts->id; /* constant, like role and peer, once the socket is in a session */
    out->rtt_us = atomic_load_explicit(&ts->rtt_us, memory_order_relaxed);
    out->role = ts->role;
    out->state = atomic_load_explicit(&ts->state, memory_order_relaxed);
    memcpy(out->peer, ts->peer, sizeof(out->peer));
    out->peer[sizeof(out->peer) - 1] = '\0';
    memcpy(out->cc, ts->cc, sizeof(out->cc));
    out->cc[sizeof(out->cc) - 1] = '\0';
}

unsigned et_session_sockets(et_session *s, et_sock_info *out, unsigned cap)
{
    unsigned n = 0;
    pthread_mutex_lock(&s->mu);
    if (s->ctrl != NULL && n < cap) {
        sock_info(s->ctrl, &out[n]);
        out[n++].worker = -1;
    }
    for (unsigned i = 0; i < s->ndata && n < cap; i++) {
        sock_info(s->data[i].ts, &out[n]);
        out[n++].worker = (int)s->data[i].worker;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}
