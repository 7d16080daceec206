/* fuzz_container: libFuzzer target for the DF11 container reader and the blob decoder. Any
 * input must give a clean error or a decode, never a crash, a hang or a leak. Built as a real
 * libFuzzer target with -DDF11_FUZZ=ON (clang), and always as fuzz_replay, which runs it over
 * files given on the command line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "df11/container.h"

#define FUZZ_MAX_TENSOR_BYTES (64u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* blobs are read in place, so give the reader the alignment a mapped file has */
    uint8_t *buf = aligned_alloc(256, (size + 255) / 256 * 256 + 256);
    if (!buf) return 0;
    memcpy(buf, data, size);
    df11_ckpt *c = NULL;
    if (df11_ckpt_open_memory(buf, size, "fuzz", &c) == ERR_OK) {
        for (int i = 0; i < df11_ckpt_count(c); i++) {
            const df11_tensor *t = df11_ckpt_at(c, i);
            uint64_t nb = t->end - t->begin;
            if (nb > FUZZ_MAX_TENSOR_BYTES) continue;
            void *out = malloc(nb ? nb : 1);
            if (out) (void)df11_ckpt_read(c, t, out);
            free(out);
        }
        df11_ckpt_close(c);
    }
    /* the same bytes as a bare blob */
    df11_blob b;
    if (df11_blob_parse(buf, size, &b) == ERR_OK && b.n * 2 <= FUZZ_MAX_TENSOR_BYTES) {
        uint16_t *out = malloc(b.n * 2 + 2);
        if (out) (void)df11_decode_cpu(&b, out);
        free(out);
    }
    free(buf);
    return 0;
}
