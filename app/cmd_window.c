/* cmd_window: `df11 window -m MODEL [generate's flags]`, the desktop window (SDL2, SDL2_ttf): a
 * prompt and the main parameters, Generate, a progress bar and a live preview of the latents at
 * every step, then the image; the session's images to flip through and save as generate writes
 * them. pipeline_run runs on a worker thread that shares its progress under a mutex and wakes
 * the UI with an SDL user event, so the window draws only on events and stays responsive; a
 * run is cancelled through the pipeline's cancel flag and always joined. --script FILE drives
 * the same event path for tests and screenshots. Drawing lives in window_ui.c. */
#include "app/cli.h"

const char cli_help_window[] =
    "usage: df11 window -m MODEL [options] [generate's options]\n"
    "A desktop window for one model: type a prompt, set the size, steps, seed and guidance\n"
    "(for SD3.5 the CFG scale and a negative prompt) and press Generate. A progress bar gives\n"
    "the step, it/s and the time left; the panel shows a preview of the latents at every step,\n"
    "then the image. This session's images can be flipped through and saved. Generate's\n"
    "options (df11 help generate) fill the fields and choose the parts and the backend (--cpu).\n"
    "      --font FILE      the font (default $DF11_FONT, else DejaVu Sans, Liberation Sans or\n"
    "                       Noto Sans from the system's fonts, else fc-match's sans-serif)\n"
    "  -o, --output DIR     where Save writes (default: the current folder): df11-NNNNN-SEED.png,\n"
    "                       the bytes generate writes for the job, never over another file\n"
    "      --script FILE    run FILE's commands (below) through the window's events, then close\n"
    "      --geometry FILE  at exit, the widgets' rectangles and the state as JSON\n"
    "keys:\n"
    "  Ctrl+Enter, F5       generate (Enter too, in a one-line field)\n"
    "  Esc                  cancel the run (it stops after the current step), else leave a field\n"
    "  Ctrl+S, Ctrl+R       save the image shown; a random seed\n"
    "  Left, Right, PgUp, PgDn   the previous, the next image (Left, Right outside the fields)\n"
    "  Tab, Shift+Tab       the next, the previous field\n"
    "  Ctrl+A, C, X, V      select all, copy, cut, paste\n"
    "script commands, one a line (# comments):\n"
    "  type TEXT            text input, as typed\n"
    "  key NAME             a key by SDL's name (Return, Tab, Escape, F5, A), after any of Ctrl+,\n"
    "                       Shift+, Alt+\n"
    "  click WIDGET         at its centre: prompt, negative, width, height, steps, guidance\n"
    "                       (cfg), seed, reroll, generate, prev, next, save, image\n"
    "  hold-at-step N       runs wait after step N (its preview drawn) until: release\n"
    "  wait-step N, wait-done   until drawn; a wait longer than the timeout fails the script\n"
    "  timeout SECONDS      the waits' limit (default 120)\n"
    "  screenshot FILE.png, geometry FILE.json, resize W H, sleep MS, expect-status TEXT, quit\n"
    "The window closes at the script's end; a script error exits 1 naming its line. Without a\n"
    "display the window cannot open: df11 generate and df11 batch render without one.\n";

#ifndef DF11_HAVE_SDL
#include <stdio.h>

int cmd_window(int argc, char **argv, const cli_common *c) {
    (void)argc, (void)argv, (void)c;
    fprintf(stderr, "df11: window: this df11 was built without SDL2; the window needs SDL2 and "
                    "SDL2_ttf (install libsdl2-dev libsdl2-ttf-dev and build again). For images "
                    "without a window use df11 generate or df11 batch.\n");
    return CLI_EXIT_FAIL;
}

#else
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/generate.h"
#include "app/png.h"
#include "app/preview.h"
#include "app/progress.h"
#include "app/window_ui.h"
#include "core/fileio.h"

#define WIN_W 1100 /* the window's first size */
#define WIN_H 720

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
    pipeline_job job;
    char *prompt, *negative;
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

static void status(win *w, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void status(win *w, int error, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->status, sizeof w->status, fmt, ap);
    va_end(ap);
    w->status_error = error;
    w->dirty = 1;
}

/* ---- the worker ---- */

enum { WAKE_PROGRESS, WAKE_DONE };

static void wake(win *w, int code) {
    SDL_Event e;
    memset(&e, 0, sizeof e);
    e.type = w->ev;
    e.user.code = code;
    SDL_PushEvent(&e);
}

static void on_info(void *ctx, int job, const pipeline_info *in) {
    (void)job;
    win *w = ctx;
    pthread_mutex_lock(&w->sh.mu);
    w->sh.info = *in;
    w->sh.n_steps = in->steps;
    w->sh.stage = ST_LOAD;
    pthread_mutex_unlock(&w->sh.mu);
    wake(w, WAKE_PROGRESS);
}

static void on_step(void *ctx, int job, int image, int n_images, int step, int n_steps) {
    (void)job, (void)image, (void)n_images;
    win *w = ctx;
    const double t = progress_now();
    pthread_mutex_lock(&w->sh.mu);
    w->sh.step = step, w->sh.n_steps = n_steps, w->sh.t_step = t;
    if (step == 1) w->sh.t_step1 = t;
    w->sh.stage = step == n_steps ? ST_DECODE : ST_DENOISE;
    pthread_mutex_unlock(&w->sh.mu);
}

/* The preview (a cheap projection of x - sigma v), published with its step; the script's hold
 * waits here, after the UI was woken to draw it. */
