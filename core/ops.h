/* ops: the operations every model is built from (docs/MODEL-SPEC.md §7.1). Model code calls op_*
 * and never sees a backend: each op runs where its tensors live, on the CPU reference (fp32
 * activations, BF16/F16/F32 weights upcast; core/ops_cpu.c) or on the CUDA backend (BF16
 * activations, fp32 accumulation; core/cuda/). Shape mismatches are programmer errors (CHECK);
 * a CUDA error inside an op aborts (docs/ARCHITECTURE.md "Errors"). Unless an op says otherwise,
 * tensors are contiguous, "rows" means all dims but the last, and out may not alias an input. */
#ifndef CORE_OPS_H
#define CORE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

struct CUstream_st;

/* Where ops run: the CPU, or one CUDA device with its stream, cuBLASLt handle, workspace and
 * cuDNN handle. Ops on a CUDA context are asynchronous on its stream. */
typedef struct op_ctx op_ctx;

err op_ctx_create(tensor_dev dev, op_ctx **out); /* ERR_CUDA without a usable GPU */
void op_ctx_free(op_ctx *c);                     /* accepts NULL */
tensor_dev op_ctx_dev(const op_ctx *c);
/* The stream ops are enqueued on (the context's own one by default); borrowed. */
void op_ctx_set_stream(op_ctx *c, struct CUstream_st *s);
struct CUstream_st *op_ctx_stream(const op_ctx *c);
/* Waits for every op enqueued so far (no-op on the CPU). */
err op_ctx_sync(op_ctx *c);

/* Activation memory where the context runs: CUDA device memory, or zeroed host memory, both
 * 256-byte aligned. ERR_NOMEM (naming the size) when it cannot be had. */
err op_mem_alloc(op_ctx *c, size_t bytes, void **p);
void op_mem_free(op_ctx *c, void *p); /* accepts NULL */
/* Copies bytes from the host to memory on c's device (op_mem_alloc's, or a weight handed out
 * for c), and back: a memcpy on the CPU; on CUDA the copy follows the work enqueued on c's
 * stream so far (which it waits for) and is complete when the call returns. */
err op_mem_upload(op_ctx *c, void *dst, const void *src, size_t bytes);
err op_mem_download(op_ctx *c, void *dst, const void *src, size_t bytes);
/* Lays a model's activations out in one buffer, 256-byte aligned: a pass with base NULL counts
 * the bytes (off), a second pass over the allocation makes the views. */
typedef struct op_carver {
    uint8_t *base;
    size_t off;
    tensor_dev dev;
} op_carver;
tensor op_carve(op_carver *cv, dtype dt, int ndim, const int64_t *shape);

typedef enum op_act {
    OP_ACT_NONE = 0,
    OP_ACT_GELU_TANH,  /* 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) */
    OP_ACT_GELU_ERF,   /* 0.5x(1 + erf(x / sqrt 2)) */
    OP_ACT_SILU,       /* x sigmoid(x) */
    OP_ACT_QUICK_GELU, /* x sigmoid(1.702x) (CLIP-L) */
} op_act;

/* out[M,N] = act(x[M,K] w[N,K]^T + bias[N]); x's and out's rows may be strided (out's only
 * with OP_ACT_NONE or OP_ACT_GELU_TANH, which CUDA fuses); bias may be NULL. x [B,n,K] and
 * out [B,n,N] may also be batches whose rows do not collapse into one stride (slices of a
 * longer sequence), with OP_ACT_NONE or OP_ACT_GELU_TANH: one batched GEMM on CUDA. */
void op_linear(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, op_act act);
/* out = act(x), elementwise (out may be x). */
void op_act_apply(op_ctx *c, tensor out, tensor x, op_act act);
/* out = gelu_tanh(a) * b (T5's gated FFN); a, b may be strided rows (chunks of one GEMM). */
void op_gated_gelu(op_ctx *c, tensor out, tensor a, tensor b);
/* out = a + b, elementwise (out may be a or b). */
void op_add(op_ctx *c, tensor out, tensor a, tensor b);

/* LayerNorm over the last dim C: w, b [C] or NULL (no affine). */
void op_layernorm(op_ctx *c, tensor out, tensor x, const tensor *w, const tensor *b, float eps);
/* Adaptive LayerNorm: out = LN(x)(1 + scale) + shift, x [B,N,C]; shift and scale [B,C] with
 * strided rows (chunks of a modulation vector). On CUDA each of the three steps rounds to
 * BF16, as the eager reference does (docs/MODEL-SPEC.md §1.11). */
void op_layernorm_modulate(op_ctx *c, tensor out, tensor x, tensor shift, tensor scale, float eps);
/* RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * w; x's rows may be strided (q, k
 * heads inside a fused projection); out may be x. */
void op_rmsnorm(op_ctx *c, tensor out, tensor x, tensor w, float eps);
/* The same with two roundings, as transformers' T5LayerNorm and diffusers' RMSNorm (SD3 q/k)
 * compute it: x / sqrt(mean(x^2) + eps) is rounded to the activation type, then times w and
 * rounded again (docs/MODEL-SPEC.md §2.5, §4.2). Identical to op_rmsnorm on the CPU (fp32). */
