/* ops_cpu.c: the CPU reference of every op (ops.h): fp32 activations, weights of any float
 * type upcast, accumulation in fp32 (sums of squares and means in double, so the reference is
 * closer to exact than any backend it checks). Plain loops, OpenMP over rows; each op names
 * the reference it mirrors. Shapes were checked by ops.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/ops_internal.h"

/* n elements of t starting at element offset off, as floats */
static void load_f32(const tensor *t, int64_t off, int64_t n, float *dst) {
    half_widen(t->dt, (const char *)t->data + off * (dtype_bits(t->dt) / 8), n, dst);
}

static float *f32(const tensor *t) {
    CHECK(t->dt == DTYPE_F32);
    return (float *)t->data;
}

/* a small vector parameter (norm weights, biases) as floats; caller frees */
static float *vec_f32(const tensor *t) {
    int64_t n = tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    CHECK(v);
    load_f32(t, 0, n, v);
    return v;
}

static float act(float x, op_act a) {
    switch (a) {
    case OP_ACT_NONE: return x;
    case OP_ACT_GELU_TANH: /* torch.nn.functional.gelu(approximate="tanh") */
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case OP_ACT_GELU_ERF: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case OP_ACT_SILU: return x / (1.0f + expf(-x));
    case OP_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x)); /* transformers QuickGELU */
    }
    return x;
}

/* torch.nn.Linear: out = x w^T + b, then the activation */
void opcpu_linear(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, op_act a) {
    (void)c;
    int64_t xs, os, M = tensor_rows(&x, &xs), K = x.shape[x.ndim - 1], N = w.shape[0];
    tensor_rows(&out, &os);
    float *o = f32(&out), *b = bias ? vec_f32(bias) : NULL;
    const float *xp = f32(&x);
#pragma omp parallel
    {
        float *wr = malloc((size_t)K * sizeof *wr);
        CHECK(wr);
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            load_f32(&w, n * K, K, wr);
            for (int64_t m = 0; m < M; m++) {
                const float *xr = xp + m * xs;
                float s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += xr[k] * wr[k];
                o[m * os + n] = act(s + (b ? b[n] : 0.0f), a);
            }
        }
        free(wr);
    }
    free(b);
}

void opcpu_act_apply(op_ctx *c, tensor out, tensor x, op_act a) {
    (void)c;
    int64_t n = tensor_numel(&x);
    float *o = f32(&out);
    const float *xp = f32(&x);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        o[i] = act(xp[i], a);
}

/* transformers T5DenseGatedActDense: gelu_new(wi_0 x) * (wi_1 x) */
void opcpu_gated_gelu(op_ctx *c, tensor out, tensor a, tensor b) {
    (void)c;
    int64_t as, bs, rows = tensor_rows(&a, &as), D = a.shape[a.ndim - 1];
    tensor_rows(&b, &bs);
    float *o = f32(&out);
    const float *ap = f32(&a), *bp = f32(&b);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < D; i++)
            o[r * D + i] = act(ap[r * as + i], OP_ACT_GELU_TANH) * bp[r * bs + i];
}

void opcpu_add(op_ctx *c, tensor out, tensor a, tensor b) {
    (void)c;
    int64_t n = tensor_numel(&a);
    float *o = f32(&out);
    const float *ap = f32(&a), *bp = f32(&b);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        o[i] = ap[i] + bp[i];
}

/* mean and 1/sqrt(var + eps) of n floats (biased variance, as torch.nn.LayerNorm) */
static void moments(const float *x, int64_t n, float eps, float *mean, float *rstd) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    double mu = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        ss += ((double)x[i] - mu) * ((double)x[i] - mu);
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(ss / (double)n + eps));
}

/* torch.nn.LayerNorm(C, eps, elementwise_affine = w != NULL) */
void opcpu_layernorm(op_ctx *c, tensor out, tensor x, const tensor *w, const tensor *b, float eps) {
    (void)c;
    int64_t xs, rows = tensor_rows(&x, &xs), C = x.shape[x.ndim - 1];
    float *o = f32(&out), *wv = w ? vec_f32(w) : NULL, *bv = b ? vec_f32(b) : NULL;
    const float *xp = f32(&x);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float mu, rs;
        moments(xp + r * xs, C, eps, &mu, &rs);
        for (int64_t i = 0; i < C; i++) {
            float y = (xp[r * xs + i] - mu) * rs;
            o[r * C + i] = y * (wv ? wv[i] : 1.0f) + (bv ? bv[i] : 0.0f);
        }
    }
    free(wv);
    free(bv);
}