static void on_preview(void *ctx, int job, int image, int step, const float *lat, int64_t h,
                       int64_t pw) {
    (void)job, (void)image;
    win *w = ctx;
    uint8_t *rgb = w->have_proj ? malloc((size_t)(h * pw * 3)) : NULL;
    if (rgb) preview_rgb(&w->proj, lat, h, pw, rgb);
    pthread_mutex_lock(&w->sh.mu);
    if (rgb) {
        free(w->sh.preview);
        w->sh.preview = rgb, w->sh.pw = (int)pw, w->sh.ph = (int)h;
        w->sh.preview_seq++;
    }
    w->sh.preview_step = step;
    wake(w, WAKE_PROGRESS);
    while (w->sh.hold_step == step && !w->sh.quitting)
        pthread_cond_wait(&w->sh.cv, &w->sh.mu);
    pthread_mutex_unlock(&w->sh.mu);
}

static err on_image(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int iw,
                    int ih) {
    (void)job, (void)image, (void)seed;
    win *w = ctx;
    uint8_t *copy = malloc((size_t)iw * (size_t)ih * 3);
    FAIL_IF(!copy, ERR_NOMEM, "out of memory");
    memcpy(copy, rgb, (size_t)iw * (size_t)ih * 3);
    pthread_mutex_lock(&w->sh.mu);
    free(w->sh.rgb);
    w->sh.rgb = copy, w->sh.iw = iw, w->sh.ih = ih;
    pthread_mutex_unlock(&w->sh.mu);
    return ERR_OK;
}

static void *worker(void *arg) {
    win *w = arg;
    const pipeline_callbacks cb = {.ctx = w,
                                   .on_step = on_step,
                                   .on_info = on_info,
                                   .on_preview = on_preview,
                                   .on_image = on_image,
                                   .cancel = &w->sh.cancel};
    const err e = pipeline_run(&w->a.paths, &w->job, &cb);
    pthread_mutex_lock(&w->sh.mu);
    w->sh.result = e;
    snprintf(w->sh.msg, sizeof w->sh.msg, "%s", e ? err_msg() : "");
    pthread_mutex_unlock(&w->sh.mu);
    wake(w, WAKE_DONE);
    return NULL;
}

/* ---- runs ---- */

static void set_focus(win *w, int id) {
    w->focus = id;
    if (id >= 0 && !w->f[id].multiline) ui_edit_select_all(&w->f[id]);
    w->dirty = 1;
}

static char *dup_str(const char *s) {
    char *d = s ? strdup(s) : NULL;
    CHECK(d || !s);
    return d;
}

/* Field id as a whole number in lo..hi, a multiple of mult; 0 (the field marked, the status
 * saying why) if it is not one. */
static int field_int(win *w, int id, const char *name, unsigned long long lo, unsigned long long hi,
                     unsigned mult, unsigned long long *out) {
    const char *s = w->f[id].s + strspn(w->f[id].s, " ");
    char *end;
    errno = 0;
    const unsigned long long x = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || end[strspn(end, " ")] || errno)
        status(w, 1, "%s: \"%s\" is not a whole number", name, w->f[id].s);
    else if (x < lo || x > hi)
        status(w, 1, "%s: %llu is not in %llu..%llu", name, x, lo, hi);
    else if (x % mult)
        status(w, 1, "%s: %llu is not a multiple of %u", name, x, mult);
    else
        return *out = x, 1;
    w->f[id].invalid = 1;
    set_focus(w, id); /* its text selected, to be typed over */
    return 0;
}

static int field_float(win *w, int id, const char *name, double *out) {
    char *end;
    const double x = strtod(w->f[id].s, &end);
    while (*end == ' ')
        end++;
    if (end == w->f[id].s || *end || !(x >= 0 && x <= 100)) {
        status(w, 1, "%s: \"%s\" is not a number in 0..100", name, w->f[id].s);
        w->f[id].invalid = 1;
        set_focus(w, id);
        return 0;
    }
    *out = x;
    return 1;
}

static void run_start(win *w) {
    if (w->running) return;
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        w->f[i].invalid = 0;
    unsigned long long iw, ih, steps, seed = 0;
    double g = 0;
    const int sd3 = w->desc.family == PIPELINE_SD3;
    if (!field_int(w, UI_WIDTH, "Width", 16, 8192, 16, &iw) ||
        !field_int(w, UI_HEIGHT, "Height", 16, 8192, 16, &ih) ||
        !field_int(w, UI_STEPS, "Steps", 1, 1000, 1, &steps) ||
        (w->shown[UI_GUIDANCE] &&
         !field_float(w, UI_GUIDANCE, sd3 ? "CFG scale" : "Guidance", &g)) ||
        !field_int(w, UI_SEED, "Seed", 0, ~0ull, 1, &seed))
        return;
    w->job = w->a.job;
    w->prompt = dup_str(w->f[UI_PROMPT].s);
    w->negative = sd3 && w->f[UI_NEGATIVE].len ? dup_str(w->f[UI_NEGATIVE].s) : NULL;
    w->job.prompt = w->prompt, w->job.negative = w->negative;
    w->job.width = (int)iw, w->job.height = (int)ih, w->job.steps = (int)steps;
    w->job.seed = seed, w->job.batch_count = 1;
    if (w->shown[UI_GUIDANCE] && sd3) w->job.cfg_scale = (float)g;
    if (w->shown[UI_GUIDANCE] && !sd3) w->job.guidance = (float)g;
    pthread_mutex_lock(&w->sh.mu);
    w->sh.stage = ST_START;
    w->sh.step = w->sh.preview_step = 0, w->sh.n_steps = (int)steps;
    w->sh.t_start = progress_now(), w->sh.t_step1 = w->sh.t_step = 0;
    w->sh.cancel = 0, w->sh.result = ERR_OK, w->sh.msg[0] = 0;
    free(w->sh.rgb);
    w->sh.rgb = NULL;
    pthread_mutex_unlock(&w->sh.mu);
    if (pthread_create(&w->thread, NULL, worker, w) != 0) {
        free(w->prompt), free(w->negative);
        w->prompt = w->negative = NULL;
        status(w, 1, "cannot start the worker thread");
        return;
    }
    w->running = 1, w->view = -1;
    status(w, 0, "generating image %d", w->n_hist + 1);
}

