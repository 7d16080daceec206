/* test_job: the job schema (pipeline/job.h) without a model. Every parameter set from text
 * (as a flag or a window field gives it), written as a PNG's df11 JSON and read back as a
 * batch line reads it, comes back with the same value; a value out of its row's range is
 * refused the same way from text and from JSON, with the row's expectation in the message;
 * seeds are exact to 2^64 - 1; unknown, repeated and foreign keys are refused; the A1111 text
 * has its labels in A1111's order. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/job.h"
#include "tests/testutil.h"

/* A value for every settable row, away from the defaults. */
static const char *const sample[JOB_N_KEYS] = {
    [JOB_PROMPT] = "a \"quoted\" prompt, with a comma\nand a line break",
    [JOB_SEED] = "18446744073709551615",
    [JOB_WIDTH] = "1360",
    [JOB_HEIGHT] = "768",
    [JOB_STEPS] = "37",
    [JOB_NEGATIVE] = "blurry, low quality",
    [JOB_CFG_SCALE] = "4.25",
    [JOB_SLG_SCALE] = "2.8",
    [JOB_SKIP_LAYERS] = "[7, 8, 9, 12]",
    [JOB_SLG_START] = "0.05",
    [JOB_SLG_END] = "0.3",
    [JOB_SHIFT] = "2.5",
    [JOB_GUIDANCE] = "3.7",
    [JOB_MAX_SEQ] = "77",
    [JOB_NOISE] = "bf16-f32",
    [JOB_BATCH_COUNT] = "3",
};

static void same_values(const pipeline_job *a, const pipeline_job *b, const char *what) {
    for (int k = 0; k < JOB_N_KEYS; k++) {
        if (job_params[k].type == JOB_T_INFO || job_params[k].flags & JOB_F_NOT_JSON) continue;
        char x[256], y[256];
        job_value_text(a, (job_key)k, x, sizeof x);
        job_value_text(b, (job_key)k, y, sizeof y);
        EXPECT(!strcmp(x, y) && (b->set & JOB_BIT(k)), "%s: %s: %s, then %s", what,
               job_params[k].key, x, y);
    }
}

static void round_trip(void) {
    pipeline_job j, back;
    job_init(&j);
    uint32_t all = 0;
    for (int k = 0; k < JOB_N_KEYS; k++)
        if (sample[k]) {
            EXPECT(job_set_text(&j, (job_key)k, sample[k], job_params[k].key) == ERR_OK,
                   "set %s from \"%s\": %s", job_params[k].key, sample[k], err_msg());
            all |= JOB_BIT(k);
        }
    EXPECT(j.seed == 18446744073709551615ull && j.n_skip == 4 && j.skip_layers[3] == 12,
           "seed %llu, %d skip layers", (unsigned long long)j.seed, j.n_skip);
    const job_record r = {.job = &j, .active = all, .model = "M", .model_hash = "0123456789abcdef",
                          .backend = "cpu", .program = "df11 test"};
    char *js = job_png_json(&r);
    cJSON *o = cJSON_Parse(js);
    job_init(&back);
    EXPECT(job_from_json(&back, o, js, "png", NULL) == ERR_OK, "read back: %s", err_msg());
    same_values(&j, &back, "PNG JSON round trip");
    EXPECT(back.seed == j.seed, "the seed beyond 2^53 read back exactly: %llu",
           (unsigned long long)back.seed);
    /* the A1111 text: the prompt, the negative line, then A1111's order of labels */
    char *t = job_png_text(&r);
    const char *order[] = {"Steps: 37", "Sampler: Euler", "Schedule type: Simple", "CFG scale: 4.25",
                           "Distilled CFG Scale: 3.7", "SLG scale: 2.8", "Skip layers: 7,8,9,12",
                           "SLG start: 0.05", "SLG end: 0.3", "Shift: 2.5", "Seed: 18446744073709551615",
                           "Size: 1360x768", "Model hash: 0123456789", "Model: M",
                           "Max sequence length: 77", "Noise: bf16-f32", "Backend: cpu",
                           "Version: df11 test"};
    const char *at = t ? strstr(t, "\nNegative prompt: blurry, low quality\n") : NULL;
    EXPECT(t && !strncmp(t, sample[JOB_PROMPT], strlen(sample[JOB_PROMPT])) && at,
           "A1111 text opens with the prompt and the negative line: %s", t);
    for (size_t i = 0; at && i < sizeof order / sizeof *order; i++) {
        const char *n = strstr(at, order[i]);
        EXPECT(n, "A1111 text has \"%s\" after the one before: %s", order[i], t);
        at = n ? n : at;
    }
    free(t), free(js);
    cJSON_Delete(o);
    job_free(&back);
    /* inactive rows are not written (FLUX: no CFG scale in the JSON, 1 in the A1111 text) */
    j.cfg_scale = 1;
    const job_record f = {.job = &j,
                          .active = all & ~(JOB_BIT(JOB_CFG_SCALE) | JOB_BIT(JOB_NEGATIVE)),
                          .model = "M", .model_hash = "h", .backend = "cpu", .program = "p"};
    js = job_png_json(&f), t = job_png_text(&f);
    EXPECT(js && !strstr(js, "cfg_scale") && !strstr(js, "negative_prompt"), "%s", js);
    EXPECT(t && strstr(t, "CFG scale: 1,") && !strstr(t, "Negative prompt"), "%s", t);
    free(js), free(t);
    job_free(&j);
}

