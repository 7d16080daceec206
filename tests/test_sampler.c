/* test_sampler: unet_dit/sampler.h against tests/fixtures/sampler_ref.safetensors
 * (make_sampler_ref.py: torch.randn on seeded CPU generators, FluxPipeline's and
 * StableDiffusion3Pipeline's schedules, bf16 Euler steps, all recorded by torch and diffusers)
 * and against docs/MODEL-SPEC.md §6.1, §6.3 and §6.6's printed values. Everything is compared bit
 * for bit: the noise and the schedule are exact reproductions, not approximations. Host code
 * only: --gpu exits 77.
 * usage: test_sampler --cpu|--gpu FIXTURES_DIR */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include "core/half.h"
#include "core/safetensors.h"
#include "tests/testutil.h"
#include "unet_dit/sampler.h"

static st_file *fx;

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

/* a fixture tensor's values as floats (F32, BF16, F16 and F64 stored) */
static float *values(const st_tensor *t) {
    float *v = malloc(sizeof *v * (t->numel + 1));
    CHECK(v);
    for (uint64_t i = 0; i < t->numel; i++) {
        if (t->dtype == DTYPE_F32)
            memcpy(&v[i], t->data + 4 * i, 4);
        else if (t->dtype == DTYPE_BF16 || t->dtype == DTYPE_F16) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            v[i] = t->dtype == DTYPE_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        } else {
            CHECK(!"unexpected fixture dtype");
        }
    }
    return v;
}

static const st_tensor *need(const char *name) {
    const st_tensor *t = st_find(fx, name);
    if (!t) {
        fprintf(stderr, "fixture has no tensor %s\n", name);
        exit(1);
    }
    return t;
}

static int64_t mismatches(const float *got, const float *ref, int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !same_bits(got[i], ref[i]);
    return bad;
}

/* ---- noise ---- */

static const struct {
    const char *name;
    noise_kind k;
} kinds[] = {{"f32", NOISE_F32}, {"f32_scalar", NOISE_F32_SCALAR}, {"bf16", NOISE_BF16},
             {"f16", NOISE_F16}, {"bf16_f32", NOISE_BF16_F32},     {"f16_f32", NOISE_F16_F32}};

/* docs/MODEL-SPEC.md §6.6's first values of seed 0 (n >= 16) for the kinds it prints */
static void test_spec_first_values(void) {
    static const float f32[4] = {-1.1258398f, -1.1523602f, -0.25057858f, -0.4338788f};
    static const float bf16[4] = {1.4609375f, 0.29101562f, 0.9609375f, 1.5703125f};
    static const float f16[4] = {-0.9013672f, 0.4814453f, 1.1982422f, 0.90625f};
    const float *want[3] = {f32, bf16, f16};
    const noise_kind k[3] = {NOISE_F32, NOISE_BF16, NOISE_F16};
    float out[64];
    for (int i = 0; i < 3; i++) {
        sampler_randn(0, 64, k[i], out);
        /* the spec prints 8 significant digits; the half values are exact */
        for (int j = 0; j < 4; j++)
            EXPECT(fabsf(out[j] - want[i][j]) <= 1e-7f, "%s seed 0 [%d]: %.9g, spec %.9g",
                   sampler_noise_name(k[i]), j, out[j], want[i][j]);
    }
}

/* one draw sequence of the fixture: n values, or the chain of draws from one generator */
static float *draw(noise_kind k, uint64_t seed, int64_t n, int chain) {
    static const int64_t parts[4] = {5, 17, 3, 40};
    float *out = malloc(sizeof *out * (size_t)(chain ? 65 : n));
    CHECK(out);
    if (!chain) {
        sampler_randn(seed, n, k, out);
        return out;
    }
    sampler_rng g;
    sampler_rng_seed(&g, 7);
    for (int i = 0, at = 0; i < 4; at += (int)parts[i++])
        sampler_rng_randn(&g, parts[i], k, out + at);
    return out;
}

