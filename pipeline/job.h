/* job: the job schema. Every parameter of a generation job is one row of job_params[] (its
 * key, type, valid range, CLI flags, A1111 label, window field and help), and every entry point
 * goes through it: the CLI and the window set values from text (job_set_text), batch lines and
 * the PNG's df11 JSON from JSON (job_set_json), and the PNG metadata is written from it
 * (job_png_json, job_png_text), so a value is checked the same way wherever it comes from and a
 * PNG's parameters fed back as a batch line run the same job. Defaults per model variant are
 * the family table's (pipeline/family.h); docs/ARCHITECTURE.md has the recipe for a new one. */
#ifndef PIPELINE_JOB_H
#define PIPELINE_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct cJSON;

#define JOB_MAX_SKIP 64

/* The parameters, in the order df11's PNG JSON records them. JOB_INFO_* rows are what a PNG
 * records about the run besides the job (read back, never set from outside). */
typedef enum job_key {
    JOB_PROMPT,
    JOB_INFO_MODEL,
    JOB_INFO_HASH,
    JOB_SEED,
    JOB_WIDTH,
    JOB_HEIGHT,
    JOB_STEPS,
    JOB_NEGATIVE,
    JOB_CFG_SCALE,
    JOB_SLG_SCALE,
    JOB_SKIP_LAYERS,
    JOB_SLG_START,
    JOB_SLG_END,
    JOB_SHIFT,
    JOB_GUIDANCE,
    JOB_MAX_SEQ,
    JOB_INFO_SAMPLER,
    JOB_INFO_SCHEDULE,
    JOB_NOISE,
    JOB_INFO_BACKEND,
    JOB_INFO_PROGRAM,
    JOB_BATCH_COUNT,
    JOB_N_KEYS
} job_key;

#define JOB_BIT(k) (1u << (k))

/* A job. Unset parameters (bit k of `set` clear) take the model's defaults when it runs. */
typedef struct pipeline_job {
    char *prompt, *negative; /* owned (job_free) */
    uint64_t seed;
    int width, height, steps;
    float guidance, cfg_scale, slg_scale;
    int skip_layers[JOB_MAX_SKIP], n_skip;
    double slg_start, slg_end;
    double shift; /* the flow-matching schedule's (diffusers computes it in float64) */
    int max_seq, batch_count;
    int noise; /* noise_kind (unet_dit/sampler.h) */
    uint32_t set;
} pipeline_job;

typedef enum job_type {
    JOB_T_TEXT,   /* char *, owned */
    JOB_T_SEED,   /* uint64_t */
    JOB_T_INT,    /* int */
    JOB_T_FLOAT,  /* float */
    JOB_T_DOUBLE, /* double */
    JOB_T_LAYERS, /* skip_layers[n_skip]: "7,8,9", "[7,8,9]" or a JSON array */
    JOB_T_NOISE,  /* a noise_kind by name */
    JOB_T_INFO,   /* a recorded fact about the run (JOB_INFO_*) */
} job_type;

/* job_param.flags */
#define JOB_F_NOT_JSON 1     /* not a batch line's or a PNG's key (CLI only) */
#define JOB_F_A1111_ALWAYS 2 /* in the A1111 text even where not in effect (FLUX's CFG scale 1) */
#define JOB_F_VARIANT 4      /* its default is the model variant's (the family table's) */

typedef struct job_param {
    const char *key; /* batch lines' and df11 PNG JSON's key */
    unsigned flags;
    job_type type;
    size_t off;          /* the field in pipeline_job */
    double lo, hi;       /* numbers: the valid range (integers: whole numbers in it) */
    int mult;            /* where a UI asks for multiples (the window's sizes), else 0 */
    const char *shrt;    /* "-s", or NULL */
    const char *flag;    /* "--seed", or NULL (batch lines and PNGs only) */
    const char *metavar; /* for the help: "N" */
    const char *label;   /* for people: "Seed", "CFG scale" (the window's field label) */
    const char *a1111;   /* the label in A1111's parameters text, or NULL */
    int a1111_at;        /* its place there (10, 20, ...: room between), 0: not written */
    const char *window;  /* the window field that edits it (app/window_ui.h names), or NULL */
    const char *help;    /* what it does */
    const char *def;     /* the default, as a value's text (NULL: none, or JOB_F_VARIANT) */
} job_param;

extern const job_param job_params[JOB_N_KEYS];

/* An empty job: nothing set, one image. */
void job_init(pipeline_job *j);
void job_free(pipeline_job *j); /* accepts a zeroed job; leaves it empty */
/* dst = a deep copy of src (dst is overwritten, not freed). */
err job_copy(pipeline_job *dst, const pipeline_job *src);

/* The row with this CLI flag ("--seed", "-s"; "--flag=value" matches on the part before '='),
 * batch/PNG key, or window field name; -1 if none. */
int job_find_flag(const char *arg);
int job_find_key(const char *key);
int job_find_window(const char *field);

/* Sets parameter k from text (a flag's or a field's value), checked against its row. what
 * names the source in the message ("--width", "Width"). ERR_ARG: "what: expected ..., got ..." */
err job_set_text(pipeline_job *j, job_key k, const char *text, const char *what);
/* The same from a number (a numeric row). */
err job_set_number(pipeline_job *j, job_key k, double v, const char *what);
/* The same from a JSON value (a batch line's or a PNG's). */
err job_set_json(pipeline_job *j, job_key k, const struct cJSON *v, const char *what);
/* Every key of a JSON object (a batch line, a PNG's df11 text) over j. where prefixes the
 * messages ("prompts.txt:3"); extra (NULL-terminated) lists keys the caller handles itself,
 * which are skipped. raw is the object's text, for seeds beyond 2^53 (or NULL). Unknown keys,
 * repeated keys and bad values are ERR_ARG. JOB_INFO_* keys are accepted: "sampler" must be the
 * one df11 has, the others are facts of the run that made the PNG, left to the caller. */
err job_from_json(pipeline_job *j, const struct cJSON *o, const char *raw, const char *where,
                  const char *const *extra);
/* The description of a row's valid values ("an integer in 16..8192"). */
const char *job_expect(job_key k, char *buf, size_t n);
/* The row's value in j as text, as the CLI would take it ("7,8,9", "bf16"); info rows give "". */
void job_value_text(const pipeline_job *j, job_key k, char *buf, size_t n);

/* What a PNG records of a run beside its job (pipeline_info fills it). */
typedef struct job_record {
    const pipeline_job *job; /* resolved: every parameter in effect set */
    uint32_t active;         /* the rows written: in effect for this model */
    const char *model, *model_hash, *backend, *program;
} job_record;

/* df11's JSON text of the record (malloc'd, the caller frees): the active rows in table order. */
char *job_png_json(const job_record *r);
/* A1111's "parameters" text: the prompt, "Negative prompt: ..." when active, then the rows'
 * labels and values in their a1111_at order on one line. malloc'd; NULL if out of memory. */
char *job_png_text(const job_record *r);

#endif
