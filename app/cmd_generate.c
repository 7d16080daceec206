/* cmd_generate: `df11 generate`, text to image, with stable-diffusion.cpp's flag names. Parses
 * argv, checks every output name before any model is loaded, shows progress, and writes each
 * image as a PNG whose text chunks carry the parameters (A1111's "parameters" text and JSON)
 * and nothing run-specific: no time, no path, no weight format, so a DF11 run and a BF16 run
 * of the same job write the same bytes. */
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
#include "unet_dit/sampler.h"

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

void gen_args_init(gen_args *a) {
    memset(a, 0, sizeof *a);
    pipeline_options_init(&a->opt);
    job_init(&a->job);
}

void gen_args_free(gen_args *a) { job_free(&a->job); }

void gen_log_info(const pipeline_info *in) {
    const pipeline_job *j = &in->job;
    char g[96] = "";
    if (in->active & JOB_BIT(JOB_CFG_SCALE))
        snprintf(g, sizeof g, ", CFG scale %.2f", j->cfg_scale);
    if (in->active & JOB_BIT(JOB_SLG_SCALE))
        snprintf(g + strlen(g), sizeof g - strlen(g), ", skip-layer guidance %.2f", j->slg_scale);
    if (in->active & JOB_BIT(JOB_GUIDANCE))
        snprintf(g + strlen(g), sizeof g - strlen(g), ", guidance %.2f", j->guidance);
    LOG_INFO("%s (model hash %s), %dx%d, %d steps%s, T5 length %d, noise %s, %s", in->model_name,
             in->model_hash, j->width, j->height, j->steps, g, j->max_seq,
             sampler_noise_name((noise_kind)j->noise), in->backend);
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

err gen_write_png(const char *name, const pipeline_info *in, uint64_t seed, const uint8_t *rgb,
                  int w, int h) {
    pipeline_job j = in->job;
    j.seed = seed;
    const job_record r = {.job = &j,
                          .active = in->active,
                          .model = in->model_name,
                          .model_hash = in->model_hash,
                          .backend = in->backend,
                          .program = GEN_VERSION};
    char *text = job_png_text(&r), *js = job_png_json(&r);
    err e = text && js ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
    const char *keys[] = {"parameters", "df11"}, *vals[] = {text, js};
    if (!e) e = png_write_rgb(name, rgb, w, h, keys, vals, 2);
    free(text), free(js);
    return e;
}

static err on_image(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                    int h) {
    (void)job;
    gen_state *g = ctx;
    char name[4096];
    out_name(g->a, image, name, sizeof name);
    TRY(gen_write_png(name, &g->info, seed, rgb, w, h));
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

int gen_open(const gen_args *a, pipeline_session **s) {
    if (!pipeline_open(&a->paths, &a->opt, s)) return 1;
    cli_fail();
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

/* A job parameter's flag: its value through the schema */
static int job_opt(int argc, char **argv, int *i, gen_args *a) {
    const int k = job_find_flag(argv[*i]);
    if (k < 0) return 0;
    const job_param *p = &job_params[k];
    const char *v;
    const int r = cli_opt(argc, argv, i, p->shrt, p->flag, &v);
    if (r <= 0) return r;
    if (job_set_text(&a->job, (job_key)k, v, p->flag)) {
        fprintf(stderr, "df11: %s\n", err_msg());
        return -1;
    }
    return 1;
}

int gen_opt(int argc, char **argv, int *i, gen_args *a) {
    static const char *const residency[] = {"auto", "release", "keep"};
    pipeline_paths *p = &a->paths;
    const char *v = NULL;
    double d;
    int r;
#define STR(s, l, dst)                                                                             \
    if ((r = cli_opt(argc, argv, i, s, l, &v))) return r < 0 ? -1 : ((dst) = v, 1)
    STR("-m", "--model", p->model_dir);
    STR(NULL, "--diffusion-model", p->diffusion_model);
    STR(NULL, "--vae", p->vae);
    STR(NULL, "--clip_l", p->clip_l);
    STR(NULL, "--clip_g", p->clip_g);
    STR(NULL, "--clip-g-tokenizer", p->clip_g_tokenizer);
    STR(NULL, "--t5xxl", p->t5xxl);
    STR(NULL, "--clip-tokenizer", p->clip_tokenizer);
    STR(NULL, "--t5-tokenizer", p->t5_tokenizer);
    STR("-o", "--output", a->out);
#undef STR
    if ((r = job_opt(argc, argv, i, a))) return r;
    if ((r = cli_opt(argc, argv, i, NULL, "--vram-budget", &v)))
        return r < 0 || !gen_parse_float("--vram-budget", v, 0.5, 1e4, &d)
                   ? -1
                   : (a->opt.vram_budget_gb = d, 1);
    if ((r = cli_opt(argc, argv, i, NULL, "--residency", &v))) {
        for (int k = 0; r > 0 && k < 3; k++)
            if (!strcmp(v, residency[k])) return a->opt.residency = (pipeline_residency)k, 1;
        if (r > 0)
            fprintf(stderr, "df11: --residency: expected auto, release or keep, got \"%s\"\n", v);
        return -1;
    }
    if (cli_opt(argc, argv, i, NULL, "--cpu", NULL)) return a->opt.cpu = 1, 1;
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

/* -o's pattern and every output name, checked before any model is loaded: 0, or the exit
 * status (message printed) */
static int check_outputs(const gen_args *a) {
    int conv;
    if (!pattern_ok(a->out, &conv))
        return cli_usage_error("generate",
                               "-o \"%s\": at most one integer conversion (%%d, %%03d, ...) is "
                               "allowed, and %%%% for a percent sign",
                               a->out);
    if (a->job.batch_count > 1 && conv == 0)
        LOG_INFO("%d images: writing them as %s with _0, _1, ... before the extension",
                 a->job.batch_count, a->out);
    /* every output name, checked before any model is loaded */
    for (int i = 0; i < a->job.batch_count; i++) {
        char name[4096];
        struct stat st;
        out_name(a, i, name, sizeof name);
        for (int k = 0; k < i; k++) {
            char prev[4096];
            out_name(a, k, prev, sizeof prev);
            if (!strcmp(prev, name))
                return cli_usage_error("generate", "-o \"%s\" names images %d and %d the same",
                                       a->out, k, i);
        }
        /* the folder must exist and be writable now, not after minutes of rendering */
        if (!gen_check_dir(name)) return CLI_EXIT_FAIL;
        if (!a->force && stat(name, &st) == 0) {
            fprintf(stderr, "df11: error: %s exists (pass -f to replace it)\n", name);
            return CLI_EXIT_FAIL;
        }
    }
    return 0;
}

int cmd_generate(int argc, char **argv, const cli_common *c) {
    gen_args a;
    gen_args_init(&a);
    a.out = "output.png";
    a.quiet = c->quiet;
    int rc = 0;
    for (int i = 0; !rc && i < argc; i++) {
        int r = gen_opt(argc, argv, &i, &a);
        if (r < 0) rc = CLI_EXIT_USAGE;
        if (r == 0)
            rc = cli_usage_error("generate",
                                 argv[i][0] == '-' ? "unknown option \"%s\""
                                                   : "unexpected argument \"%s\"",
                                 argv[i]);
    }
    if (!rc && !a.job.prompt) rc = cli_usage_error("generate", "no prompt: pass -p \"...\"");
    if (!rc && !gen_has_model("generate", &a)) rc = CLI_EXIT_USAGE;
    if (!rc) rc = check_outputs(&a);
    pipeline_session *s = NULL;
    if (!rc && !gen_open(&a, &s)) rc = CLI_EXIT_FAIL;
    if (!rc) {
        gen_state g = {.a = &a, .steps = {.label = "denoise", .quiet = a.quiet}};
        pipeline_callbacks cb = {
            .ctx = &g, .on_step = on_step, .on_info = on_info, .on_image = on_image};
        err e = pipeline_run(s, &a.job, 1, &cb);
        progress_steps_close(&g.steps);
        if (e) rc = cli_fail();
    }
    pipeline_close(s);
    gen_args_free(&a);
    return rc;
}

/* ---- the help ---- */

/* text wrapped at 92 columns, its lines after the first indented by 27 */
static void wrap(FILE *f, const char *text, int col) {
    const int width = 92, indent = 27;
    while (*text) {
        const int room = width - col;
        int n = (int)strlen(text), cut = n;
        if (n > room) {
            cut = room;
            while (cut > 0 && text[cut] != ' ')
                cut--;
            if (cut == 0) cut = room;
        }
        fprintf(f, "%.*s\n", cut, text);
        text += cut;
        while (*text == ' ')
            text++;
        if (*text) fprintf(f, "%*s", indent, ""), col = indent;
    }
}

void gen_help_job(FILE *f) {
    for (int k = 0; k < JOB_N_KEYS; k++) {
        const job_param *p = &job_params[k];
        if (!p->flag) continue;
        char head[64], d[400], text[1200];
        snprintf(head, sizeof head, "  %s%s%s %s", p->shrt ? p->shrt : "    ", p->shrt ? ", " : "",
                 p->flag, p->metavar);
        pipeline_default_text((job_key)k, d, sizeof d);
        snprintf(text, sizeof text, "%s%s%s%s", p->help, d[0] ? " (default: " : "", d,
                 d[0] ? ")" : "");
        const int n = (int)strlen(head);
        fprintf(f, "%s%*s", head, n < 27 ? 27 - n : 1, "");
        wrap(f, text, n < 27 ? 27 : n + 1);
    }
}

void gen_help(FILE *f) {
    fputs("usage: df11 generate -m MODEL -p PROMPT [options]\n"
          "Renders PNGs with FLUX.1 (dev, schnell) or Stable Diffusion 3.5 (Large, Large\n"
          "Turbo, Medium), the model found from the weights, as diffusers' FluxPipeline and\n"
          "StableDiffusion3Pipeline do. Weights may be BF16, F16, F32 or DF11 (df11\n"
          "compress); a DF11 run writes the same bytes as the BF16 run of the same job.\n"
          "model:\n"
          "  -m, --model DIR|FILE     a diffusers folder (model_index.json, transformer/,\n"
          "                           vae/, text_encoder*/, tokenizer*/, ...) or a checkpoint\n"
          "                           file (sd3.5_large.safetensors: the parts it holds)\n"
          "      --diffusion-model F  the transformer on its own (flux1-dev.safetensors,\n"
          "                           sd3.5_medium.safetensors, or a transformer/ folder)\n"
          "      --vae F              the VAE (ae.safetensors or a vae/ folder)\n"
          "      --clip_l F           CLIP-L (clip_l.safetensors or a text_encoder/ folder)\n"
          "      --clip_g F           SD3.5's CLIP-G (clip_g.safetensors or text_encoder_2/)\n"
          "      --t5xxl F            T5-XXL (t5xxl_fp16.safetensors, ... or a folder); SD3.5\n"
          "                           runs without it (zeros, as diffusers)\n"
          "      --clip-tokenizer DIR vocab.json + merges.txt, or tokenizer.json\n"
          "      --clip-g-tokenizer DIR  SD3.5's tokenizer_2 (default: the CLIP tokenizer,\n"
          "                           padding with \"!\" as tokenizer_2 does)\n"
          "      --t5-tokenizer DIR   tokenizer.json or spiece.model\n"
          "                           (parts given on their own win over -m's)\n"
          "job (a model refuses what it does not take; batch lines and the PNG's df11 JSON use\n"
          "the same names with _ for -, e.g. \"cfg_scale\", \"max_sequence_length\"):\n",
          f);
    gen_help_job(f);
    fputs("output:\n"
          "  -o, --output PATTERN     output file (default output.png); may hold one %d\n"
          "                           (or %03d) for the image index; else several images\n"
          "                           get _0, _1, ... before the extension\n"
          "  -f, --force              replace existing outputs\n"
          "run:\n"
          "      --cpu                the CPU reference backend (fp32; slow, for checking)\n"
          "      --vram-budget GB     stream DF11 transformer blocks from host memory so the\n"
          "                           weights take at most GB of device memory; models are\n"
          "                           kept loaded between stages only within it\n"
          "      --residency R        what stays loaded between stages and jobs: auto (default:\n"
          "                           what fits the free device memory or the budget), release\n"
          "                           (each model after its stage: the lowest peak), keep (all)\n"
          "The PNG holds the parameters (A1111 \"parameters\" text and \"df11\" JSON) and a\n"
          "hash of the original weights; no time, path or weight format. stdout lists the\n"
          "files written.\n",
          f);
}
