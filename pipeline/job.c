/* job: the job schema's table and its readers and writers (job.h). Adding a parameter is a row
 * here, a field in pipeline_job, and its use where it takes effect (docs/ARCHITECTURE.md). */
#include "pipeline/job.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet_dit/sampler.h"

#define F(field) offsetof(pipeline_job, field)
#define SAMPLER_JSON                                                                               \
    "euler (flow matching)" /* the one sampler: FlowMatchEulerDiscreteScheduler                    \
                             */

/* In the order of job_key. The help says what a parameter does; the family table adds the
 * defaults that depend on the model (app/help.c). */
const job_param job_params[JOB_N_KEYS] = {
    [JOB_PROMPT] = {"prompt", 0, JOB_T_TEXT, F(prompt), 0, 0, 0, "-p", "--prompt", "TEXT", "Prompt",
                    NULL, 0, "prompt", "the prompt (CLIP sees 75 tokens, T5 the sequence length)",
                    NULL},
    [JOB_INFO_MODEL] = {"model", 0, JOB_T_INFO, 0, 0, 0, 0, NULL, NULL, NULL, "Model", "Model", 130,
                        NULL, NULL, NULL},
    [JOB_INFO_HASH] = {"model_hash", 0, JOB_T_INFO, 0, 0, 0, 0, NULL, NULL, NULL, "Model hash",
                       "Model hash", 120, NULL, NULL, NULL},
    [JOB_SEED] = {"seed", 0, JOB_T_SEED, F(seed), 0, 18446744073709551615.0, 0, "-s", "--seed", "N",
                  "Seed", "Seed", 100, "seed",
                  "seed of the initial noise (torch.randn on a CPU generator, as diffusers and "
                  "ComfyUI draw it; batch images take seed, seed+1, ...)",
                  "0"},
    [JOB_WIDTH] = {"width", 0, JOB_T_INT, F(width), 16, 8192, 16, "-W", "--width", "N", "Width",
                   "Size", 110, "width", "image width in pixels, a multiple of 16", "1024"},
    [JOB_HEIGHT] = {"height", 0, JOB_T_INT, F(height), 16, 8192, 16, "-H", "--height", "N",
                    "Height", NULL, 0, "height", "image height in pixels, a multiple of 16",
                    "1024"},
    [JOB_STEPS] = {"steps", JOB_F_VARIANT, JOB_T_INT, F(steps), 1, 1000, 0, NULL, "--steps", "N",
                   "Steps", "Steps", 10, "steps", "denoising steps", NULL},
    [JOB_NEGATIVE] = {"negative_prompt", 0, JOB_T_TEXT, F(negative), 0, 0, 0, "-n",
                      "--negative-prompt", "TEXT", "Negative prompt", NULL, 0, "negative",
                      "what to steer away from, with CFG (none: the empty prompt)", NULL},
    [JOB_CFG_SCALE] = {"cfg_scale", JOB_F_A1111_ALWAYS | JOB_F_VARIANT, JOB_T_FLOAT, F(cfg_scale),
                       0, 100, 0, NULL, "--cfg-scale", "X", "CFG scale", "CFG scale", 40,
                       "guidance", "classifier-free guidance scale, 1 or less for none", NULL},
    [JOB_SLG_SCALE] = {"slg_scale", 0, JOB_T_FLOAT, F(slg_scale), 0, 100, 0, NULL, "--slg-scale",
                       "X", "SLG scale", "SLG scale", 60, NULL,
                       "skip-layer guidance scale, 0 for none (SD3.5 Medium's card suggests "
                       "2.8); runs only with CFG",
                       "0"},
    [JOB_SKIP_LAYERS] = {"skip_layers", 0, JOB_T_LAYERS, F(skip_layers), 0, 999, 0, NULL,
                         "--skip-layers", "L", "Skip layers", "Skip layers", 70, NULL,
                         "the blocks skip-layer guidance skips: 7,8,9 or [7,8,9]", "7,8,9"},
    [JOB_SLG_START] = {"slg_start", 0, JOB_T_DOUBLE, F(slg_start), 0, 1, 0, NULL,
                       "--skip-layer-start", "X", "SLG start", "SLG start", 80, NULL,
                       "the fraction of the steps where skip-layer guidance starts", "0.01"},
    [JOB_SLG_END] = {"slg_end", 0, JOB_T_DOUBLE, F(slg_end), 0, 1, 0, NULL, "--skip-layer-end", "X",
                     "SLG end", "SLG end", 90, NULL,
                     "the fraction of the steps where skip-layer guidance ends", "0.2"},
    [JOB_SHIFT] = {"shift", 0, JOB_T_DOUBLE, F(shift), 0.01, 100, 0, NULL, "--flow-shift", "X",
                   "Shift", "Shift", 95, NULL,
                   "the shift of the flow-matching schedule, sigma' = shift sigma / (1 + (shift - "
                   "1) sigma), as ComfyUI's ModelSamplingSD3 sets it (SD3.5; default: the model's "
                   "scheduler_config.json, 3.0)",
                   NULL},
    [JOB_GUIDANCE] = {"guidance", JOB_F_VARIANT, JOB_T_FLOAT, F(guidance), 0, 100, 0, NULL,
                      "--guidance", "X", "Guidance", "Distilled CFG Scale", 50, "guidance",
                      "FLUX.1-dev's distilled guidance", NULL},
    [JOB_MAX_SEQ] = {"max_sequence_length", JOB_F_VARIANT, JOB_T_INT, F(max_seq), 2, 512, 0, NULL,
                     "--max-sequence-length", "N", "Max sequence length", "Max sequence length",
                     140, NULL, "T5 tokens", NULL},
    [JOB_INFO_SAMPLER] = {"sampler", 0, JOB_T_INFO, 0, 0, 0, 0, NULL, NULL, NULL, "Sampler",
                          "Sampler", 20, NULL, NULL, NULL},
    [JOB_INFO_SCHEDULE] = {"schedule", JOB_F_NOT_JSON, JOB_T_INFO, 0, 0, 0, 0, NULL, NULL, NULL,
                           "Schedule type", "Schedule type", 30, NULL, NULL, NULL},
    [JOB_NOISE] = {"noise_dtype", 0, JOB_T_NOISE, F(noise), 0, 0, 0, NULL, "--noise-dtype", "T",
                   "Noise", "Noise", 150, NULL,
                   "the dtype torch.randn draws the noise in: f32, bf16, f16 (torch <= 2.11's "
                   "arithmetic), bf16-f32, f16-f32 (newer torch), f32-scalar (torch without "
                   "SIMD)",
                   NULL},
    [JOB_INFO_BACKEND] = {"backend", 0, JOB_T_INFO, 0, 0, 0, 0, NULL, NULL, NULL, "Backend",
                          "Backend", 160, NULL, NULL, NULL},
    [JOB_INFO_PROGRAM] = {"program", 0, JOB_T_INFO, 0, 0, 0, 0, NULL, NULL, NULL, "Version",
                          "Version", 170, NULL, NULL, NULL},
    [JOB_BATCH_COUNT] = {"batch_count", JOB_F_NOT_JSON, JOB_T_INT, F(batch_count), 1, 10000, 0,
                         "-b", "--batch-count", "N", "Batch count", NULL, 0, NULL,
                         "images, with seeds seed, seed+1, ... (the models load once)", "1"},
};

