/* window_script: `df11 window --script FILE` and --geometry (window_internal.h): commands that
 * drive the window through SDL's own event queue, as a person's input would, waits on what is
 * drawn, screenshots and a JSON report of the widgets and the state, for tests and docs. */
#ifdef DF11_HAVE_SDL
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cli.h"
#include "app/progress.h"
#include "app/window_internal.h"
#include "core/fileio.h"

/* The widgets' rectangles and the state, for tests that look at screenshots. */
err win_geometry(win *w, const char *path) {
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

int win_script_load(win_script *sc, const char *path) {
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
    win_ask_quit(w);
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
        e = win_frame(w, arg), yield = 0;
    } else if (!strcmp(l, "geometry") && *arg) {
        e = win_geometry(w, arg), yield = 0;
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

void win_script_step(win *w) {
    win_script *sc = &w->sc;
    if (sc->ended || !script_waited(w)) return;
    while (sc->next < sc->n && !sc->ended) {
        sc->line = sc->next + 1;
        if (script_cmd(w, sc->lines[sc->next++])) return;
    }
    if (!sc->ended) sc->ended = 1, win_ask_quit(w); /* the end of the script closes the window */
}
#endif
