/* png: RGB8 PNG writing (deterministic, atomic) and reading with libpng. libpng reports errors
 * by calling our handler, which records the message and longjmps back to the setjmp in the
 * function that created the png_struct; everything those functions must free after a longjmp
 * is either set before the setjmp and never changed, or volatile. */
#include "app/png.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define PNG_MAX_SIDE 65535 /* df11 caps images at 8192; this bounds allocations on read */

typedef struct png_errctx {
    char msg[256];
} png_errctx;

static void on_error(png_structp p, png_const_charp msg) {
    png_errctx *ec = png_get_error_ptr(p);
    snprintf(ec->msg, sizeof ec->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(p, 1);
}

static void on_warning(png_structp p, png_const_charp msg) { (void)p, (void)msg; }

static int is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

/* PNG keyword rules (PNG spec 11.3.4.2): 1-79 Latin-1 characters, no leading, trailing or
 * consecutive spaces; we accept the printable ASCII subset */
static int key_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x20 || k[i] > 0x7E) return 0;
        if (k[i] == ' ' && k[i + 1] == ' ') return 0;
    }
    return 1;
}

/* The pixels and texts through libpng into f. */
static err write_stream(FILE *f, const char *path, const uint8_t *rgb, int w, int h,
                        png_text *texts, int n_texts) {
    png_errctx ec = {{0}};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ec, on_error, on_warning);
    FAIL_IF(!p, ERR_NOMEM, "%s: out of memory for libpng", path);
    png_infop info = png_create_info_struct(p);
    if (!info) {
        png_destroy_write_struct(&p, NULL);
        FAIL(ERR_NOMEM, "%s: out of memory for libpng", path);
    }
    if (setjmp(png_jmpbuf(p))) {
        png_destroy_write_struct(&p, &info);
        FAIL(ERR_IO, "%s: writing PNG: %s", path, ec.msg);
    }
    png_init_io(p, f);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* every choice that shapes the bytes is fixed here, not left to libpng's defaults: one
     * filter for all rows (Paeth: good on photographs), zlib level 6, default strategy */
    png_set_filter(p, PNG_FILTER_TYPE_BASE, PNG_FILTER_PAETH);
    png_set_compression_level(p, 6);
    png_set_compression_mem_level(p, 8);
    png_set_compression_strategy(p, Z_DEFAULT_STRATEGY);
    png_set_compression_window_bits(p, 15);
    if (n_texts > 0) png_set_text(p, info, texts, n_texts);
    png_write_info(p, info); /* IHDR, then the text chunks before the image data */
    for (int y = 0; y < h; y++)
        png_write_row(p, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    return ERR_OK;
}

