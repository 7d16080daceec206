/* fuzz_replay: runs the fuzz target over the files named on the command line (a corpus, or a
 * crash to reproduce) without libFuzzer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "fuzz_replay: cannot open %s\n", argv[i]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *d = malloc((size_t)n + 1);
        size_t got = fread(d, 1, (size_t)n, f);
        fclose(f);
        LLVMFuzzerTestOneInput(d, got);
        free(d);
    }
    printf("fuzz_replay: %d input(s) ran clean\n", argc - 1);
    return 0;
}
