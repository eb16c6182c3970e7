/* logf.c: et_logf (logf.h). */
#include "et/logf.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MAX_FIELDS 48

void et_logf(et_log_level lvl, const char *event, const char *fmt, ...)
{
    if (!et_log_enabled(lvl))
        return;
    char text[ET_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    et_log_field fields[MAX_FIELDS + 1];
    size_t nf = 0;
    char *p = text;
    while (*p != '\0' && nf < MAX_FIELDS) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        char *key = p;
        while (*p != '\0' && *p != ' ' && *p != '=')
            p++;
        if (*p != '=') { /* a bare word */
            if (*p == ' ')
                *p++ = '\0';
            fields[nf++] = ET_KV_STR("msg", key);
            continue;
        }
        *p++ = '\0';
        char *val = p;
        bool quoted = *p == '"';
        if (quoted) {
            val = ++p;
            while (*p != '\0' && *p != '"')
                p++;
        } else {
            while (*p != '\0' && *p != ' ')
                p++;
        }
        if (*p != '\0')
            *p++ = '\0';
        /* Unquoted values may be counters: INTTEXT makes them JSON numbers when they are. */
        fields[nf++] = quoted ? ET_KV_STR(key, val) : ET_KV_INTTEXT(key, val, strlen(val));
    }
    fields[nf] = (et_log_field){.key = NULL, .type = ET_LOG_T_END};
    et_log_emit(lvl, event, fields);
}