/* key: JSON text of one bad value for a row, and the text form of it */
static void refused(job_key k, const char *json, const char *text, const char *says) {
    pipeline_job j;
    job_init(&j);
    char line[256];
    snprintf(line, sizeof line, "{\"%s\": %s}", job_params[k].key, json);
    cJSON *o = cJSON_Parse(line);
    err e = job_from_json(&j, o, line, "l.txt:3", NULL);
    EXPECT(e == ERR_ARG && strstr(err_msg(), says) && strstr(err_msg(), "l.txt:3"),
           "JSON %s refused saying \"%s\": %s", line, says, e ? err_msg() : "accepted");
    cJSON_Delete(o);
    if (text) {
        e = job_set_text(&j, k, text, job_params[k].flag);
        EXPECT(e == ERR_ARG && strstr(err_msg(), says), "%s %s refused saying \"%s\": %s",
               job_params[k].flag, text, says, e ? err_msg() : "accepted");
    }
    EXPECT(!(j.set & JOB_BIT(k)), "a refused %s leaves the job unset", job_params[k].key);
    job_free(&j);
}

static void refusals(void) {
    refused(JOB_WIDTH, "8", "8", "an integer in 16..8192");
    refused(JOB_WIDTH, "64.5", "64.5", "an integer in 16..8192");
    refused(JOB_STEPS, "100000", "100000", "an integer in 1..1000");
    refused(JOB_MAX_SEQ, "100000", "513", "an integer in 2..512");
    refused(JOB_CFG_SCALE, "-1", "nan", "a number in 0..100");
    refused(JOB_SLG_END, "1.5", "1.5", "a number in 0..1");
    refused(JOB_SHIFT, "0", "0", "a number in 0.01..100");
    refused(JOB_SEED, "-1", "-1", "a non-negative integer");
    refused(JOB_SEED, "18446744073709551616", "18446744073709551616", "a non-negative integer");
    refused(JOB_SEED, "1e30", " -1", "a non-negative integer");
    refused(JOB_SKIP_LAYERS, "[1, -2]", "[1,2", "block indices");
    refused(JOB_SKIP_LAYERS, "[]", "7,x", "block indices");
    refused(JOB_NOISE, "\"f64\"", "f64", "f32, bf16");
    refused(JOB_PROMPT, "3", NULL, "a string");
    /* keys: unknown, repeated, CLI-only, the sampler df11 does not have */
    const char *bad[][2] = {{"{\"prompt\": \"x\", \"sampler_name\": \"Euler\"}", "unknown key"},
                            {"{\"prompt\": \"x\", \"seed\": 1, \"seed\": 2}", "given twice"},
                            {"{\"prompt\": \"x\", \"batch_count\": 2}", "unknown key"},
                            {"{\"prompt\": \"x\", \"sampler\": \"dpm++\"}", "one sampler"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pipeline_job j;
        job_init(&j);
        cJSON *o = cJSON_Parse(bad[i][0]);
        const err e = job_from_json(&j, o, bad[i][0], "l.txt:4", NULL);
        EXPECT(e == ERR_ARG && strstr(err_msg(), bad[i][1]), "%s refused (%s): %s", bad[i][0],
               bad[i][1], e ? err_msg() : "accepted");
        cJSON_Delete(o);
        job_free(&j);
    }
    /* a seed beyond 2^53 given inexactly: not silently rounded */
    pipeline_job j;
    job_init(&j);
    const char *s = "{\"seed\": 9.007199254740993e15}";
    cJSON *o = cJSON_Parse(s);
    EXPECT(job_from_json(&j, o, s, "l.txt:5", NULL) == ERR_ARG, "an inexact big seed refused");
    cJSON_Delete(o);
    job_free(&j);
}

static void lookups(void) {
    EXPECT(job_find_flag("--cfg-scale") == JOB_CFG_SCALE, "--cfg-scale");
    EXPECT(job_find_flag("--cfg-scale=3") == JOB_CFG_SCALE, "--cfg-scale=3");
    EXPECT(job_find_flag("-s") == JOB_SEED && job_find_flag("--seed") == JOB_SEED, "-s, --seed");
    EXPECT(job_find_flag("--cfg") < 0 && job_find_flag("--model") < 0, "not job flags");
    EXPECT(job_find_key("max_sequence_length") == JOB_MAX_SEQ, "max_sequence_length");
    EXPECT(job_find_key("batch_count") < 0, "batch_count is the CLI's only");
    EXPECT(job_find_window("seed") == JOB_SEED, "the seed field");
    /* every row that takes a value from a flag has a help text, and keys are unique */
    for (int k = 0; k < JOB_N_KEYS; k++) {
        EXPECT(!job_params[k].flag || (job_params[k].help && job_params[k].metavar), "%s's help",
               job_params[k].key);
        for (int q = 0; q < k; q++)
            EXPECT(strcmp(job_params[k].key, job_params[q].key), "%s twice", job_params[k].key);
    }
}

int main(void) {
    round_trip();
    refusals();
    lookups();
    printf("%s\n", tu_failures ? "FAILED" : "all passed");
    return tu_failures != 0;
}
