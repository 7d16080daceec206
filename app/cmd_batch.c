/* cmd_batch: `df11 batch FILE -m MODEL -o OUTDIR [generate's flags]`, one image a line of
 * FILE: a plain prompt, or a JSON object with per-line parameters (JSON Lines). The lines run
 * in groups through one pipeline session, each model loaded at most once a group (once for
 * the file where the residency policy keeps it); each image is written
 * as a PNG with its parameters, named from its line (NNNN-slug.png, or the line's "output"),
 * and an image already there is skipped, so a batch cut off resumes where it stopped. A bad
 * line is reported with its number and the others run; the summary gives the images, the
 * seconds per image and the failures. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/cli.h"
#include "app/generate.h"
#include "app/progress.h"
#include "core/log.h"

#define BATCH_GROUP 16 /* lines a group by default (their text states wait on the device) */

typedef struct batch_line {
    gen_line g;
    char name[4096];
    pipeline_info info;
    int done, failed;
} batch_line;

typedef struct batch_state {
    batch_line *l; /* the group's lines */
    int n, quiet;
    progress_steps steps;
    int written, failed;
} batch_state;

/* ---- the file ---- */

/* "a-cat-holding-a-sign" from the prompt's first letters and digits */
static void slug(const char *p, char *out, size_t n) {
    size_t k = 0;
    int dash = 0;
    for (; *p && k + 1 < n && k < 40; p++) {
        const unsigned char c = (unsigned char)*p;
        if (isalnum(c) && c < 128) {
            if (dash && k) out[k++] = '-';
            out[k++] = (char)tolower(c);
            dash = 0;
        } else {
            dash = 1;
        }
    }
    out[k] = 0;
    if (!k) snprintf(out, n, "image");
}

void gen_line_free(gen_line *b) {
    job_free(&b->job);
    free(b->output);
    b->output = NULL;
}

/* A JSON line: the schema's keys over the job, and "output"; 0 (message printed) if bad */
static int json_line(const char *path, gen_line *b, const char *text) {
    static const char *const extra[] = {"output", NULL};
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", path, b->line);
    cJSON *o = cJSON_Parse(text);
    err e = cJSON_IsObject(o) ? job_from_json(&b->job, o, text, where, extra)
                              : err_set(ERR_ARG, "%s: not a JSON object (a line starting with "
                                                 "'{' is JSON)",
                                        where);
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
    if (!e && out && !cJSON_IsString(out))
        e = err_set(ERR_ARG, "%s: \"output\" must be a file name", where);
    if (!e && out) {
        const char *v = out->valuestring;
        if (!*v || strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))
            e = err_set(ERR_ARG, "%s: \"output\" must be a file name, got \"%s\"", where, v);
        else if (!(b->output = strdup(v)))
            e = err_set(ERR_NOMEM, "out of memory");
    }
    if (!e && !b->job.prompt) e = err_set(ERR_ARG, "%s: no \"prompt\"", where);
    cJSON_Delete(o);
    if (e) fprintf(stderr, "df11: %s\n", err_msg());
    return !e;
}

int gen_line_parse(const char *path, char *s, const pipeline_job *base, gen_line *b) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s || *s == '#') return 0;
    b->output = NULL;
    if (job_copy(&b->job, base)) {
        fprintf(stderr, "df11: %s\n", err_msg());
        return -1;
    }
    const int ok = *s == '{' ? json_line(path, b, s)
                             : job_set_text(&b->job, JOB_PROMPT, s, "prompt") == ERR_OK;
    if (!ok) gen_line_free(b);
    return ok ? 1 : -1;
}

/* The line's output name: OUTDIR/<output>[.png], else OUTDIR/NNNN-slug.png */
static void line_name(const gen_line *g, const char *outdir, char *name, size_t n) {
    if (g->output) {
        const size_t ln = strlen(g->output);
        const int png = ln > 4 && !strcmp(g->output + ln - 4, ".png");
        snprintf(name, n, "%s/%s%s", outdir, g->output, png ? "" : ".png");
    } else {
        char sl[64];
        slug(g->job.prompt, sl, sizeof sl);
        snprintf(name, n, "%s/%04d-%s.png", outdir, g->line, sl);
    }
}

/* ---- the run ---- */

static void on_info(void *ctx, int job, const pipeline_info *in) {
    batch_state *s = ctx;
    s->l[job].info = *in;
    s->steps.total += (uint64_t)in->job.steps;
    LOG_DEBUG("line %d: %s", s->l[job].g.line, in->model_name);
}

