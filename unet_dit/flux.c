/* flux.c: the FLUX.1 transformer as a straight sequence of ops, mirroring diffusers
 * transformer_flux.py::FluxTransformer2DModel.forward (docs/MODEL-SPEC.md §1). One joint stream h
 * [1, T + N, D] holds the text tokens first, then the image tokens, through all blocks: the
 * double blocks work on its two row ranges, the single blocks on all of it (diffusers
 * concatenates and splits around each single block; the values are the same). */
#include "unet_dit/flux.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/log.h"
#include "weights/wbind.h"

#define FLUX_EPS 1e-6f     /* every LayerNorm and the q/k RMSNorms */
#define FLUX_TPROJ 256     /* Timesteps(num_channels=256) */
#define FLUX_THETA 10000.0 /* RoPE base, hard-coded in FluxPosEmbed */
#define FLUX_NAME_MAX 96
#define FLUX_MAX_W 32 /* tensors in the largest block (a double block, diffusers names) */

/* One stream's half of a double block (image: attn.to_*, norm1, ff; text: attn.add_*_proj,
 * norm1_context, ff_context). BFL: img_attn / txt_attn, img_mod / txt_mod, img_mlp / txt_mlp. */
typedef struct flux_stream_w {
    tensor mod_w, mod_b; /* norm1.linear [6D, D], [6D]: shift, scale, gate, shift2, scale2, gate2 */
    tensor q_w, k_w, v_w;  /* attn.to_q/k/v (rows of the fused qkv in BFL) [D, D] */
    tensor q_b, k_b, v_b;  /* [D] */
    tensor norm_q, norm_k; /* attn.norm_q/k.weight [head_dim] */
    tensor out_w, out_b;   /* attn.to_out.0 / to_add_out [D, D], [D] */
    tensor ff1_w, ff1_b;   /* ff.net.0.proj [mlp, D], [mlp] */
    tensor ff2_w, ff2_b;   /* ff.net.2 [D, mlp], [D] */
} flux_stream_w;

typedef struct flux_double_w {
    flux_stream_w img, txt;
} flux_double_w;

/* single_transformer_blocks.i (BFL single_blocks.i: linear1 = [q; k; v; mlp], linear2) */
typedef struct flux_single_w {
    tensor mod_w, mod_b;   /* norm.linear [3D, D], [3D]: shift, scale, gate */
    tensor q_w, k_w, v_w;  /* attn.to_q/k/v [D, D] */
    tensor q_b, k_b, v_b;  /* [D] */
    tensor norm_q, norm_k; /* attn.norm_q/k.weight [head_dim] */
    tensor mlp_w, mlp_b;   /* proj_mlp [mlp, D], [mlp] */
    tensor out_w, out_b;   /* proj_out [D, D + mlp], [D] */
} flux_single_w;

/* The weights outside the blocks, resident. */
typedef struct flux_globals_w {
    tensor x_w, x_b;               /* x_embedder [D, in_ch], [D] */
    tensor ctx_w, ctx_b;           /* context_embedder [D, ctx_dim], [D] */
    tensor t1_w, t1_b, t2_w, t2_b; /* time_text_embed.timestep_embedder.linear_1 [D, 256],
                                      linear_2 [D, D] */
    tensor g1_w, g1_b, g2_w, g2_b; /* guidance_embedder (dev): the same shapes */
    tensor p1_w, p1_b, p2_w, p2_b; /* text_embedder.linear_1 [D, pooled_dim], linear_2 [D, D] */
    tensor nout_w, nout_b;         /* norm_out.linear [2D, D], [2D]: scale, shift (BFL's
                                      final_layer.adaLN_modulation.1: shift, scale) */
    tensor proj_w, proj_b;         /* proj_out [in_ch, D], [in_ch] */
} flux_globals_w;

struct flux_model {
    flux_config cfg;
    op_ctx *ctx;
    tensor_dev dev;
    dtype act;           /* activations: F32 on the CPU, BF16 on CUDA */
    wbind_table blocks;  /* n_double double blocks, then n_single single blocks */
    wbind_table globals; /* one block, acquired for the model's lifetime */
    flux_globals_w g;
    /* the plan */
    int64_t h2, w2, N, T, L;
    void *mem;
    size_t mem_bytes;
    tensor h;                  /* [1, L, D] the joint stream: text rows [0, T), image rows [T, L) */
    tensor xn, q, k, v, y;     /* [1, L, D] modulated norm, q, k, v, projection output */
    tensor cat;                /* [1, L, D + mlp] [attention | gelu(mlp)]; its MLP part is also
                                  the double blocks' FF hidden, its attention part their O */
    tensor ctx_emb;            /* [1, T, D] context_embedder(t5), set per prompt */
    tensor pooled_emb;         /* [1, D] text_embedder(pooled), set per prompt */
    tensor temb, s, tmp, gemb; /* [1, D] conditioning, SiLU(conditioning), scratch */
    tensor tproj;              /* [1, 256] sinusoid */
    tensor mod, cmod;          /* [1, 6D] modulation vectors of the block running */
    tensor cos, sin;           /* [L, head_dim] F32 RoPE tables */
    int text_set;
};

