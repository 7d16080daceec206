/* main: the df11 program. Dispatches to the commands; the only place that sees the raw argv. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cli.h"
#include "core/err.h"
#include "core/log.h"

#define DF11_PROGRAM_VERSION "0.1.0"

static const char usage[] =
    "df11 " DF11_PROGRAM_VERSION
    " - FLUX.1 and SD3.5 text-to-image from losslessly compressed (DF11) weights\n"
    "\n"
    "usage: df11 <command> [options] [args]\n"
    "\n"
    "commands:\n"
    "  generate -m DIR -p PROMPT   render a PNG with FLUX.1 or SD3.5 (BF16 or DF11 weights;\n"
    "                     a DF11 run writes the same bytes as the BF16 run)\n"
    "  batch FILE -m DIR -o OUTDIR  one PNG a line of FILE (a prompt, or JSON with its\n"
    "                     parameters), the models loaded once; resumes where it stopped\n"
    "  window -m DIR      a desktop window: prompt, parameters, live preview, history\n"
    "  regress DIR -m DIR render a folder of PNGs again from their parameters and compare\n"
    "  compress IN OUT    compress IN to DF11 (BF16 exponents entropy-coded, every bit kept).\n"
    "                     IN is a .safetensors file, a sharded checkpoint (its\n"
    "                     *.safetensors.index.json) or a model folder (diffusers layout: every\n"
    "                     .safetensors file compressed, every other file copied)\n"
    "  decompress IN OUT  rebuild the original files from DF11, byte for byte\n"
    "  verify PATH        check every checksum and decode every tensor of a DF11 checkpoint\n"
    "  inspect PATH       sizes, ratio and bits per weight, per tensor and in total\n"
    "  info FILE.png      the parameters a PNG was generated with (text, or --json)\n"
    "  help [COMMAND]     this text, or a command's options\n"
    "\n"
    "options for every command:\n"
    "  -q, --quiet        no progress output\n"
    "  -v, --verbose      more log output\n"
    "  -h, --help         help for the command\n"
    "      --version      print the version\n"
    "\n"
    "Outputs are written to a temporary name and renamed when complete; an existing output is\n"
    "kept unless --force is given; the input is never overwritten.\n"
    "Exit status: 0 success, 1 the work failed (bad input, I/O, checksum), 2 usage error.\n";

static const char *help_for(const char *cmd) {
    if (!strcmp(cmd, "regress")) return cli_help_regress;
    if (!strcmp(cmd, "window")) return cli_help_window;
    if (!strcmp(cmd, "compress"))
        return "usage: df11 compress IN OUT [-f] [-j N] [--table-log N] [--steps N]\n"
               "  -f, --force         replace OUT if it exists\n"
               "  -j, --threads N     encoder threads (default: all cores)\n"
               "      --table-log N   tANS table size 2^N, 5..12 (default 12)\n"
               "      --steps N       steps per segment, 1..65536 (default 512: 64 Ki weights)\n";
    if (!strcmp(cmd, "info"))
        return "usage: df11 info [--json] FILE.png...\n"
               "Prints the parameters a PNG carries: the A1111-style \"parameters\" text (df11\n"
               "generate, A1111, Forge and others write it), df11's JSON and every other text\n"
               "chunk, with the image's size.\n"
               "      --json   one JSON object a file (JSON Lines for several): file, width,\n"
               "               height, parameters, df11 (the parsed JSON), texts (the others)\n"
               "Exit status 1 when a file cannot be read or carries no parameters.\n";
    if (!strcmp(cmd, "decompress"))
        return "usage: df11 decompress IN OUT [-f] [-j N]\n"
               "  -f, --force         replace OUT if it exists\n"
               "  -j, --threads N     decoder threads (default: all cores)\n";
    if (!strcmp(cmd, "verify"))
        return "usage: df11 verify PATH [-j N] [--gpu]\n"
               "  -j, --threads N     decoder threads (default: all cores)\n"
               "      --gpu           also decode every compressed tensor on the GPU and compare\n"
               "                      with the CPU reference decoder\n";
    if (!strcmp(cmd, "inspect"))
        return "usage: df11 inspect PATH [--json] [--tensors]\n"
               "      --json          machine-readable output on stdout\n"
               "      --tensors       one row per tensor (default when there are at most 40)\n"
               "      --totals        totals only\n";
    return NULL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "df11: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'df11 %s --help')\n", cmd ? cmd : "help");
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(void) {
    fprintf(stderr, "df11: error: %s\n", err_msg());
    return CLI_EXIT_FAIL;
}

int cli_opt(int argc, char **argv, int *i, const char *shrt, const char *lng, const char **val) {
    const char *a = argv[*i];
    size_t ll = lng ? strlen(lng) : 0;
    int hit = (shrt && !strcmp(a, shrt)) || (lng && !strcmp(a, lng));
    if (!val) return hit;
    if (lng && !strncmp(a, lng, ll) && a[ll] == '=') {
        *val = a + ll + 1;
        return 1;
    }
    if (!hit) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "df11: option %s needs a value\n", a);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

int cli_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "df11: %s: expected an integer in %ld..%ld, got \"%s\"\n", opt, lo, hi, v);
        return 0;
    }
    *out = x;
    return 1;
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(int, char **, const cli_common *);
    } cmds[] = {{"compress", cmd_compress}, {"decompress", cmd_decompress}, {"verify", cmd_verify},
                {"inspect", cmd_inspect},   {"generate", cmd_generate},     {"info", cmd_info},
                {"batch", cmd_batch},       {"regress", cmd_regress},       {"window", cmd_window}};
    if (argc < 2) {
        fputs(usage, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        if (argc > 2 && !strcmp(argv[2], "generate")) return gen_help(stdout), 0;
        if (argc > 2 && !strcmp(argv[2], "batch")) return batch_help(stdout), 0;
        const char *h = argc > 2 ? help_for(argv[2]) : NULL;
        fputs(h ? h : usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("df11 %s\n", DF11_PROGRAM_VERSION);
        return 0;
    }
    for (size_t k = 0; k < sizeof cmds / sizeof *cmds; k++) {
        if (strcmp(cmd, cmds[k].name)) continue;
        cli_common c = {0, 0};
        int n = 0;
        char **rest = malloc(sizeof *rest * (size_t)argc);
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
                if (!strcmp(cmd, "generate"))
                    gen_help(stdout);
                else if (!strcmp(cmd, "batch"))
                    batch_help(stdout);
                else
                    fputs(help_for(cmd), stdout);
                free(rest);
                return 0;
            }
            if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
                c.quiet = 1;
            else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
                c.verbose = 1;
            else
                rest[n++] = argv[i];
        }
        if (c.verbose) log_set_level(LOG_LEVEL_DEBUG);
        int rc = cmds[k].fn(n, rest, &c);
        free(rest);
        return rc;
    }
    return cli_usage_error(NULL, "unknown command \"%s\"", cmd);
}
