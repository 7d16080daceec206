/* test_preview: the live preview's latent-to-RGB projection (app/preview.c) against PyTorch's
 * (tests/fixtures/make_preview_ref.py: ComfyUI's Latent2RGB formula with the factors of
 * assets/preview.json) on latents that reach both clamps, for FLUX and SD3. float32 sums in
 * another order may move a value across a truncation step, so a byte may differ by one; the
 * test counts those and fails on any larger difference or on more than 0.5 % of them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/preview.h"
#include "core/safetensors.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_preview preview_ref.safetensors\n");
        return 2;
    }
    st_file *f;
    if (st_open(argv[1], &f)) {
        printf("FAIL %s\n", err_msg());
        return 1;
    }
    int fails = 0;
    static const char *const fam[] = {"flux", "sd3"};
    for (int k = 0; k < 2; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s.latents", fam[k]);
        const st_tensor *lt = st_find(f, name);
        snprintf(name, sizeof name, "%s.rgb", fam[k]);
        const st_tensor *rt = st_find(f, name);
        if (!lt || !rt || lt->dtype != DTYPE_F32 || rt->dtype != DTYPE_U8 || lt->ndim != 3 ||
            lt->shape[0] != 16 || rt->numel != 3 * (uint64_t)(lt->shape[1] * lt->shape[2])) {
            printf("FAIL %s: fixture tensors missing or misshapen\n", fam[k]);
            fails++;
            continue;
        }
        preview_proj p;
        if (preview_proj_get(fam[k], &p)) {
            printf("FAIL %s\n", err_msg());
            fails++;
            continue;
        }
        const int64_t h = lt->shape[1], w = lt->shape[2], n = 3 * h * w;
        uint8_t *rgb = malloc((size_t)n);
        preview_rgb(&p, (const float *)lt->data, h, w, rgb);
        const uint8_t *want = rt->data;
        int64_t off1 = 0, worse = 0, lo = 0, hi = 0;
        for (int64_t i = 0; i < n; i++) {
            const int d = abs(rgb[i] - want[i]);
            off1 += d == 1, worse += d > 1;
            lo += want[i] == 0, hi += want[i] == 255;
        }
        const int ok = !worse && off1 * 200 <= n && lo && hi;
        printf("%s %s: %lld values, %lld off by one, %lld further; the reference has %lld at 0 "
               "and %lld at 255\n",
               ok ? "ok  " : "FAIL", fam[k], (long long)n, (long long)off1, (long long)worse,
               (long long)lo, (long long)hi);
        fails += !ok;
        free(rgb);
    }
    st_close(f);
    printf("%s\n", fails ? "FAILED" : "all passed");
    return fails != 0;
}
