/* elementwise.cu: the elementwise and data-movement ops on BF16 activations (ops.h; the CPU
 * reference is ops_cpu.c): activations, T5's gated GELU, add, the gated residual, FLUX RoPE,
 * the timestep sinusoid, strided copies with dtype casts, nearest upsampling, the latent
 * (un)packing and the embedding gather. Math in fp32 from the BF16 inputs and one rounding to
 * BF16, except where the eager bf16 reference rounds in between (rbf(), docs/MODEL-SPEC.md §1.11).
 * Flat ops are grid-stride loops; ops over strided rows put a row's values on the grid's x and
 * the rows on y (and z), looping past the grid's limits, so no value needs an index division.
 * The activation ops are bound by DRAM bandwidth: a thread moves VW = 8 values with 16-byte
 * accesses where the pointers, row lengths and strides allow (checked at launch), else one at
 * a time (VW = 1, the fallback for odd shapes); the arithmetic per value is the same either
 * way. No reductions: every op is deterministic. */
#include <cuda_fp16.h>

#include "core/cuda/common.cuh"

#define ELEM_THREADS 256
#define GRID_YZ_MAX 65535 /* the limit of gridDim.y and gridDim.z */
#define TS_MAX_B 64       /* timesteps passed by value to the sinusoid kernel */

static unsigned grid_yz(int64_t n) { return (unsigned)(n < GRID_YZ_MAX ? n : GRID_YZ_MAX); }
/* Blocks of ELEM_THREADS that cover n values once. */
static unsigned cover(int64_t n) { return (unsigned)((n + ELEM_THREADS - 1) / ELEM_THREADS); }
/* Threads of each block on the grid's x for a row of n items: as few blocks of at most
 * ELEM_THREADS as cover it, evenly (a row of 384 groups of 8: 2 x 192, not 256 + 128). */
static int row_block(int64_t n) {
    const int64_t b = (n + ELEM_THREADS - 1) / ELEM_THREADS, t = ((n + b - 1) / b + 31) / 32 * 32;
    return (int)(t < 32 ? 32 : t);
}

/* The flat ops' groups: the last one may hold k < VW values, which go one at a time. */
template <int VW> static __device__ __forceinline__ void ldk(const bf16 *p, int k, float *v) {
    if (k == VW) {
        ldv<VW>(p, v);
    } else {
#pragma unroll
        for (int j = 0; j < VW; j++)
            v[j] = j < k ? bf2f(p[j]) : 0.0f;
    }
}
template <int VW> static __device__ __forceinline__ void stk(bf16 *p, int k, const float *v) {
    if (k == VW) {
        stv<VW>(p, v);
    } else {
#pragma unroll
        for (int j = 0; j < VW; j++)
            if (j < k) p[j] = f2bf(v[j]);
    }
}
/* n consecutive F32 values: two 16-byte loads for 8 (p 16-byte aligned), else one at a time. */
template <int N> static __device__ __forceinline__ void ldf(const float *p, float *v) {
    if constexpr (N == 8) {
        const float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z,
        v[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < N; k++)
            v[k] = p[k];
    }
}

/* The first value of a flat op's group of VW for this thread, and the grid's stride. */
#define FLAT_FIRST(VW) (((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * (VW))
#define FLAT_STRIDE(VW) ((int64_t)gridDim.x * blockDim.x * (VW))
#define FLAT_K(VW, n, i) ((n) - (i) < (VW) ? (int)((n) - (i)) : (VW))

/* Grid-stride over the n values, VW at a time. */
template <int VW> static __global__ void act_kernel(bf16 *out, const bf16 *x, int64_t n, op_act a) {
    for (int64_t i = FLAT_FIRST(VW); i < n; i += FLAT_STRIDE(VW)) {
        const int k = FLAT_K(VW, n, i);
        float v[VW];
        ldk<VW>(x + i, k, v);
#pragma unroll
        for (int j = 0; j < VW; j++)
            v[j] = act_eval(v[j], a);
        stk<VW>(out + i, k, v);
    }
}

