/* edged: the public side of the tunnel. Flags, then the engine (edge.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "et/cli.h"
#include "et/edge.h"
#include "et/logf.h"
#include "et/tls.h"
#include "et/token.h"
#include "et/version.h"

#include <openssl/base64.h>
#include <openssl/rand.h>
#include <time.h>

static void usage(FILE *f)
{
    fputs("usage: edged [--tunnel ADDR] --cert FILE --key FILE --token-key FILE\n"
          "             [--http ADDR] [--origin-timeout DURATION] [--head-timeout DURATION]\n"
          "             [--keepalive DURATION] [--route-wait DURATION] [--drain-timeout DURATION]\n"
          "             [--idle-timeout DURATION] [--max-tunnels N] [--max-streams N]\n"
          "             [--max-client-conns N] [--rate-limit N] [--rate-burst N] [--max-frame N]\n"
          "             [--admin ADDR] [--tcp-congestion NAME|system]\n"
          "             [--tcp-ports LO-HI] [--tcp-bind ADDR] [--threads N]\n"
          "             [--log-format text|json] [--log-level debug|info|warn|error]\n"
          "             [--config FILE] [--print-config]\n"
          "       edged token --token-key FILE --name NAME [--http HOST]... [--tcp PORT]...\n"
          "             [--ttl DURATION]\n"
          "       edged --dev [--dev-port PORT] [--http ADDR] [--tunnel ADDR]\n"
          "       edged --version | --help\n"
          "\n"
          "  --http ADDR       public HTTP listener, routed by Host (e.g. 0.0.0.0:8080)\n"
          "  --origin-timeout  504 when the origin has not answered in time (default 30s)\n"
          "  --head-timeout    408 when a request head is not complete in time (default 10s)\n"
          "  --admin ADDR      admin API: /healthz /readyz /metrics /api/v1/tunnels\n"
          "                    /api/tunnel/NAME/health, POST /api/v1/push (e.g. 127.0.0.1:7070)\n"
          "  --keepalive DUR   a tunnel socket silent this long is dead (default 15s; PING\n"
          "                    every third of it)\n"
          "  --route-wait DUR  a request whose tunnel is not connected waits this long for it\n"
          "                    before 503 (and, just after start, an unknown host before 404),\n"
          "                    so restarts of either side lose no request (default 5s; 0 = off)\n"
          "  --drain-timeout DUR  SIGTERM: stop listening, send GOAWAY, let in-flight streams\n"
          "                    finish for up to this long, then exit (default 30s)\n"
          "  --idle-timeout DUR   a stream that moves no byte either way this long is ended\n"
          "                    (default 1h; 0 = never)\n"
          "  --max-tunnels N   origin sessions at once, every replica counted (default 1000)\n"
          "  --max-streams N   open streams per session; more get 503 / RST (default 10000)\n"
          "  --max-client-conns N  open public connections per client address; more get 429 /\n"
          "                    RST (default 1024)\n"
          "  --rate-limit N    new public connections per tunnel and minute; more get 429 / RST\n"
          "                    (default 0 = no limit)\n"
          "  --rate-burst N    of which this many may come at once (default N/10, at least 1)\n"
          "                    (0 for a limit = no limit)\n"
          "  --tcp-congestion NAME  TCP congestion control of tunnel sockets (default bbr,\n"
          "                    which keeps the queue short on a congested link; system = the\n"
          "                    host's net.ipv4.tcp_congestion_control; unavailable: the host's,\n"
          "                    with a warning)\n"
          "  --max-frame N     largest frame payload accepted from origins, 4096..16384\n"
          "                    (default 16384); a larger frame closes that tunnel socket\n"
          "  --dev             development edge on loopback: self-signed certificate and token\n"
          "                    key in memory; prints the originctl line for --dev-port (3000)\n"
          "  --tunnel ADDR     where originctl connects (default 127.0.0.1:7443)\n"
          "  --tcp-ports LO-HI public TCP ports tunnels may serve (default none)\n"
          "  --tcp-bind ADDR   address the public TCP ports listen on (default 0.0.0.0)\n"
          "  --threads N       reactor threads (default: online CPUs)\n"
          "  --config FILE     read settings from FILE first (key = value, keys as the long\n"
          "                    flags); flags on the command line override it\n"
          "  --print-config    print the effective settings as one JSON object and exit\n",
          f);
}

static int parse_duration_ns(const char *s, uint64_t *out)
{
    return et_cli_duration_ns(s, out);
}

/* dev_setup makes what `edged --dev` runs with: a self-signed certificate and a token key in
 * memory, and prints the originctl line that connects a local service on |dev_port|. */