/* ---- weight names: one visitor per block kind lists the tensors and where each goes; at
 * load it makes the specs and a binding table, which each acquire then applies ---- */

typedef wbind_visit wvisit;
#define CFG(v) ((const flux_config *)(v)->cfg)

/* one stream of a double block; diffusers names (add: "add_" projections of the text stream) */
static void wv_stream_diffusers(wvisit *v, flux_stream_w *s, int txt) {
    const int64_t D = CFG(v)->D, hd = CFG(v)->head_dim, mlp = CFG(v)->mlp;
    wbind_linear(v, &s->mod_w, &s->mod_b, txt ? "norm1_context.linear" : "norm1.linear", 6 * D, D);
    wbind_linear(v, &s->q_w, &s->q_b, txt ? "attn.add_q_proj" : "attn.to_q", D, D);
    wbind_linear(v, &s->k_w, &s->k_b, txt ? "attn.add_k_proj" : "attn.to_k", D, D);
    wbind_linear(v, &s->v_w, &s->v_b, txt ? "attn.add_v_proj" : "attn.to_v", D, D);
    wbind_vec(v, &s->norm_q, txt ? "attn.norm_added_q.weight" : "attn.norm_q.weight", hd);
    wbind_vec(v, &s->norm_k, txt ? "attn.norm_added_k.weight" : "attn.norm_k.weight", hd);
    wbind_linear(v, &s->out_w, &s->out_b, txt ? "attn.to_add_out" : "attn.to_out.0", D, D);
    wbind_linear(v, &s->ff1_w, &s->ff1_b, txt ? "ff_context.net.0.proj" : "ff.net.0.proj", mlp, D);
    wbind_linear(v, &s->ff2_w, &s->ff2_b, txt ? "ff_context.net.2" : "ff.net.2", D, mlp);
}

/* the same in BFL names (docs/MODEL-SPEC.md §1.9); s is "img" or "txt" */
static void wv_stream_bfl(wvisit *v, flux_stream_w *st, const char *s) {
    const int64_t D = CFG(v)->D, hd = CFG(v)->head_dim, mlp = CFG(v)->mlp;
    char n[FLUX_NAME_MAX];
    snprintf(n, sizeof n, "%s_mod.lin", s);
    wbind_linear(v, &st->mod_w, &st->mod_b, n, 6 * D, D);
    snprintf(n, sizeof n, "%s_attn.qkv", s);
    wbind_fused(v, (tensor *[]){&st->q_w, &st->k_w, &st->v_w},
                (tensor *[]){&st->q_b, &st->k_b, &st->v_b}, (int64_t[]){D, D, D}, 3, n, D);
    snprintf(n, sizeof n, "%s_attn.norm.query_norm.scale", s);
    wbind_vec(v, &st->norm_q, n, hd);
    snprintf(n, sizeof n, "%s_attn.norm.key_norm.scale", s);
    wbind_vec(v, &st->norm_k, n, hd);
    snprintf(n, sizeof n, "%s_attn.proj", s);
    wbind_linear(v, &st->out_w, &st->out_b, n, D, D);
    snprintf(n, sizeof n, "%s_mlp.0", s);
    wbind_linear(v, &st->ff1_w, &st->ff1_b, n, mlp, D);
    snprintf(n, sizeof n, "%s_mlp.2", s);
    wbind_linear(v, &st->ff2_w, &st->ff2_b, n, D, mlp);
}

static void wv_double(wvisit *v, int i, flux_double_w *b) {
    v->base = b;
    if (CFG(v)->bfl_names) {
        snprintf(v->prefix, sizeof v->prefix, "double_blocks.%d.", i);
        wv_stream_bfl(v, &b->img, "img");
        wv_stream_bfl(v, &b->txt, "txt");
    } else {
        snprintf(v->prefix, sizeof v->prefix, "transformer_blocks.%d.", i);
        wv_stream_diffusers(v, &b->img, 0);
        wv_stream_diffusers(v, &b->txt, 1);
    }
}

