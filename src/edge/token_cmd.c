/* token_cmd.c: `edged token`: issue a tunnel token (edge.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "et/cli.h"
#include "et/edge.h"
#include "et/logf.h"
#include "et/token.h"

static void token_usage(FILE *f)
{
    fputs("usage: edged token --token-key FILE --name NAME [--http HOST]... [--tcp PORT]...\n"
          "                   [--ttl DURATION] [--jti ID]\n"
          "  DURATION: a number and one unit of s, m, h, d (90s, 15m, 1h, 30d); default 30d\n",
          f);
}

int et_edged_token_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"token-key", required_argument, NULL, 'k'},
        {"name", required_argument, NULL, 'n'},
        {"http", required_argument, NULL, 'H'},
        {"tcp", required_argument, NULL, 't'},
        {"ttl", required_argument, NULL, 'T'},
        {"jti", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static et_token_claims c;
    et_token_claims_init(&c);
    const char *key_path = NULL, *ttl = "30d";
    bool named = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        unsigned long port;
        switch (opt) {
        case 'k': key_path = optarg; break;
        case 'n':
            if (et_token_claims_set_sub(&c, optarg, strlen(optarg)) < 0) {
                fprintf(stderr, "edged token: bad --name '%s' (1..64 of [A-Za-z0-9._-])\n", optarg);
                return 2;
            }
            named = true;
            break;
        case 'H':
            if (et_token_claims_add_host(&c, optarg, strlen(optarg)) < 0) {
                fprintf(stderr, "edged token: bad --http '%s'\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (et_cli_port(optarg, &port) < 0 ||
                et_token_claims_add_port(&c, (uint32_t)port) < 0) {
                fprintf(stderr, "edged token: bad --tcp '%s'\n", optarg);
                return 2;
            }
            break;
        case 'T': ttl = optarg; break;
        case 'j':
            if (et_token_claims_set_jti(&c, optarg, strlen(optarg)) < 0) {
                fprintf(stderr, "edged token: bad --jti\n");
                return 2;
            }
            break;
        case 'h': token_usage(stdout); return 0;
        default: token_usage(stderr); return 2;
        }
    }
    int64_t secs;
    if (key_path == NULL || !named || optind != argc) {
        token_usage(stderr);
        return 2;
    }
    if (et_duration_parse(ttl, &secs) < 0) {
        fprintf(stderr, "edged token: bad --ttl '%s'\n", ttl);
        return 2;
    }
    static uint8_t key[ET_EDGE_KEY_MAX];
    size_t keylen;
    if (et_read_key_file(key_path, key, &keylen) < 0)
        return 1;
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + secs;
    static char out[ET_TOKEN_MAX + 1];
    int n = et_token_sign(key, keylen, &c, out, sizeof(out));
    if (n < 0) {
        fprintf(stderr, "edged token: cannot sign: %s\n", et_strerror(n));
        return 1;
    }
    printf("# tunnel %s, expires in %s\n%s\n", c.sub, ttl, out);
    return 0;
}