void op_rmsnorm2(op_ctx *c, tensor out, tensor x, tensor w, float eps);
/* op_rmsnorm2 of every head of x [B,L,H,D] in place; tokens and batches may be strided (q and
 * k inside a fused projection of a joint sequence): SD3's q/k norms. */
void op_rmsnorm2_heads(op_ctx *c, tensor x, tensor w, float eps);
/* GroupNorm of x [B,C,H,W] in `groups` groups with affine w, b [C], then SiLU if silu. */
void op_groupnorm(op_ctx *c, tensor out, tensor x, tensor w, tensor b, int groups, float eps,
                  int silu);
/* x[B,N,C] += gate[B,C] * y[B,N,C]; gate's rows strided; y's rows may be strided. */
void op_gate_residual(op_ctx *c, tensor x, tensor gate, tensor y);

/* op_rmsnorm of every head of x [B,L,H,D] (tokens strided) with weight w [D], then op_rope
 * with cos, sin [L,D]: FLUX's q/k norm and rotation, in place, in one pass over x where the
 * shape allows; the same bits as the two ops. */
void op_rmsnorm_rope(op_ctx *c, tensor x, tensor w, float eps, tensor cos, tensor sin);
/* out = x * mul + add elementwise (out may be x); on CUDA the product and the sum each round
 * to BF16, as eager PyTorch does (latent scale and shift, docs/MODEL-SPEC.md §3.1). */
void op_scale_shift(op_ctx *c, tensor out, tensor x, float mul, float add);
/* The flow-matching Euler step in place, x += dt * v (docs/MODEL-SPEC.md §6.2): on CUDA dt is
 * rounded to BF16, the product to BF16, the sum is taken in fp32 and rounded to BF16; fp32 on the
 * CPU. */
void op_euler_step(op_ctx *c, tensor x, tensor v, float dt);

/* Guidance, out = base + g (pos - neg) (out may alias an input): classifier-free guidance is
 * (u, c, u), skip-layer guidance (v, c, skipped). On CUDA the difference, the product and the
 * sum each round to BF16 as the eager bf16 pipeline does (docs/MODEL-SPEC.md §6.4). */
void op_guidance(op_ctx *c, tensor out, tensor base, tensor pos, tensor neg, float g);

/* FLUX RoPE in place on x [B,L,H,D] (rows may be strided): adjacent pairs (2m, 2m+1) turned
 * by the angle whose cos and sin are cos[L,D], sin[L,D] (F32, each value twice). */
void op_rope(op_ctx *c, tensor x, tensor cos, tensor sin);
/* Row softmax over the last dim, in fp32 (out may be x). */
void op_softmax(op_ctx *c, tensor out, tensor x);
/* Scaled-dot-product attention: q [B,Lq,H,D], k and v [B,Lk,H,D], out [B,Lq,H,D]; q, k, v and
 * out may have strided tokens (chunks of a fused projection, or of a concatenation). bias [H,Lq,Lk]
 * F32 is added to the scores (T5) or NULL; causal masks key j > query i (CLIP). fp32 softmax. */
void op_attention(op_ctx *c, tensor out, tensor q, tensor k, tensor v, const tensor *bias,
                  float scale, int causal);

/* out [B,Co,Ho,Wo] = conv2d(x [B,Ci,H,W], w [Co,Ci,kh,kw]) + bias, pad = {top, bottom, left,
 * right} zeros, stride s. */
void op_conv2d(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, int s,
               const int pad[4]);
/* out [B,C,2H,2W] = nearest-neighbour upsampling of x [B,C,H,W]. */
void op_upsample2x(op_ctx *c, tensor out, tensor x);

/* out[i] = table[ids[i]] (rows of D); ids on the host, n = out's rows. */
void op_embedding(op_ctx *c, tensor out, tensor table, const int32_t *ids);
/* diffusers get_timestep_embedding: out [B,dim] from t[B] (host): half = dim/2, freq_k =
 * exp(-ln(max_period) k / (half - shift)), arg = scale t freq_k; sin then cos halves, or cos
 * then sin if flip. fp32, then stored in out's dtype. */
void op_timestep_embedding(op_ctx *c, tensor out, const float *t, int flip, float shift,
                           float scale, float max_period);

/* dst = src elementwise across shapes that match (either may be strided, dtypes may differ:
 * F32 <-> BF16 rounds to nearest even). Concat and split are copies into slices. */
void op_copy(op_ctx *c, tensor dst, tensor src);
/* FLUX latent packing: x [B,C,H,W] -> out [B,(H/2)(W/2),4C], feature index c*4 + 2dy + dx. */
void op_pack2x2(op_ctx *c, tensor out, tensor x);
/* The inverse of op_pack2x2: x [B,(H/2)(W/2),4C] -> out [B,C,H,W]. */
void op_unpack2x2(op_ctx *c, tensor out, tensor x);
/* SD3 unpatchify: x [B,h w,p p C] (feature index (dy p + dx) C + c) -> out [B,C,h p,w p]. */
void op_unpatchify(op_ctx *c, tensor out, tensor x, int p);

#endif
