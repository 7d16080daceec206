/* test_provider: the weight provider's three modes (weights/provider.h) feed the same kernels
 * the same weights, so a forward over a stack of random blocks gives the same bits under each:
 * BF16 resident (from BF16, and decoded once from DF11), DF11 decoded per block into two slots,
 * and DF11 streamed from pinned host memory under a budget that leaves several blocks on the
 * host. Also: the decoded weights are the source's bits, a budget below the minimum is
 * refused, wp_acquire tells new weights from ones it handed out before. GPU test: exits 77
 * without one. */
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/ops.h"
#include "df11/df11.h"
#include "tests/testutil.h"
#include "weights/provider.h"

enum { BLOCKS = 7, WEIGHTS = 4, D = 256, F = 768, TOKENS = 67, STEPS = 3 };

static wp_src src[BLOCKS][WEIGHTS];
static wp_block blocks[BLOCKS];

/* A small MLP block: x += fc2(gelu(fc1(x) + b1)) + b2. */
static void make_blocks(void) {
    tu_rng r = {7};
    const int64_t shapes[WEIGHTS][2] = {{F, D}, {F, 1}, {D, F}, {D, 1}};
    for (int i = 0; i < BLOCKS; i++) {
        for (int j = 0; j < WEIGHTS; j++) {
            wp_src *s = &src[i][j];
            const int64_t n = shapes[j][0] * shapes[j][1];
            s->ndim = shapes[j][1] == 1 ? 1 : 2;
            s->shape[0] = shapes[j][0], s->shape[1] = shapes[j][1];
            uint16_t *v = malloc((size_t)n * 2);
            /* some blocks with a wider spread, so the blobs differ in size */
            const double sc = (j % 2 ? 0.1 : 1.0 / sqrt((double)shapes[j][1])) * (1 + i % 3);
            for (int64_t k = 0; k < n; k++)
                v[k] = tu_bf16((float)(sc * tu_normal(&r)));
            uint8_t *blob;
            size_t len;
            CHECK(!df11_encode(v, (uint64_t)n, NULL, &blob, &len));
            s->bf16 = v, s->blob = blob, s->blob_len = len;
        }
        blocks[i] = (wp_block){WEIGHTS, src[i]};
    }
}

/* STEPS passes over the stack; returns the final activations' bytes (malloc'd). */
static uint16_t *forward(op_ctx *c, weight_provider *p) {
    uint16_t *h = malloc(TOKENS * D * 2);
    tu_rng r = {11};
    for (int k = 0; k < TOKENS * D; k++)
        h[k] = tu_bf16((float)tu_normal(&r));
    void *x, *t, *y;
    CHECK(!gpu_alloc(&x, TOKENS * D * 2) && !gpu_alloc(&t, TOKENS * F * 2) &&
          !gpu_alloc(&y, TOKENS * D * 2));
    CHECK(!gpu_upload(x, h, TOKENS * D * 2));
    tensor tx = tensor_2d(x, DTYPE_BF16, TENSOR_CUDA, TOKENS, D);
    tensor tt = tensor_2d(t, DTYPE_BF16, TENSOR_CUDA, TOKENS, F);
    tensor ty = tensor_2d(y, DTYPE_BF16, TENSOR_CUDA, TOKENS, D);
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < BLOCKS; i++) {
            tensor w[WEIGHTS];
            wp_acquire(p, i, w);
            op_linear(c, tt, tx, w[0], &w[1], OP_ACT_GELU_TANH);
            op_linear(c, ty, tt, w[2], &w[3], OP_ACT_NONE);
            op_add(c, tx, tx, ty);
            wp_release(p, i);
        }
    CHECK(!op_ctx_sync(c));
    CHECK(!gpu_download(h, x, TOKENS * D * 2));
    gpu_free(x), gpu_free(t), gpu_free(y);
    return h;
}

/* The weights a provider hands out are the source's bits. */
static void check_weights(op_ctx *c, weight_provider *p, const char *what) {
    int bad = 0;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < BLOCKS; i++) {
            tensor w[WEIGHTS];
            wp_acquire(p, i, w);
            CHECK(!op_ctx_sync(c));
            for (int j = 0; j < WEIGHTS; j++) {
                size_t bytes = (size_t)tensor_numel(&w[j]) * 2;
                uint16_t *got = malloc(bytes);
                CHECK(!gpu_download(got, w[j].data, bytes));
                bad += memcmp(got, src[i][j].bf16, bytes) != 0;
                free(got);
            }
            wp_release(p, i);
        }
    EXPECT(bad == 0, "%s: %d weights differ from their source", what, bad);
}

/* wp_acquire says when the weights are new in their buffer: a resident block once; a decode
 * once, so a slot that still holds what it handed out (two blocks or fewer in cyclic order)
 * does not count again. want: the flags of acquiring blocks 0..n-1 cyclically. */
