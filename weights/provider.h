/* provider: hands model code a transformer block's weights as BF16 device tensors, whatever
 * they are stored as (docs/ARCHITECTURE.md "Weights"):
 *   WP_RESIDENT  every block's BF16 weights resident on the device (a DF11 source is decoded
 *                once, at creation);
 *   WP_DF11      every block's DF11 blobs resident; a block is decoded into one of two slots on
 *                the provider's own stream while the previous block computes;
 *   WP_STREAM    as WP_DF11, but only as many blobs stay on the device as a byte budget allows;
 *                the others wait in pinned host memory and are copied in ahead of their use on
 *                a third stream, overlapped with compute and decode.
 * All three hand out 256-byte aligned buffers and the ops choose their kernels by shape alone,
 * so a forward gives the same bits under every mode.
 *
 * Use: for each block i in order, wp_acquire(i) (the compute stream then waits until the
 * weights are there), enqueue its ops, wp_release(i). Blocks are expected in cyclic order
 * 0..n-1, 0..n-1, ... (a denoising loop); block i+1 (and, after the last, block 0) is
 * prepared while block i computes. WP_RESIDENT and WP_DF11 also allow any order. */
#ifndef WEIGHTS_PROVIDER_H
#define WEIGHTS_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

struct CUstream_st;

typedef enum wp_mode { WP_RESIDENT, WP_DF11, WP_STREAM } wp_mode;

/* One weight of one block as loaded (host memory, e.g. an mmap; borrowed until wp_free). */
typedef struct wp_src {
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    const uint16_t *bf16; /* its BF16 values, or NULL when only the blob is given */
    const void *blob;     /* its DF11 blob (df11.h), or NULL; WP_DF11 and WP_STREAM need it */
    size_t blob_len;
} wp_src;

typedef struct wp_block {
    int n;
    const wp_src *w;
} wp_block;

typedef struct wp_config {
    wp_mode mode;
    /* WP_STREAM: device bytes the weights may take, slots and staging included */
    size_t budget;
} wp_config;

typedef struct weight_provider weight_provider;

/* Uploads (and for WP_RESIDENT from DF11, decodes) at once; synchronous. Fails with
 * ERR_NOMEM when the device or the budget cannot hold the minimum (WP_STREAM: two slots, two
 * staging buffers). compute is the stream the model's ops run on. */
err wp_create(const wp_config *cfg, const wp_block *blocks, int n_blocks,
              struct CUstream_st *compute, weight_provider **out);
void wp_free(weight_provider *p); /* accepts NULL; waits for the provider's work */
/* Block i's weights, in the order given at creation, as BF16 device tensors; the compute
 * stream waits for them. Valid until wp_release(p, i). Returns 1 when they are new in their
 * buffer (WP_RESIDENT: the block's first acquire; the DF11 modes: a decode not handed out
 * before), 0 when the buffer was handed out before (and may have been changed in place). */
int wp_acquire(weight_provider *p, int i, tensor *w);
/* The compute stream's work on block i is enqueued; its slot may be reused after it. */
void wp_release(weight_provider *p, int i);
/* Device bytes the provider holds, and how many blocks it streams from the host. */
size_t wp_device_bytes(const weight_provider *p);
int wp_streamed_blocks(const weight_provider *p);

#endif
