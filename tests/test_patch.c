/* test_patch: the patch hook (weights/weights.h, wt_patch) on the tiny FLUX.1 dev fixture
 * transformer and its CLIP text model:
 *   (a) a patch that asks for every tensor and changes none (x * 1 + -0, exact for every value,
 *       -0 included) gives the bits of no patch: on the CPU every tensor then runs as an F32
 *       copy, which the CPU ops read as they read BF16;
 *   (b) a patch adding a constant to one block tensor gives the bits of the same model loaded
 *       from a copy of the checkpoint where that tensor was changed the same way on the host
 *       (CPU: stored as the op's fp32 sum; GPU: as the BF16 rounding of it, the rounding the
 *       op makes), and not the unpatched bits; applied once, however often the block is used;
 *   (c) (a) and (b) from a DF11-compressed copy: on the CPU decoded at load, on the GPU under
 *       WP_RESIDENT, WP_DF11 and WP_STREAM (patched after every decode); every run is two
 *       forwards that must agree;
 *   and (b) for CLIP, resident like every model's weights outside the DiT blocks.
 * usage: test_patch --cpu|--gpu FIXTURES_DIR (exits 77 for --gpu without a GPU). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "tests/testutil.h"
#include "tests/testutil_dit.h"
#include "tests/testutil_flux.h"
#include "text_encoder/clip.h"
#include "unet_dit/flux.h"

#define ADD 0.0625f /* what (b) adds to every value of the tensor it patches */

static char tmp[] = "/tmp/df11_test_patch_XXXXXX";
static tu_dit dit; /* defined with its functions below */

/* a run: two forwards of one model, which must give the same bits (they would not if a weight
 * were patched again on its second use) */
static err dit_run(void *m, const void *p, tu_result *r) {
    tu_result again = {0};
    err e = tu_flux_run(&dit, m, p, 0, 0, 0, r);
    if (!e) e = tu_flux_run(&dit, m, p, 0, 0, 0, &again);
    EXPECT(e || tu_same_bits(r, &again), "a second forward gave other bits");
    tu_result_free(&again);
    return e;
}
TU_DIT_DEFINE(flux, tmp, dit_run, NULL);

/* The patch under test: x * 1 + add over every value of the tensor called `only` (NULL: of
 * every tensor); counts the tensors asked about and the applications. */
typedef struct tpatch {
    const char *only;
    float add;
    int asked, applied;
} tpatch;

static int tp_wants(void *ctx, const char *name) {
    tpatch *p = ctx;
    p->asked++;
    return !p->only || !strcmp(name, p->only);
}

static void tp_apply(void *ctx, op_ctx *c, const char *name, tensor w) {
    tpatch *p = ctx;
    CHECK(!p->only || !strcmp(name, p->only));
    p->applied++;
    op_scale_shift(c, w, w, 1.0f, p->add);
}

/* folder/file: the tensors of dir (plain, any shards) in one file, the one whose name ends in
 * `victim` changed as tp_apply changes it on the device under test; dir's config.json beside
 * it. The victim's full name into full. */
