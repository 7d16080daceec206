/* blob_layout: the byte offsets of a df11 blob (FORMAT.md "Blob layout"), computed in one
 * place for the writer (encode.c) and the parser (blob.c). Internal to df11/. */
#ifndef DF11_BLOB_LAYOUT_H
#define DF11_BLOB_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct df11_layout {
    uint64_t n;
    uint32_t steps, n_segments;
    int table_log, n_syms;
    uint16_t count[256];
    uint32_t crc;
    uint64_t code_words;
    /* derived by df11_layout_offsets */
    uint64_t sym_off, seg_off, code_off, raw_off, len;
} df11_layout;

/* One segment's interleaved code words, as the encoder produced them. */
typedef struct df11_seg_code {
    uint32_t *words;
    uint32_t n_words;
} df11_seg_code;

/* Fills n_syms and the offsets from the other fields; ERR_UNSUPPORTED on overflow. */
err df11_layout_offsets(df11_layout *lay);
/* Allocates and writes the whole blob: header, tables, code words, raw bytes, padding. */
err df11_layout_write(df11_layout *lay, const uint16_t *src, const uint32_t *seg_start,
                      const df11_seg_code *segs, uint8_t **blob, size_t *len);

#endif
