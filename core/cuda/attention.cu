/* attention.cu: op_attention (ops.h) on the GPU, flash-attention style: the Lq x Lk scores never
 * reach global memory. Mirrors core/ops_cpu.c opcpu_attention.
 * Layout: q [B,Lq,H,D], k and v [B,Lk,H,D] BF16 with strided tokens, heads and batches (chunks
 * of a fused projection), 16-byte aligned rows; out likewise; bias F32 [H,Lq,Lk] or NULL.
 * Numerics: s = scale (q . k) from BF16 products accumulated in fp32 by the tensor cores, plus
 * the bias, in base-2 units (times log2 e) so the softmax uses ex2; the online softmax runs in
 * fp32 with a running max and sum per row; P is rounded to BF16 for the P.V product (as flash
 * attention does), O accumulates in fp32 and is rounded to BF16 once, after dividing by the
 * fp32 row sum. No atomics, fixed orders: the same inputs give the same bits.
 * Tiling (D 64, 128): a CTA owns 128 query rows of one (batch, head) and walks the keys by
 * tiles of 64; a warp owns MT m16 tiles of rows, whose Q fragments stay in registers. The next
 * K and V tiles load with cp.async into the other half of a two-stage buffer while the warps
 * work on this one (Q first borrows stage 1). Per tile a warp computes its scores with
 * mma.m16n8k16 (K fragments by ldmatrix), updates the softmax in registers and adds P.V (V by
 * ldmatrix.trans; the scores' accumulator layout is already the A operand's). Shared memory
 * bandwidth bounds the kernel, and each K or V fragment serves MT m16 tiles, so MT is 2 where
 * the registers allow it (plain D 64: 4 warps, two CTAs an SM) and 1 elsewhere (8 warps).
 * Shared rows are XOR-swizzled in 16-byte pieces (piece ^ row % 8), so the eight rows of an
 * ldmatrix phase hit distinct banks. Shared memory: 2 stages x (K + V) x 64 x D BF16 = 32 KB
 * (D 64) or 64 KB (D 128).
 * D 512 (the VAE's single head): Q (128 rows x 512) does not fit in registers, so it stays in
 * shared memory and is read by k-slices of 16; the output's columns are split in two halves
 * over blockIdx.z, each CTA recomputing the scores for its half; 8 warps of 16 rows, key tiles
 * of 32. Shared memory: Q 128 KB + 2 x (K 32 KB + V half 16 KB) = 224 KB. */
#include "core/cuda/common.cuh"

#define ATT_BM 128 /* query rows a CTA */
#define ATT_BN 64  /* keys a tile (D 64, 128) */
/* m16 tiles a warp: 2 only where the registers allow (plain D 64), and threads a CTA */
#define ATT_MT(D, EDGE) ((D) == 64 && !(EDGE) ? 2 : 1)
#define ATT_THREADS(D, EDGE) (ATT_BM / (16 * ATT_MT(D, EDGE)) * 32)
#define A512_THREADS 256
#define A512_BN 32  /* keys a tile (D 512) */
#define A512_DC 256 /* output columns a CTA (D 512) */
#define ATT_LOG2E 1.4426950408889634f

typedef struct attn_args {
    const bf16 *q, *k, *v;
    bf16 *out;
    const float *bias;                          /* [H,Lq,Lk] or NULL */
    int64_t qb, qt, qh, kb, kt, kh, vb, vt, vh; /* batch, token, head strides (elements) */
    int64_t ob, ot, oh;
    int H, Lq, Lk, causal;
    float scale_log2; /* scale log2(e) > 0: raw scores to base-2 units */
} attn_args;

