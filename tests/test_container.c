/* test_container: DF11 checkpoint files. Byte-identical round trips of files with every kind
 * of tensor; every truncation point and every bit flip of a small DF11 file must give an error
 * or the exact original, never a crash or a silently wrong tensor. Writes a seed corpus for
 * the fuzz target into argv[1] when given. */
#include <stdlib.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "df11/container.h"
#include "tests/testutil.h"

static char dir[] = "/tmp/df11_test_container_XXXXXX";

/* A checkpoint with compressible and incompressible tensors, odd sizes and every layout case:
 * big BF16, small BF16 (kept raw), empty BF16, a 0-dim F32, I64, F16, U8. */
static void write_checkpoint(const char *path, uint64_t big, uint64_t seed) {
    tu_rng r = {seed};
    uint16_t *a = malloc(big * 2), small[100], f16[33];
    float scalar = 3.5f;
    int64_t ids[5] = {1, -2, 3, 1LL << 40, 0};
    uint8_t bytes[7] = {1, 2, 3, 4, 5, 6, 7};
    for (uint64_t i = 0; i < big; i++) a[i] = tu_bf16((float)(0.02 * tu_student_t(&r, 4)));
    for (int i = 0; i < 100; i++) small[i] = tu_bf16((float)tu_normal(&r));
    for (int i = 0; i < 33; i++) f16[i] = (uint16_t)tu_next(&r);
    st_writer *w = NULL;
    st_writer_create(&w);
    st_writer_meta(w, "format", "pt");
    int64_t s_big[2] = {(int64_t)(big / 7), 7}, s_small[2] = {10, 10}, s_empty[2] = {0, 3};
    int64_t s_ids[1] = {5}, s_f16[3] = {3, 11, 1}, s_bytes[1] = {7};
    st_writer_add(w, "blocks.0.attn.qkv.weight", DTYPE_BF16, 2, s_big, a, big * 2);
    st_writer_add(w, "blocks.0.norm.weight", DTYPE_BF16, 2, s_small, small, sizeof small);
    st_writer_add(w, "empty", DTYPE_BF16, 2, s_empty, a, 0);
    st_writer_add(w, "scale", DTYPE_F32, 0, NULL, &scalar, 4);
    st_writer_add(w, "ids", DTYPE_I64, 1, s_ids, ids, sizeof ids);
    st_writer_add(w, "half", DTYPE_F16, 3, s_f16, f16, sizeof f16);
    st_writer_add(w, "bytes", DTYPE_U8, 1, s_bytes, bytes, sizeof bytes);
    err e = st_writer_finish(w, path, 8);
    EXPECT(e == ERR_OK, "writing %s: %s", path, err_msg());
    st_writer_free(w);
    free(a);
}

static uint8_t *slurp(const char *path, size_t *n) {
    fio_map m;
    if (fio_map_open(path, &m)) return NULL;
    uint8_t *b = malloc(m.size + 1);
    memcpy(b, m.data, m.size);
    *n = m.size;
    fio_map_close(&m);
    return b;
}

static void test_roundtrip(void) {
    char in[256], df[256], back[256];
    snprintf(in, sizeof in, "%s/model.safetensors", dir);
    snprintf(df, sizeof df, "%s/model.df11.safetensors", dir);
    snprintf(back, sizeof back, "%s/model.back.safetensors", dir);
    write_checkpoint(in, 7 * 40000, 1);
    EXPECT(df11_compress_file(in, df, NULL, NULL) == ERR_OK, "compress: %s", err_msg());
    EXPECT(df11_verify_file(df, NULL) == ERR_OK, "verify: %s", err_msg());
    EXPECT(df11_decompress_file(df, back, NULL) == ERR_OK, "decompress: %s", err_msg());
    size_t n1 = 0, n2 = 0;
    uint8_t *a = slurp(in, &n1), *b = slurp(back, &n2);
    EXPECT(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "rebuilt file differs (%zu vs %zu bytes)",
           n1, n2);
    /* the DF11 file is a plain safetensors file too, and its blobs are 256-aligned */
    st_file *f = NULL;
    EXPECT(st_open(df, &f) == ERR_OK, "DF11 file as safetensors: %s", err_msg());
    const st_tensor *t = f ? st_find(f, "blocks.0.attn.qkv.weight") : NULL;
    EXPECT(t && t->dtype == DTYPE_U8, "compressed tensor stored as U8");
    EXPECT(t && (uintptr_t)t->data % 256 == 0, "blob not 256-aligned in the file");
    t = f ? st_find(f, "blocks.0.norm.weight") : NULL;
    EXPECT(t && t->dtype == DTYPE_BF16, "small tensor stored as it is");
    st_close(f);
    /* refusing to compress twice, and to overwrite the input */
    EXPECT(df11_compress_file(df, back, NULL, NULL) == ERR_ARG, "compressing a DF11 file");
    EXPECT(df11_compress_file(in, in, NULL, NULL) == ERR_ARG, "output over input");
    EXPECT(df11_decompress_file(in, back, NULL) == ERR_ARG, "decompressing a plain file");
    free(a);
    free(b);
}