/* diffusers AdaLayerNormZero / FluxTransformerBlock: norm(x) * (1 + scale[:, None]) + shift */
void opcpu_layernorm_modulate(op_ctx *c, tensor out, tensor x, tensor shift, tensor scale,
                              float eps) {
    (void)c;
    const int64_t B = x.shape[0], N = x.shape[1], C = x.shape[2];
    float *o = f32(&out);
    const float *xp = f32(&x), *sh = f32(&shift), *sc = f32(&scale);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = xp + (bi * N + n) * C;
            const float *shr = sh + bi * shift.stride[0], *scr = sc + bi * scale.stride[0];
            float mu, rs;
            moments(xr, C, eps, &mu, &rs);
            for (int64_t i = 0; i < C; i++)
                o[(bi * N + n) * C + i] = (xr[i] - mu) * rs * (1.0f + scr[i]) + shr[i];
        }
}

/* torch.nn.RMSNorm / diffusers RMSNorm / transformers T5LayerNorm: x rsqrt(mean(x^2) + eps) w */
/* one row: x / sqrt(mean(x^2) + eps) * w, the sum in double (o may be x) */
static void rms_row(float *o, const float *x, const float *w, int64_t D, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < D; i++)
        ss += (double)x[i] * x[i];
    const float rs = (float)(1.0 / sqrt(ss / (double)D + eps));
    for (int64_t i = 0; i < D; i++)
        o[i] = x[i] * rs * w[i];
}

void opcpu_rmsnorm(op_ctx *c, tensor out, tensor x, tensor w, float eps) {
    (void)c;
    int64_t xs, os, rows = tensor_rows(&x, &xs), D = x.shape[x.ndim - 1];
    tensor_rows(&out, &os);
    float *o = f32(&out), *wv = vec_f32(&w);
    const float *xp = f32(&x);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        rms_row(o + r * os, xp + r * xs, wv, D, eps);
    free(wv);
}

/* In fp32 the two roundings of T5LayerNorm / diffusers RMSNorm are no-ops: the same as above. */
void opcpu_rmsnorm2(op_ctx *c, tensor out, tensor x, tensor w, float eps) {
    opcpu_rmsnorm(c, out, x, w, eps);
}

/* FLUX's attention.norm_q / norm_k then apply_rotary_emb: the two ops in turn */
void opcpu_rmsnorm_rope(op_ctx *c, tensor x, tensor w, float eps, tensor cos, tensor sin) {
    ops_rmsnorm_heads(c, x, w, eps, opcpu_rmsnorm);
    opcpu_rope(c, x, cos, sin);
}

void opcpu_rmsnorm2_heads(op_ctx *c, tensor x, tensor w, float eps) {
    (void)c;
    const int64_t B = x.shape[0], L = x.shape[1], H = x.shape[2], D = x.shape[3];
    float *p = f32(&x), *wv = vec_f32(&w);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++)
            for (int64_t h = 0; h < H; h++) {
                float *r = p + b * x.stride[0] + t * x.stride[1] + h * x.stride[2];
                rms_row(r, r, wv, D, eps);
            }
    free(wv);
}

void opcpu_scale_shift(op_ctx *c, tensor out, tensor x, float mul, float add) {
    (void)c;
    int64_t n = tensor_numel(&x);
    float *o = f32(&out);
    const float *xp = f32(&x);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        o[i] = xp[i] * mul + add;
}

/* StableDiffusion3Pipeline's guidance in an fp32 pipeline: base + g (pos - neg) */
void opcpu_guidance(op_ctx *c, tensor out, tensor base, tensor pos, tensor neg, float g) {
    (void)c;
    int64_t n = tensor_numel(&base);
    float *o = f32(&out);
    const float *bp = f32(&base), *pp = f32(&pos), *np = f32(&neg);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        o[i] = bp[i] + g * (pp[i] - np[i]);
}

