/* tensor.c: view construction and shape queries (tensor.h). */
#include "core/tensor.h"

#include <string.h>

#include "core/err.h"

tensor tensor_make(void *data, dtype dt, tensor_dev dev, int ndim, const int64_t *shape) {
    CHECK(ndim >= 1 && ndim <= TENSOR_MAX_DIMS);
    tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dt = dt;
    t.dev = dev;
    t.ndim = ndim;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        CHECK(shape[i] >= 0);
        t.shape[i] = shape[i];
        t.stride[i] = s;
        s *= shape[i];
    }
    return t;
}

tensor tensor_2d(void *data, dtype dt, tensor_dev dev, int64_t d0, int64_t d1) {
    return tensor_make(data, dt, dev, 2, (int64_t[]){d0, d1});
}
tensor tensor_3d(void *data, dtype dt, tensor_dev dev, int64_t d0, int64_t d1, int64_t d2) {
    return tensor_make(data, dt, dev, 3, (int64_t[]){d0, d1, d2});
}
tensor tensor_4d(void *data, dtype dt, tensor_dev dev, int64_t d0, int64_t d1, int64_t d2,
                 int64_t d3) {
    return tensor_make(data, dt, dev, 4, (int64_t[]){d0, d1, d2, d3});
}

tensor tensor_slice(tensor t, int dim, int64_t start, int64_t len) {
    CHECK(dim >= 0 && dim < t.ndim && start >= 0 && len >= 0 && start + len <= t.shape[dim]);
    t.data = (char *)t.data + (size_t)(start * t.stride[dim]) * (size_t)(dtype_bits(t.dt) / 8);
    t.shape[dim] = len;
    return t;
}

tensor tensor_reshape(tensor t, int ndim, const int64_t *shape) {
    CHECK(tensor_is_contiguous(&t));
    tensor r = tensor_make(t.data, t.dt, t.dev, ndim, shape);
    CHECK(tensor_numel(&r) == tensor_numel(&t));
    return r;
}

tensor tensor_transpose(tensor t, int a, int b) {
    CHECK(a >= 0 && a < t.ndim && b >= 0 && b < t.ndim);
    int64_t s = t.shape[a], st = t.stride[a];
    t.shape[a] = t.shape[b];
    t.stride[a] = t.stride[b];
    t.shape[b] = s;
    t.stride[b] = st;
    return t;
}

int64_t tensor_numel(const tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

uint64_t tensor_nbytes(const tensor *t) {
    return dtype_nbytes(t->dt, (uint64_t)tensor_numel(t));
}

int tensor_inner_contiguous(const tensor *t, int inner) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= t->ndim - inner && i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

int tensor_is_contiguous(const tensor *t) { return tensor_inner_contiguous(t, t->ndim); }

int64_t tensor_rows(const tensor *t, int64_t *row_stride) {
    const int last = t->ndim - 1;
    CHECK(t->stride[last] == 1 || t->shape[last] == 1);
    int64_t rows = 1, stride = t->shape[last];
    int have = 0;
    /* the outer dims must collapse: stride[i] == stride[i+1] * shape[i+1] (from the inside) */
    for (int i = last - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (!have) {
            stride = t->stride[i];
            have = 1;
        } else {
            int64_t expect = stride * (rows);
            CHECK(t->stride[i] == expect);
        }
        rows *= t->shape[i];
    }
    if (row_stride) *row_stride = stride;
    return rows;
}
