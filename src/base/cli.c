/* cli.c: helpers shared by the mains (cli.h). */
#include "et/cli.h"
#include "et/token.h"

#include <jansson.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

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

int et_cli_congestion(const char *s, char *out, size_t cap)
{
    if (strcmp(s, "system") == 0) {
        out[0] = '\0';
        return ET_OK;
    }
    size_t n = strlen(s);
    if (n == 0 || n >= cap)
        return ET_RAISE(ET_E_CONFIG);
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return ET_RAISE(ET_E_CONFIG);
    memcpy(out, s, n + 1);
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
/* ---- the --config file --------------------------------------------------------------------- */

/* Flags that are actions or the file itself, never settings. */
static const char *const not_settings[] = {"config", "print-config", "help", "version"};

/* The state of one parse: inih pulls lines through cfg_reader and hands pairs to on_pair. */
typedef struct cfg_load {
    et_cli_args *a;
    const struct option *opts;
    const char *p, *end; /* the unread part of the file */
    unsigned line;       /* the line being read (1-based) */
    size_t col;          /* bytes of that line read so far */
    bool line_start;     /* the next byte starts a line */
    bool too_long;
    int failed; /* the error on_pair refused a pair with (a->err says why), or ET_OK */
} cfg_load;

__attribute__((format(printf, 2, 3))) static void set_err(et_cli_args *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->err, sizeof(a->err), fmt, ap);
    va_end(ap);
}

/* cfg_reader is inih's fgets: it copies at most |num| - 1 bytes of the current line (up to and
 * including its newline) from memory, counting lines, and stops the parse at an overlong line. */
static char *cfg_reader(char *str, int num, void *stream)
{
    cfg_load *L = stream;
    if (L->p >= L->end || num < 2 || L->too_long)
        return NULL;
    if (L->line_start) {
        L->line++;
        L->col = 0;
    }
    size_t cap = (size_t)num - 1, n = 0;
    while (n < cap && L->p + n < L->end) {
        if (L->p[n++] == '\n')
            break;
    }
    L->col += n;
    if (L->col > ET_CLI_LINE_MAX) {
        L->too_long = true;
        return NULL;
    }
    memcpy(str, L->p, n);
    str[n] = '\0';
    L->p += n;
    L->line_start = str[n - 1] == '\n';
    return str;
}

/* add_arg appends the text "--|name|[=|value|]" as the next argument from the file. */
static int add_arg(cfg_load *L, const char *name, const char *value)
{
    et_cli_args *a = L->a;
    size_t need = 2 + strlen(name) + (value ? 1 + strlen(value) : 0) + 1;
    if (a->nfile + 1 >= ET_CLI_ARGS_MAX || need > sizeof(a->text) - a->used) {
        set_err(a, "%s:%u: too many settings", a->path, L->line);
        return ET_RAISE(ET_E_LIMIT);
    }
    char *s = a->text + a->used;
    snprintf(s, need, "--%s%s%s", name, value ? "=" : "", value ? value : "");
    a->used += need;
    a->line[a->nfile] = L->line;
    a->argv[1 + a->nfile] = s;
    a->nfile++;
    return ET_OK;
}

/* on_pair checks one `key = value` against the flag table and appends it; 0 stops the parse. */
static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    cfg_load *L = user;
    et_cli_args *a = L->a;
    L->failed = ET_E_CONFIG;
    if (section[0] != '\0') {
        set_err(a, "%s:%u: sections are not used ([%s])", a->path, L->line, section);
        return 0;
    }
    const struct option *o = NULL;
    for (const struct option *it = L->opts; it->name != NULL; it++) {
        if (strcmp(it->name, name) == 0) {
            o = it;
            break;
        }
    }
    for (size_t i = 0; o != NULL && i < sizeof(not_settings) / sizeof(not_settings[0]); i++) {
        if (strcmp(o->name, not_settings[i]) == 0)
            o = NULL;
    }
    if (o == NULL) {
        set_err(a, "%s:%u: unknown key '%s'", a->path, L->line, name);
        return 0;
    }
    if (o->has_arg == no_argument) {
        bool on = strcmp(value, "true") == 0;
        if (!on && strcmp(value, "false") != 0) {
            set_err(a, "%s:%u: %s takes true or false, not '%s'", a->path, L->line, name, value);
            return 0;
        }
        if (on && (L->failed = add_arg(L, name, NULL)) < 0)
            return 0;
    } else {
        if (value[0] == '\0') {
            set_err(a, "%s:%u: no value for %s", a->path, L->line, name);
            return 0;
        }
        if ((L->failed = add_arg(L, name, value)) < 0)
            return 0;
    }
    L->failed = ET_OK;
    return 1;
}

/* find_config runs getopt_long over a copy of the command line (it permutes) to find --config
 * exactly as the main's own loop will read it, abbreviations and --config=FILE included. */
