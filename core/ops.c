/* ops.c: the op context and its memory, the shape checks every backend relies on, and the
 * dispatch to the CPU reference (ops_cpu.c) or the CUDA launchers (core/cuda/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/ops_internal.h"

err op_ctx_create(tensor_dev dev, op_ctx **out) {
    *out = NULL;
    op_ctx *c = calloc(1, sizeof *c);
    FAIL_IF(!c, ERR_NOMEM, "out of memory");
    c->dev = dev;
    if (dev == TENSOR_CUDA) {
        err e = opcu_create(&c->cu);
        if (e) {
            free(c);
            return e;
        }
        c->prof = opcu_profiling(c->cu);
    }
    *out = c;
    return ERR_OK;
}

void op_ctx_free(op_ctx *c) {
    if (!c) return;
    if (c->cu) opcu_free(c->cu);
    free(c);
}

tensor_dev op_ctx_dev(const op_ctx *c) { return c->dev; }

void op_ctx_set_stream(op_ctx *c, struct CUstream_st *s) {
    if (c->cu) opcu_set_stream(c->cu, s);
}

struct CUstream_st *op_ctx_stream(const op_ctx *c) {
    return c->cu ? opcu_stream(c->cu) : NULL;
}

err op_mem_alloc(op_ctx *c, size_t bytes, void **p) {
    *p = NULL;
    if (c->dev == TENSOR_CUDA) return gpu_alloc(p, bytes);
    const size_t n = (bytes + 255) / 256 * 256;
    *p = aligned_alloc(256, n ? n : 256);
    FAIL_IF(!*p, ERR_NOMEM, "out of host memory allocating %zu bytes", bytes);
    memset(*p, 0, n);
    return ERR_OK;
}

void op_mem_free(op_ctx *c, void *p) {
    if (c->dev == TENSOR_CUDA)
        gpu_free(p);
    else
        free(p);
}

err op_mem_upload(op_ctx *c, void *dst, const void *src, size_t bytes) {
    if (c->dev == TENSOR_CUDA) return opcu_mem_upload(c->cu, dst, src, bytes);
    memcpy(dst, src, bytes);
    return ERR_OK;
}

err op_mem_download(op_ctx *c, void *dst, const void *src, size_t bytes) {
    if (c->dev == TENSOR_CUDA) return opcu_mem_download(c->cu, dst, src, bytes);
    memcpy(dst, src, bytes);
    return ERR_OK;
}

tensor op_carve(op_carver *cv, dtype dt, int ndim, const int64_t *shape) {
    tensor t = tensor_make(cv->base ? cv->base + cv->off : NULL, dt, cv->dev, ndim, shape);
    const size_t bytes = dtype_nbytes(dt, (uint64_t)tensor_numel(&t));
    cv->off += (bytes + 255) / 256 * 256;
    return t;
}

err op_ctx_sync(op_ctx *c) { return c->cu ? opcu_sync(c->cu) : ERR_OK; }

/* Every tensor of an op lives where the context runs; activations have the backend's type. */
static void on_dev(const op_ctx *c, const tensor *t) { CHECK(t->dev == c->dev); }
static void act_type(const op_ctx *c, const tensor *t) {
    on_dev(c, t);
    CHECK(t->dt == (c->dev == TENSOR_CPU ? DTYPE_F32 : DTYPE_BF16));
}
static void same_shape(const tensor *a, const tensor *b) {
    CHECK(a->ndim == b->ndim);
    for (int i = 0; i < a->ndim; i++)
        CHECK(a->shape[i] == b->shape[i]);
}
static int64_t last(const tensor *t) { return t->shape[t->ndim - 1]; }
static void weight(const op_ctx *c, const tensor *t) {
    on_dev(c, t);
    CHECK(tensor_is_contiguous(t));
    CHECK(t->dt == DTYPE_BF16 ||
          (c->dev == TENSOR_CPU && (t->dt == DTYPE_F32 || t->dt == DTYPE_F16)));
}
/* an elementwise operand: contiguous, the backend's activation type */
static void plain(const op_ctx *c, const tensor *t) {
    act_type(c, t);
    CHECK(tensor_is_contiguous(t));
}

