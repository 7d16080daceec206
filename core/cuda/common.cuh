/* common.cuh: what every CUDA op file of core/cuda/ shares: the context's CUDA state, the
 * checks that abort on a CUDA error inside an op (docs/ARCHITECTURE.md "Errors": a sticky error
 * leaves nothing to recover), BF16 conversions, the activations and deterministic reductions.
 * Internal to core/cuda/. */
#ifndef CORE_CUDA_COMMON_CUH
#define CORE_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>

extern "C" {
#include "core/ops_internal.h"
}

typedef __nv_bfloat16 bf16;

struct gemm_cache; /* gemm.cu: one cuBLASLt algorithm per GEMM shape, chosen once */
struct sdpa_cache; /* attention_cudnn.cu: one cuDNN SDPA plan per attention shape */
struct conv_cache; /* conv.cu: descriptors and algorithm per convolution shape, chosen once */

struct opcu_state {
    int device, sms;
    cudaStream_t own, stream; /* the context's stream, and the one ops go to (own by default) */
    cublasLtHandle_t lt;
    void *ws; /* cuBLASLt workspace */
    size_t ws_bytes;
    cudnnHandle_t dnn;
    void *scratch; /* opcu_scratch(): cuDNN workspace, padded convolution inputs */
    size_t scratch_bytes;
    struct gemm_cache *gemm;
    struct sdpa_cache *sdpa;
    struct conv_cache *conv;
    int attn_cudnn; /* unmasked attention through cuDNN where it can (DF11_ATTENTION != own) */
    struct opcu_prof *prof; /* per-op times (profile.cu), with DF11_PROFILE_OPS; else NULL */
};

/* Aborts with file:line and the CUDA message. */
[[noreturn]] void opcu_die(const char *file, int line, const char *what, const char *msg);
/* After a launch: aborts on a launch error (and, with DF11_CUDA_SYNC_DEBUG, on an error the
 * kernel itself raised). */
void opcu_launched(op_ctx *c, const char *file, int line);

#define CU_OK(call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) opcu_die(__FILE__, __LINE__, #call, cudaGetErrorString(e_));        \
    } while (0)
#define CU_LAUNCHED(c) opcu_launched((c), __FILE__, __LINE__)

/* attention_cudnn.cu: 1 if cuDNN ran the unmasked attention, 0 if the caller must */
int opcu_attention_cudnn(op_ctx *c, tensor out, tensor q, tensor k, tensor v, float scale);

static inline cudaStream_t opcu_st(const op_ctx *c) { return c->cu->stream; }
/* Device memory of at least `bytes`, valid until the next opcu_scratch call. Grows (with a
 * stream sync) only when a larger request than any before comes, so a model's first step
 * sizes it and later steps never allocate. */
void *opcu_scratch(op_ctx *c, size_t bytes);

/* Blocks for a grid-stride loop over n items: enough to fill the GPU, no more. */
static inline unsigned opcu_blocks(const op_ctx *c, int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads, cap = (int64_t)c->cu->sms * 16;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

static inline const bf16 *cbf(const tensor &t) { return (const bf16 *)t.data; }
static inline bf16 *mbf(const tensor &t) { return (bf16 *)t.data; }

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }
/* rounds through BF16 (a rounding point of the eager bf16 reference, docs/MODEL-SPEC.md §1.11) */
__device__ __forceinline__ float rbf(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

/* The activations of ops.h in fp32, with CUDA's precise functions (docs/MODEL-SPEC.md §1.4). */
__device__ __forceinline__ float act_eval(float x, op_act a) {
    switch (a) {
    case OP_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case OP_ACT_GELU_ERF: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case OP_ACT_SILU: return x / (1.0f + expf(-x));
    case OP_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    default: return x;
    }
}

/* VW consecutive BF16 values as floats and back: with VW == 8 one 16-byte access (p 16-byte
 * aligned: opcu_al16), else one value at a time. Conversions are exact one way and round to
 * nearest even the other, value by value, as bf2f and f2bf. */
template <int VW> __device__ __forceinline__ void ldv(const bf16 *p, float *v) {
    if constexpr (VW == 8) {
        const uint4 u = *(const uint4 *)p;
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float2 f = __bfloat1622float2(h[k]);
            v[2 * k] = f.x, v[2 * k + 1] = f.y;
        }
    } else {
#pragma unroll
        for (int k = 0; k < VW; k++)
            v[k] = bf2f(p[k]);
    }
}
template <int VW> __device__ __forceinline__ void stv(bf16 *p, const float *v) {
    if constexpr (VW == 8) {
        uint4 u;
        __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
        for (int k = 0; k < 4; k++)
            h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        *(uint4 *)p = u;
    } else {
#pragma unroll
        for (int k = 0; k < VW; k++)
            p[k] = f2bf(v[k]);
    }
}
/* Whether p may take 16-byte accesses (NULL may: it is never read). */
static inline bool opcu_al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order, so the
 * same inputs give the same bits; every thread gets the result. sh: 32 floats of shared
 * memory. */
__device__ __forceinline__ float block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

#endif
