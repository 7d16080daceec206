/* df11: the codec for one BF16 tensor. A tensor becomes one self-contained blob: the 8-bit
 * exponents coded with tANS in interleaved 32-lane segments, the sign+mantissa bytes kept raw.
 * The byte layout is specified in df11/FORMAT.md; this header is the C view of it.
 * Blobs own nothing: df11_blob is a validated view into caller bytes. */
#ifndef DF11_DF11_H
#define DF11_DF11_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define DF11_VERSION 1
#define DF11_MAGIC "DF11"
#define DF11_LANES 32         /* one warp; lanes of a segment share one word stream */
#define DF11_GROUP 4          /* consecutive elements per lane per step */
#define DF11_REFILL_BELOW 24  /* a lane takes a word when it holds fewer bits (2 codes <= 24) */
#define DF11_MAX_TABLE_LOG 12
#define DF11_HEADER_BYTES 64
#define DF11_BLOB_ALIGN 256   /* blob sizes and offsets are multiples of this */

typedef struct df11_params {
    int table_log;   /* tANS table size 2^table_log, 1..12 */
    uint32_t steps;  /* steps per segment: a segment is LANES*GROUP*steps elements */
    int threads;     /* encoder threads, 0 = OpenMP default */
    uint64_t single_segment_max; /* tensors this small are one segment (less per-lane side
                                    data; they are too small to need many warps) */
} df11_params;

/* Fills the defaults (table_log 12, steps 512: 64 Ki elements a segment; tensors of up to
 * 256 Ki elements in one segment). */
void df11_params_init(df11_params *p);

/* A validated view of one blob; pointers point into the caller's bytes. */
typedef struct df11_blob {
    const uint8_t *base;
    size_t len;
    uint64_t n;              /* elements */
    int table_log;
    uint32_t steps;
    uint32_t n_segments;
    uint32_t crc;            /* CRC-32 of the original 2n bytes */
    int n_syms;
    uint8_t sym[256];        /* exponent values present, increasing */
    uint16_t count[256];     /* their normalized counts, summing to 2^table_log */
    const uint8_t *seg_start; /* n_segments u32 word indexes into code (little-endian) */
    const uint8_t *code;      /* code_words u32 words */
    uint64_t code_words;
    const uint8_t *raw;      /* n sign+mantissa bytes */
} df11_blob;

/* Encodes n BF16 values (as raw uint16 bit patterns) into a malloc'd blob of *len bytes. */
err df11_encode(const uint16_t *src, uint64_t n, const df11_params *p, uint8_t **blob,
                size_t *len);
/* Validates a blob's header, symbol table and segment table (side CRC included) and fills the
 * view. Never reads outside [data, data+len). */
err df11_blob_parse(const void *data, size_t len, df11_blob *out);
/* The CPU reference decoder: writes b->n BF16 values to dst. ERR_FORMAT if a segment's code
 * does not end where the next begins. Does not check the CRC (see df11_check). */
err df11_decode_cpu(const df11_blob *b, uint16_t *dst);
/* Compares decoded values with the blob's CRC; ERR_CHECKSUM on mismatch. */
err df11_check(const df11_blob *b, const uint16_t *decoded);
/* CRC-32 (zlib polynomial) of len bytes, computed in parallel for large inputs. */
uint32_t df11_crc32(const void *data, size_t len);

/* Byte accounting of a blob, for inspect and the benchmarks. */
typedef struct df11_stats {
    uint64_t n;
    uint64_t code_bytes;  /* exponent code words */
    uint64_t raw_bytes;   /* sign+mantissa bytes (= n) */
    uint64_t side_bytes;  /* header, tables, segment table, padding */
    double entropy_bits;  /* order-0 entropy of the exponents, bits per element */
} df11_stats;

/* Fills stats from a parsed blob; the entropy needs the decoded values (NULL: left 0). */
void df11_blob_stats(const df11_blob *b, const uint16_t *decoded, df11_stats *s);
/* Order-0 entropy of the exponent bytes of n BF16 values, in bits per element. */
double df11_exponent_entropy(const uint16_t *src, uint64_t n);

#endif
