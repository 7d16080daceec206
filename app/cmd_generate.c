/* cmd_generate: `df11 generate`, text to image, with stable-diffusion.cpp's flag names. Parses
 * argv, checks every output name before any model is loaded, shows progress, and writes each
 * image as a PNG whose text chunks carry the parameters (A1111's "parameters" text and JSON)
 * and nothing run-specific: no time, no path, no weight format, so a DF11 run and a BF16 run
 * of the same job write the same bytes. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/cli.h"
#include "app/generate.h"
#include "app/png.h"
#include "app/progress.h"
#include "core/log.h"

/* Checks an output pattern: at most one integer conversion (%d, %03d, %i, %u, %x), %% allowed. */
static int pattern_ok(const char *pat, int *has_conv) {
    *has_conv = 0;
    for (const char *c = pat; *c; c++) {
        if (*c != '%') continue;
        if (c[1] == '%') {
            c++;
            continue;
        }
        c++;
        while (*c == '0' || *c == '-' || *c == '+' || *c == ' ')
            c++;
        while (*c >= '0' && *c <= '9')
            c++;
        if (!*c || !strchr("diux", *c) || (*has_conv)++) return 0;
    }
    return 1;
}

/* Image i's file name: the pattern with i, or with "_<i>" before the extension when it has no
 * conversion and there are several images. */
static void out_name(const gen_args *a, int i, char *buf, size_t n) {
    int conv;
    pattern_ok(a->out, &conv);
    if (conv) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(buf, n, a->out, i);
#pragma GCC diagnostic pop
        return;
    }
    if (a->job.batch_count == 1) {
        snprintf(buf, n, "%s", a->out);
        return;
    }
    const char *dot = strrchr(a->out, '.'), *slash = strrchr(a->out, '/');
    if (!dot || (slash && dot < slash)) dot = a->out + strlen(a->out);
    snprintf(buf, n, "%.*s_%d%s", (int)(dot - a->out), a->out, i, dot);
}

typedef struct gen_state {
    const gen_args *a;
    pipeline_info info;
    progress_steps steps;
} gen_state;

void gen_log_info(const pipeline_info *in) {
    char slg[64] = "";
    if (in->slg_scale > 0) snprintf(slg, sizeof slg, ", skip-layer guidance %.2f", in->slg_scale);
    if (in->family == PIPELINE_SD3)
        LOG_INFO("%s (model hash %s), %dx%d, %d steps, CFG scale %.2f%s, T5 length %d, noise %s, "
                 "%s",
                 in->model_name, in->model_hash, in->width, in->height, in->steps, in->cfg_scale,
                 slg, in->max_seq, in->noise_dtype, in->backend);
    else
        LOG_INFO("%s (model hash %s), %dx%d, %d steps, guidance %.2f, T5 length %d, noise %s, %s",
                 in->model_name, in->model_hash, in->width, in->height, in->steps, in->guidance,
                 in->max_seq, in->noise_dtype, in->backend);
}

/* "7,8,9" */
static void layers_text(const pipeline_info *in, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < in->n_skip && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%d", i ? "," : "", in->skip_layers[i]);
}

static void on_info(void *ctx, int job, const pipeline_info *in) {
    (void)job;
    ((gen_state *)ctx)->info = *in;
    gen_log_info(in);
}

static void on_step(void *ctx, int job, int image, int n_images, int step, int n_steps) {
    (void)job, (void)step;
    gen_state *g = ctx;
    g->steps.total = (uint64_t)(n_images * n_steps);
    char what[32];
    snprintf(what, sizeof what, "image %d/%d", image + 1, n_images);
    progress_steps_add(&g->steps, what);
}