static void test_randn_fixture(void) {
    int cases[6] = {0}, failed[6] = {0};
    for (int i = 0; i < st_count(fx); i++) {
        const st_tensor *t = st_at(fx, i);
        char kind[32], rest[64];
        if (sscanf(t->name, "randn.%31[^.].%63s", kind, rest) != 2) continue;
        int ki = -1;
        for (int j = 0; j < 6; j++)
            if (!strcmp(kinds[j].name, kind)) ki = j;
        EXPECT(ki >= 0, "%s: unknown noise kind", t->name);
        if (ki < 0) continue;
        unsigned long long seed = 7;
        long long n = 65;
        char tail[16] = "";
        const int chain = !strcmp(rest, "chain");
        if (!chain && sscanf(rest, "s%llu.n%lld.%15s", &seed, &n, tail) < 2) {
            EXPECT(0, "%s: unparsed name", t->name);
            continue;
        }
        float *got = draw(kinds[ki].k, seed, n, chain);
        int64_t bad;
        if (!strcmp(tail, "crc32")) {
            int64_t want;
            memcpy(&want, t->data, 8);
            const uLong crc = crc32(0L, (const Bytef *)got, (uInt)(n * 4));
            bad = (int64_t)crc != want;
        } else {
            float *ref = values(t);
            bad = mismatches(got, ref, (int64_t)t->numel);
            free(ref);
        }
        EXPECT(bad == 0, "%s: %lld of %lld values differ", t->name, (long long)bad,
               (long long)t->numel);
        cases[ki]++;
        failed[ki] += bad != 0;
        free(got);
    }
    for (int j = 0; j < 6; j++) {
        printf("  randn %-10s %3d cases, %d with mismatches\n", kinds[j].name, cases[j], failed[j]);
        EXPECT(cases[j] > 0, "the fixture has no %s draws (see make_sampler_ref.py)",
               kinds[j].name);
    }
}

/* generators: the low 32 bits of the seed; a draw continues the stream */
static void test_generator(void) {
    float a[40], b[40], c[80];
    sampler_randn(5, 40, NOISE_F32, a);
    sampler_randn(5 + (1ull << 32), 40, NOISE_F32, b);
    EXPECT(mismatches(a, b, 40) == 0, "seeds 5 and 2^32 + 5 differ");
    sampler_rng g;
    sampler_rng_seed(&g, 5);
    sampler_rng_randn(&g, 32, NOISE_F32, c);
    sampler_rng_randn(&g, 48, NOISE_F32, c + 32);
    float d[80];
    sampler_randn(5, 80, NOISE_F32, d);
    /* 32 + 48 in two calls equals one call of 80: both are multiples of 16 */
    EXPECT(mismatches(c, d, 80) == 0, "two draws from one generator != one draw");
}

/* ---- schedule ---- */

/* docs/MODEL-SPEC.md §6.1: FLUX-dev 28 steps at 1024x1024 */
static const float spec_dev28[29] = {1,
                                     0.988408625f,
                                     0.976222456f,
                                     0.963394403f,
                                     0.949872553f,
                                     0.93559891f,
                                     0.920508981f,
                                     0.904530764f,
                                     0.887583435f,
                                     0.869575918f,
                                     0.850405693f,
                                     0.829956412f,
                                     0.808095515f,
                                     0.784671605f,
                                     0.759510934f,
                                     0.732412815f,
                                     0.703144729f,
                                     0.67143482f,
                                     0.6369645f,
                                     0.599356711f,
                                     0.558162868f,
                                     0.512844145f,
                                     0.462748408f,
                                     0.407078415f,
                                     0.344848931f,
                                     0.274827987f,
                                     0.195454597f,
                                     0.104720898f,
                                     0};

