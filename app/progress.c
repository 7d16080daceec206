/* progress: terminal bar or plain lines, with rate and ETA. */
#include "app/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *progress_bytes(char *buf, int n, double bytes) {
    const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (bytes >= 1000 && u < 4)
        bytes /= 1000, u++;
    snprintf(buf, (size_t)n, u ? "%.2f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

void progress_rate_text(char *buf, int n, double rate, const char *unit) {
    /* slow steps read better as seconds per step, as the diffusers bars print them */
    if (rate >= 1 || rate == 0)
        snprintf(buf, (size_t)n, "%.2f %s/s", rate, unit);
    else
        snprintf(buf, (size_t)n, "%.2f s/%s", 1 / rate, unit);
}

void progress_init(progress *p, const char *label, int quiet) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->quiet = quiet;
    p->tty = isatty(2);
    p->start = progress_now();
    p->last_decile = -1;
}

void progress_eta_text(char *buf, int n, double secs) {
    if (secs < 0 || secs > 1e7)
        snprintf(buf, (size_t)n, "--:--");
    else if (secs < 3600)
        snprintf(buf, (size_t)n, "%d:%02d", (int)secs / 60, (int)secs % 60);
    else
        snprintf(buf, (size_t)n, "%dh%02dm", (int)secs / 3600, (int)secs / 60 % 60);
}

void progress_update(void *ctx, uint64_t done, uint64_t total, const char *what) {
    progress *p = ctx;
    p->done = done;
    p->total = total;
    if (p->quiet || total == 0) return;
    double now = progress_now(), el = now - p->start;
    double frac = (double)done / (double)total,
           rate = el > 0 && done > p->base ? (double)(done - p->base) / el : 0;
    char d[32], t[32], r[32], eta[32];
    if (p->count_unit) {
        snprintf(d, sizeof d, "%llu", (unsigned long long)done);
        snprintf(t, sizeof t, "%llu", (unsigned long long)total);
        progress_rate_text(r, sizeof r, rate, p->count_unit);
    } else {
        progress_bytes(d, sizeof d, (double)done);
        progress_bytes(t, sizeof t, (double)total);
        progress_bytes(r, sizeof r - 2, rate);
        strcat(r, "/s");
    }
    progress_eta_text(eta, sizeof eta, rate > 0 ? (double)(total - done) / rate : -1);
    if (p->tty) {
        if (now - p->last_draw < 0.1 && done < total) return;
        p->last_draw = now;
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r\033[K%s [%s] %3d%% %s/%s %s ETA %s %.40s", p->label, bar,
                (int)(frac * 100), d, t, r, eta, what ? what : "");
        fflush(stderr);
    } else {
        int decile = (int)(frac * 10);
        if (!p->count_unit && (decile == p->last_decile || done == total)) return;
        p->last_decile = decile;
        if (p->count_unit) /* plain lines: one per step is what a log wants */
            fprintf(stderr, "df11: %s: %s/%s %s, %s, ETA %s\n", p->label, d, t, what ? what : "", r,
                    eta);
        else
            fprintf(stderr, "df11: %s: %d%% (%s of %s), %s, ETA %s\n", p->label, decile * 10, d, t,
                    r, eta);
    }
}

void progress_finish(progress *p) {
    if (p->quiet) return;
    double el = progress_now() - p->start;
    char t[32], r[32];
    if (p->count_unit) {
        if (p->tty) fprintf(stderr, "\r\033[K");
        fprintf(stderr, "df11: %s: %llu %s in %.1f s (%.2f %s/s)\n", p->label,
                (unsigned long long)p->total, p->count_unit, el, el > 0 ? p->total / el : 0,
                p->count_unit);
        return;
    }
    progress_bytes(t, sizeof t, (double)p->total);
    progress_bytes(r, sizeof r, el > 0 ? (double)p->total / el : 0);
    if (p->tty) fprintf(stderr, "\r\033[K");
    fprintf(stderr, "df11: %s: %s in %.1f s (%s/s)\n", p->label, t, el, r);
}

void progress_steps_add(progress_steps *s, const char *what) {
    if (!s->open) {
        /* the bar opens as the first step ends; the rate counts the steps after it */
        progress_init(&s->bar, s->label, s->quiet);
        s->bar.count_unit = "it";
        s->bar.base = s->done + 1;
        s->open = 1;
    }
    progress_update(&s->bar, ++s->done, s->total, what);
    if (s->done == s->total) progress_steps_close(s);
}

void progress_steps_close(progress_steps *s) {
    if (s->open) progress_finish(&s->bar);
    s->open = 0;
}
