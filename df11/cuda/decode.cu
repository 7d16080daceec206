/* decode.cu: df11 blobs -> BF16 on the GPU (FORMAT.md "Segment decoding").
 * One warp decodes one segment: lane l owns elements j*128 + 4l + g of step j, so the raw
 * bytes a warp reads (4 per lane) and the BF16 values it writes (8 bytes per lane) are
 * contiguous across the warp. The lanes share one word stream: at each refill point the lanes
 * that hold fewer than 24 bits take consecutive words, ranked by a ballot; the encoder laid
 * the words out in exactly that order. The tANS decode table (4 bytes a state) sits in shared
 * memory; a CTA's warps decode consecutive segments of one tensor, and one launch covers
 * every tensor of the plan (a CTA finds its tensor by binary search over CTA offsets). */
#include <cuda_runtime.h>

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

typedef struct lane_state {
    uint64_t buf;
    uint32_t state;
    int cnt;
} lane_state;

/* The segment's word stream seen through a register window: lane l holds words
 * base + l (a), base + 32 + l (b) and, prefetched, base + 64 + l (c). A refill takes at most
 * 32 words, so the words it needs are always in a or b; once a is used up the window slides
 * and the next 32 words are loaded, well before they are needed. Words past the segment's
 * end read as zero (only a corrupt blob gets there), so a bad stream decodes to garbage that
 * the CRC catches, never a fault. */
typedef struct word_window {
    const uint32_t *code;
    uint32_t limit, base, ptr; /* ptr: next word, relative to base (< 32 between refills) */
    uint32_t a, b, c;
} word_window;

static __device__ __forceinline__ uint32_t load_word(const word_window &w, uint32_t i) {
    return i < w.limit ? __ldg(w.code + i) : 0u;
}

static __device__ __forceinline__ void window_init(word_window &w, const uint32_t *code,
                                                   uint32_t limit, uint32_t lane) {
    w.code = code;
    w.limit = limit;
    w.base = 0;
    w.ptr = 0;
    w.a = load_word(w, lane);
    w.b = load_word(w, 32 + lane);
    w.c = load_word(w, 64 + lane);
}

/* A refill point: lanes that are active and hold fewer than 24 bits take the next words of the
 * shared stream in lane order (their rank among the lanes that need one). */
static __device__ __forceinline__ void refill(lane_state &s, bool active, word_window &w,
                                              uint32_t lane_lt) {
    bool need = active && s.cnt < 24;
    uint32_t m = __ballot_sync(FULL_MASK, need);
    uint32_t idx = w.ptr + __popc(m & lane_lt);
    uint32_t x = __shfl_sync(FULL_MASK, w.a, idx & 31), y = __shfl_sync(FULL_MASK, w.b, idx & 31);
    if (need) {
        s.buf |= (uint64_t)(idx < 32 ? x : y) << s.cnt;
        s.cnt += 32;
    }
    w.ptr += __popc(m);
    if (w.ptr >= 32) {
        w.ptr -= 32;
        w.base += 32;
        w.a = w.b;
        w.b = w.c;
        w.c = load_word(w, w.base + 64 + (threadIdx.x & 31));
    }
}

/* One tANS step: returns the table entry (exponent << 23 in its high half) and moves on. */
static __device__ __forceinline__ uint32_t decode_one(lane_state &s, const uint32_t *tab) {
    uint32_t e = tab[s.state];
    uint32_t nb = (e >> 12) & 15u;
    s.state = (e & 0xFFFu) + ((uint32_t)s.buf & ((1u << nb) - 1u));
    s.buf >>= nb;
    s.cnt -= (int)nb;
    return e;
}

/* Two BF16 values from two entries and two raw bytes (bytes b, b+1 of raw):
 * sign = raw bit 7 -> bit 15, mantissa = raw bits 0-6, exponent from the entry. */
static __device__ __forceinline__ uint32_t join2(uint32_t raw, uint32_t sel, uint32_t e0,
                                                 uint32_t e1) {
    uint32_t r = __byte_perm(raw, 0, sel) & 0x807F807Fu;
    return r | (e0 >> 16) | (e1 & 0xFFFF0000u);
}