/* docs/MODEL-SPEC.md §6.3's table: bf16(t), bf16(t)/1000 in bf16, and tau, for the same schedule */
static const float spec_tau[28][3] = {{1000, 1.0f, 1000},       {988, 0.98828125f, 988},
                                      {976, 0.9765625f, 976},   {964, 0.96484375f, 964},
                                      {948, 0.94921875f, 948},  {936, 0.9375f, 936},
                                      {920, 0.921875f, 920},    {904, 0.90234375f, 904},
                                      {888, 0.88671875f, 888},  {868, 0.8671875f, 868},
                                      {852, 0.8515625f, 852},   {828, 0.828125f, 828},
                                      {808, 0.80859375f, 808},  {784, 0.78515625f, 784},
                                      {760, 0.76171875f, 760},  {732, 0.73046875f, 732},
                                      {704, 0.703125f, 704},    {672, 0.671875f, 672},
                                      {636, 0.63671875f, 636},  {600, 0.6015625f, 600},
                                      {560, 0.55859375f, 560},  {512, 0.51171875f, 512},
                                      {462, 0.462890625f, 462}, {408, 0.408203125f, 408},
                                      {344, 0.34375f, 344},     {274, 0.2734375f, 274},
                                      {195, 0.1953125f, 195},   {104.5f, 0.1044921875f, 104.5f}};

/* the transformer's timestep input (docs/MODEL-SPEC.md §6.3): bf16(t) / 1000 rounded to bf16, then
 * times 1000 rounded to bf16 */
static void tau_chain(float t, float *bt, float *div, float *tau) {
    *bt = bf16_round(t);
    *div = bf16_round(*bt / 1000.0f);
    *tau = bf16_round(*div * 1000.0f);
}

/* The next schedule case after tensor *i: its "<prefix>.<case>.params" tensor, the case's name
 * in cname[64]; NULL after the last. */
static const st_tensor *next_case(const char *prefix, int *i, char *cname) {
    char fmt[48], field[16];
    snprintf(fmt, sizeof fmt, "%s.%%63[^.].%%15s", prefix);
    while (++*i < st_count(fx)) {
        const st_tensor *t = st_at(fx, *i);
        if (sscanf(t->name, fmt, cname, field) == 2 && !strcmp(field, "params")) return t;
    }
    return NULL;
}

/* The config a case was made with: c (the built-in one) with the case's JSON metadata applied;
 * same: that JSON must give the built-in back. */
static void case_config(const char *prefix, const char *cname, int same, sampler_config *c) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s.config", prefix, cname);
    const char *js = st_meta(fx, key);
    EXPECT(js != NULL, "no metadata %s", key);
    if (!js) return;
    cJSON *j = cJSON_Parse(js);
    CHECK(j);
    sampler_config fromjs = *c;
    EXPECT(sampler_config_from_json(j, key, &fromjs) == ERR_OK, "%s: %s", key, err_msg());
    cJSON_Delete(j);
    EXPECT(!same || !memcmp(&fromjs, c, sizeof *c), "%s: the JSON config differs from the built-in",
           cname);
    *c = fromjs;
}

/* got[0..n) against the fixture's "<prefix>.<case>.<field>", bit for bit */
static void expect_exact(const char *prefix, const char *cname, const char *field, const float *got,
                         int64_t n) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s.%s", prefix, cname, field);
    const st_tensor *t = need(key);
    float *ref = values(t);
    const int64_t bad = (int64_t)t->numel == n ? mismatches(got, ref, n) : n;
    EXPECT(bad == 0, "%s: %lld of %lld values differ (fixture: %llu)", key, (long long)bad,
           (long long)n, (unsigned long long)t->numel);
    free(ref);
}

