/* decode: the CPU reference decoder. Laid out like FORMAT.md "Segment decoding", for clarity
 * first; segments are independent, so OpenMP runs them in parallel. */
#include <stdlib.h>
#include <string.h>

#include "df11/df11.h"
#include "df11/tans.h"

static uint32_t rd32(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One lane's decoder: the tANS state and a bit buffer read LSB first. */
typedef struct lane {
    uint32_t state;
    uint64_t buf;
    int cnt; /* valid bits in buf */
} lane;

static uint32_t take_bits(lane *ln, uint32_t nb) {
    uint32_t v = (uint32_t)ln->buf & ((1u << nb) - 1);
    ln->buf >>= nb;
    ln->cnt -= (int)nb;
    return v;
}

/* Reassembles a BF16 value from its exponent and its sign+mantissa byte. */
static uint16_t bf16_join(uint32_t exponent, uint8_t raw) {
    return (uint16_t)((raw & 0x80u) << 8 | exponent << 7 | (raw & 0x7Fu));
}

typedef struct seg_reader {
    const uint8_t *code;
    uint64_t ptr, end; /* word indexes */
} seg_reader;

/* A refill point: each active lane holding fewer than 24 bits takes the next word, in lane
 * order. active[l] says whether lane l still has symbols from this point on. */
static int refill(seg_reader *r, lane *lanes, const int *active) {
    for (int l = 0; l < DF11_LANES; l++) {
        if (!active[l] || lanes[l].cnt >= DF11_REFILL_BELOW) continue;
        if (r->ptr >= r->end) return 0;
        lanes[l].buf |= (uint64_t)rd32(r->code + 4 * r->ptr++) << lanes[l].cnt;
        lanes[l].cnt += 32;
    }
    return 1;
}

static err decode_segment(const df11_blob *b, const uint32_t *table, uint32_t s, uint16_t *dst) {
    const uint64_t lg = DF11_LANES * DF11_GROUP, seg = lg * b->steps;
    const uint64_t base = (uint64_t)s * seg, m = b->n - base < seg ? b->n - base : seg;
    seg_reader r = {b->code, rd32(b->seg_start + 4u * s),
                    s + 1 < b->n_segments ? rd32(b->seg_start + 4u * (s + 1)) : b->code_words};
    lane lanes[DF11_LANES];
    int active[DF11_LANES];
    memset(lanes, 0, sizeof lanes);
    /* initial state: the first table_log bits of each lane that has any symbol */
    for (int l = 0; l < DF11_LANES; l++) active[l] = (uint64_t)l * DF11_GROUP < m;
    if (!refill(&r, lanes, active)) goto overrun;
    for (int l = 0; l < DF11_LANES; l++)
        if (active[l]) lanes[l].state = take_bits(&lanes[l], (uint32_t)b->table_log);
    /* steps: lane l handles elements j*128 + 4l + g, g = 0..3, in two pairs */
    for (uint64_t j = 0; j * lg < m; j++)
        for (int h = 0; h < DF11_GROUP; h += 2) {
            for (int l = 0; l < DF11_LANES; l++) active[l] = j * lg + (uint64_t)l * DF11_GROUP + h < m;
            if (!refill(&r, lanes, active)) goto overrun;
            for (int l = 0; l < DF11_LANES; l++)
                for (int g = h; g < h + 2; g++) {
                    uint64_t k = j * lg + (uint64_t)l * DF11_GROUP + g;
                    if (k >= m) continue;
                    uint32_t e = table[lanes[l].state];
                    uint32_t bits = take_bits(&lanes[l], TANS_ENTRY_NBITS(e));
                    lanes[l].state = TANS_ENTRY_BASE(e) + bits;
                    dst[base + k] = bf16_join(TANS_ENTRY_EXP(e), b->raw[base + k]);
                }
        }
    FAIL_IF(r.ptr != r.end, ERR_FORMAT, "segment %u: code ends at word %llu, expected %llu", s,
            (unsigned long long)r.ptr, (unsigned long long)r.end);
    return ERR_OK;
overrun:
    FAIL(ERR_FORMAT, "segment %u: code runs past its end (word %llu)", s,
         (unsigned long long)r.end);
}

err df11_decode_cpu(const df11_blob *b, uint16_t *dst) {
    if (b->n == 0) return ERR_OK;
    uint32_t *table = malloc(sizeof(uint32_t) << b->table_log);
    FAIL_IF(!table, ERR_NOMEM, "out of memory");
    tans_decode_table(b->count, b->table_log, table);
    err first = ERR_OK;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t s = 0; s < (int64_t)b->n_segments; s++) {
        err e = decode_segment(b, table, (uint32_t)s, dst);
        if (e) {
#pragma omp critical
            if (!first) first = e, snprintf(msg, sizeof msg, "%s", err_msg());
        }
    }
    free(table);
    if (first) return err_set(first, "%s", msg);
    return ERR_OK;
}
