#include "et/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "et/cli.h"
#include "et/logf.h"
#include "et/reactor.h"

/* One name's addresses. Two generations of originctl may dial two names for a while (a reload
 * that changed --edge keeps the old sockets until the new ones are up): each has its entry. */
typedef struct entry {
    char host[ET_RESOLVE_HOST_MAX + 1]; /* "" : unused */
    uint16_t port;
    bool want;    /* a lookup is asked for */
    bool failing; /* the last lookup found nothing (logged once until it finds again) */
    struct sockaddr_storage addrs[ET_RESOLVE_ADDRS_MAX];
    socklen_t lens[ET_RESOLVE_ADDRS_MAX];
    unsigned n, pref;    /* the addresses, and the one dials try now */
    uint64_t fetched_ns; /* when they were looked up (0: never) */
    uint64_t used_ns;    /* the last pick: the least recent entry makes room for a new name */
} entry;

#define NAMES 4u

struct et_resolver {
    pthread_mutex_t mu; /* guards everything below but |lookups| */
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC */
    unsigned refs;      /* the owner, and the thread once it runs */
    bool stop;
    bool started;      /* the thread runs: only once a lookup is asked for (an edge given as an
                        * address never costs a thread) */
    bool spawn_warned; /* a failed pthread_create was logged */
    entry names[NAMES];
    _Atomic uint64_t lookups;
};

/* Resolver threads running, in the whole process (et_resolver_threads). */
static _Atomic unsigned resolver_threads;

static void destroy(et_resolver *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* release drops a reference, with the lock (which it releases); the last one frees |r|. */
static void release(et_resolver *r)
{
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        destroy(r);
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t al,
                      const struct sockaddr_storage *b, socklen_t bl)
{
    return al == bl && memcmp(a, b, al) == 0;
}

/* find returns the entry of |host|:|port|, or NULL; with the lock. */
static entry *find(et_resolver *r, const char *host, uint16_t port)
{
    for (unsigned i = 0; i < NAMES; i++)
        if (r->names[i].host[0] != '\0' && r->names[i].port == port &&
            strcmp(r->names[i].host, host) == 0)
            return &r->names[i];
    return NULL;
}

/* entry_for returns the entry of |host|:|port|, making one (in an unused entry, or in place of
 * the least recently picked) when there is none; with the lock. */
static entry *entry_for(et_resolver *r, const char *host, uint16_t port)
{
    entry *e = find(r, host, port);
    if (e != NULL)
        return e;
    e = &r->names[0];
    for (unsigned i = 0; i < NAMES; i++) {
        entry *c = &r->names[i];
        if (c->host[0] == '\0') {
            e = c;
            break;
        }
        if (c->used_ns < e->used_ns)
            e = c;
    }
    memset(e, 0, sizeof(*e));
    snprintf(e->host, sizeof(e->host), "%s", host);
    e->port = port;
    e->used_ns = et_now_ns();
    return e;
}

/* lookup runs getaddrinfo for |host|:|port| without the lock and stores what it found in the
 * name's entry, if it still has one. */
static bool lookup(et_resolver *r, const char *host, uint16_t port)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* No AI_ADDRCONFIG: it ignores loopback, so a host with loopback only would find nothing;
     * getaddrinfo's own order (RFC 6724) already puts destinations it has no route to last. */
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);

    struct sockaddr_storage found[ET_RESOLVE_ADDRS_MAX];
    socklen_t lens[ET_RESOLVE_ADDRS_MAX];
    unsigned n = 0;
    for (struct addrinfo *ai = gai == 0 ? res : NULL; ai != NULL && n < ET_RESOLVE_ADDRS_MAX;
         ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(found[0]))
            continue;
        memset(&found[n], 0, sizeof(found[n]));
        memcpy(&found[n], ai->ai_addr, ai->ai_addrlen);
        bool dup = false;
        for (unsigned i = 0; i < n && !dup; i++)
            dup = same_addr(&found[i], lens[i], &found[n], (socklen_t)ai->ai_addrlen);
        if (!dup)
            lens[n++] = (socklen_t)ai->ai_addrlen;
    }
    if (res != NULL)
        freeaddrinfo(res);
    atomic_fetch_add(&r->lookups, 1);

    pthread_mutex_lock(&r->mu);
    entry *e = find(r, host, port);
    bool changed = false, was_failing = false;
    if (e != NULL) {
        e->fetched_ns = et_now_ns();
        if (n > 0) {
            changed = n != e->n;
            for (unsigned i = 0; i < n && !changed; i++)
                changed = !same_addr(&found[i], lens[i], &e->addrs[i], e->lens[i]);
            /* Dials stay with the address they use now if it is still there. */
            unsigned pref = 0;
            for (unsigned i = 0; i < n && e->pref < e->n; i++)
                if (same_addr(&found[i], lens[i], &e->addrs[e->pref], e->lens[e->pref]))
                    pref = i;
            memcpy(e->addrs, found, n * sizeof(found[0]));
            memcpy(e->lens, lens, n * sizeof(lens[0]));
            e->n = n;
            e->pref = pref;
        }
        /* Nothing found: the addresses we had stay (a DNS outage is no reason to stop). */
        was_failing = e->failing;
        e->failing = n == 0;
    }
    pthread_mutex_unlock(&r->mu);

    if (e == NULL)
        return n > 0; /* the name was dropped meanwhile */
    if (n == 0 && !was_failing)
        et_logf(ET_LOG_WARN, "resolve_failed", "host=%s error=\"%s\"", host,
                gai == 0 ? "no IPv4 or IPv6 address" : gai_strerror(gai));
    else if (n > 0 && (changed || was_failing)) {
        char list[ET_RESOLVE_ADDRS_MAX * 50] = "";
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            char a[64];
            et_cli_addr_text(&found[i], a, sizeof(a));
            int k = snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "", a);
            if (k > 0 && (size_t)k < sizeof(list) - off)
                off += (size_t)k;
        }
        et_logf(ET_LOG_INFO, "resolved", "host=%s addrs=%s", host, list);
    }
    return n > 0;
}