/* FluxPipeline's schedules: mu, sigmas, timesteps and the transformer's tau per case */
static void test_schedule_fixture(void) {
    int n_cases = 0;
    char cname[64];
    for (int i = -1; next_case("sched", &i, cname);) {
        n_cases++;
        int64_t p[4];
        memcpy(p, st_at(fx, i)->data, sizeof p);
        const int steps = (int)p[0];
        sampler_config c;
        if (!strncmp(cname, "schnell", 7))
            sampler_config_flux_schnell(&c);
        else
            sampler_config_flux_dev(&c);
        case_config("sched", cname, !strncmp(cname, "dev_", 4) || !strncmp(cname, "schnell_", 8),
                    &c);
        EXPECT(p[3] == (p[1] / 16) * (p[2] / 16), "%s: image_seq_len %lld", cname, (long long)p[3]);
        char key[96];
        snprintf(key, sizeof key, "sched.%s.mu", cname);
        double mu_ref;
        memcpy(&mu_ref, need(key)->data, 8);
        const double mu = sampler_flux_mu(&c, p[3]);
        EXPECT(mu == mu_ref, "%s: mu %.17g, diffusers %.17g", cname, mu, mu_ref);

        float *sig = malloc(sizeof *sig * (size_t)(steps + 1)), *ts = malloc(sizeof *ts * steps),
              *tau = malloc(sizeof *tau * steps);
        CHECK(sig && ts && tau);
        sampler_flux_sigmas(&c, steps, p[3], sig);
        sampler_timesteps(&c, steps, sig, ts);
        for (int s = 0; s < steps; s++) {
            float bt, dv;
            tau_chain(ts[s], &bt, &dv, &tau[s]);
        }
        expect_exact("sched", cname, "sigmas", sig, steps + 1);
        expect_exact("sched", cname, "timesteps", ts, steps);
        expect_exact("sched", cname, "tau", tau, steps);
        printf("  schedule %-22s mu %.6f sigma[1] %.9g\n", cname, mu, sig[1]);
        free(sig);
        free(ts);
        free(tau);
    }
    EXPECT(n_cases >= 5, "only %d schedule cases in the fixture", n_cases);
}

/* docs/MODEL-SPEC.md §6.1's tables and §6.3's tau table */
static void test_schedule_spec(void) {
    sampler_config c;
    sampler_config_flux_dev(&c);
    float sig[51], ts[50];
    sampler_flux_sigmas(&c, 28, 4096, sig);
    EXPECT(mismatches(sig, spec_dev28, 29) == 0, "dev 28 steps 1024^2: %lld sigmas differ",
           (long long)mismatches(sig, spec_dev28, 29));
    sampler_timesteps(&c, 28, sig, ts);
    for (int s = 0; s < 28; s++) {
        float bt, dv, tau;
        tau_chain(ts[s], &bt, &dv, &tau);
        EXPECT(bt == spec_tau[s][0] && dv == spec_tau[s][1] && tau == spec_tau[s][2],
               "step %d: t %.7g -> %.9g %.10g %.9g, spec %.9g %.10g %.9g", s, ts[s], bt, dv, tau,
               spec_tau[s][0], spec_tau[s][1], spec_tau[s][2]);
    }
    sampler_flux_sigmas(&c, 50, 4096, sig);
    const float head[5] = {1, 0.993579507f, 0.98697859f, 0.980189562f, 0.973204136f};
    const float tail[4] = {0.167767122f, 0.116288766f, 0.0605502762f, 0};
    EXPECT(mismatches(sig, head, 5) == 0 && mismatches(sig + 47, tail, 4) == 0,
           "dev 50 steps 1024^2 differs from docs/MODEL-SPEC.md §6.1");
    /* mu per size (§6.1's table, printed rounded) */
    const struct {
        int side;
        double mu;
    } mus[] = {{512, 0.63}, {768, 0.846667}, {1024, 1.15}, {1280, 1.54}};
    for (int i = 0; i < 4; i++) {
        const int64_t seq = (int64_t)(mus[i].side / 16) * (mus[i].side / 16);
        EXPECT(fabs(sampler_flux_mu(&c, seq) - mus[i].mu) < 1e-6, "mu at %d^2: %.9g", mus[i].side,
               sampler_flux_mu(&c, seq));
    }
    sampler_config_flux_schnell(&c);
    sampler_flux_sigmas(&c, 4, 4096, sig);
    const float schnell[5] = {1, 0.75f, 0.5f, 0.25f, 0};
    EXPECT(mismatches(sig, schnell, 5) == 0, "schnell: %g %g %g %g %g", sig[0], sig[1], sig[2],
           sig[3], sig[4]);
}

