/* decode.cu: df11 blobs -> BF16 on the GPU (FORMAT.md "Segment decoding").
 * One warp decodes one segment: lane l owns elements j*128 + 4l + g of step j, so the raw
 * bytes a warp reads (4 per lane) and the BF16 values it writes (8 bytes per lane) are
 * contiguous across the warp. The lanes share one word stream: at each refill point the lanes
 * that hold fewer than 24 bits take consecutive words, ranked by a ballot; the encoder laid
 * the words out in exactly that order. The warp stages its code words and raw bytes in shared
 * memory with cp.async a few steps ahead, so the decoding loop never waits on global memory,
 * and the loop is branch-free (a divergent refill cost 4 %). The tANS decode table (4 bytes a
 * state, in a layout made for the funnel shifts) sits in shared memory; a CTA's warps decode
 * consecutive segments of one tensor, and one launch covers every tensor of the plan (a CTA
 * finds its tensor by binary search over CTA offsets).
 * Measured on the H100 (tests/bench): 1421 GB/s of BF16 output on a FLUX double block. The
 * kernel is bound by instruction issue (about 84 instructions a step of 128 values) and by
 * the uneven finish of one-wave launches (achieved occupancy 45 % of 75 %). */
#include <cuda_runtime.h>

#include "core/cuda/cuda_check.h"

#include <stdlib.h>
#include <string.h>

extern "C" {
#include "df11/cuda/df11_cuda.h"
#include "df11/tans.h"
}

#define WARPS_PER_CTA 8
#define FULL_MASK 0xFFFFFFFFu

typedef struct gpu_desc {
    const uint32_t *code;      /* code words */
    const uint32_t *seg_start; /* n_segments word offsets */
    const uint8_t *raw;        /* sign+mantissa bytes */
    const uint32_t *table;     /* 2^table_log decode entries */
    uint16_t *out;
    uint64_t n;
    uint64_t code_words;
    uint32_t n_segments, steps, table_log, cta_begin;
} gpu_desc;

struct df11_cuda_plan {
    gpu_desc *d_desc;
    uint32_t *d_tables;
    int n;
    uint32_t n_ctas;
    uint64_t elems;
};

/* The decoder's table entry (built on the host from the shared tans table): bits 0-4 nbits,
 * bits 7-14 the exponent already in its BF16 place, bits 20-31 the next state's base. nbits in
 * the low five bits lets the funnel shifts (which use shift & 31) take the entry as it is. */
#define GPU_ENTRY(base, nb, exp) ((uint32_t)(nb) | (uint32_t)(exp) << 7 | (uint32_t)(base) << 20)

static __shared__ uint32_t s_tab[1u << DF11_TANS_MAX_LOG];

/* A lane's bit buffer (LSB first, up to 55 bits) and tANS state. */
typedef struct lane_state {
    uint64_t buf;
    uint32_t cnt, state;
} lane_state;

/* Staging: each warp copies its segment's code words and raw bytes into shared memory with
 * cp.async, well ahead of their use, so no decoding instruction waits on global memory. The
 * copies are issued once a super step (SUPER steps), as one cp.async group:
 * code: a ring of CODE_CHUNKS chunks of 32 words (chunk c = the segment's words 32c..32c+31),
 * filled up to CODE_CHUNKS - 1 chunks past the one being read;
 * raw: two slots of one super step's raw bytes (SUPER * 128), the next one loading while this
 * one is decoded.
 * Waiting for all groups but the newest then makes this super step's raw bytes, and every chunk
 * issued before it, complete; a step that could read past those (a fast-consuming stretch)
 * waits for everything first. */
#define SUPER 4
#define CODE_CHUNKS 8

static __shared__ uint32_t s_code[WARPS_PER_CTA][CODE_CHUNKS * 32];
static __shared__ uint4 s_raw[WARPS_PER_CTA][2][SUPER * 8];

template <int BYTES> static __device__ __forceinline__ void cp_async(uint32_t smem, const void *gmem) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(smem), "l"(gmem), "n"(BYTES)
                 : "memory");
}
static __device__ __forceinline__ void cp_async_commit(void) {
    asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> static __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* The segment's shared word stream. Reads are clamped to the tensor's last code word: a valid
 * stream never asks past its segment's end (the encoder writes the zero words a lane asks
 * for), and a corrupt one decodes to garbage that the CRC catches, never to a fault. */
typedef struct word_stream {
    const uint32_t *code; /* the segment's first code word */
    uint32_t last;        /* segment index of the tensor's last code word */
    uint32_t ptr;         /* segment index of the next word */
    uint32_t ring;        /* shared address of this warp's code ring */
    uint32_t issued;      /* chunks issued so far */
    uint32_t n_chunks;    /* chunks in the segment */
} word_stream;

