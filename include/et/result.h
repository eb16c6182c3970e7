/* result.h: the one error convention of the project.
 *
 * A function that can fail returns `int`: 0 (ET_OK) or more on success, a negative error code on
 * failure, and is declared ET_MUST_USE so the compiler will not let a caller drop it. An error
 * code carries a class (what the caller can do about it) and a detail; for the protocol class
 * the detail is the 16-bit wire error code of spec/protocol.md, so a protocol failure found deep
 * in a parser travels up unchanged into the ERROR frame that reports it.
 *
 * ET_ENSURE / ET_GUARD keep the happy path linear; ET_RAISE records file and line of the first
 * failure in a per-thread slot (et_error_where) for logs. */
#ifndef ET_RESULT_H
#define ET_RESULT_H

#include <stdint.h>

#define ET_MUST_USE __attribute__((warn_unused_result))

/* et_class says what a caller can do about an error. */
typedef enum et_class {
    ET_CLASS_NONE = 0,
    ET_CLASS_IO = 1,       /* a system call or TLS failed; errno / the TLS error queue say why */
    ET_CLASS_CLOSED = 2,   /* the peer closed the connection */
    ET_CLASS_BLOCKED = 3,  /* would block: retry when the reactor says the socket is ready */
    ET_CLASS_PROTOCOL = 4, /* the peer broke spec/protocol.md; detail = wire error code */
    ET_CLASS_RESOURCE = 5, /* out of memory, or a configured limit reached */
    ET_CLASS_USAGE = 6,    /* the caller or the configuration is wrong */
} et_class;

#define ET_OK                    0
#define ET_ERR_MAKE(cls, detail) (-(int)(((unsigned)(cls) << 16) | ((unsigned)(detail)&0xffffu)))

enum {
    ET_E_IO = ET_ERR_MAKE(ET_CLASS_IO, 1),
    ET_E_TLS = ET_ERR_MAKE(ET_CLASS_IO, 2),
    ET_E_CLOSED = ET_ERR_MAKE(ET_CLASS_CLOSED, 1),
    ET_E_AGAIN = ET_ERR_MAKE(ET_CLASS_BLOCKED, 1),
    ET_E_NOMEM = ET_ERR_MAKE(ET_CLASS_RESOURCE, 1),
    ET_E_LIMIT = ET_ERR_MAKE(ET_CLASS_RESOURCE, 2),
    ET_E_USAGE = ET_ERR_MAKE(ET_CLASS_USAGE, 1),
    ET_E_CONFIG = ET_ERR_MAKE(ET_CLASS_USAGE, 2),
};

/* ET_E_PROTO(code) is the error for wire error code |code| (an et_wire_error). */
#define ET_E_PROTO(code) ET_ERR_MAKE(ET_CLASS_PROTOCOL, (code))

/* et_err_class returns the class of |err|, ET_CLASS_NONE for a non-negative value. */
et_class et_err_class(int err);

/* et_err_detail returns the low 16 bits of |err|; for ET_CLASS_PROTOCOL the wire error code. */
uint16_t et_err_detail(int err);

/* et_strerror returns a static, human-readable name for |err| ("protocol: frame_too_large"). */
const char *et_strerror(int err);

/* et_error_note records |err| raised at |file|:|line| in this thread's last-error slot. */
void et_error_note(int err, const char *file, int line);

/* et_error_where returns "file:line" of this thread's last raised error, or "" if none. The
 * string is owned by the thread's slot and valid until the next et_error_note. */
const char *et_error_where(void);

/* ET_RAISE records where |err| was raised and evaluates to |err|. */
#define ET_RAISE(err) (et_error_note((err), __FILE__, __LINE__), (err))

/* ET_ENSURE returns |err| from the enclosing function unless |cond| holds. */
#define ET_ENSURE(cond, err)      \
    do {                          \
        if (!(cond))              \
            return ET_RAISE(err); \
    } while (0)

/* ET_GUARD returns from the enclosing function with the error of |expr| when it fails. */
#define ET_GUARD(expr)            \
    do {                          \
        int et_guard_r_ = (expr); \
        if (et_guard_r_ < 0)      \
            return et_guard_r_;   \
    } while (0)

/* ET_GUARD_GOTO stores the error of |expr| in |rv| and jumps to |label| when it fails. */
#define ET_GUARD_GOTO(rv, expr, label) \
    do {                               \
        (rv) = (expr);                 \
        if ((rv) < 0)                  \
            goto label;                \
    } while (0)

#endif