void job_init(pipeline_job *j) {
    memset(j, 0, sizeof *j);
    j->batch_count = 1; /* given: a job is one image unless it says otherwise */
    j->set = JOB_BIT(JOB_BATCH_COUNT);
}

void job_free(pipeline_job *j) {
    free(j->prompt), free(j->negative);
    job_init(j);
}

static char *dup_or_null(const char *s, int *fail) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *fail = 1;
    return d;
}

err job_copy(pipeline_job *dst, const pipeline_job *src) {
    int fail = 0;
    *dst = *src;
    dst->prompt = dup_or_null(src->prompt, &fail);
    dst->negative = dup_or_null(src->negative, &fail);
    if (fail) job_free(dst);
    FAIL_IF(fail, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

int job_find_flag(const char *arg) {
    const size_t n = strcspn(arg, "=");
    for (int k = 0; k < JOB_N_KEYS; k++) {
        const job_param *p = &job_params[k];
        if (p->shrt && !strcmp(arg, p->shrt)) return k;
        if (p->flag && strlen(p->flag) == n && !strncmp(arg, p->flag, n)) return k;
    }
    return -1;
}

int job_find_key(const char *key) {
    for (int k = 0; k < JOB_N_KEYS; k++)
        if (!(job_params[k].flags & JOB_F_NOT_JSON) && !strcmp(key, job_params[k].key)) return k;
    return -1;
}

int job_find_window(const char *field) {
    for (int k = 0; k < JOB_N_KEYS; k++)
        if (job_params[k].window && !strcmp(field, job_params[k].window)) return k;
    return -1;
}

const char *job_expect(job_key k, char *buf, size_t n) {
    const job_param *p = &job_params[k];
    switch (p->type) {
    case JOB_T_TEXT: snprintf(buf, n, "a string"); break;
    case JOB_T_SEED: snprintf(buf, n, "a non-negative integer below 2^64"); break;
    case JOB_T_INT: snprintf(buf, n, "an integer in %.0f..%.0f", p->lo, p->hi); break;
    case JOB_T_FLOAT:
    case JOB_T_DOUBLE: snprintf(buf, n, "a number in %g..%g", p->lo, p->hi); break;
    case JOB_T_LAYERS:
        snprintf(buf, n, "up to %d block indices in %.0f..%.0f, like 7,8,9 or [7,8,9]",
                 JOB_MAX_SKIP, p->lo, p->hi);
        break;
    case JOB_T_NOISE: snprintf(buf, n, "f32, bf16, f16, f32-scalar, bf16-f32 or f16-f32"); break;
    case JOB_T_INFO: snprintf(buf, n, "a fact of the run, not a parameter"); break;
    }
    return buf;
}

static err bad_value(job_key k, const char *what, const char *got) {
    char e[160];
    FAIL(ERR_ARG, "%s: expected %s, got %s", what, job_expect(k, e, sizeof e), got);
}

/* A number already parsed, checked against the row and stored. */
static err set_number(pipeline_job *j, job_key k, double v, const char *what, const char *got) {
    const job_param *p = &job_params[k];
    char *field = (char *)j + p->off;
    if (!(v >= p->lo && v <= p->hi)) return bad_value(k, what, got);
    if ((p->type == JOB_T_INT || p->type == JOB_T_SEED) && v != floor(v))
        return bad_value(k, what, got);
    if (p->type == JOB_T_INT)
        *(int *)field = (int)v;
    else if (p->type == JOB_T_FLOAT)
        *(float *)field = (float)v;
    else if (p->type == JOB_T_DOUBLE)
        *(double *)field = v;
    else if (p->type == JOB_T_SEED && v < 18446744073709551616.0)
        *(uint64_t *)field = (uint64_t)v;
    else
        return bad_value(k, what, got);
    j->set |= JOB_BIT(k);
    return ERR_OK;
}

static err set_string(pipeline_job *j, job_key k, const char *s) {
    char **field = (char **)((char *)j + job_params[k].off);
    char *d = strdup(s);
    FAIL_IF(!d, ERR_NOMEM, "out of memory");
    free(*field);
    *field = d;
    j->set |= JOB_BIT(k);
    return ERR_OK;
}

/* "7,8,9" or "[7, 8, 9]" (stable-diffusion.cpp's form) */
static err set_layers_text(pipeline_job *j, const char *v, const char *what) {
    const char *c = v;
    int n = 0, layers[JOB_MAX_SKIP];
    char got[80];
    snprintf(got, sizeof got, "\"%.60s\"", v);
    while (*c == ' ')
        c++;
    const int open = *c == '[';
    if (open) c++;
    while (*c && *c != ']') {
        char *end;
        errno = 0;
        const long x = strtol(c, &end, 10);
        if (end == c || errno || x < 0 || x > 999 || n == JOB_MAX_SKIP)
            return bad_value(JOB_SKIP_LAYERS, what, got);
        layers[n++] = (int)x;
        c = end + strspn(end, " ");
        if (*c == ',') c++;
        c += strspn(c, " ");
    }
    if (!n || open != (*c == ']') || (*c == ']' && c[1 + strspn(c + 1, " ")]))
        return bad_value(JOB_SKIP_LAYERS, what, got);
    memcpy(j->skip_layers, layers, sizeof(int) * (size_t)n);
    j->n_skip = n;
    j->set |= JOB_BIT(JOB_SKIP_LAYERS);
    return ERR_OK;
}

static err set_noise(pipeline_job *j, const char *v, const char *what) {
    char got[80];
    for (int k = NOISE_F32; k <= NOISE_F16_F32; k++)
        if (!strcmp(v, sampler_noise_name((noise_kind)k))) {
            j->noise = k;
            j->set |= JOB_BIT(JOB_NOISE);
            return ERR_OK;
        }
    snprintf(got, sizeof got, "\"%.60s\"", v);
    return bad_value(JOB_NOISE, what, got);
}

err job_set_text(pipeline_job *j, job_key k, const char *text, const char *what) {
    const job_param *p = &job_params[k];
    char got[80];
    snprintf(got, sizeof got, "\"%.60s\"", text);
    switch (p->type) {
    case JOB_T_TEXT: return set_string(j, k, text);
    case JOB_T_LAYERS: return set_layers_text(j, text, what);
    case JOB_T_NOISE: return set_noise(j, text, what);
    case JOB_T_INFO: FAIL(ERR_ARG, "%s: a fact of the run, not a parameter", what);
    case JOB_T_SEED: {
        const char *s = text + strspn(text, " ");
        char *end;
        errno = 0;
        const unsigned long long v = strtoull(s, &end, 10);
        if (*s < '0' || *s > '9' || *end || errno) return bad_value(k, what, got);
        j->seed = v;
        j->set |= JOB_BIT(k);
        return ERR_OK;
    }
    default: break;
    }
    const char *s = text + strspn(text, " ");
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || end[strspn(end, " ")] || errno) return bad_value(k, what, got);
    return set_number(j, k, v, what, got);
}

/* A seed beyond 2^53 from the object's raw text (a double cannot hold it): the digits after
 * the key "seed". Inside a JSON string a quote is escaped, so "seed" followed by ':' can only be
 * the key. */
static int raw_seed(const char *raw, uint64_t *out) {
    for (const char *p = raw ? strstr(raw, "\"seed\"") : NULL; p; p = strstr(p, "\"seed\"")) {
        p += 6;
        const char *q = p + strspn(p, " \t\r\n");
        if (*q++ != ':') continue; /* a value "seed", not the key */
        q += strspn(q, " \t\r\n");
        char *end;
        errno = 0;
        *out = strtoull(q, &end, 10);
        return end != q && !errno;
    }
    return 0;
}

static err set_json_seed(pipeline_job *j, const cJSON *v, const char *raw, const char *what) {
    char got[64];
    if (cJSON_IsString(v)) return job_set_text(j, JOB_SEED, v->valuestring, what);
    if (!cJSON_IsNumber(v)) return bad_value(JOB_SEED, what, "another type");
    snprintf(got, sizeof got, "%.17g", v->valuedouble);
    const double d = v->valuedouble;
    if (!(d >= 0 && d <= 18446744073709551616.0) || d != floor(d))
        return bad_value(JOB_SEED, what, got);
    uint64_t exact;
    if (d >= 9007199254740992.0) { /* 2^53: the double may have lost the low bits */
        if (!raw_seed(raw, &exact)) return bad_value(JOB_SEED, what, got);
        FAIL_IF((double)exact != d, ERR_ARG,
                "%s: a seed of 2^53 or more must be given exactly (as written, or as a string)",
                what);
        j->seed = exact;
    } else {
        j->seed = (uint64_t)d;
    }
    j->set |= JOB_BIT(JOB_SEED);
    return ERR_OK;
}

static err set_json(pipeline_job *j, job_key k, const cJSON *v, const char *raw, const char *what) {
    const job_param *p = &job_params[k];
    char got[64];
    switch (p->type) {
    case JOB_T_SEED: return set_json_seed(j, v, raw, what);
    case JOB_T_TEXT:
    case JOB_T_NOISE:
        if (!cJSON_IsString(v)) return bad_value(k, what, "another type");
        return job_set_text(j, k, v->valuestring, what);
    case JOB_T_LAYERS: {
        int n = 0;
        if (!cJSON_IsArray(v) || !cJSON_GetArraySize(v) || cJSON_GetArraySize(v) > JOB_MAX_SKIP)
            return bad_value(k, what, "another value");
        for (const cJSON *x = v->child; x; x = x->next) {
            snprintf(got, sizeof got, "%.17g", cJSON_IsNumber(x) ? x->valuedouble : NAN);
            if (!cJSON_IsNumber(x) || !(x->valuedouble >= p->lo && x->valuedouble <= p->hi) ||
                x->valuedouble != floor(x->valuedouble))
                return bad_value(k, what, got);
            j->skip_layers[n++] = (int)x->valuedouble;
        }
        j->n_skip = n;
        j->set |= JOB_BIT(k);
        return ERR_OK;
    }
    case JOB_T_INFO: return ERR_OK;
    default:
        if (!cJSON_IsNumber(v)) return bad_value(k, what, "another type");
        snprintf(got, sizeof got, "%.17g", v->valuedouble);
        return set_number(j, k, v->valuedouble, what, got);
    }
}

err job_set_number(pipeline_job *j, job_key k, double v, const char *what) {
    char got[64];
    snprintf(got, sizeof got, "%.17g", v);
    return set_number(j, k, v, what, got);
}

err job_set_json(pipeline_job *j, job_key k, const cJSON *v, const char *what) {
    return set_json(j, k, v, NULL, what);
}

err job_from_json(pipeline_job *j, const cJSON *o, const char *raw, const char *where,
                  const char *const *extra) {
    FAIL_IF(!cJSON_IsObject(o), ERR_ARG, "%s: not a JSON object", where);
    uint32_t seen = 0;
    for (const cJSON *it = o->child; it; it = it->next) {
        int skip = 0;
        for (const char *const *x = extra; x && *x && !skip; x++)
            skip = !strcmp(*x, it->string);
        for (const cJSON *d = o->child; d != it; d = d->next)
            FAIL_IF(!strcmp(d->string, it->string), ERR_ARG, "%s: \"%s\" is given twice", where,
                    it->string);
        if (skip) continue;
        const int k = job_find_key(it->string);
        if (k < 0) {
            char known[600];
            size_t n = 0;
            known[0] = 0;
            for (int q = 0; q < JOB_N_KEYS && n < sizeof known; q++)
                if (!(job_params[q].flags & JOB_F_NOT_JSON) && job_params[q].type != JOB_T_INFO)
                    n += (size_t)snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "",
                                          job_params[q].key);
            for (const char *const *x = extra; x && *x && n < sizeof known; x++)
                n += (size_t)snprintf(known + n, sizeof known - n, ", %s", *x);
            FAIL(ERR_ARG, "%s: unknown key \"%s\" (known: %s)", where, it->string, known);
        }
        seen |= JOB_BIT(k);
        char what[512];
        snprintf(what, sizeof what, "%s: \"%s\"", where, it->string);
        if (k == JOB_INFO_SAMPLER)
            FAIL_IF(!cJSON_IsString(it) || strcmp(it->valuestring, SAMPLER_JSON), ERR_ARG,
                    "%s: df11 has one sampler, \"%s\"", what, SAMPLER_JSON);
        TRY(set_json(j, (job_key)k, it, raw, what));
    }
    (void)seen;
    return ERR_OK;
}

