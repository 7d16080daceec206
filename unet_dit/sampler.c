/* sampler: torch.randn on a seeded CPU generator, bit for bit (docs/MODEL-SPEC.md §6.6), and the
 * FLUX and SD3 flow-matching schedules (§6.1). Mirrors ATen's core/MT19937RNGEngine.h,
 * core/DistributionsHelper.h (uniform_real_distribution, normal_distribution),
 * native/cpu/DistributionTemplates.h (normal_fill, NormalFill16) and avx_mathfun.h
 * (log256_ps, sincos256_ps); diffusers' scheduling_flow_match_euler_discrete.py::set_timesteps
 * and __init__ (the training sigmas SD3's schedule starts from), and
 * pipeline_flux.py::calculate_shift.
 *
 * The arithmetic must round exactly where torch's compiled code rounds: every float operation
 * here rounds to float32 (x86-64 SSE, FLT_EVAL_METHOD 0), the fused multiply-adds that GCC
 * forms inside torch's AVX2 kernel are written as fmaf(), and no other expression may be
 * contracted into an FMA, hence the pragmas below (and -ffp-contract=off where the build can). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "unet_dit/sampler.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/half.h"

/* ---- the engine: ATen's mt19937 ---- */

#define MT_N 624
#define MT_M 397

void sampler_rng_seed(sampler_rng *g, uint64_t seed) {
    /* CPUGeneratorImpl::set_current_seed -> mt19937(seed): the constructor takes uint64 but
     * init_with_uint32 keeps the low 32 bits; the cached normal sample is reset */
    g->s[0] = (uint32_t)(seed & 0xFFFFFFFFu);
    for (uint32_t k = 1; k < MT_N; k++)
        g->s[k] = 1812433253u * (g->s[k - 1] ^ (g->s[k - 1] >> 30)) + k;
    g->left = 1;
    g->next = 0;
    g->has_normal = 0;
    g->normal = 0;
}

static uint32_t mt_twist(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7FFFFFFFu)) >> 1) ^ ((v & 1u) ? 0x9908B0DFu : 0u);
}

