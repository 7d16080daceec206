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