/* SD3: StableDiffusion3Pipeline's set_timesteps(steps), shifted twice, per fixture case; the
 * config comes from the case's JSON, applied to the built-in SD3.5 one */
static void test_sd3_schedule_fixture(void) {
    int n_cases = 0;
    char cname[64];
    for (int i = -1; next_case("sched_sd3", &i, cname);) {
        n_cases++;
        int64_t steps;
        memcpy(&steps, st_at(fx, i)->data, 8);
        sampler_config c;
        sampler_config_sd3(&c);
        case_config("sched_sd3", cname, !strncmp(cname, "sd35_", 5), &c);
        float *sig = malloc(sizeof *sig * (size_t)(steps + 1)), *ts = malloc(sizeof *ts * steps);
        CHECK(sig && ts);
        sampler_sd3_sigmas(&c, (int)steps, sig);
        sampler_timesteps(&c, (int)steps, sig, ts);
        expect_exact("sched_sd3", cname, "sigmas", sig, steps + 1);
        expect_exact("sched_sd3", cname, "timesteps", ts, steps);
        printf("  sd3 schedule %-12s shift %g N %d sigma[last] %.9g\n", cname, c.shift, c.num_train,
               sig[steps - 1]);
        free(sig);
        free(ts);
    }
    EXPECT(n_cases >= 8, "only %d SD3 schedule cases in the fixture (see make_sampler_ref.py)",
           n_cases);
}

/* docs/MODEL-SPEC.md §6.1's SD3.5 tables: 28 steps, Turbo's 4, and the ends of 40 */
static void test_sd3_schedule_spec(void) {
    static const float sd3_28[29] = {1,
                                     0.987380624f,
                                     0.974107742f,
                                     0.960129321f,
                                     0.945387483f,
                                     0.929817915f,
                                     0.913348973f,
                                     0.895900309f,
                                     0.877381921f,
                                     0.857692301f,
                                     0.836716652f,
                                     0.814324796f,
                                     0.790368259f,
                                     0.764677107f,
                                     0.737055838f,
                                     0.70727849f,
                                     0.675082326f,
                                     0.640160203f,
                                     0.602150559f,
                                     0.560625017f,
                                     0.515072107f,
                                     0.464876026f,
                                     0.409288824f,
                                     0.347392648f,
                                     0.278048784f,
                                     0.199826986f,
                                     0.110905729f,
                                     0.00892857183f,
                                     0};
    sampler_config c;
    sampler_config_sd3(&c);
    float sig[41];
    sampler_sd3_sigmas(&c, 28, sig);
    EXPECT(mismatches(sig, sd3_28, 29) == 0, "SD3.5 28 steps: %lld sigmas differ",
           (long long)mismatches(sig, sd3_28, 29));
    sampler_sd3_sigmas(&c, 4, sig);
    const float turbo[5] = {1, 0.857692301f, 0.602150559f, 0.00892857183f, 0};
    EXPECT(mismatches(sig, turbo, 5) == 0, "SD3.5 Turbo 4 steps: %.9g %.9g %.9g %.9g", sig[0],
           sig[1], sig[2], sig[3]);
    sampler_sd3_sigmas(&c, 40, sig);
    const float head[3] = {1, 0.991330862f, 0.982355773f},
                tail[3] = {0.0810457543f, 0.00892857183f, 0};
    EXPECT(mismatches(sig, head, 3) == 0 && mismatches(sig + 38, tail, 3) == 0,
           "SD3.5 40 steps differs from docs/MODEL-SPEC.md §6.1");
}

