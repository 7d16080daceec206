/* err: thread-local error message storage. */
#include "core/err.h"

#include <stdarg.h>
#include <string.h>

#define ERR_MSG_MAX 2048

static _Thread_local char err_buf[ERR_MSG_MAX];

err err_set(err code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return code;
}

err err_wrap(err code, const char *fmt, ...) {
    char prefix[ERR_MSG_MAX], old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    snprintf(err_buf, sizeof err_buf, "%.1000s: %.1000s", prefix, old);
    return code;
}

const char *err_msg(void) { return err_buf; }

const char *err_name(err code) {
    switch (code) {
    case ERR_OK: return "ok";
    case ERR_IO: return "I/O error";
    case ERR_FORMAT: return "format error";
    case ERR_CHECKSUM: return "checksum mismatch";
    case ERR_UNSUPPORTED: return "unsupported";
    case ERR_ARG: return "bad argument";
    case ERR_NOMEM: return "out of memory";
    case ERR_CUDA: return "CUDA error";
    case ERR_EXISTS: return "output exists";
    case ERR_CANCELLED: return "cancelled";
    }
    return "unknown error";
}
