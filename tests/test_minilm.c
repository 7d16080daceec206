/* test_minilm: the codec on real trained weights (slices of all-MiniLM-L6-v2 in BF16, made by
 * tests/fixtures/make_minilm_bf16.py): every tensor round-trips exactly, and the ratio of the
 * large ones stays within 0.05 bit per weight of the entropy bound. */
#include <stdlib.h>

#include "core/safetensors.h"
#include "df11/df11.h"
#include "tests/testutil.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    st_file *f = NULL;
    EXPECT(st_open(argv[1], &f) == ERR_OK, "%s", err_msg());
    if (!f) return 1;
    uint64_t total_n = 0, total_bytes = 0;
    double total_bound = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (t->dtype != DTYPE_BF16) continue;
        uint8_t *blob = NULL;
        size_t len = 0;
        const uint16_t *x = (const uint16_t *)t->data;
        df11_blob b;
        EXPECT(df11_encode(x, t->numel, NULL, &blob, &len) == ERR_OK, "%s: %s", t->name, err_msg());
        EXPECT(df11_blob_parse(blob, len, &b) == ERR_OK, "%s: %s", t->name, err_msg());
        uint16_t *y = malloc(t->numel * 2);
        EXPECT(df11_decode_cpu(&b, y) == ERR_OK && memcmp(x, y, t->numel * 2) == 0,
               "%s: round trip", t->name);
        double bpw = 8.0 * (double)len / (double)t->numel, bound = df11_exponent_entropy(x, t->numel) + 8;
        printf("  %-48s %8llu weights %.4f bits/weight, bound %.4f, over %.4f\n", t->name,
               (unsigned long long)t->numel, bpw, bound, bpw - bound);
        if (t->numel >= 100000)
            EXPECT(bpw - bound <= 0.05, "%s: %.4f over the bound", t->name, bpw - bound);
        total_n += t->numel;
        total_bytes += len;
        total_bound += bound * (double)t->numel;
        free(y);
        free(blob);
    }
    printf("  all: %.4f bits/weight, bound %.4f\n", 8.0 * (double)total_bytes / (double)total_n,
           total_bound / (double)total_n);
    st_close(f);
    return tu_finish("test_minilm");
}
