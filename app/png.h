/* png: the PNG files of df11 generate (RGB8 with text chunks, deterministic bytes, written to a
 * temporary name and renamed so no half-written file is ever seen) and the reader for tests and
 * img2img input. PNG: W3C "Portable Network Graphics (PNG) Specification"; libpng does the
 * bytes. Texts are UTF-8 in the API: ASCII ones go to tEXt, others to iTXt. */
#ifndef APP_PNG_H
#define APP_PNG_H

#include <stdint.h>

#include "core/err.h"

/* Writes w x h RGB8 pixels (rows top to bottom, 3 w bytes each) and n_texts (key, text) pairs
 * to path through "<path>.tmp.<pid>" + rename. Keys: 1-79 printable ASCII characters, no
 * leading, trailing or double spaces. No time chunk; fixed filter and zlib level, so the same
 * inputs give the same bytes. ERR_IO (naming path) if it cannot be written; ERR_ARG for bad
 * sizes or keys. */
err png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, const char *const *keys,
                  const char *const *texts, int n_texts);

/* Reads any PNG as RGB8: palette and gray expanded, alpha dropped (as PIL's convert("RGB")),
 * 16-bit scaled to 8. *rgb is malloc'd (3 w h bytes), the caller frees it. ERR_IO if it cannot
 * be opened, ERR_FORMAT if it is not a valid PNG. */
err png_read_rgb(const char *path, uint8_t **rgb, int *w, int *h);

/* The text chunks of a PNG (tEXt, zTXt, iTXt) in file order, as UTF-8 (Latin-1 converted). */
typedef struct png_text_list {
    int n;
    char **keys, **texts; /* n each, owned */
} png_text_list;

/* Reads path's text chunks into *out (freed with png_text_list_free). */
err png_read_texts(const char *path, png_text_list *out);
void png_text_list_free(png_text_list *t); /* accepts a zeroed list */

#endif