void job_value_text(const pipeline_job *j, job_key k, char *buf, size_t n) {
    const job_param *p = &job_params[k];
    const char *field = (const char *)j + p->off;
    size_t m = 0;
    buf[0] = 0;
    switch (p->type) {
    case JOB_T_TEXT:
        snprintf(buf, n, "%s", *(char *const *)field ? *(char *const *)field : "");
        break;
    case JOB_T_SEED: snprintf(buf, n, "%llu", (unsigned long long)j->seed); break;
    case JOB_T_INT: snprintf(buf, n, "%d", *(const int *)field); break;
    case JOB_T_FLOAT: snprintf(buf, n, "%g", *(const float *)field); break;
    case JOB_T_DOUBLE: snprintf(buf, n, "%g", *(const double *)field); break;
    case JOB_T_NOISE: snprintf(buf, n, "%s", sampler_noise_name((noise_kind)j->noise)); break;
    case JOB_T_LAYERS:
        for (int i = 0; i < j->n_skip && m < n; i++)
            m += (size_t)snprintf(buf + m, n - m, "%s%d", i ? "," : "", j->skip_layers[i]);
        break;
    case JOB_T_INFO: break;
    }
}

/* ---- the PNG's texts ---- */

static const char *info_value(const job_record *r, job_key k, int a1111) {
    switch (k) {
    case JOB_INFO_MODEL: return r->model;
    case JOB_INFO_HASH: return r->model_hash;
    case JOB_INFO_SAMPLER: return a1111 ? "Euler" : SAMPLER_JSON;
    case JOB_INFO_SCHEDULE: return "Simple";
    case JOB_INFO_BACKEND: return r->backend;
    case JOB_INFO_PROGRAM: return r->program;
    default: return "";
    }
}