static void run_cancel(win *w) {
    if (!w->running) return;
    w->sh.cancel = 1;
    status(w, 0, "cancelling (after the current step)");
}

/* The worker's DONE: joined; its image becomes the newest entry, or the status says why not. */
static void run_finish(win *w) {
    pthread_join(w->thread, NULL);
    w->running = 0;
    pthread_mutex_lock(&w->sh.mu);
    const err e = w->sh.result;
    uint8_t *rgb = w->sh.rgb;
    w->sh.rgb = NULL;
    const int iw = w->sh.iw, ih = w->sh.ih, step = w->sh.step, n = w->sh.n_steps;
    const double secs = progress_now() - w->sh.t_start;
    const double rate = step > 1 ? (step - 1) / (w->sh.t_step - w->sh.t_step1) : 0;
    const pipeline_info info = w->sh.info;
    char msg[sizeof w->sh.msg];
    memcpy(msg, w->sh.msg, sizeof msg);
    pthread_mutex_unlock(&w->sh.mu);
    char r[32] = "";
    if (rate > 0) progress_rate_text(r, sizeof r, rate, "it");
    if (!e && rgb) {
        if (w->n_hist == w->cap_hist) {
            w->cap_hist = w->cap_hist ? 2 * w->cap_hist : 16;
            w->hist = realloc(w->hist, sizeof *w->hist * (size_t)w->cap_hist);
            CHECK(w->hist);
        }
        win_entry *en = &w->hist[w->n_hist++];
        *en = (win_entry){.prompt = w->prompt,
                          .info = info,
                          .seed = w->job.seed,
                          .rgb = rgb,
                          .w = iw,
                          .h = ih,
                          .secs = secs};
        en->negative = dup_str(info.negative);
        en->info.negative = en->negative;
        w->prompt = NULL;
        w->view = w->n_hist - 1, w->last = LAST_DONE;
        snprintf(w->progress, sizeof w->progress, "done \xc2\xb7 %d steps%s%s%s \xc2\xb7 %.1f s", n,
                 r[0] ? " (" : "", r, r[0] ? ")" : "", secs);
        status(w, 0, "image %d: seed %llu, %dx%d, %.1f s", w->n_hist, (unsigned long long)en->seed,
               iw, ih, secs);
    } else {
        free(rgb);
        w->view = w->n_hist - 1, w->last = LAST_STOPPED;
        snprintf(w->progress, sizeof w->progress, "%s at step %d/%d \xc2\xb7 %.1f s",
                 e == ERR_CANCELLED ? "cancelled" : "failed", step, n, secs);
        if (e == ERR_CANCELLED)
            status(w, 0, "cancelled at step %d of %d; no image added", step, n);
        else
            status(w, 1, "error: %s", e ? msg : "the run gave no image");
    }
    free(w->prompt), free(w->negative);
    w->prompt = w->negative = NULL;
    w->drawn_step = w->drawn_pstep = step, w->drawn_nsteps = n;
    if (w->quit_asked) w->quit = 1;
}

static void ask_quit(win *w) {
    if (!w->running) {
        w->quit = 1;
        return;
    }
    w->quit_asked = 1;
    run_cancel(w);
    pthread_mutex_lock(&w->sh.mu);
    w->sh.quitting = 1; /* a held worker goes on to its cancellation */
    pthread_cond_broadcast(&w->sh.cv);
    pthread_mutex_unlock(&w->sh.mu);
    status(w, 0, "closing: waiting for the current step to end");
}

/* ---- the session's images ---- */

/* The shown image to OUTDIR/df11-NNNNN-SEED.png, NNNNN after every such number there, so
 * nothing is overwritten; the bytes are generate's for the job. */
static void save(win *w) {
    if (w->view < 0) {
        status(w, 1, w->running ? "the image is not finished yet" : "no image to save yet");
        return;
    }
    win_entry *en = &w->hist[w->view];
    if (fio_mkdirs(w->outdir)) {
        status(w, 1, "cannot save: %s", err_msg());
        return;
    }
    int next = 1, k;
    DIR *d = opendir(w->outdir);
    for (struct dirent *de; d && (de = readdir(d));) {
        char dash;
        if (sscanf(de->d_name, "df11-%5d%c", &k, &dash) == 2 && dash == '-' && k >= next)
            next = k + 1;
    }
    if (d) closedir(d);
    char name[4096];
    do
        snprintf(name, sizeof name, "%s/df11-%05d-%llu.png", w->outdir, next++,
                 (unsigned long long)en->seed);
    while (fio_exists(name));
    if (gen_write_png(name, &en->info, en->prompt, en->seed, en->rgb, en->w, en->h)) {
        status(w, 1, "cannot save: %s", err_msg());
        return;
    }
    free(en->saved);
    en->saved = dup_str(name);
    status(w, 0, "saved %s", name);
}