/* FlowMatchEulerDiscreteScheduler.step in an fp32 pipeline: x + dt * v */
void opcpu_euler_step(op_ctx *c, tensor x, tensor v, float dt) {
    (void)c;
    int64_t n = tensor_numel(&x);
    float *xp = f32(&x);
    const float *vp = f32(&v);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        xp[i] = xp[i] + dt * vp[i];
}

/* torch.nn.GroupNorm(groups, C, eps), then SiLU (diffusers ResnetBlock2D's norm + act) */
void opcpu_groupnorm(op_ctx *c, tensor out, tensor x, tensor w, tensor b, int groups, float eps,
                     int silu) {
    (void)c;
    const int64_t B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3], cg = C / groups;
    float *o = f32(&out), *wv = vec_f32(&w), *bv = vec_f32(&b);
    const float *xp = f32(&x);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t g = 0; g < groups; g++) {
            const int64_t base = (bi * C + g * cg) * HW;
            float mu, rs;
            moments(xp + base, cg * HW, eps, &mu, &rs);
            for (int64_t ch = 0; ch < cg; ch++) {
                const int64_t cc = g * cg + ch;
                for (int64_t i = 0; i < HW; i++) {
                    float y = (xp[base + ch * HW + i] - mu) * rs * wv[cc] + bv[cc];
                    o[base + ch * HW + i] = silu ? act(y, OP_ACT_SILU) : y;
                }
            }
        }
    free(wv);
    free(bv);
}

/* x = x + gate[:, None] * y */
void opcpu_gate_residual(op_ctx *c, tensor x, tensor gate, tensor y) {
    (void)c;
    const int64_t B = x.shape[0], N = x.shape[1], C = x.shape[2];
    int64_t ys;
    tensor_rows(&y, &ys);
    float *xp = f32(&x);
    const float *g = f32(&gate), *yp = f32(&y);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < C; i++)
                xp[(bi * N + n) * C + i] += g[bi * gate.stride[0] + i] * yp[(bi * N + n) * ys + i];
}

/* diffusers apply_rotary_emb(use_real=True, use_real_unbind_dim=-1): adjacent pairs */
void opcpu_rope(op_ctx *c, tensor x, tensor cos, tensor sin) {
    (void)c;
    const int64_t B = x.shape[0], L = x.shape[1], H = x.shape[2], D = x.shape[3];
    float *xp = f32(&x);
    const float *cp = f32(&cos), *sp = f32(&sin);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t h = 0; h < H; h++) {
                float *v = xp + bi * x.stride[0] + l * x.stride[1] + h * x.stride[2];
                for (int64_t m = 0; m < D; m += 2) {
                    float c0 = cp[l * D + m], s0 = sp[l * D + m], a = v[m], b = v[m + 1];
                    v[m] = a * c0 - b * s0;
                    v[m + 1] = b * c0 + a * s0;
                }
            }
}

static void softmax_row(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (x[i] = expf(x[i] - mx));
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(x[i] / s);
}

void opcpu_softmax(op_ctx *c, tensor out, tensor x) {
    (void)c;
    int64_t rows = tensor_rows(&x, NULL), n = x.shape[x.ndim - 1];
    float *o = f32(&out);
    const float *xp = f32(&x);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        if (o != xp) memcpy(o + r * n, xp + r * n, (size_t)n * 4);
        softmax_row(o + r * n, n);
    }
}

/* torch.nn.functional.scaled_dot_product_attention on [B,H,L,D] (here [B,L,H,D]), plus the
 * additive bias T5 passes as its mask and the causal mask CLIP builds */
