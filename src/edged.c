/* edged: the public side of the tunnel. */
#include <stdio.h>
#include <string.h>

#include "et/version.h"

static void usage(FILE *f)
{
    fputs("usage: edged [--dev] [--tunnel ADDR] [--http ADDR] [--admin ADDR] [--cert FILE]\n"
          "             [--key FILE] [--token-key FILE] [--tcp-ports LO-HI] [--threads N]\n"
          "       edged token --token-key FILE --name NAME [--http HOST]... [--tcp PORT]...\n"
          "             [--ttl DURATION]\n"
          "       edged --version | --help\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("edged %s (protocol %d)\n", ET_VERSION, ET_VERSION_PROTOCOL);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
