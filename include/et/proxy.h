/* proxy.h: the PROXY protocol version 2 header that originctl --proxy-protocol writes to a local
 * service before the stream's bytes, so the service sees the public client's address. */
#ifndef ET_PROXY_H
#define ET_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "et/frame.h"
#include "et/result.h"

/* Longest header et_proxy_v2_encode writes (IPv6: 16-byte prefix + 36 bytes of addresses). */
#define ET_PROXY_V2_MAX 52

/* et_proxy_v2_encode writes a PROXY v2 "PROXY" header for a TCP connection from |client| to
 * |server| into |out| (|cap| bytes) and returns its length, or ET_E_USAGE when |cap| is too
 * small or a family is neither 4 nor 6. Both IPv4: family TCP over IPv4 (28 bytes); otherwise
 * TCP over IPv6 (52 bytes) with IPv4 addresses mapped (::ffff:a.b.c.d). Does not allocate. */
ET_MUST_USE int et_proxy_v2_encode(const et_addr *client, const et_addr *server, uint8_t *out,
                                   size_t cap);

#endif