void opcpu_attention(op_ctx *c, tensor out, tensor q, tensor k, tensor v, const tensor *bias,
                     float scale, int causal) {
    (void)c;
    const int64_t B = q.shape[0], Lq = q.shape[1], H = q.shape[2], D = q.shape[3];
    const int64_t Lk = k.shape[1];
    float *o = f32(&out);
    const float *qp = f32(&q), *kp = f32(&k), *vp = f32(&v), *bp = bias ? f32(bias) : NULL;
#pragma omp parallel
    {
        float *p = malloc((size_t)Lk * sizeof *p);
        CHECK(p);
#pragma omp for collapse(3) schedule(static)
        for (int64_t bi = 0; bi < B; bi++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < Lq; i++) {
                    const float *qr = qp + bi * q.stride[0] + i * q.stride[1] + h * q.stride[2];
                    int64_t n = causal ? (i + 1 < Lk ? i + 1 : Lk) : Lk;
                    for (int64_t j = 0; j < n; j++) {
                        const float *kr = kp + bi * k.stride[0] + j * k.stride[1] + h * k.stride[2];
                        float s = 0;
                        for (int64_t d = 0; d < D; d++)
                            s += qr[d] * kr[d];
                        p[j] = s * scale + (bp ? bp[(h * Lq + i) * Lk + j] : 0.0f);
                    }
                    softmax_row(p, n);
                    float *orow = o + bi * out.stride[0] + i * out.stride[1] + h * out.stride[2];
                    for (int64_t d = 0; d < D; d++)
                        orow[d] = 0;
                    for (int64_t j = 0; j < n; j++) {
                        const float *vr = vp + bi * v.stride[0] + j * v.stride[1] + h * v.stride[2];
                        for (int64_t d = 0; d < D; d++)
                            orow[d] += p[j] * vr[d];
                    }
                }
        free(p);
    }
}

/* torch.nn.functional.conv2d after F.pad(x, (left, right, top, bottom)) */
void opcpu_conv2d(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias, int s,
                  const int pad[4]) {
    (void)c;
    const int64_t B = x.shape[0], Ci = x.shape[1], H = x.shape[2], W = x.shape[3];
    const int64_t Co = w.shape[0], kh = w.shape[2], kw = w.shape[3];
    const int64_t Ho = out.shape[2], Wo = out.shape[3];
    float *o = f32(&out), *bv = bias ? vec_f32(bias) : NULL;
    const float *xp = f32(&x);
#pragma omp parallel
    {
        float *wk = malloc((size_t)(Ci * kh * kw) * sizeof *wk);
        CHECK(wk);
#pragma omp for collapse(2) schedule(static)
        for (int64_t bi = 0; bi < B; bi++)
            for (int64_t co = 0; co < Co; co++) {
                load_f32(&w, co * Ci * kh * kw, Ci * kh * kw, wk);
                float *op = o + (bi * Co + co) * Ho * Wo;
                for (int64_t y = 0; y < Ho; y++)
                    for (int64_t xo = 0; xo < Wo; xo++) {
                        float acc = bv ? bv[co] : 0.0f;
                        for (int64_t ci = 0; ci < Ci; ci++)
                            for (int64_t dy = 0; dy < kh; dy++) {
                                int64_t yi = y * s + dy - pad[0];
                                if (yi < 0 || yi >= H) continue;
                                const float *xr = xp + ((bi * Ci + ci) * H + yi) * W;
                                const float *wr = wk + (ci * kh + dy) * kw;
                                for (int64_t dx = 0; dx < kw; dx++) {
                                    int64_t xi = xo * s + dx - pad[2];
                                    if (xi >= 0 && xi < W) acc += xr[xi] * wr[dx];
                                }
                            }
                        op[y * Wo + xo] = acc;
                    }
            }
        free(wk);
    }
    free(bv);
}

/* torch.nn.functional.interpolate(scale_factor=2, mode="nearest") */
void opcpu_upsample2x(op_ctx *c, tensor out, tensor x) {
    (void)c;
    const int64_t BC = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3];
    float *o = f32(&out);
    const float *xp = f32(&x);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < BC; p++)
        for (int64_t y = 0; y < 2 * H; y++)
            for (int64_t xo = 0; xo < 2 * W; xo++)
                o[(p * 2 * H + y) * 2 * W + xo] = xp[(p * H + y / 2) * W + xo / 2];
}

void opcpu_embedding(op_ctx *c, tensor out, tensor table, const int32_t *ids) {
    (void)c;
    int64_t rows = tensor_rows(&out, NULL), D = out.shape[out.ndim - 1];
    float *o = f32(&out);
    for (int64_t r = 0; r < rows; r++)
        load_f32(&table, (int64_t)ids[r] * D, D, o + r * D);
}

