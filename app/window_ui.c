/* window_ui: fonts, text, fields, buttons and the layout of df11's window (window_ui.h). A
 * frame is drawn from a ui_view on every change; nothing is cached but the fonts, since a frame
 * is a few dozen short texts and frames come only on events. */
#ifdef DF11_HAVE_SDL
#include "app/window_ui.h"

#include "app/png.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UI_FONT_PX 15  /* body text, at scale 1 */
#define UI_TITLE_PX 18 /* the title */
#define UI_MIN_W 820   /* the smallest window the column and the panel fit in */
#define UI_MIN_H 640

const char *const ui_names[UI_N] = {"prompt",   "negative", "width",  "height",   "steps",
                                    "guidance", "seed",     "reroll", "generate", "prev",
                                    "next",     "save",     "image",  "progress", "status"};

static const char *const labels[UI_FIRST_BUTTON] = {
    [UI_PROMPT] = "Prompt", [UI_NEGATIVE] = "Negative prompt",
    [UI_WIDTH] = "Width",   [UI_HEIGHT] = "Height",
    [UI_STEPS] = "Steps",   [UI_SEED] = "Seed"};
static const char *const hints[UI_FIRST_BUTTON] = {
    [UI_PROMPT] = "Describe the image...",
    [UI_NEGATIVE] = "What to steer away from (with a CFG scale above 1)"};

static const SDL_Color C_BG = {24, 26, 30, 255}, C_PANEL = {15, 16, 19, 255},
                       C_FIELD = {34, 37, 43, 255}, C_BORDER = {62, 67, 77, 255},
                       C_FOCUS = {86, 146, 245, 255}, C_TEXT = {226, 229, 234, 255},
                       C_DIM = {141, 148, 160, 255}, C_RED = {240, 96, 84, 255},
                       C_ACCENT = {52, 116, 224, 255}, C_BUTTON = {52, 57, 66, 255},
                       C_CANCEL = {178, 62, 56, 255}, C_BAR_BG = {44, 47, 54, 255},
                       C_BAR_DONE = {64, 170, 100, 255}, C_BAR_STOP = {120, 124, 132, 255},
                       C_SEL = {46, 84, 150, 255};

/* ---- fonts ---- */

static const char *const font_names[] = {"DejaVuSans.ttf", "LiberationSans-Regular.ttf",
                                         "NotoSans-Regular.ttf"};
#define N_FONT_NAMES (sizeof font_names / sizeof *font_names)

/* Records the first file of each preferred name under dir (symlinked folders followed; the
 * depth bound keeps a link loop finite). */
static void font_walk(const char *dir, int depth, char (*found)[4096]) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        char p[4096];
        struct stat st;
        if (e->d_name[0] == '.' ||
            (size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= sizeof p || stat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 8) font_walk(p, depth + 1, found);
            continue;
        }
        for (size_t k = 0; k < N_FONT_NAMES; k++)
            if (!found[k][0] && !strcmp(e->d_name, font_names[k])) memcpy(found[k], p, sizeof p);
    }
    closedir(d);
}

int ui_font_find(const char *given, char *path, size_t n) {
    path[0] = 0;
    if (!given) given = getenv("DF11_FONT");
    if (given && *given) return snprintf(path, n, "%s", given), 1;
    static const char *const dirs[] = {"/usr/share/fonts", "/usr/local/share/fonts"};
    char found[N_FONT_NAMES][4096] = {{0}};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
        font_walk(dirs[i], 0, found);
    for (size_t k = 0; k < N_FONT_NAMES; k++)
        if (found[k][0]) return snprintf(path, n, "%s", found[k]), 1;
    /* fontconfig knows fonts kept elsewhere (another prefix, the user's own) */
    FILE *f = popen("fc-match -f '%{file}' sans-serif 2>/dev/null", "r");
    if (!f) return 0;
    char line[4096] = "";
    const int got = fgets(line, sizeof line, f) != NULL;
    pclose(f);
    line[strcspn(line, "\r\n")] = 0;
    if (!got || !line[0] || access(line, R_OK) != 0) return 0;
    return snprintf(path, n, "%s", line), 1;
}

static int fonts_open(ui *u) {
    int ow, oh, ww, wh;
    SDL_GetRendererOutputSize(u->ren, &ow, &oh);
    SDL_GetWindowSize(u->win, &ww, &wh);
    u->scale = ww > 0 && ow > ww ? (float)ow / (float)ww : 1.0f;
    const int px = (int)(UI_FONT_PX * u->scale + 0.5f);
    if (u->font && px == u->font_scale_px) return 1;
    TTF_Font *f = TTF_OpenFont(u->font_path, px);
    TTF_Font *b = f ? TTF_OpenFont(u->font_path, (int)(UI_TITLE_PX * u->scale + 0.5f)) : NULL;
    if (!b) {
        if (f) TTF_CloseFont(f);
        return 0;
    }
    TTF_SetFontStyle(b, TTF_STYLE_BOLD);
    if (u->font) TTF_CloseFont(u->font), TTF_CloseFont(u->bold);
    u->font = f, u->bold = b, u->font_scale_px = px;
    u->lh = TTF_FontLineSkip(f);
    return 1;
}