/* x: groups of VW values of a row; y: rows r, r + gridDim.y, ... */
template <int VW>
static __global__ void gated_gelu_kernel(bf16 *out, const bf16 *a, int64_t as, const bf16 *b,
                                         int64_t bs, int64_t rows, int64_t D) {
    const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VW;
    if (i >= D) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float g[VW], u[VW];
        ldv<VW>(a + r * as + i, g);
        ldv<VW>(b + r * bs + i, u);
        /* the activation's output is a bf16 tensor before the product */
#pragma unroll
        for (int k = 0; k < VW; k++)
            g[k] = rbf(act_eval(g[k], OP_ACT_GELU_TANH)) * u[k];
        stv<VW>(out + r * D + i, g);
    }
}

/* Grid-stride over the n values, VW at a time. */
template <int VW>
static __global__ void add_kernel(bf16 *out, const bf16 *a, const bf16 *b, int64_t n) {
    for (int64_t i = FLAT_FIRST(VW); i < n; i += FLAT_STRIDE(VW)) {
        const int k = FLAT_K(VW, n, i);
        float u[VW], v[VW];
        ldk<VW>(a + i, k, u);
        ldk<VW>(b + i, k, v);
#pragma unroll
        for (int j = 0; j < VW; j++)
            u[j] = u[j] + v[j];
        stk<VW>(out + i, k, u);
    }
}

/* Grid-stride over the n values, VW at a time: bf16(bf16(x mul) + add), two eager ops. */
template <int VW>
static __global__ void scale_shift_kernel(bf16 *out, const bf16 *x, int64_t n, float mul,
                                          float add) {
    for (int64_t i = FLAT_FIRST(VW); i < n; i += FLAT_STRIDE(VW)) {
        const int k = FLAT_K(VW, n, i);
        float v[VW];
        ldk<VW>(x + i, k, v);
#pragma unroll
        for (int j = 0; j < VW; j++)
            v[j] = rbf(v[j] * mul) + add;
        stk<VW>(out + i, k, v);
    }
}

/* Grid-stride over the n values, VW at a time: the scheduler's x + dt v with dt already rounded
 * to BF16; the product is a bf16 tensor, the sum is taken in fp32 and rounded (docs/MODEL-SPEC.md
 * §6.2). */
template <int VW>
static __global__ void euler_step_kernel(bf16 *x, const bf16 *v, int64_t n, float dt) {
    for (int64_t i = FLAT_FIRST(VW); i < n; i += FLAT_STRIDE(VW)) {
        const int k = FLAT_K(VW, n, i);
        float u[VW], w[VW];
        ldk<VW>(x + i, k, u);
        ldk<VW>(v + i, k, w);
#pragma unroll
        for (int j = 0; j < VW; j++)
            u[j] = u[j] + rbf(dt * w[j]);
        stk<VW>(x + i, k, u);
    }
}

/* guidance, three eager bf16 ops: the difference, the scaled difference and the sum each round
 * to BF16 (docs/MODEL-SPEC.md §6.4); the scale is a float32 scalar */
template <int VW>
static __global__ void guidance_kernel(bf16 *out, const bf16 *base, const bf16 *pos,
                                       const bf16 *neg, int64_t n, float g) {
    for (int64_t i = FLAT_FIRST(VW); i < n; i += FLAT_STRIDE(VW)) {
        const int k = FLAT_K(VW, n, i);
        float a[VW], p[VW], q[VW];
        ldk<VW>(base + i, k, a);
        ldk<VW>(pos + i, k, p);
        ldk<VW>(neg + i, k, q);
#pragma unroll
        for (int j = 0; j < VW; j++)
            a[j] = a[j] + rbf(g * rbf(p[j] - q[j]));
        stk<VW>(out + i, k, a);
    }
}