static void mt_regenerate(sampler_rng *g) {
    uint32_t *s = g->s;
    for (int k = 0; k < MT_N - MT_M; k++)
        s[k] = s[k + MT_M] ^ mt_twist(s[k], s[k + 1]);
    for (int k = MT_N - MT_M; k < MT_N - 1; k++)
        s[k] = s[k + MT_M - MT_N] ^ mt_twist(s[k], s[k + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mt_twist(s[MT_N - 1], s[0]);
    g->left = MT_N;
    g->next = 0;
}

/* mt19937::operator(): one tempered 32-bit word */
static uint32_t mt_next(sampler_rng *g) {
    if (--g->left == 0) mt_regenerate(g);
    uint32_t y = g->s[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    y ^= y >> 18;
    return y;
}

/* ---- uniforms (transformation::uniform_real: the low `digits` bits times 2^-digits) ---- */

static float uniform_f32(sampler_rng *g) { return (float)(mt_next(g) & 0xFFFFFFu) * 0x1p-24f; }

static double uniform_f64(sampler_rng *g) {
    /* CPUGeneratorImpl::random64: the first word is the high half */
    uint64_t hi = mt_next(g), lo = mt_next(g);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1p-53;
}

/* the legacy half kinds draw uniforms in their own type: 8 (bf16) or 11 (fp16) bits */
static float uniform_half(sampler_rng *g, noise_kind k) {
    uint32_t r = mt_next(g);
    return k == NOISE_BF16 ? (float)(r & 0xFFu) * 0x1p-8f : (float)(r & 0x7FFu) * 0x1p-11f;
}

static float round_half(float x, noise_kind k) {
    return k == NOISE_F16 || k == NOISE_F16_F32 ? f16_to_f32(f32_to_f16(x)) : bf16_round(x);
}

/* ---- (A) float32 Box-Muller of torch's AVX2 kernel (NormalFill16<float> with
 * avx_mathfun.h), one lane at a time. The fmaf() calls are the multiply-adds GCC contracts in
 * torch's build; every other product and sum rounds on its own. ---- */

/* log256_ps for x in (0, 1] (Cephes logf) */
static float avx_log(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    float e = (float)((int32_t)(bits >> 23) - 127) + 1.0f;
    bits = (bits & ~0x7F800000u) | 0x3F000000u; /* the mantissa with 0.5's exponent: [0.5, 1) */
    float m;
    memcpy(&m, &bits, 4);
    if (m < 0.707106781186547524f) { /* x = m + m - 1, e -= 1 */
        e = e - 1.0f;
        m = (m - 1.0f) + m;
    } else {
        m = m - 1.0f;
    }
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = fmaf(y, m, -1.1514610310e-1f);
    y = fmaf(y, m, 1.1676998740e-1f);
    y = fmaf(y, m, -1.2420140846e-1f);
    y = fmaf(y, m, 1.4249322787e-1f);
    y = fmaf(y, m, -1.6668057665e-1f);
    y = fmaf(y, m, 2.0000714765e-1f);
    y = fmaf(y, m, -2.4999993993e-1f);
    y = fmaf(y, m, 3.3333331174e-1f);
    y = y * m;
    const float eq1 = e * -2.12194440e-4f;
    y = fmaf(y, z, eq1);
    y = fmaf(-z, 0.5f, y);
    const float t = m + y;
    return fmaf(e, 0.693359375f, t);
}

/* sincos256_ps for x >= 0 */
static void avx_sincos(float x, float *sin_out, float *cos_out) {
    int32_t j = (int32_t)(x * 1.27323954473516f); /* 4/pi, truncated toward zero */
    j = (j + 1) & ~1;
    const float y = (float)j;
    float xr = fmaf(y, -0.78515625f, x);
    xr = fmaf(y, -2.4187564849853515625e-4f, xr);
    xr = fmaf(y, -3.77489497744594108e-8f, xr);
    const float z = xr * xr;

    float c = 2.443315711809948e-5f;
    c = fmaf(c, z, -1.388731625493765e-3f);
    c = fmaf(c, z, 4.166664568298827e-2f);
    c = c * z;
    const float half_z = z * 0.5f;
    c = fmaf(c, z, -half_z);
    c = c + 1.0f;

    float s = -1.9515295891e-4f;
    s = fmaf(s, z, 8.3321608736e-3f);
    s = fmaf(s, z, -1.6666654611e-1f);
    s = s * z;
    s = fmaf(s, xr, xr);

    float sn = (j & 2) == 0 ? s : c, cs = (j & 2) == 0 ? c : s;
    if (j & 4) sn = -sn;
    if (~(j - 2) & 4) cs = -cs;
    *sin_out = sn;
    *cos_out = cs;
}

/* NormalFill16 on 16 uniforms: pairs (j, j + 8); "* std + mean" with std 1, mean 0 is the
 * "+ 0.0f" that turns -0 into +0 */
static void block_avx(float *d) {
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j], u2 = d[j + 8];
        const float radius = sqrtf(-2.0f * avx_log(u1));
        const float theta = 6.2831855f * u2; /* float(2 pi) */
        float s, c;
        avx_sincos(theta, &s, &c);
        d[j] = radius * c + 0.0f;
        d[j + 8] = radius * s + 0.0f;
    }
}

/* (B) the scalar NormalFill16<float> (torch's DEFAULT capability) with glibc's libm */
static void block_scalar(float *d) {
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j], u2 = d[j + 8];
        const float radius = sqrtf(-2.0f * logf(u1));
        const float theta = (float)(6.283185307179586 * (double)u2); /* 2.0f * pi<double> */
        d[j] = radius * cosf(theta) + 0.0f;
        d[j + 8] = radius * sinf(theta) + 0.0f;
    }
}

/* (C) legacy torch's normal_fill_16 for BFloat16 / Half: every c10 operation computes in
 * float and rounds to the half type */
static void block_half(float *d, noise_kind k) {
    for (int j = 0; j < 8; j++) {
        const float u1 = round_half(1.0f - d[j], k), u2 = d[j + 8];
        const float l = round_half(logf(u1), k);
        const float radius = round_half(sqrtf(round_half(-2.0f * l, k)), k);
        const float theta = round_half((float)(6.283185307179586 * (double)u2), k);
        const float c = round_half(cosf(theta), k), s = round_half(sinf(theta), k);
        d[j] = round_half(round_half(radius * c, k) + 0.0f, k);
        d[j + 8] = round_half(round_half(radius * s, k) + 0.0f, k);
    }
}