static err write_changed(const char *dir, const char *folder, const char *file, const char *victim,
                         float add, char *full, size_t fn) {
    char in[700], out[700];
    wt_source *src = NULL;
    st_writer *w = NULL;
    void *buf = NULL;
    int hits = 0;
    full[0] = 0;
    snprintf(in, sizeof in, "%s/config.json", dir);
    snprintf(out, sizeof out, "%s/config.json", folder);
    err e = fio_mkdirs(folder);
    if (!e) e = fio_copy_file(in, out);
    if (!e) e = wt_open(dir, &src);
    if (!e) e = st_writer_create(&w);
    for (int i = 0; !e && i < wt_count(src); i++) {
        const df11_tensor *t = wt_at(src, i);
        const size_t tl = strlen(t->name), vl = strlen(victim);
        if (tl < vl || strcmp(t->name + tl - vl, victim)) {
            e = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->stored_bytes);
            continue;
        }
        CHECK(t->dtype == DTYPE_BF16 && !t->compressed && !buf);
        hits++;
        snprintf(full, fn, "%s", t->name);
        const uint16_t *v = (const uint16_t *)t->data;
        CHECK((buf = malloc(t->numel * 4)));
        for (uint64_t k = 0; k < t->numel; k++) {
            const float x = bf16_to_f32(v[k]) * 1.0f + add; /* opcpu_scale_shift's fp32 */
            if (dit.gpu)
                ((uint16_t *)buf)[k] = f32_to_bf16(x); /* the kernel's rounding of it */
            else
                ((float *)buf)[k] = x;
        }
        e = st_writer_add(w, t->name, dit.gpu ? DTYPE_BF16 : DTYPE_F32, t->ndim, t->shape, buf,
                          t->numel * (dit.gpu ? 2 : 4));
    }
    if (!e && hits != 1) e = err_set(ERR_FORMAT, "%s: %d tensors named '*%s'", dir, hits, victim);
    snprintf(out, sizeof out, "%s/%s", folder, file);
    if (!e) e = st_writer_finish(w, out, 8);
    st_writer_free(w);
    wt_close(src);
    free(buf);
    return e;
}

/* (a), (b), (c) on the FLUX transformer dir */
static void test_flux_patch(const char *dir, const tu_flux_variant *p) {
    tu_result base = {0}, same = {0}, want = {0}, got = {0};
    if (tu_dit_run_path(&dit, dir, WP_RESIDENT, 0, p, &base, NULL)) {
        EXPECT(0, "running the fixture transformer failed");
        return;
    }
    tpatch id = {NULL, -0.0f, 0, 0};
    dit.patch = &(wt_patch){&id, tp_wants, tp_apply};
    if (!tu_dit_run_path(&dit, dir, WP_RESIDENT, 0, p, &same, NULL)) {
        EXPECT(tu_same_bits(&same, &base), "(a) a patch changing nothing changed the output");
        EXPECT(id.asked > 0 && id.applied == id.asked, "(a) %d tensors asked about, %d applied",
               id.asked, id.applied);
        printf("  (a) every tensor patched with x * 1 + -0 (%d): %s\n", id.applied,
               tu_same_bits(&same, &base) ? "identical to no patch" : "DIFFERENT");
    }
    tu_dit_test_df11(&dit, dir, "identity", p, &base);

    char folder[600], victim[200];
    snprintf(folder, sizeof folder, "%s/changed", tmp);
    const err e =
        write_changed(dir, folder, "diffusion_pytorch_model.safetensors",
                      "transformer_blocks.1.ff.net.0.proj.weight", ADD, victim, sizeof victim);
    EXPECT(!e, "writing the changed copy: %s", err_msg());
    dit.patch = NULL;
    if (!e && !tu_dit_run_path(&dit, folder, WP_RESIDENT, 0, p, &want, NULL)) {
        EXPECT(!tu_same_bits(&want, &base), "(b) changing '%s' did not change the output", victim);
        tpatch one = {victim, ADD, 0, 0};
        dit.patch = &(wt_patch){&one, tp_wants, tp_apply};
        if (!tu_dit_run_path(&dit, dir, WP_RESIDENT, 0, p, &got, NULL)) {
            EXPECT(tu_same_bits(&got, &want),
                   "(b) the patched model differs from the changed copy");
            EXPECT(one.applied == 1, "(b) applied %d times in two forwards", one.applied);
            printf("  (b) '%s' + %g: %s the changed copy, %s the unpatched model\n", victim, ADD,
                   tu_same_bits(&got, &want) ? "identical to" : "DIFFERENT from",
                   tu_same_bits(&got, &base) ? "SAME as" : "not");
        }
        tu_dit_test_df11(&dit, dir, "patched", p, &want); /* (c) */
    }
    dit.patch = NULL;
    tu_result_free(&base), tu_result_free(&same), tu_result_free(&want), tu_result_free(&got);
}