static __device__ void decode_segment(const gpu_desc &d, const uint32_t *tab, uint32_t seg) {
    const uint32_t lane = threadIdx.x & 31, lane_lt = (1u << lane) - 1;
    const uint64_t seg_elems = (uint64_t)128 * d.steps, base = seg * seg_elems;
    const uint32_t m = (uint32_t)(d.n - base < seg_elems ? d.n - base : seg_elems);
    const uint32_t start = d.seg_start[seg];
    const uint32_t limit =
        (uint32_t)((seg + 1 < d.n_segments ? d.seg_start[seg + 1] : d.code_words) - start);
    const uint8_t *raw = d.raw + base;
    uint16_t *out = d.out + base;
    word_window w;
    window_init(w, d.code + start, limit, lane);
    lane_state s = {0, 0, 0};
    refill(s, lane * 4 < m, w, lane_lt);
    s.state = (uint32_t)s.buf & ((1u << d.table_log) - 1u);
    s.buf >>= d.table_log;
    s.cnt -= (int)d.table_log;

    const uint32_t full = m / 128;
    const uint32_t *raw4 = (const uint32_t *)raw;
    uint2 *out4 = (uint2 *)out;
    /* raw bytes are loaded one step ahead of their use */
    uint32_t r_next = full ? __ldg(raw4 + lane) : 0;
    for (uint32_t j = 0; j < full; j++) {
        uint32_t r = r_next;
        if (j + 1 < full) r_next = __ldg(raw4 + (j + 1) * 32 + lane);
        refill(s, true, w, lane_lt);
        uint32_t e0 = decode_one(s, tab), e1 = decode_one(s, tab);
        refill(s, true, w, lane_lt);
        uint32_t e2 = decode_one(s, tab), e3 = decode_one(s, tab);
        out4[j * 32 + lane] = make_uint2(join2(r, 0x1100, e0, e1), join2(r, 0x3322, e2, e3));
    }
    if (full * 128 == m) return;
    /* the last, partial step: element by element, as the reference decoder does */
    const uint32_t k0 = full * 128 + lane * 4;
    for (uint32_t h = 0; h < 4; h += 2) {
        refill(s, k0 + h < m, w, lane_lt);
        for (uint32_t g = h; g < h + 2; g++)
            if (k0 + g < m) {
                uint32_t e = decode_one(s, tab), rb = raw[k0 + g];
                out[k0 + g] = (uint16_t)((rb & 0x80u) << 8 | (e >> 16) | (rb & 0x7Fu));
            }
    }
}

/* Grid: one CTA per WARPS_PER_CTA consecutive segments of one tensor; one warp per segment. */
__global__ void __launch_bounds__(WARPS_PER_CTA * 32)
    df11_decode_kernel(const gpu_desc *__restrict__ descs, int n_desc) {
    extern __shared__ uint32_t tab[];
    int lo = 0, hi = n_desc - 1;
    while (lo < hi) { /* last descriptor with cta_begin <= blockIdx.x */
        int mid = (lo + hi + 1) / 2;
        if (descs[mid].cta_begin <= blockIdx.x) lo = mid;
        else hi = mid - 1;
    }
    const gpu_desc d = descs[lo];
    const uint32_t L = 1u << d.table_log;
    for (uint32_t i = threadIdx.x; i < L; i += blockDim.x) tab[i] = __ldg(d.table + i);
    __syncthreads();
    uint32_t seg = (blockIdx.x - d.cta_begin) * WARPS_PER_CTA + threadIdx.x / 32;
    if (seg < d.n_segments) decode_segment(d, tab, seg);
}

static err cuda_fail(cudaError_t c, const char *what) {
    return err_set(ERR_CUDA, "%s: %s", what, cudaGetErrorString(c));
}
#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t c_ = (call);                                                                   \
        if (c_ != cudaSuccess) return cuda_fail(c_, what);                                         \
    } while (0)

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
        if (b->n) tans_decode_table(b->count, b->table_log, tables + toff);
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
    size_t smem = sizeof(uint32_t) << DF11_TANS_MAX_LOG;
    df11_decode_kernel<<<p->n_ctas, WARPS_PER_CTA * 32, smem, stream>>>(p->d_desc, p->n);
    CUDA_TRY(cudaGetLastError(), "df11 decode launch");
#ifdef DF11_CUDA_SYNC_DEBUG
    CUDA_TRY(cudaStreamSynchronize(stream), "df11 decode");
#endif
    return ERR_OK;
}