/* ---- PTX wrappers ---- */

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src must still be a
 * mapped address) */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8x8 BF16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, and register i
 * of lane l gets row l/4, columns 2(l%4) and 2(l%4)+1 of matrix i (.trans: of its transpose). */
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* d[16x8] += a[16x16] b[16x8], fp32 accumulation. With g = lane/4, t = lane%4: a = {(g, 2t..),
 * (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, b = {(k 2t.., n g), (k 2t+8.., n g)}, d = {(g, 2t),
 * (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}; a pair's lower column sits in the low half. */
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* lo in the low half (cvt packs its first source into the high half) */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* 2^x; ex2(-inf) = 0, which the masks rely on */
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* ---- swizzled tiles ---- */

/* Element offset of (row r, 16-byte piece p) in a tile with rows of COLS elements. */
template <int COLS> __device__ __forceinline__ int swz(int r, int p) {
    return r * COLS + ((p ^ (r & 7)) << 3);
}

/* Rows [0, ROWS) x COLS of a BF16 matrix with row stride ld into the swizzled tile at dst, by
 * THREADS threads; rows >= valid (valid >= 1) are zero-filled, so tail keys give finite scores
 * and V rows of zeros. A thread copies piece tid % PR of rows tid / PR + i RP; walking one
 * pointer keeps few addresses live across the key loop. */
template <int ROWS, int COLS, int THREADS>
__device__ __forceinline__ void load_tile(uint32_t dst, const bf16 *src, int64_t ld, int valid,
                                          int tid) {
    constexpr int PR = COLS / 8, RP = THREADS / PR; /* pieces a row, rows a pass */
    static_assert(THREADS % PR == 0 && ROWS % RP == 0, "pieces must divide among the threads");
    const int r0 = tid / PR, p = tid % PR;
    const bf16 *g = src + r0 * ld + p * 8;
#pragma unroll
    for (int i = 0; i < ROWS / RP; i++, g += RP * ld) {
        const int r = r0 + i * RP;
        cp_async16(dst + 2 * swz<COLS>(r, p), r < valid ? g : src, r < valid);
    }
}

/* A lane's ldmatrix.x4 byte offsets for the 16x16 block at (row 16 i, column 16 kk) of a
 * swizzled tile with rows of COLS elements, by kk % 4. A operand and V (ldsm_a): lanes 0-15
 * address rows 0-15 at column 16 kk, lanes 16-31 the same rows at 16 kk + 8, so the matrices are
 * (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15): registers 0-3 of A, or with
 * .trans two B pairs for columns 0-7 and 8-15. K (ldsm_k): lanes 8-15 and 16-23 swapped, so the
 * matrices are (rows 0-7, cols 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15): the B pairs of
 * keys 0-7 and 8-15, each pair in adjacent registers as mma wants them. Either way a row's
 * low 3 bits are lane % 8 whatever i, and the swizzle only touches a piece's low 3 bits, so
 * the rest of the address is a constant: block (i, kk) is at off[kk % 4] + i 32 COLS +
 * (kk / 4) 128. */
template <int COLS> __device__ __forceinline__ void ldsm_a(uint32_t (&off)[4], int lane) {
#pragma unroll
    for (int k4 = 0; k4 < 4; k4++)
        off[k4] = (uint32_t)((lane & 15) * COLS * 2 + (((2 * k4 + (lane >> 4)) ^ (lane & 7)) << 4));
}
template <int COLS> __device__ __forceinline__ void ldsm_k(uint32_t (&off)[4], int lane) {
    const int r = (lane & 7) + ((lane >> 4) << 3), h = (lane >> 3) & 1;
#pragma unroll
    for (int k4 = 0; k4 < 4; k4++)
        off[k4] = (uint32_t)(r * COLS * 2 + (((2 * k4 + h) ^ (lane & 7)) << 4));
}

/* ---- the steps of a key tile, shared by both kernels (one warp, MT m16 tiles of query rows;
 * in each this lane holds rows g and g + 8, g = lane / 4) ---- */

/* s[mt][16 x 8 NT] += a[mt] (the 16x16 Q blocks of k-step kk) . K^T over the tile's 8 NT keys;
 * kb: this lane's offsets (ldsm_k) added to the K tile's address. */
template <int MT, int NT, int COLS>
__device__ __forceinline__ void qk_step(float (&s)[MT][NT][4], const uint32_t (&a)[MT][4],
                                        const uint32_t (&kb)[4], int kk) {
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t r[4]; /* keys 16np + 0-7, dims 16kk + 0-7 and + 8-15; then keys + 8-15 */
        ldsm_x4(r, kb[kk & 3] + np * 32 * COLS + (kk >> 2) * 128);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            mma_bf16(s[mt][2 * np], a[mt], r[0], r[1]);
            mma_bf16(s[mt][2 * np + 1], a[mt], r[2], r[3]);
        }
    }
}

/* What the edge handling needs of this lane's two query rows in an m16 tile: their bias rows
 * (NULL without a bias; rows past Lq read the last row's, their output is dropped) and key
 * limits (causal: keys after the query are masked). */
typedef struct attn_rows {
    const float *brow[2];
    int lim[2];
} attn_rows;

__device__ __forceinline__ attn_rows attn_rows_init(const attn_args &a, int h, int row) {
    attn_rows rw;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = row + 8 * r;
        rw.lim[r] = a.causal ? min(a.Lk, i + 1) : a.Lk;
        rw.brow[r] = a.bias ? a.bias + ((int64_t)h * a.Lq + min(i, a.Lq - 1)) * a.Lk : NULL;
    }
    return rw;
}

