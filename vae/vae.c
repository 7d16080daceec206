/* vae: the AutoencoderKL decoder (vae.h) as a straight sequence of ops, mirroring diffusers
 * models/autoencoders/vae.py::Decoder.forward and the blocks it calls. Every op output is its
 * own rounding point on CUDA (BF16), as in eager PyTorch; the CPU path is fp32 throughout.
 *
 * Weights come in n_levels + 2 blocks, each a struct of named fields bound through wbind: 0 =
 * conv_in and the mid block, 1 + i = up_blocks.i, n_levels + 1 = conv_norm_out and conv_out
 * (up to VAE_MAX_RESNETS resnets an up block). Activations live in three planned buffers
 * (X: the running tensor; T1, T2: temporaries), each sized by plan_needs for the largest
 * tensor it holds at the planned resolution; vae_decode allocates nothing. */
#include "vae/vae.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "weights/wbind.h"

#define VAE_EPS 1e-6f /* GroupNorm eps everywhere in the decoder */
#define NAME_LEN 96

/* the activation buffers */
enum { BX, BT1, BT2, NBUF };

#define VAE_MAX_RESNETS 8 /* resnets in an up block (layers_per_block + 1) the structs hold */

/* The weights, in diffusers names with the original (LDM/BFL) ones in brackets. A
 * ResnetBlock2D from Ci to Co channels: */
typedef struct vae_resnet_w {
    tensor n1_w, n1_b; /* norm1 [Ci], [Ci] */
    tensor c1_w, c1_b; /* conv1 [Co, Ci, 3, 3], [Co] */
    tensor n2_w, n2_b; /* norm2 [Co], [Co] */
    tensor c2_w, c2_b; /* conv2 [Co, Co, 3, 3], [Co] */
    tensor sc_w, sc_b; /* conv_shortcut (nin_shortcut) [Co, Ci, 1, 1], [Co]: required and used
                          only where Ci != Co */
} vae_resnet_w;

/* mid_block.attentions.0 (mid.attn_1): one head over C channels */
typedef struct vae_attn_w {
    tensor norm_w, norm_b; /* group_norm (norm) [C], [C] */
    tensor q_w, q_b;       /* to_q (q) [C, C], [C]; the original's 1x1 convs [C, C, 1, 1]
                              match [C, C] in wt_blocks */
    tensor k_w, k_b;       /* to_k (k) [C, C], [C] */
    tensor v_w, v_b;       /* to_v (v) [C, C], [C] */
    tensor o_w, o_b;       /* to_out.0 (proj_out) [C, C], [C] */
} vae_attn_w;

/* block 0: conv_in and the mid block, at C = ch[n_levels - 1] channels */
typedef struct vae_mid_w {
    tensor in_w, in_b; /* decoder.conv_in [C, latent, 3, 3], [C] */
    vae_resnet_w res0; /* mid_block.resnets.0 (mid.block_1) */
    vae_attn_w attn;   /* without mid_block_add_attention: not listed */
    vae_resnet_w res1; /* mid_block.resnets.1 (mid.block_2) */
} vae_mid_w;

/* block 1 + i: up_blocks.i (up.(n_levels - 1 - i)), to Co = ch[n_levels - 1 - i] channels */
typedef struct vae_up_w {
    vae_resnet_w res[VAE_MAX_RESNETS]; /* resnets.0 .. layers_per_block (block.j) */
    tensor up_w, up_b;                 /* upsamplers.0.conv (upsample.conv) [Co, Co, 3, 3], [Co];
                                          not on the last level */
} vae_up_w;

/* block n_levels + 1, at C = ch[0] channels */
typedef struct vae_out_w {
    tensor norm_w, norm_b; /* conv_norm_out (norm_out) [C], [C] */
    tensor out_w, out_b;   /* conv_out [out_channels, C, 3, 3], [out_channels] */
} vae_out_w;

#define VAE_MAX_W (10 * VAE_MAX_RESNETS + 2) /* tensors in the largest block (an up block) */

