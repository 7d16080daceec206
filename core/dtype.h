/* dtype: the element types of safetensors (spec: huggingface/safetensors, Dtype enum) and
 * their sizes in bits. Sub-byte types (F4, F6_*) are packed: a tensor takes ceil(n*bits/8)
 * bytes. */
#ifndef CORE_DTYPE_H
#define CORE_DTYPE_H

#include <stdint.h>

typedef enum dtype {
    DTYPE_INVALID = 0,
    DTYPE_BOOL,
    DTYPE_U8,
    DTYPE_I8,
    DTYPE_F8_E5M2,
    DTYPE_F8_E4M3,
    DTYPE_F8_E8M0,
    DTYPE_F4,
    DTYPE_F6_E2M3,
    DTYPE_F6_E3M2,
    DTYPE_I16,
    DTYPE_U16,
    DTYPE_F16,
    DTYPE_BF16,
    DTYPE_I32,
    DTYPE_U32,
    DTYPE_F32,
    DTYPE_C64,
    DTYPE_F64,
    DTYPE_I64,
    DTYPE_U64,
    DTYPE_COUNT
} dtype;

/* The safetensors name ("BF16"), or "?" for an invalid value. */
const char *dtype_name(dtype t);
/* Parses a safetensors dtype name; DTYPE_INVALID if unknown. */
dtype dtype_from_name(const char *name);
/* Bits per element (1-byte BOOL counts 8). */
int dtype_bits(dtype t);
/* Bytes taken by n elements (rounded up for sub-byte types); UINT64_MAX on overflow. */
uint64_t dtype_nbytes(dtype t, uint64_t n);

#endif
