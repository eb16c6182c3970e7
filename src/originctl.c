/* originctl: the private side of the tunnel. Flags, then the engine (origin.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "et/cli.h"
#include "et/logf.h"
#include "et/origin.h"
#include "et/resolve.h"
#include "et/tls.h"
#include "et/token.h"
#include "et/version.h"

static void usage(FILE *f)
{
    fputs(
        "usage: originctl connect --edge HOST:PORT --token TOKEN\n"
        "             (--ca FILE | --pin sha256:HEX | --insecure)\n"
        "             [--http HOST=http://ADDR:PORT]... [--tcp PUBLIC_PORT=HOST:PORT]...\n"
        "             [--proxy-protocol] [--data-conns N] [--no-control] [--drain-timeout DUR]\n"
        "             [--threads N] [--log-format text|json] [--log-level LEVEL]\n"
        "             [--config FILE] [--print-config] [--admin ADDR]\n"
        "             [--tcp-congestion NAME|system]\n"
        "       originctl status [--admin ADDR] [--json]\n"
        "       originctl --version | --help\n"
        "\n"
        "  --http photos.example.com=http://127.0.0.1:3000\n"
        "                            serve that host (or *.example.com) from a local HTTP service\n"
        "  --tcp 20022=127.0.0.1:22  serve public port 20022 of the edge from a local service\n"
        "  --proxy-protocol          send a PROXY protocol v2 header to the local service first\n"
        "  --data-conns N            data sockets in the pool (default 4, at most 16)\n"
        "  --no-control              legacy mode: no control socket, cancels on data sockets\n"
        "  --drain-timeout DUR       SIGTERM: send GOAWAY (the edge opens no new stream here),\n"
        "                            let in-flight streams finish for up to this long, then exit\n"
        "                            (default 30s; a second signal exits at once)\n"
        "  --tcp-congestion NAME     TCP congestion control of tunnel sockets (default bbr,\n"
        "                            which keeps the queue short on a congested link; system =\n"
        "                            the host's; unavailable: the host's, with a warning)\n"
        "  --insecure                do not verify the edge (development only)\n"
        "  --config FILE             read settings from FILE first (key = value, keys as the\n"
        "                            long flags); flags on the command line override it\n"
        "  --print-config            print the effective settings as one JSON object and exit\n"
        "  --admin ADDR              admin API: /healthz /metrics /status (e.g. 127.0.0.1:7071;\n"
        "                            `originctl status` asks 127.0.0.1:7071 unless told)\n",
        f);
}

/* host_of copies the host part of "host:port" / "[v6]:port" into |out|. */
static int host_of(const char *addr, char *out, size_t n)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr)
        return ET_E_CONFIG;
    const char *start = addr;
    size_t len = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']') {
        start++;
        len -= 2;
    }
    if (len == 0 || len >= n)
        return ET_E_CONFIG;
    memcpy(out, start, len);
    out[len] = '\0';
    return ET_OK;
}

/* edge_addr_ok: an address literal, or a name to look up (resolve.h), with a port. */
static int edge_addr_ok(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char host[ET_RESOLVE_HOST_MAX + 1];
    uint16_t port;
    if (et_sock_parse_addr(addr, &ss, &len) == ET_OK)
        return ET_OK;
    return et_resolver_split(addr, host, sizeof(host), &port);
}

static int add_tcp_route(et_origin_config *cfg, const char *spec)
{
    const char *eq = strchr(spec, '=');
    char port[8];
    unsigned long p;
    if (eq == NULL || (size_t)(eq - spec) >= sizeof(port) || cfg->ntcp == ET_ROUTES_MAX)
        return ET_E_CONFIG;
    memcpy(port, spec, (size_t)(eq - spec));
    port[eq - spec] = '\0';
    if (et_cli_port(port, &p) < 0)
        return ET_E_CONFIG;
    et_origin_tcp_route *r = &cfg->tcp[cfg->ntcp];
    if (et_sock_parse_addr(eq + 1, &r->local, &r->local_len) < 0)
        return ET_E_CONFIG;
    r->public_port = (uint16_t)p;
    cfg->ntcp++;
    return ET_OK;
}

