/* progress: a progress bar with rate and ETA on a terminal, plain lines otherwise, on stderr. */
#ifndef APP_PROGRESS_H
#define APP_PROGRESS_H

#include <stdint.h>

typedef struct progress {
    const char *label; /* "compress" */
    int quiet, tty;
    double start, last_draw;
    int last_decile;
    uint64_t done, total;
    const char *count_unit; /* NULL: done and total are bytes; else counts of this ("it") */
    uint64_t base;          /* done at start: the rate counts what was done after it */
} progress;

void progress_init(progress *p, const char *label, int quiet);
/* The df11_progress callback: ctx is a progress*. */
void progress_update(void *ctx, uint64_t done, uint64_t total, const char *what);
/* Ends the bar's line and prints the elapsed time and average rate. */
void progress_finish(progress *p);
/* A bar over the denoising steps of several jobs (df11 batch, df11 regress): total grows as
 * jobs are resolved; the bar opens at the first step and closes at the last. */
typedef struct progress_steps {
    progress bar;
    const char *label;
    int quiet, open;
    uint64_t done, total;
} progress_steps;

/* One more step done; what names it ("line 3, step 2/28"). */
void progress_steps_add(progress_steps *s, const char *what);
/* Closes the bar if open (after a run that stopped early). */
void progress_steps_close(progress_steps *s);
/* Seconds on a monotonic clock. */
double progress_now(void);
/* "1.23 it/s", or below one a second "4.56 s/it" (unit "it") into buf. */
void progress_rate_text(char *buf, int n, double rate, const char *unit);
/* The time left as "m:ss", "XhYYm", or "--:--" when unknown (secs < 0) into buf. */
void progress_eta_text(char *buf, int n, double secs);
/* "1.23 GB" into buf. */
const char *progress_bytes(char *buf, int n, double bytes);

#endif
