/* gpu: C wrappers over the CUDA runtime for callers that include no CUDA header. */
#include <cuda_runtime.h>

#include "core/cuda/cuda_check.h"

extern "C" {
#include "core/cuda/gpu.h"
}

struct gpu_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

extern "C" {

err gpu_alloc(void **p, size_t bytes) {
    *p = NULL;
    cudaError_t c = cudaMalloc(p, bytes ? bytes : 1);
    if (c == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* not sticky: clear it, or the next launch check would see it */
        return err_set(ERR_NOMEM, "GPU out of memory allocating %zu bytes", bytes);
    }
    CUDA_TRY(c, "cudaMalloc");
    return ERR_OK;
}

void gpu_free(void *p) {
    if (p) cudaFree(p);
}

err gpu_upload(void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copy to GPU");
    return ERR_OK;
}

err gpu_download(void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copy from GPU");
    return ERR_OK;
}

err gpu_copy(void *dst, const void *src, size_t bytes, struct CUstream_st *s) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy on GPU");
    return ERR_OK;
}

err gpu_memset(void *p, int v, size_t bytes) {
    CUDA_TRY(cudaMemset(p, v, bytes), "cudaMemset");
    return ERR_OK;
}

err gpu_host_alloc(void **p, size_t bytes) {
    *p = NULL;
    cudaError_t c = cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (c == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return err_set(ERR_NOMEM, "out of pinned host memory allocating %zu bytes", bytes);
    }
    CUDA_TRY(c, "cudaHostAlloc");
    return ERR_OK;
}

void gpu_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

err gpu_upload_async(void *dst, const void *src, size_t bytes, struct CUstream_st *s) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "copy to GPU");
    return ERR_OK;
}

err gpu_mem_info(size_t *free_bytes, size_t *total_bytes) {
    CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
    return ERR_OK;
}

err gpu_sync(void) {
    CUDA_TRY(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    return ERR_OK;
}

err gpu_stream_create(struct CUstream_st **s) {
    CUDA_TRY(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking), "cudaStreamCreate");
    return ERR_OK;
}

err gpu_stream_create_background(struct CUstream_st **s) {
    int least = 0, greatest = 0;
    CUDA_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest),
             "cudaDeviceGetStreamPriorityRange");
    CUDA_TRY(cudaStreamCreateWithPriority(s, cudaStreamNonBlocking, least), "cudaStreamCreate");
    return ERR_OK;
}

void gpu_stream_destroy(struct CUstream_st *s) {
    if (s) cudaStreamDestroy(s);
}

err gpu_event_create(struct CUevent_st **e) {
    CUDA_TRY(cudaEventCreate(e), "cudaEventCreate");
    return ERR_OK;
}

void gpu_event_destroy(struct CUevent_st *e) {
    if (e) cudaEventDestroy(e);
}

err gpu_event_record(struct CUevent_st *e, struct CUstream_st *s) {
    CUDA_TRY(cudaEventRecord(e, s), "cudaEventRecord");
    return ERR_OK;
}

err gpu_stream_wait(struct CUstream_st *s, struct CUevent_st *e) {
    CUDA_TRY(cudaStreamWaitEvent(s, e, 0), "cudaStreamWaitEvent");
    return ERR_OK;
}

err gpu_event_ms(struct CUevent_st *a, struct CUevent_st *b, float *ms) {
    CUDA_TRY(cudaEventSynchronize(b), "cudaEventSynchronize");
    CUDA_TRY(cudaEventElapsedTime(ms, a, b), "cudaEventElapsedTime");
    return ERR_OK;
}

err gpu_device_info(char *name, size_t n, int *sms, size_t *mem) {
    cudaDeviceProp p;
    int dev = 0;
    CUDA_TRY(cudaGetDevice(&dev), "cudaGetDevice");
    CUDA_TRY(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    snprintf(name, n, "%s", p.name);
    *sms = p.multiProcessorCount;
    *mem = p.totalGlobalMem;
    return ERR_OK;
}

err gpu_graph_begin(struct CUstream_st *s) {
    CUDA_TRY(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    return ERR_OK;
}

err gpu_graph_end(struct CUstream_st *s, gpu_graph **out) {
    gpu_graph *g = new gpu_graph();
    cudaError_t c = cudaStreamEndCapture(s, &g->graph);
    if (c == cudaSuccess) c = cudaGraphInstantiate(&g->exec, g->graph, 0);
    if (c != cudaSuccess) {
        delete g;
        return cuda_fail(c, "graph capture");
    }
    *out = g;
    return ERR_OK;
}

err gpu_graph_launch(gpu_graph *g, struct CUstream_st *s) {
    CUDA_TRY(cudaGraphLaunch(g->exec, s), "cudaGraphLaunch");
    return ERR_OK;
}

void gpu_graph_free(gpu_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    cudaGraphDestroy(g->graph);
    delete g;
}
}
