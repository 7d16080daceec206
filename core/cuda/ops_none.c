/* ops_none.c: the CUDA side of the ops (ops_internal.h) in a build without nvcc: a CUDA op
 * context cannot be created, so no opcu_ op is ever reached; each aborts if one is. */
#include "core/ops_internal.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

err opcu_create(struct opcu_state **out) {
    *out = NULL;
    FAIL(ERR_CUDA, "this df11 was built without CUDA");
}
void opcu_free(struct opcu_state *s) {}
void opcu_set_stream(struct opcu_state *s, struct CUstream_st *stream) {}
struct CUstream_st *opcu_stream(const struct opcu_state *s) {
    return NULL;
}
err opcu_sync(struct opcu_state *s) { return ERR_OK; }
err opcu_mem_upload(struct opcu_state *s, void *dst, const void *src, size_t bytes) {
    CHECK(!"opcu_mem_upload: no CUDA op context can exist");
    return ERR_CUDA;
}
err opcu_mem_download(struct opcu_state *s, void *dst, const void *src, size_t bytes) {
    CHECK(!"opcu_mem_download: no CUDA op context can exist");
    return ERR_CUDA;
}
int opcu_profiling(const struct opcu_state *s) { return 0; }
void opcu_prof_begin(op_ctx *c) { CHECK(!"opcu_prof_begin: no CUDA op context can exist"); }
void opcu_prof_end(op_ctx *c, const char *name, double flops) {
    CHECK(!"opcu_prof_end: no CUDA op context can exist");
}

#define OPS_UNREACHABLE(name, args)                                                                \
    void opcu_##name args { CHECK(!"opcu_" #name ": no CUDA op context can exist"); }
OPS_EACH(OPS_UNREACHABLE)
