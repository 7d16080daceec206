/* err: error codes, the thread-local message, and the macros that make a validation one line.
 * A library function returns an err and leaves the message here until the next failure on the
 * same thread (sqlite3_errmsg style); it never prints or exits. CHECK is for programmer errors. */
#ifndef CORE_ERR_H
#define CORE_ERR_H

#include <stdio.h>
#include <stdlib.h>

typedef enum err {
    ERR_OK = 0,
    ERR_IO,          /* open/read/write/rename failed */
    ERR_FORMAT,      /* bytes are not what the format says (truncated, corrupt, bad header) */
    ERR_CHECKSUM,    /* decoded data does not match its stored checksum */
    ERR_UNSUPPORTED, /* valid input we do not handle (dtype, version) */
    ERR_ARG,         /* bad argument or flag from the caller */
    ERR_NOMEM,       /* host or device allocation failed */
    ERR_CUDA,        /* CUDA runtime or library error, or no GPU */
    ERR_EXISTS,      /* output exists and would be overwritten */
    ERR_CANCELLED,   /* the caller asked the work to stop */
} err;

/* Sets the thread's message (printf-style) and returns code. */
err err_set(err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "context: " to the thread's current message and returns code (for adding a path). */
err err_wrap(err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the last failure on this thread ("" if none). Borrowed until the next err_*. */
const char *err_msg(void);
/* A short name for a code ("format error", ...). */
const char *err_name(err code);

#define FAIL(code, ...) return err_set((code), __VA_ARGS__)
#define FAIL_IF(cond, code, ...)                                                                   \
    do {                                                                                           \
        if (cond) return err_set((code), __VA_ARGS__);                                             \
    } while (0)
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        err try_e_ = (expr);                                                                       \
        if (try_e_ != ERR_OK) return try_e_;                                                       \
    } while (0)
/* Programmer errors only: abort with file:line. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: internal check failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
