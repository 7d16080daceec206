/* test_session: a pipeline session (pipeline/pipeline.h) on the tiny FLUX.1-dev and SD3.5
 * Large-like fixtures. Two jobs run one after the other in one session, and together in one
 * run, give the bits each gives in a session of its own, under every residency policy
 * (release, keep, auto); the jobs differ in size, seed, steps and T5 length (the longer one
 * second, so a kept T5 must be planned again, and the shorter after it). The stage reports
 * say what the policy did: keep loads each model once for the session, release loads every
 * stage again. A job the model refuses fails through pipeline_resolve as it does in a run.
 * The flow shift takes effect where it is given. A cancelled run leaves the models kept.
 * usage: test_session --cpu|--gpu FIXTURES_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "pipeline/pipeline.h"
#include "tests/testutil_pipeline.h"

typedef struct stages {
    int loads, stages, dit_loads;
} stages;

static void on_stage(void *ctx, const pipeline_stage_report *r) {
    stages *s = ctx;
    s->loads += r->loaded;
    s->stages++;
    s->dit_loads += r->loaded && !strcmp(r->stage, "transformer");
}

/* The capture callbacks, and the stage counts in st */
typedef struct both {
    capture c[2];
    stages st;
} both;

static void on_latents_b(void *ctx, int job, int image, const float *lat, int64_t h, int64_t w) {
    on_latents(((both *)ctx)->c, job, image, lat, h, w);
}
static err on_image_b(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                      int h) {
    return on_image(((both *)ctx)->c, job, image, seed, rgb, w, h);
}
static void on_stage_b(void *ctx, const pipeline_stage_report *r) {
    on_stage(&((both *)ctx)->st, r);
}

static const pipeline_callbacks both_cb = {
    .on_latents = on_latents_b, .on_image = on_image_b, .on_stage = on_stage_b};

static void two_jobs(const char *name, int sd3, pipeline_job j[2]) {
    for (int k = 0; k < 2; k++) {
        job_init(&j[k]);
        jset(&j[k], JOB_PROMPT, k ? "a red bicycle" : "a cat holding a sign");
        jnum(&j[k], JOB_SEED, k ? 3 : 42);
        jnum(&j[k], JOB_WIDTH, k ? 32 : 48);
        jnum(&j[k], JOB_HEIGHT, 32);
        jnum(&j[k], JOB_STEPS, k ? 2 : 1);
        jnum(&j[k], JOB_MAX_SEQ, k ? 48 : 32);
        if (sd3 && k) jset(&j[k], JOB_NEGATIVE, "blurry");
    }
    printf("     %s: job 0 %dx%d, job 1 %dx%d\n", name, j[0].width, j[0].height, j[1].width,
           j[1].height);
}