static entry *wanted(et_resolver *r)
{
    for (unsigned i = 0; i < NAMES; i++)
        if (r->names[i].host[0] != '\0' && r->names[i].want)
            return &r->names[i];
    return NULL;
}

static void *resolver_main(void *arg)
{
    et_resolver *r = arg;
    uint64_t last_ns = 0;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        entry *e = NULL;
        while (!r->stop && (e = wanted(r)) == NULL)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop)
            break;
        /* At most one lookup a ET_RESOLVE_MIN_GAP_MS, however many dials fail. */
        uint64_t now = et_now_ns();
        uint64_t gap = (uint64_t)ET_RESOLVE_MIN_GAP_MS * 1000000u;
        if (last_ns != 0 && now - last_ns < gap) {
            uint64_t until = last_ns + gap; /* CLOCK_MONOTONIC, as the condition variable */
            struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
            (void)pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            continue;
        }
        e->want = false;
        char host[sizeof(e->host)];
        memcpy(host, e->host, sizeof(host));
        uint16_t port = e->port;
        pthread_mutex_unlock(&r->mu);
        (void)lookup(r, host, port);
        last_ns = et_now_ns();
        pthread_mutex_lock(&r->mu);
    }
    release(r);
    atomic_fetch_sub(&resolver_threads, 1);
    return NULL;
}

et_resolver *et_resolver_new(void)
{
    et_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    r->refs = 1;
    return r;
}

/* ask asks the thread for a lookup of |e|, starting the thread the first time; with the lock.
 * Without a thread (none could be made) the dials keep the addresses they have and the next
 * ask tries again. Returns pthread_create's error the first time it fails (for the caller to
 * log once the lock is released), else 0. */
static int ask(et_resolver *r, entry *e)
{
    e->want = true;
    int err = 0;
    if (!r->started && !r->stop) {
        pthread_t th;
        int rc = pthread_create(&th, NULL, resolver_main, r);
        if (rc == 0) {
            pthread_detach(th);
            r->started = true;
            r->refs++;
            atomic_fetch_add(&resolver_threads, 1);
        } else if (!r->spawn_warned) {
            r->spawn_warned = true;
            err = rc;
        }
    }
    pthread_cond_signal(&r->cv);
    return err;
}

static void ask_failed(int err)
{
    if (err != 0)
        et_logf(ET_LOG_WARN, "resolver_thread_failed", "error=%d", err);
}

void et_resolver_free(et_resolver *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    release(r);
}

/* name_ok: a host name as RFC 1123 and RFC 3696 §2 have it (labels of 1-63 letters, digits,
 * '-' not first or last, and '_' as service names use; one trailing dot; a last label that is
 * not all digits, which would be a mistyped IPv4 address), or an IPv6 literal with an optional
 * %zone when |v6| (it was in brackets). */