/* diffusers embeddings.get_timestep_embedding, in fp32 as torch computes it */
void opcpu_timestep_embedding(op_ctx *c, tensor out, const float *t, int flip, float shift,
                              float scale, float max_period) {
    (void)c;
    const int64_t B = out.shape[0], dim = out.shape[1], half = dim / 2;
    float *o = f32(&out);
    const float lmp = (float)-log((double)max_period);
    for (int64_t bi = 0; bi < B; bi++) {
        float *r = o + bi * dim;
        for (int64_t k = 0; k < half; k++) {
            float e = expf(lmp * (float)k / ((float)half - shift));
            float a = scale * (t[bi] * e);
            r[flip ? half + k : k] = sinf(a);
            r[flip ? k : half + k] = cosf(a);
        }
        if (dim % 2) r[dim - 1] = 0;
    }
}

/* element (i0, i1, i2, i3) of a view, as an offset in elements */
static int64_t offset_of(const tensor *t, const int64_t *i) {
    int64_t o = 0;
    for (int d = 0; d < t->ndim; d++)
        o += i[d] * t->stride[d];
    return o;
}

void opcpu_copy(op_ctx *c, tensor dst, tensor src) {
    (void)c;
    const int64_t n = tensor_numel(&dst), inner = dst.shape[dst.ndim - 1];
    const int64_t rows = inner ? n / inner : 0;
#pragma omp parallel
    {
        float *buf = malloc((size_t)(inner ? inner : 1) * sizeof *buf);
        CHECK(buf);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int64_t idx[TENSOR_MAX_DIMS] = {0}, rem = r;
            for (int d = dst.ndim - 2; d >= 0; d--) {
                idx[d] = rem % dst.shape[d];
                rem /= dst.shape[d];
            }
            const int64_t so = offset_of(&src, idx), dof = offset_of(&dst, idx);
            const int64_t ss = src.stride[src.ndim - 1], ds = dst.stride[dst.ndim - 1];
            for (int64_t i = 0; i < inner; i++)
                load_f32(&src, so + i * ss, 1, buf + i);
            for (int64_t i = 0; i < inner; i++) {
                switch (dst.dt) {
                case DTYPE_F32: ((float *)dst.data)[dof + i * ds] = buf[i]; break;
                case DTYPE_BF16: ((uint16_t *)dst.data)[dof + i * ds] = f32_to_bf16(buf[i]); break;
                case DTYPE_F16: ((uint16_t *)dst.data)[dof + i * ds] = f32_to_f16(buf[i]); break;
                default: CHECK(!"op_copy: unsupported dtype");
                }
            }
        }
        free(buf);
    }
}

/* Moves between an image [B,C,H,W] and its p x p patches as tokens [B,(H/p)(W/p),p p C]; the
 * feature index of (c, dy, dx) is (c p + dy) p + dx when channels_first (FLUX packing), else
 * (dy p + dx) C + c (SD3's unpatchify). */
static void patch_move(float *img, float *tok, const tensor *im, int p, int channels_first,
                       int to_tokens) {
    const int64_t B = im->shape[0], C = im->shape[1], H = im->shape[2], W = im->shape[3];
    const int64_t w = W / p, n_tok = (H / p) * w, F = (int64_t)p * p * C;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    const int64_t dy = y % p, dx = x % p, t = (y / p) * w + x / p;
                    const int64_t f =
                        channels_first ? (ch * p + dy) * p + dx : (dy * p + dx) * C + ch;
                    float *a = img + ((bi * C + ch) * H + y) * W + x,
                          *b = tok + (bi * n_tok + t) * F + f;
                    if (to_tokens)
                        *b = *a;
                    else
                        *a = *b;
                }
}

/* diffusers FluxPipeline._pack_latents */
void opcpu_pack2x2(op_ctx *c, tensor out, tensor x) {
    (void)c;
    patch_move(f32(&x), f32(&out), &x, 2, 1, 1);
}

/* diffusers FluxPipeline._unpack_latents */
void opcpu_unpack2x2(op_ctx *c, tensor out, tensor x) {
    (void)c;
    patch_move(f32(&out), f32(&x), &out, 2, 1, 0);
}

/* diffusers SD3Transformer2DModel.forward's unpatchify (einsum "nhwpqc->nchpwq") */
void opcpu_unpatchify(op_ctx *c, tensor out, tensor x, int p) {
    (void)c;
    patch_move(f32(&out), f32(&x), &out, p, 0, 0);
}