/* at::normal_distribution<double> with the generator's cached second sample (the path for
 * n < 16): u1 gives the angle, u2 the radius through log1p */
static double normal_f64(sampler_rng *g) {
    if (g->has_normal) {
        g->has_normal = 0;
        return g->normal * 1.0 + 0.0;
    }
    const double u1 = uniform_f64(g), u2 = uniform_f64(g);
    const double r = sqrt(-2.0 * log1p(-u2));
    const double theta = 2.0 * 3.141592653589793 * u1;
    g->normal = r * sin(theta);
    g->has_normal = 1;
    return r * cos(theta) * 1.0 + 0.0;
}

static void block_apply(float *d, noise_kind k) {
    if (k == NOISE_F32_SCALAR)
        block_scalar(d);
    else if (k == NOISE_BF16 || k == NOISE_F16)
        block_half(d, k);
    else
        block_avx(d);
}

/* normal_fill for float32 and the legacy half types: all n uniforms into out, Box-Muller on
 * each full block of 16 in place, then, if n % 16 != 0, 16 fresh uniforms for the last 16
 * positions (overwriting values already made) */
static void fill_in_place(sampler_rng *g, int64_t n, noise_kind k, float *out) {
    const int f32 = k == NOISE_F32 || k == NOISE_F32_SCALAR;
    for (int64_t i = 0; i < n; i++)
        out[i] = f32 ? uniform_f32(g) : uniform_half(g, k);
    for (int64_t i = 0; i + 16 <= n; i += 16)
        block_apply(out + i, k);
    if (n % 16) {
        float *d = out + n - 16;
        for (int j = 0; j < 16; j++)
            d[j] = f32 ? uniform_f32(g) : uniform_half(g, k);
        block_apply(d, k);
    }
}

/* newer torch's normal_fill for half types: float32 uniforms 16 at a time into a buffer, the
 * float32 kernel, then rounding; the tail block takes the next 16 words of the stream */
static void fill_blocks(sampler_rng *g, int64_t n, noise_kind k, float *out) {
    float buf[16];
    for (int64_t i = 0; i + 16 <= n; i += 16) {
        for (int j = 0; j < 16; j++)
            buf[j] = uniform_f32(g);
        block_avx(buf);
        for (int j = 0; j < 16; j++)
            out[i + j] = round_half(buf[j], k);
    }
    if (n % 16) {
        for (int j = 0; j < 16; j++)
            buf[j] = uniform_f32(g);
        block_avx(buf);
        for (int j = 0; j < 16; j++)
            out[n - 16 + j] = round_half(buf[j], k);
    }
}

void sampler_rng_randn(sampler_rng *g, int64_t n, noise_kind k, float *out) {
    if (n < 16) {
        /* normal_kernel's serial path: a double sample cast to the dtype; c10's BFloat16 and
         * Half are built from float, so a half value is rounded twice (double->float->half) */
        for (int64_t i = 0; i < n; i++) {
            const float v = (float)normal_f64(g);
            out[i] = k == NOISE_F32 || k == NOISE_F32_SCALAR ? v : round_half(v, k);
        }
        return;
    }
    if (k == NOISE_BF16_F32 || k == NOISE_F16_F32)
        fill_blocks(g, n, k, out);
    else
        fill_in_place(g, n, k, out);
}

void sampler_randn(uint64_t seed, int64_t n, noise_kind k, float *out) {
    sampler_rng g;
    sampler_rng_seed(&g, seed);
    sampler_rng_randn(&g, n, k, out);
}

const char *sampler_noise_name(noise_kind k) {
    switch (k) {
    case NOISE_F32: return "f32";
    case NOISE_F32_SCALAR: return "f32-scalar";
    case NOISE_BF16: return "bf16";
    case NOISE_F16: return "f16";
    case NOISE_BF16_F32: return "bf16-f32";
    case NOISE_F16_F32: return "f16-f32";
    }
    return "?";
}

/* ---- the schedule ---- */