struct vae_model {
    vae_config cfg;
    op_ctx *ctx;
    wbind_table wb; /* the blocks above */
    int names;      /* scheme: the names the file uses */
    int64_t n_params;
    /* plan */
    int64_t h, wd; /* latent height and width planned for, 0 before vae_plan */
    void *act;     /* one allocation holding the three buffers */
    void *buf[NBUF];
    int64_t cap[NBUF]; /* elements each */
    size_t act_bytes;
};

/* ---- names (docs/MODEL-SPEC.md §3.6) ---- */

typedef enum scheme { NAMES_DIFFUSERS, NAMES_LDM } scheme;

/* prefix of a resnet: level -1 is the mid block (j = 0, 1), else up_blocks.level.resnets.j */
static void resnet_prefix(char *b, scheme s, int n_levels, int level, int j) {
    if (level < 0 && s == NAMES_LDM)
        snprintf(b, NAME_LEN, "decoder.mid.block_%d.", j + 1);
    else if (level < 0)
        snprintf(b, NAME_LEN, "decoder.mid_block.resnets.%d.", j);
    else if (s == NAMES_LDM)
        snprintf(b, NAME_LEN, "decoder.up.%d.block.%d.", n_levels - 1 - level, j);
    else
        snprintf(b, NAME_LEN, "decoder.up_blocks.%d.resnets.%d.", level, j);
}

static const char *attn_prefix(scheme s) {
    return s == NAMES_LDM ? "decoder.mid.attn_1." : "decoder.mid_block.attentions.0.";
}

/* prefix of the upsampler of level, whose conv is "conv" */
static void upsample_prefix(char *b, scheme s, int n_levels, int level) {
    if (s == NAMES_LDM)
        snprintf(b, NAME_LEN, "decoder.up.%d.upsample.", n_levels - 1 - level);
    else
        snprintf(b, NAME_LEN, "decoder.up_blocks.%d.upsamplers.0.", level);
}

static const char *scheme_name(scheme s) { return s == NAMES_LDM ? "original" : "diffusers"; }

/* Finds the decoder under "", "vae." or "first_stage_model." and which names it uses. */
static err detect_names(wt_source *src, scheme *s) {
    static const char *const prefixes[] = {"", "vae.", "first_stage_model."};
    size_t i = 0;
    for (; i < sizeof prefixes / sizeof *prefixes; i++) {
        wt_set_prefix(src, prefixes[i]);
        if (wt_find(src, "decoder.conv_in.weight")) break;
    }
    FAIL_IF(i == sizeof prefixes / sizeof *prefixes, ERR_FORMAT,
            "%s: no VAE decoder: tensor 'decoder.conv_in.weight' is missing (also looked for it "
            "under 'vae.' and 'first_stage_model.')",
            wt_path(src));
    *s = wt_find(src, "decoder.mid.block_1.conv1.weight") ? NAMES_LDM : NAMES_DIFFUSERS;
    /* AutoencoderKL._decode applies post_quant_conv first where the model has one (SD1/SDXL
       VAEs); FLUX and SD3.5 have none (use_post_quant_conv false) */
    FAIL_IF(wt_find(src, "post_quant_conv.weight"), ERR_UNSUPPORTED,
            "%s: the VAE has a post_quant_conv (an SD1/SDXL-style VAE); only the FLUX/SD3.5 "
            "decoder without one is supported",
            wt_path(src));
    return ERR_OK;
}

/* ---- config ---- */

