/* encode: BF16 tensor -> df11 blob (FORMAT.md). Multi-threaded with OpenMP over segments:
 * a histogram pass, one table, then every segment coded independently into its own word
 * buffer; the blob is assembled once the segment sizes are known. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "df11/blob_layout.h"
#include "df11/df11.h"
#include "df11/tans.h"

void df11_params_init(df11_params *p) {
    p->table_log = DF11_MAX_TABLE_LOG;
    p->steps = 512;
    p->threads = 0;
    p->single_segment_max = 256 * 1024;
}

/* Per-thread scratch for one segment: per lane its exponents, the coded chunk of every
 * symbol (value, width) in decode order and its packed words; and per refill point the
 * lanes that take a word there. */
typedef struct seg_scratch {
    uint32_t lane_syms;   /* GROUP * steps */
    uint16_t *val;        /* LANES * lane_syms */
    uint8_t *nb;          /* LANES * lane_syms */
    uint32_t *lane_words; /* LANES * lane_cap */
    uint32_t lane_cap;
    uint32_t n_lane_words[DF11_LANES];
    uint32_t *take; /* 1 + 2 * steps refill points: the lanes that take a word there */
} seg_scratch;

static int scratch_init(seg_scratch *sc, uint32_t steps) {
    sc->lane_syms = DF11_GROUP * steps;
    /* worst case a lane holds R + 12 bits per symbol, plus one partial word */
    sc->lane_cap = (uint32_t)(((uint64_t)sc->lane_syms * 12 + 12) / 32 + 2);
    size_t syms = (size_t)DF11_LANES * sc->lane_syms;
    sc->val = malloc(syms * sizeof *sc->val);
    sc->nb = malloc(syms);
    sc->lane_words = malloc((size_t)DF11_LANES * sc->lane_cap * sizeof(uint32_t));
    sc->take = malloc((1 + 2 * (size_t)steps) * sizeof *sc->take);
    return sc->val && sc->nb && sc->lane_words && sc->take;
}

static void scratch_free(seg_scratch *sc) {
    free(sc->val);
    free(sc->nb);
    free(sc->lane_words);
    free(sc->take);
}

/* One tANS encode step of symbol s from state x: the chunk (value, width) and the new state. */
#define ENC_STEP(x, s, val, nb)                                                                    \
    do {                                                                                           \
        const tans_enc_sym y_ = enc->sym[s];                                                       \
        uint32_t b_ = y_.k - ((x) < y_.thresh);                                                    \
        (val) = (uint16_t)((x) & ((1u << b_) - 1));                                                \
        (nb) = (uint8_t)b_;                                                                        \
        (x) = enc->state[y_.base + (int32_t)((x) >> b_)];                                          \
    } while (0)

/* Packs lane l's bitstream in decode order: the R-bit initial state x0 - L, then each
 * symbol's chunk, LSB first, two chunks (<= 24 bits) at a time. Alongside, it replays the
 * decoder's bit count to mark the refill points at which the lane takes a word (FORMAT.md
 * "Segment decoding"): point 0 is before the initial state, point q+1 before the lane's
 * symbols 2q and 2q+1; the lane takes a word there while it holds fewer than 24 bits. */
static void pack_lane(seg_scratch *sc, int l, uint32_t c, uint32_t x0, int R) {
    uint16_t *val = sc->val + (size_t)l * sc->lane_syms;
    uint8_t *nb = sc->nb + (size_t)l * sc->lane_syms;
    uint32_t *w = sc->lane_words + (size_t)l * sc->lane_cap, nw = 0;
    sc->n_lane_words[l] = 0;
    if (c == 0) return;
    if (c & 1) val[c] = 0, nb[c] = 0; /* room: lane_syms is a multiple of GROUP */
    const uint32_t bit = 1u << l;
    uint64_t acc = x0 - (1u << R);
    int accn = R, held = 32 - R;
    sc->take[0] |= bit;
    for (uint32_t q = 0; 2 * q < c; q++) {
        uint32_t n0 = nb[2 * q], n2 = n0 + nb[2 * q + 1];
        uint64_t v = (uint64_t)val[2 * q] | (uint64_t)val[2 * q + 1] << n0;
        if (held < DF11_REFILL_BELOW) {
            sc->take[q + 1] |= bit;
            held += 32;
        }
        held -= (int)n2;
        acc |= v << accn;
        accn += (int)n2;
        if (accn >= 32) {
            w[nw++] = (uint32_t)acc;
            acc >>= 32;
            accn -= 32;
        }
    }
    if (accn > 0) w[nw++] = (uint32_t)acc;
    sc->n_lane_words[l] = nw;
}

/* A lane's symbol i, read straight from the segment's elements: element
 * (i / GROUP) LANES GROUP + l GROUP + i % GROUP, from the lane's first element e. */
#define EXP(e, i)                                                                                  \
    ((uint32_t)((e)[(size_t)((i) / DF11_GROUP) * (DF11_LANES * DF11_GROUP) + (i) % DF11_GROUP] >>  \
                7) &                                                                               \
     0xFF)