static int dev_setup(et_edge_config *cfg, SSL_CTX **ctx, unsigned dev_port)
{
    char pin[ET_TLS_PIN_LEN];
    ET_GUARD(et_tls_server_ctx_new_selfsigned("localhost", ctx, pin));
    uint8_t raw[32];
    RAND_bytes(raw, sizeof(raw));
    /* the same text `openssl rand -base64 32` writes to a key file */
    cfg->token_key_len = (size_t)EVP_EncodeBlock(cfg->token_key, raw, sizeof(raw));
    static et_token_claims c;
    et_token_claims_init(&c);
    ET_GUARD(et_token_claims_set_sub(&c, "dev", 3));
    ET_GUARD(et_token_claims_add_host(&c, "localhost", 9));
    ET_GUARD(et_token_claims_add_host(&c, "*.localhost", 11));
    for (unsigned p = cfg->tcp_lo; p != 0 && p <= cfg->tcp_hi && p < cfg->tcp_lo + 4u; p++)
        ET_GUARD(et_token_claims_add_port(&c, p));
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + 30 * 86400;
    static char token[ET_TOKEN_MAX + 1];
    int n = et_token_sign(cfg->token_key, cfg->token_key_len, &c, token, sizeof(token));
    ET_GUARD(n);
    const char *host = strrchr(cfg->http_addr, ':');
    printf(
        "edged --dev: a development edge on loopback; its certificate and token key live in\n"
        "memory and die with this process. Public HTTP: http://localhost%s/\n"
        "Connect an origin that serves http://127.0.0.1:%u with:\n\n"
        "originctl connect --edge %s --token %s --pin %s --http localhost=http://127.0.0.1:%u\n\n",
        host ? host : ":8080", dev_port, cfg->tunnel_addr, token, pin, dev_port);
    fflush(stdout);
    return ET_OK;
}

static int parse_ports(const char *s, et_edge_config *cfg)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%s", s);
    char *dash = strchr(buf, '-');
    unsigned long lo, hi;
    if (dash == NULL)
        return ET_E_CONFIG;
    *dash = '\0';
    if (et_cli_port(buf, &lo) < 0 || et_cli_port(dash + 1, &hi) < 0 || lo > hi)
        return ET_E_CONFIG;
    cfg->tcp_lo = (uint16_t)lo;
    cfg->tcp_hi = (uint16_t)hi;
    return ET_OK;
}

/* signal_within is the drain's pause: a second signal stops the drain at once. */
static bool signal_within(void *set)
{
    return et_cli_signal_within(set, 10);
}

/* print_config writes the effective settings as one JSON object, keys named as the flags. */
static int print_config(const et_edge_config *cfg, const char *cert, const char *key,
                        const char *token_key, bool dev, unsigned long dev_port, et_log_format fmt,
                        et_log_level level, const char *admin)
{
    char ports[16] = "";
    if (cfg->tcp_lo != 0)
        snprintf(ports, sizeof(ports), "%u-%u", cfg->tcp_lo, cfg->tcp_hi);
    char origin_t[24], head_t[24], keepalive[24];
    snprintf(origin_t, sizeof(origin_t), "%llus",
             (unsigned long long)(cfg->origin_timeout_ns / 1000000000ull));
    snprintf(head_t, sizeof(head_t), "%llus",
             (unsigned long long)(cfg->head_timeout_ns / 1000000000ull));
    /* --keepalive stored a third of itself, rounded down to milliseconds */
    snprintf(keepalive, sizeof(keepalive), "%llus",
             ((unsigned long long)cfg->keepalive_ms * 3 + 999) / 1000);
    json_t *o = json_pack(
        "{s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:b, s:I}", "tunnel",
        cfg->tunnel_addr, "http", cfg->http_addr[0] ? cfg->http_addr : NULL, "cert", cert, "key",
        key, "token-key", token_key, "tcp-ports", ports, "tcp-bind", cfg->tcp_bind, "threads",
        (json_int_t)cfg->threads, "origin-timeout", origin_t, "head-timeout", head_t, "keepalive",
        keepalive, "log-format", fmt == ET_LOG_JSON ? "json" : "text", "log-level",
        et_log_level_name(level), "dev", dev, "dev-port", (json_int_t)dev_port);
    /* the flags of drain, limits and timeouts (durations in milliseconds, as they parse) */
    char route_wait[24], drain[24], idle[24];
    snprintf(route_wait, sizeof(route_wait), "%llums",
             (unsigned long long)(cfg->route_wait_ns / 1000000ull));
    snprintf(drain, sizeof(drain), "%llums",
             (unsigned long long)(cfg->drain_timeout_ns / 1000000ull));
    snprintf(idle, sizeof(idle), "%llums", (unsigned long long)(cfg->idle_timeout_ns / 1000000ull));
    if (o != NULL &&
        (json_object_set_new(o, "route-wait", json_string(route_wait)) < 0 ||
         json_object_set_new(o, "drain-timeout", json_string(drain)) < 0 ||
         json_object_set_new(o, "idle-timeout", json_string(idle)) < 0 ||
         json_object_set_new(o, "max-tunnels", json_integer(cfg->max_tunnels)) < 0 ||
         json_object_set_new(o, "max-streams", json_integer(cfg->max_streams)) < 0 ||
         json_object_set_new(o, "max-client-conns", json_integer(cfg->max_client_conns)) < 0 ||
         json_object_set_new(o, "rate-limit", json_integer(cfg->rate_per_min)) < 0 ||
         json_object_set_new(o, "rate-burst", json_integer(cfg->rate_burst)) < 0 ||
         json_object_set_new(o, "admin", admin[0] ? json_string(admin) : json_null()) < 0 ||
         json_object_set_new(o, "max-frame", json_integer(cfg->max_frame)) < 0 ||
         json_object_set_new(o, "tcp-congestion",
                             json_string(cfg->congestion[0] ? cfg->congestion : "system")) < 0)) {
        json_decref(o);
        return 1;
    }
    return et_cli_print_json(o);
}