/* x: groups of VW of a row's C values; y: tokens; z: batches (the gate's row). */
template <int VW>
static __global__ void gate_residual_kernel(bf16 *x, const bf16 *gate, int64_t gs, const bf16 *y,
                                            int64_t ys, int64_t B, int64_t N, int64_t C) {
    const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VW;
    if (i >= C) return;
    for (int64_t bi = blockIdx.z; bi < B; bi += gridDim.z) {
        float g[VW];
        ldv<VW>(gate + bi * gs + i, g);
        for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
            const int64_t r = bi * N + n;
            float u[VW], v[VW];
            ldv<VW>(x + r * C + i, u);
            ldv<VW>(y + r * ys + i, v);
            /* the product is a bf16 tensor before the sum */
#pragma unroll
            for (int k = 0; k < VW; k++)
                u[k] = u[k] + rbf(g[k] * v[k]);
            stv<VW>(x + r * C + i, u);
        }
    }
}

/* x: groups of PW adjacent pairs of a token's heads, H D / (2 PW) of them; y: tokens; z:
 * batches. */
template <int PW>
static __global__ void rope_kernel(bf16 *x, int64_t s0, int64_t s1, int64_t s2, const float *cs,
                                   const float *sn, int64_t B, int64_t L, int H, int D) {
    const int gph = D / (2 * PW), p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= H * gph) return;
    const int h = p / gph, m = 2 * PW * (p - h * gph);
    for (int64_t bi = blockIdx.z; bi < B; bi += gridDim.z)
        for (int64_t l = blockIdx.y; l < L; l += gridDim.y) {
            bf16 *v = x + bi * s0 + l * s1 + h * s2 + m;
            float u[2 * PW], c[2 * PW], s[2 * PW];
            ldv<2 * PW>(v, u);
            ldf<2 * PW>(cs + l * D + m, c); /* the tables hold each value twice: the even ones */
            ldf<2 * PW>(sn + l * D + m, s);
#pragma unroll
            for (int k = 0; k < 2 * PW; k += 2) {
                const float a = u[k], b = u[k + 1];
                /* torch's x cos + rotate(x) sin: each product rounded, then the sum (no FMA) */
                u[k] = __fsub_rn(__fmul_rn(a, c[k]), __fmul_rn(b, s[k]));
                u[k + 1] = __fadd_rn(__fmul_rn(b, c[k]), __fmul_rn(a, s[k]));
            }
            stv<2 * PW>(v, u);
        }
}

struct ts_args {
    float t[TS_MAX_B];
};

/* One block per timestep; threads over the frequencies k < dim/2. */
static __global__ void timestep_embedding_kernel(void *out, int is_bf16, int dim, int flip,
                                                 float shift, float scale, float lmp, ts_args ta) {
    const int half = dim / 2, bi = blockIdx.x;
    float *of = (float *)out + (int64_t)bi * dim;
    bf16 *ob = (bf16 *)out + (int64_t)bi * dim;
    for (int k = threadIdx.x; k < half; k += blockDim.x) {
        /* the fp32 evaluation order of diffusers get_timestep_embedding */
        const float e = expf(lmp * (float)k / ((float)half - shift));
        const float a = scale * (ta.t[bi] * e);
        const int is = flip ? half + k : k, ic = flip ? k : half + k;
        if (is_bf16) {
            ob[is] = f2bf(sinf(a));
            ob[ic] = f2bf(cosf(a));
        } else {
            of[is] = sinf(a);
            of[ic] = cosf(a);
        }
    }
    if (dim % 2 && threadIdx.x == 0) {
        if (is_bf16)
            ob[dim - 1] = f2bf(0.0f);
        else
            of[dim - 1] = 0.0f;
    }
}

/* A view of op_copy padded to 4-D (leading dims of size 1, stride 0). */
struct copy_view {
    void *p;
    dtype dt;
    int64_t shape[TENSOR_MAX_DIMS], stride[TENSOR_MAX_DIMS];
};

static int copy_dtype(dtype dt) { return dt == DTYPE_F32 || dt == DTYPE_BF16 || dt == DTYPE_F16; }

