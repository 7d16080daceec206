/* testutil_pipeline: what the pipeline's tests share (test_pipeline.c, test_session.c): a
 * failure-counting expect, the callbacks that capture a run's latents, decoded image and
 * pixels per job, runs through a session opened for them, and jobs set through the schema.
 * Header-only. */
#ifndef TESTS_TESTUTIL_PIPELINE_H
#define TESTS_TESTUTIL_PIPELINE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "pipeline/pipeline.h"

static int fails;

typedef struct capture {
    float *lat, *img;
    uint8_t *rgb;
    int64_t lh, lw, h, w;
    char skipped[512]; /* on_skip's message */
} capture;

static inline void on_latents(void *ctx, int job, int image, const float *lat, int64_t h, int64_t w) {
    capture *c = (capture *)ctx + job;
    c->lh = h, c->lw = w;
    c->lat = malloc(sizeof *c->lat * (size_t)(16 * h * w));
    memcpy(c->lat, lat, sizeof *c->lat * (size_t)(16 * h * w));
}

static inline void on_decoded(void *ctx, int job, int image, const float *img, int64_t h, int64_t w) {
    capture *c = (capture *)ctx + job;
    c->img = malloc(sizeof *c->img * (size_t)(3 * h * w));
    memcpy(c->img, img, sizeof *c->img * (size_t)(3 * h * w));
}

static inline err on_image(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                    int h) {
    capture *c = (capture *)ctx + job;
    c->h = h, c->w = w;
    c->rgb = malloc((size_t)(3 * w * h));
    memcpy(c->rgb, rgb, (size_t)(3 * w * h));
    return ERR_OK;
}

static inline void capture_free(capture *c) {
    free(c->lat), free(c->img), free(c->rgb);
    memset(c, 0, sizeof *c);
}

static inline void expect(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void expect(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fails += !ok;
}

/* The capturing callbacks into c (an array, one capture a job) */
static inline pipeline_callbacks capture_cb(capture *c) {
    return (pipeline_callbacks){
        .ctx = c, .on_latents = on_latents, .on_decoded = on_decoded, .on_image = on_image};
}

/* n jobs in one run of a session opened for it on paths p (the backend: gpu) */
static inline err run_paths(const pipeline_paths *p, int gpu, const pipeline_job *j, int n,
                     const pipeline_callbacks *cb) {
    pipeline_options o;
    pipeline_options_init(&o);
    o.cpu = !gpu;
    pipeline_session *s = NULL;
    err e = pipeline_open(p, &o, &s);
    if (!e) e = pipeline_run(s, j, n, cb);
    pipeline_close(s);
    return e;
}

/* A job alone, as a separate run would render it. */
static inline err render(const char *dir, int gpu, const pipeline_job *j, capture *c) {
    pipeline_paths p = {.model_dir = dir};
    const pipeline_callbacks cb = capture_cb(c);
    return run_paths(&p, gpu, j, 1, &cb);
}

/* A job's parameter k from text, through the schema (a bad value is the test's bug) */
static inline void jset(pipeline_job *j, job_key k, const char *text) {
    if (job_set_text(j, k, text, job_params[k].key)) {
        printf("FAIL test job: %s\n", err_msg());
        exit(1);
    }
}
static inline void jnum(pipeline_job *j, job_key k, double v) {
    if (job_set_number(j, k, v, job_params[k].key)) {
        printf("FAIL test job: %s\n", err_msg());
        exit(1);
    }
}

static inline void on_skip(void *ctx, int job, const char *msg) {
    capture *c = (capture *)ctx + job;
    snprintf(c->skipped, sizeof c->skipped, "%s", msg);
}

static inline int same_capture(const capture *a, const capture *b) {
    return a->lat && b->lat && a->rgb && b->rgb && a->lh == b->lh && a->lw == b->lw &&
           a->h == b->h && a->w == b->w &&
           !memcmp(a->lat, b->lat, sizeof *a->lat * (size_t)(16 * a->lh * a->lw)) &&
           !memcmp(a->rgb, b->rgb, (size_t)(3 * a->h * a->w));
}

/* argv: --cpu|--gpu FIXTURES_DIR; 1 for --gpu. Exits 2 on bad usage, 77 (skipped) when a GPU
 * is asked for and there is none. */
static inline int backend_arg(int argc, char **argv, const char *name) {
    if (argc != 3 || (strcmp(argv[1], "--cpu") && strcmp(argv[1], "--gpu"))) {
        fprintf(stderr, "usage: %s --cpu|--gpu FIXTURES_DIR\n", name);
        exit(2);
    }
    op_ctx *c;
    if (!strcmp(argv[1], "--cpu")) return 0;
    if (op_ctx_create(TENSOR_CUDA, &c)) {
        printf("skipped: %s\n", err_msg());
        exit(77);
    }
    op_ctx_free(c);
    return 1;
}

#endif