/* diffusers AutoencoderKL.__init__'s defaults for absent keys (shift_factor None = 0) */
static err config_from_json(const cJSON *j, const char *path, vae_config *c) {
    int64_t latent = 4, out = 3, groups = 32, layers = 1;
    c->scaling_factor = 0.18215f;
    c->shift_factor = 0.0f;
    TRY(wt_config_int(j, "latent_channels", path, &latent));
    TRY(wt_config_int(j, "out_channels", path, &out));
    TRY(wt_config_int(j, "norm_num_groups", path, &groups));
    TRY(wt_config_int(j, "layers_per_block", path, &layers));
    TRY(wt_config_float(j, "scaling_factor", path, &c->scaling_factor));
    TRY(wt_config_float(j, "shift_factor", path, &c->shift_factor));
    c->latent_channels = (int)latent;
    c->out_channels = (int)out;
    c->groups = (int)groups;
    c->layers_per_block = (int)layers;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "mid_block_add_attention");
    c->mid_attention = a ? cJSON_IsTrue(a) : 1;
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "block_out_channels");
    if (!ch) {
        c->n_levels = 1;
        c->ch[0] = 64;
        return ERR_OK;
    }
    FAIL_IF(!cJSON_IsArray(ch), ERR_FORMAT, "%s: block_out_channels is not an array", path);
    c->n_levels = cJSON_GetArraySize(ch);
    FAIL_IF(c->n_levels < 1 || c->n_levels > VAE_MAX_LEVELS, ERR_UNSUPPORTED,
            "%s: %d entries in block_out_channels; 1 to %d supported", path, c->n_levels,
            VAE_MAX_LEVELS);
    for (int i = 0; i < c->n_levels; i++) {
        const cJSON *v = cJSON_GetArrayItem(ch, i);
        FAIL_IF(!cJSON_IsNumber(v), ERR_FORMAT, "%s: block_out_channels[%d] is not a number", path,
                i);
        c->ch[i] = (int64_t)v->valuedouble;
    }
    return ERR_OK;
}

/* From the tensors alone (single files): levels, channels and layers from the up blocks'
 * shapes; 32 groups and FLUX's scaling as the spec documents for ae.safetensors. */
static err config_from_shapes(const wt_source *src, scheme s, vae_config *c) {
    char p[NAME_LEN], n[2 * NAME_LEN];
    const df11_tensor *cin = wt_find(src, "decoder.conv_in.weight");
    const df11_tensor *cout = wt_find(src, "decoder.conv_out.weight");
    FAIL_IF(cin->ndim != 4, ERR_FORMAT,
            "%s: tensor 'decoder.conv_in.weight' has %d dims, 4 expected", wt_path(src), cin->ndim);
    FAIL_IF(!cout || cout->ndim != 4, ERR_FORMAT,
            "%s: tensor 'decoder.conv_out.weight' is missing or not 4-D", wt_path(src));
    c->latent_channels = (int)cin->shape[1];
    c->out_channels = (int)cout->shape[0];
    c->groups = 32;
    c->scaling_factor = 0.3611f;
    c->shift_factor = 0.1159f;
    c->mid_attention =
        wt_find(src, s == NAMES_LDM ? "decoder.mid.attn_1.norm.weight"
                                    : "decoder.mid_block.attentions.0.group_norm.weight") != NULL;
    /* count the levels by their stored index (the original names number them up.0 .. up.(n-1)
       as well, in reverse) */
    int levels = 0;
    for (; levels < VAE_MAX_LEVELS; levels++) {
        snprintf(n, sizeof n,
                 s == NAMES_LDM ? "decoder.up.%d.block.0.conv1.weight"
                                : "decoder.up_blocks.%d.resnets.0.conv1.weight",
                 levels);
        if (!wt_find(src, n)) break;
    }
    FAIL_IF(levels == 0, ERR_FORMAT, "%s: no decoder up blocks (tensor '%s' is missing)",
            wt_path(src), n);
    c->n_levels = levels;
    for (int i = 0; i < levels; i++) {
        resnet_prefix(p, s, levels, i, 0);
        snprintf(n, sizeof n, "%sconv1.weight", p);
        c->ch[levels - 1 - i] = wt_find(src, n)->shape[0]; /* up block i outputs ch[n-1-i] */
    }
    int layers = 0;
    for (;; layers++) {
        resnet_prefix(p, s, levels, 0, layers);
        snprintf(n, sizeof n, "%sconv1.weight", p);
        if (!wt_find(src, n)) break;
    }
    c->layers_per_block = layers - 1;
    return ERR_OK;
}

