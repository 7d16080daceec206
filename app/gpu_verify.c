/* gpu_verify: the --gpu half of `df11 verify`: decodes each compressed tensor with the CUDA
 * decoder and compares it with the CPU reference decoder. */
#include <stdlib.h>
#include <string.h>

#include "app/cli.h"
#include "df11/container.h"
#include "df11/cuda/df11_cuda.h"
#include "core/cuda/gpu.h"

static err verify_gpu_tensor(const df11_ckpt *ck, const df11_tensor *t) {
    df11_blob b;
    TRY(df11_blob_parse(t->data, t->stored_bytes, &b));
    uint16_t *cpu = malloc(t->numel * 2 + 1), *gpu = malloc(t->numel * 2 + 1);
    void *d_blob = NULL, *d_out = NULL;
    df11_cuda_plan *plan = NULL;
    err e = (!cpu || !gpu) ? err_set(ERR_NOMEM, "out of memory") : ERR_OK;
    if (!e) e = df11_ckpt_read(ck, t, cpu);
    if (!e) e = gpu_alloc(&d_blob, t->stored_bytes);
    if (!e) e = gpu_alloc(&d_out, t->numel * 2 + 16);
    if (!e) e = gpu_upload(d_blob, t->data, t->stored_bytes);
    df11_cuda_item it = {&b, d_blob, (uint16_t *)d_out};
    if (!e) e = df11_cuda_plan_create(&it, 1, &plan);
    if (!e) e = df11_cuda_decode(plan, NULL);
    if (!e) e = gpu_download(gpu, d_out, t->numel * 2);
    if (!e && memcmp(cpu, gpu, t->numel * 2) != 0)
        e = err_set(ERR_CHECKSUM, "GPU decoder output differs from the CPU decoder");
    if (e) err_wrap(e, "tensor '%s'", t->name);
    df11_cuda_plan_free(plan);
    gpu_free(d_blob);
    gpu_free(d_out);
    free(cpu);
    free(gpu);
    return e;
}

err cli_verify_gpu_file(const char *path) {
    FAIL_IF(!df11_cuda_available(), ERR_CUDA, "--gpu: %s", err_msg());
    df11_ckpt *ck = NULL;
    TRY(df11_ckpt_open(path, &ck));
    err e = ERR_OK;
    for (int i = 0; i < df11_ckpt_count(ck) && !e; i++)
        if (df11_ckpt_at(ck, i)->compressed) e = verify_gpu_tensor(ck, df11_ckpt_at(ck, i));
    if (e) err_wrap(e, "%s", path);
    df11_ckpt_close(ck);
    return e;
}