/* the bf16 Euler step of docs/MODEL-SPEC.md §6.2 against diffusers' scheduler.step in bf16 */
static void test_euler_fixture(void) {
    const st_tensor *xt = need("euler.x"), *vt = need("euler.v");
    const int64_t n = (int64_t)xt->numel;
    float *x = values(xt), *v = values(vt), *out = malloc(sizeof *out * (size_t)n);
    CHECK(out);
    sampler_config c;
    sampler_config_flux_dev(&c);
    float sig[29];
    sampler_flux_sigmas(&c, 28, 4096, sig);
    int n_steps = 0;
    for (int k = 0; k < 28; k++) {
        char key[32];
        snprintf(key, sizeof key, "euler.i%d.out", k);
        const st_tensor *t = st_find(fx, key);
        if (!t) continue;
        n_steps++;
        const float dt = bf16_round(sig[k + 1] - sig[k]);
        for (int64_t i = 0; i < n; i++)
            out[i] = bf16_round(x[i] + bf16_round(dt * v[i]));
        float *ref = values(t);
        const int64_t bad = mismatches(out, ref, n);
        EXPECT(bad == 0, "euler step %d: %lld of %lld values differ", k, (long long)bad,
               (long long)n);
        free(ref);
    }
    EXPECT(n_steps >= 2, "only %d Euler steps in the fixture", n_steps);
    printf("  euler bf16: %d steps x %lld values exact\n", n_steps, (long long)n);
    free(x);
    free(v);
    free(out);
}

/* ---- config JSON ---- */

static err config_from(const char *js, sampler_config *c) {
    cJSON *j = cJSON_Parse(js);
    CHECK(j);
    err e = sampler_config_from_json(j, "sched/scheduler_config.json", c);
    cJSON_Delete(j);
    return e;
}

static void test_config_json(void) {
    sampler_config c, d;
    sampler_config_flux_dev(&d);
    c = d;
    EXPECT(config_from("{}", &c) == ERR_OK && !memcmp(&c, &d, sizeof c), "{} changed the config");
    EXPECT(config_from("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": 2.5,"
                       " \"base_shift\": null, \"use_dynamic_shifting\": false}",
                       &c) == ERR_OK &&
               c.shift == 2.5 && !c.dynamic && c.base_shift == 0.5,
           "partial config: shift %g dynamic %d base %g", c.shift, c.dynamic, c.base_shift);
    c = d;
    err e = config_from("{\"_class_name\": \"EulerDiscreteScheduler\"}", &c);
    EXPECT(e == ERR_UNSUPPORTED && strstr(err_msg(), "sched/scheduler_config.json") &&
               strstr(err_msg(), "EulerDiscreteScheduler"),
           "another class: %d %s", e, err_msg());
    EXPECT(!memcmp(&c, &d, sizeof c), "a failed read changed the config");
    e = config_from("{\"use_karras_sigmas\": true}", &c);
    EXPECT(e == ERR_UNSUPPORTED && strstr(err_msg(), "use_karras_sigmas"), "karras: %d %s", e,
           err_msg());
    e = config_from("{\"shift_terminal\": 0.1}", &c);
    EXPECT(e == ERR_UNSUPPORTED, "shift_terminal: %d %s", e, err_msg());
    e = config_from("{\"shift\": \"3\"}", &c);
    EXPECT(e == ERR_FORMAT && strstr(err_msg(), "shift"), "string shift: %d %s", e, err_msg());
    e = config_from("[1]", &c);
    EXPECT(e == ERR_FORMAT, "array: %d %s", e, err_msg());
}

/* The SD3.5 scheduler configs read over the built-in SD3 config give it back: the fixture
 * pipelines' (as diffusers saves them) and the real SD3.5 Large repo's three keys. With the
 * fixture pipelines' configs, the schedules equal what their StableDiffusion3Pipeline runs
 * used (sd3_tiny/ref.safetensors: P.sigmas, P.timesteps for P.steps). */
