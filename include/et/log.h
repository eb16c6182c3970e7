/* log.h: structured logging, one event per line, to stderr (or the fd of et_log_set_fd).
 *
 * Every line carries ts (UTC, microseconds), level and event, then the caller's fields:
 *
 *   text: ts=2026-11-22T03:10:00.123456Z level=info event=session_up tunnel=photos sockets=5
 *   json: {"ts":"2026-11-22T03:10:00.123456Z","level":"info","event":"session_up",
 *          "tunnel":"photos","sockets":5}
 *
 * Text values that are empty or contain spaces, quotes, '=', backslashes, control characters or
 * non-ASCII bytes are double-quoted, with \" \\ \n \r \t and \xNN escapes; valid UTF-8 stays as
 * is inside the quotes and invalid bytes become \xNN. JSON strings are always escaped (\" \\ \n
 * \r \t \b \f, \u00XX for other control bytes), and a byte that is not part of valid UTF-8 is
 * written as \u00XX (its Latin-1 reading), so every line is valid JSON whatever the input.
 *
 * A line is built in a 4 KiB stack buffer and written with a single write(2), so lines from
 * several threads never interleave (for a pipe, 4096 bytes is within PIPE_BUF: the write is
 * atomic). A line that would not fit is cut between whole characters or escapes, any open string
 * is closed, later fields are dropped and `truncated=true` ("truncated":true) is appended: the
 * line stays well-formed.
 *
 * Logging:
 *
 *   et_log(ET_LOG_INFO, "session_up", ET_KV_STR("tunnel", name), ET_KV_HEX("session", id, 16),
 *          ET_KV_INT("sockets", n));
 *
 * is typed (the compiler checks every field) and safe for any value, including text from the
 * network. Arguments are not evaluated when the level is filtered out. (A printf-style wrapper,
 * et_logf, lives in logf.h on top of et_log_emit.)
 *
 * Keys are expected to be short identifiers; any byte outside [A-Za-z0-9_.-] in a key is written
 * as '_' in text mode (escaped in JSON).
 *
 * Threads: everything here may be called from any thread. et_log_init and et_log_set_fd are meant
 * for start-up (and tests); they take effect atomically but a line being built concurrently may
 * still use the old settings. */
#ifndef ET_LOG_H
#define ET_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "et/result.h"

typedef enum et_log_level {
    ET_LOG_DEBUG = 0,
    ET_LOG_INFO = 1,
    ET_LOG_WARN = 2,
    ET_LOG_ERROR = 3,
} et_log_level;

typedef enum et_log_format {
    ET_LOG_TEXT = 0, /* key=value (logfmt), the default */
    ET_LOG_JSON = 1, /* one JSON object per line */
} et_log_format;

/* The largest line, newline included. */
#define ET_LOG_LINE_MAX 4096

/* et_log_init sets the output format and the lowest level written (default: text, info). */
void et_log_init(et_log_format fmt, et_log_level min);

/* et_log_set_fd makes lines go to |fd| instead of stderr (2) and returns the previous fd. The
 * log does not own |fd| and never closes it. */
int et_log_set_fd(int fd);

/* et_log_enabled returns whether a line at |lvl| would be written. */
bool et_log_enabled(et_log_level lvl);

/* et_log_level_name returns "debug", "info", "warn" or "error" ("?" for anything else). */
const char *et_log_level_name(et_log_level lvl);

/* et_log_parse_level reads a level name as et_log_level_name writes it ("warning" is accepted
 * too) into |*out|. Returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_log_parse_level(const char *s, et_log_level *out);

/* et_log_parse_format reads "text" or "json" into |*out|. Returns ET_OK or ET_E_CONFIG. */
ET_MUST_USE int et_log_parse_format(const char *s, et_log_format *out);

/* ---- typed fields -------------------------------------------------------------------------- */