char *job_png_json(const job_record *r) {
    const pipeline_job *j = r->job;
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; o && k < JOB_N_KEYS; k++) {
        const job_param *p = &job_params[k];
        const char *field = (const char *)j + p->off;
        const int info = p->type == JOB_T_INFO;
        if (p->flags & JOB_F_NOT_JSON || (!info && !(r->active & JOB_BIT(k)))) continue;
        char seed[32];
        switch (p->type) {
        case JOB_T_INFO: cJSON_AddStringToObject(o, p->key, info_value(r, (job_key)k, 0)); break;
        case JOB_T_TEXT: cJSON_AddStringToObject(o, p->key, *(char *const *)field); break;
        case JOB_T_SEED: /* exact beyond 2^53 */
            snprintf(seed, sizeof seed, "%llu", (unsigned long long)j->seed);
            cJSON_AddRawToObject(o, p->key, seed);
            break;
        case JOB_T_INT: cJSON_AddNumberToObject(o, p->key, *(const int *)field); break;
        case JOB_T_FLOAT: cJSON_AddNumberToObject(o, p->key, *(const float *)field); break;
        case JOB_T_DOUBLE: cJSON_AddNumberToObject(o, p->key, *(const double *)field); break;
        case JOB_T_LAYERS:
            cJSON_AddItemToObject(o, p->key, cJSON_CreateIntArray(j->skip_layers, j->n_skip));
            break;
        case JOB_T_NOISE:
            cJSON_AddStringToObject(o, p->key, sampler_noise_name((noise_kind)j->noise));
            break;
        }
    }
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

