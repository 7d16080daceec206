/* test_cuda_decode: the CUDA decoder against the CPU reference decoder, bit for bit: single
 * tensors of many sizes and kinds, a block's tensors in one launch, a CUDA graph replay, and
 * guard bytes around every output. Exits 77 (skipped) where no GPU is present. */
#include <stdlib.h>

#include "df11/cuda/df11_cuda.h"
#include "core/cuda/gpu.h"
#include "tests/testutil.h"

#define GUARD 256 /* bytes after each output that must stay untouched */

static int quick; /* DF11_TEST_QUICK: small sizes only (for compute-sanitizer) */

typedef struct item {
    uint8_t *blob;
    size_t len;
    df11_blob view;
    uint16_t *cpu;
    void *d_blob, *d_out;
} item;

static int make_item(item *it, const uint16_t *x, uint64_t n, const df11_params *p) {
    memset(it, 0, sizeof *it);
    if (df11_encode(x, n, p, &it->blob, &it->len) || df11_blob_parse(it->blob, it->len, &it->view))
        return 0;
    it->cpu = malloc(n * 2 + 2);
    if (df11_decode_cpu(&it->view, it->cpu)) return 0;
    if (gpu_alloc(&it->d_blob, it->len) || gpu_upload(it->d_blob, it->blob, it->len)) return 0;
    if (gpu_alloc(&it->d_out, n * 2 + GUARD) || gpu_memset(it->d_out, 0xA5, n * 2 + GUARD)) return 0;
    return 1;
}

static void check_item(const char *what, const item *it) {
    uint64_t n = it->view.n;
    uint8_t *got = malloc(n * 2 + GUARD);
    EXPECT(gpu_download(got, it->d_out, n * 2 + GUARD) == ERR_OK, "%s: %s", what, err_msg());
    EXPECT(n == 0 || memcmp(got, it->cpu, n * 2) == 0, "%s: GPU output differs from CPU", what);
    int guard_ok = 1;
    for (int i = 0; i < GUARD; i++) guard_ok &= got[n * 2 + i] == 0xA5;
    EXPECT(guard_ok, "%s: wrote past the end of its output", what);
    free(got);
}

static void free_item(item *it) {
    free(it->blob);
    free(it->cpu);
    gpu_free(it->d_blob);
    gpu_free(it->d_out);
}

static void run_one(const char *what, const uint16_t *x, uint64_t n, const df11_params *p) {
    item it;
    EXPECT(make_item(&it, x, n, p), "%s: setup: %s", what, err_msg());
    df11_cuda_item ci = {&it.view, it.d_blob, it.d_out};
    df11_cuda_plan *plan = NULL;
    EXPECT(df11_cuda_plan_create(&ci, 1, &plan) == ERR_OK, "%s: plan: %s", what, err_msg());
    if (plan) {
        EXPECT(df11_cuda_decode(plan, NULL) == ERR_OK && gpu_sync() == ERR_OK, "%s: %s", what,
               err_msg());
        check_item(what, &it);
    }
    df11_cuda_plan_free(plan);
    free_item(&it);
}

static void test_single(void) {
    const uint64_t lens[] = {0, 1, 3, 127, 128, 129, 4097, 65536, 65537, 3 * 65536 + 17, 5000011};
    uint16_t *x = malloc(5000011 * 2);
    tu_rng r = {11};
    char what[96];
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        if (quick && lens[i] > 300000) continue;
        for (uint64_t k = 0; k < lens[i]; k++) x[k] = tu_bf16((float)(0.02 * tu_student_t(&r, 4)));
        snprintf(what, sizeof what, "student-t n=%llu", (unsigned long long)lens[i]);
        run_one(what, x, lens[i], NULL);
    }
    for (uint32_t i = 0; i < 65536; i++) x[i] = (uint16_t)(i * 40503u); /* a permutation */
    run_one("all 65536 patterns", x, 65536, NULL);
    for (uint64_t k = 0; k < 300000; k++) x[k] = 0x7FC1;
    run_one("constant NaN", x, 300000, NULL);
    df11_params p;
    df11_params_init(&p);
    p.single_segment_max = 0;
    const uint32_t steps[] = {1, 3, 64, 2048};
    for (uint64_t k = 0; k < 400009; k++) x[k] = tu_bf16((float)tu_normal(&r));
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        p.steps = steps[i];
        p.table_log = i % 2 ? 9 : 12;
        snprintf(what, sizeof what, "steps=%u table_log=%d", p.steps, p.table_log);
        run_one(what, x, 400009, &p);
    }
    free(x);
}

/* A block's tensors in one launch, then the same launch captured in a graph and replayed. */
static void test_batch_and_graph(void) {
    const uint64_t big[] = {3072 * 9216, 3072, 3072 * 3072 + 5, 128, 12288 * 307, 1};
    const uint64_t small[] = {300 * 921, 3072, 307 * 307 + 5, 128, 1228 * 307, 1};
    enum { N = sizeof big / sizeof *big };
    const uint64_t *sizes = quick ? small : big;
    item it[N];
    df11_cuda_item ci[N];
    tu_rng r = {3};
    for (int i = 0; i < N; i++) {
        uint16_t *x = malloc(sizes[i] * 2);
        double scale = 0.01 * (i + 1);
        for (uint64_t k = 0; k < sizes[i]; k++) x[k] = tu_bf16((float)(scale * tu_normal(&r)));
        EXPECT(make_item(&it[i], x, sizes[i], NULL), "batch item %d: %s", i, err_msg());
        ci[i] = (df11_cuda_item){&it[i].view, it[i].d_blob, it[i].d_out};
        free(x);
    }
    df11_cuda_plan *plan = NULL;
    EXPECT(df11_cuda_plan_create(ci, N, &plan) == ERR_OK, "batch plan: %s", err_msg());
    EXPECT(df11_cuda_decode(plan, NULL) == ERR_OK && gpu_sync() == ERR_OK, "batch: %s", err_msg());
    char what[64];
    for (int i = 0; i < N; i++) {
        snprintf(what, sizeof what, "batch item %d", i);
        check_item(what, &it[i]);
        gpu_memset(it[i].d_out, 0xA5, sizes[i] * 2 + GUARD);
    }
    struct CUstream_st *s = NULL;
    gpu_graph *g = NULL;
    EXPECT(gpu_stream_create(&s) == ERR_OK, "stream: %s", err_msg());
    EXPECT(gpu_graph_begin(s) == ERR_OK && df11_cuda_decode(plan, s) == ERR_OK &&
               gpu_graph_end(s, &g) == ERR_OK,
           "capture: %s", err_msg());
    for (int rep = 0; g && rep < 2; rep++) {
        EXPECT(gpu_graph_launch(g, s) == ERR_OK && gpu_sync() == ERR_OK, "replay: %s", err_msg());
        for (int i = 0; i < N; i++) {
            snprintf(what, sizeof what, "graph replay %d item %d", rep, i);
            check_item(what, &it[i]);
        }
    }
    gpu_graph_free(g);
    gpu_stream_destroy(s);
    df11_cuda_plan_free(plan);
    for (int i = 0; i < N; i++) free_item(&it[i]);
}

int main(void) {
    quick = getenv("DF11_TEST_QUICK") != NULL;
    if (!df11_cuda_available()) {
        printf("test_cuda_decode: skipped: %s\n", err_msg());
        return 77;
    }
    test_single();
    test_batch_and_graph();
    return tu_finish("test_cuda_decode");
}