err png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, const char *const *keys,
                  const char *const *texts, int n_texts) {
    FAIL_IF(w < 1 || h < 1 || w > PNG_MAX_SIDE || h > PNG_MAX_SIDE, ERR_ARG,
            "%s: image size %dx%d is outside 1..%d", path, w, h, PNG_MAX_SIDE);
    FAIL_IF(n_texts < 0 || n_texts > 64, ERR_ARG, "%s: %d text chunks", path, n_texts);
    png_text chunks[64];
    memset(chunks, 0, sizeof chunks);
    for (int i = 0; i < n_texts; i++) {
        FAIL_IF(!keys[i] || !key_ok(keys[i]), ERR_ARG,
                "%s: text key \"%s\" is not 1-79 printable ASCII characters without "
                "leading, trailing or double spaces",
                path, keys[i] ? keys[i] : "(null)");
        FAIL_IF(!texts[i], ERR_ARG, "%s: text of key %s is NULL", path, keys[i]);
        chunks[i].key = (png_charp)keys[i];
        chunks[i].text = (png_charp)texts[i];
        if (is_ascii(texts[i])) {
            chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
            chunks[i].text_length = strlen(texts[i]);
        } else { /* UTF-8: iTXt, uncompressed, no language tag */
            chunks[i].compression = PNG_ITXT_COMPRESSION_NONE;
            chunks[i].itxt_length = strlen(texts[i]);
            chunks[i].lang = (png_charp) "";
            chunks[i].lang_key = (png_charp) "";
        }
    }

    struct stat st;
    FAIL_IF(stat(path, &st) == 0 && S_ISDIR(st.st_mode), ERR_IO, "%s: is a directory", path);
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    FAIL_IF(!tmp, ERR_NOMEM, "out of memory");
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        err e = err_set(ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return e;
    }
    err e = write_stream(f, path, rgb, w, h, chunks, n_texts);
    if (!e && fflush(f) != 0) e = err_set(ERR_IO, "%s: writing: %s", path, strerror(errno));
    if (fclose(f) != 0 && !e) e = err_set(ERR_IO, "%s: writing: %s", path, strerror(errno));
    if (!e && rename(tmp, path) != 0)
        e = err_set(ERR_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    if (e) remove(tmp);
    free(tmp);
    return e;
}

/* ---- reading ---- */

/* Latin-1 bytes (tEXt, zTXt, keywords) as a new UTF-8 string */
static char *latin1_to_utf8(const char *s, size_t n) {
    char *o = malloc(2 * n + 1), *q = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            *q++ = (char)c;
        } else {
            *q++ = (char)(0xC0 | (c >> 6));
            *q++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *q = 0;
    return o;
}

/* A PNG read through: pixels as RGB8 if rgb, text chunks if texts. */
static err read_file(const char *path, uint8_t **rgb, int *w, int *h, png_text_list *texts) {
    FILE *f = fopen(path, "rb");
    FAIL_IF(!f, ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        fclose(f);
        FAIL(ERR_FORMAT, "%s: not a PNG file (bad signature)", path);
    }
    png_errctx ec = {{0}};
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ec, on_error, on_warning);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_read_struct(p ? &p : NULL, NULL, NULL);
        fclose(f);
        FAIL(ERR_NOMEM, "%s: out of memory for libpng", path);
    }
    uint8_t *volatile out = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(p))) {
        free(rows);
        free(out);
        png_destroy_read_struct(&p, &info, NULL);
        fclose(f);
        FAIL(ERR_FORMAT, "%s: reading PNG: %s", path, ec.msg);
    }
    png_init_io(p, f);
    png_set_sig_bytes(p, 8);
    png_set_user_limits(p, PNG_MAX_SIDE, PNG_MAX_SIDE);
    png_read_info(p, info);
    const png_uint_32 pw = png_get_image_width(p, info), ph = png_get_image_height(p, info);
    const int ct = png_get_color_type(p, info), depth = png_get_bit_depth(p, info);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
    if (depth == 16) png_set_scale_16(p);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(p);
    png_set_strip_alpha(p); /* also drops a palette's or tRNS transparency (not expanded) */
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    if (png_get_rowbytes(p, info) != (size_t)pw * 3) png_error(p, "unexpected row size");
    out = malloc((size_t)pw * ph * 3);
    rows = malloc(sizeof *rows * ph);
    if (!out || !rows) png_error(p, "out of memory");
    for (png_uint_32 y = 0; y < ph; y++)
        rows[y] = out + (size_t)y * pw * 3;
    png_read_image(p, rows);
    png_read_end(p, info); /* text chunks after the image data land in info too */

    err e = ERR_OK;
    if (texts) {
        png_textp tp = NULL;
        int n = png_get_text(p, info, &tp, NULL);
        texts->n = 0;
        texts->keys = calloc((size_t)n + 1, sizeof *texts->keys);
        texts->texts = calloc((size_t)n + 1, sizeof *texts->texts);
        if (!texts->keys || !texts->texts) e = err_set(ERR_NOMEM, "out of memory");
        for (int i = 0; i < n && !e; i++) {
            const int utf8 = tp[i].compression >= PNG_ITXT_COMPRESSION_NONE;
            const size_t len = utf8 ? tp[i].itxt_length : tp[i].text_length;
            texts->keys[i] = latin1_to_utf8(tp[i].key, strlen(tp[i].key));
            texts->texts[i] = utf8 ? strndup(tp[i].text ? tp[i].text : "", len)
                                   : latin1_to_utf8(tp[i].text ? tp[i].text : "", len);
            texts->n = i + 1;
            if (!texts->keys[i] || !texts->texts[i]) e = err_set(ERR_NOMEM, "out of memory");
        }
        if (e) png_text_list_free(texts);
    }
    png_destroy_read_struct(&p, &info, NULL);
    fclose(f);
    free(rows);
    if (rgb && !e) {
        *rgb = out;
        *w = (int)pw;
        *h = (int)ph;
    } else {
        free(out);
    }
    return e;
}

err png_read_rgb(const char *path, uint8_t **rgb, int *w, int *h) {
    return read_file(path, rgb, w, h, NULL);
}

err png_read_texts(const char *path, png_text_list *out) {
    memset(out, 0, sizeof *out);
    return read_file(path, NULL, NULL, NULL, out);
}

void png_text_list_free(png_text_list *t) {
    for (int i = 0; i < t->n; i++) {
        free(t->keys[i]);
        free(t->texts[i]);
    }
    free(t->keys);
    free(t->texts);
    memset(t, 0, sizeof *t);
}