static void flip(win *w, int dir) {
    int v = w->view;
    if (dir < 0)
        v = v < 0 ? w->n_hist - 1 : SDL_max(v - 1, 0);
    else if (v >= 0)
        v = v + 1 < w->n_hist ? v + 1 : w->running ? -1 : v;
    if (v != w->view) w->view = v, w->dirty = 1;
}

static void reroll(win *w) {
    w->rng += 0x9e3779b97f4a7c15ull; /* splitmix64 */
    uint64_t z = w->rng;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)((z ^ (z >> 31)) & 0xffffffffu));
    ui_edit_select_all(&w->f[UI_SEED]);
    ui_edit_insert(&w->f[UI_SEED], s);
    w->f[UI_SEED].invalid = 0;
    status(w, 0, "seed %s", s);
}

/* ---- events ---- */

static void press(win *w, int id) {
    if (id == UI_GENERATE) w->running ? run_cancel(w) : run_start(w);
    if (id == UI_REROLL) reroll(w);
    if (id == UI_SAVE) save(w);
    if (id == UI_PREV || id == UI_NEXT) flip(w, id == UI_PREV ? -1 : 1);
}

static void on_key(win *w, SDL_Keycode k, Uint16 mod) {
    const int ctrl = (mod & (KMOD_CTRL | KMOD_GUI)) != 0,
              enter = k == SDLK_RETURN || k == SDLK_KP_ENTER;
    w->dirty = 1;
    if ((enter && ctrl) || k == SDLK_F5) {
        run_start(w);
    } else if (k == SDLK_ESCAPE) {
        if (w->running)
            run_cancel(w);
        else
            w->focus = -1;
    } else if (ctrl && (k == SDLK_s || k == SDLK_r)) {
        k == SDLK_s ? save(w) : reroll(w);
    } else if (k == SDLK_TAB) { /* the shown fields in order */
        const int d = mod & KMOD_SHIFT ? -1 : 1;
        int i = w->focus < 0 ? (d > 0 ? -1 : UI_FIRST_BUTTON) : w->focus;
        do
            i = (i + d + UI_FIRST_BUTTON) % UI_FIRST_BUTTON;
        while (!w->shown[i]);
        set_focus(w, i);
    } else if (k == SDLK_PAGEUP || k == SDLK_PAGEDOWN) {
        flip(w, k == SDLK_PAGEUP ? -1 : 1);
    } else if (w->focus >= 0) {
        ui_edit *e = &w->f[w->focus];
        if (enter && !e->multiline)
            run_start(w);
        else if (ui_edit_key(&w->u, e, w->focus, k, mod))
            e->invalid = 0;
    } else if (k == SDLK_LEFT || k == SDLK_RIGHT) {
        flip(w, k == SDLK_LEFT ? -1 : 1);
    }
}

static void on_mouse(win *w, const SDL_Event *e) {
    ui *u = &w->u;
    const int motion = e->type == SDL_MOUSEMOTION;
    const int x = (int)((motion ? e->motion.x : e->button.x) * u->scale),
              y = (int)((motion ? e->motion.y : e->button.y) * u->scale);
    const int id = ui_at(u, x, y), button = id >= UI_FIRST_BUTTON && id < UI_IMAGE;
    if (motion) {
        const int hover = button ? id : -1;
        if (hover != u->hover) u->hover = hover, w->dirty = 1;
        return;
    }
    if (e->button.button != SDL_BUTTON_LEFT) return;
    w->dirty = 1;
    if (e->type == SDL_MOUSEBUTTONDOWN) {
        u->pressed = button ? id : -1;
        if (id >= 0 && id < UI_FIRST_BUTTON) {
            const int had = w->focus == id;
            set_focus(w, id); /* a one-line field's text selected, so typing replaces it */
            if (had || w->f[id].multiline) ui_edit_click(u, &w->f[id], id, x, y);
        } else {
            w->focus = -1; /* buttons and the panel take the keys back from the fields */
        }
        return;
    }
    const int pressed = u->pressed;
    u->pressed = -1;
    if (pressed >= 0 && pressed == id) press(w, id);
}

static void on_event(win *w, const SDL_Event *e) {
    if (e->type == w->ev) {
        if (e->user.code == WAKE_DONE) run_finish(w);
        w->dirty = 1;
        return;
    }
    switch (e->type) {
    case SDL_QUIT: ask_quit(w); break;
    case SDL_WINDOWEVENT: w->dirty = 1; break;
    case SDL_TEXTINPUT:
        if (w->focus >= 0) {
            ui_edit_insert(&w->f[w->focus], e->text.text);
            w->f[w->focus].invalid = 0, w->dirty = 1;
        }
        break;
    case SDL_KEYDOWN: on_key(w, e->key.keysym.sym, e->key.keysym.mod); break;
    case SDL_MOUSEMOTION:
    case SDL_MOUSEBUTTONDOWN:
    case SDL_MOUSEBUTTONUP: on_mouse(w, e); break;
    default: break;
    }
}

/* ---- frames ---- */

static void entry_details(const win_entry *en, char *buf, size_t n) {
    char g[48] = "";
    if (en->info.family == PIPELINE_SD3)
        snprintf(g, sizeof g, " \xc2\xb7 CFG %g", en->info.cfg_scale);
    else if (en->info.guidance > 0)
        snprintf(g, sizeof g, " \xc2\xb7 guidance %g", en->info.guidance);
    snprintf(buf, n, "seed %llu \xc2\xb7 %dx%d \xc2\xb7 %d steps%s \xc2\xb7 %.1f s",
             (unsigned long long)en->seed, en->w, en->h, en->info.steps, g, en->secs);
}