void sampler_config_flux_dev(sampler_config *c) {
    *c = (sampler_config){.shift = 3.0,
                          .dynamic = 1,
                          .linear = 0,
                          .base_shift = 0.5,
                          .max_shift = 1.15,
                          .base_seq = 256,
                          .max_seq = 4096,
                          .num_train = 1000};
}

void sampler_config_flux_schnell(sampler_config *c) {
    sampler_config_flux_dev(c);
    c->shift = 1.0;
    c->dynamic = 0;
}

void sampler_config_sd3(sampler_config *c) {
    sampler_config_flux_schnell(c); /* the SD3.5 repos save the same unused dynamic fields */
    c->shift = 3.0;
}

/* the number at key (null and absent keep *v); ERR_FORMAT if it is something else */
static err json_number(const cJSON *j, const char *key, const char *path, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!it || cJSON_IsNull(it)) return ERR_OK;
    FAIL_IF(!cJSON_IsNumber(it), ERR_FORMAT, "%s: \"%s\" is not a number", path, key);
    *v = it->valuedouble;
    return ERR_OK;
}

static err json_bool(const cJSON *j, const char *key, const char *path, int *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!it || cJSON_IsNull(it)) return ERR_OK;
    FAIL_IF(!cJSON_IsBool(it), ERR_FORMAT, "%s: \"%s\" is not true or false", path, key);
    *v = cJSON_IsTrue(it);
    return ERR_OK;
}

static err json_int(const cJSON *j, const char *key, const char *path, int *v) {
    double d = *v;
    TRY(json_number(j, key, path, &d));
    FAIL_IF(d != floor(d) || d < 1 || d > 1e9, ERR_FORMAT,
            "%s: \"%s\" is %g, expected a positive integer", path, key, d);
    *v = (int)d;
    return ERR_OK;
}

err sampler_config_from_json(const cJSON *j, const char *path, sampler_config *c) {
    FAIL_IF(!cJSON_IsObject(j), ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(j, "_class_name");
    if (cls) {
        FAIL_IF(!cJSON_IsString(cls), ERR_FORMAT, "%s: \"_class_name\" is not a string", path);
        FAIL_IF(strcmp(cls->valuestring, "FlowMatchEulerDiscreteScheduler") != 0, ERR_UNSUPPORTED,
                "%s: scheduler class %s is not supported (FlowMatchEulerDiscreteScheduler is)",
                path, cls->valuestring);
    }
    sampler_config t = *c;
    TRY(json_number(j, "shift", path, &t.shift));
    TRY(json_bool(j, "use_dynamic_shifting", path, &t.dynamic));
    TRY(json_number(j, "base_shift", path, &t.base_shift));
    TRY(json_number(j, "max_shift", path, &t.max_shift));
    TRY(json_int(j, "base_image_seq_len", path, &t.base_seq));
    TRY(json_int(j, "max_image_seq_len", path, &t.max_seq));
    TRY(json_int(j, "num_train_timesteps", path, &t.num_train));
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "time_shift_type");
    if (ts && !cJSON_IsNull(ts)) {
        FAIL_IF(!cJSON_IsString(ts) || (strcmp(ts->valuestring, "exponential") != 0 &&
                                        strcmp(ts->valuestring, "linear") != 0),
                ERR_UNSUPPORTED, "%s: time_shift_type is not \"exponential\" or \"linear\"", path);
        t.linear = strcmp(ts->valuestring, "linear") == 0;
    }
    /* options that change the schedule and that FLUX's configs leave off */
    static const char *const off[] = {"use_karras_sigmas",   "use_exponential_sigmas",
                                      "use_beta_sigmas",     "invert_sigmas",
                                      "stochastic_sampling", "use_flow_sigmas"};
    for (size_t i = 0; i < sizeof off / sizeof *off; i++) {
        int on = 0;
        TRY(json_bool(j, off[i], path, &on));
        FAIL_IF(on, ERR_UNSUPPORTED, "%s: \"%s\": true is not supported", path, off[i]);
    }
    double terminal = 0;
    TRY(json_number(j, "shift_terminal", path, &terminal));
    FAIL_IF(terminal != 0, ERR_UNSUPPORTED, "%s: \"shift_terminal\" is not supported", path);
    FAIL_IF(!(t.shift > 0), ERR_FORMAT, "%s: shift %g is not positive", path, t.shift);
    FAIL_IF(t.dynamic && t.max_seq == t.base_seq, ERR_FORMAT,
            "%s: max_image_seq_len equals base_image_seq_len", path);
    *c = t;
    return ERR_OK;
}

