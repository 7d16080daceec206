/* gen_checkpoint: writes a small model folder in diffusers layout for the CLI tests and the
 * demo: a sharded transformer (two shards + index), a single-file VAE with F32 tensors, and
 * the JSON and tokenizer files beside them. usage: gen_checkpoint DIR [SCALE] */
#include <stdlib.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "tests/testutil.h"

static uint16_t *bf16_data(uint64_t n, double scale, tu_rng *r) {
    uint16_t *x = malloc(n * 2 + 2);
    for (uint64_t i = 0; i < n; i++) x[i] = tu_bf16((float)(scale * tu_student_t(r, 4)));
    return x;
}

static int write_shard(const char *path, int first, int last, int dim, tu_rng *r) {
    st_writer *w = NULL;
    if (st_writer_create(&w)) return 1;
    st_writer_meta(w, "format", "pt");
    void *keep[64];
    int nk = 0;
    char name[128];
    for (int b = first; b <= last; b++) {
        int64_t qkv[2] = {3 * dim, dim}, mlp[2] = {4 * dim, dim}, norm[1] = {dim};
        snprintf(name, sizeof name, "transformer_blocks.%d.attn.to_qkv.weight", b);
        keep[nk] = bf16_data((uint64_t)(3 * dim * dim), 0.02, r);
        st_writer_add(w, name, DTYPE_BF16, 2, qkv, keep[nk++], (uint64_t)3 * dim * dim * 2);
        snprintf(name, sizeof name, "transformer_blocks.%d.ff.net.0.proj.weight", b);
        keep[nk] = bf16_data((uint64_t)(4 * dim * dim), 0.03, r);
        st_writer_add(w, name, DTYPE_BF16, 2, mlp, keep[nk++], (uint64_t)4 * dim * dim * 2);
        snprintf(name, sizeof name, "transformer_blocks.%d.norm.weight", b);
        keep[nk] = bf16_data((uint64_t)dim, 1.0, r);
        st_writer_add(w, name, DTYPE_BF16, 1, norm, keep[nk++], (uint64_t)dim * 2);
    }
    err e = st_writer_finish(w, path, 8);
    st_writer_free(w);
    for (int i = 0; i < nk; i++) free(keep[i]);
    if (e) fprintf(stderr, "gen_checkpoint: %s\n", err_msg());
    return e != ERR_OK;
}

static int write_vae(const char *path, tu_rng *r) {
    st_writer *w = NULL;
    if (st_writer_create(&w)) return 1;
    float conv[16 * 4 * 3 * 3], bias[16];
    for (int i = 0; i < 16 * 4 * 9; i++) conv[i] = (float)tu_normal(r);
    for (int i = 0; i < 16; i++) bias[i] = (float)tu_normal(r);
    int64_t cs[4] = {16, 4, 3, 3}, bs[1] = {16};
    st_writer_add(w, "decoder.conv_in.weight", DTYPE_F32, 4, cs, conv, sizeof conv);
    st_writer_add(w, "decoder.conv_in.bias", DTYPE_F32, 1, bs, bias, sizeof bias);
    err e = st_writer_finish(w, path, 8);
    st_writer_free(w);
    return e != ERR_OK;
}

static int write_text(const char *dir, const char *rel, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    char *slash = strrchr(p, '/');
    *slash = 0;
    fio_mkdirs(p);
    *slash = '/';
    return fio_write_file(p, text, strlen(text)) != ERR_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gen_checkpoint DIR [DIM]\n");
        return 2;
    }
    const char *dir = argv[1];
    int dim = argc > 2 ? atoi(argv[2]) : 256;
    tu_rng r = {2024};
    char p[1024];
    int bad = write_text(dir, "model_index.json", "{\"_class_name\": \"FluxPipeline\"}\n");
    bad |= write_text(dir, "transformer/config.json", "{\"num_layers\": 4}\n");
    bad |= write_text(dir, "tokenizer/vocab.json", "{\"a</w>\": 0, \"b</w>\": 1}\n");
    snprintf(p, sizeof p, "%s/transformer/diffusion_pytorch_model-00001-of-00002.safetensors", dir);
    bad |= write_shard(p, 0, 1, dim, &r);
    snprintf(p, sizeof p, "%s/transformer/diffusion_pytorch_model-00002-of-00002.safetensors", dir);
    bad |= write_shard(p, 2, 3, dim, &r);
    char index[4096];
    int k = snprintf(index, sizeof index, "{\"metadata\": {}, \"weight_map\": {");
    const char *kinds[3] = {"attn.to_qkv.weight", "ff.net.0.proj.weight", "norm.weight"};
    for (int b = 0; b < 4; b++)
        for (int j = 0; j < 3; j++)
            k += snprintf(index + k, sizeof index - (size_t)k,
                          "%s\"transformer_blocks.%d.%s\": \"diffusion_pytorch_model-0000%d-of-00002.safetensors\"",
                          b || j ? ", " : "", b, kinds[j], b < 2 ? 1 : 2);
    snprintf(index + k, sizeof index - (size_t)k, "}}\n");
    bad |= write_text(dir, "transformer/diffusion_pytorch_model.safetensors.index.json", index);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", dir);
    fio_mkdirs(strrchr(p, '/') ? (*strrchr(p, '/') = 0, p) : p);
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", dir);
    bad |= write_vae(p, &r);
    return bad;
}