/* The running job's progress line and bar from the shared state (mu held). */
static void run_progress(win *w, ui_view *v) {
    const win_shared *s = &w->sh;
    const double el = progress_now() - s->t_start;
    static const char *const stages[] = {"reading the model", "loading models, encoding the prompt",
                                         "denoising", "decoding (VAE)"};
    char r[64] = "", eta[48] = "";
    if (s->step > 1 && s->t_step > s->t_step1) {
        const double rate = (s->step - 1) / (s->t_step - s->t_step1);
        char rt[32], et[32];
        progress_rate_text(rt, sizeof rt, rate, "it");
        snprintf(r, sizeof r, " \xc2\xb7 %s", rt);
        if (s->step < s->n_steps) {
            progress_eta_text(et, sizeof et, (s->n_steps - s->step) / rate);
            snprintf(eta, sizeof eta, " \xc2\xb7 ETA %s", et);
        }
    }
    if (s->step > 0)
        snprintf(w->progress, sizeof w->progress, "%s \xc2\xb7 step %d/%d%s%s \xc2\xb7 %.1f s",
                 stages[s->stage], s->step, s->n_steps, r, eta, el);
    else
        snprintf(w->progress, sizeof w->progress, "%s \xc2\xb7 %.1f s", stages[s->stage], el);
    v->bar = s->n_steps ? (double)s->step / s->n_steps : 0;
    v->bar_kind = UI_BAR_RUN;
    v->panel_text = stages[s->stage];
}

static void view_build(win *w, ui_view *v) {
    memset(v, 0, sizeof *v);
    v->model = w->model;
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        v->edit[i] = w->shown[i] ? &w->f[i] : NULL;
    v->guidance = w->desc.family == PIPELINE_SD3 ? "CFG scale" : "Guidance";
    v->focus = w->focus, v->running = w->running;
    v->status = w->status, v->status_error = w->status_error;
    v->progress = w->progress, v->history = w->history, v->details = w->details;
    v->panel_text = "No image yet: type a prompt and press Generate (Ctrl+Enter)";
    if (w->running) {
        pthread_mutex_lock(&w->sh.mu);
        run_progress(w, v);
        if (w->sh.preview && w->sh.preview_seq != w->ptex_seq) {
            if (!w->ptex || w->ptex_w != w->sh.pw || w->ptex_h != w->sh.ph) {
                if (w->ptex) SDL_DestroyTexture(w->ptex);
                w->ptex = SDL_CreateTexture(w->u.ren, SDL_PIXELFORMAT_RGB24,
                                            SDL_TEXTUREACCESS_STREAMING, w->sh.pw, w->sh.ph);
                w->ptex_w = w->sh.pw, w->ptex_h = w->sh.ph;
            }
            if (w->ptex) SDL_UpdateTexture(w->ptex, NULL, w->sh.preview, w->sh.pw * 3);
            w->ptex_seq = w->sh.preview_seq;
        }
        if (w->view < 0 && w->sh.preview_step > 0 && w->ptex)
            v->image = w->ptex, v->iw = w->ptex_w, v->ih = w->ptex_h, v->preview = 1;
        w->drawn_step = w->sh.step, w->drawn_pstep = w->sh.preview_step;
        w->drawn_nsteps = w->sh.n_steps;
        pthread_mutex_unlock(&w->sh.mu);
        snprintf(w->details, sizeof w->details, "seed %llu \xc2\xb7 %dx%d \xc2\xb7 %d steps",
                 (unsigned long long)w->job.seed, w->job.width, w->job.height, w->job.steps);
        v->caption = w->job.prompt;
    } else {
        v->bar = w->drawn_nsteps ? (double)w->drawn_step / w->drawn_nsteps : 0;
        v->bar_kind = (ui_bar[]){UI_BAR_NONE, UI_BAR_DONE, UI_BAR_STOPPED}[w->last];
        w->details[0] = 0;
    }
    if (w->view >= 0) {
        const win_entry *en = &w->hist[w->view];
        if (w->etex_entry != w->view || !w->etex) {
            if (w->etex) SDL_DestroyTexture(w->etex);
            w->etex = SDL_CreateTexture(w->u.ren, SDL_PIXELFORMAT_RGB24, SDL_TEXTUREACCESS_STATIC,
                                        en->w, en->h);
            if (w->etex) SDL_UpdateTexture(w->etex, NULL, en->rgb, en->w * 3);
            w->etex_entry = w->view;
        }
        v->image = w->etex, v->iw = en->w, v->ih = en->h, v->preview = 0;
        snprintf(w->history, sizeof w->history, "image %d of %d", w->view + 1, w->n_hist);
        entry_details(en, w->details, sizeof w->details);
        v->caption = en->prompt;
    } else if (w->running) {
        snprintf(w->history, sizeof w->history, "rendering image %d", w->n_hist + 1);
    } else {
        snprintf(w->history, sizeof w->history, "no images yet");
    }
    if (w->view < 0 || w->view == 0) v->disabled |= 1u << UI_PREV;
    if (w->view < 0 || (w->view == w->n_hist - 1 && !w->running)) v->disabled |= 1u << UI_NEXT;
    if (w->view < 0) v->disabled |= 1u << UI_SAVE;
}

/* Draws a frame; with shot, also writes it as a PNG. */
static err frame(win *w, const char *shot) {
    ui_view v;
    view_build(w, &v);
    ui_draw(&w->u, &v);
    w->dirty = 0;
    w->last_frame = progress_now();
    return ui_present(&w->u, shot);
}

