/* gpu: the few CUDA runtime calls that C code (the app, tests, benchmarks) needs, as plain C
 * functions returning err, so no C file includes a CUDA header. Streams are passed as
 * struct CUstream_st *; NULL is the default stream. */
#ifndef CORE_CUDA_GPU_H
#define CORE_CUDA_GPU_H

#include <stddef.h>

#include "core/err.h"

struct CUstream_st;
struct CUevent_st;

err gpu_alloc(void **p, size_t bytes); /* device memory, 256-byte aligned */
void gpu_free(void *p);                /* accepts NULL */
err gpu_upload(void *dst, const void *src, size_t bytes);
err gpu_download(void *dst, const void *src, size_t bytes);
err gpu_copy(void *dst, const void *src, size_t bytes,
             struct CUstream_st *s); /* device to device */
err gpu_memset(void *p, int v, size_t bytes);
/* Page-locked host memory (fast, asynchronous copies to the device). */
err gpu_host_alloc(void **p, size_t bytes);
void gpu_host_free(void *p); /* accepts NULL */
/* Host (pinned) to device, asynchronous on s. */
err gpu_upload_async(void *dst, const void *src, size_t bytes, struct CUstream_st *s);
/* Free and total device memory, in bytes. */
err gpu_mem_info(size_t *free_bytes, size_t *total_bytes);
err gpu_sync(void);
err gpu_stream_create(struct CUstream_st **s);
/* A stream of the lowest priority: its kernels take SMs only where higher-priority work
 * leaves room (background decoding and copies). */
err gpu_stream_create_background(struct CUstream_st **s);
void gpu_stream_destroy(struct CUstream_st *s);
err gpu_event_create(struct CUevent_st **e);
void gpu_event_destroy(struct CUevent_st *e);
err gpu_event_record(struct CUevent_st *e, struct CUstream_st *s);
/* Work enqueued on s after this waits for e's last recorded point (none yet: no wait). */
err gpu_stream_wait(struct CUstream_st *s, struct CUevent_st *e);
/* Milliseconds between two recorded events (synchronizes on b). */
err gpu_event_ms(struct CUevent_st *a, struct CUevent_st *b, float *ms);
/* The device's name, SM count and memory in bytes. */
err gpu_device_info(char *name, size_t n, int *sms, size_t *mem);

/* Graph capture of work on a stream, then replays (for "capturable in a CUDA graph"). */
typedef struct gpu_graph gpu_graph;
err gpu_graph_begin(struct CUstream_st *s);
err gpu_graph_end(struct CUstream_st *s, gpu_graph **g);
err gpu_graph_launch(gpu_graph *g, struct CUstream_st *s);
void gpu_graph_free(gpu_graph *g);

#endif