static void wv_single(wvisit *v, int i, flux_single_w *b) {
    const int64_t D = CFG(v)->D, hd = CFG(v)->head_dim, mlp = CFG(v)->mlp;
    v->base = b;
    if (CFG(v)->bfl_names) {
        snprintf(v->prefix, sizeof v->prefix, "single_blocks.%d.", i);
        wbind_linear(v, &b->mod_w, &b->mod_b, "modulation.lin", 3 * D, D);
        wbind_fused(v, (tensor *[]){&b->q_w, &b->k_w, &b->v_w, &b->mlp_w},
                    (tensor *[]){&b->q_b, &b->k_b, &b->v_b, &b->mlp_b}, (int64_t[]){D, D, D, mlp},
                    4, "linear1", D);
        wbind_vec(v, &b->norm_q, "norm.query_norm.scale", hd);
        wbind_vec(v, &b->norm_k, "norm.key_norm.scale", hd);
        wbind_linear(v, &b->out_w, &b->out_b, "linear2", D, D + mlp);
    } else {
        snprintf(v->prefix, sizeof v->prefix, "single_transformer_blocks.%d.", i);
        wbind_linear(v, &b->mod_w, &b->mod_b, "norm.linear", 3 * D, D);
        wbind_linear(v, &b->q_w, &b->q_b, "attn.to_q", D, D);
        wbind_linear(v, &b->k_w, &b->k_b, "attn.to_k", D, D);
        wbind_linear(v, &b->v_w, &b->v_b, "attn.to_v", D, D);
        wbind_vec(v, &b->norm_q, "attn.norm_q.weight", hd);
        wbind_vec(v, &b->norm_k, "attn.norm_k.weight", hd);
        wbind_linear(v, &b->mlp_w, &b->mlp_b, "proj_mlp", mlp, D);
        wbind_linear(v, &b->out_w, &b->out_b, "proj_out", D, D + mlp);
    }
}

static void wv_globals(wvisit *v, flux_globals_w *g) {
    const flux_config *c = CFG(v);
    const int64_t D = c->D;
    const int bfl = c->bfl_names;
    v->base = g;
    v->prefix[0] = 0;
    wbind_linear(v, &g->x_w, &g->x_b, bfl ? "img_in" : "x_embedder", D, c->in_ch);
    wbind_linear(v, &g->ctx_w, &g->ctx_b, bfl ? "txt_in" : "context_embedder", D, c->ctx_dim);
    wbind_linear(v, &g->t1_w, &g->t1_b,
                 bfl ? "time_in.in_layer" : "time_text_embed.timestep_embedder.linear_1", D,
                 FLUX_TPROJ);
    wbind_linear(v, &g->t2_w, &g->t2_b,
                 bfl ? "time_in.out_layer" : "time_text_embed.timestep_embedder.linear_2", D, D);
    if (c->guidance) {
        wbind_linear(v, &g->g1_w, &g->g1_b,
                     bfl ? "guidance_in.in_layer" : "time_text_embed.guidance_embedder.linear_1", D,
                     FLUX_TPROJ);
        wbind_linear(v, &g->g2_w, &g->g2_b,
                     bfl ? "guidance_in.out_layer" : "time_text_embed.guidance_embedder.linear_2",
                     D, D);
    }
    wbind_linear(v, &g->p1_w, &g->p1_b,
                 bfl ? "vector_in.in_layer" : "time_text_embed.text_embedder.linear_1", D,
                 c->pooled_dim);
    wbind_linear(v, &g->p2_w, &g->p2_b,
                 bfl ? "vector_in.out_layer" : "time_text_embed.text_embedder.linear_2", D, D);
    wbind_linear(v, &g->nout_w, &g->nout_b,
                 bfl ? "final_layer.adaLN_modulation.1" : "norm_out.linear", 2 * D, D);
    wbind_linear(v, &g->proj_w, &g->proj_b, bfl ? "final_layer.linear" : "proj_out", c->in_ch, D);
}

/* ---- config ---- */

static int64_t count_blocks(const wt_source *src, const char *fmt) {
    char name[FLUX_NAME_MAX];
    int64_t n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, (int)n);
        if (!wt_find(src, name)) return n;
    }
}

/* config.json's value for key must equal what the weights say */
static err json_check(const char *path, const cJSON *root, const char *key, int64_t have) {
    int64_t v = have;
    TRY(wt_config_int(root, key, path, &v));
    FAIL_IF(v != have, ERR_FORMAT, "%s: config.json: %s is %lld, but the weights give %lld", path,
            key, (long long)v, (long long)have);
    return ERR_OK;
}