static void check_fresh(op_ctx *c) {
    static const struct {
        wp_mode mode;
        int n;
        const char *want;
    } cases[] = {{WP_RESIDENT, 3, "111000"},
                 {WP_DF11, 1, "100"},
                 {WP_DF11, 2, "110000"},
                 {WP_DF11, 3, "111111111"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        weight_provider *p;
        const wp_config cfg = {cases[k].mode, 0};
        CHECK(!wp_create(&cfg, blocks, cases[k].n, op_ctx_stream(c), &p));
        char got[16] = "";
        for (size_t j = 0; j < strlen(cases[k].want); j++) {
            tensor w[WEIGHTS];
            const int i = (int)j % cases[k].n;
            got[j] = (char)('0' + wp_acquire(p, i, w));
            wp_release(p, i);
        }
        EXPECT(!strcmp(got, cases[k].want), "mode %d, %d blocks: acquires new %s, want %s",
               (int)cases[k].mode, cases[k].n, got, cases[k].want);
        wp_free(p);
    }
}

int main(void) {
    op_ctx *c;
    if (op_ctx_create(TENSOR_CUDA, &c)) {
        printf("test_provider: skipped: %s\n", err_msg());
        return 77;
    }
    make_blocks();
    /* the provider's sizes: a slot holds the largest block, every buffer 256-byte aligned */
    size_t slot = 0, blobs = 0, max_blob = 0;
    for (int j = 0; j < WEIGHTS; j++)
        slot += ((size_t)src[0][j].shape[0] * (src[0][j].ndim == 2 ? src[0][j].shape[1] : 1) * 2 +
                 255) /
                256 * 256;
    for (int i = 0; i < BLOCKS; i++) {
        size_t b = 0;
        for (int j = 0; j < WEIGHTS; j++)
            b += (src[i][j].blob_len + 255) / 256 * 256;
        blobs += b;
        max_blob = b > max_blob ? b : max_blob;
    }
    struct {
        const char *what;
        wp_config cfg;
        int drop_bf16, streamed_min;
    } modes[] = {
        {"BF16 resident", {WP_RESIDENT, 0}, 0, 0},
        {"BF16 resident, decoded at load", {WP_RESIDENT, 0}, 1, 0},
        {"DF11 resident, two slots", {WP_DF11, 0}, 0, 0},
        /* room for two staging buffers and about two blocks' blobs */
        {"DF11 streamed, about 2 of 7 resident", {WP_STREAM, 2 * slot + 4 * max_blob}, 0, 3},
        {"DF11 streamed, everything fits", {WP_STREAM, 2 * slot + blobs + 4096}, 0, 0},
    };
    uint16_t *ref = NULL;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        const uint16_t *kept[BLOCKS][WEIGHTS];
        for (int i = 0; i < BLOCKS; i++)
            for (int j = 0; j < WEIGHTS; j++) {
                kept[i][j] = src[i][j].bf16;
                if (modes[m].drop_bf16) src[i][j].bf16 = NULL; /* the blobs alone */
            }
        weight_provider *p;
        err e = wp_create(&modes[m].cfg, blocks, BLOCKS, op_ctx_stream(c), &p);
        for (int i = 0; i < BLOCKS; i++)
            for (int j = 0; j < WEIGHTS; j++)
                src[i][j].bf16 = kept[i][j];
        EXPECT(!e, "%s: %s", modes[m].what, err_msg());
        if (e) continue;
        printf("  %-40s %.2f MiB on the GPU, %d blocks streamed\n", modes[m].what,
               wp_device_bytes(p) / 1048576.0, wp_streamed_blocks(p));
        EXPECT(wp_streamed_blocks(p) >= modes[m].streamed_min, "%s: %d blocks streamed",
               modes[m].what, wp_streamed_blocks(p));
        EXPECT(modes[m].cfg.mode != WP_STREAM || modes[m].streamed_min ||
                   wp_streamed_blocks(p) == 0,
               "%s: streams although everything fits", modes[m].what);
        uint16_t *out = forward(c, p);
        check_weights(c, p, modes[m].what);
        if (!ref) {
            ref = out;
            /* not a trivial forward: the stack changed the activations */
            tu_rng r = {11};
            int same = 0;
            for (int k = 0; k < TOKENS * D; k++)
                same += ref[k] == tu_bf16((float)tu_normal(&r));
            EXPECT(same < TOKENS * D / 100, "the forward left %d of %d values unchanged", same,
                   TOKENS * D);
        } else {
            EXPECT(!memcmp(out, ref, TOKENS * D * 2),
                   "%s: the forward differs from BF16 resident's", modes[m].what);
            free(out);
        }
        wp_free(p);
    }
    check_fresh(c);
    wp_config tight = {WP_STREAM, 2 * slot};
    weight_provider *p = NULL;
    EXPECT(wp_create(&tight, blocks, BLOCKS, op_ctx_stream(c), &p) == ERR_NOMEM,
           "a budget below two slots and two staging buffers was accepted");
    printf("  budget too small: %s\n", err_msg());
    wp_free(p);
    free(ref);
    op_ctx_free(c);
    return tu_finish("test_provider");
}
