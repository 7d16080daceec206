/* progress: a progress bar with rate and ETA on a terminal, plain lines otherwise, on stderr. */
#ifndef APP_PROGRESS_H
#define APP_PROGRESS_H

#include <stdint.h>

typedef struct progress {
    const char *label;  /* "compress" */
    int quiet, tty;
    double start, last_draw;
    int last_decile;
    uint64_t done, total;
    const char *count_unit; /* NULL: done and total are bytes; else counts of this ("it") */
} progress;

void progress_init(progress *p, const char *label, int quiet);
/* The df11_progress callback: ctx is a progress*. */
void progress_update(void *ctx, uint64_t done, uint64_t total, const char *what);
/* Ends the bar's line and prints the elapsed time and average rate. */
void progress_finish(progress *p);
/* Seconds on a monotonic clock. */
double progress_now(void);
/* "1.23 GB" into buf. */
const char *progress_bytes(char *buf, int n, double bytes);

#endif
