/* resolve.h: the edge's address by name, for originctl's dials.
 *
 * A reactor never waits for DNS: getaddrinfo() runs on the resolver's own thread (or on the
 * caller's, in et_resolver_prime, which only the main thread calls), and a dial takes whatever
 * address is known now. The addresses of the last lookup are kept and tried one after another:
 * a dial that fails moves the next dials on to the next address and asks for a new lookup, and
 * a dial with addresses older than ET_RESOLVE_REFRESH_S asks for one too (and uses them
 * meanwhile), so an edge that moved (a changed A/AAAA record) is reached without a restart. The
 * thread's lookups are at least ET_RESOLVE_MIN_GAP_MS apart. Each name has its own addresses:
 * after a reload that changed --edge, the old generation's redials and the new one's do not
 * disturb each other.
 *
 * Thread-safe: any reactor may pick and report; the lock is held to copy addresses and, once,
 * to start the thread (pthread_create). */
#ifndef ET_RESOLVE_H
#define ET_RESOLVE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "et/result.h"

#define ET_RESOLVE_ADDRS_MAX  8u
#define ET_RESOLVE_REFRESH_S  60u
#define ET_RESOLVE_MIN_GAP_MS 1000u
#define ET_RESOLVE_HOST_MAX   253u

typedef struct et_resolver et_resolver;

/* et_resolver_new makes a resolver; its thread starts with the first lookup asked for (never,
 * for an edge given as an address). NULL when out of memory. */
et_resolver *et_resolver_new(void);

/* et_resolver_free stops it. Its thread may be inside getaddrinfo(): it is not waited for, and
 * frees what it shares with us when it returns. NULL is a no-op. */
void et_resolver_free(et_resolver *r);

/* et_resolver_split splits "host:port" / "[v6]:port" into |host| (at most ET_RESOLVE_HOST_MAX
 * characters: letters, digits, '-', '_', '.', or an IPv6 literal in brackets) and |port|
 * (1..65535). ET_E_CONFIG when it is not of that form. */
ET_MUST_USE int et_resolver_split(const char *addr, char *host, size_t host_n, uint16_t *port);

/* et_resolver_prime looks |host|:|port| up now, in the calling thread (blocking: for start and
 * reload, never on a reactor), and makes it the resolver's name. ET_OK with at least one
 * address, else ET_E_IO (logged; later dials ask again). */
int et_resolver_prime(et_resolver *r, const char *host, uint16_t port);

/* et_resolver_pick copies the address the next dial of |host|:|port| should try into |out|.
 * ET_E_AGAIN when none is known yet (a lookup is asked for: dial later). Never blocks on DNS. */
ET_MUST_USE int et_resolver_pick(et_resolver *r, const char *host, uint16_t port,
                                 struct sockaddr_storage *out, socklen_t *len);

/* et_resolver_failed reports that a dial of |host|:|port| to |a| did not reach the edge: the
 * next dials try the next address, and a new lookup is asked for. */
void et_resolver_failed(et_resolver *r, const char *host, uint16_t port,
                        const struct sockaddr_storage *a, socklen_t len);

/* et_resolver_lookups returns how many lookups finished (with or without an address). */
uint64_t et_resolver_lookups(et_resolver *r);

/* et_resolver_threads returns how many resolver threads run in the process (a thread ends a
 * moment after et_resolver_free, or after its getaddrinfo returns). */
unsigned et_resolver_threads(void);

#endif