/* One "Label: value" of the A1111 line: A1111's own forms for the size and the hash. */
static void a1111_value(const job_record *r, job_key k, char *v, size_t n) {
    if (k == JOB_WIDTH)
        snprintf(v, n, "%dx%d", r->job->width, r->job->height);
    else if (k == JOB_INFO_HASH)
        snprintf(v, n, "%.10s", r->model_hash);
    else if (job_params[k].type == JOB_T_INFO)
        snprintf(v, n, "%s", info_value(r, k, 1));
    else
        job_value_text(r->job, k, v, n);
}

char *job_png_text(const job_record *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fprintf(f, "%s\n", r->job->prompt ? r->job->prompt : "");
    if (r->active & JOB_BIT(JOB_NEGATIVE)) fprintf(f, "Negative prompt: %s\n", r->job->negative);
    int first = 1;
    for (int at = 1; at < 1000; at++)
        for (int k = 0; k < JOB_N_KEYS; k++) {
            const job_param *p = &job_params[k];
            if (p->a1111_at != at) continue;
            if (p->type != JOB_T_INFO && !(r->active & JOB_BIT(k)) &&
                !(p->flags & JOB_F_A1111_ALWAYS))
                continue;
            char v[400];
            a1111_value(r, (job_key)k, v, sizeof v);
            fprintf(f, "%s%s: %s", first ? "" : ", ", p->a1111, v);
            first = 0;
        }
    return fclose(f) == 0 ? buf : (free(buf), NULL);
}
