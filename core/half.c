/* half.c: IEEE binary16 conversions (half.h). */
#include "core/half.h"

#include "core/err.h"

float f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu, u;
    if (e == 0x1F) u = s | 0x7F800000u | m << 13; /* inf, NaN */
    else if (e != 0) u = s | (e + 112) << 23 | m << 13;
    else if (m == 0) u = s;
    else { /* subnormal: normalise */
        int k = 0;
        while (!(m & 0x400u)) {
            m <<= 1;
            k++;
        }
        u = s | (uint32_t)(113 - k) << 23 | (m & 0x3FFu) << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(s | 0x7E00u);
    if (a >= 0x477FF000u) return (uint16_t)(s | 0x7C00u); /* rounds to inf */
    if (a < 0x38800000u) { /* subnormal or zero: round at 2^-24 */
        if (a < 0x33000000u) return (uint16_t)s;
        uint32_t m = (a & 0x7FFFFFu) | 0x800000u, sh = 126 - (a >> 23);
        uint32_t r = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(s | r);
    }
    uint32_t r = a - 0x38000000u; /* rebias 127 -> 15, in place */
    r = (r + 0xFFFu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(s | r);
}

void half_widen(dtype dt, const void *src, int64_t n, float *dst) {
    const uint16_t *h = src;
    switch (dt) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(h[i]);
        break;
    case DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = f16_to_f32(h[i]);
        break;
    default: CHECK(!"half_widen: not a float type");
    }
}