double sampler_flux_mu(const sampler_config *c, int64_t image_seq_len) {
    /* pipeline_flux.py::calculate_shift, Python floats */
    const double m = (c->max_shift - c->base_shift) / (double)(c->max_seq - c->base_seq);
    const double b = c->base_shift - m * (double)c->base_seq;
    return (double)image_seq_len * m + b;
}

/* the shift as a float32 torch tensor op with Python-float scalars: shift and shift - 1 (taken
 * in float64) become float32, each op rounds */
static float shift_f32(const sampler_config *c, float s) {
    const float sh = (float)c->shift, sh1 = (float)(c->shift - 1.0);
    return sh * s / (1.0f + sh1 * s);
}

void sampler_flux_sigmas(const sampler_config *c, int steps, int64_t image_seq_len, float *sigmas) {
    CHECK(steps >= 1);
    /* np.linspace(1.0, 1/n, n) in float64: i * step + start, the last value set to stop (for
     * n = 1 that is [1.0] too) */
    const double start = 1.0, stop = 1.0 / steps;
    const double step = steps > 1 ? (stop - start) / (double)(steps - 1) : 0.0;
    for (int i = 0; i < steps; i++) {
        const double v = i == steps - 1 ? stop : (double)i * step + start;
        sigmas[i] = (float)v; /* set_timesteps: np.array(sigmas).astype(np.float32) */
    }
    /* numpy float32 arrays against Python floats (NEP 50): each scalar becomes a float32
     * first and every operation rounds to float32 */
    if (c->dynamic) {
        const double mu = sampler_flux_mu(c, image_seq_len);
        /* _time_shift_exponential: exp(mu) / (exp(mu) + (1/t - 1) ** 1.0); linear: mu in
         * place of exp(mu) */
        const float e = c->linear ? (float)mu : (float)exp(mu);
        for (int i = 0; i < steps; i++) {
            const float q = 1.0f / sigmas[i] - 1.0f;
            sigmas[i] = e / (e + q);
        }
    } else {
        for (int i = 0; i < steps; i++) /* shift * s / (1 + (shift - 1) * s) */
            sigmas[i] = shift_f32(c, sigmas[i]);
    }
    sigmas[steps] = 0.0f;
}

void sampler_sd3_sigmas(const sampler_config *c, int steps, float *sigmas) {
    CHECK(steps >= 1 && !c->dynamic && c->num_train >= 1);
    /* FlowMatchEulerDiscreteScheduler.__init__: the training sigmas linspace(1, N, N) / N in
     * float32, shifted in float32; only the first (t = N: N / N = 1) and the last (t = 1) are
     * kept, as sigma_max and sigma_min (Python floats, exact) */
    const double sigma_max = shift_f32(c, 1.0f),
                 sigma_min = shift_f32(c, 1.0f / (float)c->num_train);
    /* set_timesteps(steps): np.linspace(sigma_max * N, sigma_min * N, steps) in float64 (the
     * _sigma_to_t products are Python floats): i * step + start, each op rounded, the last
     * value set to stop when steps > 1 */
    const double n_d = (double)c->num_train;
    const double start = sigma_max * n_d, stop = sigma_min * n_d;
    const double step = steps > 1 ? (stop - start) / (double)(steps - 1) : 0.0;
    const double sh = c->shift, sh1 = c->shift - 1.0;
    for (int i = 0; i < steps; i++) {
        const double t = steps > 1 && i == steps - 1 ? stop : (double)i * step + start;
        /* timesteps / N, then the second shift, all float64 numpy; then .to(float32) */
        const double s = t / n_d;
        sigmas[i] = (float)(sh * s / (1.0 + sh1 * s));
    }
    sigmas[steps] = 0.0f;
}

void sampler_timesteps(const sampler_config *c, int steps, const float *sigmas, float *timesteps) {
    const float n = (float)c->num_train;
    for (int i = 0; i < steps; i++)
        timesteps[i] = sigmas[i] * n;
}