/* KEY names the op in a profile (DF11_PROFILE_OPS), FLOPS its floating-point operations */
#define DISPATCH_AS(name, KEY, FLOPS, ...)                                                         \
    do {                                                                                           \
        if (c->dev == TENSOR_CPU) {                                                                \
            opcpu_##name(c, __VA_ARGS__);                                                          \
        } else if (!c->prof) {                                                                     \
            opcu_##name(c, __VA_ARGS__);                                                           \
        } else {                                                                                   \
            opcu_prof_begin(c);                                                                    \
            opcu_##name(c, __VA_ARGS__);                                                           \
            opcu_prof_end(c, KEY, FLOPS);                                                          \
        }                                                                                          \
    } while (0)
#define DISPATCH(name, ...) DISPATCH_AS(name, #name, 0.0, __VA_ARGS__)

/* t [B,n,X] whose batches' rows do not continue each other's stride: a batch of matrices */
static int batched(const tensor *t) {
    return t->ndim == 3 && t->shape[0] > 1 && t->shape[1] > 1 &&
           t->stride[0] != t->shape[1] * t->stride[1];
}

void op_linear(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, op_act act) {
    act_type(c, &x);
    act_type(c, &out);
    CHECK(tensor_is_contiguous(&out) || act == OP_ACT_NONE || act == OP_ACT_GELU_TANH);
    weight(c, &w);
    CHECK(w.ndim == 2 && last(&x) == w.shape[1] && last(&out) == w.shape[0]);
    const int nb = batched(&x) || batched(&out);
    if (nb) {
        CHECK(x.ndim == 3 && out.ndim == 3 && x.shape[0] == out.shape[0] &&
              x.shape[1] == out.shape[1]);
        CHECK(x.stride[2] == 1 && out.stride[2] == 1);
    } else {
        CHECK(tensor_rows(&x, NULL) == tensor_rows(&out, NULL));
    }
    if (bias) {
        weight(c, bias);
        CHECK(tensor_numel(bias) == w.shape[0]);
    }
    if (nb && c->dev == TENSOR_CPU) { /* the CPU reference takes the matrices one by one */
        for (int64_t b = 0; b < x.shape[0]; b++)
            op_linear(c, tensor_slice(out, 0, b, 1), tensor_slice(x, 0, b, 1), w, bias, act);
        return;
    }
    char key[80] = "linear";
    double flops = 0;
    if (c->prof) {
        const int64_t M = nb ? x.shape[0] * x.shape[1] : tensor_rows(&x, NULL);
        snprintf(key, sizeof key, "linear %lldx%lld->%lld%s%s", (long long)M,
                 (long long)w.shape[1], (long long)w.shape[0], act == OP_ACT_NONE ? "" : " +act",
                 nb ? " batched" : "");
        flops = 2.0 * (double)M * (double)w.shape[1] * (double)w.shape[0];
    }
    DISPATCH_AS(linear, key, flops, out, x, w, bias, act);
}

void op_act_apply(op_ctx *c, tensor out, tensor x, op_act act) {
    plain(c, &out);
    plain(c, &x);
    same_shape(&out, &x);
    DISPATCH(act_apply, out, x, act);
}

void op_gated_gelu(op_ctx *c, tensor out, tensor a, tensor b) {
    plain(c, &out);
    act_type(c, &a);
    act_type(c, &b);
    same_shape(&a, &b);
    CHECK(tensor_rows(&a, NULL) == tensor_rows(&out, NULL) && last(&a) == last(&out));
    DISPATCH(gated_gelu, out, a, b);
}

void op_add(op_ctx *c, tensor out, tensor a, tensor b) {
    plain(c, &out);
    plain(c, &a);
    plain(c, &b);
    same_shape(&out, &a);
    same_shape(&a, &b);
    DISPATCH(add, out, a, b);
}

