/* sampler: the initial noise (torch.randn on a seeded CPU torch.Generator, bit for bit) and the
 * flow-matching schedule (diffusers FlowMatchEulerDiscreteScheduler as FluxPipeline and
 * StableDiffusion3Pipeline drive it).
 * Spec: docs/MODEL-SPEC.md §6.1 (schedule), §6.5 and §6.6 (noise). The Euler step itself is
 * op_euler_step (core/ops.h). Everything here is host code and owns no memory. */
#ifndef UNET_DIT_SAMPLER_H
#define UNET_DIT_SAMPLER_H

#include <stdint.h>

#include "core/err.h"

struct cJSON;

/* Which torch.randn arithmetic to reproduce. Values are returned as floats that the named dtype
 * holds exactly. The float32 kernels use glibc's libm where torch does (x86-64 Linux wheels).
 * "legacy" half kinds: torch up to 2.11 at least (docs/MODEL-SPEC.md §6.6 (C): Box-Muller computed
 * in the half type). The *_F32 half kinds: newer torch (2.15 checked), which computes in float32
 * with the SIMD kernel and rounds, drawing 16 uniforms per block. */
typedef enum noise_kind {
    NOISE_F32,        /* float32, torch's AVX2/AVX-512 kernel (any recent x86 CPU) */
    NOISE_F32_SCALAR, /* float32, torch's default no-SIMD kernel (ATEN_CPU_CAPABILITY=default) */
    NOISE_BF16,       /* bfloat16, legacy torch (arithmetic in bf16) */
    NOISE_F16,        /* float16, legacy torch (arithmetic in fp16) */
    NOISE_BF16_F32,   /* bfloat16, newer torch: the float32 AVX2 kernel, rounded */
    NOISE_F16_F32,    /* float16, newer torch: the float32 AVX2 kernel, rounded */
} noise_kind;

/* A CPU torch.Generator: ATen's mt19937 and its cached second Box-Muller sample (used by the
 * n < 16 path), so that several draws from one generator (img2img) continue its stream. */
typedef struct sampler_rng {
    uint32_t s[624];
    int left, next;
    int has_normal;
    double normal;
} sampler_rng;

/* generator.manual_seed(seed): only the low 32 bits count, as in ATen. */
void sampler_rng_seed(sampler_rng *g, uint64_t seed);
/* out[n] = torch.randn(n, generator=g, dtype=...) in flat C order, advancing g. */
void sampler_rng_randn(sampler_rng *g, int64_t n, noise_kind k, float *out);
/* The same from a fresh generator: manual_seed(seed), then one randn of n values. */
void sampler_randn(uint64_t seed, int64_t n, noise_kind k, float *out);
/* A short name for a kind ("f32", "f32-scalar", "bf16", "f16", "bf16-f32", "f16-f32"). */
const char *sampler_noise_name(noise_kind k);

/* FlowMatchEulerDiscreteScheduler's config, the fields FLUX uses. The shifts are doubles
 * because diffusers computes mu and shift - 1 in float64 from the JSON values. */
typedef struct sampler_config {
    double shift; /* static shift (no dynamic shifting): shift s / (1 + (shift-1) s) */
    int dynamic;  /* use_dynamic_shifting: resolution-dependent mu */
    int linear;   /* time_shift_type "linear" (default "exponential") */
    double base_shift, max_shift;
    int base_seq, max_seq; /* base_image_seq_len, max_image_seq_len */
    int num_train;         /* num_train_timesteps: timestep = sigma * num_train */
} sampler_config;

void sampler_config_flux_dev(sampler_config *c);     /* shift 3, dynamic, 0.5..1.15, 256..4096 */
void sampler_config_flux_schnell(sampler_config *c); /* shift 1, not dynamic */
void sampler_config_sd3(sampler_config *c);          /* shift 3, not dynamic (SD3.5 repos) */
/* Reads a diffusers scheduler/scheduler_config.json (parsed, borrowed); missing or null keys
 * keep c's values. Another class, or an option that changes the schedule and is not handled
 * (karras/exponential/beta sigmas, shift_terminal, invert_sigmas, stochastic sampling), gives
 * ERR_UNSUPPORTED naming path. */
err sampler_config_from_json(const struct cJSON *j, const char *path, sampler_config *c);

/* FluxPipeline's calculate_shift, in float64: mu for image_seq_len packed tokens. */
double sampler_flux_mu(const sampler_config *c, int64_t image_seq_len);
/* sigmas[steps + 1] (terminal 0) as FluxPipeline + set_timesteps(sigmas=linspace(1, 1/n, n),
 * mu) compute them in float32, bit-exact; image_seq_len = (H/16)(W/16). steps >= 1. */
void sampler_flux_sigmas(const sampler_config *c, int steps, int64_t image_seq_len, float *sigmas);
/* sigmas[steps + 1] (terminal 0) as StableDiffusion3Pipeline + set_timesteps(steps) compute
 * them, bit-exact for any static shift: shifted twice (docs/MODEL-SPEC.md §6.1). c->dynamic must be
 * 0 (a config with use_dynamic_shifting is the caller's to reject). steps >= 1. */
void sampler_sd3_sigmas(const sampler_config *c, int steps, float *sigmas);
/* timesteps[i] = sigmas[i] * num_train in float32, i < steps (the scheduler's timesteps). */
void sampler_timesteps(const sampler_config *c, int steps, const float *sigmas, float *timesteps);

#endif
