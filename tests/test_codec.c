/* test_codec: exact round trips of the df11 codec (encoder + CPU reference decoder) on every
 * kind of BF16 data the issue names, and the ratio against the entropy bound. */
#include <stdlib.h>

#include "df11/df11.h"
#include "tests/testutil.h"

/* Encodes, parses, decodes and compares bit for bit; returns bits per weight (all bytes). */
static double roundtrip(const char *what, const uint16_t *x, uint64_t n, const df11_params *p) {
    uint8_t *blob = NULL;
    size_t len = 0;
    err e = df11_encode(x, n, p, &blob, &len);
    EXPECT(e == ERR_OK, "%s: encode: %s", what, err_msg());
    if (e) return 0;
    df11_blob b;
    e = df11_blob_parse(blob, len, &b);
    EXPECT(e == ERR_OK, "%s: parse: %s", what, err_msg());
    uint16_t *y = malloc((n ? n : 1) * 2);
    memset(y, 0xA5, (n ? n : 1) * 2); /* poison: every element must be written */
    if (!e) {
        e = df11_decode_cpu(&b, y);
        EXPECT(e == ERR_OK, "%s: decode: %s", what, err_msg());
        EXPECT(b.n == n, "%s: n %llu vs %llu", what, (unsigned long long)b.n,
               (unsigned long long)n);
        EXPECT(n == 0 || memcmp(x, y, n * 2) == 0, "%s: decoded values differ", what);
        EXPECT(df11_check(&b, y) == ERR_OK, "%s: crc: %s", what, err_msg());
    }
    free(y);
    free(blob);
    return n ? (double)len * 8 / (double)n : 0;
}

static void check_ratio(const char *what, const uint16_t *x, uint64_t n) {
    double bpw = roundtrip(what, x, n, NULL);
    double bound = df11_exponent_entropy(x, n) + 8;
    printf("  %-28s n=%-9llu %.4f bits/weight, bound %.4f, over by %.4f\n", what,
           (unsigned long long)n, bpw, bound, bpw - bound);
    EXPECT(bpw - bound <= 0.05, "%s: %.4f bits/weight is more than 0.05 over %.4f", what, bpw,
           bound);
}

static void test_distributions(void) {
    const uint64_t n = 4u << 20;
    uint16_t *x = malloc(n * 2);
    tu_rng r = {42};
    const double scales[] = {1e-3, 0.02, 0.5, 8.0};
    char what[64];
    for (int i = 0; i < 4; i++) {
        for (uint64_t k = 0; k < n; k++) x[k] = tu_bf16((float)(scales[i] * tu_normal(&r)));
        snprintf(what, sizeof what, "normal sigma=%g", scales[i]);
        check_ratio(what, x, n);
        for (uint64_t k = 0; k < n; k++) x[k] = tu_bf16((float)(scales[i] * tu_student_t(&r, 4)));
        snprintf(what, sizeof what, "student-t(4) scale=%g", scales[i]);
        check_ratio(what, x, n);
    }
    free(x);
}

/* Every one of the 65536 patterns: NaN payloads, both infinities, subnormals, -0 and
 * exponents 240-255, in order, shuffled, and as a rare minority inside normal data. */
static void test_all_patterns(void) {
    uint16_t *x = malloc(65536 * 2 * 8);
    for (uint32_t i = 0; i < 65536; i++) x[i] = (uint16_t)i;
    roundtrip("all patterns, in order", x, 65536, NULL);
    tu_rng r = {7};
    for (uint32_t i = 65535; i > 0; i--) {
        uint32_t j = (uint32_t)(tu_next(&r) % (i + 1));
        uint16_t t = x[i];
        x[i] = x[j], x[j] = t;
    }
    roundtrip("all patterns, shuffled", x, 65536, NULL);
    uint64_t n = 65536 * 8;
    for (uint64_t k = 0; k < n; k++) x[k] = tu_bf16((float)(0.02 * tu_normal(&r)));
    for (uint32_t i = 0; i < 65536; i++) x[(uint64_t)i * 8 + (i % 8)] = (uint16_t)i;
    roundtrip("all patterns inside normal data", x, n, NULL);
    free(x);
}

static void test_shapes(void) {
    const uint64_t lens[] = {0, 1, 2, 3, 4, 5, 127, 128, 129, 4095, 4096, 4097, 65535, 65536,
                             65537, 3 * 65536 + 17, 1000003};
    tu_rng r = {99};
    uint16_t *x = malloc(1000003 * 2);
    char what[64];
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        for (uint64_t k = 0; k < lens[i]; k++) x[k] = tu_bf16((float)tu_normal(&r));
        snprintf(what, sizeof what, "normal n=%llu", (unsigned long long)lens[i]);
        roundtrip(what, x, lens[i], NULL);
    }
    const uint16_t consts[] = {0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC1, 0x0001};
    for (size_t i = 0; i < sizeof consts / sizeof *consts; i++)
        for (uint64_t n = 1; n <= 200000; n = n * 7 + 3) {
            for (uint64_t k = 0; k < n; k++) x[k] = consts[i];
            snprintf(what, sizeof what, "constant 0x%04x n=%llu", consts[i], (unsigned long long)n);
            roundtrip(what, x, n, NULL);
        }
    /* two symbols, one of them rare: the smallest probability a table can give */
    for (uint64_t k = 0; k < 1000003; k++) x[k] = (k % 100003) ? 0x3F80 : 0x0001;
    roundtrip("two symbols, one rare", x, 1000003, NULL);
    free(x);
}

/* Other segment geometries and table sizes, which the format records per blob. */
static void test_params(void) {
    tu_rng r = {5};
    const uint64_t n = 300007;
    uint16_t *x = malloc(n * 2);
    for (uint64_t k = 0; k < n; k++) x[k] = tu_bf16((float)(0.05 * tu_student_t(&r, 3)));
    char what[64];
    const uint32_t steps[] = {1, 2, 7, 64, 511, 2048};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++)
        for (int tl = 5; tl <= 12; tl += 7) {
            df11_params p;
            df11_params_init(&p);
            p.single_segment_max = 0;
            p.steps = steps[i];
            p.table_log = tl;
            snprintf(what, sizeof what, "steps=%u table_log=%d", steps[i], tl);
            roundtrip(what, x, n, &p);
        }
    free(x);
}

int main(void) {
    test_shapes();
    test_all_patterns();
    test_params();
    test_distributions();
    return tu_finish("test_codec");
}
