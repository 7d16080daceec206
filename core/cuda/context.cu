/* context: the CUDA side of an op context (ops_internal.h): the device, a stream, the
 * cuBLASLt handle and its workspace, the cuDNN handle, a scratch buffer, and the copies
 * between the host and the context's memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/common.cuh"
#include "core/cuda/cuda_check.h"

extern "C" {
#include "core/log.h"
}

#define WORKSPACE_BYTES (32u << 20) /* cuBLASLt's recommendation for Hopper */

void gemm_cache_free(struct gemm_cache *g); /* gemm.cu */
void sdpa_cache_free(struct sdpa_cache *c); /* attention_cudnn.cu */
void conv_cache_free(struct conv_cache *c);  /* conv.cu */
extern "C" struct opcu_prof *opcu_prof_create(void); /* profile.cu */
extern "C" void opcu_prof_free(struct opcu_prof *p);

void opcu_die(const char *file, int line, const char *what, const char *msg) {
    fprintf(stderr, "%s:%d: CUDA error in %s: %s\n", file, line, what, msg);
    abort();
}

void opcu_launched(op_ctx *c, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) opcu_die(file, line, "kernel launch", cudaGetErrorString(e));
#ifdef DF11_CUDA_SYNC_DEBUG
    e = cudaStreamSynchronize(c->cu->stream);
    if (e != cudaSuccess) opcu_die(file, line, "kernel", cudaGetErrorString(e));
#else
    (void)c;
#endif
}

extern "C" {

err opcu_create(struct opcu_state **out) {
    *out = NULL;
    int n = 0;
    cudaError_t ce = cudaGetDeviceCount(&n);
    FAIL_IF(ce != cudaSuccess || n == 0, ERR_CUDA, "no usable CUDA GPU (%s)",
            ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
    opcu_state *s = (opcu_state *)calloc(1, sizeof *s);
    FAIL_IF(!s, ERR_NOMEM, "out of memory");
    err e = ERR_OK;
    cudaDeviceProp p;
    cudnnStatus_t ds;
    int least = 0, greatest = 0; /* the ops' stream gets the highest priority */
    if ((ce = cudaGetDevice(&s->device)) != cudaSuccess ||
        (ce = cudaGetDeviceProperties(&p, s->device)) != cudaSuccess ||
        (ce = cudaDeviceGetStreamPriorityRange(&least, &greatest)) != cudaSuccess ||
        (ce = cudaStreamCreateWithPriority(&s->own, cudaStreamNonBlocking, greatest)) !=
            cudaSuccess) {
        e = cuda_fail(ce, "opening the GPU");
        goto fail;
    }
    s->sms = p.multiProcessorCount;
    {
        const char *a = getenv("DF11_ATTENTION");
        s->attn_cudnn = !(a && !strcmp(a, "own"));
    }
    s->stream = s->own;
    s->prof = opcu_prof_create();
    if (cublasLtCreate(&s->lt) != CUBLAS_STATUS_SUCCESS) {
        e = err_set(ERR_CUDA, "cublasLtCreate failed");
        goto fail;
    }
    s->ws_bytes = WORKSPACE_BYTES;
    if ((ce = cudaMalloc(&s->ws, s->ws_bytes)) != cudaSuccess) {
        e = cuda_fail(ce, "allocating the cuBLASLt workspace");
        goto fail;
    }
    if ((ds = cudnnCreate(&s->dnn)) != CUDNN_STATUS_SUCCESS) {
        e = err_set(ERR_CUDA, "cudnnCreate: %s", cudnnGetErrorString(ds));
        goto fail;
    }
    cudnnSetStream(s->dnn, s->stream);
    LOG_DEBUG("ops: %s, %d SMs, %.1f GiB; cuBLASLt %zu, cuDNN %zu", p.name, s->sms,
              (double)p.totalGlobalMem / (1u << 30), cublasLtGetVersion(), cudnnGetVersion());
    *out = s;
    return ERR_OK;
fail:
    opcu_free(s);
    return e;
}

void opcu_free(struct opcu_state *s) {
    if (!s) return;
    if (s->own) cudaStreamSynchronize(s->own);
    if (s->stream && s->stream != s->own) cudaStreamSynchronize(s->stream);
    opcu_prof_free(s->prof);
    gemm_cache_free(s->gemm);
    sdpa_cache_free(s->sdpa);
    conv_cache_free(s->conv);
    if (s->dnn) cudnnDestroy(s->dnn);
    if (s->lt) cublasLtDestroy(s->lt);
    cudaFree(s->ws);
    cudaFree(s->scratch);
    if (s->own) cudaStreamDestroy(s->own);
    free(s);
}

void opcu_set_stream(struct opcu_state *s, struct CUstream_st *stream) {
    s->stream = stream ? stream : s->own;
    cudnnSetStream(s->dnn, s->stream);
}

struct CUstream_st *opcu_stream(const struct opcu_state *s) {
    return s->stream;
}

int opcu_profiling(const struct opcu_state *s) { return s->prof != NULL; }

err opcu_sync(struct opcu_state *s) {
    CUDA_TRY(cudaStreamSynchronize(s->stream), "waiting for the GPU");
    return ERR_OK;
}

/* cudaMemcpy runs on the legacy default stream, which does not wait for the context's
 * non-blocking stream: its work is waited for first */
err opcu_mem_upload(struct opcu_state *s, void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaStreamSynchronize(s->stream), "waiting for the GPU");
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copy to GPU");
    return ERR_OK;
}

err opcu_mem_download(struct opcu_state *s, void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaStreamSynchronize(s->stream), "waiting for the GPU");
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copy from GPU");
    return ERR_OK;
}

} /* extern "C" */

void *opcu_scratch(op_ctx *c, size_t bytes) {
    opcu_state *s = c->cu;
    if (bytes <= s->scratch_bytes) return s->scratch;
    CU_OK(cudaStreamSynchronize(s->stream));
    cudaFree(s->scratch);
    s->scratch = NULL;
    s->scratch_bytes = 0;
    CU_OK(cudaMalloc(&s->scratch, bytes));
    s->scratch_bytes = bytes;
    LOG_DEBUG("ops: scratch grown to %zu bytes", bytes);
    return s->scratch;
}
