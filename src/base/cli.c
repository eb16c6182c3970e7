/* cli.c: helpers shared by the mains (cli.h). */
#include "et/cli.h"
#include "et/token.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
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

bool et_cli_signal_within(const sigset_t *set, unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGHUP)
            continue; /* the rest of the wait starts over: a drain polls again soon anyway */
        if (sig > 0)
            return true;
        if (errno != EINTR)
            return false; /* EAGAIN: the time passed */
    }
}

int et_cli_duration_ns(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return ET_OK;
    }
    if (n > 2 && strcmp(s + n - 2, "ms") == 0) {
        char digits[16];
        unsigned long ms;
        if (n - 2 >= sizeof(digits))
            return ET_E_CONFIG;
        memcpy(digits, s, n - 2);
        digits[n - 2] = '\0';
        ET_GUARD(et_cli_uint(digits, 0, 86400000ul, &ms));
        *out = (uint64_t)ms * 1000000ull;
        return ET_OK;
    }
    int64_t secs;
    if (et_duration_parse(s, &secs) < 0 || secs > 86400)
        return ET_E_CONFIG;
    *out = (uint64_t)secs * 1000000000ull;
    return ET_OK;
}