static err config_check(const vae_config *c, const char *path) {
    FAIL_IF(c->layers_per_block >= VAE_MAX_RESNETS, ERR_UNSUPPORTED,
            "%s: VAE layers_per_block %d; up to %d supported", path, c->layers_per_block,
            VAE_MAX_RESNETS - 1);
    FAIL_IF(c->latent_channels < 1 || c->out_channels < 1 || c->layers_per_block < 0 ||
                c->groups < 1,
            ERR_FORMAT,
            "%s: VAE config: latent_channels %d, out_channels %d, layers_per_block %d, groups %d",
            path, c->latent_channels, c->out_channels, c->layers_per_block, c->groups);
    for (int i = 0; i < c->n_levels; i++)
        FAIL_IF(c->ch[i] < 1 || c->ch[i] % c->groups, ERR_FORMAT,
                "%s: VAE block_out_channels[%d] = %lld is not a positive multiple of the %d groups",
                path, i, (long long)c->ch[i], c->groups);
    return ERR_OK;
}

/* ---- weights: a visitor lists each block's tensors and the field each goes to ---- */

typedef wbind_visit wvisit;
#define MODEL(v) ((const vae_model *)(v)->cfg)

/* name.weight [co, ci, k, k] and name.bias [co] with wt_layout_add's flags */
static void wv_conv(wvisit *v, tensor *w, tensor *b, const char *name, int64_t co, int64_t ci,
                    int64_t k, int flags) {
    char n[NAME_LEN];
    snprintf(n, sizeof n, "%s.weight", name);
    wbind_tensor(v, w, flags, n, 4, (int64_t[]){co, ci, k, k});
    snprintf(n, sizeof n, "%s.bias", name);
    wbind_tensor(v, b, flags, n, 1, (int64_t[]){co});
}

/* the resnet j of level (-1: the mid block), from ci to co channels */
static void wv_resnet(wvisit *v, vae_resnet_w *r, int level, int j, int64_t ci, int64_t co) {
    const scheme s = (scheme)MODEL(v)->names;
    resnet_prefix(v->prefix, s, MODEL(v)->cfg.n_levels, level, j);
    wbind_affine(v, &r->n1_w, &r->n1_b, "norm1", ci);
    wv_conv(v, &r->c1_w, &r->c1_b, "conv1", co, ci, 3, 0);
    wbind_affine(v, &r->n2_w, &r->n2_b, "norm2", co);
    wv_conv(v, &r->c2_w, &r->c2_b, "conv2", co, co, 3, 0);
    /* diffusers ResnetBlock2D builds conv_shortcut only when channels change */
    wv_conv(v, &r->sc_w, &r->sc_b, s == NAMES_LDM ? "nin_shortcut" : "conv_shortcut", co, ci, 1,
            ci == co ? WT_OPTIONAL : 0);
}

static void wv_mid(wvisit *v, vae_mid_w *w) {
    const vae_config *c = &MODEL(v)->cfg;
    const scheme s = (scheme)MODEL(v)->names;
    const int64_t C = c->ch[c->n_levels - 1];
    const int ldm = s == NAMES_LDM;
    v->base = w;
    snprintf(v->prefix, sizeof v->prefix, "decoder.");
    wv_conv(v, &w->in_w, &w->in_b, "conv_in", C, c->latent_channels, 3, 0);
    wv_resnet(v, &w->res0, -1, 0, C, C);
    if (c->mid_attention) {
        snprintf(v->prefix, sizeof v->prefix, "%s", attn_prefix(s));
        wbind_affine(v, &w->attn.norm_w, &w->attn.norm_b, ldm ? "norm" : "group_norm", C);
        wbind_linear(v, &w->attn.q_w, &w->attn.q_b, ldm ? "q" : "to_q", C, C);
        wbind_linear(v, &w->attn.k_w, &w->attn.k_b, ldm ? "k" : "to_k", C, C);
        wbind_linear(v, &w->attn.v_w, &w->attn.v_b, ldm ? "v" : "to_v", C, C);
        wbind_linear(v, &w->attn.o_w, &w->attn.o_b, ldm ? "proj_out" : "to_out.0", C, C);
    }
    wv_resnet(v, &w->res1, -1, 1, C, C);
}

