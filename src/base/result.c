/* result.c: error names and the per-thread last-error slot of result.h. */
#include "et/result.h"

#include <stdio.h>

#include "et/frame.h"

static _Thread_local struct {
    int err;
    char where[96];
} last_error;

et_class et_err_class(int err)
{
    if (err >= 0)
        return ET_CLASS_NONE;
    return (et_class)(((unsigned)-err >> 16) & 0xffu);
}

uint16_t et_err_detail(int err)
{
    if (err >= 0)
        return 0;
    return (uint16_t)((unsigned)-err & 0xffffu);
}

const char *et_strerror(int err)
{
    switch (err) {
    case ET_OK: return "ok";
    case ET_E_IO: return "io: system call failed";
    case ET_E_TLS: return "io: tls failed";
    case ET_E_CLOSED: return "closed: peer closed";
    case ET_E_AGAIN: return "blocked: would block";
    case ET_E_NOMEM: return "resource: out of memory";
    case ET_E_LIMIT: return "resource: limit reached";
    case ET_E_USAGE: return "usage: invalid argument";
    case ET_E_CONFIG: return "usage: bad configuration";
    default: break;
    }
    if (et_err_class(err) == ET_CLASS_PROTOCOL) {
        /* HTTP request-head errors carry their status (http_head.h); wire codes stay < 0x400 */
        if (et_err_detail(err) == 400)
            return "http: bad request (400)";
        if (et_err_detail(err) == 431)
            return "http: request head too large (431)";
        return et_wire_error_name(et_err_detail(err));
    }
    return "unknown error";
}

void et_error_note(int err, const char *file, int line)
{
    last_error.err = err;
    snprintf(last_error.where, sizeof(last_error.where), "%s:%d", file, line);
}

const char *et_error_where(void)
{
    return last_error.where;
}
