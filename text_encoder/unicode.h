/* unicode: the Unicode pieces the tokenizers' text cleanup needs: UTF-8 decoding (bad bytes
 * become U+FFFD as Python's bytes.decode('utf-8', 'replace')), NFC, full lowercase, and the
 * letter / number / white-space classes. Data: unicode_tables.h, generated from Python's
 * unicodedata by tools/gen_unicode_tables.py (its docstring says where HF tokenizers differs).
 * Code points are uint32_t; buffers belong to the caller. */
#ifndef TEXT_ENCODER_UNICODE_H
#define TEXT_ENCODER_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define UNICODE_REPLACEMENT 0xFFFDu
/* Most code points NFD makes of one (UNICODE_NFD_MAX_EXPANSION in the tables, checked). */
#define UNICODE_NFD_MAX 4
/* Most code points the lowercase of one code point has. */
#define UNICODE_LOWER_MAX 3

/* The Unicode version of the tables ("15.1.0"). */
const char *unicode_version(void);

/* Decodes len bytes into out (room for len code points); returns the count. Each maximal
 * ill-formed subpart (Unicode's "substitution of maximal subparts", as CPython) gives one
 * U+FFFD; NUL bytes are kept as U+0000. */
size_t unicode_utf8_decode(const char *s, size_t len, uint32_t *out);
/* Writes cp as UTF-8 into buf (room for 4); returns the byte count. Surrogates and values past
 * U+10FFFF are written as U+FFFD. */
int unicode_utf8_encode(uint32_t cp, char *buf);

/* NFC of in[n] into out (room for UNICODE_NFD_MAX * n); returns the count. in and out must not
 * overlap. */
size_t unicode_nfc(const uint32_t *in, size_t n, uint32_t *out);
/* NFD of in[n] into out (room for UNICODE_NFD_MAX * n); returns the count. */
size_t unicode_nfd(const uint32_t *in, size_t n, uint32_t *out);

/* The full lowercase of cp (SpecialCasing's unconditional mappings, no final-sigma context, as
 * Rust's char::to_lowercase and Python's str.lower of one character) into out; returns 1..3. */
int unicode_lower(uint32_t cp, uint32_t out[UNICODE_LOWER_MAX]);

/* General category L* (the regex class \p{L}). */
int unicode_is_letter(uint32_t cp);
/* General category N* (\p{N}: Nd, Nl and No). */
int unicode_is_number(uint32_t cp);
/* White_Space (the regex class \s of Oniguruma, which HF tokenizers uses). */
int unicode_is_space(uint32_t cp);
/* Canonical combining class (0 for starters). */
int unicode_ccc(uint32_t cp);

#endif
