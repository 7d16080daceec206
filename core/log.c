/* log: leveled logging to stderr. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

static log_level log_max = LOG_LEVEL_INFO;

void log_set_level(log_level level) { log_max = level; }
log_level log_get_level(void) { return log_max; }

void log_printf(log_level level, const char *fmt, ...) {
    static const char *tags[] = {"error", "warning", "info", "debug"};
    if (level > log_max) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "df11: %s: ", tags[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