/* The A1111-style parameters text (the prompt, then one line of "Key: value"). */
static void params_text(const pipeline_info *in, const char *prompt, uint64_t seed, char *buf,
                        size_t n) {
    if (in->family == PIPELINE_SD3) {
        char slg[384] = "", layers[200];
        layers_text(in, layers, sizeof layers);
        if (in->slg_scale > 0)
            snprintf(slg, sizeof slg,
                     "SLG scale: %g, Skip layers: %s, SLG start: %g, SLG end: %g, ", in->slg_scale,
                     layers, in->slg_start, in->slg_end);
        int k = snprintf(buf, n, "%s\n", prompt);
        if (in->negative && k >= 0 && (size_t)k < n)
            k += snprintf(buf + k, n - (size_t)k, "Negative prompt: %s\n", in->negative);
        if (k >= 0 && (size_t)k < n)
            snprintf(buf + k, n - (size_t)k,
                     "Steps: %d, Sampler: Euler, Schedule type: Simple, CFG scale: %g, %sSeed: "
                     "%llu, Size: %dx%d, Model hash: %.10s, Model: %s, Max sequence length: %d, "
                     "Noise: %s, Backend: %s, Version: %s",
                     in->steps, in->cfg_scale, slg, (unsigned long long)seed, in->width, in->height,
                     in->model_hash, in->model_name, in->max_seq, in->noise_dtype, in->backend,
                     GEN_VERSION);
        return;
    }
    snprintf(buf, n,
             "%s\nSteps: %d, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG "
             "Scale: %g, Seed: %llu, Size: %dx%d, Model hash: %.10s, Model: %s, Max sequence "
             "length: %d, Noise: %s, Backend: %s, Version: %s",
             prompt, in->steps, in->guidance, (unsigned long long)seed, in->width, in->height,
             in->model_hash, in->model_name, in->max_seq, in->noise_dtype, in->backend,
             GEN_VERSION);
}

static char *params_json(const pipeline_info *in, const char *prompt, uint64_t seed) {
    cJSON *o = cJSON_CreateObject();
    char seed_s[32];
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)seed);
    cJSON_AddStringToObject(o, "prompt", prompt);
    cJSON_AddStringToObject(o, "model", in->model_name);
    cJSON_AddStringToObject(o, "model_hash", in->model_hash);
    cJSON_AddRawToObject(o, "seed", seed_s); /* exact beyond 2^53 */
    cJSON_AddNumberToObject(o, "width", in->width);
    cJSON_AddNumberToObject(o, "height", in->height);
    cJSON_AddNumberToObject(o, "steps", in->steps);
    if (in->family == PIPELINE_SD3) {
        if (in->negative) cJSON_AddStringToObject(o, "negative_prompt", in->negative);
        cJSON_AddNumberToObject(o, "cfg_scale", in->cfg_scale);
        if (in->slg_scale > 0) {
            cJSON_AddNumberToObject(o, "slg_scale", in->slg_scale);
            cJSON_AddItemToObject(o, "skip_layers",
                                  cJSON_CreateIntArray(in->skip_layers, in->n_skip));
            cJSON_AddNumberToObject(o, "slg_start", in->slg_start);
            cJSON_AddNumberToObject(o, "slg_end", in->slg_end);
        }
    } else {
        cJSON_AddNumberToObject(o, "guidance", in->guidance);
    }
    cJSON_AddNumberToObject(o, "max_sequence_length", in->max_seq);
    cJSON_AddStringToObject(o, "sampler", "euler (flow matching)");
    cJSON_AddStringToObject(o, "noise_dtype", in->noise_dtype);
    cJSON_AddStringToObject(o, "backend", in->backend);
    cJSON_AddStringToObject(o, "program", GEN_VERSION);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

err gen_write_png(const char *name, const pipeline_info *in, const char *prompt, uint64_t seed,
                  const uint8_t *rgb, int w, int h) {
    char text[8192];
    params_text(in, prompt, seed, text, sizeof text);
    char *js = params_json(in, prompt, seed);
    FAIL_IF(!js, ERR_NOMEM, "out of memory");
    const char *keys[] = {"parameters", "df11"}, *vals[] = {text, js};
    err e = png_write_rgb(name, rgb, w, h, keys, vals, 2);
    free(js);
    return e;
}

static err on_image(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                    int h) {
    (void)job;
    gen_state *g = ctx;
    char name[4096];
    out_name(g->a, image, name, sizeof name);
    TRY(gen_write_png(name, &g->info, g->a->job.prompt, seed, rgb, w, h));
    if (!g->a->quiet)
        fprintf(stderr, "df11: wrote %s (seed %llu)\n", name, (unsigned long long)seed);
    printf("%s\n", name);
    fflush(stdout);
    return ERR_OK;
}

int gen_has_model(const char *cmd, const gen_args *a) {
    if (a->paths.model_dir || a->paths.diffusion_model) return 1;
    cli_usage_error(cmd, "no model: pass -m MODEL_DIR (or a checkpoint file) or --diffusion-model "
                         "FILE");
    return 0;
}

