/* cli.h: what both mains share: log flags, thread counts, signals. */
#ifndef ET_CLI_H
#define ET_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

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

/* et_cli_threads returns the number of online CPUs (at least 1, at most 64). */
unsigned et_cli_threads(void);

/* et_cli_block_signals blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads
 * it starts later), ignores SIGPIPE, raises the descriptor limit to its hard limit, and fills
 * |set| for et_cli_wait_signal. */
void et_cli_block_signals(sigset_t *set);

/* et_cli_wait_signal waits for a signal of |set| other than SIGHUP and returns it. */
int et_cli_wait_signal(const sigset_t *set);

/* et_cli_signal_within waits up to |ms| milliseconds for a signal of |set| other than SIGHUP;
 * returns true when one came (a second SIGTERM or Ctrl-C during a drain: stop now). */
bool et_cli_signal_within(const sigset_t *set, unsigned ms);

#endif
