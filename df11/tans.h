/* tans: table construction for the tANS coder of df11 (FORMAT.md, "Tables"). Shared by the
 * encoder, the CPU decoder and the CUDA decoder's host-side setup, so the three can never
 * disagree on a table. */
#ifndef DF11_TANS_H
#define DF11_TANS_H

#include <stdint.h>

#define DF11_TANS_MAX_LOG 12
#define DF11_TANS_MIN_LOG 5

/* Normalizes a histogram of 256 exponent values (total > 0) to counts summing to
 * 2^table_log, every present value keeping a count >= 1, greedily minimizing the coded size.
 * Needs at most 2^table_log distinct present values. */
void tans_normalize(const uint64_t hist[256], int table_log, uint16_t count[256]);

/* Spreads the symbols over the table positions (FORMAT.md "Spread"): spread[i] = symbol. */
void tans_spread(const uint16_t count[256], int table_log, uint8_t *spread);

/* Decode table entry i (state i): bits 0-11 base, 12-15 nbits, 16-31 exponent << 7. */
#define TANS_ENTRY_BASE(e) ((e)&0xFFFu)
#define TANS_ENTRY_NBITS(e) (((e) >> 12) & 0xFu)
#define TANS_ENTRY_EXP(e) ((e) >> 23)
void tans_decode_table(const uint16_t count[256], int table_log, uint32_t *table);

/* Encoder tables: for symbol s, the state after coding s from y in [count, 2count) is
 * state[first[s] + y - count[s]] = state[sym[s].base + y]; nbits = sym[s].k - (x < sym[s].thresh).
 * A symbol's three values share 8 bytes, one load in the encoder's inner loop. */
typedef struct tans_enc_sym {
    uint32_t thresh;
    int16_t base; /* first - count */
    uint8_t k;
    uint8_t unused;
} tans_enc_sym;

typedef struct tans_enc {
    int table_log;
    tans_enc_sym sym[256];
    uint16_t state[1 << DF11_TANS_MAX_LOG];
} tans_enc;

void tans_encoder_init(const uint16_t count[256], int table_log, tans_enc *e);

#endif
