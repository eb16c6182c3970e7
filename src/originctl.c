/* originctl: the private side of the tunnel. */
#include <stdio.h>
#include <string.h>

#include "et/version.h"

static void usage(FILE *f)
{
    fputs("usage: originctl connect --edge HOST:PORT --token TOKEN [--ca FILE | --pin sha256:...]\n"
          "             [--http HOST=URL]... [--tcp PORT=ADDR]... [--data-conns N] [--no-control]\n"
          "             [--admin ADDR] [--threads N]\n"
          "       originctl status [--admin ADDR] [--json]\n"
          "       originctl --version | --help\n",
          f);
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
    usage(stderr);
    return 2;
}