/* Codes lanes l..l+3 backwards (tANS encodes in reverse) and packs them. The four state
 * chains are independent, so they run interleaved: each step's table lookup waits on the
 * previous one, and four chains hide that latency. c[] may differ only in a segment's tail. */
static void encode_lanes4(const tans_enc *enc, seg_scratch *sc, const uint16_t *src, int l,
                          const uint32_t c[4]) {
    const uint32_t L = 1u << enc->table_log;
    const size_t ls = sc->lane_syms;
    const uint16_t *e[4]; /* each lane's first element */
    uint16_t *val[4];
    uint8_t *nb[4];
    uint32_t x[4], cmin = c[0];
    for (int q = 0; q < 4; q++) {
        e[q] = src + (size_t)(l + q) * DF11_GROUP;
        val[q] = sc->val + (size_t)(l + q) * ls;
        nb[q] = sc->nb + (size_t)(l + q) * ls;
        x[q] = L;
        if (c[q] < cmin) cmin = c[q];
    }
    for (int q = 0; q < 4; q++) /* each lane's symbols past the shortest one, alone */
        for (uint32_t i = c[q]; i-- > cmin;)
            ENC_STEP(x[q], EXP(e[q], i), val[q][i], nb[q][i]);
    for (uint32_t i = cmin; i-- > 0;) {
        ENC_STEP(x[0], EXP(e[0], i), val[0][i], nb[0][i]);
        ENC_STEP(x[1], EXP(e[1], i), val[1][i], nb[1][i]);
        ENC_STEP(x[2], EXP(e[2], i), val[2][i], nb[2][i]);
        ENC_STEP(x[3], EXP(e[3], i), val[3][i], nb[3][i]);
    }
    for (int q = 0; q < 4; q++)
        pack_lane(sc, l + q, c[q], x[q], enc->table_log);
}
#undef ENC_STEP
#undef EXP

/* Interleaves the lanes' words in the order the decoder takes them: at each refill point,
 * every lane marked in take[] takes the next word of its own stream, in lane order; a lane
 * asked for a word past its own end gets a zero word. Returns the segment's word count; out
 * has room for the bound. */
static uint32_t interleave(const seg_scratch *sc, uint32_t points, uint32_t *out) {
    uint32_t next[DF11_LANES] = {0}, ptr = 0;
    for (uint32_t p = 0; p < points; p++)
        for (uint32_t mask = sc->take[p]; mask; mask &= mask - 1) {
            int l = __builtin_ctz(mask);
            const uint32_t *lw = sc->lane_words + (size_t)l * sc->lane_cap;
            out[ptr++] = next[l] < sc->n_lane_words[l] ? lw[next[l]++] : 0;
        }
    for (int l = 0; l < DF11_LANES; l++)
        CHECK(next[l] == sc->n_lane_words[l]);
    return ptr;
}

static int encode_segment(const tans_enc *enc, const uint16_t *src, uint64_t m, seg_scratch *sc,
                          df11_seg_code *out) {
    const uint32_t lg = DF11_LANES * DF11_GROUP;
    const uint32_t steps = (uint32_t)((m + lg - 1) / lg);
    /* element k = j lg + l GROUP + g is lane l's symbol j GROUP + g: every lane has the full
     * steps' symbols, and the last, partial step gives the first lanes some more */
    uint32_t lane_count[DF11_LANES];
    const uint32_t full = (uint32_t)(m / lg), rem = (uint32_t)(m % lg);
    for (uint32_t l = 0; l < DF11_LANES; l++) {
        uint32_t extra = rem > l * DF11_GROUP ? rem - l * DF11_GROUP : 0;
        lane_count[l] = full * DF11_GROUP + (extra < DF11_GROUP ? extra : DF11_GROUP);
    }
    const uint32_t points = 1 + 2 * steps;
    memset(sc->take, 0, points * sizeof *sc->take);
    for (int l = 0; l < DF11_LANES; l += 4)
        encode_lanes4(enc, sc, src, l, lane_count + l);
    /* pad words: at most one per lane per refill point past its end, bounded by one a lane
     * per step half; in practice one or two a lane */
    uint32_t bound = 0;
    for (int l = 0; l < DF11_LANES; l++)
        bound += sc->n_lane_words[l];
    bound += DF11_LANES * (2 * (uint32_t)((m + lg - 1) / lg) + 1);
    out->words = malloc((size_t)bound * sizeof(uint32_t));
    if (!out->words) return 0;
    out->n_words = interleave(sc, points, out->words);
    return 1;
}

static void histogram(const uint16_t *src, uint64_t n, uint64_t hist[256]) {
    memset(hist, 0, 256 * sizeof *hist);
#pragma omp parallel
    {
        /* four counters a value: a run of one exponent would otherwise wait on its own
         * increments */
        uint64_t h[4][256] = {{0}};
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)(n / 4); i++) {
            const uint16_t *p = src + 4 * i;
            h[0][(p[0] >> 7) & 0xFF]++, h[1][(p[1] >> 7) & 0xFF]++;
            h[2][(p[2] >> 7) & 0xFF]++, h[3][(p[3] >> 7) & 0xFF]++;
        }