/* Masks keys >= lim[r] of row r; j0 = the tile's first key + 2 (lane % 4). */
template <int NT>
__device__ __forceinline__ void mask_keys(float (&s)[NT][4], const int (&lim)[2], int j0) {
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (j0 + n * 8 + (e & 1) >= lim[e >> 1]) s[n][e] = -INFINITY;
}

/* EDGE (bias or causal): raw scores -> base-2 units, plus the bias (reading no key past Lk),
 * then the mask; the softmax then scales by 1. */
template <int NT>
__device__ __forceinline__ void attn_edge(float (&s)[NT][4], const attn_args &a,
                                          const attn_rows &rw, int j0) {
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int j = j0 + n * 8 + (e & 1);
            s[n][e] *= a.scale_log2;
            if (rw.brow[0] && j < a.Lk) s[n][e] += __ldg(rw.brow[e >> 1] + j) * ATT_LOG2E;
        }
    mask_keys<NT>(s, rw.lim, j0);
}

/* Online softmax over one tile; sc > 0 turns s into base-2 units (so the max of the raw
 * scores gives the max of the scaled ones). Updates the running max m, rescales o and l to
 * it, and turns s into p = 2^(sc s - m). l stays this lane's partial sum (its quad's lanes
 * share the rows and the rescaling), summed over the quad at the end. */
template <int NT, int NO>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float sc, float (&m)[2],
                                             float (&l)[2], float (&o)[NO][4]) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NT; n++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
    }
    float nb[2]; /* minus the new max, 0 while every key so far is masked (p = 0, no NaN) */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float mn = fmaxf(m[r], mx[r] * sc);
        nb[r] = mn == -INFINITY ? 0.0f : -mn;
        const float alpha = ex2(m[r] + nb[r]);
        m[r] = mn;
        l[r] *= alpha;
#pragma unroll
        for (int n = 0; n < NO; n++) {
            o[n][2 * r] *= alpha;
            o[n][2 * r + 1] *= alpha;
        }
    }
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++)
            s[n][e] = ex2(fmaf(s[n][e], sc, nb[e >> 1]));
        l[0] += s[n][0] + s[n][1];
        l[1] += s[n][2] + s[n][3];
    }
}

/* The scores of the tile at key0 (BN keys) -> p, updating m, l and o of every m16 tile. EDGE:
 * bias and causal mask on every tile; otherwise only the key tail of the last tile is masked
 * and the scale folds into the exponent's FMA. */
template <bool EDGE, int MT, int BN, int NO>
__device__ __forceinline__ void
attn_scores(float (&s)[MT][BN / 8][4], const attn_args &a, const attn_rows (&rw)[MT], int key0,
            int lane, float (&m)[MT][2], float (&l)[MT][2], float (&o)[MT][NO][4]) {
    constexpr int NT = BN / 8;
    const int j0 = key0 + (lane & 3) * 2;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        if (EDGE)
            attn_edge<NT>(s[mt], a, rw[mt], j0);
        else if (key0 + BN > a.Lk) {
            const int lim[2] = {a.Lk, a.Lk};
            mask_keys<NT>(s[mt], lim, j0);
        }
        softmax_step<NT, NO>(s[mt], EDGE ? 1.0f : a.scale_log2, m[mt], l[mt], o[mt]);
    }
}

/* o[mt][16 x COLS] += P[mt][16 x 8 NT] . V; vb: this lane's offsets (ldsm_a) added to the V
 * tile's address. The scores' accumulator layout is the A operand's: n-tiles 2kk and 2kk+1
 * make k-step kk. */
template <int MT, int NT, int COLS>
__device__ __forceinline__ void pv_tile(float (&o)[MT][COLS / 8][4], const float (&s)[MT][NT][4],
                                        const uint32_t (&vb)[4]) {
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < COLS / 16; dp++) {
            uint32_t r[4]; /* transposed: (keys 0-7, 8-15) x cols 16dp + 0-7, then + 8-15 */
            ldsm_x4_t(r, vb[dp & 3] + kk * 32 * COLS + (dp >> 2) * 128);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma_bf16(o[mt][2 * dp], pa[mt], r[0], r[1]);
                mma_bf16(o[mt][2 * dp + 1], pa[mt], r[2], r[3]);
            }
        }
    }
}

