/* gpu_none: gpu.h in a build without nvcc: every call fails with the same message. */
#include "core/cuda/gpu.h"

#define NO_CUDA FAIL(ERR_CUDA, "this df11 was built without CUDA")

err gpu_alloc(void **p, size_t bytes) {
    *p = NULL;
    NO_CUDA;
}
void gpu_free(void *p) { (void)p; }
err gpu_upload(void *dst, const void *src, size_t bytes) { NO_CUDA; }
err gpu_download(void *dst, const void *src, size_t bytes) { NO_CUDA; }
err gpu_copy(void *dst, const void *src, size_t bytes, struct CUstream_st *s) { NO_CUDA; }
err gpu_memset(void *p, int v, size_t bytes) { NO_CUDA; }
err gpu_host_alloc(void **p, size_t bytes) {
    *p = NULL;
    NO_CUDA;
}
void gpu_host_free(void *p) { (void)p; }
err gpu_upload_async(void *dst, const void *src, size_t bytes, struct CUstream_st *s) { NO_CUDA; }
err gpu_mem_info(size_t *free_bytes, size_t *total_bytes) { NO_CUDA; }
err gpu_stream_wait(struct CUstream_st *s, struct CUevent_st *e) { NO_CUDA; }
err gpu_sync(void) { NO_CUDA; }
err gpu_stream_create(struct CUstream_st **s) {
    *s = NULL;
    NO_CUDA;
}
err gpu_stream_create_background(struct CUstream_st **s) { *s = NULL; NO_CUDA; }
void gpu_stream_destroy(struct CUstream_st *s) { (void)s; }
err gpu_event_create(struct CUevent_st **e) {
    *e = NULL;
    NO_CUDA;
}
void gpu_event_destroy(struct CUevent_st *e) { (void)e; }
err gpu_event_record(struct CUevent_st *e, struct CUstream_st *s) { NO_CUDA; }
err gpu_event_ms(struct CUevent_st *a, struct CUevent_st *b, float *ms) { NO_CUDA; }
err gpu_device_info(char *name, size_t n, int *sms, size_t *mem) { NO_CUDA; }
err gpu_graph_begin(struct CUstream_st *s) { NO_CUDA; }
err gpu_graph_end(struct CUstream_st *s, gpu_graph **g) {
    *g = NULL;
    NO_CUDA;
}
err gpu_graph_launch(gpu_graph *g, struct CUstream_st *s) { NO_CUDA; }
void gpu_graph_free(gpu_graph *g) { (void)g; }
