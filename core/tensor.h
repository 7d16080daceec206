/* tensor: a view of up to 4 dimensions over memory the tensor does not own, on the host or
 * on the CUDA device. Shapes are in PyTorch order; strides are in elements, so a slice, a
 * chunk of a fused projection or a per-batch row of a modulation vector is a view, not a copy.
 * Ops say which operands may be strided; the rest must be contiguous. */
#ifndef CORE_TENSOR_H
#define CORE_TENSOR_H

#include <stdint.h>

#include "core/dtype.h"

#define TENSOR_MAX_DIMS 4

typedef enum tensor_dev { TENSOR_CPU = 0, TENSOR_CUDA = 1 } tensor_dev;

typedef struct tensor {
    void *data;
    dtype dt;
    tensor_dev dev;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t stride[TENSOR_MAX_DIMS]; /* elements */
} tensor;

/* A contiguous view: tensor_make(p, DTYPE_BF16, TENSOR_CUDA, 3, (int64_t[]){B, N, C}). */
tensor tensor_make(void *data, dtype dt, tensor_dev dev, int ndim, const int64_t *shape);
tensor tensor_2d(void *data, dtype dt, tensor_dev dev, int64_t d0, int64_t d1);
tensor tensor_3d(void *data, dtype dt, tensor_dev dev, int64_t d0, int64_t d1, int64_t d2);
tensor tensor_4d(void *data, dtype dt, tensor_dev dev, int64_t d0, int64_t d1, int64_t d2,
                 int64_t d3);
/* Elements [start, start + len) along dim: the same memory, a narrower view. */
tensor tensor_slice(tensor t, int dim, int64_t start, int64_t len);
/* A contiguous tensor seen with another shape of the same element count. */
tensor tensor_reshape(tensor t, int ndim, const int64_t *shape);
/* The view with dims a and b exchanged (no data moves). */
tensor tensor_transpose(tensor t, int a, int b);

int64_t tensor_numel(const tensor *t);
uint64_t tensor_nbytes(const tensor *t); /* of a contiguous tensor */
int tensor_is_contiguous(const tensor *t);
/* Whether the last `inner` dims are contiguous (the outer ones may be strided). */
int tensor_inner_contiguous(const tensor *t, int inner);
/* Rows (all dims but the last) of a tensor whose last dim is contiguous and whose outer dims
 * collapse to one stride; CHECKs it. */
int64_t tensor_rows(const tensor *t, int64_t *row_stride);

#endif