void op_layernorm(op_ctx *c, tensor out, tensor x, const tensor *w, const tensor *b, float eps) {
    plain(c, &out);
    act_type(c, &x);
    CHECK(tensor_rows(&x, NULL) == tensor_rows(&out, NULL) && last(&x) == last(&out));
    if (w) {
        weight(c, w);
        CHECK(tensor_numel(w) == last(&x));
    }
    if (b) {
        weight(c, b);
        CHECK(tensor_numel(b) == last(&x));
    }
    DISPATCH(layernorm, out, x, w, b, eps);
}

/* a per-batch vector [B,C]: rows may be strided, elements contiguous */
static void batch_vec(const op_ctx *c, const tensor *v, int64_t B, int64_t C) {
    act_type(c, v);
    CHECK(v->ndim == 2 && v->shape[0] == B && v->shape[1] == C && v->stride[1] == 1);
}

void op_layernorm_modulate(op_ctx *c, tensor out, tensor x, tensor shift, tensor scale, float eps) {
    plain(c, &out);
    plain(c, &x);
    same_shape(&out, &x);
    CHECK(x.ndim == 3);
    batch_vec(c, &shift, x.shape[0], x.shape[2]);
    batch_vec(c, &scale, x.shape[0], x.shape[2]);
    DISPATCH(layernorm_modulate, out, x, shift, scale, eps);
}

/* RMSNorm's operands: rows of D (maybe strided), a weight of D */
static void rmsnorm_args(const op_ctx *c, tensor *out, tensor *x, const tensor *w) {
    act_type(c, out);
    act_type(c, x);
    same_shape(out, x);
    weight(c, w);
    CHECK(tensor_numel(w) == last(x));
    tensor_rows(out, NULL);
    tensor_rows(x, NULL);
}

void op_rmsnorm(op_ctx *c, tensor out, tensor x, tensor w, float eps) {
    rmsnorm_args(c, &out, &x, &w);
    DISPATCH(rmsnorm, out, x, w, eps);
}

void op_rmsnorm2(op_ctx *c, tensor out, tensor x, tensor w, float eps) {
    rmsnorm_args(c, &out, &x, &w);
    DISPATCH(rmsnorm2, out, x, w, eps);
}

void ops_rmsnorm_heads(op_ctx *c, tensor x, tensor w, float eps,
                       void (*rms)(op_ctx *, tensor, tensor, tensor, float)) {
    const int64_t B = x.shape[0], L = x.shape[1], H = x.shape[2], D = x.shape[3];
    if (x.stride[1] == H * x.stride[2] && x.stride[0] == L * x.stride[1]) {
        tensor r = {x.data, x.dt, x.dev, 2, {B * L * H, D}, {x.stride[2], 1}};
        rms(c, r, r, w, eps);
        return;
    }
    const int64_t es = dtype_bits(x.dt) / 8;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++) {
            char *p = (char *)x.data + (b * x.stride[0] + t * x.stride[1]) * es;
            tensor r = {p, x.dt, x.dev, 2, {H, D}, {x.stride[2], 1}};
            rms(c, r, r, w, eps);
        }
}

void op_rmsnorm_rope(op_ctx *c, tensor x, tensor w, float eps, tensor cos, tensor sin) {
    act_type(c, &x);
    CHECK(x.ndim == 4 && x.stride[3] == 1 && x.shape[3] % 2 == 0);
    weight(c, &w);
    CHECK(tensor_numel(&w) == x.shape[3]);
    on_dev(c, &cos);
    on_dev(c, &sin);
    CHECK(cos.dt == DTYPE_F32 && sin.dt == DTYPE_F32);
    CHECK(tensor_is_contiguous(&cos) && tensor_is_contiguous(&sin));
    CHECK(cos.ndim == 2 && cos.shape[0] == x.shape[1] && cos.shape[1] == x.shape[3]);
    same_shape(&cos, &sin);
    DISPATCH(rmsnorm_rope, x, w, eps, cos, sin);
}

void op_rmsnorm2_heads(op_ctx *c, tensor x, tensor w, float eps) {
    act_type(c, &x);
    CHECK(x.ndim == 4 && x.stride[3] == 1);
    weight(c, &w);
    CHECK(tensor_numel(&w) == x.shape[3]);
    DISPATCH(rmsnorm2_heads, x, w, eps);
}

