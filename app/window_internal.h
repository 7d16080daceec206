/* window_internal: what cmd_window.c (the state, the worker, the events, the frames) shares
 * with window_script.c (the --script commands and the --geometry report). Not part of any
 * other file's interface. */
#ifndef APP_WINDOW_INTERNAL_H
#define APP_WINDOW_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "app/generate.h"
#include "app/preview.h"
#include "app/window_ui.h"

typedef struct win_entry { /* a finished image of this session */
    char *prompt, *negative;
    pipeline_info info; /* its negative points at ours */
    uint64_t seed;
    uint8_t *rgb;
    int w, h;
    double secs;
    char *saved; /* where Save wrote it */
} win_entry;

typedef enum win_stage { ST_START, ST_LOAD, ST_DENOISE, ST_DECODE } win_stage;

/* What the worker and the UI share, under mu. */
typedef struct win_shared {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* wakes a held worker */
    win_stage stage;
    int step, n_steps, preview_step;
    double t_start, t_step1, t_step; /* the run's start, step 1's end, the last step's end */
    uint8_t *preview;                /* the latest preview, pw x ph RGB */
    int pw, ph;
    unsigned preview_seq;
    pipeline_info info;
    uint8_t *rgb; /* the final image, iw x ih */
    int iw, ih;
    err result;
    char msg[1024];
    int hold_step, quitting; /* the script's hold; quitting ends any hold */
    volatile int cancel;
} win_shared;

typedef enum wait_kind { SW_NONE, SW_STEP, SW_DONE, SW_SLEEP, SW_SIZE } wait_kind;

typedef struct win_script {
    const char *path;
    char *text, **lines;
    int n, next, line, ended;
    wait_kind wait;
    int arg, arg2;
    double deadline, timeout;
} win_script;

typedef struct win {
    gen_args a;
    pipeline_session *ses; /* the model, opened once for every Generate */
    const char *outdir, *geometry;
    pipeline_info desc; /* the model, as described before any run */
    preview_proj proj;
    int have_proj;
    ui u;
    ui_edit f[UI_FIRST_BUTTON];
    int shown[UI_FIRST_BUTTON], focus;
    uint64_t rng;
    /* the run */
    pthread_t thread;
    int running;
    pipeline_job job; /* the run's (owned) */
    win_shared sh;
    Uint32 ev; /* the worker's wake-up event */
    /* the session's images; view: the one shown, -1 the run's preview */
    win_entry *hist;
    int n_hist, cap_hist, view;
    SDL_Texture *ptex, *etex; /* the preview's, the shown entry's */
    int ptex_w, ptex_h, etex_entry;
    unsigned ptex_seq;
    /* what the last frame showed */
    int drawn_step, drawn_pstep, drawn_nsteps;
    char progress[256], status[1400], history[64], details[256];
    enum { LAST_NONE, LAST_DONE, LAST_STOPPED } last; /* how the last run ended */
    char model[96];                                   /* "FLUX.1-dev · CPU" */
    int status_error, dirty, quit, quit_asked, exit_code;
    double last_frame;
    win_script sc;
} win;

/* The status line (error: in red). */
void win_status(win *w, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Closes the window, after cancelling and joining a run. */
void win_ask_quit(win *w);
/* Draws a frame (and writes it to shot, a PNG, when given). */
err win_frame(win *w, const char *shot);
/* The widgets' rectangles and the state as JSON at path. */
err win_geometry(win *w, const char *path);
/* --script FILE: its lines; 0 (message printed) if it cannot be read. */
int win_script_load(win_script *sc, const char *path);
/* Runs the script's commands until one yields to the event loop. */
void win_script_step(win *w);

#endif