ui_open_err ui_open(ui *u, const char *title, int w, int h, const char *font_path, char *msg,
                    size_t n) {
    memset(u, 0, sizeof *u);
    u->hover = u->pressed = -1;
    snprintf(u->font_path, sizeof u->font_path, "%s", font_path);
    SDL_Rect b;
    if (SDL_GetDisplayUsableBounds(0, &b) == 0) {
        w = SDL_min(w, b.w - 40), h = SDL_min(h, b.h - 60);
    }
    w = SDL_max(w, UI_MIN_W), h = SDL_max(h, UI_MIN_H);
    u->win = SDL_CreateWindow(title, SDL_WINDOWPOS_CENTERED, SDL_WINDOWPOS_CENTERED, w, h,
                              SDL_WINDOW_RESIZABLE | SDL_WINDOW_ALLOW_HIGHDPI);
    if (u->win) u->ren = SDL_CreateRenderer(u->win, -1, 0); /* falls back to software */
    if (!u->ren) {
        snprintf(msg, n, "%s", SDL_GetError());
        return UI_NO_DISPLAY;
    }
    SDL_SetWindowMinimumSize(u->win, UI_MIN_W, UI_MIN_H);
    if (!fonts_open(u)) {
        snprintf(msg, n, "%s: %s", font_path, TTF_GetError());
        return UI_NO_FONT;
    }
    return UI_OK;
}

void ui_close(ui *u) {
    if (u->font) TTF_CloseFont(u->font);
    if (u->bold) TTF_CloseFont(u->bold);
    if (u->ren) SDL_DestroyRenderer(u->ren);
    if (u->win) SDL_DestroyWindow(u->win);
    memset(u, 0, sizeof *u);
}

/* ---- text ---- */

static size_t next_cp(const char *s, size_t len, size_t i) {
    if (i < len) i++;
    while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
        i++;
    return i;
}