typedef enum et_log_type {
    ET_LOG_T_END = 0, /* terminates a field array */
    ET_LOG_T_STR,     /* NUL-terminated text; NULL is written as null / (null) */
    ET_LOG_T_STRN,    /* |n| bytes of text, any bytes */
    ET_LOG_T_INT,
    ET_LOG_T_UINT,
    ET_LOG_T_HEX, /* |n| bytes as lowercase hex */
    ET_LOG_T_BOOL,
    ET_LOG_T_DOUBLE,  /* %.6g; NaN and infinities are JSON null */
    ET_LOG_T_INTTEXT, /* |n| bytes of decimal integer text (-?[0-9]+, at most 20 digits, no
                       * leading zero): written bare, a JSON number; anything else is written
                       * as a string, so it can never break the line. For printf wrappers. */
} et_log_type;

/* One field. Build them with the ET_KV_* macros; the log reads them during the call only. */
typedef struct et_log_field {
    const char *key;
    et_log_type type;
    size_t n; /* ET_LOG_T_STRN, ET_LOG_T_HEX, ET_LOG_T_INTTEXT: byte count */
    union {
        const char *s;        /* ET_LOG_T_STR */
        const void *p;        /* ET_LOG_T_STRN, ET_LOG_T_HEX, ET_LOG_T_INTTEXT */
        long long i;          /* ET_LOG_T_INT */
        unsigned long long u; /* ET_LOG_T_UINT */
        bool b;               /* ET_LOG_T_BOOL */
        double d;             /* ET_LOG_T_DOUBLE */
    };
} et_log_field;

#define ET_KV_STR(k, v)     ((et_log_field){.key = (k), .type = ET_LOG_T_STR, .s = (v)})
#define ET_KV_STRN(k, v, l) ((et_log_field){.key = (k), .type = ET_LOG_T_STRN, .p = (v), .n = (l)})
#define ET_KV_INT(k, v)     ((et_log_field){.key = (k), .type = ET_LOG_T_INT, .i = (long long)(v)})
#define ET_KV_UINT(k, v) \
    ((et_log_field){.key = (k), .type = ET_LOG_T_UINT, .u = (unsigned long long)(v)})
#define ET_KV_HEX(k, v, l) ((et_log_field){.key = (k), .type = ET_LOG_T_HEX, .p = (v), .n = (l)})
#define ET_KV_INTTEXT(k, v, l) \
    ((et_log_field){.key = (k), .type = ET_LOG_T_INTTEXT, .p = (v), .n = (l)})
#define ET_KV_BOOL(k, v)   ((et_log_field){.key = (k), .type = ET_LOG_T_BOOL, .b = (v) != 0})
#define ET_KV_DOUBLE(k, v) ((et_log_field){.key = (k), .type = ET_LOG_T_DOUBLE, .d = (double)(v)})
/* ET_KV_ERR is the field err="<et_strerror(e)>". */
#define ET_KV_ERR(e) ET_KV_STR("err", et_strerror(e))

/* et_log(lvl, event, fields...) writes one line at |lvl| with |event| and up to any number of
 * ET_KV_* fields. |lvl| is evaluated once; the other arguments only when the level is enabled. */
#define et_log(lvl, ...)                                                                   \
    do {                                                                                   \
        et_log_level et_log_lvl_ = (lvl);                                                  \
        if (et_log_enabled(et_log_lvl_))                                                   \
            et_log_emit(et_log_lvl_, ET_LOG_EVENT_(__VA_ARGS__, 0),                        \
                        (const et_log_field[]){ET_LOG_FIELDS_(__VA_ARGS__, ET_LOG_END_)}); \
    } while (0)

/* Helpers of et_log: split the event from the fields and end the field array. Taking the event
 * from __VA_ARGS__ keeps a call with no fields valid C11. */
#define ET_LOG_EVENT_(ev, ...)  (ev)
#define ET_LOG_FIELDS_(ev, ...) __VA_ARGS__
#define ET_LOG_END_             ((et_log_field){.key = NULL, .type = ET_LOG_T_END})

/* et_log_emit writes one line at |lvl| (unless filtered) with |event| and |fields|, an array
 * ended by an ET_LOG_T_END entry. Use the et_log macro; this is what it calls. */
void et_log_emit(et_log_level lvl, const char *event, const et_log_field *fields);

#endif
