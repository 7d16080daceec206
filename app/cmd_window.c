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

#include "app/window_internal.h"


void win_status(win *w, int error, const char *fmt, ...) {
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
    w->sh.n_steps = in->job.steps;
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
    const err e = pipeline_run(w->ses, &w->job, 1, &cb);
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

/* The job parameter field id edits for this model (the schema's window field), or -1. */
static int field_param(const win *w, int id) {
    for (int k = 0; k < JOB_N_KEYS; k++)
        if (job_params[k].window && !strcmp(job_params[k].window, ui_names[id]) &&
            w->desc.accepts & JOB_BIT(k))
            return k;
    return -1;
}

/* Field id's text into the job through the schema (the window asks sizes in the multiples the
 * row names); 0 (the field marked, focused, the status saying why) if it is not a value. */
static int field_set(win *w, int id) {
    const int k = field_param(w, id);
    const job_param *p = &job_params[k];
    err e = job_set_text(&w->job, (job_key)k, w->f[id].s, p->label);
    if (!e && p->mult && (w->job.width % p->mult || w->job.height % p->mult))
        e = err_set(ERR_ARG, "%s: %s is not a multiple of %d", p->label, w->f[id].s, p->mult);
    if (!e) return 1;
    win_status(w, 1, "%s", err_msg());
    w->f[id].invalid = 1;
    set_focus(w, id); /* its text selected, to be typed over */
    return 0;
}

static void run_start(win *w) {
    if (w->running) return;
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        w->f[i].invalid = 0;
    job_free(&w->job);
    if (job_copy(&w->job, &w->a.job)) {
        win_status(w, 1, "%s", err_msg());
        return;
    }
    /* the fields in their order; an empty negative prompt is the default one */
    for (int i = 0; i < UI_FIRST_BUTTON; i++)
        if (w->shown[i] && !(i == UI_NEGATIVE && !w->f[i].len) && !field_set(w, i)) return;
    pipeline_info in;
    if (pipeline_resolve(w->ses, &w->job, &in)) {
        win_status(w, 1, "%s", err_msg());
        return;
    }
    const int steps = in.job.steps;
    pthread_mutex_lock(&w->sh.mu);
    w->sh.stage = ST_START;
    w->sh.step = w->sh.preview_step = 0, w->sh.n_steps = steps;
    w->sh.t_start = progress_now(), w->sh.t_step1 = w->sh.t_step = 0;
    w->sh.cancel = 0, w->sh.result = ERR_OK, w->sh.msg[0] = 0;
    free(w->sh.rgb);
    w->sh.rgb = NULL;
    pthread_mutex_unlock(&w->sh.mu);
    if (pthread_create(&w->thread, NULL, worker, w) != 0) {
        win_status(w, 1, "cannot start the worker thread");
        return;
    }
    w->running = 1, w->view = -1;
    win_status(w, 0, "generating image %d", w->n_hist + 1);
}

static void run_cancel(win *w) {
    if (!w->running) return;
    w->sh.cancel = 1;
    win_status(w, 0, "cancelling (after the current step)");
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
        *en = (win_entry){.info = info, .seed = info.job.seed, .rgb = rgb, .w = iw, .h = ih,
                          .secs = secs};
        /* the entry's own copies of the strings its info points at */
        en->prompt = dup_str(info.job.prompt), en->negative = dup_str(info.job.negative);
        en->info.job.prompt = en->prompt, en->info.job.negative = en->negative;
        w->view = w->n_hist - 1, w->last = LAST_DONE;
        snprintf(w->progress, sizeof w->progress, "done \xc2\xb7 %d steps%s%s%s \xc2\xb7 %.1f s", n,
                 r[0] ? " (" : "", r, r[0] ? ")" : "", secs);
        win_status(w, 0, "image %d: seed %llu, %dx%d, %.1f s", w->n_hist, (unsigned long long)en->seed,
               iw, ih, secs);
    } else {
        free(rgb);
        w->view = w->n_hist - 1, w->last = LAST_STOPPED;
        snprintf(w->progress, sizeof w->progress, "%s at step %d/%d \xc2\xb7 %.1f s",
                 e == ERR_CANCELLED ? "cancelled" : "failed", step, n, secs);
        if (e == ERR_CANCELLED)
            win_status(w, 0, "cancelled at step %d of %d; no image added", step, n);
        else
            win_status(w, 1, "error: %s", e ? msg : "the run gave no image");
    }
    w->drawn_step = w->drawn_pstep = step, w->drawn_nsteps = n;
    if (w->quit_asked) w->quit = 1;
}

void win_ask_quit(win *w) {
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
    win_status(w, 0, "closing: waiting for the current step to end");
}

/* ---- the session's images ---- */

/* The shown image to OUTDIR/df11-NNNNN-SEED.png, NNNNN after every such number there, so
 * nothing is overwritten; the bytes are generate's for the job. */