/* Issues the chunks up to CODE_CHUNKS - 1 past the one ptr is in (not past the segment). */
static __device__ __forceinline__ void stream_issue(word_stream &w, uint32_t lane) {
    uint32_t target = min((w.ptr >> 5) + CODE_CHUNKS, w.n_chunks);
    for (; w.issued < target; w.issued++)
        cp_async<4>(w.ring + ((w.issued % CODE_CHUNKS) * 32 + lane) * 4,
                    w.code + min(w.issued * 32 + lane, w.last));
}

/* A refill point: lanes that are active and hold fewer than 24 bits take the next words of the
 * shared stream in lane order (their rank among the lanes that need one). */
static __device__ __forceinline__ void refill(lane_state &s, bool active, word_stream &w,
                                              uint32_t lane_lt) {
    bool need = active && s.cnt < DF11_REFILL_BELOW;
    uint32_t m = __ballot_sync(FULL_MASK, need);
    /* branch-free: every lane loads (a lane that needs nothing reads a word it then drops), so
     * the warp never diverges here */
    uint32_t x, i = (w.ptr + __popc(m & lane_lt)) % (CODE_CHUNKS * 32);
    asm("ld.shared.u32 %0, [%1];" : "=r"(x) : "r"(w.ring + i * 4));
    s.buf += (uint64_t)x * (need ? 1u << s.cnt : 0u); /* x << cnt: the bits above cnt are zero */
    s.cnt += need ? 32u : 0u;
    w.ptr += __popc(m);
}

/* A value the compiler must keep in a register rather than recompute in the loop (it would
 * re-read special registers for the lane mask and the shared window at every step). */
static __device__ __forceinline__ uint32_t pinned(uint32_t v) {
    asm volatile("mov.b32 %0, %0;" : "+r"(v));
    return v;
}

/* Drops the low (e & 31) bits of the buffer and returns them. */
static __device__ __forceinline__ uint32_t take_bits(lane_state &s, uint32_t e) {
    uint32_t lo = (uint32_t)s.buf, hi = (uint32_t)(s.buf >> 32);
    uint32_t bits = lo & ~__funnelshift_l(0u, 0xFFFFFFFFu, e); /* low nb bits */
    lo = __funnelshift_r(lo, hi, e);
    hi = __funnelshift_r(hi, 0u, e);
    s.buf = (uint64_t)hi << 32 | lo;
    return bits;
}

/* One tANS step: returns the entry (exponent field in bits 7-14) and moves to the next state.
 * The caller subtracts nbits from cnt (two symbols at a time: their nbits sum to < 32). */
static __device__ __forceinline__ uint32_t decode_one(lane_state &s, uint32_t tab) {
    uint32_t e;
    asm("ld.shared.u32 %0, [%1];" : "=r"(e) : "r"(tab + s.state * 4));
    s.state = (e >> 20) + take_bits(s, e);
    return e;
}

/* Two BF16 values from two entries and raw bytes (picked by sel): sign = raw bit 7 -> bit 15,
 * mantissa = raw bits 0-6, exponent bits 7-14 from the entry. */
static __device__ __forceinline__ uint32_t join2(uint32_t raw, uint32_t sel, uint32_t e0,
                                                 uint32_t e1) {
    uint32_t r = __byte_perm(raw, 0, sel), x = __byte_perm(e0, e1, 0x5410);
    return (r & 0x807F807Fu) | (x & 0x7F807F80u);
}

