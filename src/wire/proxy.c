/* proxy.c: PROXY protocol v2 header (proxy.h), written through a fixed CBB. */
#include "et/proxy.h"

#include <stdbool.h>
#include <string.h>

#include <openssl/bytestring.h>

static const uint8_t signature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                      0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* as_v6 writes |a|'s address in IPv6 form (IPv4 mapped). */
static void as_v6(const et_addr *a, uint8_t out[16])
{
    if (a->family == 6) {
        memcpy(out, a->addr, 16);
        return;
    }
    memset(out, 0, 10);
    out[10] = 0xff;
    out[11] = 0xff;
    memcpy(out + 12, a->addr, 4);
}

int et_proxy_v2_encode(const et_addr *client, const et_addr *server, uint8_t *out, size_t cap)
{
    ET_ENSURE((client->family == 4 || client->family == 6) &&
                  (server->family == 4 || server->family == 6),
              ET_E_USAGE);
    bool v4 = client->family == 4 && server->family == 4;
    CBB cbb;
    if (!CBB_init_fixed(&cbb, out, cap))
        return ET_RAISE(ET_E_USAGE);
    int ok = CBB_add_bytes(&cbb, signature, sizeof(signature)) &&
             CBB_add_u8(&cbb, 0x21) /* version 2, command PROXY */ &&
             CBB_add_u8(&cbb, v4 ? 0x11 : 0x21) /* TCP over IPv4 / IPv6 */ &&
             CBB_add_u16(&cbb, v4 ? 12 : 36);
    if (ok && v4) {
        ok = CBB_add_bytes(&cbb, client->addr, 4) && CBB_add_bytes(&cbb, server->addr, 4);
    } else if (ok) {
        uint8_t a[16], b[16];
        as_v6(client, a);
        as_v6(server, b);
        ok = CBB_add_bytes(&cbb, a, 16) && CBB_add_bytes(&cbb, b, 16);
    }
    ok =
        ok && CBB_add_u16(&cbb, client->port) && CBB_add_u16(&cbb, server->port) && CBB_flush(&cbb);
    size_t n = CBB_len(&cbb);
    CBB_cleanup(&cbb);
    ET_ENSURE(ok, ET_E_USAGE);
    return (int)n;
}