static int find_config(et_cli_args *a, int argc, char **argv, const struct option *opts)
{
    char *copy[ET_CLI_ARGS_MAX + 1];
    if (argc < 1 || argc > ET_CLI_ARGS_MAX) {
        set_err(a, "more than %d arguments", ET_CLI_ARGS_MAX);
        return ET_RAISE(ET_E_LIMIT);
    }
    memcpy(copy, argv, (size_t)argc * sizeof(*copy));
    copy[argc] = NULL;
    int saved_opterr = opterr, rv = ET_OK, idx = -1, opt;
    opterr = 0; /* the main's loop reports bad flags */
    optind = 0;
    while ((opt = getopt_long(argc, copy, "", opts, &idx)) != -1) {
        if (opt == '?' || opt == ':' || idx < 0 || strcmp(opts[idx].name, "config") != 0) {
            idx = -1;
            continue;
        }
        idx = -1;
        if (a->path != NULL) {
            set_err(a, "--config given more than once");
            rv = ET_RAISE(ET_E_CONFIG);
            break;
        }
        a->path = optarg;
    }
    opterr = saved_opterr;
    optind = 0;
    return rv;
}

/* read_file reads all of |path| (at most ET_CLI_CONFIG_MAX bytes) into |buf|. */
static int read_file(et_cli_args *a, const char *path, char *buf, size_t *len)
{
    int rv = ET_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        set_err(a, "%s: %s", path, strerror(errno));
        rv = ET_RAISE(ET_E_IO);
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(a, "%s: not a regular file", path);
        rv = ET_RAISE(ET_E_CONFIG);
        goto err;
    }
    size_t n = 0;
    for (int i = 0; i < 1024; i++) { /* bounded: each read moves at least one byte or ends */
        ssize_t r = read(fd, buf + n, ET_CLI_CONFIG_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            set_err(a, "%s: %s", path, strerror(errno));
            rv = ET_RAISE(ET_E_IO);
            goto err;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > ET_CLI_CONFIG_MAX) {
            set_err(a, "%s: larger than %d bytes", path, ET_CLI_CONFIG_MAX);
            rv = ET_RAISE(ET_E_LIMIT);
            goto err;
        }
    }
    *len = n;
err:
    if (fd >= 0)
        close(fd);
    return rv;
}

int et_cli_args_load(et_cli_args *a, int argc, char **argv, const struct option *opts)
{
    static char file[ET_CLI_CONFIG_MAX + 1]; /* start-up only, one thread */
    a->argc = 0;
    a->path = NULL;
    a->nfile = 0;
    a->used = 0;
    a->err[0] = '\0';
    a->where[0] = '\0';
    ET_GUARD(find_config(a, argc, argv, opts));
    a->argv[0] = argv[0];
    if (a->path != NULL) {
        size_t len = 0;
        ET_GUARD(read_file(a, a->path, file, &len));
        const char *nul = memchr(file, '\0', len);
        if (nul != NULL) {
            unsigned line = 1;
            for (const char *c = file; c < nul; c++)
                line += *c == '\n';
            set_err(a, "%s:%u: NUL byte", a->path, line);
            return ET_RAISE(ET_E_CONFIG);
        }
        cfg_load L = {.a = a, .opts = opts, .p = file, .end = file + len, .line_start = true};
        /* Debian's inih reads these at run time: the whole line is the value, lines may be as
         * long as a token, and the first error stops the parse. */
        ini_allow_multiline = false;
        ini_allow_inline_comments = false;
        ini_stop_on_first_error = true;
        ini_allow_no_value = false;
        ini_use_stack = false;
        ini_allow_realloc = true;
        ini_initial_alloc = 256;
        ini_max_line = ET_CLI_LINE_MAX + 8;
        int r = ini_parse_stream(cfg_reader, &L, on_pair, &L);
        if (L.too_long) {
            set_err(a, "%s:%u: line longer than %d bytes", a->path, L.line, ET_CLI_LINE_MAX);
            return ET_RAISE(ET_E_LIMIT);
        }
        if (r == -2) {
            set_err(a, "%s: out of memory", a->path);
            return ET_RAISE(ET_E_NOMEM);
        }
        if (L.failed < 0)
            return L.failed;
        if (r != 0) {
            set_err(a, "%s:%u: expected key = value", a->path, L.line);
            return ET_RAISE(ET_E_CONFIG);
        }
    }
    if ((size_t)a->nfile + (size_t)argc > ET_CLI_ARGS_MAX) {
        set_err(a, "more than %d arguments with the config file", ET_CLI_ARGS_MAX);
        return ET_RAISE(ET_E_LIMIT);
    }
    for (int i = 1; i < argc; i++)
        a->argv[a->nfile + (unsigned)i] = argv[i];
    a->argc = (int)a->nfile + argc;
    a->argv[a->argc] = NULL;
    return ET_OK;
}

const char *et_cli_args_where(et_cli_args *a, const char *arg)
{
    a->where[0] = '\0';
    uintptr_t p = (uintptr_t)arg;
    for (unsigned i = 0; arg != NULL && i < a->nfile; i++) {
        uintptr_t s = (uintptr_t)a->argv[1 + i];
        if (p >= s && p <= s + strlen(a->argv[1 + i])) {
            snprintf(a->where, sizeof(a->where), "%s:%u: ", a->path, a->line[i]);
            break;
        }
    }
    return a->where;
}

const char *et_cli_addr_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, n, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, n, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, n, "?");
    }
    return out;
}

int et_cli_wait_signal_or_hup(const sigset_t *set)
{
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) == 0)
            return sig;
    }
}

int et_cli_print_json(json_t *o)
{
    int rc =
        o == NULL || json_dumpf(o, stdout, JSON_COMPACT | JSON_SORT_KEYS) != 0 || puts("") == EOF;
    json_decref(o);
    return rc;
}