void op_scale_shift(op_ctx *c, tensor out, tensor x, float mul, float add) {
    plain(c, &out);
    plain(c, &x);
    same_shape(&out, &x);
    DISPATCH(scale_shift, out, x, mul, add);
}

void op_guidance(op_ctx *c, tensor out, tensor base, tensor pos, tensor neg, float g) {
    plain(c, &out);
    plain(c, &base);
    plain(c, &pos);
    plain(c, &neg);
    same_shape(&out, &base);
    same_shape(&base, &pos);
    same_shape(&pos, &neg);
    DISPATCH(guidance, out, base, pos, neg, g);
}

void op_euler_step(op_ctx *c, tensor x, tensor v, float dt) {
    plain(c, &x);
    plain(c, &v);
    same_shape(&x, &v);
    DISPATCH(euler_step, x, v, dt);
}

void op_groupnorm(op_ctx *c, tensor out, tensor x, tensor w, tensor b, int groups, float eps,
                  int silu) {
    plain(c, &out);
    plain(c, &x);
    same_shape(&out, &x);
    CHECK(x.ndim == 4 && groups > 0 && x.shape[1] % groups == 0);
    weight(c, &w);
    weight(c, &b);
    CHECK(tensor_numel(&w) == x.shape[1] && tensor_numel(&b) == x.shape[1]);
    DISPATCH(groupnorm, out, x, w, b, groups, eps, silu);
}

void op_gate_residual(op_ctx *c, tensor x, tensor gate, tensor y) {
    plain(c, &x);
    act_type(c, &y);
    CHECK(x.ndim == 3 && y.ndim == 3);
    same_shape(&x, &y);
    tensor_rows(&y, NULL);
    batch_vec(c, &gate, x.shape[0], x.shape[2]);
    DISPATCH(gate_residual, x, gate, y);
}

void op_rope(op_ctx *c, tensor x, tensor cos, tensor sin) {
    act_type(c, &x);
    CHECK(x.ndim == 4 && x.stride[3] == 1 && x.shape[3] % 2 == 0);
    on_dev(c, &cos);
    on_dev(c, &sin);
    CHECK(cos.dt == DTYPE_F32 && sin.dt == DTYPE_F32);
    CHECK(tensor_is_contiguous(&cos) && tensor_is_contiguous(&sin));
    CHECK(cos.ndim == 2 && cos.shape[0] == x.shape[1] && cos.shape[1] == x.shape[3]);
    same_shape(&cos, &sin);
    DISPATCH(rope, x, cos, sin);
}

void op_softmax(op_ctx *c, tensor out, tensor x) {
    plain(c, &out);
    plain(c, &x);
    same_shape(&out, &x);
    DISPATCH(softmax, out, x);
}

void op_attention(op_ctx *c, tensor out, tensor q, tensor k, tensor v, const tensor *bias,
                  float scale, int causal) {
    act_type(c, &out);
    CHECK(tensor_inner_contiguous(&out, 2));
    act_type(c, &q);
    act_type(c, &k);
    act_type(c, &v);
    CHECK(q.ndim == 4 && k.ndim == 4 && v.ndim == 4);
    CHECK(tensor_inner_contiguous(&q, 2) && tensor_inner_contiguous(&k, 2) &&
          tensor_inner_contiguous(&v, 2));
    same_shape(&out, &q);
    same_shape(&k, &v);
    CHECK(k.shape[0] == q.shape[0] && k.shape[2] == q.shape[2] && k.shape[3] == q.shape[3]);
    if (bias) {
        on_dev(c, bias);
        CHECK(bias->dt == DTYPE_F32 && tensor_is_contiguous(bias) && bias->ndim == 3);
        CHECK(bias->shape[0] == q.shape[2] && bias->shape[1] == q.shape[1] &&
              bias->shape[2] == k.shape[1]);
    }
    char key[80] = "attention";
    double flops = 0;
    if (c->prof) {
        snprintf(key, sizeof key, "attention %lldx%lldx%lldx%lldx%lld%s%s", (long long)q.shape[0],
                 (long long)q.shape[2], (long long)q.shape[1], (long long)k.shape[1],
                 (long long)q.shape[3], bias ? " +bias" : "", causal ? " causal" : "");
        flops = 4.0 * (double)q.shape[0] * (double)q.shape[2] * (double)q.shape[1] *
                (double)k.shape[1] * (double)q.shape[3];
    }
    DISPATCH_AS(attention, key, flops, out, q, k, v, bias, scale, causal);
}

