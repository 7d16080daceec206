/* safetensors: reader (mmap, header validated against the file size, every dtype) and writer,
 * plus sharded checkpoints through *.safetensors.index.json. Spec: huggingface/safetensors
 * README ("Format"). The reader keeps the header bytes verbatim so a file can be rebuilt byte
 * for byte; tensors are listed in header (JSON key) order. */
#ifndef CORE_SAFETENSORS_H
#define CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/err.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;           /* owned by the st_file */
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS]; /* PyTorch order */
    uint64_t numel;
    uint64_t begin, end;        /* byte offsets in the data section (data_offsets) */
    const uint8_t *data;        /* mmapped bytes, end - begin of them */
} st_tensor;

typedef struct st_file st_file;

/* Opens and validates a safetensors file (mmap). On failure the message names the path and,
 * where relevant, the tensor, what was expected and what was found. */
err st_open(const char *path, st_file **out);
/* Opens a safetensors file already in memory (not copied; must outlive the st_file). */
err st_open_memory(const void *bytes, size_t len, const char *label, st_file **out);
void st_close(st_file *f); /* accepts NULL */

int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);
const st_tensor *st_find(const st_file *f, const char *name); /* NULL if absent */
/* A __metadata__ string value, or NULL. */
const char *st_meta(const st_file *f, const char *key);
int st_meta_count(const st_file *f);
void st_meta_at(const st_file *f, int i, const char **key, const char **value);
/* The header JSON bytes exactly as in the file (after the 8-byte length, padding included). */
const char *st_header(const st_file *f, size_t *len);
/* The whole mapped file and its size; the data section starts at 8 + header length. */
const uint8_t *st_bytes(const st_file *f, size_t *len);
const char *st_path(const st_file *f);

/* Writer: add tensors (data borrowed until st_writer_finish), then finish writes
 * "<path>.tmp.<pid>" and renames it to path. Tensors are written back to back in the order
 * added (safetensors allows no holes): callers that need aligned tensors pass sizes that are
 * multiples of the alignment. */
typedef struct st_writer st_writer;

err st_writer_create(st_writer **out);
void st_writer_free(st_writer *w); /* accepts NULL */
err st_writer_meta(st_writer *w, const char *key, const char *value);
err st_writer_add(st_writer *w, const char *name, dtype t, int ndim, const int64_t *shape,
                  const void *data, uint64_t nbytes);
/* Writes header + data; the data section starts at a multiple of header_align (>= 8, a power
 * of two) by padding the header with spaces, as the reference writer does for 8. */
err st_writer_finish(st_writer *w, const char *path, uint64_t header_align);

/* Sharded checkpoints: "model.safetensors.index.json" = {"metadata":..., "weight_map":
 * {tensor: shard file}}. */
typedef struct st_index st_index;

err st_index_open(const char *index_path, st_index **out);
void st_index_close(st_index *x); /* accepts NULL */
int st_index_shard_count(const st_index *x);
const char *st_index_shard_path(const st_index *x, int i); /* full path */
/* The shard file for a tensor (opened lazily), and the tensor; ERR_FORMAT if absent. */
err st_index_find(st_index *x, const char *name, const st_file **file, const st_tensor **t);

#endif