/* The widgets' rectangles and the state, for tests that look at screenshots. */
static err geometry(win *w, const char *path) {
    cJSON *o = cJSON_CreateObject(), *fl = cJSON_CreateObject();
    ui_geometry(&w->u, o);
    cJSON_AddStringToObject(o, "image_kind",
                            !w->u.drawn.w ? "none"
                            : w->view < 0 ? "preview"
                                          : "image");
    cJSON_AddNumberToObject(o, "history_count", w->n_hist);
    cJSON_AddNumberToObject(o, "history_index", w->view + 1);
    cJSON_AddBoolToObject(o, "running", w->running);
    cJSON_AddNumberToObject(o, "step", w->drawn_step);
    cJSON_AddNumberToObject(o, "n_steps", w->drawn_nsteps);
    cJSON_AddStringToObject(o, "history", w->history);
    cJSON_AddStringToObject(o, "progress", w->progress);
    cJSON_AddStringToObject(o, "status", w->status);
    cJSON_AddBoolToObject(o, "status_error", w->status_error);
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        if (w->shown[i]) cJSON_AddStringToObject(fl, ui_names[i], w->f[i].s);
    cJSON_AddItemToObject(o, "fields", fl);
    cJSON_AddStringToObject(o, "focus", w->focus >= 0 ? ui_names[w->focus] : "");
    if (w->view >= 0 && w->hist[w->view].saved)
        cJSON_AddStringToObject(o, "saved", w->hist[w->view].saved);
    char *js = cJSON_Print(o);
    cJSON_Delete(o);
    FAIL_IF(!js, ERR_NOMEM, "out of memory");
    const err e = fio_write_file(path, js, strlen(js));
    free(js);
    return e;
}

/* ---- scripts ---- */

static int script_load(win_script *sc, const char *path) {
    fio_map m;
    if (fio_map_open(path, &m)) {
        fprintf(stderr, "df11: window: --script: %s\n", err_msg());
        return 0;
    }
    char *t = malloc(m.size + 1); /* a line at most a byte */
    sc->lines = t ? malloc(sizeof *sc->lines * (m.size + 1)) : NULL;
    CHECK(sc->lines);
    if (m.size) memcpy(t, m.data, m.size);
    t[m.size] = 0;
    fio_map_close(&m);
    for (char *l = t; l; sc->n++) {
        sc->lines[sc->n] = l;
        l = strchr(l, '\n');
        if (l) *l++ = 0;
        sc->lines[sc->n][strcspn(sc->lines[sc->n], "\r")] = 0;
    }
    sc->text = t, sc->path = path, sc->timeout = 120;
    return 1;
}

