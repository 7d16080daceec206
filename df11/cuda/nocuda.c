/* nocuda: the CUDA decoder's entry points in a build without nvcc; each says so. */
#include "df11/cuda/df11_cuda.h"

int df11_cuda_available(void) {
    err_set(ERR_CUDA, "this df11 was built without CUDA");
    return 0;
}

err df11_cuda_plan_create(const df11_cuda_item *items, int n, df11_cuda_plan **out) {
    *out = NULL;
    FAIL(ERR_CUDA, "this df11 was built without CUDA");
}

void df11_cuda_plan_free(df11_cuda_plan *p) { (void)p; }

err df11_cuda_decode(const df11_cuda_plan *p, struct CUstream_st *stream) {
    FAIL(ERR_CUDA, "this df11 was built without CUDA");
}

uint64_t df11_cuda_plan_elems(const df11_cuda_plan *p) { return 0; }

/* gpu.h without CUDA: every call fails with the same message. */
#include "df11/cuda/gpu.h"

#define NO_CUDA FAIL(ERR_CUDA, "this df11 was built without CUDA")

err gpu_alloc(void **p, size_t bytes) { *p = NULL; NO_CUDA; }
void gpu_free(void *p) { (void)p; }
err gpu_upload(void *dst, const void *src, size_t bytes) { NO_CUDA; }
err gpu_download(void *dst, const void *src, size_t bytes) { NO_CUDA; }
err gpu_copy(void *dst, const void *src, size_t bytes, struct CUstream_st *s) { NO_CUDA; }
err gpu_memset(void *p, int v, size_t bytes) { NO_CUDA; }
err gpu_sync(void) { NO_CUDA; }
err gpu_stream_create(struct CUstream_st **s) { *s = NULL; NO_CUDA; }
void gpu_stream_destroy(struct CUstream_st *s) { (void)s; }
err gpu_event_create(struct CUevent_st **e) { *e = NULL; NO_CUDA; }
void gpu_event_destroy(struct CUevent_st *e) { (void)e; }
err gpu_event_record(struct CUevent_st *e, struct CUstream_st *s) { NO_CUDA; }
err gpu_event_ms(struct CUevent_st *a, struct CUevent_st *b, float *ms) { NO_CUDA; }
err gpu_device_info(char *name, size_t n, int *sms, size_t *mem) { NO_CUDA; }
err gpu_graph_begin(struct CUstream_st *s) { NO_CUDA; }
err gpu_graph_end(struct CUstream_st *s, gpu_graph **g) { *g = NULL; NO_CUDA; }
err gpu_graph_launch(gpu_graph *g, struct CUstream_st *s) { NO_CUDA; }
void gpu_graph_free(gpu_graph *g) { (void)g; }
