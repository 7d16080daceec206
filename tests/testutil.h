/* testutil: the few helpers the C tests share: a failure-counting EXPECT, a seeded RNG with
 * normal and Student-t draws, float -> BF16 rounding as torch does it, and a model output kept
 * for comparing values and bits. Header-only. */
#ifndef TESTS_TESTUTIL_H
#define TESTS_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"

static int tu_failures;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond);                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* splitmix64: small, seeded, good enough for test data. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double tu_uniform(tu_rng *r) { return (double)((tu_next(r) >> 11) + 1) * 0x1p-53; }

static inline double tu_normal(tu_rng *r) {
    return sqrt(-2.0 * log(tu_uniform(r))) * cos(6.283185307179586 * tu_uniform(r));
}

/* Student-t with nu degrees of freedom: Z / sqrt(chi2_nu / nu), chi2 as a sum of squares. */
static inline double tu_student_t(tu_rng *r, int nu) {
    double chi2 = 0;
    for (int i = 0; i < nu; i++) {
        double z = tu_normal(r);
        chi2 += z * z;
    }
    return tu_normal(r) / sqrt(chi2 / nu);
}

/* float -> BF16 bits, round to nearest even; NaN stays a quiet NaN (as torch's conversion). */
static inline uint16_t tu_bf16(float f) { return f32_to_bf16(f); }

/* A forward's output: values as floats and the raw bytes (F32 CPU, BF16 GPU); owns both. */
typedef struct tu_result {
    float *v;
    void *raw;
    size_t raw_bytes;
    int64_t n;
} tu_result;

static inline void tu_result_free(tu_result *r) {
    free(r->v);
    free(r->raw);
    memset(r, 0, sizeof *r);
}

/* Whether both outputs are there and bit for bit the same. */
static inline int tu_same_bits(const tu_result *a, const tu_result *b) {
    return a->raw && b->raw && a->raw_bytes == b->raw_bytes &&
           !memcmp(a->raw, b->raw, a->raw_bytes);
}

static inline int tu_finish(const char *name) {
    if (tu_failures) fprintf(stderr, "%s: %d check(s) failed\n", name, tu_failures);
    else printf("%s: all checks passed\n", name);
    return tu_failures ? 1 : 0;
}

#endif
