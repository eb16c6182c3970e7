/* fuzz/config.c: the --config file loader (et/cli.h) under libFuzzer and AFL++.
 *
 * Reaches: et_cli_args_load (find_config over the command line, read_file, the NUL and size
 * checks, inih's parse through cfg_reader with its line counting and ET_CLI_LINE_MAX cap,
 * on_pair's key and true/false checks, add_arg's limits) and et_cli_args_where.
 *
 * The input is the file's bytes, written to a memfd that is loaded as "/proc/self/fd/N" with a
 * getopt table shaped like originctl's. On success every argument from the file must be
 * "--name" or "--name=value" for a name of the table that is a setting, its line numbers must
 * rise and lie within the file, and the command line must follow the file's arguments
 * unchanged. On failure the message must name the file. Round trip: the loaded arguments are
 * written back as "name = value" lines and loaded again; the argument list must come out the
 * same. Any violation aborts.
 *
 * Deterministic: the memfd is rewritten for each input; no clock, no randomness. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "et/cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct option opts[] = {
    {"edge", required_argument, NULL, 'e'},
    {"http", required_argument, NULL, 'H'},
    {"tcp", required_argument, NULL, 'T'},
    {"no-control", no_argument, NULL, 'N'},
    {"insecure", no_argument, NULL, 'I'},
    {"config", required_argument, NULL, 'C'},
    {"print-config", no_argument, NULL, 'J'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static et_cli_args args, again;
static char path[64];
static int fd = -1;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void put(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        fd = memfd_create("et-config", MFD_CLOEXEC);
        check(fd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    check(ftruncate(fd, 0) == 0);
    check(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
}

static int load(et_cli_args *a)
{
    char *argv[] = {"prog", "--config", path, "--edge", "cmdline:1", NULL};
    return et_cli_args_load(a, 5, argv, opts);
}

/* the table entry a file argument names: "--name" or "--name=value" */
static const struct option *named(const char *arg, const char **value)
{
    check(strncmp(arg, "--", 2) == 0);
    const char *name = arg + 2;
    size_t n = strcspn(name, "=");
    for (const struct option *o = opts; o->name != NULL; o++) {
        if (strlen(o->name) == n && strncmp(o->name, name, n) == 0) {
            *value = name[n] == '=' ? name + n + 1 : NULL;
            return o;
        }
    }
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    put(data, size);
    int rv = load(&args);
    if (rv < 0) {
        check(strncmp(args.err, path, strlen(path)) == 0 || strstr(args.err, "NUL") != NULL);
        return 0;
    }
    unsigned lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    check(args.argc == (int)args.nfile + 5 && args.argv[args.argc] == NULL);
    check(strcmp(args.argv[args.nfile + 1], "--config") == 0);
    check(strcmp(args.argv[args.nfile + 4], "cmdline:1") == 0);
    check(et_cli_args_where(&args, args.argv[args.nfile + 4])[0] == '\0');
    static char text[2 * ET_CLI_CONFIG_MAX + 2 * ET_CLI_ARGS_MAX];
    size_t used = 0;
    for (unsigned i = 0; i < args.nfile; i++) {
        const char *value = NULL;
        const struct option *o = named(args.argv[1 + i], &value);
        check(strcmp(o->name, "config") != 0 && strcmp(o->name, "help") != 0 &&
              strcmp(o->name, "print-config") != 0);
        check((o->has_arg == no_argument) == (value == NULL));
        check(value == NULL || (value[0] != '\0' && value[0] != ' ' && value[0] != '\t'));
        check(args.line[i] >= 1 && args.line[i] <= lines);
        check(i == 0 || args.line[i] > args.line[i - 1]);
        check(et_cli_args_where(&args, args.argv[1 + i])[0] != '\0');
        int n = snprintf(text + used, sizeof(text) - used, "%s = %s\n", o->name,
                         value != NULL ? value : "true");
        check(n > 0 && (size_t)n < sizeof(text) - used);
        used += (size_t)n;
    }
    /* round trip: the arguments as a file load to the same arguments */
    if (used > ET_CLI_CONFIG_MAX)
        return 0;
    put((const uint8_t *)text, used);
    check(load(&again) == ET_OK);
    check(again.argc == args.argc);
    for (int i = 0; i < args.argc; i++)
        check(strcmp(again.argv[i], args.argv[i]) == 0);
    return 0;
}
