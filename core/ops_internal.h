/* ops_internal: the backends behind ops.h. ops.c checks shapes and dispatches; ops_cpu.c is
 * the reference; core/cuda/ holds the CUDA launchers (or their stand-in without nvcc). */
#ifndef CORE_OPS_INTERNAL_H
#define CORE_OPS_INTERNAL_H

#include "core/ops.h"

#define OPS_EACH(X)                                                                                \
    X(linear, (op_ctx * c, tensor out, tensor x, tensor w, const tensor *bias, op_act act))        \
    X(act_apply, (op_ctx * c, tensor out, tensor x, op_act act))                                   \
    X(gated_gelu, (op_ctx * c, tensor out, tensor a, tensor b))                                    \
    X(add, (op_ctx * c, tensor out, tensor a, tensor b))                                           \
    X(layernorm, (op_ctx * c, tensor out, tensor x, const tensor *w, const tensor *b, float eps))  \
    X(layernorm_modulate, (op_ctx * c, tensor out, tensor x, tensor shift, tensor scale, float eps)) \
    X(rmsnorm, (op_ctx * c, tensor out, tensor x, tensor w, float eps))                            \
    X(rmsnorm2, (op_ctx * c, tensor out, tensor x, tensor w, float eps))                           \
    X(rmsnorm_rope, (op_ctx * c, tensor x, tensor w, float eps, tensor cos, tensor sin))           \
    X(rmsnorm2_heads, (op_ctx * c, tensor x, tensor w, float eps))                                 \
    X(scale_shift, (op_ctx * c, tensor out, tensor x, float mul, float add))                       \
    X(euler_step, (op_ctx * c, tensor x, tensor v, float dt))                                      \
    X(guidance, (op_ctx * c, tensor out, tensor base, tensor pos, tensor neg, float g))                        \
    X(groupnorm, (op_ctx * c, tensor out, tensor x, tensor w, tensor b, int groups, float eps,     \
                  int silu))                                                                       \
    X(gate_residual, (op_ctx * c, tensor x, tensor gate, tensor y))                                \
    X(rope, (op_ctx * c, tensor x, tensor cos, tensor sin))                                        \
    X(softmax, (op_ctx * c, tensor out, tensor x))                                                 \
    X(attention, (op_ctx * c, tensor out, tensor q, tensor k, tensor v, const tensor *bias,       \
                  float scale, int causal))                                                        \
    X(conv2d, (op_ctx * c, tensor out, tensor x, tensor w, const tensor *bias, int s,              \
               const int pad[4]))                                                                  \
    X(upsample2x, (op_ctx * c, tensor out, tensor x))                                              \
    X(embedding, (op_ctx * c, tensor out, tensor table, const int32_t *ids))                       \
    X(timestep_embedding, (op_ctx * c, tensor out, const float *t, int flip, float shift,          \
                           float scale, float max_period))                                         \
    X(copy, (op_ctx * c, tensor dst, tensor src))                                                  \
    X(pack2x2, (op_ctx * c, tensor out, tensor x))                                                 \
    X(unpack2x2, (op_ctx * c, tensor out, tensor x))                                               \
    X(unpatchify, (op_ctx * c, tensor out, tensor x, int p))

#define OPS_DECLARE_CPU(name, args) void opcpu_##name args;
#define OPS_DECLARE_CUDA(name, args) void opcu_##name args;
OPS_EACH(OPS_DECLARE_CPU)
OPS_EACH(OPS_DECLARE_CUDA)

/* RMSNorm of every head of x [B,L,H,D] in place, through a backend's rmsnorm: one call over
 * [B L H, D] rows where the strides allow, else one per token (ops.c). */
void ops_rmsnorm_heads(op_ctx *c, tensor x, tensor w, float eps,
                       void (*rms)(op_ctx *, tensor, tensor, tensor, float));

/* The CUDA side of a context (core/cuda/context.cu). */
struct opcu_state;
err opcu_create(struct opcu_state **out);
void opcu_free(struct opcu_state *s);
void opcu_set_stream(struct opcu_state *s, struct CUstream_st *stream);
struct CUstream_st *opcu_stream(const struct opcu_state *s);
err opcu_sync(struct opcu_state *s);
/* op_mem_upload / op_mem_download on CUDA: the stream synchronized, then a blocking copy. */
err opcu_mem_upload(struct opcu_state *s, void *dst, const void *src, size_t bytes);
err opcu_mem_download(struct opcu_state *s, void *dst, const void *src, size_t bytes);
/* Per-op GPU times (core/cuda/profile.cu), when DF11_PROFILE_OPS is set: ops.c brackets each
 * op with begin and end, naming it (and its shape, for GEMMs and attention) and its FLOPs. */
int opcu_profiling(const struct opcu_state *s);
void opcu_prof_begin(op_ctx *c);
void opcu_prof_end(op_ctx *c, const char *name, double flops);

struct op_ctx {
    tensor_dev dev;
    struct opcu_state *cu;
    int prof; /* opcu_profiling(cu) */
};

#endif