static void script_fail(win *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void script_fail(win *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "df11: window: %s:%d: ", w->sc.path, w->sc.line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    w->exit_code = CLI_EXIT_FAIL;
    w->sc.ended = 1, w->sc.wait = SW_NONE;
    ask_quit(w);
}

/* 1 when what the script waits for is drawn; past the deadline the script fails */
static int script_waited(win *w) {
    win_script *sc = &w->sc;
    static const char *const names[] = {"", "wait-step", "wait-done", "sleep", "resize"};
    int met = 0;
    switch (sc->wait) {
    case SW_NONE: return 1;
    case SW_STEP:
        met = w->drawn_step >= sc->arg && w->drawn_pstep >= sc->arg && !w->dirty;
        if (!met && !w->running)
            return script_fail(w, "wait-step %d: the run ended at step %d (%s)", sc->arg,
                               w->drawn_step, w->status),
                   0;
        break;
    case SW_DONE: met = !w->running && !w->dirty; break;
    case SW_SLEEP: met = progress_now() >= sc->deadline; break;
    case SW_SIZE:
        met = w->u.w == (int)(sc->arg * w->u.scale) && w->u.h == (int)(sc->arg2 * w->u.scale) &&
              !w->dirty;
        break;
    }
    if (met) sc->wait = SW_NONE;
    if (!met && progress_now() > sc->deadline)
        script_fail(w, "%s: nothing after %g s (status: %s)", names[sc->wait], sc->timeout,
                    w->status);
    return met;
}

static void hold(win *w, int step) {
    pthread_mutex_lock(&w->sh.mu);
    w->sh.hold_step = step;
    pthread_cond_broadcast(&w->sh.cv);
    pthread_mutex_unlock(&w->sh.mu);
}

/* One command: 0 go on, 1 yield to the event loop (its events pushed, or a wait set). */
static int script_cmd(win *w, char *l) {
    win_script *sc = &w->sc;
    while (*l == ' ' || *l == '\t')
        l++;
    if (!*l || *l == '#') return 0;
    char *arg = l + strcspn(l, " \t");
    if (*arg) *arg++ = 0;
    int a1 = 0, a2 = 0, id, yield = 1;
    err e = ERR_OK;
    const int n1 = sscanf(arg, "%d %d", &a1, &a2);
    sc->deadline = progress_now() + sc->timeout;
    if (!strcmp(l, "type")) {
        ui_push_text(&w->u, arg);
    } else if (!strcmp(l, "key")) {
        if (!ui_push_key(&w->u, arg)) return script_fail(w, "key: unknown key \"%s\"", arg), 1;
    } else if (!strcmp(l, "click")) {
        if ((id = ui_find(arg)) < 0 || id == UI_PROGRESS || id == UI_STATUS)
            return script_fail(w, "click: no widget \"%s\"", arg), 1;
        if (!w->u.r[id].w) return script_fail(w, "click: %s is not shown", arg), 1;
        ui_push_click(&w->u, id);
    } else if (!strcmp(l, "hold-at-step") && n1 == 1 && a1 > 0) {
        hold(w, a1);
        return 0;
    } else if (!strcmp(l, "release")) {
        hold(w, 0);
    } else if (!strcmp(l, "wait-step") && n1 == 1) {
        sc->wait = SW_STEP, sc->arg = a1;
    } else if (!strcmp(l, "wait-done")) {
        sc->wait = SW_DONE;
    } else if (!strcmp(l, "sleep") && n1 == 1 && a1 >= 0) {
        sc->wait = SW_SLEEP, sc->deadline = progress_now() + a1 / 1e3;
    } else if (!strcmp(l, "timeout") && n1 == 1 && a1 > 0) {
        sc->timeout = a1;
        return 0;
    } else if (!strcmp(l, "resize") && n1 == 2 && a1 > 0 && a2 > 0) {
        SDL_SetWindowSize(w->u.win, a1, a2);
        sc->wait = SW_SIZE, sc->arg = a1, sc->arg2 = a2;
    } else if (!strcmp(l, "screenshot") && *arg) {
        e = frame(w, arg), yield = 0;
    } else if (!strcmp(l, "geometry") && *arg) {
        e = geometry(w, arg), yield = 0;
    } else if (!strcmp(l, "expect-status")) {
        if (!strstr(w->status, arg))
            return script_fail(w, "expect-status: the status is \"%s\"", w->status), 1;
        return 0;
    } else if (!strcmp(l, "quit")) {
        SDL_Event q = {.type = SDL_QUIT};
        SDL_PushEvent(&q);
        sc->ended = 1;
    } else {
        return script_fail(w, "unknown command or bad arguments: \"%s%s%s\"", l, *arg ? " " : "",
                           arg),
               1;
    }
    if (e) return script_fail(w, "%s", err_msg()), 1;
    return yield;
}

static void script_step(win *w) {
    win_script *sc = &w->sc;
    if (sc->ended || !script_waited(w)) return;
    while (sc->next < sc->n && !sc->ended) {
        sc->line = sc->next + 1;
        if (script_cmd(w, sc->lines[sc->next++])) return;
    }
    if (!sc->ended) sc->ended = 1, ask_quit(w); /* the end of the script closes the window */
}

/* ---- the command ---- */

static int startup(win *w) {
    w->view = -1, w->focus = UI_PROMPT, w->etex_entry = -1;
    w->rng = (uint64_t)time(NULL) ^ SDL_GetPerformanceCounter() ^ ((uint64_t)getpid() << 32);
    w->have_proj = preview_proj_get(w->desc.family, &w->proj) == ERR_OK;
    const pipeline_info *d = &w->desc;
    char b[5][40];
    snprintf(b[0], sizeof b[0], "%d", d->width);
    snprintf(b[1], sizeof b[1], "%d", d->height);
    snprintf(b[2], sizeof b[2], "%d", d->steps);
    snprintf(b[3], sizeof b[3], "%g", d->family == PIPELINE_SD3 ? d->cfg_scale : d->guidance);
    snprintf(b[4], sizeof b[4], "%llu", (unsigned long long)w->a.job.seed);
    ui_edit_init(&w->f[UI_PROMPT], 1, w->a.job.prompt);
    ui_edit_init(&w->f[UI_NEGATIVE], 1, w->a.job.negative);
    ui_edit_init(&w->f[UI_WIDTH], 0, b[0]);
    ui_edit_init(&w->f[UI_HEIGHT], 0, b[1]);
    ui_edit_init(&w->f[UI_STEPS], 0, b[2]);
    ui_edit_init(&w->f[UI_GUIDANCE], 0, b[3]);
    ui_edit_init(&w->f[UI_SEED], 0, b[4]);
    w->f[UI_PROMPT].cur = w->f[UI_PROMPT].anchor = w->f[UI_PROMPT].len;
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        w->shown[i] = 1;
    /* SD3.5 takes a negative prompt and a CFG scale, FLUX.1-dev its distilled guidance,
       schnell neither */
    w->shown[UI_NEGATIVE] = d->family == PIPELINE_SD3;
    w->shown[UI_GUIDANCE] = d->family == PIPELINE_SD3 || d->guidance > 0;
    snprintf(w->model, sizeof w->model, "%s \xc2\xb7 %s", d->model_name,
             w->a.job.cpu ? "CPU" : "CUDA");
    snprintf(w->progress, sizeof w->progress, "ready");
    w->ev = SDL_RegisterEvents(1);
    if (w->ev == (Uint32)-1) return 0;
    status(w, 0, "%s from %s; images are saved to %s", d->model_name,
           w->a.paths.model_dir ? w->a.paths.model_dir : w->a.paths.diffusion_model, w->outdir);
    return 1;
}

static void shutdown_win(win *w) {
    if (w->running) { /* the loop waits for the worker; this is for the paths that do not */
        ask_quit(w);
        pthread_join(w->thread, NULL);
        free(w->prompt), free(w->negative);
    }
    for (int i = 0; i < w->n_hist; i++) {
        win_entry *en = &w->hist[i];
        free(en->prompt), free(en->negative), free(en->rgb), free(en->saved);
    }
    free(w->hist);
    free(w->sh.preview), free(w->sh.rgb);
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        ui_edit_free(&w->f[i]);
    if (w->ptex) SDL_DestroyTexture(w->ptex);
    if (w->etex) SDL_DestroyTexture(w->etex);
    ui_close(&w->u);
}

static void loop(win *w) {
    while (!w->quit) {
        SDL_Event e;
        /* events only; a timeout to tick the elapsed time of a run and to poll a script */
        const int ms = w->sc.path ? 10 : w->running ? 250 : -1;
        if (ms < 0 ? SDL_WaitEvent(&e) : SDL_WaitEventTimeout(&e, ms)) {
            on_event(w, &e);
            while (!w->quit && SDL_PollEvent(&e))
                on_event(w, &e);
        }
        if (w->running && progress_now() - w->last_frame > 0.25) w->dirty = 1;
        if (w->dirty && !w->quit) frame(w, NULL);
        if (w->sc.path && !w->quit) script_step(w);
    }
}

static int parse_args(int argc, char **argv, win *w, const char **font, const char **script) {
    for (int i = 0; i < argc; i++) {
        const char *v, **dst = NULL;
        int r;
        if ((r = cli_opt(argc, argv, &i, NULL, "--font", &v)))
            dst = font;
        else if ((r = cli_opt(argc, argv, &i, NULL, "--script", &v)))
            dst = script;
        else if ((r = cli_opt(argc, argv, &i, NULL, "--geometry", &v)))
            dst = &w->geometry;
        if (r < 0) return CLI_EXIT_USAGE;
        if (r > 0) {
            *dst = v;
            continue;
        }
        r = gen_opt(argc, argv, &i, &w->a);
        if (r < 0) return CLI_EXIT_USAGE;
        if (r == 0)
            return cli_usage_error("window",
                                   argv[i][0] == '-' ? "unknown option \"%s\""
                                                     : "unexpected argument \"%s\"",
                                   argv[i]);
    }
    if (!gen_has_model("window", &w->a)) return CLI_EXIT_USAGE;
    if (w->a.job.batch_count != 1)
        return cli_usage_error("window", "-b: the window renders one image at a time");
    w->outdir = w->a.out ? w->a.out : ".";
    return 0;
}

static void no_display(const char *why) {
    fprintf(stderr,
            "df11: window: no display (SDL: %s); for images without a window use df11 generate "
            "or df11 batch\n",
            why);
}

/* SDL's video; with no display SDL falls back to its invisible offscreen driver, which counts
 * as none unless SDL_VIDEODRIVER asked for it (scripts can run on it). */
static int video_init(void) {
    if (SDL_Init(SDL_INIT_VIDEO) != 0) return no_display(SDL_GetError()), 0;
    const char *drv = SDL_GetCurrentVideoDriver(), *asked = getenv("SDL_VIDEODRIVER");
    if (drv && (!strcmp(drv, "offscreen") || !strcmp(drv, "dummy")) &&
        !(asked && strstr(asked, drv))) {
        no_display("no X11 or Wayland display found (DISPLAY, WAYLAND_DISPLAY), only its "
                   "invisible offscreen driver");
        SDL_Quit();
        return 0;
    }
    return 1;
}

/* The window's life, from SDL's start to its end: 0, or the exit status of what failed. */
static int window(win *w, const char *font_flag) {
    SDL_SetHint(SDL_HINT_VIDEO_X11_NET_WM_BYPASS_COMPOSITOR, "0");
    if (!video_init()) return CLI_EXIT_FAIL;
    char font[4096], msg[4300], title[128];
    int rc = CLI_EXIT_FAIL;
    if (!ui_font_find(font_flag, font, sizeof font)) {
        fprintf(stderr, "df11: window: no font found (looked for DejaVuSans.ttf, "
                        "LiberationSans-Regular.ttf and NotoSans-Regular.ttf under "
                        "/usr/share/fonts, and asked fc-match): install fonts-dejavu-core, or pass "
                        "--font FILE.ttf\n");
    } else if (TTF_Init() != 0) {
        fprintf(stderr, "df11: window: SDL2_ttf: %s\n", TTF_GetError());
    } else {
        snprintf(title, sizeof title, "df11 \xc2\xb7 %s", w->desc.model_name);
        const ui_open_err oe = ui_open(&w->u, title, WIN_W, WIN_H, font, msg, sizeof msg);
        if (oe == UI_NO_DISPLAY) {
            no_display(msg);
        } else if (oe == UI_NO_FONT) {
            fprintf(stderr,
                    "df11: window: cannot open the font %s (install fonts-dejavu-core, or "
                    "pass --font FILE.ttf)\n",
                    msg);
        } else if (!startup(w)) {
            fprintf(stderr, "df11: window: SDL: %s\n", SDL_GetError());
        } else {
            SDL_StartTextInput();
            loop(w);
            rc = w->exit_code;
            if (w->geometry && geometry(w, w->geometry)) rc = cli_fail();
        }
        shutdown_win(w);
        TTF_Quit();
    }
    SDL_Quit();
    return rc;
}

int cmd_window(int argc, char **argv, const cli_common *c) {
    (void)c;
    win *w = calloc(1, sizeof *w);
    CHECK(w);
    pipeline_job_init(&w->a.job);
    pthread_mutex_init(&w->sh.mu, NULL);
    pthread_cond_init(&w->sh.cv, NULL);
    const char *font_flag = NULL, *script = NULL;
    int rc = parse_args(argc, argv, w, &font_flag, &script);
    /* the model is resolved before any window opens: a wrong path is a plain error */
    if (!rc && pipeline_describe(&w->a.paths, &w->a.job, &w->desc) != ERR_OK) rc = cli_fail();
    if (!rc && script && !script_load(&w->sc, script)) rc = CLI_EXIT_FAIL;
    if (!rc) rc = window(w, font_flag);
    free(w->sc.text), free(w->sc.lines);
    pthread_mutex_destroy(&w->sh.mu);
    pthread_cond_destroy(&w->sh.cv);
    free(w);
    return rc;
}
#endif