#pragma omp single nowait
        for (uint64_t i = n / 4 * 4; i < n; i++)
            h[0][(src[i] >> 7) & 0xFF]++;
#pragma omp critical
        for (int s = 0; s < 256; s++)
            hist[s] += h[0][s] + h[1][s] + h[2][s] + h[3][s];
    }
}

static int pick_table_log(const uint64_t hist[256], int wanted) {
    int present = 0;
    for (int s = 0; s < 256; s++)
        present += hist[s] != 0;
    int R = wanted < DF11_TANS_MIN_LOG ? DF11_TANS_MIN_LOG : wanted;
    while ((1 << R) < present)
        R++; /* only for table_log < 8 */
    return R;
}

static err encode_segments(const uint16_t *src, uint64_t n, const df11_params *p,
                           const tans_enc *enc, df11_seg_code *segs, uint32_t n_seg) {
    const uint64_t seg_elems = (uint64_t)DF11_LANES * DF11_GROUP * p->steps;
    int failed = 0;
#pragma omp parallel
    {
        seg_scratch sc;
        int ok = scratch_init(&sc, p->steps);
#pragma omp for schedule(dynamic, 1)
        for (int64_t s = 0; s < (int64_t)n_seg; s++) {
            uint64_t off = (uint64_t)s * seg_elems;
            uint64_t m = n - off < seg_elems ? n - off : seg_elems;
            if (!ok || !encode_segment(enc, src + off, m, &sc, &segs[s])) {
#pragma omp atomic write
                failed = 1;
            }
        }
        scratch_free(&sc);
    }
    FAIL_IF(failed, ERR_NOMEM, "out of memory encoding %llu elements", (unsigned long long)n);
    return ERR_OK;
}

err df11_encode(const uint16_t *src, uint64_t n, const df11_params *p, uint8_t **blob,
                size_t *len) {
    df11_params def;
    if (!p) df11_params_init(&def), p = &def;
    FAIL_IF(
        p->table_log < 1 || p->table_log > DF11_MAX_TABLE_LOG || p->steps < 1 || p->steps > 65536,
        ERR_ARG, "df11_encode: bad parameters (table_log %d, steps %u)", p->table_log, p->steps);
    if (p->threads > 0) omp_set_num_threads(p->threads);
    df11_params eff = *p;
    if (n > 0 && n <= p->single_segment_max)
        eff.steps = (uint32_t)((n + DF11_LANES * DF11_GROUP - 1) / (DF11_LANES * DF11_GROUP));
    p = &eff;
    *blob = NULL;
    *len = 0;
    uint64_t hist[256];
    histogram(src, n, hist);
    df11_layout lay;
    memset(&lay, 0, sizeof lay);
    lay.n = n;
    lay.steps = p->steps;
    lay.table_log = n ? pick_table_log(hist, p->table_log) : 0;
    if (n) tans_normalize(hist, lay.table_log, lay.count);
    const uint64_t seg_elems = (uint64_t)DF11_LANES * DF11_GROUP * p->steps;
    uint64_t n_seg64 = (n + seg_elems - 1) / seg_elems;
    FAIL_IF(n_seg64 > UINT32_MAX, ERR_UNSUPPORTED, "tensor of %llu elements is too large",
            (unsigned long long)n);
    lay.n_segments = (uint32_t)n_seg64;
    df11_seg_code *segs = calloc(lay.n_segments ? lay.n_segments : 1, sizeof *segs);
    uint32_t *seg_start = malloc((lay.n_segments ? lay.n_segments : 1) * sizeof(uint32_t));
    err e = (!segs || !seg_start) ? err_set(ERR_NOMEM, "out of memory") : ERR_OK;
    if (!e && n) {
        tans_enc *enc = malloc(sizeof *enc);
        if (!enc)
            e = err_set(ERR_NOMEM, "out of memory");
        else {
            tans_encoder_init(lay.count, lay.table_log, enc);
            e = encode_segments(src, n, p, enc, segs, lay.n_segments);
            free(enc);
        }
    }
    if (!e) {
        uint64_t words = 0;
        for (uint32_t s = 0; s < lay.n_segments; s++) {
            if (words > UINT32_MAX) break;
            seg_start[s] = (uint32_t)words;
            words += segs[s].n_words;
        }
        if (words > UINT32_MAX) e = err_set(ERR_UNSUPPORTED, "code stream too long");
        lay.code_words = words;
    }
    if (!e) {
        lay.crc = df11_crc32(src, n * 2);
        e = df11_layout_write(&lay, src, seg_start, segs, blob, len);
    }
    for (uint32_t s = 0; segs && s < lay.n_segments; s++)
        free(segs[s].words);
    free(segs);
    free(seg_start);
    return e;
}
