/* df11_cuda: the CUDA decoder for df11 blobs (FORMAT.md "Segment decoding"). A plan describes
 * a batch of blobs already in device memory and where each one decodes to; running it is one
 * kernel launch on the caller's stream, with no host synchronisation and no allocation, so it
 * can be captured in a CUDA graph. Outputs must be 16-byte aligned. */
#ifndef DF11_CUDA_H
#define DF11_CUDA_H

#include <stdint.h>

#include "core/err.h"
#include "df11/df11.h"

struct CUstream_st;

typedef struct df11_cuda_item {
    const df11_blob *blob; /* host view, parsed from the same bytes (geometry and tables) */
    const void *d_blob;    /* device copy of the blob's bytes, 256-byte aligned */
    uint16_t *d_out;       /* blob->n BF16 values, 16-byte aligned */
} df11_cuda_item;

typedef struct df11_cuda_plan df11_cuda_plan;

/* 1 if a CUDA device is usable, else 0 (and err_msg says why). */
int df11_cuda_available(void);
/* Builds the decode tables and descriptors and uploads them (synchronous; call at load). */
err df11_cuda_plan_create(const df11_cuda_item *items, int n, df11_cuda_plan **out);
void df11_cuda_plan_free(df11_cuda_plan *p); /* accepts NULL */
/* Decodes every item of the plan: one launch on stream. */
err df11_cuda_decode(const df11_cuda_plan *p, struct CUstream_st *stream);
/* Total elements the plan decodes. */
uint64_t df11_cuda_plan_elems(const df11_cuda_plan *p);

#endif
