/* tans: normalization, spread and the decode/encode tables of df11's tANS coder.
 * The construction follows Duda's tANS as popularized by FSE (zstd's doc/
 * zstd_compression_format.md, "FSE"): a symbol with count c owns c of the 2^R states; a
 * decoder state i yields spread[i] and the next state base + (nbits bits of the stream).
 * Written from the format description in df11/FORMAT.md. */
#include "df11/tans.h"

#include <math.h>
#include <string.h>

#include "core/err.h"

static int floor_log2(uint32_t x) { return 31 - __builtin_clz(x); }

/* Greedy normalization: start from the proportional floor (at least 1), then move units one
 * at a time where they change the coded size hist[s]*log2(1/c[s]) the most. */
void tans_normalize(const uint64_t hist[256], int table_log, uint16_t count[256]) {
    const uint32_t L = 1u << table_log;
    uint64_t total = 0;
    for (int s = 0; s < 256; s++)
        total += hist[s];
    CHECK(total > 0);
    uint32_t sum = 0;
    for (int s = 0; s < 256; s++) {
        count[s] = 0;
        if (!hist[s]) continue;
        uint64_t c = (uint64_t)((double)hist[s] * L / (double)total);
        count[s] = (uint16_t)(c < 1 ? 1 : c);
        sum += count[s];
    }
    while (sum < L) {
        int best = -1;
        double gain = -1;
        for (int s = 0; s < 256; s++) {
            if (!hist[s]) continue;
            double g = (double)hist[s] * log2((count[s] + 1.0) / count[s]);
            if (g > gain) gain = g, best = s;
        }
        count[best]++, sum++;
    }
    while (sum > L) {
        int best = -1;
        double loss = INFINITY;
        for (int s = 0; s < 256; s++) {
            if (count[s] <= 1) continue;
            double l = (double)hist[s] * log2((double)count[s] / (count[s] - 1.0));
            if (l < loss) loss = l, best = s;
        }
        CHECK(best >= 0); /* more present symbols than states */
        count[best]--, sum--;
    }
}

void tans_spread(const uint16_t count[256], int table_log, uint8_t *spread) {
    const uint32_t L = 1u << table_log, mask = L - 1;
    const uint32_t step = (L >> 1) + (L >> 3) + 3; /* odd for L >= 16: visits every state */
    uint32_t pos = 0;
    for (int s = 0; s < 256; s++)
        for (uint32_t i = 0; i < count[s]; i++) {
            spread[pos] = (uint8_t)s;
            pos = (pos + step) & mask;
        }
}

void tans_decode_table(const uint16_t count[256], int table_log, uint32_t *table) {
    const uint32_t L = 1u << table_log;
    uint8_t spread[1 << DF11_TANS_MAX_LOG];
    uint32_t next[256];
    tans_spread(count, table_log, spread);
    for (int s = 0; s < 256; s++)
        next[s] = count[s];
    for (uint32_t i = 0; i < L; i++) {
        uint32_t s = spread[i], x = next[s]++;
        uint32_t nb = (uint32_t)(table_log - floor_log2(x));
        uint32_t base = (x << nb) - L;
        table[i] = base | nb << 12 | (s << 7) << 16;
    }
}

void tans_encoder_init(const uint16_t count[256], int table_log, tans_enc *e) {
    const uint32_t L = 1u << table_log;
    uint8_t spread[1 << DF11_TANS_MAX_LOG];
    uint16_t seen[256] = {0}, first[256];
    tans_spread(count, table_log, spread);
    e->table_log = table_log;
    uint32_t at = 0;
    memset(e->sym, 0, sizeof e->sym);
    for (int s = 0; s < 256; s++) {
        first[s] = (uint16_t)at;
        at += count[s];
        if (!count[s]) continue;
        e->sym[s].base = (int16_t)(first[s] - count[s]);
        e->sym[s].k = (uint8_t)(table_log - floor_log2(count[s]));
        e->sym[s].thresh = (uint32_t)count[s] << e->sym[s].k;
    }
    for (uint32_t i = 0; i < L; i++) {
        uint32_t s = spread[i];
        e->state[first[s] + seen[s]++] = (uint16_t)(L + i);
    }
}
