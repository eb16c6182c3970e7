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

struct et_resolver {
    pthread_mutex_t mu; /* guards everything below but |lookups| */
    pthread_cond_t cv;
    unsigned refs; /* the owner and the thread */
    bool stop;
    bool want;    /* a lookup is asked for */
    bool failing; /* the last lookup found nothing (logged once until it finds again) */
    char host[ET_RESOLVE_HOST_MAX + 1];
    uint16_t port;
    struct sockaddr_storage addrs[ET_RESOLVE_ADDRS_MAX];
    socklen_t lens[ET_RESOLVE_ADDRS_MAX];
    unsigned n, pref;    /* the addresses, and the one dials try now */
    uint64_t fetched_ns; /* when they were looked up (0: never) */
    _Atomic uint64_t lookups;
};

static void unref_locked(et_resolver *r, bool *free_it)
{
    *free_it = --r->refs == 0;
}

static void destroy(et_resolver *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t al,
                      const struct sockaddr_storage *b, socklen_t bl)
{
    return al == bl && memcmp(a, b, al) == 0;
}

/* lookup runs getaddrinfo for |host|:|port| without the lock and, if the resolver still
 * wants that name, stores what it found. */
static bool lookup(et_resolver *r, const char *host, uint16_t port)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
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
        bool dup = false;
        for (unsigned i = 0; i < n && !dup; i++)
            dup = lens[i] == ai->ai_addrlen && memcmp(&found[i], ai->ai_addr, lens[i]) == 0;
        if (dup)
            continue;
        memset(&found[n], 0, sizeof(found[n]));
        memcpy(&found[n], ai->ai_addr, ai->ai_addrlen);
        lens[n++] = (socklen_t)ai->ai_addrlen;
    }
    if (res != NULL)
        freeaddrinfo(res);
    atomic_fetch_add(&r->lookups, 1);

    char list[ET_RESOLVE_ADDRS_MAX * 50] = "";
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        char a[64];
        et_cli_addr_text(&found[i], a, sizeof(a));
        int k = snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "", a);
        if (k > 0 && (size_t)k < sizeof(list) - off)
            off += (size_t)k;
    }

    pthread_mutex_lock(&r->mu);
    bool current = strcmp(r->host, host) == 0 && r->port == port;
    bool changed = false;
    if (current) {
        r->fetched_ns = et_now_ns();
        if (n > 0) {
            changed = n != r->n;
            for (unsigned i = 0; i < n && !changed; i++)
                changed = !same_addr(&found[i], lens[i], &r->addrs[i], r->lens[i]);
            /* Dials stay with the address they use now if it is still there. */
            unsigned pref = 0;
            for (unsigned i = 0; i < n && r->pref < r->n; i++)
                if (same_addr(&found[i], lens[i], &r->addrs[r->pref], r->lens[r->pref]))
                    pref = i;
            memcpy(r->addrs, found, n * sizeof(found[0]));
            memcpy(r->lens, lens, n * sizeof(lens[0]));
            r->n = n;
            r->pref = pref;
        }
        /* Nothing found: the addresses we had stay (a DNS outage is no reason to stop). */
    }
    bool was_failing = r->failing;
    if (current)
        r->failing = n == 0;
    pthread_mutex_unlock(&r->mu);

    if (!current)
        return n > 0;
    if (n == 0 && !was_failing)
        et_logf(ET_LOG_WARN, "resolve_failed", "host=%s error=\"%s\"", host,
                gai == 0 ? "no IPv4 or IPv6 address" : gai_strerror(gai));
    else if (n > 0 && (changed || was_failing))
        et_logf(ET_LOG_INFO, "resolved", "host=%s addrs=%s", host, list);
    return n > 0;
}

