/* container: DF11 checkpoints. A DF11 checkpoint is a valid safetensors file: each compressed
 * BF16 tensor is a U8 tensor holding one df11 blob (df11.h), other tensors are stored as they
 * were, and the metadata keeps the original header verbatim so the original file can be
 * rebuilt byte for byte. Spec: df11/FORMAT.md "Container". */
#ifndef DF11_CONTAINER_H
#define DF11_CONTAINER_H

#include <stdint.h>

#include "core/dtype.h"
#include "core/err.h"
#include "core/safetensors.h"
#include "df11/df11.h"

#define DF11_META_VERSION "df11.version"
#define DF11_META_HEADER "df11.original_header"
#define DF11_META_RAW_CRC "df11.raw_crc32"
#define DF11_META_HEADER_CRC "df11.original_header_crc32"
#define DF11_MIN_ELEMS 256 /* smaller BF16 tensors are stored as they are */

/* Progress: called with bytes of original data done so far, the total, and what is being
 * worked on. May be NULL. */
typedef struct df11_progress {
    void (*fn)(void *ctx, uint64_t done, uint64_t total, const char *what);
    void *ctx;
} df11_progress;

/* One tensor of a checkpoint as the original file had it. */
typedef struct df11_tensor {
    const char *name;
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;   /* data_offsets in the original file */
    int compressed;        /* 1: data is a df11 blob; 0: data is the original bytes */
    const uint8_t *data;   /* mmapped */
    uint64_t stored_bytes; /* bytes of data */
    uint32_t crc;          /* CRC-32 of the original bytes */
} df11_tensor;

/* A checkpoint opened for reading: a DF11 file or a plain safetensors file (then nothing is
 * compressed and crc is 0). Tensors are in the original header's order. */
typedef struct df11_ckpt df11_ckpt;

err df11_ckpt_open(const char *path, df11_ckpt **out);
/* The same over bytes in memory (borrowed; 16-byte aligned for in-place blob access). */
err df11_ckpt_open_memory(const void *bytes, size_t len, const char *label, df11_ckpt **out);
void df11_ckpt_close(df11_ckpt *c); /* accepts NULL */
int df11_ckpt_is_df11(const df11_ckpt *c);
int df11_ckpt_count(const df11_ckpt *c);
const df11_tensor *df11_ckpt_at(const df11_ckpt *c, int i);
const df11_tensor *df11_ckpt_find(const df11_ckpt *c, const char *name);
const st_file *df11_ckpt_file(const df11_ckpt *c);
uint64_t df11_ckpt_original_size(const df11_ckpt *c);
/* Writes a tensor's original bytes (t->end - t->begin of them) to dst; checks the CRC. */
err df11_ckpt_read(const df11_ckpt *c, const df11_tensor *t, void *dst);

/* One safetensors file -> DF11 file, written to a temporary name and renamed. */
err df11_compress_file(const char *in, const char *out, const df11_params *p,
                       const df11_progress *pr);
/* DF11 file -> the original file, byte for byte. */
err df11_decompress_file(const char *in, const char *out, const df11_progress *pr);
/* Checks every checksum and decodes every tensor of a DF11 file. */
err df11_verify_file(const char *path, const df11_progress *pr);

#endif