static copy_view copy_view_of(const tensor &t) {
    copy_view v;
    const int pad = TENSOR_MAX_DIMS - t.ndim;
    v.p = t.data;
    v.dt = t.dt;
    for (int d = 0; d < TENSOR_MAX_DIMS; d++) {
        v.shape[d] = d < pad ? 1 : t.shape[d - pad];
        v.stride[d] = d < pad ? 0 : t.stride[d - pad];
    }
    return v;
}

static __device__ __forceinline__ float load_any(const void *p, dtype dt, int64_t o) {
    switch (dt) {
    case DTYPE_F32: return ((const float *)p)[o];
    case DTYPE_BF16: return bf2f(((const bf16 *)p)[o]);
    default: return __half2float(((const __half *)p)[o]);
    }
}

static __device__ __forceinline__ void store_any(void *p, dtype dt, int64_t o, float v) {
    switch (dt) {
    case DTYPE_F32: ((float *)p)[o] = v; break;
    case DTYPE_BF16: ((bf16 *)p)[o] = __float2bfloat16_rn(v); break;
    default: ((__half *)p)[o] = __float2half_rn(v); break;
    }
}

/* Grid-stride over the n values in dst's row-major order, each index decoded into both views'
 * offsets (in 32 bits when n allows: 64-bit division is several times slower). */
static __global__ void copy_kernel(copy_view d, copy_view s, int64_t n) {
    const int small = n <= (int64_t)UINT32_MAX;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t od = 0, os = 0, idx[TENSOR_MAX_DIMS];
        if (small) {
            uint32_t rem = (uint32_t)e;
#pragma unroll
            for (int k = TENSOR_MAX_DIMS - 1; k > 0; k--) {
                const uint32_t sk = (uint32_t)d.shape[k];
                idx[k] = rem % sk;
                rem /= sk;
            }
            idx[0] = rem;
        } else {
            int64_t rem = e;
#pragma unroll
            for (int k = TENSOR_MAX_DIMS - 1; k > 0; k--) {
                idx[k] = rem % d.shape[k];
                rem /= d.shape[k];
            }
            idx[0] = rem;
        }
#pragma unroll
        for (int k = 0; k < TENSOR_MAX_DIMS; k++) {
            od += idx[k] * d.stride[k];
            os += idx[k] * s.stride[k];
        }
        store_any(d.p, d.dt, od, load_any(s.p, s.dt, os));
    }
}

/* x: VW input columns a thread (each written twice, on two output rows); y: input rows. */
template <int VW>
static __global__ void upsample2x_kernel(bf16 *out, const bf16 *x, int64_t rows, int64_t W) {
    const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VW;
    if (i >= W) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        alignas(16) bf16 v[VW], d[2 * VW];
        if constexpr (VW == 8)
            *(uint4 *)v = *(const uint4 *)(x + r * W + i);
        else
            v[0] = x[r * W + i];
#pragma unroll
        for (int k = 0; k < VW; k++)
            d[2 * k] = d[2 * k + 1] = v[k];
        bf16 *o = out + 2 * r * 2 * W + 2 * i; /* row 2r of the 2W wide output */
#pragma unroll
        for (int k = 0; k < 2 * VW; k += VW) {
            if constexpr (VW == 8) {
                *(uint4 *)(o + k) = *(const uint4 *)(d + k);
                *(uint4 *)(o + 2 * W + k) = *(const uint4 *)(d + k);
            } else {
                o[k] = o[2 * W + k] = d[k];
                o[k + 1] = o[2 * W + k + 1] = d[k + 1];
            }
        }
    }
}

/* x: image columns; y: image rows; z: channel planes b C + c. Moves between an image
 * [B,C,H,W] and its p x p patches as tokens [B,(H/p)(W/p),p p C]; the feature of (c, dy, dx)
 * is (c p + dy) p + dx when channels_first (FLUX packing), else (dy p + dx) C + c (SD3). */