/* config.json's keys against the inferred config; its axes_dims_rope replaces the default */
static err apply_json(const cJSON *root, const char *path, void *arg) {
    flux_config *c = arg;
    const struct {
        const char *key;
        int64_t have;
    } keys[] = {{"num_layers", c->n_double},         {"num_single_layers", c->n_single},
                {"attention_head_dim", c->head_dim}, {"num_attention_heads", c->heads},
                {"joint_attention_dim", c->ctx_dim}, {"pooled_projection_dim", c->pooled_dim},
                {"in_channels", c->in_ch},           {"out_channels", c->in_ch},
                {"guidance_embeds", c->guidance},    {"patch_size", 1}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        TRY(json_check(path, root, keys[i].key, keys[i].have));
    const cJSON *ax = cJSON_GetObjectItemCaseSensitive(root, "axes_dims_rope");
    if (!ax) return ERR_OK;
    FAIL_IF(!cJSON_IsArray(ax) || cJSON_GetArraySize(ax) != 3, ERR_FORMAT,
            "%s: config.json: axes_dims_rope is not a list of 3", path);
    for (int i = 0; i < 3; i++) {
        const cJSON *a = cJSON_GetArrayItem(ax, i);
        FAIL_IF(!cJSON_IsNumber(a), ERR_FORMAT,
                "%s: config.json: axes_dims_rope[%d] is not a number", path, i);
        c->axes[i] = (int)a->valuedouble;
    }
    return ERR_OK;
}

/* Detects the names (setting BFL's "model.diffusion_model." prefix on src where it is used)
 * and infers the config from the shapes, then checks it against config.json. */
static err detect_config(wt_source *src, flux_config *c) {
    memset(c, 0, sizeof *c);
    const char *path = wt_path(src);
    if (!wt_find(src, "x_embedder.weight") && !wt_find(src, "img_in.weight") &&
        wt_find(src, "model.diffusion_model.img_in.weight"))
        wt_set_prefix(src, "model.diffusion_model.");
    c->bfl_names = !wt_find(src, "x_embedder.weight");
    FAIL_IF(c->bfl_names && !wt_find(src, "img_in.weight"), ERR_FORMAT,
            "%s: not a FLUX transformer: neither 'x_embedder.weight' (diffusers) nor "
            "'img_in.weight' (BFL) is there",
            path);
    const int bfl = c->bfl_names;
    const df11_tensor *x, *t5, *pool, *nq, *ff;
    TRY(wt_need(src, &x, 2, "%s", bfl ? "img_in.weight" : "x_embedder.weight"));
    TRY(wt_need(src, &t5, 2, "%s", bfl ? "txt_in.weight" : "context_embedder.weight"));
    TRY(wt_need(src, &pool, 2, "%s",
                bfl ? "vector_in.in_layer.weight"
                    : "time_text_embed.text_embedder.linear_1.weight"));
    c->D = x->shape[0];
    c->in_ch = x->shape[1];
    c->ctx_dim = t5->shape[1];
    c->pooled_dim = pool->shape[1];
    c->guidance = wt_find(src, bfl ? "guidance_in.in_layer.weight"
                                   : "time_text_embed.guidance_embedder.linear_1.weight") != NULL;
    c->n_double = count_blocks(src, bfl ? "double_blocks.%d.img_mod.lin.weight"
                                        : "transformer_blocks.%d.norm1.linear.weight");
    c->n_single = count_blocks(src, bfl ? "single_blocks.%d.modulation.lin.weight"
                                        : "single_transformer_blocks.%d.norm.linear.weight");
    FAIL_IF(c->n_double + c->n_single == 0, ERR_FORMAT, "%s: no FLUX blocks (no '%s')", path,
            bfl ? "double_blocks.0.img_mod.lin.weight"
                : "transformer_blocks.0.norm1.linear.weight");
    /* head_dim from the first q norm, the MLP width from the first MLP projection */
    static const char *const nq_name[2][2] = {{"single_transformer_blocks.0.attn.norm_q.weight",
                                               "transformer_blocks.0.attn.norm_q.weight"},
                                              {"single_blocks.0.norm.query_norm.scale",
                                               "double_blocks.0.img_attn.norm.query_norm.scale"}};
    static const char *const ff_name[2][2] = {
        {"single_transformer_blocks.0.proj_mlp.weight",
         "transformer_blocks.0.ff.net.0.proj.weight"},
        {"single_blocks.0.linear1.weight", "double_blocks.0.img_mlp.0.weight"}};
    const int dbl = c->n_double > 0;
    TRY(wt_need(src, &nq, 1, "%s", nq_name[bfl][dbl]));
    TRY(wt_need(src, &ff, 2, "%s", ff_name[bfl][dbl]));
    c->head_dim = nq->shape[0];
    c->mlp = ff->shape[0] - (c->n_double || !bfl ? 0 : 3 * c->D);
    FAIL_IF(c->head_dim < 2 || c->D % c->head_dim, ERR_FORMAT,
            "%s: hidden size %lld is not a multiple of the q/k norm's size %lld", path,
            (long long)c->D, (long long)c->head_dim);
    c->heads = c->D / c->head_dim;
    /* FLUX's split (16, 56, 56) of 128 dims; the same proportions for other head sizes, where
     * config.json's axes_dims_rope does not say otherwise */
    if (c->head_dim % 16 == 0) {
        c->axes[0] = (int)(c->head_dim / 8);
        c->axes[1] = c->axes[2] = (int)(c->head_dim * 7 / 16);
    }
    TRY(wt_config_apply(src, apply_json, c));
    int64_t sum = 0, bad = 0;
    for (int i = 0; i < 3; i++)
        sum += c->axes[i], bad |= c->axes[i] < 0 || c->axes[i] % 2;
    FAIL_IF(bad || sum != c->head_dim, ERR_FORMAT,
            "%s: RoPE axes (%d, %d, %d) do not split the head dim %lld in even parts", path,
            c->axes[0], c->axes[1], c->axes[2], (long long)c->head_dim);
    return ERR_OK;
}

/* ---- loading ---- */

/* visits block i (double blocks first); the structs only give the fields' offsets */
static void wv_block(wvisit *v, int i) {
    flux_double_w dw;
    flux_single_w sw;
    if (i < CFG(v)->n_double)
        wv_double(v, i, &dw);
    else
        wv_single(v, i - (int)CFG(v)->n_double, &sw);
}

/* the embedders and the final layer: one block, resident, held until the model is freed */
static void wv_globals_block(wvisit *v, int i) {
    flux_globals_w g;
    wv_globals(v, &g);
}

err flux_load(wt_source *src, op_ctx *ctx, const flux_load_opts *o, flux_model **out) {
    *out = NULL;
    flux_config cfg;
    TRY(detect_config(src, &cfg));
    flux_model *m = calloc(1, sizeof *m);
    FAIL_IF(!m, ERR_NOMEM, "out of memory");
    m->cfg = cfg;
    m->ctx = ctx;
    m->dev = op_ctx_dev(ctx);
    m->act = m->dev == TENSOR_CPU ? DTYPE_F32 : DTYPE_BF16;
    wt_blocks_config bc = {
        .ctx = ctx, .mode = o ? o->mode : WP_RESIDENT, .budget = o ? o->budget : 0};
    err e = wbind_load_held(src, &m->cfg, FLUX_MAX_W, wv_globals_block, &bc, &m->globals, &m->g);
    if (!e)
        e = wbind_load(src, &m->cfg, (int)(cfg.n_double + cfg.n_single), FLUX_MAX_W, wv_block, &bc,
                       &m->blocks);
    if (e) {
        flux_free(m);
        return e;
    }
    static const char *modes[] = {"resident", "DF11 per block", "DF11 streamed"};
    LOG_INFO(
        "flux: %s, %s names: D %lld (%lld heads x %lld), %lld double + %lld single blocks, "
        "MLP %lld, RoPE axes (%d, %d, %d); weights %s, %.1f MiB on the device",
        cfg.guidance ? "dev (guidance embedding)" : "schnell (no guidance embedding)",
        cfg.bfl_names ? "BFL" : "diffusers", (long long)cfg.D, (long long)cfg.heads,
        (long long)cfg.head_dim, (long long)cfg.n_double, (long long)cfg.n_single,
        (long long)cfg.mlp, cfg.axes[0], cfg.axes[1], cfg.axes[2],
        m->dev == TENSOR_CPU ? "mapped on the host" : modes[bc.mode],
        (wt_blocks_device_bytes(m->blocks.blocks) + wt_blocks_device_bytes(m->globals.blocks)) /
            1048576.0);
    *out = m;
    return ERR_OK;
}

const flux_config *flux_get_config(const flux_model *m) { return &m->cfg; }

/* ---- the plan ---- */

/* a [d0, d1] (d2 0) or [d0, d1, d2] activation of the plan's buffer */
static tensor carve(op_carver *cv, dtype dt, int64_t d0, int64_t d1, int64_t d2) {
    return op_carve(cv, dt, d2 ? 3 : 2, (int64_t[]){d0, d1, d2});
}

static void carve_all(flux_model *m, op_carver *cv) {
    const int64_t D = m->cfg.D, L = m->L;
    const dtype a = m->act;
    m->h = carve(cv, a, 1, L, D);
    m->xn = carve(cv, a, 1, L, D);
    m->q = carve(cv, a, 1, L, D);
    m->k = carve(cv, a, 1, L, D);
    m->v = carve(cv, a, 1, L, D);
    m->y = carve(cv, a, 1, L, D);
    m->cat = carve(cv, a, 1, L, D + m->cfg.mlp);
    m->ctx_emb = carve(cv, a, 1, m->T, D);
    m->pooled_emb = carve(cv, a, 1, D, 0);
    m->temb = carve(cv, a, 1, D, 0);
    m->s = carve(cv, a, 1, D, 0);
    m->tmp = carve(cv, a, 1, D, 0);
    m->gemb = carve(cv, a, 1, D, 0);
    m->tproj = carve(cv, a, 1, FLUX_TPROJ, 0);
    m->mod = carve(cv, a, 1, 6 * D, 0);
    m->cmod = carve(cv, a, 1, 6 * D, 0);
    m->cos = carve(cv, DTYPE_F32, L, m->cfg.head_dim, 0);
    m->sin = carve(cv, DTYPE_F32, L, m->cfg.head_dim, 0);
}

/* FluxPosEmbed + get_1d_rotary_pos_embed(use_real, repeat_interleave_real): per axis segment
 * of d dims, pair k turns by pos / 10000^(2k/d), all in float64, cos and sin rounded to
 * float32, each twice. Ids: text (0, 0, 0), image token i w2 + j (0, i, j), text first. The
 * bf16 pipeline casts the ids to bf16 (exact up to 256), so on CUDA they are rounded too. */
static void rope_tables(const flux_model *m, float *cs, float *sn) {
    const int64_t hd = m->cfg.head_dim;
    for (int64_t l = 0; l < m->L; l++) {
        const int64_t p = l - m->T;
        double ids[3] = {0, l < m->T ? 0 : (double)(p / m->w2), l < m->T ? 0 : (double)(p % m->w2)};
        for (int a = 0; a < 3 && m->dev == TENSOR_CUDA; a++)
            ids[a] = bf16_round((float)ids[a]);
        for (int a = 0, off = 0; a < 3; off += m->cfg.axes[a], a++) {
            const int d = m->cfg.axes[a];
            for (int k = 0; k < d / 2; k++) {
                const double w = 1.0 / pow(FLUX_THETA, (double)(2 * k) / d), phi = ids[a] * w;
                cs[l * hd + off + 2 * k] = cs[l * hd + off + 2 * k + 1] = (float)cos(phi);
                sn[l * hd + off + 2 * k] = sn[l * hd + off + 2 * k + 1] = (float)sin(phi);
            }
        }
    }
}

static void free_plan(flux_model *m) {
    op_mem_free(m->ctx, m->mem);
    m->mem = NULL;
    m->mem_bytes = 0;
    m->text_set = 0;
}

err flux_plan(flux_model *m, int64_t h2, int64_t w2, int64_t T) {
    CHECK(h2 > 0 && w2 > 0 && T > 0);
    free_plan(m);
    m->h2 = h2, m->w2 = w2, m->N = h2 * w2, m->T = T, m->L = T + h2 * w2;
    op_carver cv = {.dev = m->dev};
    carve_all(m, &cv);
    const size_t bytes = cv.off;
    if (op_mem_alloc(m->ctx, bytes, &m->mem)) m->mem = NULL;
    FAIL_IF(!m->mem, ERR_NOMEM,
            "flux: %zu bytes (%.1f MiB) of activations for %lld x %lld image tokens and %lld text "
            "tokens could not be allocated on the %s",
            bytes, bytes / 1048576.0, (long long)h2, (long long)w2, (long long)T,
            m->dev == TENSOR_CUDA ? "GPU" : "host");
    m->mem_bytes = bytes;
    cv = (op_carver){.base = m->mem, .dev = m->dev};
    carve_all(m, &cv);
    /* the tables are built on the host, then copied to where the model runs */
    const size_t tb = (size_t)m->L * (size_t)m->cfg.head_dim * sizeof(float);
    float *cs = malloc(tb), *sn = malloc(tb);
    err e = cs && sn ? ERR_OK : err_set(ERR_NOMEM, "flux: out of memory for the RoPE tables");
    if (!e) rope_tables(m, cs, sn);
    if (!e) e = op_mem_upload(m->ctx, m->cos.data, cs, tb);
    if (!e) e = op_mem_upload(m->ctx, m->sin.data, sn, tb);
    free(cs), free(sn);
    if (e) {
        free_plan(m);
        return e;
    }
    LOG_INFO("flux: plan %lld x %lld image + %lld text tokens: activations %.1f MiB", (long long)h2,
             (long long)w2, (long long)T, bytes / 1048576.0);
    return ERR_OK;
}

/* ---- the forward ---- */

static tensor rows(tensor t, int64_t r0, int64_t n) { return tensor_slice(t, 1, r0, n); }
static tensor chunk(tensor mod, int64_t D, int i) { return tensor_slice(mod, 1, i * D, D); }
/* [1, n, D] (tokens may be strided) as heads [1, n, H, hd] */
static tensor heads(const flux_model *m, tensor t) {
    t.ndim = 4;
    t.shape[2] = m->cfg.heads, t.shape[3] = m->cfg.head_dim;
    t.stride[2] = m->cfg.head_dim, t.stride[3] = 1;
    return t;
}

void flux_set_text(flux_model *m, tensor t5, tensor pooled) {
    const flux_config *c = &m->cfg;
    CHECK(m->mem);
    CHECK(t5.ndim == 3 && t5.shape[0] == 1 && t5.shape[1] == m->T && t5.shape[2] == c->ctx_dim);
    CHECK(pooled.ndim == 2 && pooled.shape[0] == 1 && pooled.shape[1] == c->pooled_dim);
    const flux_globals_w *g = &m->g;
    /* constant over the steps: context_embedder(t5) and text_embedder(pooled)
     * (PixArtAlphaTextProjection: linear_1, SiLU, linear_2) */
    op_linear(m->ctx, m->ctx_emb, t5, g->ctx_w, &g->ctx_b, OP_ACT_NONE);
    op_linear(m->ctx, m->tmp, pooled, g->p1_w, &g->p1_b, OP_ACT_SILU);
    op_linear(m->ctx, m->pooled_emb, m->tmp, g->p2_w, &g->p2_b, OP_ACT_NONE);
    m->text_set = 1;
}

void flux_time_inputs(tensor_dev dev, float t, float g, float *tau, float *gs) {
    if (dev == TENSOR_CUDA) {
        /* pipeline_flux: timestep = t.to(bf16) / 1000, which CUDA computes as a product with
         * the float32 reciprocal (PyTorch's div_true_kernel_cuda for a scalar divisor; for every
         * bf16 value in [0, 1000] it rounds as the quotient does); the transformer then takes
         * timestep.to(bf16) * 1000 and guidance.to(bf16) * 1000, each rounded to bf16 */
        *tau = bf16_round(bf16_round(bf16_round(t) * (1.0f / 1000.0f)) * 1000.0f);
        *gs = bf16_round(bf16_round(g) * 1000.0f);
    } else {
        *tau = t / 1000.0f * 1000.0f; /* the quotient rounded to float32, then the product */
        *gs = g * 1000.0f;
    }
}

/* The modulated LayerNorm and q, k, v of one stream's rows [r0, r0 + n): FluxAttnProcessor's
 * projections, then the q/k RMSNorms (torch's fused rms_norm, one rounding) each with the
 * rotation of its rows (apply_rotary_emb; a row's rotation does not depend on the other rows,
 * so rotating per stream is rotating the joint sequence), in one pass. Three GEMMs even where
 * the weights lie back to back (BFL's fused qkv): a fused [n, 3D] output would put q and k
 * rows at another stride. */
static void stream_qkv(flux_model *m, const flux_stream_w *w, int64_t r0, int64_t n, tensor mod) {
    op_ctx *c = m->ctx;
    const int64_t D = m->cfg.D;
    const tensor xn = rows(m->xn, r0, n);
    op_layernorm_modulate(c, xn, rows(m->h, r0, n), chunk(mod, D, 0), chunk(mod, D, 1), FLUX_EPS);
    op_linear(c, rows(m->q, r0, n), xn, w->q_w, &w->q_b, OP_ACT_NONE);
    op_linear(c, rows(m->k, r0, n), xn, w->k_w, &w->k_b, OP_ACT_NONE);
    op_linear(c, rows(m->v, r0, n), xn, w->v_w, &w->v_b, OP_ACT_NONE);
    const tensor cs = tensor_slice(m->cos, 0, r0, n), sn = tensor_slice(m->sin, 0, r0, n);
    op_rmsnorm_rope(c, heads(m, rows(m->q, r0, n)), w->norm_q, FLUX_EPS, cs, sn);
    op_rmsnorm_rope(c, heads(m, rows(m->k, r0, n)), w->norm_k, FLUX_EPS, cs, sn);
}

/* Attention over the whole joint sequence, q and k normed and rotated (no mask, scale
 * 1/sqrt(head_dim)) into out [1, L, D] (strided tokens) */
static void joint_attention(flux_model *m, tensor out) {
    op_ctx *c = m->ctx;
    op_attention(c, heads(m, out), heads(m, m->q), heads(m, m->k), heads(m, m->v), NULL,
                 (float)(1.0 / sqrt((double)m->cfg.head_dim)), 0);
}

/* The rest of one stream of a double block (FluxTransformerBlock.forward): gated output
 * projection, then the gated MLP on LN(x)(1 + scale2) + shift2. */
static void stream_out(flux_model *m, const flux_stream_w *w, int64_t r0, int64_t n, tensor mod) {
    op_ctx *c = m->ctx;
    const int64_t D = m->cfg.D;
    const tensor x = rows(m->h, r0, n), y = rows(m->y, r0, n), xn = rows(m->xn, r0, n);
    const tensor o = rows(tensor_slice(m->cat, 2, 0, D), r0, n);
    const tensor ff = rows(tensor_slice(m->cat, 2, D, m->cfg.mlp), r0, n);
    op_linear(c, y, o, w->out_w, &w->out_b, OP_ACT_NONE);
    op_gate_residual(c, x, chunk(mod, D, 2), y);
    op_layernorm_modulate(c, xn, x, chunk(mod, D, 3), chunk(mod, D, 4), FLUX_EPS);
    op_linear(c, ff, xn, w->ff1_w, &w->ff1_b, OP_ACT_GELU_TANH);
    op_linear(c, y, ff, w->ff2_w, &w->ff2_b, OP_ACT_NONE);
    op_gate_residual(c, x, chunk(mod, D, 5), y);
}

/* FluxTransformerBlock: text rows [0, T), image rows [T, L) of the joint stream */
static void double_block(flux_model *m, const flux_double_w *w) {
    const int64_t T = m->T, N = m->N;
    op_linear(m->ctx, m->mod, m->s, w->img.mod_w, &w->img.mod_b, OP_ACT_NONE);
    op_linear(m->ctx, m->cmod, m->s, w->txt.mod_w, &w->txt.mod_b, OP_ACT_NONE);
    stream_qkv(m, &w->txt, 0, T, m->cmod);
    stream_qkv(m, &w->img, T, N, m->mod);
    joint_attention(m, tensor_slice(m->cat, 2, 0, m->cfg.D));
    stream_out(m, &w->img, T, N, m->mod);
    stream_out(m, &w->txt, 0, T, m->cmod);
}

/* FluxSingleTransformerBlock: h += gate proj_out([attention | gelu(proj_mlp)]) over all rows */
static void single_block(flux_model *m, const flux_single_w *w) {
    op_ctx *c = m->ctx;
    const int64_t D = m->cfg.D;
    const tensor mod = tensor_slice(m->mod, 1, 0, 3 * D);
    op_linear(c, mod, m->s, w->mod_w, &w->mod_b, OP_ACT_NONE);
    op_layernorm_modulate(c, m->xn, m->h, chunk(mod, D, 0), chunk(mod, D, 1), FLUX_EPS);
    op_linear(c, tensor_slice(m->cat, 2, D, m->cfg.mlp), m->xn, w->mlp_w, &w->mlp_b,
              OP_ACT_GELU_TANH);
    op_linear(c, m->q, m->xn, w->q_w, &w->q_b, OP_ACT_NONE);
    op_linear(c, m->k, m->xn, w->k_w, &w->k_b, OP_ACT_NONE);
    op_linear(c, m->v, m->xn, w->v_w, &w->v_b, OP_ACT_NONE);
    op_rmsnorm_rope(c, heads(m, m->q), w->norm_q, FLUX_EPS, m->cos, m->sin);
    op_rmsnorm_rope(c, heads(m, m->k), w->norm_k, FLUX_EPS, m->cos, m->sin);
    joint_attention(m, tensor_slice(m->cat, 2, 0, D));
    op_linear(c, m->y, m->cat, w->out_w, &w->out_b, OP_ACT_NONE);
    op_gate_residual(c, m->h, chunk(mod, D, 2), m->y);
}

void flux_forward_tau(flux_model *m, tensor out, tensor x, float tau, float gs) {
    const flux_config *cf = &m->cfg;
    op_ctx *c = m->ctx;
    const int64_t D = cf->D, T = m->T, N = m->N;
    CHECK(m->mem && m->text_set);
    CHECK(x.ndim == 3 && x.shape[0] == 1 && x.shape[1] == N && x.shape[2] == cf->in_ch);
    CHECK(out.ndim == 3 && out.shape[0] == 1 && out.shape[1] == N && out.shape[2] == cf->in_ch);
    const flux_globals_w *g = &m->g;

    /* conditioning = timestep_embedder(proj(tau)) [+ guidance_embedder(proj(gs))]
     * + text_embedder(pooled): CombinedTimestep(Guidance)TextProjEmbeddings.forward, each add
     * rounded; the sinusoid is Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0) */
    op_timestep_embedding(c, m->tproj, &tau, 1, 0.0f, 1.0f, 10000.0f);
    op_linear(c, m->tmp, m->tproj, g->t1_w, &g->t1_b, OP_ACT_SILU);
    op_linear(c, m->temb, m->tmp, g->t2_w, &g->t2_b, OP_ACT_NONE);
    if (cf->guidance) {
        op_timestep_embedding(c, m->tproj, &gs, 1, 0.0f, 1.0f, 10000.0f);
        op_linear(c, m->tmp, m->tproj, g->g1_w, &g->g1_b, OP_ACT_SILU);
        op_linear(c, m->gemb, m->tmp, g->g2_w, &g->g2_b, OP_ACT_NONE);
        op_add(c, m->temb, m->temb, m->gemb);
    }
    op_add(c, m->temb, m->temb, m->pooled_emb);
    /* every modulation GEMV takes SiLU(conditioning) (AdaLayerNormZero*.silu) */
    op_act_apply(c, m->s, m->temb, OP_ACT_SILU);

    /* the joint stream: [context_embedder(t5); x_embedder(x)], text first */
    op_copy(c, rows(m->h, 0, T), m->ctx_emb);
    op_linear(c, rows(m->h, T, N), x, g->x_w, &g->x_b, OP_ACT_NONE);

    const int nd = (int)cf->n_double, nb = nd + (int)cf->n_single;
    for (int i = 0; i < nb; i++) {
        if (i < nd) {
            flux_double_w b;
            wbind_acquire(&m->blocks, i, &b);
            double_block(m, &b);
        } else {
            flux_single_w b;
            wbind_acquire(&m->blocks, i, &b);
            single_block(m, &b);
        }
        wbind_release(&m->blocks, i);
    }

    /* norm_out (AdaLayerNormContinuous: scale, shift; BFL stores shift, scale) and proj_out,
     * on the image rows */
    const tensor e = tensor_slice(m->mod, 1, 0, 2 * D);
    op_linear(c, e, m->s, g->nout_w, &g->nout_b, OP_ACT_NONE);
    const tensor scale = chunk(e, D, cf->bfl_names ? 1 : 0);
    const tensor shift = chunk(e, D, cf->bfl_names ? 0 : 1);
    op_layernorm_modulate(c, rows(m->xn, T, N), rows(m->h, T, N), shift, scale, FLUX_EPS);
    op_linear(c, out, rows(m->xn, T, N), g->proj_w, &g->proj_b, OP_ACT_NONE);
}

void flux_forward(flux_model *m, tensor out, tensor x, float t, float g) {
    float tau, gs;
    flux_time_inputs(m->dev, t, g, &tau, &gs);
    flux_forward_tau(m, out, x, tau, gs);
}

size_t flux_device_bytes(const flux_model *m) {
    return wt_blocks_device_bytes(m->blocks.blocks) + wt_blocks_device_bytes(m->globals.blocks) +
           m->mem_bytes;
}

void flux_free(flux_model *m) {
    if (!m) return;
    free_plan(m);
    wbind_free(&m->globals);
    wbind_free(&m->blocks);
    free(m);
}