/* o / l rounded to BF16 into out's rows row and row + 8 (those < Lq), columns col0 + 8n + 2t. */
template <int NO>
__device__ __forceinline__ void store_rows(const attn_args &a, float (&o)[NO][4], float (&l)[2],
                                           int b, int h, int row, int col0, int D, int lane) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        const int i = row + 8 * r;
        if (i >= a.Lq) continue;
        const float inv = 1.0f / l[r];
        bf16 *p = a.out + b * a.ob + i * a.ot + h * a.oh + col0 + (lane & 3) * 2;
#pragma unroll
        for (int n = 0; n < NO; n++)
            *(__nv_bfloat162 *)(p + n * 8) =
                __floats2bfloat162_rn(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
}

/* ---- kernels ---- */

/* One CTA: ATT_BM query rows of one (batch, head) = blockIdx.x, blockIdx.y; a warp owns 16 MT
 * consecutive rows. The plain D 64 kernel (4 warps) fits two CTAs an SM; EDGE (bias or
 * causal: T5 and CLIP, small) takes 8 warps of one m16 tile and may use every register. */
template <int D, bool EDGE>
static __global__ void __launch_bounds__(ATT_THREADS(D, EDGE), D == 64 && !EDGE ? 2 : 1)
    attn_kernel(attn_args a) {
    extern __shared__ __align__(128) unsigned char attn_smem[];
    constexpr int MT = ATT_MT(D, EDGE), THREADS = ATT_THREADS(D, EDGE), NT = ATT_BN / 8;
    constexpr int TILE = ATT_BN * D * 2; /* bytes of one K or V tile */
    static_assert(ATT_BM == 2 * ATT_BN, "Q borrows one stage (K + V)");
    const uint32_t sbase = smem_u32(attn_smem); /* stage s: K at 2s TILE, V at (2s + 1) TILE */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int b = blockIdx.y / a.H, h = blockIdx.y % a.H, q0 = blockIdx.x * ATT_BM;
    const bf16 *kg = a.k + b * a.kb + h * a.kh, *vg = a.v + b * a.vb + h * a.vh;
    int nt = (a.Lk + ATT_BN - 1) / ATT_BN;
    if (EDGE && a.causal) nt = min(nt, (min(q0 + ATT_BM, a.Lq) - 1) / ATT_BN + 1);

    load_tile<ATT_BM, D, THREADS>(sbase + 2 * TILE, a.q + b * a.qb + h * a.qh + (int64_t)q0 * a.qt,
                                  a.qt, a.Lq - q0, tid);
    cp_async_commit();
    load_tile<ATT_BN, D, THREADS>(sbase, kg, a.kt, a.Lk, tid);
    load_tile<ATT_BN, D, THREADS>(sbase + TILE, vg, a.vt, a.Lk, tid);
    cp_async_commit();

    uint32_t aoff[4], koff[4];
    ldsm_a<D>(aoff, lane);
    ldsm_k<D>(koff, lane);
    cp_async_wait<1>(); /* Q is in */
    __syncthreads();
    uint32_t qa[D / 16][MT][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            ldsm_x4(qa[kk][mt],
                    sbase + 2 * TILE + aoff[kk & 3] + (warp * MT + mt) * 32 * D + (kk >> 2) * 128);

    int row[MT];
    attn_rows rw[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        row[mt] = q0 + (warp * MT + mt) * 16 + (lane >> 2);
        rw[mt] = attn_rows_init(a, h, row[mt]);
    }
    float o[MT][D / 8][4] = {}, m[MT][2], l[MT][2] = {};
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        m[mt][0] = m[mt][1] = -INFINITY;
    for (int j = 0; j < nt; j++) {
        cp_async_wait<0>();
        __syncthreads(); /* tile j landed; every warp is done with the stage refilled below */
        if (j + 1 < nt) {
            const uint32_t st = sbase + ((j + 1) & 1) * 2 * TILE;
            const int key = (j + 1) * ATT_BN;
            load_tile<ATT_BN, D, THREADS>(st, kg + key * a.kt, a.kt, a.Lk - key, tid);
            load_tile<ATT_BN, D, THREADS>(st + TILE, vg + key * a.vt, a.vt, a.Lk - key, tid);
        }
        cp_async_commit();
        const uint32_t sk = sbase + (j & 1) * 2 * TILE;
        uint32_t kb[4], vb[4];
#pragma unroll
        for (int k4 = 0; k4 < 4; k4++) {
            kb[k4] = sk + koff[k4];
            vb[k4] = sk + TILE + aoff[k4];
        }
        float s[MT][NT][4] = {};
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            qk_step<MT, NT, D>(s, qa[kk], kb, kk);
        attn_scores<EDGE, MT, ATT_BN, D / 8>(s, a, rw, j * ATT_BN, lane, m, l, o);
        pv_tile<MT, NT, D>(o, s, vb);
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        store_rows<D / 8>(a, o[mt], l[mt], b, h, row[mt], 0, D, lane);
}

/* D = 512. One CTA: ATT_BM query rows of one (batch, head) = blockIdx.x, blockIdx.y, output
 * columns [A512_DC z, A512_DC (z + 1)) with z = blockIdx.z; a warp owns 16 rows. */
template <bool EDGE>
static __global__ void __launch_bounds__(A512_THREADS, 1) attn512_kernel(attn_args a) {
    extern __shared__ __align__(128) unsigned char attn_smem[];
    constexpr int D = 512, NT = A512_BN / 8, KT = A512_BN * D * 2, VT = A512_BN * A512_DC * 2;
    static_assert(ATT_BM == A512_THREADS / 2, "a warp owns 16 rows");
    const uint32_t sq = smem_u32(attn_smem), sk0 = sq + ATT_BM * D * 2, sv0 = sk0 + 2 * KT;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int b = blockIdx.y / a.H, h = blockIdx.y % a.H, q0 = blockIdx.x * ATT_BM;
    const int c0 = blockIdx.z * A512_DC;
    const bf16 *kg = a.k + b * a.kb + h * a.kh, *vg = a.v + b * a.vb + h * a.vh + c0;
    int nt = (a.Lk + A512_BN - 1) / A512_BN;
    if (EDGE && a.causal) nt = min(nt, (min(q0 + ATT_BM, a.Lq) - 1) / A512_BN + 1);

    load_tile<ATT_BM, D, A512_THREADS>(sq, a.q + b * a.qb + h * a.qh + (int64_t)q0 * a.qt, a.qt,
                                       a.Lq - q0, tid);
    load_tile<A512_BN, D, A512_THREADS>(sk0, kg, a.kt, a.Lk, tid);
    load_tile<A512_BN, A512_DC, A512_THREADS>(sv0, vg, a.vt, a.Lk, tid);
    cp_async_commit();

    uint32_t qb[4], koff[4], voff[4];
    ldsm_a<D>(qb, lane);
    ldsm_k<D>(koff, lane);
    ldsm_a<A512_DC>(voff, lane);
#pragma unroll
    for (int k4 = 0; k4 < 4; k4++)
        qb[k4] += sq + warp * 32 * D;

    const int row = q0 + warp * 16 + (lane >> 2);
    const attn_rows rw[1] = {attn_rows_init(a, h, row)};
    float o[1][A512_DC / 8][4] = {}, m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {};
    for (int j = 0; j < nt; j++) {
        cp_async_wait<0>();
        __syncthreads(); /* tile j landed; every warp is done with the stage refilled below */
        if (j + 1 < nt) {
            const int st = (j + 1) & 1, key = (j + 1) * A512_BN;
            load_tile<A512_BN, D, A512_THREADS>(sk0 + st * KT, kg + key * a.kt, a.kt, a.Lk - key,
                                                tid);
            load_tile<A512_BN, A512_DC, A512_THREADS>(sv0 + st * VT, vg + key * a.vt, a.vt,
                                                      a.Lk - key, tid);
        }
        cp_async_commit();
        uint32_t kb[4], vb[4];
#pragma unroll
        for (int k4 = 0; k4 < 4; k4++) {
            kb[k4] = sk0 + (j & 1) * KT + koff[k4];
            vb[k4] = sv0 + (j & 1) * VT + voff[k4];
        }
        float s[1][NT][4] = {};
        /* k-slices of 64 dims, not unrolled further, so the compiler does not hoist the Q and
         * K fragments of all 32 k-steps next to the 128 registers of o */
#pragma unroll 1
        for (int k64 = 0; k64 < D / 64; k64++) {
            uint32_t kq[4];
#pragma unroll
            for (int k4 = 0; k4 < 4; k4++)
                kq[k4] = kb[k4] + k64 * 128;
#pragma unroll
            for (int k4 = 0; k4 < 4; k4++) {
                uint32_t qa[1][4];
                ldsm_x4(qa[0], qb[k4] + k64 * 128);
                qk_step<1, NT, D>(s, qa, kq, k4);
            }
        }
        attn_scores<EDGE, 1, A512_BN, A512_DC / 8>(s, a, rw, j * A512_BN, lane, m, l, o);
        pv_tile<1, NT, A512_DC>(o, s, vb);
    }
    store_rows<A512_DC / 8>(a, o[0], l[0], b, h, row, c0, D, lane);
}

/* ---- launchers ---- */

/* 16-byte aligned data, rows of D contiguous, and token, head and batch strides in whole
 * 16-byte pieces (a stride over a dimension of 1 is never used) */
static bool attn_aligned(const tensor &t) {
    if ((uintptr_t)t.data % 16 || t.stride[3] != 1) return false;
    for (int d = 0; d < 3; d++)
        if (t.shape[d] > 1 && t.stride[d] % 8) return false;
    return true;
}

template <int D, bool EDGE> static void attn_launch(op_ctx *c, const attn_args &a, int B) {
    const int smem = 2 * 2 * ATT_BN * D * (int)sizeof(bf16);
    CU_OK(cudaFuncSetAttribute(attn_kernel<D, EDGE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               smem));
    dim3 grid((unsigned)((a.Lq + ATT_BM - 1) / ATT_BM), (unsigned)(B * a.H));
    attn_kernel<D, EDGE><<<grid, ATT_THREADS(D, EDGE), smem, opcu_st(c)>>>(a);
    CU_LAUNCHED(c);
}

template <bool EDGE> static void attn512_launch(op_ctx *c, const attn_args &a, int B) {
    const int smem = (ATT_BM * 512 + 2 * A512_BN * 512 + 2 * A512_BN * A512_DC) * (int)sizeof(bf16);
    CU_OK(cudaFuncSetAttribute(attn512_kernel<EDGE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               smem));
    dim3 grid((unsigned)((a.Lq + ATT_BM - 1) / ATT_BM), (unsigned)(B * a.H), 512 / A512_DC);
    attn512_kernel<EDGE><<<grid, A512_THREADS, smem, opcu_st(c)>>>(a);
    CU_LAUNCHED(c);
}

extern "C" {

void opcu_attention(op_ctx *c, tensor out, tensor q, tensor k, tensor v, const tensor *bias,
                    float scale, int causal) {
    const int64_t B = q.shape[0], Lq = q.shape[1], H = q.shape[2], D = q.shape[3];
    const int64_t Lk = k.shape[1];
    CHECK(D == 64 || D == 128 || D == 512);
    CHECK(attn_aligned(q) && attn_aligned(k) && attn_aligned(v) && attn_aligned(out));
    CHECK(out.stride[3] == 1);
    CHECK(Lk >= 1 && Lq < INT32_MAX && Lk < INT32_MAX && B * H <= 65535);
    CHECK(scale > 0.0f); /* the max of the raw scores is the max of the scaled ones */
    if (B == 0 || H == 0 || Lq == 0) return;
    if (!bias && !causal && D != 512 && opcu_attention_cudnn(c, out, q, k, v, scale)) return;
    attn_args a = {};
    a.q = cbf(q);
    a.k = cbf(k);
    a.v = cbf(v);
    a.out = mbf(out);
    a.bias = bias ? (const float *)bias->data : NULL;
    a.qb = q.stride[0], a.qt = q.stride[1], a.qh = q.stride[2];
    a.kb = k.stride[0], a.kt = k.stride[1], a.kh = k.stride[2];
    a.vb = v.stride[0], a.vt = v.stride[1], a.vh = v.stride[2];
    a.ob = out.stride[0], a.ot = out.stride[1], a.oh = out.stride[2];
    a.H = (int)H, a.Lq = (int)Lq, a.Lk = (int)Lk, a.causal = causal != 0;
    a.scale_log2 = scale * ATT_LOG2E;
    const bool edge = bias || causal;
    if (D == 64)
        edge ? attn_launch<64, true>(c, a, (int)B) : attn_launch<64, false>(c, a, (int)B);
    else if (D == 128)
        edge ? attn_launch<128, true>(c, a, (int)B) : attn_launch<128, false>(c, a, (int)B);
    else
        edge ? attn512_launch<true>(c, a, (int)B) : attn512_launch<false>(c, a, (int)B);
}
}