static __device__ __forceinline__ void store2(uint2 *p, uint2 v) {
    asm volatile("st.global.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}

/* One full step: 4 symbols a lane, 128 BF16 values a warp; r: the lane's 4 raw bytes. */
static __device__ __forceinline__ uint2 decode_step(lane_state &s, word_stream &w, uint32_t r,
                                                    uint32_t lane_lt, uint32_t tab) {
    refill(s, true, w, lane_lt);
    uint32_t e0 = decode_one(s, tab), e1 = decode_one(s, tab);
    s.cnt -= (e0 + e1) & 31u;
    refill(s, true, w, lane_lt);
    uint32_t e2 = decode_one(s, tab), e3 = decode_one(s, tab);
    s.cnt -= (e2 + e3) & 31u;
    return make_uint2(join2(r, 0x1100, e0, e1), join2(r, 0x3322, e2, e3));
}

static __device__ void decode_segment(const gpu_desc &d, uint32_t seg) {
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    const uint32_t lane_lt = pinned((1u << lane) - 1);
    const uint32_t tab = pinned((uint32_t)__cvta_generic_to_shared(s_tab));
    const uint64_t seg_elems = (uint64_t)128 * d.steps, base = seg * seg_elems;
    const uint32_t m = (uint32_t)(d.n - base < seg_elems ? d.n - base : seg_elems);
    const uint32_t start = d.seg_start[seg];
    const uint32_t end = seg + 1 < d.n_segments ? d.seg_start[seg + 1] : (uint32_t)d.code_words;
    const uint32_t full = m / 128, supers = (full + SUPER - 1) / SUPER;
    const uint4 *raw16 = (const uint4 *)(d.raw + base) + lane; /* a super step: 32 x 16 bytes */
    uint2 *out4 = (uint2 *)(d.out + base) + lane;
    const uint32_t raw_slot0 = pinned((uint32_t)__cvta_generic_to_shared(&s_raw[warp][0][0]));

    word_stream w;
    w.code = d.code + start;
    w.last = (uint32_t)d.code_words - 1 - start;
    w.ptr = 0;
    w.ring = pinned((uint32_t)__cvta_generic_to_shared(s_code[warp]));
    w.issued = 0;
    w.n_chunks = end > start ? (end - start + 31) / 32 : 1;
    /* raw bytes are copied in whole 16-byte pieces below m only: a piece past m may lie past the
     * end of the blob, and the bytes of the last, partial step are read from global memory */
    const uint32_t raw16_n = m / 16;
    stream_issue(w, lane);
    if (supers > 0 && lane < raw16_n) cp_async<16>(raw_slot0 + lane * 16, raw16);
    cp_async_commit();
    cp_async_wait<0>(); /* the first chunks, for the initial states */
    __syncwarp();
    lane_state s = {0, 0, 0};
    refill(s, lane * 4 < m, w, lane_lt);
    s.state = take_bits(s, d.table_log);
    s.cnt -= d.table_log;

    for (uint32_t q = 0; q < supers; q++) {
        __syncwarp(); /* every lane is done with the slots about to be refilled */
        uint32_t safe = w.issued;
        stream_issue(w, lane);
        if (q + 1 < supers && (q + 1) * 32 + lane < raw16_n)
            cp_async<16>(raw_slot0 + ((q + 1) & 1) * (SUPER * 128) + lane * 16, raw16 + (q + 1) * 32);
        cp_async_commit();
        cp_async_wait<1>();
        __syncwarp();
        const uint32_t raw_slot = raw_slot0 + (q & 1) * (SUPER * 128) + lane * 4;
#pragma unroll
        for (uint32_t k = 0; k < SUPER; k++) {
            const uint32_t j = q * SUPER + k;
            if (j >= full) break;
            if (w.ptr + 64 > safe * 32 && safe < w.n_chunks) { /* might read past what is in */
                stream_issue(w, lane);
                cp_async_commit();
                cp_async_wait<0>();
                __syncwarp();
                safe = w.issued;
            }
            uint32_t r;
            asm("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(raw_slot + k * 128));
            store2(out4 + j * 32, decode_step(s, w, r, lane_lt, tab));
        }
    }
    /* the last, partial step (or the whole segment, when it is shorter than one step): element
     * by element, as the reference decoder does, with raw bytes read from global memory */
    stream_issue(w, lane);
    cp_async_commit();
    cp_async_wait<0>(); /* also: nothing may still write to shared memory when the CTA ends */
    __syncwarp();
    if (full * 128 == m) return;
    const uint8_t *raw = d.raw + base;
    uint16_t *out = d.out + base;
    const uint32_t k0 = full * 128 + lane * 4;
    for (uint32_t h = 0; h < 4; h += 2) {
        refill(s, k0 + h < m, w, lane_lt);
        for (uint32_t g = h; g < h + 2; g++)
            if (k0 + g < m) {
                uint32_t e = decode_one(s, tab), rb = raw[k0 + g];
                s.cnt -= e & 31u;
                out[k0 + g] = (uint16_t)((rb & 0x80u) << 8 | (e & 0x7F80u) | (rb & 0x7Fu));
            }
    }
}

/* Grid: one CTA per WARPS_PER_CTA consecutive segments of one tensor; one warp per segment. */
__global__ void __launch_bounds__(WARPS_PER_CTA * 32)
    df11_decode_kernel(const gpu_desc *__restrict__ descs, int n_desc) {
    int lo = 0, hi = n_desc - 1;
    while (lo < hi) { /* last descriptor with cta_begin <= blockIdx.x */
        int mid = (lo + hi + 1) / 2;
        if (descs[mid].cta_begin <= blockIdx.x) lo = mid;
        else hi = mid - 1;
    }
    const gpu_desc d = descs[lo];
    const uint32_t L = 1u << d.table_log;
    for (uint32_t i = threadIdx.x; i < L; i += blockDim.x) s_tab[i] = __ldg(d.table + i);
    __syncthreads();
    uint32_t seg = (blockIdx.x - d.cta_begin) * WARPS_PER_CTA + threadIdx.x / 32;
    if (seg < d.n_segments) decode_segment(d, seg);
}


extern "C" int df11_cuda_available(void) {
    int n = 0;
    cudaError_t c = cudaGetDeviceCount(&n);
    if (c != cudaSuccess || n == 0) {
        err_set(ERR_CUDA, "no CUDA device: %s", c != cudaSuccess ? cudaGetErrorString(c) : "none found");
        return 0;
    }
    return 1;
}

static err fill_descs(const df11_cuda_item *items, int n, gpu_desc *h, uint32_t *tables,
                      uint32_t *d_tables, uint32_t *n_ctas, uint64_t *elems) {
    uint32_t cta = 0;
    size_t toff = 0;
    for (int i = 0; i < n; i++) {
        const df11_blob *b = items[i].blob;
        const uint8_t *db = (const uint8_t *)items[i].d_blob;
        FAIL_IF((uintptr_t)db % 16 || (uintptr_t)items[i].d_out % 16, ERR_ARG,
                "df11_cuda_plan_create: item %d: blob or output not 16-byte aligned", i);
        gpu_desc *d = &h[i];
        memset(d, 0, sizeof *d);
        d->code = (const uint32_t *)(db + (b->code - b->base));
        d->seg_start = (const uint32_t *)(db + (b->seg_start - b->base));
        d->raw = db + (b->raw - b->base);
        d->out = items[i].d_out;
        d->n = b->n;
        d->code_words = b->code_words;
        d->n_segments = b->n_segments;
        d->steps = b->steps;
        d->table_log = (uint32_t)b->table_log;
        d->cta_begin = cta;
        d->table = d_tables + toff;
        if (b->n) {
            uint32_t *t = tables + toff;
            tans_decode_table(b->count, b->table_log, t);
            for (size_t k = 0; k < ((size_t)1 << b->table_log); k++)
                t[k] = GPU_ENTRY(TANS_ENTRY_BASE(t[k]), TANS_ENTRY_NBITS(t[k]), TANS_ENTRY_EXP(t[k]));
        }
        toff += (size_t)1 << DF11_TANS_MAX_LOG;
        cta += (b->n_segments + WARPS_PER_CTA - 1) / WARPS_PER_CTA;
        *elems += b->n;
    }
    *n_ctas = cta;
    return ERR_OK;
}

extern "C" err df11_cuda_plan_create(const df11_cuda_item *items, int n, df11_cuda_plan **out) {
    *out = NULL;
    FAIL_IF(n < 1, ERR_ARG, "df11_cuda_plan_create: no items");
    df11_cuda_plan *p = (df11_cuda_plan *)calloc(1, sizeof *p);
    size_t tab_words = (size_t)n << DF11_TANS_MAX_LOG;
    gpu_desc *h = (gpu_desc *)calloc((size_t)n, sizeof *h);
    uint32_t *tables = (uint32_t *)calloc(tab_words, sizeof(uint32_t));
    err e = (!p || !h || !tables) ? err_set(ERR_NOMEM, "out of memory") : ERR_OK;
    cudaError_t c = cudaSuccess;
    if (!e) {
        p->n = n;
        c = cudaMalloc((void **)&p->d_tables, tab_words * sizeof(uint32_t));
        if (c == cudaSuccess) c = cudaMalloc((void **)&p->d_desc, (size_t)n * sizeof *h);
        if (c != cudaSuccess) e = cuda_fail(c, "allocating decoder tables");
    }
    if (!e) e = fill_descs(items, n, h, tables, p->d_tables, &p->n_ctas, &p->elems);
    if (!e) {
        c = cudaMemcpy(p->d_tables, tables, tab_words * sizeof(uint32_t), cudaMemcpyHostToDevice);
        if (c == cudaSuccess) c = cudaMemcpy(p->d_desc, h, (size_t)n * sizeof *h, cudaMemcpyHostToDevice);
        if (c != cudaSuccess) e = cuda_fail(c, "uploading decoder tables");
    }
    free(h);
    free(tables);
    if (e) {
        df11_cuda_plan_free(p);
        return e;
    }
    *out = p;
    return ERR_OK;
}

extern "C" void df11_cuda_plan_free(df11_cuda_plan *p) {
    if (!p) return;
    cudaFree(p->d_desc);
    cudaFree(p->d_tables);
    free(p);
}

extern "C" uint64_t df11_cuda_plan_elems(const df11_cuda_plan *p) { return p->elems; }

extern "C" err df11_cuda_decode(const df11_cuda_plan *p, struct CUstream_st *stream) {
    if (p->n_ctas == 0) return ERR_OK;
    df11_decode_kernel<<<p->n_ctas, WARPS_PER_CTA * 32, 0, stream>>>(p->d_desc, p->n);
    CUDA_TRY(cudaGetLastError(), "df11 decode launch");
#ifdef DF11_CUDA_SYNC_DEBUG
    CUDA_TRY(cudaStreamSynchronize(stream), "df11 decode");
#endif
    return ERR_OK;
}
