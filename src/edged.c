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
#include "et/version.h"

static void usage(FILE *f)
{
    fputs("usage: edged [--tunnel ADDR] --cert FILE --key FILE --token-key FILE\n"
          "             [--tcp-ports LO-HI] [--tcp-bind ADDR] [--threads N]\n"
          "             [--log-format text|json] [--log-level debug|info|warn|error]\n"
          "       edged token --token-key FILE --name NAME [--http HOST]... [--tcp PORT]...\n"
          "             [--ttl DURATION]\n"
          "       edged --version | --help\n"
          "\n"
          "  --tunnel ADDR     where originctl connects (default 127.0.0.1:7443)\n"
          "  --tcp-ports LO-HI public TCP ports tunnels may serve (default none)\n"
          "  --tcp-bind ADDR   address the public TCP ports listen on (default 0.0.0.0)\n"
          "  --threads N       reactor threads (default: online CPUs)\n",
          f);
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
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static et_edge_config cfg;
    snprintf(cfg.tunnel_addr, sizeof(cfg.tunnel_addr), "127.0.0.1:7443");
    snprintf(cfg.tcp_bind, sizeof(cfg.tcp_bind), "0.0.0.0");
    cfg.threads = et_cli_threads();
    const char *cert = NULL, *key = NULL, *token_key = NULL;
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
    if (optind != argc || cert == NULL || key == NULL || token_key == NULL) {
        usage(stderr);
        return 2;
    }
    et_log_init(fmt, level);
    if (et_read_key_file(token_key, cfg.token_key, &cfg.token_key_len) < 0)
        return 1;
    SSL_CTX *ctx = NULL;
    if (et_tls_server_ctx_new(cert, key, &ctx) < 0) {
        char buf[256];
        et_logf(ET_LOG_ERROR, "tls_setup_failed", "cert=%s key=%s detail=\"%s\"", cert, key,
                et_tls_err_string(buf, sizeof(buf)));
        return 1;
    }

    sigset_t set;
    et_cli_block_signals(&set);
    static et_engine eng;
    int rv = et_edge_start(&eng, &cfg, ctx);
    int status = 1;
    if (rv == ET_OK) {
        int sig = et_cli_wait_signal(&set);
        et_logf(ET_LOG_INFO, "stopping", "signal=%d", sig);
        status = 0;
    } else {
        et_logf(ET_LOG_ERROR, "start_failed", "err=\"%s\" at=%s", et_strerror(rv),
                et_error_where());
    }
    et_engine_stop(&eng);
    et_engine_log_stats(&eng);
    et_edge_cleanup(&eng);
    return status;
}
