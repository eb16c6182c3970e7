/* cli.h: what both mains share: the --config file, log flags, thread counts, signals. */
#ifndef ET_CLI_H
#define ET_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>

#include "et/log.h"
#include "et/result.h"

/* et_cli_log_format / et_cli_log_level parse --log-format (text|json) and --log-level
 * (debug|info|warn|error); return ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_cli_log_format(const char *s, et_log_format *out);
ET_MUST_USE int et_cli_log_level(const char *s, et_log_level *out);

/* et_cli_uint parses a decimal in [lo, hi]; returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_cli_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out);

/* et_cli_duration_ns parses a duration flag into nanoseconds: "0", "<n>ms", or what
 * et_duration_parse takes ("90s", "15m", "1h"), at most 1 day. Returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_cli_duration_ns(const char *s, uint64_t *out);

/* et_cli_port parses a TCP port, 1..65535. */
ET_MUST_USE int et_cli_port(const char *s, unsigned long *out);

/* et_cli_congestion parses --tcp-congestion into |out| (|cap| bytes): "system" (the host's
 * default: |out| empty) or an algorithm name of [a-z0-9_] that fits |cap| with its NUL. Whether
 * the kernel has it is known only when a socket asks. Returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_cli_congestion(const char *s, char *out, size_t cap);

/* et_cli_threads returns the number of online CPUs (at least 1, at most 64). */
unsigned et_cli_threads(void);

/* et_cli_block_signals blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads
 * it starts later), ignores SIGPIPE, raises the descriptor limit to its hard limit, and fills
 * |set| for et_cli_wait_signal. */
void et_cli_block_signals(sigset_t *set);

struct json_t; /* jansson's */

/* et_cli_print_json prints |o| (ownership taken; NULL allowed) on stdout as one compact line
 * with sorted keys, and frees it. Returns the exit status: 0, or 1 when |o| is NULL or the
 * write failed (--print-config). */
int et_cli_print_json(struct json_t *o);

/* et_cli_wait_signal waits for a signal of |set| other than SIGHUP and returns it. */
int et_cli_wait_signal(const sigset_t *set);

/* et_cli_wait_signal_or_hup waits for any signal of |set| (SIGHUP included) and returns it. */
int et_cli_wait_signal_or_hup(const sigset_t *set);

/* et_cli_signal_within waits up to |ms| milliseconds for a signal of |set| other than SIGHUP;
 * returns true when one came (a second SIGTERM or Ctrl-C during a drain: stop now). */
bool et_cli_signal_within(const sigset_t *set, unsigned ms);
/* ---- the --config file ---------------------------------------------------------------------
 *
 * A config file holds the same settings as the long flags, one `key = value` a line, the key
 * being the flag's name without the dashes:
 *
 *   # originctl.conf
 *   edge = edge.example.com:7443
 *   token = eyJhbGciOi...
 *   http = photos.example.com=http://127.0.0.1:3000
 *   http = wiki.example.com=http://127.0.0.1:3001
 *   no-control = false
 *
 * Spaces around the key and the value are trimmed; lines starting with '#' or ';' are comments;
 * there are no inline comments (a value may hold ';' or '#'), no sections, no quoting and no
 * continuation lines. A flag that takes no value (no-control) takes `true` or `false`. A key
 * that may be repeated on the command line (originctl's http and tcp) may be repeated in the
 * file. Keys config, print-config, help and version are not settings and are refused.
 *
 * The file is parsed with inih (Debian libinih) into an argument list that goes in front of the
 * command-line flags, so the main's one getopt_long loop reads both: a flag overrides the file
 * (last value wins) and a repeated flag adds to it. An unknown key, a flag value in the wrong
 * form, a line over ET_CLI_LINE_MAX bytes, a NUL byte or a file over ET_CLI_CONFIG_MAX bytes is
 * an error naming the file and the line; a bad value is reported by the main's own check, and
 * et_cli_args_where names the file and line it came from. */

#define ET_CLI_CONFIG_MAX (64 * 1024) /* bytes in a config file */
#define ET_CLI_LINE_MAX   8192        /* bytes in one line of it (a token is up to 4 KiB) */
#define ET_CLI_ARGS_MAX   1024        /* arguments, from the file and the command line */

/* et_cli_args is the argument list a main hands to getopt_long: argv[0], then one "--key=value"
 * (or "--key") per setting of the --config file, then argv[1..] of the command line. It holds no
 * heap memory, so it needs no cleanup; it is large (keep it static). */
typedef struct et_cli_args {
    int argc;
    char *argv[ET_CLI_ARGS_MAX + 1]; /* NULL-terminated; into |text| or the caller's argv */
    const char *path;                /* the --config file or NULL; into the caller's argv */
    unsigned nfile;                  /* argv[1..nfile] come from the file */
    unsigned line[ET_CLI_ARGS_MAX];  /* line[i]: the file line of argv[1 + i] */
    size_t used;                     /* bytes of |text| in use */
    char text[2 * ET_CLI_CONFIG_MAX + 2 * ET_CLI_ARGS_MAX]; /* the "--key=value" strings */
    char where[512];                                        /* et_cli_args_where's answer */
    char err[512]; /* why et_cli_args_load failed: "FILE:LINE: unknown key 'x'" */
} et_cli_args;

/* et_cli_args_load fills |a| from the command line |argc|/|argv| of a main whose getopt_long
 * table is |opts| (its "config" entry names the file; a --config given twice is an error). With
 * no --config, |a| is argv itself. Returns ET_OK, or ET_E_CONFIG / ET_E_IO / ET_E_LIMIT /
 * ET_E_NOMEM with a message in a->err. Leaves optind at 0 (getopt_long starts afresh). |a| keeps
 * pointers into |argv|, which must outlive it. */
ET_MUST_USE int et_cli_args_load(et_cli_args *a, int argc, char **argv, const struct option *opts);

/* et_cli_args_where returns "FILE:LINE: " when |arg| (an optarg of a->argv) points into a setting
 * read from the config file, else "". The string lives in |a| until the next call. */
const char *et_cli_args_where(et_cli_args *a, const char *arg);

/* et_cli_addr_text writes a socket address as "1.2.3.4:80" or "[::1]:80" into |out| (|n| bytes)
 * and returns |out| ("?" for an address family other than IPv4/IPv6). */
const char *et_cli_addr_text(const struct sockaddr_storage *ss, char *out, size_t n);

#endif