static void check_session(const char *fixtures, const char *sub, int sd3, int gpu) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", fixtures, sub);
    pipeline_job j[2];
    two_jobs(sub, sd3, j);
    capture alone[2] = {{0}};
    for (int k = 0; k < 2; k++) {
        const err e = render(dir, gpu, &j[k], &alone[k]);
        expect(!e, "%s: job %d alone (%s)", sub, k, e ? err_msg() : "");
    }
    static const char *const names[] = {"auto", "release", "keep"};
    for (int r = 0; r < 3; r++) {
        pipeline_paths p = {.model_dir = dir};
        pipeline_options o;
        pipeline_options_init(&o);
        o.cpu = !gpu, o.residency = (pipeline_residency)r;
        pipeline_session *s = NULL;
        err e = pipeline_open(&p, &o, &s);
        both one[2], pair;
        memset(one, 0, sizeof one), memset(&pair, 0, sizeof pair);
        pipeline_callbacks cb = both_cb;
        for (int k = 0; k < 2 && !e; k++) {
            cb.ctx = &one[k];
            e = pipeline_run(s, &j[k], 1, &cb);
        }
        /* then both in one run, job 1 first: its T5 length is the longer */
        const pipeline_job rev[2] = {j[1], j[0]};
        cb.ctx = &pair;
        if (!e) e = pipeline_run(s, rev, 2, &cb);
        expect(!e, "%s %s: two runs and a run of two in one session (%s)", sub, names[r],
               e ? err_msg() : "");
        for (int k = 0; !e && k < 2; k++) {
            expect(same_capture(&one[k].c[0], &alone[k]),
                   "%s %s: job %d in the session's run %d gives the bits it gives alone", sub,
                   names[r], k, k + 1);
            expect(same_capture(&pair.c[1 - k], &alone[k]),
                   "%s %s: job %d in a run of two gives the bits it gives alone", sub, names[r],
                   k);
        }
        const int per_run = one[0].st.stages;
        if (!e && r == PIPELINE_KEEP_NONE)
            expect(one[1].st.loads == per_run && pair.st.loads == per_run,
                   "%s release: every stage loads its model every run (%d, %d of %d)", sub,
                   one[1].st.loads, pair.st.loads, per_run);
        if (!e && r != PIPELINE_KEEP_NONE) /* auto keeps on the CPU: mmapped weights */
            expect(one[0].st.loads == per_run && one[1].st.loads == 1 &&
                       pair.st.loads == 0,
                   "%s %s: each model loads once for the session, T5 again for a longer text "
                   "(loads %d, %d, %d)",
                   sub, names[r], one[0].st.loads, one[1].st.loads, pair.st.loads);
        for (int k = 0; k < 2; k++)
            capture_free(&one[k].c[0]), capture_free(&pair.c[k]);
        pipeline_close(s);
    }
    for (int k = 0; k < 2; k++)
        capture_free(&alone[k]), job_free(&j[k]);
}

/* What the model refuses, resolve refuses as a run would, with the run's message. */
static void check_resolve(const char *fixtures, int gpu) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/flux_tiny/dev", fixtures);
    pipeline_paths p = {.model_dir = dir};
    pipeline_options o;
    pipeline_options_init(&o);
    o.cpu = !gpu;
    pipeline_session *s = NULL;
    err e = pipeline_open(&p, &o, &s);
    expect(!e, "resolve: open (%s)", e ? err_msg() : "");
    if (e) return;
    pipeline_info in;
    e = pipeline_describe(s, &in);
    expect(!e && !strcmp(in.model_name, "FLUX.1-dev") && in.job.steps == 28 &&
               in.job.guidance == 3.5f && in.job.width == 1024 && in.job.max_seq == 512,
           "resolve: FLUX.1-dev's defaults (%s: %d steps, guidance %g, %d wide, T5 %d)",
           in.model_name, in.job.steps, in.job.guidance, in.job.width, in.job.max_seq);
    pipeline_job j;
    job_init(&j);
    jset(&j, JOB_PROMPT, "x");
    jset(&j, JOB_NEGATIVE, "blurry");
    e = pipeline_resolve(s, &j, &in);
    expect(e == ERR_ARG && strstr(err_msg(), "--negative-prompt"),
           "resolve: FLUX.1 refuses a negative prompt (%s)", err_msg());
    job_free(&j);
    pipeline_close(s);
}

/* The flow shift (a job parameter added after the schema existed): the scheduler config's own
 * value given explicitly renders the default's latents; another one moves them; FLUX.1 refuses
 * it. The sigmas for any shift are test_sampler's. */
