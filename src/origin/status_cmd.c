/* status_cmd.c: `originctl status` (origin.h): GET /status from a running originctl's admin
 * listener, printed as a table or as JSON. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "et/origin.h"
#include "et/tls.h"

#define STATUS_MAX (1u << 20) /* the whole answer, head and body */

/* fetch_status reads the answer to GET /status from |addr| into a heap buffer. Returns its
 * length, or -1 (a message printed). */
static long fetch_status(const char *addr, char **out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (et_sock_parse_addr(addr, &ss, &sl) < 0) {
        fprintf(stderr, "originctl status: bad address '%s'\n", addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0}; /* connect, send and every read are bounded */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char *buf = malloc(STATUS_MAX + 1);
    if (buf == NULL || connect(fd, (struct sockaddr *)&ss, sl) != 0) {
        fprintf(stderr,
                "originctl status: cannot reach %s (%s); is originctl running with "
                "--admin %s?\n",
                addr, strerror(errno), addr);
        free(buf);
        close(fd);
        return -1;
    }
    static const char req[] =
        "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    size_t len = 0;
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1))
        goto fail;
    while (len < STATUS_MAX) {
        ssize_t n = recv(fd, buf + len, STATUS_MAX - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    return (long)len;
fail:
    fprintf(stderr, "originctl status: %s: %s\n", addr, strerror(errno));
    free(buf);
    close(fd);
    return -1;
}

static json_int_t num(json_t *j, const char *path1, const char *path2)
{
    json_t *v = json_object_get(j, path1);
    if (path2 != NULL)
        v = json_object_get(v, path2);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static void print_table(json_t *j)
{
    const char *sess = json_string_value(json_object_get(j, "session"));
    const char *edge = json_string_value(json_object_get(j, "edge"));
    json_t *cancels = json_object_get(j, "cancels");
    printf("session   %s\n", sess ? sess : "?");
    printf("edge      %s (%s)\n", edge ? edge : "?",
           json_is_true(json_object_get(j, "legacy")) ? "legacy: no control socket"
                                                      : "control socket + data sockets");
    printf("sockets   %lld of %lld ready\n", (long long)num(j, "sockets_ready", NULL),
           (long long)num(j, "sockets_wanted", NULL));
    printf("  %-6s %-8s %-10s %s\n", "ID", "ROLE", "STATE", "RTT");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(j, "sockets"), i, s)
    {
        const char *role = json_string_value(json_object_get(s, "role"));
        const char *state = json_string_value(json_object_get(s, "state"));
        json_int_t rtt = num(s, "rtt_us", NULL);
        char rtts[32] = "-";
        if (rtt > 0)
            snprintf(rtts, sizeof(rtts), "%.3f ms", (double)rtt / 1000.0);
        printf("  %-6lld %-8s %-10s %s\n", (long long)num(s, "id", NULL), role ? role : "?",
               state ? state : "?", rtts);
    }
    printf("streams   %lld open, %lld in all\n", (long long)num(j, "streams", "open"),
           (long long)num(j, "streams", "total"));
    printf("bytes     %lld to the edge, %lld from the edge\n",
           (long long)num(j, "bytes", "to_edge"), (long long)num(j, "bytes", "from_edge"));
    json_t *rx = json_object_get(cancels, "received"), *tx = json_object_get(cancels, "sent");
    printf("cancels   received %lld (control %lld, data %lld), sent %lld (control %lld, data "
           "%lld), %lld acknowledged\n",
           (long long)(num(rx, "control", NULL) + num(rx, "data", NULL)),
           (long long)num(rx, "control", NULL), (long long)num(rx, "data", NULL),
           (long long)(num(tx, "control", NULL) + num(tx, "data", NULL)),
           (long long)num(tx, "control", NULL), (long long)num(tx, "data", NULL),
           (long long)num(cancels, "acks", NULL));
}

int et_origin_status_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"admin", required_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *addr = "127.0.0.1:7071";
    bool as_json = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'j': as_json = true; break;
        case 'h': printf("usage: originctl status [--admin ADDR] [--json]\n"); return 0;
        default: fprintf(stderr, "usage: originctl status [--admin ADDR] [--json]\n"); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "usage: originctl status [--admin ADDR] [--json]\n");
        return 2;
    }
    char *buf = NULL;
    long n = fetch_status(addr, &buf);
    if (n < 0)
        return 1;
    const char *body = strstr(buf, "\r\n\r\n");
    int status = 1;
    json_t *j = NULL;
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0 || body == NULL) {
        fprintf(stderr, "originctl status: %s did not answer 200: %.80s\n", addr, buf);
        goto out;
    }
    body += 4;
    json_error_t err;
    j = json_loadb(body, (size_t)(buf + n - body), 0, &err);
    if (!json_is_object(j)) {
        fprintf(stderr, "originctl status: %s sent no JSON object: %s\n", addr, err.text);
        goto out;
    }
    if (as_json) {
        if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
            goto out;
        putchar('\n');
    } else {
        print_table(j);
    }
    status = fflush(stdout) == 0 ? 0 : 1;
out:
    json_decref(j);
    free(buf);
    return status;
}