/* up block i: from the previous level's channels to co */
static void wv_up(wvisit *v, int i, vae_up_w *w) {
    const vae_config *c = &MODEL(v)->cfg;
    const int n = c->n_levels;
    const int64_t co = c->ch[n - 1 - i];
    int64_t C = c->ch[i ? n - i : n - 1];
    v->base = w;
    for (int j = 0; j <= c->layers_per_block; j++, C = co)
        wv_resnet(v, &w->res[j], i, j, C, co);
    if (i < n - 1) {
        upsample_prefix(v->prefix, (scheme)MODEL(v)->names, n, i);
        wv_conv(v, &w->up_w, &w->up_b, "conv", co, co, 3, 0);
    }
}

static void wv_out(wvisit *v, vae_out_w *w) {
    const vae_config *c = &MODEL(v)->cfg;
    const int64_t C = c->ch[0];
    v->base = w;
    snprintf(v->prefix, sizeof v->prefix, "decoder.");
    wbind_affine(v, &w->norm_w, &w->norm_b,
                 (scheme)MODEL(v)->names == NAMES_LDM ? "norm_out" : "conv_norm_out", C);
    wv_conv(v, &w->out_w, &w->out_b, "conv_out", c->out_channels, C, 3, 0);
}

/* visits block i (the blocks above); the structs only give the fields' offsets */
static void wv_block(wvisit *v, int i) {
    vae_mid_w mid;
    vae_up_w up;
    vae_out_w out;
    if (i == 0)
        wv_mid(v, &mid);
    else if (i <= MODEL(v)->cfg.n_levels)
        wv_up(v, i - 1, &up);
    else
        wv_out(v, &out);
    v->base = NULL; /* it pointed at one of the locals */
}

/* The blocks through wbind (GPU: resident BF16). */
static err load_weights(vae_model *m, wt_source *src) {
    const wt_blocks_config bc = {.ctx = m->ctx, .mode = WP_RESIDENT};
    TRY(wbind_load(src, m, m->cfg.n_levels + 2, VAE_MAX_W, wv_block, &bc, &m->wb));
    m->n_params = wt_blocks_numel(m->wb.blocks);
    return ERR_OK;
}

err vae_load(wt_source *src, op_ctx *ctx, vae_model **out) {
    *out = NULL;
    scheme s = NAMES_DIFFUSERS;
    TRY(detect_names(src, &s));
    vae_model *m = calloc(1, sizeof *m);
    FAIL_IF(!m, ERR_NOMEM, "out of memory");
    m->ctx = ctx;
    m->names = s;
    cJSON *j = NULL;
    err e = wt_config(src, &j);
    const int from_json = j != NULL;
    if (!e)
        e = j ? config_from_json(j, wt_path(src), &m->cfg) : config_from_shapes(src, s, &m->cfg);
    cJSON_Delete(j);
    if (!e) e = config_check(&m->cfg, wt_path(src));
    /* the CUDA attention kernels take head dims 64, 128 and 512 (core/cuda/attention.cu) */
    const int64_t top = e ? 0 : m->cfg.ch[m->cfg.n_levels - 1];
    if (!e && op_ctx_dev(ctx) == TENSOR_CUDA && m->cfg.mid_attention && top != 64 && top != 128 &&
        top != 512)
        e = err_set(ERR_UNSUPPORTED,
                    "%s: VAE mid attention over %lld channels; the GPU takes 64, 128 or 512",
                    wt_path(src), (long long)top);
    if (!e) e = load_weights(m, src);
    if (e) {
        vae_free(m);
        return e;
    }
    const vae_config *c = &m->cfg;
    char chs[96];
    int at = 0;
    for (int i = 0; i < c->n_levels; i++)
        at +=
            snprintf(chs + at, sizeof chs - (size_t)at, i ? " %lld" : "%lld", (long long)c->ch[i]);
    LOG_INFO("vae: %s (%s names): latent %d, channels %s, %d layers, %d groups%s, scaling %.4f "
             "shift %.4f%s; %.2fM parameters%s",
             wt_path(src), scheme_name(s), c->latent_channels, chs, c->layers_per_block, c->groups,
             c->mid_attention ? ", mid attention" : "", c->scaling_factor, c->shift_factor,
             from_json ? "" : " (from shapes)", (double)m->n_params * 1e-6,
             op_ctx_dev(ctx) == TENSOR_CUDA ? " resident on the GPU" : "");
    *out = m;
    return ERR_OK;
}