static size_t prev_cp(const char *s, size_t i) {
    if (i > 0) i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

/* s[0..n) NUL-terminated in buf, or in a malloc'd copy when it does not fit (*heap set) */
static const char *cstr(const char *s, size_t n, char *buf, size_t bn, char **heap) {
    *heap = NULL;
    char *d = buf;
    if (n >= bn) d = *heap = malloc(n + 1);
    if (!d) return "";
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int text_w(TTF_Font *f, const char *s, size_t n) {
    if (!n) return 0;
    char buf[512], *heap;
    int w = 0, h;
    if (TTF_SizeUTF8(f, cstr(s, n, buf, sizeof buf, &heap), &w, &h) != 0) w = 0;
    free(heap);
    return w;
}

/* Draws s[0..n) at (x, y), cut with an ellipsis to maxw (> 0); returns the width drawn. */
static int text(ui *u, TTF_Font *f, const char *s, size_t n, int x, int y, SDL_Color c, int maxw) {
    if (!n) return 0;
    char buf[512], *heap = NULL, *cut = NULL;
    const char *z = cstr(s, n, buf, sizeof buf, &heap);
    if (maxw > 0 && text_w(f, s, n) > maxw) {
        /* the longest prefix that fits beside the ellipsis, by bisection on code points */
        const int ell = text_w(f, "\xe2\x80\xa6", 3);
        size_t k = 0, hi = n;
        while (k < hi) {
            size_t mid = k + (hi - k + 1) / 2;
            while (mid > k && ((unsigned char)s[mid] & 0xC0) == 0x80)
                mid--;
            if (mid == k && (mid = next_cp(s, n, k)) > hi) break;
            if (text_w(f, s, mid) + ell <= maxw)
                k = mid;
            else
                hi = mid - 1;
        }
        cut = malloc(k + 4);
        if (cut) memcpy(cut, s, k), memcpy(cut + k, "\xe2\x80\xa6", 4), z = cut;
    }
    int w = 0;
    SDL_Surface *sf = TTF_RenderUTF8_Blended(f, z, c);
    if (sf) {
        SDL_Texture *t = SDL_CreateTextureFromSurface(u->ren, sf);
        if (t) {
            SDL_RenderCopy(u->ren, t, NULL, &(SDL_Rect){x, y, sf->w, sf->h});
            SDL_DestroyTexture(t);
        }
        w = sf->w;
        SDL_FreeSurface(sf);
    }
    free(heap), free(cut);
    return w;
}

static int str(ui *u, TTF_Font *f, const char *s, int x, int y, SDL_Color c, int maxw) {
    return s ? text(u, f, s, strlen(s), x, y, c, maxw) : 0;
}

/* Greedy word wrap of s to width: the lines' start offsets into *starts (malloc'd); a line
 * keeps the spaces it breaks after; a word wider than the line is cut between characters.
 * Returns the number of lines (at least 1). */
static int wrap(TTF_Font *f, const char *s, size_t len, int width, size_t **starts) {
    size_t *st = malloc(sizeof *st * (len + 2));
    int n = 0;
    if (!st) return *starts = NULL, 0;
    st[n++] = 0;
    for (size_t a = 0;;) {
        size_t pe = a, b;
        while (pe < len && s[pe] != '\n')
            pe++;
        if (text_w(f, s + a, pe - a) <= width) {
            b = pe;
        } else {
            size_t k = a, fit = a;
            while (k < pe) {
                size_t we = k;
                while (we < pe && s[we] != ' ')
                    we++;
                if (text_w(f, s + a, we - a) > width) break;
                while (we < pe && s[we] == ' ')
                    we++;
                fit = k = we;
            }
            b = fit;
            if (fit == a) { /* one word wider than the line */
                b = next_cp(s, len, a);
                for (size_t nb; b < pe && text_w(f, s + a, (nb = next_cp(s, len, b)) - a) <= width;)
                    b = nb;
            }
        }
        if (b == pe) {
            if (pe == len) break;
            a = pe + 1; /* after the line break */
        } else {
            a = b;
        }
        st[n++] = a;
    }
    *starts = st;
    return n;
}

/* line i's end, before its line break */
static size_t line_end(const char *s, size_t len, const size_t *st, int n, int i) {
    size_t b = i + 1 < n ? st[i + 1] : len;
    if (b > st[i] && s[b - 1] == '\n') b--;
    return b;
}

static int line_of(const size_t *st, int n, size_t off) {
    int i = 0;
    while (i + 1 < n && st[i + 1] <= off)
        i++;
    return i;
}

/* ---- fields ---- */

void ui_edit_init(ui_edit *e, int multiline, const char *s) {
    memset(e, 0, sizeof *e);
    e->multiline = multiline;
    e->cap = 64;
    e->s = calloc(e->cap, 1);
    CHECK(e->s);
    ui_edit_insert(e, s ? s : "");
    e->anchor = e->cur = 0;
}

void ui_edit_free(ui_edit *e) {
    free(e->s);
    memset(e, 0, sizeof *e);
}

void ui_edit_select_all(ui_edit *e) { e->anchor = 0, e->cur = e->len; }

static void edit_delete(ui_edit *e, size_t a, size_t b) {
    memmove(e->s + a, e->s + b, e->len - b + 1);
    e->len -= b - a;
    e->cur = e->anchor = a;
}

static int edit_cut_selection(ui_edit *e) {
    if (e->cur == e->anchor) return 0;
    edit_delete(e, SDL_min(e->cur, e->anchor), SDL_max(e->cur, e->anchor));
    return 1;
}

void ui_edit_insert(ui_edit *e, const char *s) {
    edit_cut_selection(e);
    const size_t n = strlen(s);
    if (e->len + n + 1 > e->cap) {
        while (e->len + n + 1 > e->cap)
            e->cap *= 2;
        char *p = realloc(e->s, e->cap);
        CHECK(p);
        e->s = p;
    }
    memmove(e->s + e->cur + n, e->s + e->cur, e->len - e->cur + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) { /* control characters dropped, tabs as spaces */
        char c = s[i];
        if (c == '\t' || (c == '\n' && !e->multiline)) c = ' ';
        if ((unsigned char)c < 0x20 && c != '\n') continue;
        e->s[e->cur + k++] = c;
    }
    memmove(e->s + e->cur + k, e->s + e->cur + n, e->len - e->cur + 1);
    e->len += k, e->cur += k, e->anchor = e->cur;
}

/* the field's text area, inside its border */
static SDL_Rect field_inner(const ui *u, int id) {
    const int px = (int)(6 * u->scale), py = (int)(5 * u->scale);
    const SDL_Rect r = u->r[id];
    return (SDL_Rect){r.x + px, r.y + py, SDL_max(r.w - 2 * px, 10), SDL_max(r.h - 2 * py, 1)};
}

static int field_lines(ui *u, const ui_edit *e, int id, size_t **st) {
    if (e->multiline) return wrap(u->font, e->s, e->len, field_inner(u, id).w, st);
    *st = calloc(1, sizeof **st);
    return *st ? 1 : 0;
}

/* the offset in line i nearest to x pixels from the line's start */
static size_t offset_at(ui *u, const ui_edit *e, const size_t *st, int n, int i, int x) {
    const size_t a = st[i], b = line_end(e->s, e->len, st, n, i);
    size_t best = a;
    int bd = abs(x);
    for (size_t p = a; p < b;) {
        p = next_cp(e->s, b, p);
        const int d = abs(text_w(u->font, e->s + a, p - a) - x);
        if (d < bd) bd = d, best = p;
    }
    return best;
}

void ui_edit_click(ui *u, ui_edit *e, int id, int x, int y) {
    size_t *st;
    const int n = field_lines(u, e, id, &st);
    if (!n) return;
    const SDL_Rect in = field_inner(u, id);
    const int i = e->multiline ? SDL_clamp(e->scroll + (y - in.y) / u->lh, 0, n - 1) : 0;
    e->cur = e->anchor = offset_at(u, e, st, n, i, x - in.x + (e->multiline ? 0 : e->scroll));
    free(st);
}

/* Up and Down in a wrapped field: the nearest offset one line over */
static size_t vertical(ui *u, const ui_edit *e, int id, int dir) {
    size_t *st;
    const int n = field_lines(u, e, id, &st);
    if (!n) return e->cur;
    const int i = line_of(st, n, e->cur);
    size_t to = dir < 0 ? 0 : e->len;
    if (i + dir >= 0 && i + dir < n)
        to = offset_at(u, e, st, n, i + dir, text_w(u->font, e->s + st[i], e->cur - st[i]));
    free(st);
    return to;
}

static size_t home_end(ui *u, const ui_edit *e, int id, int end) {
    size_t *st;
    const int n = field_lines(u, e, id, &st);
    if (!n) return e->cur;
    const int i = line_of(st, n, e->cur);
    const size_t to = end ? line_end(e->s, e->len, st, n, i) : st[i];
    free(st);
    return to;
}

static void clipboard_copy(const ui_edit *e) {
    const size_t a = SDL_min(e->cur, e->anchor), b = SDL_max(e->cur, e->anchor);
    char *t = a < b ? malloc(b - a + 1) : NULL;
    if (!t) return;
    memcpy(t, e->s + a, b - a);
    t[b - a] = 0;
    SDL_SetClipboardText(t);
    free(t);
}

int ui_edit_key(ui *u, ui_edit *e, int id, SDL_Keycode key, Uint16 mod) {
    const int ctrl = (mod & (KMOD_CTRL | KMOD_GUI)) != 0, shift = (mod & KMOD_SHIFT) != 0;
    const size_t lo = SDL_min(e->cur, e->anchor), hi = SDL_max(e->cur, e->anchor);
    size_t to;
    switch (key) {
    case SDLK_BACKSPACE:
    case SDLK_DELETE:
        if (edit_cut_selection(e)) return 1;
        to = key == SDLK_BACKSPACE ? prev_cp(e->s, e->cur) : next_cp(e->s, e->len, e->cur);
        if (ctrl && key == SDLK_BACKSPACE) { /* the word before the cursor */
            to = e->cur;
            while (to > 0 && e->s[to - 1] == ' ')
                to--;
            while (to > 0 && e->s[to - 1] != ' ' && e->s[to - 1] != '\n')
                to--;
        }
        edit_delete(e, SDL_min(to, e->cur), SDL_max(to, e->cur));
        return 1;
    case SDLK_LEFT: to = lo != hi && !shift ? lo : prev_cp(e->s, e->cur); break;
    case SDLK_RIGHT: to = lo != hi && !shift ? hi : next_cp(e->s, e->len, e->cur); break;
    case SDLK_UP:
    case SDLK_DOWN:
        if (!e->multiline) return 0;
        to = vertical(u, e, id, key == SDLK_UP ? -1 : 1);
        break;
    case SDLK_HOME: to = ctrl ? 0 : home_end(u, e, id, 0); break;
    case SDLK_END: to = ctrl ? e->len : home_end(u, e, id, 1); break;
    case SDLK_RETURN:
    case SDLK_KP_ENTER:
        if (!e->multiline || ctrl) return 0;
        ui_edit_insert(e, "\n");
        return 1;
    case SDLK_a:
    case SDLK_c:
    case SDLK_x:
    case SDLK_v:
        if (!ctrl) return 0;
        if (key == SDLK_a) ui_edit_select_all(e);
        if (key == SDLK_c || key == SDLK_x) clipboard_copy(e);
        if (key == SDLK_x) edit_cut_selection(e);
        if (key == SDLK_v && SDL_HasClipboardText()) {
            char *t = SDL_GetClipboardText();
            if (t) ui_edit_insert(e, t);
            SDL_free(t);
        }
        return 1;
    default: return 0;
    }
    e->cur = to;
    if (!shift) e->anchor = to;
    return 1;
}

/* ---- drawing ---- */

#define S(x) ((int)((x)*u->scale + 0.5f))

static void fill(ui *u, SDL_Rect r, SDL_Color c) {
    SDL_SetRenderDrawColor(u->ren, c.r, c.g, c.b, 255);
    SDL_RenderFillRect(u->ren, &r);
}

static void border(ui *u, SDL_Rect r, SDL_Color c, int t) {
    fill(u, (SDL_Rect){r.x, r.y, r.w, t}, c);
    fill(u, (SDL_Rect){r.x, r.y + r.h - t, r.w, t}, c);
    fill(u, (SDL_Rect){r.x, r.y, t, r.h}, c);
    fill(u, (SDL_Rect){r.x + r.w - t, r.y, t, r.h}, c);
}

static void draw_edit(ui *u, const ui_view *v, int id) {
    ui_edit *e = v->edit[id];
    const SDL_Rect r = u->r[id], in = field_inner(u, id);
    const int focused = v->focus == id, lh = u->lh;
    fill(u, r, C_FIELD);
    border(u, r, e->invalid ? C_RED : focused ? C_FOCUS : C_BORDER, focused ? S(2) : S(1));
    size_t *st;
    const int n = field_lines(u, e, id, &st);
    if (!n) return;
    const int cl = line_of(st, n, e->cur), vis = SDL_max(1, in.h / lh);
    int x0 = in.x, first = 0;
    if (e->multiline) { /* the cursor's line in view */
        if (cl < e->scroll) e->scroll = cl;
        if (cl >= e->scroll + vis) e->scroll = cl - vis + 1;
        e->scroll = first = SDL_clamp(e->scroll, 0, SDL_max(0, n - vis));
    } else {
        const int cx = text_w(u->font, e->s, e->cur), tw = text_w(u->font, e->s, e->len);
        if (cx - e->scroll > in.w - 2) e->scroll = cx - in.w + 2;
        if (cx < e->scroll) e->scroll = cx;
        e->scroll = SDL_clamp(e->scroll, 0, SDL_max(0, tw - in.w + 2));
        x0 -= e->scroll;
    }
    const SDL_Rect clip = {in.x - 1, in.y, in.w + 2, in.h};
    SDL_RenderSetClipRect(u->ren, &clip);
    const size_t lo = SDL_min(e->cur, e->anchor), hi = SDL_max(e->cur, e->anchor);
    for (int i = first; i < n && i < first + vis; i++) {
        const size_t a = st[i], b = line_end(e->s, e->len, st, n, i);
        const int y = in.y + (i - first) * lh;
        if (lo < hi && lo <= b && hi > a) {
            const size_t sa = SDL_max(lo, a), sb = SDL_min(hi, b);
            const int xa = x0 + text_w(u->font, e->s + a, sa - a);
            int xb = x0 + text_w(u->font, e->s + a, sb - a);
            if (hi > b && b < e->len) xb += S(5); /* the line break is selected too */
            fill(u, (SDL_Rect){xa, y, SDL_max(xb - xa, 1), lh}, C_SEL);
        }
        text(u, u->font, e->s + a, b - a, x0, y, C_TEXT, 0);
    }
    if (!e->len && !focused && hints[id]) str(u, u->font, hints[id], in.x, in.y, C_DIM, in.w);
    if (focused) {
        const int cx = x0 + text_w(u->font, e->s + st[cl], e->cur - st[cl]);
        fill(u, (SDL_Rect){cx, in.y + (cl - first) * lh, SDL_max(1, S(1.5)), lh}, C_TEXT);
    }
    SDL_RenderSetClipRect(u->ren, NULL);
    free(st);
}

static void draw_button(ui *u, const ui_view *v, int id, const char *label, SDL_Color bg) {
    const SDL_Rect r = u->r[id];
    const int off = (v->disabled >> id) & 1;
    if (off) {
        bg = C_FIELD;
    } else if (u->pressed == id && u->hover == id) {
        bg.r = (Uint8)(bg.r * 3 / 4), bg.g = (Uint8)(bg.g * 3 / 4), bg.b = (Uint8)(bg.b * 3 / 4);
    } else if (u->hover == id) {
        bg.r = (Uint8)SDL_min(255, bg.r + 18), bg.g = (Uint8)SDL_min(255, bg.g + 18);
        bg.b = (Uint8)SDL_min(255, bg.b + 18);
    }
    fill(u, r, bg);
    const int tw = SDL_min(text_w(u->font, label, strlen(label)), r.w - S(8));
    str(u, u->font, label, r.x + (r.w - tw) / 2, r.y + (r.h - u->lh) / 2, off ? C_DIM : C_TEXT,
        r.w - S(8));
}

/* The left column from y down (the prompt box ph high); returns the y below it. */
static int column(ui *u, const ui_view *v, int y, int lw, int ph) {
    const int m = S(12), g = S(8), lab = u->lh + S(3), fh = u->lh + S(10), bh = u->lh + S(14),
              half = (lw - g) / 2;
    SDL_Rect *r = u->r;
    y += lab;
    r[UI_PROMPT] = (SDL_Rect){m, y, lw, ph};
    y += ph + g;
    if (v->edit[UI_NEGATIVE]) {
        y += lab;
        r[UI_NEGATIVE] = (SDL_Rect){m, y, lw, 3 * u->lh + S(10)};
        y += r[UI_NEGATIVE].h + g;
    }
    y += lab;
    r[UI_WIDTH] = (SDL_Rect){m, y, half, fh};
    r[UI_HEIGHT] = (SDL_Rect){m + half + g, y, half, fh};
    y += fh + g + lab;
    r[UI_STEPS] = (SDL_Rect){m, y, half, fh};
    if (v->edit[UI_GUIDANCE]) r[UI_GUIDANCE] = (SDL_Rect){m + half + g, y, half, fh};
    y += fh + g + lab;
    const int rw = S(96);
    r[UI_SEED] = (SDL_Rect){m, y, lw - rw - g, fh};
    r[UI_REROLL] = (SDL_Rect){m + lw - rw, y, rw, fh};
    y += fh + 2 * g;
    r[UI_GENERATE] = (SDL_Rect){m, y, lw, bh + S(10)};
    y += r[UI_GENERATE].h + 2 * g;
    const int third = (lw - 2 * g) / 3;
    r[UI_PREV] = (SDL_Rect){m, y, third, bh};
    r[UI_NEXT] = (SDL_Rect){m + third + g, y, third, bh};
    r[UI_SAVE] = (SDL_Rect){m + 2 * (third + g), y, lw - 2 * (third + g), bh};
    return y + bh + g + 6 * u->lh; /* the shown image: which, its parameters, its prompt */
}

static void layout(ui *u, const ui_view *v) {
    const int m = S(12), g = S(8), W = u->w, H = u->h, lh = u->lh;
    memset(u->r, 0, sizeof u->r);
    const int lw = SDL_clamp(W * 34 / 100, S(300), S(420));
    u->r[UI_STATUS] = (SDL_Rect){m, H - m - lh, W - 2 * m, lh};
    u->r[UI_PROGRESS] = (SDL_Rect){m, u->r[UI_STATUS].y - g - S(12), W - 2 * m, S(12)};
    const int bottom = u->r[UI_PROGRESS].y - S(4) - lh - g; /* above the progress line */
    const int top = m + TTF_FontLineSkip(u->bold) + g;
    const int need = column(u, v, top, lw, 0) - top; /* the prompt box takes what is left */
    memset(u->r, 0, sizeof(SDL_Rect) * UI_IMAGE);
    column(u, v, top, lw, SDL_max(3 * lh + S(10), bottom - top - need));
    const int px = m + lw + S(16);
    u->r[UI_IMAGE] = (SDL_Rect){px, m, SDL_max(W - px - m, 1), SDL_max(bottom - m, 1)};
}

static void draw_panel(ui *u, const ui_view *v) {
    const SDL_Rect p = u->r[UI_IMAGE];
    fill(u, p, C_PANEL);
    u->drawn = (SDL_Rect){0, 0, 0, 0};
    if (v->image && v->iw > 0 && v->ih > 0) {
        SDL_Rect d;
        if (!v->preview && v->iw <= p.w && v->ih <= p.h) { /* 1:1, pixel for pixel */
            d = (SDL_Rect){p.x + (p.w - v->iw) / 2, p.y + (p.h - v->ih) / 2, v->iw, v->ih};
            SDL_SetTextureScaleMode(v->image, SDL_ScaleModeNearest);
        } else { /* fit, keeping the aspect */
            const double k = SDL_min((double)p.w / v->iw, (double)p.h / v->ih);
            const int w = SDL_max(1, (int)(v->iw * k)), h = SDL_max(1, (int)(v->ih * k));
            d = (SDL_Rect){p.x + (p.w - w) / 2, p.y + (p.h - h) / 2, w, h};
            SDL_SetTextureScaleMode(v->image, SDL_ScaleModeLinear);
        }
        SDL_RenderCopy(u->ren, v->image, NULL, &d);
        u->drawn = d;
    } else if (v->panel_text) {
        const int tw = SDL_min(text_w(u->font, v->panel_text, strlen(v->panel_text)), p.w - S(20));
        str(u, u->font, v->panel_text, p.x + (p.w - tw) / 2, p.y + (p.h - u->lh) / 2, C_DIM,
            p.w - S(20));
    }
}

/* s word-wrapped to w from y down, at most max lines ending above limit, the last one cut
 * with an ellipsis when more is left; returns the y below. */
static int paragraph(ui *u, const char *s, int x, int y, int w, int limit, int max, SDL_Color c) {
    if (!s || !*s) return y;
    size_t *st;
    const size_t len = strlen(s);
    const int n = wrap(u->font, s, len, w, &st);
    for (int i = 0; i < n && i < max && y + u->lh <= limit; i++, y += u->lh) {
        size_t e = line_end(s, len, st, n, i);
        while (e > st[i] && s[e - 1] == ' ') /* the spaces it broke after */
            e--;
        char *t = malloc(e - st[i] + 4);
        if (!t) break;
        memcpy(t, s + st[i], e - st[i]);
        memcpy(t + (e - st[i]), "\xe2\x80\xa6", 4); /* drawn when the text goes on */
        const int cut = i + 1 < n && (i + 1 == max || y + 2 * u->lh > limit);
        text(u, u->font, t, e - st[i] + (cut ? 3 : 0), x, y, c, w);
        free(t);
    }
    free(st);
    return y;
}

/* the shown image's lines under the buttons: which one, its parameters, its prompt */
static void draw_entry(ui *u, const ui_view *v) {
    const SDL_Rect b = u->r[UI_PREV];
    const int lw = u->r[UI_PROMPT].w, limit = u->r[UI_PROGRESS].y - S(8) - u->lh;
    int y = paragraph(u, v->history, b.x, b.y + b.h + S(8), lw, limit, 1, C_TEXT);
    y = paragraph(u, v->details, b.x, y, lw, limit, 2, C_DIM);
    paragraph(u, v->caption, b.x, y, lw, limit, 3, C_DIM);
}

void ui_draw(ui *u, const ui_view *v) {
    SDL_GetRendererOutputSize(u->ren, &u->w, &u->h);
    fonts_open(u); /* again when the scale changed (the window moved to a HiDPI screen) */
    layout(u, v);
    fill(u, (SDL_Rect){0, 0, u->w, u->h}, C_BG);
    const int m = S(12), lab = u->lh + S(3);
    const int tw = str(u, u->bold, "df11", m, m, C_TEXT, 0);
    str(u, u->font, v->model, m + tw + S(10), m + (TTF_FontLineSkip(u->bold) - u->lh) / 2, C_DIM,
        u->r[UI_PROMPT].w - tw - S(10));
    for (int i = 0; i < UI_FIRST_BUTTON; i++) {
        if (!v->edit[i] || !u->r[i].w) continue;
        const char *l = i == UI_GUIDANCE ? v->guidance : labels[i];
        str(u, u->font, l, u->r[i].x, u->r[i].y - lab + S(1), C_DIM, u->r[i].w);
        draw_edit(u, v, i);
    }
    draw_button(u, v, UI_REROLL, "Re-roll", C_BUTTON);
    draw_button(u, v, UI_GENERATE, v->running ? "Cancel  (Esc)" : "Generate  (Ctrl+Enter)",
                v->running ? C_CANCEL : C_ACCENT);
    draw_button(u, v, UI_PREV, "\xe2\x80\xb9 Prev", C_BUTTON);
    draw_button(u, v, UI_NEXT, "Next \xe2\x80\xba", C_BUTTON);
    draw_button(u, v, UI_SAVE, "Save", C_BUTTON);
    draw_entry(u, v);
    draw_panel(u, v);
    const SDL_Rect bar = u->r[UI_PROGRESS];
    str(u, u->font, v->progress, bar.x, bar.y - S(4) - u->lh, C_TEXT, bar.w);
    fill(u, bar, C_BAR_BG);
    if (v->bar_kind != UI_BAR_NONE) {
        const SDL_Color c = v->bar_kind == UI_BAR_DONE  ? C_BAR_DONE
                            : v->bar_kind == UI_BAR_RUN ? C_ACCENT
                                                        : C_BAR_STOP;
        const double f = SDL_clamp(v->bar, 0.0, 1.0);
        fill(u, (SDL_Rect){bar.x, bar.y, (int)(bar.w * f + 0.5), bar.h}, c);
    }
    const SDL_Rect s = u->r[UI_STATUS];
    str(u, u->font, v->status, s.x, s.y, v->status_error ? C_RED : C_DIM, s.w);
}

err ui_present(ui *u, const char *shot) {
    err e = ERR_OK;
    if (shot) { /* read before it is presented: the back buffer is undefined after */
        uint8_t *px = malloc((size_t)u->w * (size_t)u->h * 3);
        if (!px)
            e = err_set(ERR_NOMEM, "out of memory");
        else if (SDL_RenderReadPixels(u->ren, NULL, SDL_PIXELFORMAT_RGB24, px, u->w * 3) != 0)
            e = err_set(ERR_IO, "%s: cannot read the window back: %s", shot, SDL_GetError());
        else
            e = png_write_rgb(shot, px, u->w, u->h, NULL, NULL, 0);
        free(px);
    }
    SDL_RenderPresent(u->ren);
    return e;
}

void ui_geometry(const ui *u, cJSON *o) {
    SDL_RendererInfo ri;
    cJSON *wd = cJSON_CreateObject();
    const SDL_Rect d = u->drawn;
    cJSON_AddItemToObject(o, "window", cJSON_CreateIntArray((int[]){u->w, u->h}, 2));
    cJSON_AddNumberToObject(o, "scale", u->scale);
    if (SDL_GetRendererInfo(u->ren, &ri) == 0) cJSON_AddStringToObject(o, "renderer", ri.name);
    for (int i = 0; i < UI_N; i++)
        if (u->r[i].w > 0)
            cJSON_AddItemToObject(
                wd, ui_names[i],
                cJSON_CreateIntArray((int[]){u->r[i].x, u->r[i].y, u->r[i].w, u->r[i].h}, 4));
    cJSON_AddItemToObject(o, "widgets", wd);
    cJSON_AddItemToObject(o, "image",
                          d.w ? cJSON_CreateIntArray((int[]){d.x, d.y, d.w, d.h}, 4)
                              : cJSON_CreateNull());
}

int ui_at(const ui *u, int x, int y) {
    const SDL_Point p = {x, y};
    for (int i = 0; i < UI_N; i++)
        if (u->r[i].w > 0 && SDL_PointInRect(&p, &u->r[i])) return i;
    return -1;
}

int ui_find(const char *name) {
    if (!SDL_strcasecmp(name, "cfg")) return UI_GUIDANCE;
    for (int i = 0; i < UI_N; i++)
        if (!SDL_strcasecmp(name, ui_names[i])) return i;
    return -1;
}

/* ---- synthetic input ---- */

void ui_push_text(ui *u, const char *s) {
    const size_t len = strlen(s), max = SDL_TEXTINPUTEVENT_TEXT_SIZE - 1;
    for (size_t a = 0; a < len;) {
        size_t b = a;
        for (size_t nb; b < len && (nb = next_cp(s, len, b)) - a <= max;)
            b = nb;
        SDL_Event e;
        memset(&e, 0, sizeof e);
        e.type = SDL_TEXTINPUT;
        e.text.timestamp = SDL_GetTicks();
        e.text.windowID = SDL_GetWindowID(u->win);
        memcpy(e.text.text, s + a, b - a);
        SDL_PushEvent(&e);
        a = b;
    }
}

int ui_push_key(ui *u, const char *spec) {
    Uint16 mod = 0;
    const char *p = spec;
    static const struct {
        const char *name;
        Uint16 mod;
    } mods[] = {
        {"ctrl+", KMOD_LCTRL}, {"shift+", KMOD_LSHIFT}, {"alt+", KMOD_LALT}, {"gui+", KMOD_LGUI}};
    for (int more = 1; more;) { /* in any order */
        more = 0;
        for (size_t k = 0; k < sizeof mods / sizeof *mods; k++)
            if (!SDL_strncasecmp(p, mods[k].name, strlen(mods[k].name)))
                mod |= mods[k].mod, p += strlen(mods[k].name), more = 1;
    }
    const SDL_Keycode key = SDL_GetKeyFromName(p);
    if (key == SDLK_UNKNOWN) return 0;
    SDL_Event e;
    memset(&e, 0, sizeof e);
    e.key.timestamp = SDL_GetTicks();
    e.key.windowID = SDL_GetWindowID(u->win);
    e.key.keysym.sym = key;
    e.key.keysym.scancode = SDL_GetScancodeFromKey(key);
    e.key.keysym.mod = mod;
    e.type = SDL_KEYDOWN, e.key.state = SDL_PRESSED;
    SDL_PushEvent(&e);
    e.type = SDL_KEYUP, e.key.state = SDL_RELEASED;
    SDL_PushEvent(&e);
    return 1;
}

void ui_push_click(ui *u, int id) {
    const SDL_Rect r = u->r[id];
    SDL_Event e;
    memset(&e, 0, sizeof e);
    e.button.timestamp = SDL_GetTicks();
    e.button.windowID = SDL_GetWindowID(u->win);
    e.button.button = SDL_BUTTON_LEFT;
    e.button.clicks = 1;
    /* events carry window coordinates; the layout is in output pixels */
    e.button.x = (int)((r.x + r.w / 2) / u->scale), e.button.y = (int)((r.y + r.h / 2) / u->scale);
    e.type = SDL_MOUSEBUTTONDOWN, e.button.state = SDL_PRESSED;
    SDL_PushEvent(&e);
    e.type = SDL_MOUSEBUTTONUP, e.button.state = SDL_RELEASED;
    SDL_PushEvent(&e);
}

#else
typedef int window_ui_unused; /* built without SDL2: `df11 window` says so (cmd_window.c) */
#endif