static __global__ void patch_move_kernel(bf16 *img, bf16 *tok, int64_t B, int64_t C, int64_t H,
                                         int64_t W, int p, int channels_first, int to_tokens) {
    const int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= W) return;
    const int64_t w = W / p, n_tok = (H / p) * w, F = (int64_t)p * p * C, dx = x % p;
    for (int64_t pl = blockIdx.z; pl < B * C; pl += gridDim.z) {
        const int64_t bi = pl / C, ch = pl % C;
        for (int64_t y = blockIdx.y; y < H; y += gridDim.y) {
            const int64_t dy = y % p, t = (y / p) * w + x / p;
            const int64_t f = channels_first ? (ch * p + dy) * p + dx : (dy * p + dx) * C + ch;
            bf16 *a = img + (pl * H + y) * W + x, *b = tok + (bi * n_tok + t) * F + f;
            if (to_tokens)
                *b = *a;
            else
                *a = *b;
        }
    }
}

/* img is the [B,C,H,W] side, tok the token side; to_tokens says which way. */
static void patch_move(op_ctx *c, bf16 *img, bf16 *tok, const tensor &im, int p, int channels_first,
                       int to_tokens) {
    const int64_t B = im.shape[0], C = im.shape[1], H = im.shape[2], W = im.shape[3];
    if (B * C * H * W == 0) return;
    const dim3 grid(cover(W), grid_yz(H), grid_yz(B * C));
    patch_move_kernel<<<grid, ELEM_THREADS, 0, opcu_st(c)>>>(img, tok, B, C, H, W, p,
                                                             channels_first, to_tokens);
    CU_LAUNCHED(c);
}

