/* bench_codec: the codec's figures, each beside its ceiling measured in the same run.
 * Per size: ratio and bits per weight against the entropy bound, CPU encode and decode MB/s
 * (all cores, and encode on one core: the median of three runs), GPU decode GB/s of BF16 output,
 * and that rate as a fraction of the device-to-device copy ceiling (read the blob + write the
 * output at the measured copy bandwidth). Also a FLUX double block's ten tensors decoded in one
 * launch. usage: bench_codec [--max-m N] [--real FILE.safetensors] [--quick] */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>

#include "core/cuda/gpu.h"
#include "core/safetensors.h"
#include "df11/cuda/df11_cuda.h"
#include "tests/testutil.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seeded per chunk so the data does not depend on the thread count. */
static void fill(uint16_t *x, uint64_t n, int kind, double scale, uint64_t seed) {
    const uint64_t chunk = 1 << 16;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < (int64_t)((n + chunk - 1) / chunk); c++) {
        tu_rng r = {seed * 1000003 + (uint64_t)c};
        uint64_t end = ((uint64_t)c + 1) * chunk < n ? ((uint64_t)c + 1) * chunk : n;
        for (uint64_t k = (uint64_t)c * chunk; k < end; k++)
            x[k] = tu_bf16((float)(scale * (kind ? tu_student_t(&r, 4) : tu_normal(&r))));
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct gpu_ctx {
    int ok;
    double copy_gbs; /* read + write bytes per second / 1e9 */
    struct CUevent_st *e0, *e1;
} gpu_ctx;

/* Median milliseconds of reps launches of a plan. */
static float time_plan(gpu_ctx *g, df11_cuda_plan *plan, int reps) {
    float ms[64];
    if (reps > 64) reps = 64;
    df11_cuda_decode(plan, NULL); /* warm-up */
    for (int i = 0; i < reps; i++) {
        gpu_event_record(g->e0, NULL);
        df11_cuda_decode(plan, NULL);
        gpu_event_record(g->e1, NULL);
        gpu_event_ms(g->e0, g->e1, &ms[i]);
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
    return ms[reps / 2];
}

static void measure_copy(gpu_ctx *g) {
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (gpu_alloc(&a, bytes) || gpu_alloc(&b, bytes)) return;
    gpu_memset(a, 1, bytes);
    float ms[9];
    for (int i = 0; i < 10; i++) {
        gpu_event_record(g->e0, NULL);
        gpu_copy(b, a, bytes, NULL);
        gpu_event_record(g->e1, NULL);
        gpu_event_ms(g->e0, g->e1, &ms[i ? i - 1 : 0]);
    }
    qsort(ms, 9, sizeof *ms, cmp_float);
    g->copy_gbs = 2.0 * (double)bytes / (ms[4] * 1e-3) / 1e9;
    gpu_free(a);
    gpu_free(b);
}

typedef struct row {
    const char *what;
    uint64_t n;
    double bpw, bound, enc_mbs, enc1_mbs, dec_mbs, gpu_gbs, gpu_frac, ceiling_gbs;
} row;

static void print_row(const row *r) {
    printf("%-22s %9.1fM %8.4f %8.4f %+7.4f %8.1f %8.1f %8.1f", r->what, (double)r->n / 1e6, r->bpw,
           r->bound, r->bpw - r->bound, r->enc_mbs, r->enc1_mbs, r->dec_mbs);
    if (r->gpu_gbs > 0)
        printf(" %8.1f %8.1f %6.1f%%\n", r->gpu_gbs, r->ceiling_gbs, 100 * r->gpu_frac);
    else
        printf(" %8s %8s %7s\n", "-", "-", "-");
}

static void gpu_decode_rate(gpu_ctx *g, const uint8_t *blob, size_t len, const df11_blob *b,
                            row *r) {
    void *d_blob = NULL, *d_out = NULL;
    df11_cuda_plan *plan = NULL;
    df11_cuda_item it;
    if (!g->ok || gpu_alloc(&d_blob, len) || gpu_alloc(&d_out, b->n * 2 + 16)) goto done;
    if (gpu_upload(d_blob, blob, len)) goto done;
    it = (df11_cuda_item){b, d_blob, (uint16_t *)d_out};
    if (df11_cuda_plan_create(&it, 1, &plan)) goto done;
    float ms = time_plan(g, plan, b->n > 100000000 ? 11 : 31);
    r->gpu_gbs = (double)b->n * 2 / (ms * 1e-3) / 1e9;
    /* ceiling: the blob read and the output written at copy bandwidth */
    r->ceiling_gbs = g->copy_gbs * (double)(b->n * 2) / (double)(b->n * 2 + len);
    r->gpu_frac = r->gpu_gbs / r->ceiling_gbs;
done:
    df11_cuda_plan_free(plan);
    gpu_free(d_blob);
    gpu_free(d_out);
}

static void bench_tensor(gpu_ctx *g, const char *what, const uint16_t *x, uint64_t n,
                         int one_core) {
    row r = {what, n, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t *blob = NULL;
    size_t len = 0;
    double t0 = now();
    if (df11_encode(x, n, NULL, &blob, &len)) {
        fprintf(stderr, "%s: encode: %s\n", what, err_msg());
        return;
    }
    r.enc_mbs = (double)n * 2 / (now() - t0) / 1e6;
    if (one_core) { /* the median of three runs on one thread */
        int threads = omp_get_max_threads();
        double r3[3];
        omp_set_num_threads(1);
        for (int k = 0; k < 3; k++) {
            uint8_t *b1 = NULL;
            size_t l1 = 0;
            t0 = now();
            df11_encode(x, n, NULL, &b1, &l1);
            r3[k] = (double)n * 2 / (now() - t0) / 1e6;
            free(b1);
        }
        omp_set_num_threads(threads);
        double lo = fmin(r3[0], fmin(r3[1], r3[2])), hi = fmax(r3[0], fmax(r3[1], r3[2]));
        r.enc1_mbs = r3[0] + r3[1] + r3[2] - lo - hi;
    }
    df11_blob b;
    df11_blob_parse(blob, len, &b);
    uint16_t *y = malloc(n * 2);
    t0 = now();
    df11_decode_cpu(&b, y);
    r.dec_mbs = (double)n * 2 / (now() - t0) / 1e6;
    if (memcmp(x, y, n * 2) != 0) fprintf(stderr, "%s: CPU ROUND TRIP FAILED\n", what);
    r.bpw = 8.0 * (double)len / (double)n;
    r.bound = df11_exponent_entropy(x, n) + 8;
    gpu_decode_rate(g, blob, len, &b, &r);
    print_row(&r);
    fflush(stdout);
    free(y);
    free(blob);
}

/* A FLUX.1 double block: per stream qkv, proj, mlp in/out, modulation (hidden 3072). */
static void bench_flux_block(gpu_ctx *g) {
    const uint64_t shapes[5][2] = {
        {9216, 3072}, {3072, 3072}, {12288, 3072}, {3072, 12288}, {18432, 3072}};
    enum { N = 10 };
    uint8_t *blob[N];
    df11_blob b[N];
    df11_cuda_item it[N];
    void *d_blob[N] = {0}, *d_out[N] = {0};
    uint64_t total = 0, total_len = 0;
    for (int i = 0; i < N; i++) {
        uint64_t n = shapes[i % 5][0] * shapes[i % 5][1];
        uint16_t *x = malloc(n * 2);
        size_t len;
        fill(x, n, 1, 0.02 + 0.005 * i, 100 + (uint64_t)i);
        df11_encode(x, n, NULL, &blob[i], &len);
        df11_blob_parse(blob[i], len, &b[i]);
        free(x);
        if (gpu_alloc(&d_blob[i], len) || gpu_alloc(&d_out[i], n * 2) ||
            gpu_upload(d_blob[i], blob[i], len))
            return;
        it[i] = (df11_cuda_item){&b[i], d_blob[i], (uint16_t *)d_out[i]};
        total += n;
        total_len += len;
    }
    df11_cuda_plan *plan = NULL;
    if (df11_cuda_plan_create(it, N, &plan) == ERR_OK) {
        float ms = time_plan(g, plan, 21);
        double gbs = (double)total * 2 / (ms * 1e-3) / 1e9;
        double ceil = g->copy_gbs * (double)(total * 2) / (double)(total * 2 + total_len);
        printf("\nFLUX double block, 10 tensors, one launch: %.1f M weights, %.3f ms, %.1f GB/s "
               "of BF16 output; ceiling %.1f GB/s (%.1f%%)\n",
               (double)total / 1e6, ms, gbs, ceil, 100 * gbs / ceil);
    }
    df11_cuda_plan_free(plan);
    for (int i = 0; i < N; i++)
        free(blob[i]), gpu_free(d_blob[i]), gpu_free(d_out[i]);
}

/* Real trained weights: every BF16 tensor of a safetensors file, concatenated. */
static void bench_real(gpu_ctx *g, const char *path) {
    st_file *f = NULL;
    if (st_open(path, &f)) {
        fprintf(stderr, "real weights: %s\n", err_msg());
        return;
    }
    uint64_t n = 0;
    for (int i = 0; i < st_count(f); i++)
        if (st_at(f, i)->dtype == DTYPE_BF16) n += st_at(f, i)->numel;
    uint16_t *x = malloc(n * 2 + 2);
    uint64_t at = 0;
    for (int i = 0; i < st_count(f); i++)
        if (st_at(f, i)->dtype == DTYPE_BF16)
            memcpy(x + at, st_at(f, i)->data, st_at(f, i)->numel * 2), at += st_at(f, i)->numel;
    bench_tensor(g, "real (MiniLM slices)", x, n, 0);
    free(x);
    st_close(f);
}

int main(int argc, char **argv) {
    uint64_t max_m = 500;
    const char *real = NULL;
    int quick = 0, flux_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--max-m") && i + 1 < argc)
            max_m = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--real") && i + 1 < argc)
            real = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--flux-only"))
            flux_only = 1; /* for a profiler */
    }
    gpu_ctx g = {0, 0, NULL, NULL};
    char name[128] = "none";
    int sms = 0;
    size_t mem = 0;
    if (df11_cuda_available() && !gpu_device_info(name, sizeof name, &sms, &mem)) {
        g.ok = !gpu_event_create(&g.e0) && !gpu_event_create(&g.e1);
        if (g.ok) measure_copy(&g);
    }
    printf("bench_codec: CPU threads %d; GPU %s (%d SMs), device copy %.0f GB/s (read+write)\n\n",
           omp_get_max_threads(), name, sms, g.copy_gbs);
    if (flux_only) {
        if (g.ok) bench_flux_block(&g);
        return 0;
    }
    printf("%-22s %10s %8s %8s %7s %8s %8s %8s %8s %8s %7s\n", "data", "weights", "bits/w", "bound",
           "over", "enc MB/s", "enc/core", "dec MB/s", "GPU GB/s", "ceiling", "of ceil");
    const uint64_t sizes_m[] = {1, 4, 16, 64, 128, 340, 500};
    uint64_t biggest = 0;
    for (size_t i = 0; i < sizeof sizes_m / sizeof *sizes_m; i++)
        if (sizes_m[i] <= max_m) biggest = sizes_m[i];
    uint16_t *x = malloc(biggest * 1000000 * 2);
    char what[64];
    for (size_t i = 0; i < sizeof sizes_m / sizeof *sizes_m && sizes_m[i] <= max_m; i++) {
        uint64_t n = sizes_m[i] * 1000000;
        fill(x, n, 0, 0.02, 1);
        snprintf(what, sizeof what, "normal(0, 0.02)");
        bench_tensor(&g, what, x, n, n == 16000000);
        if (quick && n > 16000000) break;
    }
    uint64_t n = (max_m < 64 ? max_m : 64) * 1000000;
    fill(x, n, 1, 0.02, 2);
    bench_tensor(&g, "student-t(4), 0.02", x, n, 0);
    free(x);
    if (real) bench_real(&g, real);
    if (g.ok) bench_flux_block(&g);
    return 0;
}
