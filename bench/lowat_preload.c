/* lowat_preload.c: an LD_PRELOAD shim for bench/netns.py, never linked into edged/originctl.
 *
 * The engine sets TCP_NOTSENT_LOWAT on its data sockets to a compiled-in ET_DATA_LOWAT (32 KiB).
 * To measure other values without rebuilding, netns.py compiles this file into its temp dir and
 * starts both binaries with LD_PRELOAD=that.so and ET_BENCH_DATA_LOWAT set:
 *   "off"  the setsockopt call is skipped (reports success): the namespace's sysctl applies
 *          (net.ipv4.tcp_notsent_lowat, -1 = unlimited by default)
 *   N      the value is replaced by N bytes
 * Every other setsockopt call passes through unchanged.
 *
 *   cc -shared -fPIC -O2 -o lowat_preload.so bench/lowat_preload.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    static setsockopt_fn real;
    if (real == NULL) {
        real = (setsockopt_fn)dlsym(RTLD_NEXT, "setsockopt");
        if (real == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }
    if (level == IPPROTO_TCP && name == TCP_NOTSENT_LOWAT) {
        const char *e = getenv("ET_BENCH_DATA_LOWAT");
        if (e != NULL && strcmp(e, "off") == 0)
            return 0;
        if (e != NULL && *e != '\0') {
            int v = atoi(e);
            return real(fd, level, name, &v, sizeof(v));
        }
    }
    return real(fd, level, name, val, len);
}
