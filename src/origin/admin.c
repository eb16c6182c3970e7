/* admin.c: originctl's admin listener (origin.h): /healthz, /metrics and /status, on a thread
 * of its own (httpd.h) for the same reasons as edged's: a scrape must never delay the control
 * worker. It reads atomic counters, and takes the session's mutex only to copy its sockets'
 * facts (et_session_sockets). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "et/httpd.h"
#include "et/logf.h"
#include "et/origin.h"

typedef struct origin_admin {
    et_engine *eng;
    et_httpd *httpd; /* owned */
} origin_admin;

#define LOAD(f) ((json_int_t)atomic_load_explicit(&(f), memory_order_relaxed))

static json_t *status_json(et_engine *eng)
{
    const et_origin_config *cfg = et_origin_config_of(eng);
    et_session *s = et_origin_session(eng);
    char hex[2 * ET_SESSION_ID_LEN + 1];
    et_session_hex(s->id, hex);
    et_sock_info info[ET_MAX_DATA_SOCKS + 1];
    unsigned n = et_session_sockets(s, info, ET_MAX_DATA_SOCKS + 1), ready = 0;
    json_t *socks = json_array();
    for (unsigned i = 0; i < n; i++) {
        ready += info[i].state == ET_TS_READY;
        json_array_append_new(socks, json_pack("{s:I,s:s,s:s,s:I,s:s,s:i}", "id",
                                               (json_int_t)info[i].id, "role",
                                               info[i].role == ET_ROLE_CONTROL ? "control" : "data",
                                               "state", et_tsock_state_name(info[i].state),
                                               "rtt_us", (json_int_t)info[i].rtt_us, "congestion",
                                               info[i].cc, "worker", info[i].worker));
    }
    et_stats *st = &eng->stats;
    json_int_t opened = LOAD(s->streams_opened), closed = LOAD(s->streams_closed);
    unsigned want = cfg->data_conns + (cfg->no_control ? 0u : 1u);
    return json_pack("{s:s,s:s,s:b,s:I,s:I,s:o,s:{s:I,s:I},s:{s:I,s:I},"
                     "s:{s:{s:I,s:I},s:{s:I,s:I},s:I},s:I}",
                     "session", hex, "edge", cfg->edge_addr, "legacy", (int)cfg->no_control,
                     "sockets_ready", (json_int_t)ready, "sockets_wanted", (json_int_t)want,
                     "sockets", socks, "streams", "open", opened >= closed ? opened - closed : 0,
                     "total", opened, "bytes", "to_edge", LOAD(s->bytes_to_peer), "from_edge",
                     LOAD(s->bytes_from_peer), "cancels", "received", "control",
                     LOAD(st->cancels_recv_control), "data", LOAD(st->cancels_recv_data), "sent",
                     "control", LOAD(st->cancels_sent_control), "data", LOAD(st->cancels_sent_data),
                     "acks", LOAD(st->cancel_acks), "push_received", LOAD(st->push_received));
}

static int handle(void *arg, const et_httpd_req *req, et_httpd_resp *resp)
{
    origin_admin *a = arg;
    const char *p = req->path;
    if (strcmp(p, "/healthz") != 0 && strcmp(p, "/metrics") != 0 && strcmp(p, "/status") != 0) {
        et_httpd_text(resp, 404, "not found\n");
        return ET_OK;
    }
    if (strcmp(req->method, "GET") != 0) {
        et_httpd_text(resp, 405, "method not allowed\n");
        resp->allow = "GET";
        return ET_OK;
    }
    if (strcmp(p, "/healthz") == 0) {
        et_httpd_text(resp, 200, "ok\n");
    } else if (strcmp(p, "/metrics") == 0) {
        et_strbuf b = {0};
        et_metrics_write(a->eng, &b);
        et_httpd_take(resp, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
    } else {
        json_t *j = status_json(a->eng);
        char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (text == NULL) {
            et_httpd_text(resp, 500, "out of memory\n");
            return ET_OK;
        }
        memset(resp, 0, sizeof(*resp));
        resp->status = 200;
        resp->type = "application/json";
        resp->body = text;
        resp->len = strlen(text);
    }
    return ET_OK;
}

int et_origin_admin_start(et_engine *eng, const char *addr)
{
    origin_admin *a = calloc(1, sizeof(*a));
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

void et_origin_admin_stop(et_engine *eng)
{
    origin_admin *a = atomic_load(&eng->admin);
    if (a == NULL)
        return;
    et_httpd_free(a->httpd);
    atomic_store(&eng->admin, NULL);
    free(a);
}