int gen_parse_float(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "df11: %s: expected a number in %g..%g, got \"%s\"\n", opt, lo, hi, v);
        return 0;
    }
    *out = x;
    return 1;
}

/* "7,8,9" or "[7, 8, 9]" (stable-diffusion.cpp's form) */
static int parse_layers(const char *v, pipeline_job *j) {
    const char *c = v;
    int n = 0;
    while (*c == '[' || *c == ' ')
        c++;
    while (*c && *c != ']') {
        char *end;
        long x = strtol(c, &end, 10);
        if (end == c || x < 0 || x > 999 || n == PIPELINE_MAX_SKIP) goto bad;
        j->skip_layers[n++] = (int)x;
        c = end;
        while (*c == ' ')
            c++;
        if (*c == ',') c++;
        while (*c == ' ')
            c++;
    }
    if (!n || (*c == ']' && c[1])) goto bad;
    j->n_skip = n;
    return 1;
bad:
    fprintf(stderr,
            "df11: --skip-layers: expected block indices like 7,8,9 or [7,8,9], got \"%s\"\n", v);
    return 0;
}

static int parse_noise(const char *v, int *out) {
    for (int k = NOISE_F32; k <= NOISE_F16_F32; k++)
        if (!strcmp(v, sampler_noise_name((noise_kind)k))) return *out = k, 1;
    return 0;
}

int gen_opt(int argc, char **argv, int *i, gen_args *a) {
    pipeline_paths *p = &a->paths;
    pipeline_job *j = &a->job;
    const char *v = NULL;
    long n;
    double d;
    int r;
#define STR(s, l, dst)                                                                             \
    if ((r = cli_opt(argc, argv, i, s, l, &v))) return r < 0 ? -1 : ((dst) = v, 1)
#define INT(s, l, lo, hi, dst)                                                                     \
    if ((r = cli_opt(argc, argv, i, s, l, &v)))                                                    \
    return r < 0 || !cli_int(l, v, lo, hi, &n) ? -1 : ((dst) = (int)n, 1)
    STR("-m", "--model", p->model_dir);
    STR(NULL, "--diffusion-model", p->diffusion_model);
    STR(NULL, "--vae", p->vae);
    STR(NULL, "--clip_l", p->clip_l);
    STR(NULL, "--clip_g", p->clip_g);
    STR(NULL, "--clip-g-tokenizer", p->clip_g_tokenizer);
    STR("-n", "--negative-prompt", j->negative);
    STR(NULL, "--t5xxl", p->t5xxl);
    STR(NULL, "--clip-tokenizer", p->clip_tokenizer);
    STR(NULL, "--t5-tokenizer", p->t5_tokenizer);
    STR("-p", "--prompt", j->prompt);
    STR("-o", "--output", a->out);
    INT("-W", "--width", 16, 8192, j->width);
    INT("-H", "--height", 16, 8192, j->height);
    INT(NULL, "--steps", 1, 1000, j->steps);
    INT(NULL, "--max-sequence-length", 2, 512, j->max_seq);
    INT("-b", "--batch-count", 1, 10000, j->batch_count);
#undef STR
#undef INT
    if ((r = cli_opt(argc, argv, i, "-s", "--seed", &v))) {
        char *end;
        unsigned long long s = strtoull(v, &end, 10);
        if (r < 0 || !*v || *end || *v == '-') {
            if (r > 0)
                fprintf(stderr, "df11: --seed: expected a non-negative integer, got \"%s\"\n", v);
            return -1;
        }
        j->seed = s;
        return 1;
    }
    if ((r = cli_opt(argc, argv, i, NULL, "--guidance", &v)))
        return r < 0 || !gen_parse_float("--guidance", v, 0, 100, &d) ? -1
                                                                      : (j->guidance = (float)d, 1);
    if ((r = cli_opt(argc, argv, i, NULL, "--cfg-scale", &v)))
        return r < 0 || !gen_parse_float("--cfg-scale", v, 0, 100, &d)
                   ? -1
                   : (j->cfg_scale = (float)d, 1);
    if ((r = cli_opt(argc, argv, i, NULL, "--slg-scale", &v)))
        return r < 0 || !gen_parse_float("--slg-scale", v, 0, 100, &d)
                   ? -1
                   : (j->slg_scale = (float)d, 1);
    if ((r = cli_opt(argc, argv, i, NULL, "--skip-layer-start", &v)))
        return r < 0 || !gen_parse_float("--skip-layer-start", v, 0, 1, &j->slg_start) ? -1 : 1;
    if ((r = cli_opt(argc, argv, i, NULL, "--skip-layer-end", &v)))
        return r < 0 || !gen_parse_float("--skip-layer-end", v, 0, 1, &j->slg_end) ? -1 : 1;
    if ((r = cli_opt(argc, argv, i, NULL, "--skip-layers", &v)))
        return r < 0 || !parse_layers(v, j) ? -1 : 1;
    if ((r = cli_opt(argc, argv, i, NULL, "--vram-budget", &v)))
        return r < 0 || !gen_parse_float("--vram-budget", v, 0.5, 1e4, &d)
                   ? -1
                   : (j->vram_budget_gb = d, 1);
    if ((r = cli_opt(argc, argv, i, NULL, "--noise-dtype", &v))) {
        if (r > 0 && parse_noise(v, &j->noise_dtype)) return 1;
        if (r > 0)
            fprintf(stderr,
                    "df11: --noise-dtype: expected f32, bf16, f16, f32-scalar, bf16-f32 or "
                    "f16-f32, got \"%s\"\n",
                    v);
        return -1;
    }
    if (cli_opt(argc, argv, i, NULL, "--cpu", NULL)) return j->cpu = 1, 1;
    if (cli_opt(argc, argv, i, "-f", "--force", NULL)) return a->force = 1, 1;
    return 0;
}