static bool name_ok(const char *h, size_t len, bool v6)
{
    if (v6) {
        char a[INET6_ADDRSTRLEN + 1];
        size_t n = 0;
        while (n < len && h[n] != '%')
            n++;
        if (n == 0 || n >= sizeof(a) || n + 1 == len)
            return false; /* empty, too long, or an empty zone */
        for (size_t i = n + 1; i < len; i++) {
            char c = h[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.'))
                return false;
        }
        memcpy(a, h, n);
        a[n] = '\0';
        struct in6_addr in6;
        return inet_pton(AF_INET6, a, &in6) == 1;
    }
    if (len > 1 && h[len - 1] == '.')
        len--; /* a fully qualified name */
    size_t label = 0;
    bool digits = true; /* the current label is all digits */
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? h[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || h[i - 1] == '-')
                return false;
            if (i == len && digits)
                return false;
            label = 0;
            digits = true;
            continue;
        }
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !digit && !(c == '-' && label > 0))
            return false;
        digits = digits && digit;
        label++;
    }
    return true;
}

int et_resolver_split(const char *addr, char *host, size_t host_n, uint16_t *port)
{
    ET_ENSURE(addr != NULL && host != NULL && port != NULL && host_n > 0, ET_E_USAGE);
    const char *colon = strrchr(addr, ':');
    ET_ENSURE(colon != NULL && colon != addr, ET_E_CONFIG);
    const char *start = addr;
    size_t len = (size_t)(colon - addr);
    bool v6 = addr[0] == '[';
    if (v6) {
        ET_ENSURE(len >= 3 && colon[-1] == ']', ET_E_CONFIG);
        start++;
        len -= 2;
    }
    ET_ENSURE(len > 0 && len <= ET_RESOLVE_HOST_MAX && len < host_n, ET_E_CONFIG);
    ET_ENSURE(name_ok(start, len, v6), ET_E_CONFIG);
    const char *p = colon + 1;
    ET_ENSURE(*p != '\0' && strlen(p) <= 5, ET_E_CONFIG);
    unsigned long v = 0;
    for (; *p; p++) {
        ET_ENSURE(*p >= '0' && *p <= '9', ET_E_CONFIG);
        v = v * 10 + (unsigned long)(*p - '0');
    }
    ET_ENSURE(v >= 1 && v <= 65535, ET_E_CONFIG);
    memcpy(host, start, len);
    host[len] = '\0';
    *port = (uint16_t)v;
    return ET_OK;
}

int et_resolver_prime(et_resolver *r, const char *host, uint16_t port)
{
    ET_ENSURE(r != NULL && host != NULL && strlen(host) <= ET_RESOLVE_HOST_MAX, ET_E_USAGE);
    pthread_mutex_lock(&r->mu);
    (void)entry_for(r, host, port);
    pthread_mutex_unlock(&r->mu);
    return lookup(r, host, port) ? ET_OK : ET_E_IO;
}

int et_resolver_pick(et_resolver *r, const char *host, uint16_t port, struct sockaddr_storage *out,
                     socklen_t *len)
{
    ET_ENSURE(r != NULL && host != NULL && strlen(host) <= ET_RESOLVE_HOST_MAX, ET_E_USAGE);
    int rv = ET_E_AGAIN;
    pthread_mutex_lock(&r->mu);
    entry *e = entry_for(r, host, port);
    uint64_t now = et_now_ns();
    e->used_ns = now;
    int err = 0;
    if (e->n == 0 || now - e->fetched_ns >= (uint64_t)ET_RESOLVE_REFRESH_S * 1000000000u)
        err = ask(r, e);
    if (e->n > 0) {
        *out = e->addrs[e->pref];
        *len = e->lens[e->pref];
        rv = ET_OK;
    }
    pthread_mutex_unlock(&r->mu);
    ask_failed(err);
    return rv;
}

void et_resolver_failed(et_resolver *r, const char *host, uint16_t port,
                        const struct sockaddr_storage *a, socklen_t len)
{
    if (r == NULL || host == NULL || a == NULL)
        return;
    int err = 0;
    pthread_mutex_lock(&r->mu);
    entry *e = find(r, host, port);
    if (e != NULL) {
        if (e->n > 0 && same_addr(a, len, &e->addrs[e->pref], e->lens[e->pref]))
            e->pref = (e->pref + 1) % e->n; /* the first report moves them on, others agree */
        err = ask(r, e);
    }
    pthread_mutex_unlock(&r->mu);
    ask_failed(err);
}

uint64_t et_resolver_lookups(et_resolver *r)
{
    return r != NULL ? atomic_load(&r->lookups) : 0;
}

unsigned et_resolver_threads(void)
{
    return atomic_load(&resolver_threads);
}