static void on_skip(void *ctx, int job, const char *msg) {
    batch_state *s = ctx;
    fprintf(stderr, "df11: line %d: %s\n", s->l[job].g.line, msg);
    s->l[job].failed = 1;
    s->failed++;
}

static void on_step(void *ctx, int job, int image, int n_images, int step, int n_steps) {
    (void)image, (void)n_images;
    batch_state *s = ctx;
    char what[48];
    snprintf(what, sizeof what, "line %d, step %d/%d", s->l[job].g.line, step, n_steps);
    progress_steps_add(&s->steps, what);
}

static err on_image(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                    int h) {
    (void)image;
    batch_state *s = ctx;
    batch_line *b = &s->l[job];
    TRY(gen_write_png(b->name, &b->info, seed, rgb, w, h));
    b->done = 1;
    s->written++;
    if (!s->quiet) fprintf(stderr, "df11: line %d: wrote %s\n", b->g.line, b->name);
    printf("%s\n", b->name);
    fflush(stdout);
    return ERR_OK;
}

static int batch(int argc, char **argv, gen_args *a) {
    const char *file = NULL;
    long group = BATCH_GROUP;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int r = cli_opt(argc, argv, &i, NULL, "--group", &v);
        if (r) {
            if (r < 0 || !cli_int("--group", v, 1, 4096, &group)) return CLI_EXIT_USAGE;
            continue;
        }
        r = gen_opt(argc, argv, &i, a);
        if (r < 0) return CLI_EXIT_USAGE;
        if (r > 0) continue;
        if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error("batch", "unknown option \"%s\"", argv[i]);
        if (file) return cli_usage_error("batch", "unexpected argument \"%s\"", argv[i]);
        file = argv[i];
    }
    if (!file)
        return cli_usage_error("batch", "no prompt file: df11 batch FILE -m MODEL -o OUTDIR");
    if (!gen_has_model("batch", a)) return CLI_EXIT_USAGE;
    if (!a->out) return cli_usage_error("batch", "no output folder: pass -o OUTDIR");
    if (a->job.prompt) return cli_usage_error("batch", "-p: the prompts come from %s", file);
    if (a->job.batch_count != 1)
        return cli_usage_error("batch", "-b: a line is one image (give lines their own seeds)");
    FILE *f = !strcmp(file, "-") ? stdin : fopen(file, "r");
    if (!f) {
        fprintf(stderr, "df11: error: %s: %s\n", file, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    struct stat st;
    if (stat(a->out, &st) != 0 && mkdir(a->out, 0777) != 0) {
        fprintf(stderr, "df11: error: %s: cannot make the output folder: %s\n", a->out,
                strerror(errno));
        if (f != stdin) fclose(f);
        return CLI_EXIT_FAIL;
    }
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/x.png", a->out);
    if (!gen_check_dir(probe)) {
        if (f != stdin) fclose(f);
        return CLI_EXIT_FAIL;
    }

    /* every line first: bad ones are reported (and counted) before any model loads */
    batch_line *lines = NULL;
    int n = 0, cap = 0, bad = 0, skipped = 0, lineno = 0;
    char *buf = NULL;
    size_t bn = 0;
    while (getline(&buf, &bn, f) >= 0) {
        lineno++;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            lines = realloc(lines, sizeof *lines * (size_t)cap);
            CHECK(lines);
        }
        batch_line *b = &lines[n];
        memset(b, 0, sizeof *b);
        b->g.line = lineno;
        const int r = gen_line_parse(file, buf, &a->job, &b->g);
        if (r <= 0) {
            bad += r < 0;
            continue;
        }
        line_name(&b->g, a->out, b->name, sizeof b->name);
        for (int k = 0; k < n; k++)
            if (!strcmp(lines[k].name, b->name)) {
                fprintf(stderr, "df11: %s:%d: the output %s is line %d's too\n", file, lineno,
                        b->name, lines[k].g.line);
                gen_line_free(&b->g);
                bad++;
                b = NULL;
                break;
            }
        if (!b) continue;
        if (!a->force && stat(b->name, &st) == 0) {
            LOG_INFO("line %d: %s is there; skipped", lineno, b->name);
            gen_line_free(&b->g);
            skipped++;
            continue;
        }
        n++;
    }
    free(buf);
    if (f != stdin) fclose(f);
    if (!a->quiet)
        fprintf(stderr, "df11: %s: %d images to render, %d already there, %d bad lines\n", file, n,
                skipped, bad);

    const double t0 = progress_now();
    batch_state s = {.quiet = a->quiet, .steps = {.label = "denoise", .quiet = a->quiet}};
    /* one session for the whole file: the models stay loaded between groups where the
       residency policy lets them */
    pipeline_session *ses = NULL;
    if (n && pipeline_open(&a->paths, &a->opt, &ses)) {
        fprintf(stderr, "df11: error: %s\n", err_msg());
        for (int k = 0; k < n; k++)
            lines[k].failed = 1;
        s.failed = n;
        n = 0;
    }
    for (int g = 0; g < n; g += (int)group) {
        const int m = n - g < group ? n - g : (int)group;
        pipeline_job *jobs = malloc(sizeof *jobs * (size_t)m);
        CHECK(jobs);
        for (int k = 0; k < m; k++)
            jobs[k] = lines[g + k].g.job;
        s.l = lines + g, s.n = m, s.steps.done = s.steps.total = 0;
        pipeline_callbacks cb = {.ctx = &s,
                                 .on_step = on_step,
                                 .on_info = on_info,
                                 .on_skip = on_skip,
                                 .on_image = on_image};
        const err e = pipeline_run(ses, jobs, m, &cb);
        progress_steps_close(&s.steps);
        if (e) {
            fprintf(stderr, "df11: error: lines %d-%d: %s\n", lines[g].g.line,
                    lines[g + m - 1].g.line, err_msg());
            for (int k = 0; k < m; k++)
                if (!lines[g + k].done && !lines[g + k].failed) lines[g + k].failed = 1, s.failed++;
        }
        free(jobs);
    }
    pipeline_close(ses);
    const double secs = progress_now() - t0;
    char per[48] = "";
    if (s.written) snprintf(per, sizeof per, ", %.2f s per image", secs / s.written);
    fprintf(stderr, "df11: batch: %d images written, %d already there, %d failed%s (%.1f s)\n",
            s.written, skipped, s.failed + bad, per, secs);
    if (s.failed + bad) {
        fprintf(stderr, "df11: batch: failed lines:");
        for (int k = 0; k < n; k++)
            if (lines[k].failed) fprintf(stderr, " %d", lines[k].g.line);
        fprintf(stderr, "%s\n", bad ? " (and the bad lines above)" : "");
    }
    for (int k = 0; k < n; k++)
        gen_line_free(&lines[k].g);
    free(lines);
    return s.failed + bad ? CLI_EXIT_FAIL : 0;
}