extern "C" {

void opcu_act_apply(op_ctx *c, tensor out, tensor x, op_act a) {
    const int64_t n = tensor_numel(&x);
    if (n == 0) return;
    if (opcu_al16(out.data) && opcu_al16(x.data))
        act_kernel<8><<<opcu_blocks(c, (n + 7) / 8, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(x), n, a);
    else
        act_kernel<1><<<opcu_blocks(c, n, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(x), n, a);
    CU_LAUNCHED(c);
}

/* transformers T5DenseGatedActDense: gelu_new(wi_0 x) * (wi_1 x) */
void opcu_gated_gelu(op_ctx *c, tensor out, tensor a, tensor b) {
    int64_t as, bs;
    const int64_t rows = tensor_rows(&a, &as), D = a.shape[a.ndim - 1];
    tensor_rows(&b, &bs);
    if (rows == 0 || D == 0) return;
    const bool vec = D % 8 == 0 && as % 8 == 0 && bs % 8 == 0 && opcu_al16(out.data) &&
                     opcu_al16(a.data) && opcu_al16(b.data);
    const int64_t ng = vec ? D / 8 : D;
    const int t = row_block(ng);
    const dim3 grid((unsigned)((ng + t - 1) / t), grid_yz(rows));
    if (vec)
        gated_gelu_kernel<8><<<grid, t, 0, opcu_st(c)>>>(mbf(out), cbf(a), as, cbf(b), bs, rows, D);
    else
        gated_gelu_kernel<1><<<grid, t, 0, opcu_st(c)>>>(mbf(out), cbf(a), as, cbf(b), bs, rows, D);
    CU_LAUNCHED(c);
}

void opcu_add(op_ctx *c, tensor out, tensor a, tensor b) {
    const int64_t n = tensor_numel(&a);
    if (n == 0) return;
    if (opcu_al16(out.data) && opcu_al16(a.data) && opcu_al16(b.data))
        add_kernel<8><<<opcu_blocks(c, (n + 7) / 8, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(a), cbf(b), n);
    else
        add_kernel<1><<<opcu_blocks(c, n, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(a), cbf(b), n);
    CU_LAUNCHED(c);
}

void opcu_scale_shift(op_ctx *c, tensor out, tensor x, float mul, float add) {
    const int64_t n = tensor_numel(&x);
    if (n == 0) return;
    if (opcu_al16(out.data) && opcu_al16(x.data))
        scale_shift_kernel<8>
            <<<opcu_blocks(c, (n + 7) / 8, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
                mbf(out), cbf(x), n, mul, add);
    else
        scale_shift_kernel<1><<<opcu_blocks(c, n, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(x), n, mul, add);
    CU_LAUNCHED(c);
}

void opcu_euler_step(op_ctx *c, tensor x, tensor v, float dt) {
    const int64_t n = tensor_numel(&x);
    if (n == 0) return;
    /* dt is a float32 0-dim tensor cast to the bf16 compute dtype */
    const float dtb = __bfloat162float(__float2bfloat16(dt));
    if (opcu_al16(x.data) && opcu_al16(v.data))
        euler_step_kernel<8>
            <<<opcu_blocks(c, (n + 7) / 8, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
                mbf(x), cbf(v), n, dtb);
    else
        euler_step_kernel<1><<<opcu_blocks(c, n, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(x), cbf(v), n, dtb);
    CU_LAUNCHED(c);
}

void opcu_guidance(op_ctx *c, tensor out, tensor base, tensor pos, tensor neg, float g) {
    const int64_t n = tensor_numel(&base);
    if (n == 0) return;
    if (opcu_al16(out.data) && opcu_al16(base.data) && opcu_al16(pos.data) &&
        opcu_al16(neg.data))
        guidance_kernel<8><<<opcu_blocks(c, (n + 7) / 8, ELEM_THREADS), ELEM_THREADS, 0,
                             opcu_st(c)>>>(mbf(out), cbf(base), cbf(pos), cbf(neg), n, g);
    else
        guidance_kernel<1><<<opcu_blocks(c, n, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(base), cbf(pos), cbf(neg), n, g);
    CU_LAUNCHED(c);
}

/* x = x + gate[:, None] * y */
void opcu_gate_residual(op_ctx *c, tensor x, tensor gate, tensor y) {
    const int64_t B = x.shape[0], N = x.shape[1], C = x.shape[2];
    int64_t ys;
    tensor_rows(&y, &ys);
    if (B * N * C == 0) return;
    const bool vec = C % 8 == 0 && ys % 8 == 0 && gate.stride[0] % 8 == 0 && opcu_al16(x.data) &&
                     opcu_al16(gate.data) && opcu_al16(y.data);
    const int64_t ng = vec ? C / 8 : C;
    const int t = row_block(ng);
    const dim3 grid((unsigned)((ng + t - 1) / t), grid_yz(N), grid_yz(B));
    if (vec)
        gate_residual_kernel<8>
            <<<grid, t, 0, opcu_st(c)>>>(mbf(x), cbf(gate), gate.stride[0], cbf(y), ys, B, N, C);
    else
        gate_residual_kernel<1>
            <<<grid, t, 0, opcu_st(c)>>>(mbf(x), cbf(gate), gate.stride[0], cbf(y), ys, B, N, C);
    CU_LAUNCHED(c);
}

/* diffusers apply_rotary_emb(use_real=True, use_real_unbind_dim=-1): adjacent pairs */
void opcu_rope(op_ctx *c, tensor x, tensor cos, tensor sin) {
    const int64_t B = x.shape[0], L = x.shape[1], H = x.shape[2], D = x.shape[3];
    if (B * L * H * D == 0) return;
    CHECK(H * D <= INT32_MAX);
    const bool vec = D % 8 == 0 && x.stride[0] % 8 == 0 && x.stride[1] % 8 == 0 &&
                     x.stride[2] % 8 == 0 && opcu_al16(x.data) && opcu_al16(cos.data) &&
                     opcu_al16(sin.data);
    const int64_t ng = H * D / (vec ? 8 : 2); /* groups of 4 pairs, or pairs */
    const int t = row_block(ng);
    const dim3 grid((unsigned)((ng + t - 1) / t), grid_yz(L), grid_yz(B));
    if (vec)
        rope_kernel<4><<<grid, t, 0, opcu_st(c)>>>(mbf(x), x.stride[0], x.stride[1], x.stride[2],
                                                   (const float *)cos.data, (const float *)sin.data,
                                                   B, L, (int)H, (int)D);
    else
        rope_kernel<1><<<grid, t, 0, opcu_st(c)>>>(mbf(x), x.stride[0], x.stride[1], x.stride[2],
                                                   (const float *)cos.data, (const float *)sin.data,
                                                   B, L, (int)H, (int)D);
    CU_LAUNCHED(c);
}

/* diffusers embeddings.get_timestep_embedding, in fp32 as torch computes it */
void opcu_timestep_embedding(op_ctx *c, tensor out, const float *t, int flip, float shift,
                             float scale, float max_period) {
    const int64_t B = out.shape[0], dim = out.shape[1];
    CHECK(B <= TS_MAX_B && dim <= INT32_MAX);
    if (B == 0) return;
    ts_args ta;
    for (int64_t i = 0; i < TS_MAX_B; i++)
        ta.t[i] = i < B ? t[i] : 0.0f;
    const float lmp = (float)-log((double)max_period); /* as the CPU reference rounds it */
    timestep_embedding_kernel<<<(unsigned)B, 128, 0, opcu_st(c)>>>(
        out.data, out.dt == DTYPE_BF16, (int)dim, flip, shift, scale, lmp, ta);
    CU_LAUNCHED(c);
}

void opcu_copy(op_ctx *c, tensor dst, tensor src) {
    const int64_t n = tensor_numel(&dst);
    if (n == 0) return;
    CHECK(copy_dtype(dst.dt) && copy_dtype(src.dt));
    if (dst.dt == src.dt && tensor_is_contiguous(&dst) && tensor_is_contiguous(&src)) {
        CU_OK(cudaMemcpyAsync(dst.data, src.data, tensor_nbytes(&dst), cudaMemcpyDeviceToDevice,
                              opcu_st(c)));
        return;
    }
    copy_kernel<<<opcu_blocks(c, n, ELEM_THREADS), ELEM_THREADS, 0, opcu_st(c)>>>(
        copy_view_of(dst), copy_view_of(src), n);
    CU_LAUNCHED(c);
}

/* torch.nn.functional.interpolate(scale_factor=2, mode="nearest") */
void opcu_upsample2x(op_ctx *c, tensor out, tensor x) {
    const int64_t rows = x.shape[0] * x.shape[1] * x.shape[2], W = x.shape[3];
    if (rows == 0 || W == 0) return;
    if (W % 8 == 0 && opcu_al16(x.data) && opcu_al16(out.data))
        upsample2x_kernel<8><<<dim3(cover(W / 8), grid_yz(rows)), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(x), rows, W);
    else
        upsample2x_kernel<1><<<dim3(cover(W), grid_yz(rows)), ELEM_THREADS, 0, opcu_st(c)>>>(
            mbf(out), cbf(x), rows, W);
    CU_LAUNCHED(c);
}

