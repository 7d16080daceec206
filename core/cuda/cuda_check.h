/* cuda_check: turning a CUDA runtime error into a returned err (core/err.h), for the .cu
 * files of core/cuda/ and df11/cuda/ that return errors. Internal; include after
 * cuda_runtime.h. */
#ifndef CORE_CUDA_CHECK_H
#define CORE_CUDA_CHECK_H

extern "C" {
#include "core/err.h"
}

static inline err cuda_fail(cudaError_t c, const char *what) {
    return err_set(ERR_CUDA, "%s: %s", what, cudaGetErrorString(c));
}

#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t c_ = (call);                                                                   \
        if (c_ != cudaSuccess) return cuda_fail(c_, what);                                         \
    } while (0)

#endif