int cmd_batch(int argc, char **argv, const cli_common *c) {
    gen_args a;
    gen_args_init(&a);
    a.quiet = c->quiet;
    const int rc = batch(argc, argv, &a);
    gen_args_free(&a);
    return rc;
}

void batch_help(FILE *f) {
    fputs("usage: df11 batch FILE -m MODEL -o OUTDIR [generate's options]\n"
          "Renders one image a line of FILE (\"-\": standard input) with the model opened once.\n"
          "A line is a prompt, or a JSON object (JSON Lines) with its own parameters over the\n"
          "command line's, under the job schema's keys (df11 help generate says what each does):\n ",
          f);
    int col = 1;
    for (int k = 0; k < JOB_N_KEYS; k++) {
        const job_param *p = &job_params[k];
        if (p->flags & JOB_F_NOT_JSON || p->type == JOB_T_INFO) continue;
        const int n = (int)strlen(p->key) + 2;
        if (col + n > 88) fputs("\n ", f), col = 1;
        col += fprintf(f, " %s,", p->key);
    }
    fputs(col > 50 ? "\n  and \"output\" (the file name), e.g.\n"
                   : " and \"output\" (the file name), e.g.\n",
          f);
    fputs("  {\"prompt\": \"a cat\", \"negative_prompt\": \"blurry\", \"seed\": 7, \"width\": 1024,\n"
          "   \"height\": 768, \"steps\": 28, \"cfg_scale\": 4.5, \"output\": \"cat.png\"}\n"
          "A PNG's df11 JSON (df11 info --json) is such a line: it renders the same bytes.\n"
          "Blank lines and lines starting with # are skipped. Each image is OUTDIR/NNNN-slug.png\n"
          "(NNNN the line number, slug the prompt's first words) or OUTDIR/<output>, with its\n"
          "parameters in the PNG as generate writes them. An image already there is skipped,\n"
          "so a batch that was cut off resumes (-f renders it again). A bad line is reported\n"
          "with its number and the others run; the summary gives the images written, the\n"
          "seconds per image and the failed lines; the exit status is 1 if any failed.\n"
          "      --group N   lines a run (default 16): a run's prompts go through the text\n"
          "                  encoders together, then its images through the transformer, then\n"
          "                  the VAE, which writes them; the models stay loaded between runs\n"
          "                  as --residency allows\n"
          "All of generate's model, part, image and backend options apply (df11 help\n"
          "generate) except -p and -b.\n",
          f);
}