int gen_check_dir(const char *name) {
    char dir[4096];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", name);
    char *sl = strrchr(dir, '/');
    if (sl == dir)
        sl[1] = 0;
    else if (sl)
        *sl = 0;
    else
        snprintf(dir, sizeof dir, ".");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK) != 0) {
        fprintf(stderr, "df11: error: %s: the output folder %s does not exist or is not writable\n",
                name, dir);
        return 0;
    }
    return 1;
}

int cmd_generate(int argc, char **argv, const cli_common *c) {
    gen_args a;
    memset(&a, 0, sizeof a);
    pipeline_job_init(&a.job);
    a.out = "output.png";
    a.quiet = c->quiet;
    for (int i = 0; i < argc; i++) {
        int r = gen_opt(argc, argv, &i, &a);
        if (r < 0) return CLI_EXIT_USAGE;
        if (r == 0)
            return cli_usage_error("generate",
                                   argv[i][0] == '-' ? "unknown option \"%s\""
                                                     : "unexpected argument \"%s\"",
                                   argv[i]);
    }
    if (!a.job.prompt) return cli_usage_error("generate", "no prompt: pass -p \"...\"");
    if (!gen_has_model("generate", &a)) return CLI_EXIT_USAGE;
    int conv;
    if (!pattern_ok(a.out, &conv))
        return cli_usage_error("generate",
                               "-o \"%s\": at most one integer conversion (%%d, %%03d, ...) is "
                               "allowed, and %%%% for a percent sign",
                               a.out);
    if (a.job.batch_count > 1 && conv == 0)
        LOG_INFO("%d images: writing them as %s with _0, _1, ... before the extension",
                 a.job.batch_count, a.out);
    /* every output name, checked before any model is loaded */
    for (int i = 0; i < a.job.batch_count; i++) {
        char name[4096];
        struct stat st;
        out_name(&a, i, name, sizeof name);
        for (int k = 0; k < i; k++) {
            char prev[4096];
            out_name(&a, k, prev, sizeof prev);
            if (!strcmp(prev, name))
                return cli_usage_error("generate", "-o \"%s\" names images %d and %d the same",
                                       a.out, k, i);
        }
        /* the folder must exist and be writable now, not after minutes of rendering */
        if (!gen_check_dir(name)) return CLI_EXIT_FAIL;
        if (!a.force && stat(name, &st) == 0) {
            fprintf(stderr, "df11: error: %s exists (pass -f to replace it)\n", name);
            return CLI_EXIT_FAIL;
        }
    }
    gen_state g = {.a = &a, .steps = {.label = "denoise", .quiet = a.quiet}};
    pipeline_callbacks cb = {
        .ctx = &g, .on_step = on_step, .on_info = on_info, .on_image = on_image};
    err e = pipeline_run(&a.paths, &a.job, &cb);
    progress_steps_close(&g.steps);
    return e ? cli_fail() : 0;
}