const vae_config *vae_get_config(const vae_model *m) { return &m->cfg; }

void vae_set_scaling(vae_model *m, float scaling_factor, float shift_factor) {
    m->cfg.scaling_factor = scaling_factor;
    m->cfg.shift_factor = shift_factor;
}

int64_t vae_upscale(const vae_model *m) { return (int64_t)1 << (m->cfg.n_levels - 1); }

/* ---- plan ---- */

static void need(int64_t *nd, int b, int64_t elems) {
    if (elems > nd[b]) nd[b] = elems;
}

/* a resnet from cin to cout channels at hw pixels: see resnet() */
static void need_resnet(int64_t *nd, int64_t cin, int64_t cout, int64_t hw) {
    need(nd, BX, cin * hw);
    need(nd, BX, cout * hw);
    need(nd, BT1, cin * hw);
    need(nd, BT1, cout * hw);
    need(nd, BT2, cout * hw);
}

/* The elements each buffer must hold: the same walk as vae_decode (whose views CHECK it). */
static void plan_needs(const vae_config *c, int64_t h, int64_t w, int64_t *nd) {
    const int n = c->n_levels;
    int64_t C = c->ch[n - 1], hw = h * w;
    need(nd, BX, C * hw);
    need_resnet(nd, C, C, hw);
    if (c->mid_attention) {
        need(nd, BT1, 3 * C * hw); /* q, k, v */
        need(nd, BT2, C * hw);
    }
    for (int i = 0; i < n; i++) {
        const int64_t co = c->ch[n - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++, C = co)
            need_resnet(nd, C, co, hw);
        if (i < n - 1) {
            hw *= 4;
            need(nd, BX, C * hw);
            need(nd, BT1, C * hw);
        }
    }
    need(nd, BT1, C * hw);
}

static void plan_free(vae_model *m) {
    op_mem_free(m->ctx, m->act);
    m->act = NULL;
    memset(m->buf, 0, sizeof m->buf);
    memset(m->cap, 0, sizeof m->cap);
    m->act_bytes = 0;
    m->h = m->wd = 0;
}

err vae_plan(vae_model *m, int64_t h, int64_t w) {
    FAIL_IF(h < 1 || w < 1, ERR_ARG, "vae: latent size %lldx%lld", (long long)h, (long long)w);
    plan_free(m);
    const int cuda = op_ctx_dev(m->ctx) == TENSOR_CUDA;
    const size_t es = cuda ? 2 : 4;
    int64_t nd[NBUF] = {0};
    plan_needs(&m->cfg, h, w, nd);
    size_t off[NBUF + 1] = {0};
    for (int b = 0; b < NBUF; b++)
        off[b + 1] = off[b] + ((size_t)nd[b] * es + 255) / 256 * 256;
    const size_t bytes = off[NBUF];
    err e = op_mem_alloc(m->ctx, bytes, &m->act);
    if (e)
        return err_wrap(e, "vae: activations for %lldx%lld latents need %zu bytes (%.1f MiB)",
                        (long long)h, (long long)w, bytes, (double)bytes / (1 << 20));
    for (int b = 0; b < NBUF; b++) {
        m->buf[b] = (char *)m->act + off[b];
        m->cap[b] = nd[b];
    }
    m->act_bytes = bytes;
    m->h = h;
    m->wd = w;
    const int64_t up = vae_upscale(m);
    LOG_INFO("vae: plan %lldx%lld latents -> %lldx%lld image: activations X %.1f + T1 %.1f + T2 "
             "%.1f = %.1f MiB (%s)",
             (long long)h, (long long)w, (long long)(h * up), (long long)(w * up),
             (double)(off[1] - off[0]) / (1 << 20), (double)(off[2] - off[1]) / (1 << 20),
             (double)(off[3] - off[2]) / (1 << 20), (double)bytes / (1 << 20),
             cuda ? "BF16, GPU" : "F32, host");
    return ERR_OK;
}

