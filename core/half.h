/* half: BF16 and F16 conversions on the host. f32 -> bf16 rounds to nearest even as PyTorch's
 * .to(torch.bfloat16) does, and keeps NaN a quiet NaN; f16 follows IEEE 754 binary16. */
#ifndef CORE_HALF_H
#define CORE_HALF_H

#include <stdint.h>
#include <string.h>

#include "core/dtype.h"

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* The float nearest to f that a bf16 can hold (a round trip through bf16). */
static inline float bf16_round(float f) { return bf16_to_f32(f32_to_bf16(f)); }

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* The n values of type dt (BF16, F16 or F32, which is copied) at src as floats in dst. */
void half_widen(dtype dt, const void *src, int64_t n, float *dst);

#endif