/* diffusers FluxPipeline._pack_latents */
void opcu_pack2x2(op_ctx *c, tensor out, tensor x) { patch_move(c, mbf(x), mbf(out), x, 2, 1, 1); }

/* diffusers FluxPipeline._unpack_latents */
void opcu_unpack2x2(op_ctx *c, tensor out, tensor x) {
    patch_move(c, mbf(out), mbf(x), out, 2, 1, 0);
}

/* diffusers SD3Transformer2DModel.forward's unpatchify (einsum "nhwpqc->nchpwq") */
void opcu_unpatchify(op_ctx *c, tensor out, tensor x, int p) {
    patch_move(c, mbf(out), mbf(x), out, p, 0, 0);
}

void opcu_embedding(op_ctx *c, tensor out, tensor table, const int32_t *ids) {
    const int64_t rows = tensor_rows(&out, NULL), D = out.shape[out.ndim - 1];
    for (int64_t r = 0, k; r < rows; r += k) {
        /* a run of consecutive ids is one copy */
        for (k = 1; r + k < rows && ids[r + k] == ids[r] + k; k++) {
        }
        CU_OK(cudaMemcpyAsync(mbf(out) + r * D, cbf(table) + (int64_t)ids[r] * D,
                              (size_t)(k * D) * sizeof(bf16), cudaMemcpyDeviceToDevice,
                              opcu_st(c)));
    }
}

} /* extern "C" */
