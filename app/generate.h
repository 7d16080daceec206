/* generate: what `df11 generate` (cmd_generate.c) shares with batch, regress and the window:
 * the model, backend and job flags (the job's through the schema, pipeline/job.h), the PNG
 * with its parameters, and the lines of a prompt file. */
#ifndef APP_GENERATE_H
#define APP_GENERATE_H

#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "pipeline/pipeline.h"

#define GEN_VERSION "df11 0.1.0"

typedef struct gen_args {
    pipeline_paths paths;
    pipeline_options opt;
    pipeline_job job; /* the flags' values over an empty job (gen_args_free) */
    const char *out;
    int force, quiet;
} gen_args;

void gen_args_init(gen_args *a);
void gen_args_free(gen_args *a);
/* One option at argv[*i] (generate's flags: model, parts, job, backend, -o, -f): 1 taken, 0
 * unknown, -1 bad value (message printed). */
int gen_opt(int argc, char **argv, int *i, gen_args *a);
/* 1 if a names a model (-m or --diffusion-model), else 0 with cmd's usage message. */
int gen_has_model(const char *cmd, const gen_args *a);
/* Opens a's model as a session with a's options; 0 (message printed) on failure. */
int gen_open(const gen_args *a, pipeline_session **s);
/* A number in lo..hi for option opt; 0 (message printed) if v is not one. */
int gen_parse_float(const char *opt, const char *v, double lo, double hi, double *out);
/* 1 if name's folder exists and is writable, else 0 with a message. */
int gen_check_dir(const char *name);
/* The resolved parameters in the log. */
void gen_log_info(const pipeline_info *in);
/* The image as a PNG at name, its text chunks the parameters of in's job with image's seed
 * (A1111's "parameters" text and df11's JSON, pipeline/job.h) and nothing run-specific, so the
 * same job writes the same bytes. */
err gen_write_png(const char *name, const pipeline_info *in, uint64_t seed, const uint8_t *rgb,
                  int w, int h);
/* The job options of `df11 help generate`, from the schema and the variants' defaults. */
void gen_help_job(FILE *f);

/* A line of a prompt file (df11 batch, df11 regress --manifest): a prompt, or a JSON object
 * with its parameters (the schema's keys, and "output"). */
typedef struct gen_line {
    int line;         /* 1-based, set by the caller */
    pipeline_job job; /* owned (gen_line_free) */
    char *output;     /* owned; NULL if not given */
} gen_line;

/* Parses s (changed in place) over base into b: 1 a job, 0 nothing (blank or # comment), -1
 * a bad line (message printed, naming path and the line). */
int gen_line_parse(const char *path, char *s, const pipeline_job *base, gen_line *b);
void gen_line_free(gen_line *b);

#endif
