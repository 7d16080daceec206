/* log: leveled logging to stderr (stdout belongs to the program's output). */
#ifndef CORE_LOG_H
#define CORE_LOG_H

typedef enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG } log_level;

/* Sets the most verbose level printed (default INFO). */
void log_set_level(log_level level);
log_level log_get_level(void);
void log_printf(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_ERROR(...) log_printf(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) log_printf(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_INFO(...) log_printf(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) log_printf(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
