/* cli.c: helpers shared by the mains (cli.h). */
#include "et/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

int et_cli_log_format(const char *s, et_log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = ET_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = ET_LOG_JSON;
    else
        return ET_RAISE(ET_E_CONFIG);
    return ET_OK;
}

int et_cli_log_level(const char *s, et_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (et_log_level)i;
            return ET_OK;
        }
    }
    return ET_RAISE(ET_E_CONFIG);
}

int et_cli_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    errno = 0;
    if (s == NULL || *s < '0' || *s > '9')
        return ET_RAISE(ET_E_CONFIG);
    unsigned long v = strtoul(s, &end, 10);
    ET_ENSURE(errno == 0 && *end == '\0' && v >= lo && v <= hi, ET_E_CONFIG);
    *out = v;
    return ET_OK;
}

int et_cli_port(const char *s, unsigned long *out)
{
    return et_cli_uint(s, 1, 65535, out);
}

unsigned et_cli_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : n > 64 ? 64u : (unsigned)n;
}

void et_cli_block_signals(sigset_t *set)
{
    /* Every stream holds a socket: take all the descriptors the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

int et_cli_wait_signal(const sigset_t *set)
{
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            return sig;
    }
}