/* ---- forward ---- */

/* A contiguous view of ndim dims at element off of buffer b; CHECKs the plan's capacity. */
static tensor act_view(const vae_model *m, int b, int64_t off, int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    CHECK(off + n <= m->cap[b]);
    const int cuda = op_ctx_dev(m->ctx) == TENSOR_CUDA;
    char *p = (char *)m->buf[b] + off * (cuda ? 2 : 4);
    return tensor_make(p, cuda ? DTYPE_BF16 : DTYPE_F32, op_ctx_dev(m->ctx), ndim, shape);
}

static tensor img(const vae_model *m, int b, int64_t C, int64_t H, int64_t W) {
    return act_view(m, b, 0, 4, (int64_t[]){1, C, H, W});
}

static const int PAD1[4] = {1, 1, 1, 1}, PAD0[4] = {0, 0, 0, 0};

/* diffusers resnet.py::ResnetBlock2D.forward (no temb, output_scale_factor 1): X holds the
 * input [1,cin,H,W] and receives the output [1,cout,H,W]. */
static void resnet(vae_model *m, const vae_resnet_w *w, int64_t cin, int64_t cout, int64_t H,
                   int64_t W) {
    op_ctx *c = m->ctx;
    const int g = m->cfg.groups;
    tensor x = img(m, BX, cin, H, W), a = img(m, BT1, cin, H, W);
    op_groupnorm(c, a, x, w->n1_w, w->n1_b, g, VAE_EPS, 1); /* norm1, SiLU */
    tensor h = img(m, BT2, cout, H, W);
    op_conv2d(c, h, a, w->c1_w, &w->c1_b, 1, PAD1);
    a = img(m, BT1, cout, H, W);
    op_groupnorm(c, a, h, w->n2_w, w->n2_b, g, VAE_EPS, 1); /* norm2, SiLU */
    op_conv2d(c, h, a, w->c2_w, &w->c2_b, 1, PAD1);
    tensor y = img(m, BX, cout, H, W);
    if (cin != cout) {
        op_conv2d(c, a, x, w->sc_w, &w->sc_b, 1, PAD0); /* conv_shortcut, 1x1 */
        op_add(c, y, a, h);
    } else {
        op_add(c, y, x, h); /* the residual add is its own rounding point */
    }
}

/* diffusers attention_processor.py::AttnProcessor2_0 on the mid block's Attention (one head
 * of dim C, group_norm, residual_connection, rescale 1): X [1,C,H,W] in place. */
static void mid_attention(vae_model *m, const vae_attn_w *w, int64_t C, int64_t H, int64_t W) {
    op_ctx *c = m->ctx;
    const int64_t N = H * W;
    tensor x = img(m, BX, C, H, W), gn = img(m, BT1, C, H, W);
    op_groupnorm(c, gn, x, w->norm_w, w->norm_b, m->cfg.groups, VAE_EPS, 0);
    /* NCHW -> tokens [1,N,C]: a strided copy of the transposed view (exact) */
    tensor tok = act_view(m, BT2, 0, 3, (int64_t[]){1, N, C});
    op_copy(c, tok, tensor_transpose(tensor_reshape(gn, 3, (int64_t[]){1, C, N}), 1, 2));
    tensor q = act_view(m, BT1, 0, 3, (int64_t[]){1, N, C});
    tensor k = act_view(m, BT1, N * C, 3, (int64_t[]){1, N, C});
    tensor v = act_view(m, BT1, 2 * N * C, 3, (int64_t[]){1, N, C});
    op_linear(c, q, tok, w->q_w, &w->q_b, OP_ACT_NONE);
    op_linear(c, k, tok, w->k_w, &w->k_b, OP_ACT_NONE);
    op_linear(c, v, tok, w->v_w, &w->v_b, OP_ACT_NONE);
    /* F.scaled_dot_product_attention's default scale 1/sqrt(head dim) */
    const int64_t heads[4] = {1, N, 1, C};
    tensor o = act_view(m, BT2, 0, 4, heads);
    op_attention(c, o, tensor_reshape(q, 4, heads), tensor_reshape(k, 4, heads),
                 tensor_reshape(v, 4, heads), NULL, (float)(1.0 / sqrt((double)C)), 0);
    tensor p = act_view(m, BT1, 0, 3, (int64_t[]){1, N, C});
    op_linear(c, p, tensor_reshape(o, 3, (int64_t[]){1, N, C}), w->o_w, &w->o_b, OP_ACT_NONE);
    tensor back = img(m, BT2, C, H, W);
    op_copy(c, tensor_reshape(back, 3, (int64_t[]){1, C, N}), tensor_transpose(p, 1, 2));
    op_add(c, x, back, x); /* hidden_states + residual */
}

