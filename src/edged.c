/* edged: the public side of the tunnel. Flags, then the engine (edge.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
          "             [--keepalive DURATION] [--admin ADDR]\n"
          "             [--tcp-ports LO-HI] [--tcp-bind ADDR] [--threads N]\n"
          "             [--log-format text|json] [--log-level debug|info|warn|error]\n"
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
          "  --dev             development edge on loopback: self-signed certificate and token\n"
          "                    key in memory; prints the originctl line for --dev-port (3000)\n"
          "  --tunnel ADDR     where originctl connects (default 127.0.0.1:7443)\n"
          "  --tcp-ports LO-HI public TCP ports tunnels may serve (default none)\n"
          "  --tcp-bind ADDR   address the public TCP ports listen on (default 0.0.0.0)\n"
          "  --threads N       reactor threads (default: online CPUs)\n",
          f);
}

static int parse_duration_ns(const char *s, uint64_t *out)
{
    int64_t secs;
    if (et_duration_parse(s, &secs) < 0 || secs > 86400)
        return ET_E_CONFIG;
    *out = (uint64_t)secs * 1000000000ull;
    return ET_OK;
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

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return et_edged_token_main(argc - 1, argv + 1);

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
        {"admin", required_argument, NULL, 'a'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static et_edge_config cfg;
    snprintf(cfg.tunnel_addr, sizeof(cfg.tunnel_addr), "127.0.0.1:7443");
    snprintf(cfg.tcp_bind, sizeof(cfg.tcp_bind), "0.0.0.0");
    cfg.threads = et_cli_threads();
    cfg.origin_timeout_ns = 30ull * 1000000000ull;
    cfg.head_timeout_ns = 10ull * 1000000000ull;
    cfg.keepalive_ms = 5000; /* a dead peer is noticed within 15 s */
    const char *cert = NULL, *key = NULL, *token_key = NULL, *admin = NULL;
    bool dev = false;
    unsigned long dev_port = 3000;
    et_log_format fmt = ET_LOG_TEXT;
    et_log_level level = ET_LOG_INFO;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        unsigned long v;
        int rv = ET_OK;
        switch (opt) {
        case 'u': snprintf(cfg.tunnel_addr, sizeof(cfg.tunnel_addr), "%s", optarg); break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'K': token_key = optarg; break;
        case 'p': rv = parse_ports(optarg, &cfg); break;
        case 'b': snprintf(cfg.tcp_bind, sizeof(cfg.tcp_bind), "%s", optarg); break;
        case 'n':
            rv = et_cli_uint(optarg, 1, ET_MAX_WORKERS, &v);
            cfg.threads = (unsigned)v;
            break;
        case 'f': rv = et_cli_log_format(optarg, &fmt); break;
        case 'l': rv = et_cli_log_level(optarg, &level); break;
        case 'H': snprintf(cfg.http_addr, sizeof(cfg.http_addr), "%s", optarg); break;
        case 'O': rv = parse_duration_ns(optarg, &cfg.origin_timeout_ns); break;
        case 'E': rv = parse_duration_ns(optarg, &cfg.head_timeout_ns); break;
        case 'D': dev = true; break;
        case 'A': {
            uint64_t ns = 0;
            rv = parse_duration_ns(optarg, &ns);
            cfg.keepalive_ms = (uint32_t)(ns / 3000000ull); /* three quiet intervals = dead */
            if (rv == ET_OK && cfg.keepalive_ms == 0)
                rv = ET_E_CONFIG;
            break;
        }
        case 'P': rv = et_cli_port(optarg, &dev_port); break;
        case 'a': admin = optarg; break;
        case 'V': printf("edged %s (protocol %d)\n", ET_VERSION, ET_VERSION_PROTOCOL); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (rv < 0) {
            fprintf(stderr, "edged: bad value '%s'\n", optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || (!dev && (cert == NULL || key == NULL || token_key == NULL))) {
        usage(stderr);
        return 2;
    }
    et_log_init(fmt, level);
    SSL_CTX *ctx = NULL;
    if (dev) {
        /* Loopback only, whatever else was asked. */
        if (cfg.http_addr[0] == '\0')
            snprintf(cfg.http_addr, sizeof(cfg.http_addr), "127.0.0.1:8080");
        snprintf(cfg.tcp_bind, sizeof(cfg.tcp_bind), "127.0.0.1");
        if (dev_setup(&cfg, &ctx, (unsigned)dev_port) < 0) {
            et_logf(ET_LOG_ERROR, "dev_setup_failed", "at=%s", et_error_where());
            return 1;
        }
    } else if (et_read_key_file(token_key, cfg.token_key, &cfg.token_key_len) < 0) {
        return 1;
    } else if (et_tls_server_ctx_new(cert, key, &ctx) < 0) {
        char buf[256];
        et_logf(ET_LOG_ERROR, "tls_setup_failed", "cert=%s key=%s detail=\"%s\"", cert, key,
                et_tls_err_string(buf, sizeof(buf)));
        return 1;
    }

    sigset_t set;
    et_cli_block_signals(&set);
    static et_engine eng;
    int rv = et_edge_start(&eng, &cfg, ctx);
    if (rv == ET_OK && admin != NULL)
        rv = et_edge_admin_start(&eng, admin);
    int status = 1;
    if (rv == ET_OK) {
        et_edge_admin_set_ready(&eng, true);
        int sig = et_cli_wait_signal(&set);
        et_edge_admin_set_ready(&eng, false);
        et_logf(ET_LOG_INFO, "stopping", "signal=%d", sig);
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
