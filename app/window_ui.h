/* window_ui: the drawing half of `df11 window` (cmd_window.c owns the state, the worker and the
 * events): the system font, text through SDL2_ttf, word-wrapped editable fields, buttons, the
 * image panel and the progress bar, laid out from the renderer's output size every frame (so
 * resizing and HiDPI need nothing else). It knows SDL, not pipelines. */
#ifndef APP_WINDOW_UI_H
#define APP_WINDOW_UI_H

#include <SDL.h>
#include <SDL_ttf.h>
#include <cjson/cJSON.h>
#include <stddef.h>

#include "core/err.h"

/* The widgets; ui_names[] are their names in scripts and geometry files. */
typedef enum ui_id {
    UI_PROMPT,
    UI_NEGATIVE,
    UI_WIDTH,
    UI_HEIGHT,
    UI_STEPS,
    UI_GUIDANCE,
    UI_SEED, /* fields */
    UI_REROLL,
    UI_GENERATE,
    UI_PREV,
    UI_NEXT,
    UI_SAVE, /* buttons */
    UI_IMAGE,
    UI_PROGRESS,
    UI_STATUS,
    UI_N
} ui_id;
#define UI_FIRST_BUTTON UI_REROLL
extern const char *const ui_names[UI_N];

/* An editable UTF-8 text: cursor and selection anchor are byte offsets on code point starts. */
typedef struct ui_edit {
    char *s; /* owned, NUL-terminated */
    size_t len, cap;
    size_t cur, anchor; /* anchor != cur: a selection */
    int multiline;      /* word-wrapped; Enter inserts a line break */
    int scroll;         /* multi-line: first line shown; one-line: pixels scrolled */
    int invalid;        /* drawn with a red border */
} ui_edit;

typedef enum ui_bar { UI_BAR_NONE, UI_BAR_RUN, UI_BAR_DONE, UI_BAR_STOPPED } ui_bar;

/* What one frame shows, filled by cmd_window.c. */
typedef struct ui_view {
    const char *model;      /* "FLUX.1-dev, CPU" beside the title */
    ui_edit *edit[UI_N];    /* the fields shown (NULL: hidden, or not a field) */
    const char *guidance;   /* the guidance field's label ("Guidance", "CFG scale") */
    unsigned disabled;      /* 1 << id for the buttons that do nothing now */
    int focus;              /* the focused field, or -1 */
    int running;            /* Generate reads Cancel */
    const char *history;    /* "image 2 of 5" */
    const char *details;    /* the shown image's parameters */
    const char *caption;    /* its prompt */
    SDL_Texture *image;     /* the panel's image, iw x ih, or NULL */
    int iw, ih, preview;    /* preview: scaled to fill the panel (linear) */
    const char *panel_text; /* in the empty panel */
    double bar;             /* 0..1 */
    ui_bar bar_kind;
    const char *progress; /* above the bar: stage, step k/n, it/s, ETA, elapsed */
    const char *status;   /* below it */
    int status_error;     /* in red */
} ui_view;

typedef struct ui {
    SDL_Window *win;
    SDL_Renderer *ren;
    TTF_Font *font, *bold;
    char font_path[4096];
    int font_scale_px;  /* the size the fonts were opened at */
    float scale;        /* output pixels a window coordinate (HiDPI) */
    int w, h, lh;       /* output size, line height */
    SDL_Rect r[UI_N];   /* the widgets, in output pixels (w 0: hidden) */
    SDL_Rect drawn;     /* the panel's image as drawn (w 0: none) */
    int hover, pressed; /* the button under the mouse, the one pressed (-1: none) */
} ui;

typedef enum ui_open_err { UI_OK, UI_NO_DISPLAY, UI_NO_FONT } ui_open_err;

/* The font file: given (--font or $DF11_FONT), else DejaVu Sans, Liberation Sans or Noto Sans
 * under the system's font folders, else fc-match's sans-serif. 0 if none (path empty). */
int ui_font_find(const char *given, char *path, size_t n);
/* Creates the window (w x h, resizable), its renderer and the fonts; on failure msg says why.
 * SDL video and TTF must be initialised. */
ui_open_err ui_open(ui *u, const char *title, int w, int h, const char *font_path, char *msg,
                    size_t n);
void ui_close(ui *u); /* accepts a zeroed ui */
/* Lays out and draws v into the back buffer (ui_present shows it). Adjusts the fields' scroll
 * to keep their cursors in view. */
void ui_draw(ui *u, const ui_view *v);
/* Shows the frame drawn; with shot, first writes it to that PNG as drawn. */
err ui_present(ui *u, const char *shot);
/* The window's size, scale and renderer, the widgets' rectangles and the image's as drawn
 * (output pixels) into the JSON object o. */
void ui_geometry(const ui *u, cJSON *o);
/* The widget at output pixel (x, y), or -1. */
int ui_at(const ui *u, int x, int y);
/* The widget named name (ui_names, or "cfg" for guidance), or -1. */
int ui_find(const char *name);

/* Synthetic input for scripts, through SDL's queue like a person's: text (SDL_TEXTINPUT events
 * of up to 31 bytes), a key "[Ctrl+][Shift+][Alt+]NAME" with SDL's key names pressed and
 * released (0 if the name is unknown), a left click at a widget's centre. */
void ui_push_text(ui *u, const char *s);
int ui_push_key(ui *u, const char *spec);
void ui_push_click(ui *u, int id);

void ui_edit_init(ui_edit *e, int multiline, const char *s);
void ui_edit_free(ui_edit *e);
void ui_edit_select_all(ui_edit *e);
/* Replaces the selection with s (line breaks become spaces in a one-line field). */
void ui_edit_insert(ui_edit *e, const char *s);
/* Editing keys (arrows, Home/End, Backspace/Delete, Ctrl+A/C/X/V, Enter in a multi-line field)
 * on field id; 1 if the key was used. */
int ui_edit_key(ui *u, ui_edit *e, int id, SDL_Keycode key, Uint16 mod);
/* A click at output pixel (x, y) on field id: the cursor goes there. */
void ui_edit_click(ui *u, ui_edit *e, int id, int x, int y);

#endif