static void save(win *w) {
    if (w->view < 0) {
        win_status(w, 1, w->running ? "the image is not finished yet" : "no image to save yet");
        return;
    }
    win_entry *en = &w->hist[w->view];
    if (fio_mkdirs(w->outdir)) {
        win_status(w, 1, "cannot save: %s", err_msg());
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
    if (gen_write_png(name, &en->info, en->seed, en->rgb, en->w, en->h)) {
        win_status(w, 1, "cannot save: %s", err_msg());
        return;
    }
    free(en->saved);
    en->saved = dup_str(name);
    win_status(w, 0, "saved %s", name);
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
    win_status(w, 0, "seed %s", s);
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
    case SDL_QUIT: win_ask_quit(w); break;
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
    const pipeline_info *in = &en->info;
    if (in->active & JOB_BIT(JOB_CFG_SCALE))
        snprintf(g, sizeof g, " \xc2\xb7 CFG %g", in->job.cfg_scale);
    else if (in->accepts & JOB_BIT(JOB_GUIDANCE))
        snprintf(g, sizeof g, " \xc2\xb7 guidance %g", in->job.guidance);
    snprintf(buf, n, "seed %llu \xc2\xb7 %dx%d \xc2\xb7 %d steps%s \xc2\xb7 %.1f s",
             (unsigned long long)en->seed, en->w, en->h, in->job.steps, g, en->secs);
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
    const int gk = field_param(w, UI_GUIDANCE);
    v->guidance = gk >= 0 ? job_params[gk].label : "Guidance";
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
err win_frame(win *w, const char *shot) {
    ui_view v;
    view_build(w, &v);
    ui_draw(&w->u, &v);
    w->dirty = 0;
    w->last_frame = progress_now();
    return ui_present(&w->u, shot);
}

/* ---- the command ---- */

static int startup(win *w) {
    w->view = -1, w->focus = UI_PROMPT, w->etex_entry = -1;
    w->rng = (uint64_t)time(NULL) ^ SDL_GetPerformanceCounter() ^ ((uint64_t)getpid() << 32);
    w->have_proj = preview_proj_get(w->desc.family, &w->proj) == ERR_OK;
    const pipeline_info *d = &w->desc;
    /* each field the model takes, filled with the flags' values or the model's defaults (the
       seed, a prompt: what the flags gave) */
    for (int i = 0; i < UI_FIRST_BUTTON; i++) {
        const int k = field_param(w, i);
        char b[64] = "";
        if (k >= 0 && job_params[k].type != JOB_T_TEXT)
            job_value_text(k == JOB_SEED ? &w->a.job : &d->job, (job_key)k, b, sizeof b);
        const char *text = k == JOB_PROMPT ? w->a.job.prompt : k == JOB_NEGATIVE ? w->a.job.negative : b;
        ui_edit_init(&w->f[i], k >= 0 && job_params[k].type == JOB_T_TEXT, text);
        w->shown[i] = k >= 0;
    }
    w->f[UI_PROMPT].cur = w->f[UI_PROMPT].anchor = w->f[UI_PROMPT].len;
    snprintf(w->model, sizeof w->model, "%s \xc2\xb7 %s", d->model_name,
             w->a.opt.cpu ? "CPU" : "CUDA");
    snprintf(w->progress, sizeof w->progress, "ready");
    w->ev = SDL_RegisterEvents(1);
    if (w->ev == (Uint32)-1) return 0;
    win_status(w, 0, "%s from %s; images are saved to %s", d->model_name,
           w->a.paths.model_dir ? w->a.paths.model_dir : w->a.paths.diffusion_model, w->outdir);
    return 1;
}

static void shutdown_win(win *w) {
    if (w->running) { /* the loop waits for the worker; this is for the paths that do not */
        win_ask_quit(w);
        pthread_join(w->thread, NULL);
    }
    job_free(&w->job);
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
        if (w->dirty && !w->quit) win_frame(w, NULL);
        if (w->sc.path && !w->quit) win_script_step(w);
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
            if (w->geometry && win_geometry(w, w->geometry)) rc = cli_fail();
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
    gen_args_init(&w->a);
    job_init(&w->job);
    pthread_mutex_init(&w->sh.mu, NULL);
    pthread_cond_init(&w->sh.cv, NULL);
    const char *font_flag = NULL, *script = NULL;
    int rc = parse_args(argc, argv, w, &font_flag, &script);
    /* the model is opened (once, for every Generate) and the flags resolved against it
       before any window opens: a wrong path is a plain error */
    if (!rc && !gen_open(&w->a, &w->ses)) rc = CLI_EXIT_FAIL;
    if (!rc && pipeline_resolve(w->ses, &w->a.job, &w->desc) != ERR_OK) rc = cli_fail();
    if (!rc && script && !win_script_load(&w->sc, script)) rc = CLI_EXIT_FAIL;
    if (!rc) rc = window(w, font_flag);
    free(w->sc.text), free(w->sc.lines);
    pipeline_close(w->ses);
    gen_args_free(&w->a);
    pthread_mutex_destroy(&w->sh.mu);
    pthread_cond_destroy(&w->sh.cv);
    free(w);
    return rc;
}
#endif