/* diffusers upsampling.py::Upsample2D (interpolate nearest x2, then conv): X [1,C,H,W] ->
 * X [1,C,2H,2W]. */
static void upsample(vae_model *m, const vae_up_w *w, int64_t C, int64_t H, int64_t W) {
    tensor u = img(m, BT1, C, 2 * H, 2 * W);
    op_upsample2x(m->ctx, u, img(m, BX, C, H, W));
    op_conv2d(m->ctx, img(m, BX, C, 2 * H, 2 * W), u, w->up_w, &w->up_b, 1, PAD1);
}

void vae_decode(vae_model *m, tensor out, tensor z) {
    const vae_config *cf = &m->cfg;
    const int n = cf->n_levels;
    op_ctx *c = m->ctx;
    int64_t H = m->h, W = m->wd, C = cf->ch[n - 1];
    const int64_t up = vae_upscale(m);
    CHECK(m->act && z.ndim == 4 && z.shape[0] == 1 && z.shape[1] == cf->latent_channels &&
          z.shape[2] == H && z.shape[3] == W);
    CHECK(out.ndim == 4 && out.shape[0] == 1 && out.shape[1] == cf->out_channels &&
          out.shape[2] == H * up && out.shape[3] == W * up);

    /* diffusers vae.py::Decoder.forward: conv_in, mid block (resnet, attention, resnet) */
    vae_mid_w mid;
    wbind_acquire(&m->wb, 0, &mid);
    op_conv2d(c, img(m, BX, C, H, W), z, mid.in_w, &mid.in_b, 1, PAD1);
    resnet(m, &mid.res0, C, C, H, W);
    if (cf->mid_attention) mid_attention(m, &mid.attn, C, H, W);
    resnet(m, &mid.res1, C, C, H, W);
    wbind_release(&m->wb, 0);

    /* up blocks (diffusers unet_2d_blocks.py::UpDecoderBlock2D): layers_per_block + 1 resnets,
       then Upsample2D except on the last level */
    for (int i = 0; i < n; i++) {
        const int64_t co = cf->ch[n - 1 - i];
        vae_up_w w;
        wbind_acquire(&m->wb, 1 + i, &w);
        for (int j = 0; j <= cf->layers_per_block; j++, C = co)
            resnet(m, &w.res[j], C, co, H, W);
        if (i < n - 1) {
            upsample(m, &w, C, H, W);
            H *= 2;
            W *= 2;
        }
        wbind_release(&m->wb, 1 + i);
    }

    /* conv_norm_out, conv_act (SiLU), conv_out */
    vae_out_w o;
    wbind_acquire(&m->wb, n + 1, &o);
    tensor a = img(m, BT1, C, H, W);
    op_groupnorm(c, a, img(m, BX, C, H, W), o.norm_w, o.norm_b, cf->groups, VAE_EPS, 1);
    op_conv2d(c, out, a, o.out_w, &o.out_b, 1, PAD1);
    wbind_release(&m->wb, n + 1);
}

size_t vae_device_bytes(const vae_model *m) {
    if (op_ctx_dev(m->ctx) != TENSOR_CUDA) return 0;
    return wt_blocks_device_bytes(m->wb.blocks) + m->act_bytes;
}

void vae_free(vae_model *m) {
    if (!m) return;
    plan_free(m);
    wbind_free(&m->wb);
    free(m);
}