void op_conv2d(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, int s,
               const int pad[4]) {
    plain(c, &out);
    plain(c, &x);
    weight(c, &w);
    CHECK(x.ndim == 4 && w.ndim == 4 && out.ndim == 4 && s >= 1);
    CHECK(w.shape[1] == x.shape[1] && out.shape[1] == w.shape[0] && out.shape[0] == x.shape[0]);
    CHECK(out.shape[2] == (x.shape[2] + pad[0] + pad[1] - w.shape[2]) / s + 1);
    CHECK(out.shape[3] == (x.shape[3] + pad[2] + pad[3] - w.shape[3]) / s + 1);
    if (bias) {
        weight(c, bias);
        CHECK(tensor_numel(bias) == w.shape[0]);
    }
    DISPATCH(conv2d, out, x, w, bias, s, pad);
}

void op_upsample2x(op_ctx *c, tensor out, tensor x) {
    plain(c, &out);
    plain(c, &x);
    CHECK(x.ndim == 4 && out.ndim == 4 && out.shape[0] == x.shape[0] && out.shape[1] == x.shape[1]);
    CHECK(out.shape[2] == 2 * x.shape[2] && out.shape[3] == 2 * x.shape[3]);
    DISPATCH(upsample2x, out, x);
}

void op_embedding(op_ctx *c, tensor out, tensor table, const int32_t *ids) {
    plain(c, &out);
    weight(c, &table);
    CHECK(table.ndim == 2 && table.shape[1] == last(&out));
    int64_t rows = tensor_rows(&out, NULL);
    for (int64_t i = 0; i < rows; i++)
        CHECK(ids[i] >= 0 && ids[i] < table.shape[0]);
    DISPATCH(embedding, out, table, ids);
}

void op_timestep_embedding(op_ctx *c, tensor out, const float *t, int flip, float shift,
                           float scale, float max_period) {
    on_dev(c, &out);
    CHECK(out.ndim == 2 && tensor_is_contiguous(&out) && out.shape[1] >= 2);
    CHECK(out.dt == DTYPE_F32 || out.dt == DTYPE_BF16);
    DISPATCH(timestep_embedding, out, t, flip, shift, scale, max_period);
}

void op_copy(op_ctx *c, tensor dst, tensor src) {
    on_dev(c, &dst);
    on_dev(c, &src);
    same_shape(&dst, &src);
    DISPATCH(copy, dst, src);
}

/* an image [B,C,H,W] and its p x p patches as tokens [B,(H/p)(W/p),p p C] */
static void image_tokens(const op_ctx *c, const tensor *img, const tensor *tok, int p) {
    plain(c, img);
    plain(c, tok);
    CHECK(p >= 1 && img->ndim == 4 && tok->ndim == 3);
    CHECK(img->shape[2] % p == 0 && img->shape[3] % p == 0 && tok->shape[0] == img->shape[0]);
    CHECK(tok->shape[1] == img->shape[2] / p * (img->shape[3] / p) &&
          tok->shape[2] == (int64_t)p * p * img->shape[1]);
}

void op_pack2x2(op_ctx *c, tensor out, tensor x) {
    image_tokens(c, &x, &out, 2);
    DISPATCH(pack2x2, out, x);
}

void op_unpack2x2(op_ctx *c, tensor out, tensor x) {
    image_tokens(c, &out, &x, 2);
    DISPATCH(unpack2x2, out, x);
}

void op_unpatchify(op_ctx *c, tensor out, tensor x, int p) {
    image_tokens(c, &out, &x, p);
    DISPATCH(unpatchify, out, x, p);
}