static void check_shift(const char *fixtures, int gpu) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/sd3_tiny/large", fixtures);
    pipeline_job j[3];
    capture c[3];
    memset(c, 0, sizeof c);
    for (int k = 0; k < 3; k++) {
        job_init(&j[k]);
        jset(&j[k], JOB_PROMPT, "a lighthouse");
        jnum(&j[k], JOB_WIDTH, 32);
        jnum(&j[k], JOB_HEIGHT, 32);
        jnum(&j[k], JOB_STEPS, 2);
        jnum(&j[k], JOB_MAX_SEQ, 16);
        if (k) jnum(&j[k], JOB_SHIFT, k == 1 ? 3.0 : 1.5); /* the fixture's config: 3.0 */
        const err e = render(dir, gpu, &j[k], &c[k]);
        expect(!e, "shift: render %d (%s)", k, e ? err_msg() : "");
    }
    expect(c[0].lat && c[1].lat && c[2].lat &&
               !memcmp(c[0].lat, c[1].lat, sizeof *c[0].lat * (size_t)(16 * c[0].lh * c[0].lw)),
           "shift: --flow-shift 3 (the config's) gives the default's latents");
    expect(c[0].lat && c[2].lat &&
               memcmp(c[0].lat, c[2].lat, sizeof *c[0].lat * (size_t)(16 * c[0].lh * c[0].lw)),
           "shift: --flow-shift 1.5 moves them");
    for (int k = 0; k < 3; k++)
        capture_free(&c[k]);
    snprintf(dir, sizeof dir, "%s/flux_tiny/dev", fixtures);
    capture f = {0};
    const err e = render(dir, gpu, &j[2], &f);
    expect(e == ERR_ARG && strstr(err_msg(), "--flow-shift"), "shift: FLUX.1 refuses it (%s)",
           err_msg());
    capture_free(&f);
    for (int k = 0; k < 3; k++)
        job_free(&j[k]);
}

/* A run cancelled after its first step keeps what the policy keeps: the next run of the
 * session loads no transformer again, and renders the bits of a session of its own. */
typedef struct cancel_at {
    both b;
    volatile int cancel;
} cancel_at;

static void on_step_cancel(void *ctx, int job, int image, int n_images, int step, int n_steps) {
    (void)job, (void)image, (void)n_images, (void)n_steps;
    if (step == 1) ((cancel_at *)ctx)->cancel = 1;
}

static void check_cancel(const char *fixtures, int gpu) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/flux_tiny/dev", fixtures);
    pipeline_job j;
    job_init(&j);
    jset(&j, JOB_PROMPT, "a red fox");
    jnum(&j, JOB_WIDTH, 32), jnum(&j, JOB_HEIGHT, 32), jnum(&j, JOB_STEPS, 3);
    jnum(&j, JOB_MAX_SEQ, 16);
    capture alone = {0};
    err e = render(dir, gpu, &j, &alone);
    pipeline_paths p = {.model_dir = dir};
    pipeline_options o;
    pipeline_options_init(&o);
    o.cpu = !gpu, o.residency = PIPELINE_KEEP_ALL;
    pipeline_session *s = NULL;
    if (!e) e = pipeline_open(&p, &o, &s);
    cancel_at c;
    memset(&c, 0, sizeof c);
    pipeline_callbacks cb = both_cb;
    cb.ctx = &c, cb.on_step = on_step_cancel, cb.cancel = &c.cancel;
    const err ec = e ? e : pipeline_run(s, &j, 1, &cb);
    both again;
    memset(&again, 0, sizeof again);
    cb = both_cb;
    cb.ctx = &again;
    if (!e) e = pipeline_run(s, &j, 1, &cb);
    expect(ec == ERR_CANCELLED && !e && again.st.dit_loads == 0 &&
               same_capture(&again.c[0], &alone),
           "cancel: the run cancelled after step 1 (%s), the next loads no transformer (%d) and "
           "renders the bits of a session of its own",
           err_name(ec), again.st.dit_loads);
    capture_free(&alone), capture_free(&c.b.c[0]), capture_free(&again.c[0]);
    pipeline_close(s);
    job_free(&j);
}

int main(int argc, char **argv) {
    const int gpu = backend_arg(argc, argv, "test_session");
    check_session(argv[2], "flux_tiny/dev", 0, gpu);
    check_session(argv[2], "sd3_tiny/large", 1, gpu);
    check_resolve(argv[2], gpu);
    check_shift(argv[2], gpu);
    check_cancel(argv[2], gpu);
    printf("%s\n", fails ? "FAILED" : "all passed");
    return fails != 0;
}