/* The settings of one start (or SIGHUP reload): the flags and --config file, parsed. */
typedef struct settings {
    et_edge_config cfg;
    char cert[4096], key[4096], token_key[4096]; /* paths; "" when not given */
    char admin[128];                             /* --admin ADDR, or "" */
    bool dev, print;
    unsigned long dev_port;
    et_log_format fmt;
    et_log_level level;
} settings;

static const struct option opts[] = {
    {"tunnel", required_argument, NULL, 'u'},
    {"cert", required_argument, NULL, 'c'},
    {"key", required_argument, NULL, 'k'},
    {"token-key", required_argument, NULL, 'K'},
    {"tcp-ports", required_argument, NULL, 'p'},
    {"tcp-bind", required_argument, NULL, 'b'},
    {"threads", required_argument, NULL, 'n'},
    {"log-format", required_argument, NULL, 'f'},
    {"log-level", required_argument, NULL, 'l'},
    {"http", required_argument, NULL, 'H'},
    {"origin-timeout", required_argument, NULL, 'O'},
    {"head-timeout", required_argument, NULL, 'E'},
    {"dev", no_argument, NULL, 'D'},
    {"keepalive", required_argument, NULL, 'A'},
    {"dev-port", required_argument, NULL, 'P'},
    {"route-wait", required_argument, NULL, 'W'},
    {"drain-timeout", required_argument, NULL, 'T'},
    {"idle-timeout", required_argument, NULL, 'i'},
    {"max-tunnels", required_argument, NULL, 'm'},
    {"max-streams", required_argument, NULL, 's'},
    {"max-client-conns", required_argument, NULL, 'M'},
    {"rate-limit", required_argument, NULL, 'r'},
    {"rate-burst", required_argument, NULL, 'B'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {"config", required_argument, NULL, 'C'},
    {"print-config", no_argument, NULL, 'J'},
    {"admin", required_argument, NULL, 'a'},
    {"max-frame", required_argument, NULL, 'F'},
    {"tcp-congestion", required_argument, NULL, 'g'},
    {NULL, 0, NULL, 0},
};

/* load parses the command line and the --config file it names into |st|. Returns -1 to go on,
 * or the exit status (after --help, --version, --print-config or a usage error). */
static int load(int argc, char **argv, settings *st)
{
    static et_cli_args args; /* the --config file's settings, then the command line */
    /* No memset: et_cli_args_load sets what it uses, and zeroing the whole (mostly unused)
     * buffer would make all of its pages resident. */
    if (et_cli_args_load(&args, argc, argv, opts) < 0) {
        fprintf(stderr, "edged: %s\n", args.err);
        return 2;
    }
    memset(st, 0, sizeof(*st));
    et_edge_config *cfg = &st->cfg;
    snprintf(cfg->tunnel_addr, sizeof(cfg->tunnel_addr), "127.0.0.1:7443");
    snprintf(cfg->tcp_bind, sizeof(cfg->tcp_bind), "0.0.0.0");
    cfg->threads = et_cli_threads();
    cfg->origin_timeout_ns = 30ull * 1000000000ull;
    cfg->head_timeout_ns = 10ull * 1000000000ull;
    cfg->route_wait_ns = 5ull * 1000000000ull;
    cfg->drain_timeout_ns = 30ull * 1000000000ull;
    cfg->idle_timeout_ns = 3600ull * 1000000000ull;
    cfg->max_tunnels = 1000;
    cfg->max_streams = 10000;
    cfg->max_client_conns = 1024;
    cfg->max_frame = ET_FRAME_MAX_DEFAULT;
    snprintf(cfg->congestion, sizeof(cfg->congestion), "%s", ET_CC_DEFAULT);
    bool burst_set = false;
    cfg->keepalive_ms = 5000; /* a dead peer is noticed within 15 s */
    const char *cert = NULL, *key = NULL, *token_key = NULL;
    st->dev_port = 3000;
    st->fmt = ET_LOG_TEXT;
    st->level = ET_LOG_INFO;
    int opt;
    while ((opt = getopt_long(args.argc, args.argv, "", opts, NULL)) != -1) {
        unsigned long v;
        int rv = ET_OK;
        switch (opt) {
        case 'u': snprintf(cfg->tunnel_addr, sizeof(cfg->tunnel_addr), "%s", optarg); break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'K': token_key = optarg; break;
        case 'p': rv = parse_ports(optarg, cfg); break;
        case 'b': snprintf(cfg->tcp_bind, sizeof(cfg->tcp_bind), "%s", optarg); break;
        case 'n':
            rv = et_cli_uint(optarg, 1, ET_MAX_WORKERS, &v);
            cfg->threads = (unsigned)v;
            break;
        case 'f': rv = et_cli_log_format(optarg, &st->fmt); break;
        case 'l': rv = et_cli_log_level(optarg, &st->level); break;
        case 'H': snprintf(cfg->http_addr, sizeof(cfg->http_addr), "%s", optarg); break;
        case 'O':
            rv = parse_duration_ns(optarg, &cfg->origin_timeout_ns);
            rv = rv == ET_OK && cfg->origin_timeout_ns == 0 ? ET_E_CONFIG : rv;
            break;
        case 'E':
            rv = parse_duration_ns(optarg, &cfg->head_timeout_ns);
            rv = rv == ET_OK && cfg->head_timeout_ns == 0 ? ET_E_CONFIG : rv;
            break;
        case 'D': st->dev = true; break;
        case 'A': {
            uint64_t ns = 0;
            rv = parse_duration_ns(optarg, &ns);
            cfg->keepalive_ms = (uint32_t)(ns / 3000000ull); /* three quiet intervals = dead */
            if (rv == ET_OK && cfg->keepalive_ms == 0)
                rv = ET_E_CONFIG;
            break;
        }
        case 'P': rv = et_cli_port(optarg, &st->dev_port); break;
        case 'g': rv = et_cli_congestion(optarg, cfg->congestion, sizeof(cfg->congestion)); break;
        case 'W': rv = parse_duration_ns(optarg, &cfg->route_wait_ns); break;
        case 'T': rv = parse_duration_ns(optarg, &cfg->drain_timeout_ns); break;
        case 'i': rv = parse_duration_ns(optarg, &cfg->idle_timeout_ns); break;
        case 'm':
            rv = et_cli_uint(optarg, 0, UINT32_MAX, &v);
            cfg->max_tunnels = (uint32_t)v;
            break;
        case 's':
            rv = et_cli_uint(optarg, 0, UINT32_MAX, &v);
            cfg->max_streams = (uint32_t)v;
            break;
        case 'M':
            rv = et_cli_uint(optarg, 0, UINT32_MAX, &v);
            cfg->max_client_conns = (uint32_t)v;
            break;
        case 'r':
            rv = et_cli_uint(optarg, 0, 1000000, &v);
            cfg->rate_per_min = (uint32_t)v;
            break;
        case 'B':
            rv = et_cli_uint(optarg, 1, 1000000, &v);
            cfg->rate_burst = (uint32_t)v;
            burst_set = true;
            break;
        case 'V': printf("edged %s (protocol %d)\n", ET_VERSION, ET_VERSION_PROTOCOL); return 0;
        case 'h': usage(stdout); return 0;
        case 'C': break; /* read by et_cli_args_load */
        case 'J': st->print = true; break;
        case 'a': snprintf(st->admin, sizeof(st->admin), "%s", optarg); break;
        case 'F':
            rv = et_cli_uint(optarg, ET_FRAME_MAX_MIN, ET_FRAME_MAX_DEFAULT, &v);
            cfg->max_frame = (uint32_t)v;
            break;
        default: usage(stderr); return 2;
        }
        if (rv < 0) {
            fprintf(stderr, "edged: %sbad value '%s'\n", et_cli_args_where(&args, optarg), optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind != args.argc || (!st->dev && (cert == NULL || key == NULL || token_key == NULL))) {
        usage(stderr);
        return 2;
    }
    if (!burst_set)
        cfg->rate_burst = cfg->rate_per_min / 10 > 0 ? cfg->rate_per_min / 10 : 1;
    if (st->dev) {
        /* Loopback only, whatever else was asked. */
        if (cfg->http_addr[0] == '\0')
            snprintf(cfg->http_addr, sizeof(cfg->http_addr), "127.0.0.1:8080");
        snprintf(cfg->tcp_bind, sizeof(cfg->tcp_bind), "127.0.0.1");
    }
    snprintf(st->cert, sizeof(st->cert), "%s", cert ? cert : "");
    snprintf(st->key, sizeof(st->key), "%s", key ? key : "");
    snprintf(st->token_key, sizeof(st->token_key), "%s", token_key ? token_key : "");
    if (st->print)
        return print_config(cfg, cert, key, token_key, st->dev, st->dev_port, st->fmt, st->level,
                            st->admin);
    return -1;
}

/* read_secrets reads the token key and makes the TLS context that |st| names (or, with --dev,
 * makes both in memory). Returns ET_OK or an error (logged). */
static int read_secrets(settings *st, SSL_CTX **ctx)
{
    et_edge_config *cfg = &st->cfg;
    if (st->dev) {
        if (dev_setup(cfg, ctx, (unsigned)st->dev_port) < 0) {
            et_logf(ET_LOG_ERROR, "dev_setup_failed", "at=%s", et_error_where());
            return ET_E_CONFIG;
        }
        return ET_OK;
    }
    ET_GUARD(et_read_key_file(st->token_key, cfg->token_key, &cfg->token_key_len));
    if (et_tls_server_ctx_new(st->cert, st->key, ctx) < 0) {
        char buf[256];
        et_logf(ET_LOG_ERROR, "tls_setup_failed", "cert=%s key=%s detail=\"%s\"", st->cert, st->key,
                et_tls_err_string(buf, sizeof(buf)));
        return ET_E_CONFIG;
    }
    return ET_OK;
}

/* reload (SIGHUP) reads the flags, the --config file, the certificate and the token key again
 * and applies them to the running edge; on any error the old settings stay (logged). */
static void reload(et_engine *eng, int argc, char **argv)
{
    static settings st;
    SSL_CTX *ctx = NULL;
    if (load(argc, argv, &st) != -1 || st.dev) {
        et_logf(ET_LOG_WARN, "reload_failed", "why=\"%s\"",
                st.dev ? "--dev keeps its in-memory certificate and key" : "bad settings");
        return;
    }
    if (read_secrets(&st, &ctx) < 0) {
        et_logf(ET_LOG_WARN, "reload_failed", "why=\"certificate or token key\"");
        return;
    }
    et_edge_reload(eng, &st.cfg, ctx);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return et_edged_token_main(argc - 1, argv + 1);

    static settings st;
    int rc = load(argc, argv, &st);
    if (rc != -1)
        return rc;
    et_edge_config *cfg = &st.cfg;
    et_log_init(st.fmt, st.level);
    SSL_CTX *ctx = NULL;
    if (read_secrets(&st, &ctx) < 0)
        return 1;

    sigset_t set;
    et_cli_block_signals(&set);
    static et_engine eng;
    int rv = et_edge_start(&eng, cfg, ctx);
    if (rv == ET_OK && st.admin[0] != '\0')
        rv = et_edge_admin_start(&eng, st.admin);
    int status = 1;
    if (rv == ET_OK) {
        et_edge_admin_set_ready(&eng, true);
        int sig;
        while ((sig = et_cli_wait_signal_or_hup(&set)) == SIGHUP)
            reload(&eng, argc, argv);
        et_edge_admin_set_ready(&eng, false);
        et_logf(ET_LOG_INFO, "stopping", "signal=%d", sig);
        /* A rolling restart: a new edged already listens on the same ports (SO_REUSEPORT). */
        (void)et_edge_drain(&eng, signal_within, &set);
        status = 0;
    } else {
        et_logf(ET_LOG_ERROR, "start_failed", "err=\"%s\" at=%s", et_strerror(rv),
                et_error_where());
    }
    et_engine_stop(&eng);
    et_edge_admin_stop(&eng); /* before cleanup: what it posted to the workers is delivered */
    et_engine_log_stats(&eng);
    et_edge_cleanup(&eng);
    return status;
}