static void *resolver_main(void *arg)
{
    et_resolver *r = arg;
    uint64_t last_ns = 0;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stop && !r->want)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop)
            break;
        /* At most one lookup a ET_RESOLVE_MIN_GAP_MS, however many dials fail. */
        uint64_t now = et_now_ns();
        uint64_t gap = (uint64_t)ET_RESOLVE_MIN_GAP_MS * 1000000u;
        if (last_ns != 0 && now - last_ns < gap) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = gap - (now - last_ns);
            ts.tv_sec += (time_t)(wait / 1000000000u);
            ts.tv_nsec += (long)(wait % 1000000000u);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            (void)pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            continue;
        }
        r->want = false;
        char host[sizeof(r->host)];
        memcpy(host, r->host, sizeof(host));
        uint16_t port = r->port;
        pthread_mutex_unlock(&r->mu);
        (void)lookup(r, host, port);
        last_ns = et_now_ns();
        pthread_mutex_lock(&r->mu);
    }
    bool free_it;
    unref_locked(r, &free_it);
    pthread_mutex_unlock(&r->mu);
    if (free_it)
        destroy(r);
    return NULL;
}

et_resolver *et_resolver_new(void)
{
    et_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 2;
    pthread_t th;
    if (pthread_create(&th, NULL, resolver_main, r) != 0) {
        destroy(r);
        return NULL;
    }
    pthread_detach(th);
    return r;
}

void et_resolver_free(et_resolver *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    bool free_it;
    unref_locked(r, &free_it);
    pthread_mutex_unlock(&r->mu);
    if (free_it)
        destroy(r);
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
    for (size_t i = 0; i < len; i++) {
        char c = start[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || (!v6 && c == '_') || (v6 && (c == ':' || c == '%'));
        ET_ENSURE(ok, ET_E_CONFIG);
    }
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

/* set_name makes |host|:|port| the resolver's name (forgetting another one's addresses);
 * called with the lock. */
static void set_name(et_resolver *r, const char *host, uint16_t port)
{
    if (strcmp(r->host, host) == 0 && r->port == port)
        return;
    snprintf(r->host, sizeof(r->host), "%s", host);
    r->port = port;
    r->n = 0;
    r->pref = 0;
    r->fetched_ns = 0;
    r->failing = false;
}

int et_resolver_prime(et_resolver *r, const char *host, uint16_t port)
{
    ET_ENSURE(r != NULL && host != NULL && strlen(host) <= ET_RESOLVE_HOST_MAX, ET_E_USAGE);
    pthread_mutex_lock(&r->mu);
    set_name(r, host, port);
    pthread_mutex_unlock(&r->mu);
    return lookup(r, host, port) ? ET_OK : ET_E_IO;
}

int et_resolver_pick(et_resolver *r, const char *host, uint16_t port, struct sockaddr_storage *out,
                     socklen_t *len)
{
    ET_ENSURE(r != NULL && host != NULL && strlen(host) <= ET_RESOLVE_HOST_MAX, ET_E_USAGE);
    int rv = ET_E_AGAIN;
    pthread_mutex_lock(&r->mu);
    set_name(r, host, port);
    uint64_t now = et_now_ns();
    if (r->n == 0 || now - r->fetched_ns >= (uint64_t)ET_RESOLVE_REFRESH_S * 1000000000u) {
        r->want = true;
        pthread_cond_signal(&r->cv);
    }
    if (r->n > 0) {
        *out = r->addrs[r->pref];
        *len = r->lens[r->pref];
        rv = ET_OK;
    }
    pthread_mutex_unlock(&r->mu);
    return rv;
}

void et_resolver_failed(et_resolver *r, const struct sockaddr_storage *a, socklen_t len)
{
    if (r == NULL || a == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    if (r->n > 0 && same_addr(a, len, &r->addrs[r->pref], r->lens[r->pref]))
        r->pref = (r->pref + 1) % r->n; /* the first report moves them on, the others agree */
    r->want = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

uint64_t et_resolver_lookups(et_resolver *r)
{
    return r != NULL ? atomic_load(&r->lookups) : 0;
}