/* add_http_route parses HOST=URL, URL being http://HOST:PORT[/...] or HOST:PORT. */
static int add_http_route(et_origin_config *cfg, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || (size_t)(eq - spec) > ET_HOST_MAX ||
        cfg->nhttp == ET_ROUTES_MAX)
        return ET_E_CONFIG;
    et_origin_http_route *r = &cfg->http[cfg->nhttp];
    size_t n = (size_t)(eq - spec);
    for (size_t i = 0; i < n; i++) {
        char c = spec[i];
        r->pattern[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    r->pattern[n] = '\0';
    static et_token_claims check; /* the token's pattern rules are the route's rules */
    et_token_claims_init(&check);
    if (et_token_claims_add_host(&check, r->pattern, n) < 0)
        return ET_E_CONFIG;
    const char *url = eq + 1;
    if (strncmp(url, "http://", 7) == 0)
        url += 7;
    else if (strstr(url, "://") != NULL)
        return ET_E_CONFIG; /* only plain HTTP toward the local service */
    char addr[300];
    size_t alen = strcspn(url, "/");
    if (alen == 0 || alen >= sizeof(addr))
        return ET_E_CONFIG;
    memcpy(addr, url, alen);
    addr[alen] = '\0';
    if (et_sock_parse_addr(addr, &r->local, &r->local_len) < 0)
        return ET_E_CONFIG;
    cfg->nhttp++;
    return ET_OK;
}

/* signal_within is the drain's pause: a second signal stops the drain at once. */
static bool signal_within(void *set)
{
    return et_cli_signal_within(set, 10);
}

/* print_config writes the effective settings as one JSON object, keys named as the flags; the
 * token only as "<set>". */
static int print_config(const et_origin_config *cfg, const et_tls_client_opts *tls,
                        et_log_format fmt, et_log_level level, const char *admin)
{
    json_t *http = json_array(), *tcp = json_array();
    char addr[80], text[ET_HOST_MAX + 96];
    for (unsigned i = 0; http != NULL && i < cfg->nhttp; i++) {
        snprintf(text, sizeof(text), "%s=http://%s", cfg->http[i].pattern,
                 et_cli_addr_text(&cfg->http[i].local, addr, sizeof(addr)));
        json_array_append_new(http, json_string(text));
    }
    for (unsigned i = 0; tcp != NULL && i < cfg->ntcp; i++) {
        snprintf(text, sizeof(text), "%u=%s", cfg->tcp[i].public_port,
                 et_cli_addr_text(&cfg->tcp[i].local, addr, sizeof(addr)));
        json_array_append_new(tcp, json_string(text));
    }
    /* "o" takes the arrays' references, also when json_pack fails */
    json_t *o =
        json_pack("{s:s, s:s?, s:s?, s:s?, s:b, s:o, s:o, s:b, s:I, s:b, s:I, s:s, s:s}", "edge",
                  cfg->edge_addr, "token", cfg->token[0] ? "<set>" : NULL, "ca", tls->ca_file,
                  "pin", tls->pin, "insecure", tls->insecure, "http", http, "tcp", tcp,
                  "proxy-protocol", cfg->proxy_protocol, "data-conns", (json_int_t)cfg->data_conns,
                  "no-control", cfg->no_control, "threads", (json_int_t)cfg->threads, "log-format",
                  fmt == ET_LOG_JSON ? "json" : "text", "log-level", et_log_level_name(level));
    char drain[24];
    snprintf(drain, sizeof(drain), "%llums",
             (unsigned long long)(cfg->drain_timeout_ns / 1000000ull));
    if (o != NULL &&
        (json_object_set_new(o, "drain-timeout", json_string(drain)) < 0 ||
         json_object_set_new(o, "admin", admin ? json_string(admin) : json_null()) < 0 ||
         json_object_set_new(o, "tcp-congestion",
                             json_string(cfg->congestion[0] ? cfg->congestion : "system")) < 0)) {
        json_decref(o);
        return 1;
    }
    return et_cli_print_json(o);
}

/* The settings of one start (or SIGHUP reload): the flags and --config file, parsed. */
typedef struct settings {
    et_origin_config cfg;
    char ca[4096], pin[128]; /* "" when not given */
    bool insecure, print;
    char admin[128]; /* --admin ADDR, or "" */
    et_log_format fmt;
    et_log_level level;
} settings;

static const struct option opts[] = {
    {"edge", required_argument, NULL, 'e'},
    {"token", required_argument, NULL, 't'},
    {"ca", required_argument, NULL, 'c'},
    {"pin", required_argument, NULL, 'p'},
    {"insecure", no_argument, NULL, 'I'},
    {"tcp", required_argument, NULL, 'T'},
    {"http", required_argument, NULL, 'H'},
    {"proxy-protocol", no_argument, NULL, 'P'},
    {"data-conns", required_argument, NULL, 'd'},
    {"no-control", no_argument, NULL, 'N'},
    {"drain-timeout", required_argument, NULL, 'D'},
    {"tcp-congestion", required_argument, NULL, 'g'},
    {"threads", required_argument, NULL, 'n'},
    {"log-format", required_argument, NULL, 'f'},
    {"log-level", required_argument, NULL, 'l'},
    {"admin", required_argument, NULL, 'a'},
    {"help", no_argument, NULL, 'h'},
    {"config", required_argument, NULL, 'C'},
    {"print-config", no_argument, NULL, 'J'},
    {NULL, 0, NULL, 0},
};

/* load parses the command line and the --config file it names into |st|. Returns -1 to go on,
 * or the exit status (after --help, --print-config or a usage error). */
static int load(int argc, char **argv, settings *st)
{
    static et_cli_args args; /* the --config file's settings, then the command line */
    /* No memset: et_cli_args_load sets what it uses, and zeroing the whole (mostly unused)
     * buffer would make all of its pages resident. */
    if (et_cli_args_load(&args, argc, argv, opts) < 0) {
        fprintf(stderr, "originctl: %s\n", args.err);
        return 2;
    }
    memset(st, 0, sizeof(*st));
    et_origin_config *cfg = &st->cfg;
    cfg->data_conns = 4;
    cfg->drain_timeout_ns = 30ull * 1000000000ull;
    snprintf(cfg->congestion, sizeof(cfg->congestion), "%s", ET_CC_DEFAULT);
    cfg->threads = et_cli_threads();
    st->fmt = ET_LOG_TEXT;
    st->level = ET_LOG_INFO;
    int opt;
    while ((opt = getopt_long(args.argc, args.argv, "", opts, NULL)) != -1) {
        unsigned long v;
        int rv = ET_OK;
        switch (opt) {
        case 'e':
            if (strlen(optarg) >= sizeof(cfg->edge_addr)) {
                rv = ET_E_CONFIG; /* never cut short: that could change the port */
                break;
            }
            snprintf(cfg->edge_addr, sizeof(cfg->edge_addr), "%s", optarg);
            rv = host_of(optarg, cfg->edge_host, sizeof(cfg->edge_host));
            if (rv == ET_OK)
                rv = edge_addr_ok(optarg);
            break;
        case 't':
            if (strlen(optarg) > ET_TOKEN_MAX)
                rv = ET_E_CONFIG;
            else
                memcpy(cfg->token, optarg, strlen(optarg) + 1);
            break;
        case 'c':
            if (strlen(optarg) >= sizeof(st->ca))
                rv = ET_E_CONFIG;
            else
                memcpy(st->ca, optarg, strlen(optarg) + 1);
            break;
        case 'p':
            if (strlen(optarg) >= sizeof(st->pin))
                rv = ET_E_CONFIG;
            else
                memcpy(st->pin, optarg, strlen(optarg) + 1);
            break;
        case 'I': st->insecure = true; break;
        case 'T': rv = add_tcp_route(cfg, optarg); break;
        case 'H': rv = add_http_route(cfg, optarg); break;
        case 'P': cfg->proxy_protocol = true; break;
        case 'd':
            rv = et_cli_uint(optarg, 1, ET_MAX_DATA_SOCKS, &v);
            cfg->data_conns = (unsigned)v;
            break;
        case 'N': cfg->no_control = true; break;
        case 'D': rv = et_cli_duration_ns(optarg, &cfg->drain_timeout_ns); break;
        case 'g': rv = et_cli_congestion(optarg, cfg->congestion, sizeof(cfg->congestion)); break;
        case 'n':
            rv = et_cli_uint(optarg, 1, ET_MAX_WORKERS, &v);
            cfg->threads = (unsigned)v;
            break;
        case 'f': rv = et_cli_log_format(optarg, &st->fmt); break;
        case 'l': rv = et_cli_log_level(optarg, &st->level); break;
        case 'a': snprintf(st->admin, sizeof(st->admin), "%s", optarg); break;
        case 'h': usage(stdout); return 0;
        case 'C': break; /* read by et_cli_args_load */
        case 'J': st->print = true; break;
        default: usage(stderr); return 2;
        }
        if (rv < 0) {
            fprintf(stderr, "originctl: %sbad value '%s'\n", et_cli_args_where(&args, optarg),
                    optarg ? optarg : "");
            return 2;
        }
    }
    if (optind != args.argc || cfg->edge_addr[0] == '\0' || cfg->token[0] == '\0') {
        usage(stderr);
        return 2;
    }
    et_tls_client_opts tls = {st->ca[0] ? st->ca : NULL, st->pin[0] ? st->pin : NULL, st->insecure};
    if (st->print)
        return print_config(cfg, &tls, st->fmt, st->level, st->admin[0] ? st->admin : NULL);
    return -1;
}

/* client_ctx makes the TLS context |st| asks for. Returns ET_OK or an error (logged). */
static int client_ctx(const settings *st, SSL_CTX **ctx)
{
    et_tls_client_opts tls = {st->ca[0] ? st->ca : NULL, st->pin[0] ? st->pin : NULL, st->insecure};
    if (et_tls_client_ctx_new(&tls, ctx) < 0) {
        char buf[256];
        et_logf(ET_LOG_ERROR, "tls_setup_failed",
                "why=\"give exactly one of --ca, --pin, --insecure\" detail=\"%s\"",
                et_tls_err_string(buf, sizeof(buf)));
        return ET_E_CONFIG;
    }
    return ET_OK;
}

/* reload (SIGHUP) reads the flags and the --config file again and starts a session with them;
 * on any error the running one stays (logged). */
static void reload(et_engine *eng, int argc, char **argv)
{
    static settings st;
    SSL_CTX *ctx = NULL;
    if (load(argc, argv, &st) != -1 || client_ctx(&st, &ctx) < 0) {
        et_logf(ET_LOG_WARN, "reload_failed", "why=\"bad settings\"");
        return;
    }
    et_origin_reload(eng, &st.cfg, ctx);
}

static int connect_main(int argc, char **argv)
{
    static settings st;
    int rc = load(argc, argv, &st);
    if (rc != -1)
        return rc;
    et_log_init(st.fmt, st.level);
    if (st.insecure)
        et_logf(ET_LOG_WARN, "insecure", "why=\"--insecure: the edge is not verified\"");
    SSL_CTX *ctx = NULL;
    if (client_ctx(&st, &ctx) < 0)
        return 2;
    sigset_t set;
    et_cli_block_signals(&set);
    static et_engine eng;
    int rv = et_origin_start(&eng, &st.cfg, ctx);
    if (rv == ET_OK && st.admin[0] != '\0')
        rv = et_origin_admin_start(&eng, st.admin);
    int status = 1;
    if (rv == ET_OK) {
        int sig;
        while ((sig = et_cli_wait_signal_or_hup(&set)) == SIGHUP)
            reload(&eng, argc, argv);
        status = atomic_load(&eng.exit_code);
        et_logf(ET_LOG_INFO, "stopping", "signal=%d", sig);
        if (status == 0)
            (void)et_origin_drain(&eng, signal_within, &set);
    } else {
        et_logf(ET_LOG_ERROR, "start_failed", "err=\"%s\" at=%s", et_strerror(rv),
                et_error_where());
    }
    et_engine_stop(&eng);
    et_origin_admin_stop(&eng);
    et_origin_control_cleanup(&eng);
    et_engine_log_stats(&eng);
    et_origin_cleanup(&eng);
    return status;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("originctl %s (protocol %d)\n", ET_VERSION, ET_VERSION_PROTOCOL);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "connect") == 0)
        return connect_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "status") == 0)
        return et_origin_status_main(argc - 1, argv + 1);
    usage(stderr);
    return 2;
}