static void test_config_sd3(const char *fixtures) {
    sampler_config want, c;
    sampler_config_sd3(&want);
    char path[1024];
    snprintf(path, sizeof path, "%s/sd3_tiny/ref.safetensors", fixtures);
    st_file *sd3 = NULL;
    EXPECT(!st_open(path, &sd3), "%s", err_msg());
    static const char *const runs[3][2] = {
        {"large", "large"}, {"medium", "medium"}, {"large.nocfg", "large"}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/sd3_tiny/%s/scheduler/scheduler_config.json", fixtures,
                 runs[i][1]);
        fio_map f = {0};
        cJSON *j =
            fio_map_open(path, &f) ? NULL : cJSON_ParseWithLength((const char *)f.data, f.size);
        fio_map_close(&f);
        c = want;
        EXPECT(j && sampler_config_from_json(j, path, &c) == ERR_OK, "%s: %s", path,
               j ? err_msg() : "not read");
        cJSON_Delete(j);
        EXPECT(!memcmp(&c, &want, sizeof c), "%s: differs from sampler_config_sd3", path);
        char key[64];
        snprintf(key, sizeof key, "%s.steps", runs[i][0]);
        const char *st = sd3 ? st_meta(sd3, key) : NULL;
        const int steps = st ? atoi(st) : 0;
        EXPECT(steps > 0 && steps <= 50, "sd3_tiny/ref.safetensors: metadata %s", key);
        if (steps <= 0 || steps > 50) continue;
        float sig[51], ts[50];
        sampler_sd3_sigmas(&c, steps, sig);
        sampler_timesteps(&c, steps, sig, ts);
        for (int k = 0; k < 2; k++) {
            snprintf(key, sizeof key, "%s.%s", runs[i][0], k ? "timesteps" : "sigmas");
            const st_tensor *t = st_find(sd3, key);
            if (!t && k) continue; /* large.nocfg keeps only its sigmas */
            EXPECT(t && (int64_t)t->numel == steps + !k, "sd3_tiny/ref.safetensors: no %s", key);
            if (!t || (int64_t)t->numel != steps + !k) continue;
            float *ref = values(t);
            EXPECT(mismatches(k ? ts : sig, ref, steps + !k) == 0,
                   "%s: differs from the pipeline's", key);
            free(ref);
        }
        printf("  sd3 pipeline run %-12s %d steps: sigmas as the pipeline's\n", runs[i][0], steps);
    }
    st_close(sd3);
    c = want;
    EXPECT(config_from("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", "
                       "\"num_train_timesteps\": 1000, \"shift\": 3.0}",
                       &c) == ERR_OK &&
               !memcmp(&c, &want, sizeof c),
           "the SD3.5 Large scheduler_config.json: %s", err_msg());
    /* another shift is taken */
    EXPECT(config_from("{\"shift\": 2.5}", &c) == ERR_OK && c.shift == 2.5 && !c.dynamic,
           "shift 2.5: %g %d", c.shift, c.dynamic);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "--cpu") && strcmp(argv[1], "--gpu"))) {
        fprintf(stderr, "usage: %s --cpu|--gpu FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "--gpu")) {
        printf("test_sampler: the sampler is host code; nothing to test on the GPU\n");
        return 77;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/sampler_ref.safetensors", argv[2]);
    if (st_open(path, &fx) != ERR_OK) {
        fprintf(stderr, "%s\n", err_msg());
        return 1;
    }
    test_spec_first_values();
    test_randn_fixture();
    test_generator();
    test_schedule_spec();
    test_schedule_fixture();
    test_sd3_schedule_spec();
    test_sd3_schedule_fixture();
    test_euler_fixture();
    test_config_json();
    test_config_sd3(argv[2]);
    st_close(fx);
    return tu_finish("test_sampler");
}