/* CLIP from path with patch p (or none): its last hidden state for the fixture's ids in r */
static err run_clip(const char *path, const wt_patch *p, const int32_t *ids, int n, tu_result *r) {
    wt_source *src = NULL;
    clip_model *m = NULL;
    err e = wt_open(path, &src);
    if (!e) wt_set_patch(src, p);
    if (!e) e = clip_load(src, dit.ctx, &m);
    if (!e) {
        const int64_t D = clip_hidden_size(m);
        tensor pooled = tu_dev_alloc(2, (int64_t[]){1, D}, dit.gpu);
        tensor last = tu_dev_alloc(3, (int64_t[]){1, n, D}, dit.gpu);
        clip_encode(m, ids, n, 0, pooled, NULL, &last);
        e = tu_collect(dit.ctx, last, dit.gpu, r);
        tu_dev_free(pooled, dit.gpu), tu_dev_free(last, dit.gpu);
    }
    if (e) fprintf(stderr, "%s: %s\n", path, err_msg());
    clip_free(m);
    wt_close(src);
    return e;
}

/* (b) for the CLIP text model dir */
static void test_clip_patch(const char *dir) {
    const st_tensor *t = st_find(dit.ref, "clip.ids");
    EXPECT(t && t->dtype == DTYPE_I32, "ref.safetensors: no I32 tensor 'clip.ids'");
    if (!t || t->dtype != DTYPE_I32) return;
    const int32_t *ids = (const int32_t *)t->data;
    const int n = (int)t->numel;
    char folder[600], victim[200];
    snprintf(folder, sizeof folder, "%s/clip_changed", tmp);
    tu_result base = {0}, want = {0}, got = {0};
    err e = write_changed(dir, folder, "model.safetensors", "layers.1.mlp.fc1.bias", ADD, victim,
                          sizeof victim);
    EXPECT(!e, "writing the changed CLIP: %s", err_msg());
    tpatch one = {victim, ADD, 0, 0};
    if (!e) e = run_clip(dir, NULL, ids, n, &base);
    if (!e) e = run_clip(folder, NULL, ids, n, &want);
    if (!e) e = run_clip(dir, &(wt_patch){&one, tp_wants, tp_apply}, ids, n, &got);
    EXPECT(!e, "running CLIP failed");
    if (!e) {
        EXPECT(tu_same_bits(&got, &want) && !tu_same_bits(&got, &base) && one.applied == 1,
               "(b) CLIP: patched %s the changed copy, %s the unpatched model, applied %d",
               tu_same_bits(&got, &want) ? "identical to" : "DIFFERENT from",
               tu_same_bits(&got, &base) ? "SAME as" : "not", one.applied);
        printf("  (b) CLIP '%s' + %g: %s the changed copy\n", victim, ADD,
               tu_same_bits(&got, &want) ? "identical to" : "DIFFERENT from");
    }
    tu_result_free(&base), tu_result_free(&want), tu_result_free(&got);
}

int main(int argc, char **argv) {
    const int rc = tu_dit_begin(argc, argv, "flux_tiny/ref.safetensors", &dit);
    if (rc >= 0) return rc;
    printf("test_patch (%s):\n", dit.gpu ? "GPU, BF16" : "CPU, F32");
    char path[600];
    tu_flux_variant p;
    if (tu_flux_variant_read(dit.ref, "dev", &p)) {
        snprintf(path, sizeof path, "%s/flux_tiny/dev/transformer", argv[2]);
        test_flux_patch(path, &p);
    }
    snprintf(path, sizeof path, "%s/flux_tiny/dev/text_encoder", argv[2]);
    test_clip_patch(path);
    return tu_dit_end(&dit, "test_patch");
}