/* The original bytes from a (possibly damaged) DF11 image, or an error. */
static err rebuild(const uint8_t *img, size_t n, uint8_t *orig, size_t orig_len) {
    uint8_t *buf = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    memcpy(buf, img, n);
    df11_ckpt *c = NULL;
    err e = df11_ckpt_open_memory(buf, n, "damaged", &c);
    if (!e && !df11_ckpt_is_df11(c)) e = ERR_FORMAT;
    if (!e && df11_ckpt_original_size(c) != orig_len) e = ERR_FORMAT;
    size_t hlen = e ? 0 : strlen(st_meta(df11_ckpt_file(c), DF11_META_HEADER));
    for (int i = 0; !e && i < df11_ckpt_count(c); i++) {
        const df11_tensor *t = df11_ckpt_at(c, i);
        e = df11_ckpt_read(c, t, orig + 8 + hlen + t->begin);
    }
    if (!e) memcpy(orig + 8, st_meta(df11_ckpt_file(c), DF11_META_HEADER), hlen);
    df11_ckpt_close(c);
    free(buf);
    return e;
}

static void test_damage(const char *corpus) {
    char in[256], df[256];
    snprintf(in, sizeof in, "%s/small.safetensors", dir);
    snprintf(df, sizeof df, "%s/small.df11.safetensors", dir);
    write_checkpoint(in, 7 * 300, 2);
    EXPECT(df11_compress_file(in, df, NULL, NULL) == ERR_OK, "compress: %s", err_msg());
    size_t n = 0, on = 0;
    uint8_t *img = slurp(df, &n), *orig = slurp(in, &on), *out = malloc(on);
    memset(out, 0, on);
    memcpy(out, orig, 8);
    EXPECT(rebuild(img, n, out, on) == ERR_OK && memcmp(out, orig, on) == 0, "undamaged: %s",
           err_msg());
    int truncations_ok = 0, flips_err = 0, flips_same = 0;
    for (size_t len = 0; len < n; len++) {
        memcpy(out + 8, orig + 8, on - 8);
        truncations_ok += rebuild(img, len, out, on) == ERR_OK;
    }
    EXPECT(truncations_ok == 0, "%d of %zu truncations were accepted", truncations_ok, n);
    /* every bit of the headers and tables, and every bit of every 5th byte of the rest */
    size_t flipped = 0;
    for (size_t byte = 0; byte < n; byte += byte < 4096 ? 1 : 5)
        for (int bit = 0; bit < 8; bit++, flipped++) {
            img[byte] ^= (uint8_t)(1 << bit);
            memset(out + 8, 0, on - 8);
            if (rebuild(img, n, out, on) != ERR_OK) flips_err++;
            else if (memcmp(out, orig, on) == 0) flips_same++;
            else EXPECT(0, "bit %d of byte %zu: accepted with wrong contents", bit, byte);
            img[byte] ^= (uint8_t)(1 << bit);
        }
    printf("  %zu truncations rejected; %zu bit flips: %d rejected, %d harmless\n", n, flipped,
           flips_err, flips_same);
    if (corpus) { /* seeds for the fuzzer: the file, a truncation, a flip */
        char p[512];
        snprintf(p, sizeof p, "%s/seed_df11", corpus);
        fio_write_file(p, img, n);
        snprintf(p, sizeof p, "%s/seed_trunc", corpus);
        fio_write_file(p, img, n / 2);
        snprintf(p, sizeof p, "%s/seed_plain", corpus);
        fio_write_file(p, orig, on);
    }
    free(img);
    free(orig);
    free(out);
}

int main(int argc, char **argv) {
    if (!mkdtemp(dir)) return 1;
    if (argc > 1) fio_mkdirs(argv[1]);
    test_roundtrip();
    test_damage(argc > 1 ? argv[1] : NULL);
    fio_remove_tree(dir);
    return tu_finish("test_container");
}
