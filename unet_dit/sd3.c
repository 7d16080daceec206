/* sd3.c: the SD3.5 MMDiT as a straight sequence of ops, mirroring diffusers
 * transformer_sd3.py::SD3Transformer2DModel.forward and attention.py::JointTransformerBlock
 * (docs/MODEL-SPEC.md §2). The image stream x [B, N, D] and the text stream c [B, T, D] live in
 * their own buffers (the modulation ops take contiguous [B, n, D]); only the attention is joint:
 * each stream's q, k, v projections (one GEMM where the weights lie back to back) write the
 * rows of their tokens in qkv [B, N + T, 3D], image rows first, so the concatenation diffusers
 * makes is never copied, and one attention over the joint sequence writes o [B, N + T, D],
 * whose row ranges the streams' output projections read (batched GEMMs: a stream's rows of
 * each batch are a slice of the longer sequence). */
#include "unet_dit/sd3.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "weights/wbind.h"

#define SD3_EPS 1e-6f /* every LayerNorm (elementwise_affine=False) and the q/k RMSNorms */
#define SD3_TPROJ 256 /* Timesteps(num_channels=256) */
#define SD3_NAME_MAX 112
#define SD3_MAX_W 48 /* tensors in the largest block (a dual block, diffusers names) */

/* transformer_blocks.i (Stability: joint_blocks.i.x_block / context_block) */
typedef struct sd3_block_w {
    tensor mod_w, mod_b;   /* norm1.linear [6D or 9D, D]: shift, scale, gate, shift_mlp,
                              scale_mlp, gate_mlp (, shift2, scale2, gate2) */
    tensor cmod_w, cmod_b; /* norm1_context.linear [6D, D], the same order; last block [2D, D]:
                              scale, shift (Stability: shift, scale) */
    tensor q_w, q_b, k_w, k_b, v_w, v_b;       /* attn.to_q/k/v [D, D], [D] */
    tensor norm_q, norm_k;                     /* attn.norm_q/k.weight [head_dim] */
    tensor out_w, out_b;                       /* attn.to_out.0 [D, D], [D] */
    tensor cq_w, cq_b, ck_w, ck_b, cv_w, cv_b; /* attn.add_q/k/v_proj [D, D], [D] */
    tensor cnorm_q, cnorm_k;                   /* attn.norm_added_q/k.weight [head_dim] */
    tensor cout_w, cout_b;                     /* attn.to_add_out [D, D] (not the last block) */
    tensor q2_w, q2_b, k2_w, k2_b, v2_w, v2_b; /* attn2.to_q/k/v (dual blocks) */
    tensor norm_q2, norm_k2;                   /* attn2.norm_q/k.weight */
    tensor out2_w, out2_b;                     /* attn2.to_out.0 */
    tensor ff1_w, ff1_b, ff2_w, ff2_b;         /* ff.net.0.proj [mlp, D], ff.net.2 [D, mlp] */
    tensor cff1_w, cff1_b, cff2_w, cff2_b;     /* ff_context (not the last block) */
} sd3_block_w;

/* The weights outside the blocks, resident. */
typedef struct sd3_globals_w {
    tensor pe_w, pe_b;             /* pos_embed.proj [D, in_ch, p, p], [D] */
    tensor pos;                    /* pos_embed.pos_embed [1, M^2, D] */
    tensor t1_w, t1_b, t2_w, t2_b; /* timestep_embedder.linear_1 [D, 256], linear_2 [D, D] */
    tensor p1_w, p1_b, p2_w, p2_b; /* text_embedder.linear_1 [D, pooled], linear_2 [D, D] */
    tensor ctx_w, ctx_b;           /* context_embedder [D, joint_dim], [D] */
    tensor nout_w, nout_b;         /* norm_out.linear [2D, D]: scale, shift (Stability's
                                      final_layer.adaLN_modulation.1: shift, scale) */
    tensor proj_w, proj_b;         /* proj_out [p p out_ch, D] */
} sd3_globals_w;

struct sd3_model {
    sd3_config cfg;
    op_ctx *ctx;
    tensor_dev dev;
    dtype act;
    wbind_table blocks, globals; /* the joint blocks; the globals, held until sd3_free */
    sd3_globals_w g;
    int any_dual;
    /* the plan */
    int64_t B, hp, wp, N, T, L;
    void *mem;
    size_t mem_bytes;
    tensor x, xn, xn2, y;                 /* [B, N, D] image stream and its scratch */
    tensor ffx;                           /* [B, N, mlp] */
    tensor c, cn, yc;                     /* [B, T, D] text stream and its scratch */
    tensor ffc;                           /* [B, T, mlp] */
    tensor qkv;                           /* [B, L, 3D] q, k, v of the joint sequence */
    tensor o;                             /* [B, L, D] the attention's output */
    tensor patches;                       /* [B, D, hp, wp] the patch conv's output */
    tensor pos;                           /* [B, N, D] pos_embed cropped to the grid */
    tensor po;                            /* [B, N, p p out_ch] proj_out */
    tensor tproj;                         /* [B, 256] */
    tensor temb, s, tmp, tmp2;            /* [B, D] conditioning, SiLU of it, scratch */
    tensor mod, cmod;                     /* [B, 9D], [B, 6D] the running block's modulation */
    unsigned char skip[SD3_MAX_LAYERS];   /* blocks the forwards skip (skip-layer guidance) */
};

/* ---- weight names: a visitor lists each block's tensors (specs) and where each goes ---- */

typedef wbind_visit wvisit;
#define CFG(v) ((const sd3_config *)(v)->cfg)

/* Stability's fused qkv [3D, D]: rows bound in thirds to q, k, v */
static void wv_qkv(wvisit *v, tensor *const *ws, tensor *const *bs, const char *name) {
    const int64_t D = CFG(v)->D;
    wbind_fused(v, ws, bs, (int64_t[]){D, D, D}, 3, name, D);
}

/* k linears of [D, D] listed weights first, then biases, so that each lies right after the
 * one before in the provider's block (256-byte aligned sizes) and project() takes them in one
 * GEMM; the names' suffix ".weight" / ".bias" is added */
static void wv_linears(wvisit *v, tensor *const *ws, tensor *const *bs, const char *const *names,
                       int k) {
    const int64_t D = CFG(v)->D;
    char n[SD3_NAME_MAX];
    for (int i = 0; i < k; i++) {
        snprintf(n, sizeof n, "%s.weight", names[i]);
        wbind_one(v, ws[i], n, 2, (int64_t[]){D, D});
    }
    for (int i = 0; i < k; i++) {
        snprintf(n, sizeof n, "%s.bias", names[i]);
        wbind_one(v, bs[i], n, 1, (int64_t[]){D});
    }
}

/* block i in diffusers' names; the last block lacks to_add_out and ff_context, and its text
 * queries are never used (context_pre_only), so add_q_proj is not listed */
static void wv_block_diffusers(wvisit *v, int i, sd3_block_w *b) {
    const sd3_config *c = CFG(v);
    const int64_t D = c->D, hd = c->head_dim, mlp = c->mlp;
    const int last = i == c->layers - 1, dual = c->dual[i];
    snprintf(v->prefix, sizeof v->prefix, "transformer_blocks.%d.", i);
    wbind_linear(v, &b->mod_w, &b->mod_b, "norm1.linear", (dual ? 9 : 6) * D, D);
    wbind_linear(v, &b->cmod_w, &b->cmod_b, "norm1_context.linear", (last ? 2 : 6) * D, D);
    wv_linears(v, (tensor *[]){&b->q_w, &b->k_w, &b->v_w}, (tensor *[]){&b->q_b, &b->k_b, &b->v_b},
               (const char *[]){"attn.to_q", "attn.to_k", "attn.to_v"}, 3);
    if (c->qk_norm) {
        wbind_vec(v, &b->norm_q, "attn.norm_q.weight", hd);
        wbind_vec(v, &b->norm_k, "attn.norm_k.weight", hd);
        if (!last) wbind_vec(v, &b->cnorm_q, "attn.norm_added_q.weight", hd);
        wbind_vec(v, &b->cnorm_k, "attn.norm_added_k.weight", hd);
    }
    wbind_linear(v, &b->out_w, &b->out_b, "attn.to_out.0", D, D);
    if (last)
        wv_linears(v, (tensor *[]){&b->ck_w, &b->cv_w}, (tensor *[]){&b->ck_b, &b->cv_b},
                   (const char *[]){"attn.add_k_proj", "attn.add_v_proj"}, 2);
    else
        wv_linears(v, (tensor *[]){&b->cq_w, &b->ck_w, &b->cv_w},
                   (tensor *[]){&b->cq_b, &b->ck_b, &b->cv_b},
                   (const char *[]){"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"}, 3);
    if (!last) wbind_linear(v, &b->cout_w, &b->cout_b, "attn.to_add_out", D, D);
    if (dual) {
        wv_linears(v, (tensor *[]){&b->q2_w, &b->k2_w, &b->v2_w},
                   (tensor *[]){&b->q2_b, &b->k2_b, &b->v2_b},
                   (const char *[]){"attn2.to_q", "attn2.to_k", "attn2.to_v"}, 3);
        if (c->qk_norm) {
            wbind_vec(v, &b->norm_q2, "attn2.norm_q.weight", hd);
            wbind_vec(v, &b->norm_k2, "attn2.norm_k.weight", hd);
        }
        wbind_linear(v, &b->out2_w, &b->out2_b, "attn2.to_out.0", D, D);
    }
    wbind_linear(v, &b->ff1_w, &b->ff1_b, "ff.net.0.proj", mlp, D);
    wbind_linear(v, &b->ff2_w, &b->ff2_b, "ff.net.2", D, mlp);
    if (!last) {
        wbind_linear(v, &b->cff1_w, &b->cff1_b, "ff_context.net.0.proj", mlp, D);
        wbind_linear(v, &b->cff2_w, &b->cff2_b, "ff_context.net.2", D, mlp);
    }
}

/* the same in Stability's names (docs/MODEL-SPEC.md §2.7, convert_sd3_transformer_checkpoint_to_
 * diffusers read backwards) */
static void wv_block_original(wvisit *v, int i, sd3_block_w *b) {
    const sd3_config *c = CFG(v);
    const int64_t D = c->D, hd = c->head_dim, mlp = c->mlp;
    const int last = i == c->layers - 1, dual = c->dual[i];
    snprintf(v->prefix, sizeof v->prefix, "joint_blocks.%d.", i);
    wbind_linear(v, &b->mod_w, &b->mod_b, "x_block.adaLN_modulation.1", (dual ? 9 : 6) * D, D);
    wbind_linear(v, &b->cmod_w, &b->cmod_b, "context_block.adaLN_modulation.1", (last ? 2 : 6) * D,
                 D);
    wv_qkv(v, (tensor *[]){&b->q_w, &b->k_w, &b->v_w}, (tensor *[]){&b->q_b, &b->k_b, &b->v_b},
           "x_block.attn.qkv");
    wv_qkv(v, (tensor *[]){&b->cq_w, &b->ck_w, &b->cv_w},
           (tensor *[]){&b->cq_b, &b->ck_b, &b->cv_b}, "context_block.attn.qkv");
    if (c->qk_norm) {
        wbind_vec(v, &b->norm_q, "x_block.attn.ln_q.weight", hd);
        wbind_vec(v, &b->norm_k, "x_block.attn.ln_k.weight", hd);
        if (!last) wbind_vec(v, &b->cnorm_q, "context_block.attn.ln_q.weight", hd);
        wbind_vec(v, &b->cnorm_k, "context_block.attn.ln_k.weight", hd);
    }
    wbind_linear(v, &b->out_w, &b->out_b, "x_block.attn.proj", D, D);
    if (!last) wbind_linear(v, &b->cout_w, &b->cout_b, "context_block.attn.proj", D, D);
    if (dual) {
        wv_qkv(v, (tensor *[]){&b->q2_w, &b->k2_w, &b->v2_w},
               (tensor *[]){&b->q2_b, &b->k2_b, &b->v2_b}, "x_block.attn2.qkv");
        if (c->qk_norm) {
            wbind_vec(v, &b->norm_q2, "x_block.attn2.ln_q.weight", hd);
            wbind_vec(v, &b->norm_k2, "x_block.attn2.ln_k.weight", hd);
        }
        wbind_linear(v, &b->out2_w, &b->out2_b, "x_block.attn2.proj", D, D);
    }
    wbind_linear(v, &b->ff1_w, &b->ff1_b, "x_block.mlp.fc1", mlp, D);
    wbind_linear(v, &b->ff2_w, &b->ff2_b, "x_block.mlp.fc2", D, mlp);
    if (!last) {
        wbind_linear(v, &b->cff1_w, &b->cff1_b, "context_block.mlp.fc1", mlp, D);
        wbind_linear(v, &b->cff2_w, &b->cff2_b, "context_block.mlp.fc2", D, mlp);
    }
}

/* the struct only gives the fields' offsets */
static void wv_block(wvisit *v, int i) {
    sd3_block_w b;
    v->base = &b;
    if (CFG(v)->original_names)
        wv_block_original(v, i, &b);
    else
        wv_block_diffusers(v, i, &b);
}

static void wv_globals(wvisit *v, sd3_globals_w *g) {
    const sd3_config *c = CFG(v);
    const int64_t D = c->D, p = c->patch;
    const int o = c->original_names;
    v->base = g;
    v->prefix[0] = 0;
    wbind_one(v, &g->pe_w, o ? "x_embedder.proj.weight" : "pos_embed.proj.weight", 4,
              (int64_t[]){D, c->in_ch, p, p});
    wbind_vec(v, &g->pe_b, o ? "x_embedder.proj.bias" : "pos_embed.proj.bias", D);
    wbind_one(v, &g->pos, o ? "pos_embed" : "pos_embed.pos_embed", 3,
              (int64_t[]){1, c->pos_max * c->pos_max, D});
    wbind_linear(v, &g->t1_w, &g->t1_b,
                 o ? "t_embedder.mlp.0" : "time_text_embed.timestep_embedder.linear_1", D,
                 SD3_TPROJ);
    wbind_linear(v, &g->t2_w, &g->t2_b,
                 o ? "t_embedder.mlp.2" : "time_text_embed.timestep_embedder.linear_2", D, D);
    wbind_linear(v, &g->p1_w, &g->p1_b,
                 o ? "y_embedder.mlp.0" : "time_text_embed.text_embedder.linear_1", D,
                 c->pooled_dim);
    wbind_linear(v, &g->p2_w, &g->p2_b,
                 o ? "y_embedder.mlp.2" : "time_text_embed.text_embedder.linear_2", D, D);
    wbind_linear(v, &g->ctx_w, &g->ctx_b, "context_embedder", c->caption_dim, c->joint_dim);
    wbind_linear(v, &g->nout_w, &g->nout_b,
                 o ? "final_layer.adaLN_modulation.1" : "norm_out.linear", 2 * D, D);
    wbind_linear(v, &g->proj_w, &g->proj_b, o ? "final_layer.linear" : "proj_out",
                 p * p * c->out_ch, D);
}

/* ---- config ---- */

static int64_t count_blocks(const wt_source *src, const char *fmt) {
    char name[SD3_NAME_MAX];
    int64_t n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, fmt, (int)n);
        if (!wt_find(src, name)) return n;
    }
}

static err json_check(const char *path, const cJSON *root, const char *key, int64_t have) {
    int64_t v = have;
    TRY(wt_config_int(root, key, path, &v));
    FAIL_IF(v != have, ERR_FORMAT, "%s: config.json: %s is %lld, but the weights give %lld", path,
            key, (long long)v, (long long)have);
    return ERR_OK;
}

/* config.json's keys against the config inferred from the shapes */
static err apply_json(const cJSON *root, const char *path, void *arg) {
    const sd3_config *c = arg;
    const struct {
        const char *key;
        int64_t have;
    } keys[] = {{"num_layers", c->layers},
                {"attention_head_dim", c->head_dim},
                {"num_attention_heads", c->heads},
                {"joint_attention_dim", c->joint_dim},
                {"caption_projection_dim", c->caption_dim},
                {"pooled_projection_dim", c->pooled_dim},
                {"in_channels", c->in_ch},
                {"out_channels", c->out_ch},
                {"patch_size", c->patch},
                {"pos_embed_max_size", c->pos_max}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        TRY(json_check(path, root, keys[i].key, keys[i].have));
    const cJSON *qk = cJSON_GetObjectItemCaseSensitive(root, "qk_norm");
    if (qk) {
        const int rms = cJSON_IsString(qk) && !strcmp(qk->valuestring, "rms_norm");
        FAIL_IF(!(cJSON_IsNull(qk) && !c->qk_norm) && !(rms && c->qk_norm), ERR_FORMAT,
                "%s: config.json: qk_norm does not match the weights (which %s q/k norms)", path,
                c->qk_norm ? "have" : "lack");
    }
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(root, "dual_attention_layers");
    if (dl) {
        unsigned char want[SD3_MAX_LAYERS] = {0};
        FAIL_IF(!cJSON_IsArray(dl), ERR_FORMAT,
                "%s: config.json: dual_attention_layers is not a list", path);
        const cJSON *e;
        cJSON_ArrayForEach(e, dl) {
            FAIL_IF(!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= c->layers,
                    ERR_FORMAT, "%s: config.json: dual_attention_layers has a bad entry", path);
            want[(int)e->valuedouble] = 1;
        }
        for (int i = 0; i < c->layers; i++)
            FAIL_IF(want[i] != c->dual[i], ERR_FORMAT,
                    "%s: config.json: block %d is %s in dual_attention_layers, but the weights %s "
                    "attn2",
                    path, i, want[i] ? "listed" : "not listed", c->dual[i] ? "have" : "lack");
    }
    return ERR_OK;
}

/* Detects the names (setting "model.diffusion_model." where the original keys carry it) and
 * infers the config from the shapes, then checks it against config.json. */
static err detect_config(wt_source *src, sd3_config *c) {
    memset(c, 0, sizeof *c);
    const char *path = wt_path(src);
    if (!wt_find(src, "pos_embed.proj.weight") && !wt_find(src, "x_embedder.proj.weight") &&
        wt_find(src, "model.diffusion_model.x_embedder.proj.weight"))
        wt_set_prefix(src, "model.diffusion_model.");
    c->original_names = !wt_find(src, "pos_embed.proj.weight");
    const int o = c->original_names;
    FAIL_IF(o && !wt_find(src, "x_embedder.proj.weight"), ERR_FORMAT,
            "%s: not an SD3 transformer: neither 'pos_embed.proj.weight' (diffusers) nor "
            "'x_embedder.proj.weight' (Stability) is there",
            path);
    const df11_tensor *pe, *pos, *ctx, *pool, *ff, *po, *nq;
    TRY(wt_need(src, &pe, 4, "%s", o ? "x_embedder.proj.weight" : "pos_embed.proj.weight"));
    TRY(wt_need(src, &pos, 3, "%s", o ? "pos_embed" : "pos_embed.pos_embed"));
    TRY(wt_need(src, &ctx, 2, "context_embedder.weight"));
    TRY(wt_need(src, &pool, 2, "%s",
                o ? "y_embedder.mlp.0.weight" : "time_text_embed.text_embedder.linear_1.weight"));
    TRY(wt_need(src, &ff, 2, "%s",
                o ? "joint_blocks.0.x_block.mlp.fc1.weight"
                  : "transformer_blocks.0.ff.net.0.proj.weight"));
    TRY(wt_need(src, &po, 2, "%s", o ? "final_layer.linear.weight" : "proj_out.weight"));
    c->D = pe->shape[0];
    c->in_ch = pe->shape[1];
    c->patch = pe->shape[2];
    FAIL_IF(pe->shape[3] != c->patch || c->patch < 1, ERR_FORMAT,
            "%s: the patch embedding's kernel is %lld x %lld, not square", path,
            (long long)pe->shape[2], (long long)pe->shape[3]);
    c->pos_max = (int64_t)llround(sqrt((double)pos->shape[1]));
    FAIL_IF(c->pos_max * c->pos_max != pos->shape[1] || pos->shape[2] != c->D, ERR_FORMAT,
            "%s: pos_embed is [%lld, %lld, %lld], expected [1, M^2, %lld]", path,
            (long long)pos->shape[0], (long long)pos->shape[1], (long long)pos->shape[2],
            (long long)c->D);
    c->caption_dim = ctx->shape[0];
    c->joint_dim = ctx->shape[1];
    FAIL_IF(c->caption_dim != c->D, ERR_UNSUPPORTED,
            "%s: caption_projection_dim %lld differs from the hidden size %lld", path,
            (long long)c->caption_dim, (long long)c->D);
    c->pooled_dim = pool->shape[1];
    c->mlp = ff->shape[0];
    c->out_ch = po->shape[0] / (c->patch * c->patch);
    c->layers = count_blocks(src, o ? "joint_blocks.%d.x_block.adaLN_modulation.1.weight"
                                    : "transformer_blocks.%d.norm1.linear.weight");
    FAIL_IF(c->layers < 1 || c->layers > SD3_MAX_LAYERS, ERR_FORMAT,
            "%s: %lld SD3 blocks (1 to %d handled)", path, (long long)c->layers, SD3_MAX_LAYERS);
    nq = wt_find(src, o ? "joint_blocks.0.x_block.attn.ln_q.weight"
                        : "transformer_blocks.0.attn.norm_q.weight");
    c->qk_norm = nq != NULL;
    c->head_dim = nq ? nq->shape[0] : 64; /* every SD3 has 64-dim heads */
    FAIL_IF(c->head_dim < 1 || c->D % c->head_dim, ERR_FORMAT,
            "%s: hidden size %lld is not a multiple of the head size %lld", path, (long long)c->D,
            (long long)c->head_dim);
    c->heads = c->D / c->head_dim;
    char name[SD3_NAME_MAX];
    for (int i = 0; i < c->layers; i++) {
        snprintf(name, sizeof name,
                 o ? "joint_blocks.%d.x_block.attn2.qkv.weight"
                   : "transformer_blocks.%d.attn2.to_q.weight",
                 i);
        c->dual[i] = wt_find(src, name) != NULL;
    }
    return wt_config_apply(src, apply_json, c);
}

/* ---- loading ---- */

/* the embedders and the final layer: one block, resident, held until the model is freed */
static void wv_globals_block(wvisit *v, int i) {
    sd3_globals_w g;
    wv_globals(v, &g);
}

err sd3_load(wt_source *src, op_ctx *ctx, const sd3_load_opts *o, sd3_model **out) {
    *out = NULL;
    sd3_config cfg;
    TRY(detect_config(src, &cfg));
    sd3_model *m = calloc(1, sizeof *m);
    FAIL_IF(!m, ERR_NOMEM, "out of memory");
    m->cfg = cfg;
    m->ctx = ctx;
    m->dev = op_ctx_dev(ctx);
    m->act = m->dev == TENSOR_CPU ? DTYPE_F32 : DTYPE_BF16;
    int ndual = 0;
    for (int i = 0; i < cfg.layers; i++)
        ndual += cfg.dual[i];
    m->any_dual = ndual > 0;
    wt_blocks_config bc = {
        .ctx = ctx, .mode = o ? o->mode : WP_RESIDENT, .budget = o ? o->budget : 0};
    err e = wbind_load_held(src, &m->cfg, SD3_MAX_W, wv_globals_block, &bc, &m->globals, &m->g);
    if (!e) e = wbind_load(src, &m->cfg, (int)cfg.layers, SD3_MAX_W, wv_block, &bc, &m->blocks);
    if (e) {
        sd3_free(m);
        return e;
    }
    static const char *modes[] = {"resident", "DF11 per block", "DF11 streamed"};
    LOG_INFO(
        "sd3: %s names: D %lld (%lld heads x %lld), %lld blocks (%d dual-attention), MLP "
        "%lld, pos_embed %lld^2, text %lld, pooled %lld; weights %s, %.1f MiB on the device",
        cfg.original_names ? "Stability" : "diffusers", (long long)cfg.D, (long long)cfg.heads,
        (long long)cfg.head_dim, (long long)cfg.layers, ndual, (long long)cfg.mlp,
        (long long)cfg.pos_max, (long long)cfg.joint_dim, (long long)cfg.pooled_dim,
        m->dev == TENSOR_CPU ? "mapped on the host" : modes[bc.mode],
        (wt_blocks_device_bytes(m->blocks.blocks) + wt_blocks_device_bytes(m->globals.blocks)) /
            1048576.0);
    *out = m;
    return ERR_OK;
}

const sd3_config *sd3_get_config(const sd3_model *m) { return &m->cfg; }

/* ---- the plan ---- */

/* a [d0, d1] (d2 0) or [d0, d1, d2] activation of the plan's buffer */
static tensor carve(op_carver *cv, dtype dt, int64_t d0, int64_t d1, int64_t d2) {
    return op_carve(cv, dt, d2 ? 3 : 2, (int64_t[]){d0, d1, d2});
}

static void carve_all(sd3_model *m, op_carver *cv) {
    const sd3_config *c = &m->cfg;
    const int64_t B = m->B, N = m->N, T = m->T, D = c->D;
    const dtype a = m->act;
    tensor *img[] = {&m->x, &m->xn, &m->y, &m->pos};
    for (size_t i = 0; i < sizeof img / sizeof img[0]; i++)
        *img[i] = carve(cv, a, B, N, D);
    m->xn2 = m->any_dual ? carve(cv, a, B, N, D) : m->xn;
    m->ffx = carve(cv, a, B, N, c->mlp);
    tensor *txt[] = {&m->c, &m->cn, &m->yc};
    for (size_t i = 0; i < sizeof txt / sizeof txt[0]; i++)
        *txt[i] = carve(cv, a, B, T, D);
    m->ffc = carve(cv, a, B, T, c->mlp);
    m->qkv = carve(cv, a, B, m->L, 3 * D);
    m->o = carve(cv, a, B, m->L, D);
    m->patches = carve(cv, a, B, D, N);
    m->patches = tensor_reshape(m->patches, 4, (int64_t[]){B, D, m->hp, m->wp});
    m->po = carve(cv, a, B, N, c->patch * c->patch * c->out_ch);
    m->tproj = carve(cv, a, B, SD3_TPROJ, 0);
    m->temb = carve(cv, a, B, D, 0);
    m->s = carve(cv, a, B, D, 0);
    m->tmp = carve(cv, a, B, D, 0);
    m->tmp2 = carve(cv, a, B, D, 0);
    m->mod = carve(cv, a, B, 9 * D, 0);
    m->cmod = carve(cv, a, B, 6 * D, 0);
}

static void free_plan(sd3_model *m) {
    op_mem_free(m->ctx, m->mem);
    m->mem = NULL;
    m->mem_bytes = 0;
}

/* PatchEmbed.cropped_pos_embed: the centred hp x wp window of the M x M grid, row-major, once
 * per batch row (op_add takes equal shapes) */
static void crop_pos(sd3_model *m) {
    const int64_t M = m->cfg.pos_max, D = m->cfg.D;
    const int64_t top = (M - m->hp) / 2, left = (M - m->wp) / 2;
    tensor grid = tensor_reshape(m->g.pos, 3, (int64_t[]){M, M, D});
    grid = tensor_slice(tensor_slice(grid, 0, top, m->hp), 1, left, m->wp);
    for (int64_t b = 0; b < m->B; b++) {
        tensor dst = tensor_slice(m->pos, 0, b, 1);
        op_copy(m->ctx, tensor_reshape(dst, 3, (int64_t[]){m->hp, m->wp, D}), grid);
    }
}

err sd3_plan(sd3_model *m, int64_t B, int64_t h, int64_t w, int64_t T) {
    const int64_t p = m->cfg.patch, M = m->cfg.pos_max;
    FAIL_IF(B < 1 || T < 1 || h < p || w < p || h % p || w % p, ERR_ARG,
            "sd3: plan batch %lld, latent %lld x %lld, %lld text tokens: the latent sides must be "
            "positive multiples of the patch %lld",
            (long long)B, (long long)h, (long long)w, (long long)T, (long long)p);
    FAIL_IF(h / p > M || w / p > M, ERR_ARG,
            "sd3: a latent of %lld x %lld is %lld x %lld patches, more than pos_embed's %lld x "
            "%lld grid",
            (long long)h, (long long)w, (long long)(h / p), (long long)(w / p), (long long)M,
            (long long)M);
    free_plan(m);
    m->B = B, m->hp = h / p, m->wp = w / p, m->N = m->hp * m->wp, m->T = T, m->L = m->N + T;
    op_carver cv = {.dev = m->dev};
    carve_all(m, &cv);
    const size_t bytes = cv.off;
    if (op_mem_alloc(m->ctx, bytes, &m->mem)) m->mem = NULL;
    FAIL_IF(!m->mem, ERR_NOMEM,
            "sd3: %zu bytes (%.1f MiB) of activations for batch %lld, %lld x %lld patches and "
            "%lld text tokens could not be allocated on the %s",
            bytes, bytes / 1048576.0, (long long)B, (long long)m->hp, (long long)m->wp,
            (long long)T, m->dev == TENSOR_CUDA ? "GPU" : "host");
    m->mem_bytes = bytes;
    cv = (op_carver){.base = m->mem, .dev = m->dev};
    carve_all(m, &cv);
    crop_pos(m);
    LOG_INFO("sd3: plan batch %lld, %lld x %lld image + %lld text tokens: activations %.1f MiB",
             (long long)B, (long long)m->hp, (long long)m->wp, (long long)T, bytes / 1048576.0);
    return ERR_OK;
}

/* ---- the forward ---- */

static tensor chunk(tensor mod, int64_t D, int i) { return tensor_slice(mod, 1, i * D, D); }
/* [B, n, D] (tokens may be strided) as heads [B, n, H, hd] */
static tensor heads(const sd3_model *m, tensor t) {
    t.ndim = 4;
    t.shape[2] = m->cfg.heads, t.shape[3] = m->cfg.head_dim;
    t.stride[2] = m->cfg.head_dim, t.stride[3] = 1;
    return t;
}

/* rows [r0, r0 + n) of every batch of t [B, L, X] */
static tensor seq(tensor t, int64_t r0, int64_t n) { return tensor_slice(t, 1, r0, n); }
/* q (0), k (1) or v (2) of qkv rows [B, n, 3D], as heads [B, n, H, hd] */
static tensor part(const sd3_model *m, tensor qkv, int i) {
    return heads(m, tensor_slice(qkv, 2, i * m->cfg.D, m->cfg.D));
}

/* t[1..k) each start where the one before ends */
static int adjacent(const tensor *t, int k) {
    for (int i = 1; i < k; i++) {
        const tensor *p = &t[i - 1];
        const char *end = (const char *)p->data + dtype_nbytes(p->dt, (uint64_t)tensor_numel(p));
        if (!tensor_is_contiguous(p) || t[i].dt != p->dt || (const char *)t[i].data != end)
            return 0;
    }
    return 1;
}

/* out [B, n, k D] = the k projections of xn side by side (weights ws, biases bs): one GEMM
 * where the weights and the biases lie back to back, as the blocks list them, else k */
static void project(sd3_model *m, tensor out, tensor xn, const tensor *ws, const tensor *bs,
                    int k) {
    const int64_t D = m->cfg.D;
    if (adjacent(ws, k) && adjacent(bs, k)) {
        tensor w = ws[0], b = bs[0];
        w.shape[0] = k * D, b.shape[0] = k * D;
        op_linear(m->ctx, out, xn, w, &b, OP_ACT_NONE);
        return;
    }
    for (int i = 0; i < k; i++)
        op_linear(m->ctx, tensor_slice(out, 2, i * D, D), xn, ws[i], &bs[i], OP_ACT_NONE);
}

/* diffusers RMSNorm on every head of q (i 0) or k (1) of qkv rows, in place: two roundings
 * (normalised, then times the weight), unlike FLUX's fused one; skipped without qk_norm */
static void qk_norm(sd3_model *m, tensor qkv, int i, tensor w) {
    if (w.data) op_rmsnorm2_heads(m->ctx, part(m, qkv, i), w, SD3_EPS);
}

static float attn_scale(const sd3_model *m) { return (float)(1.0 / sqrt((double)m->cfg.head_dim)); }

/* x += gate_mlp ff(LN(x)(1 + scale_mlp) + shift_mlp), mod chunks 3, 4, 5 (FeedForward with
 * gelu-approximate: net.0.proj, tanh GELU, net.2) */
static void mlp(sd3_model *m, tensor x, tensor xn, tensor hid, tensor y, tensor mod, tensor w1,
                tensor b1, tensor w2, tensor b2) {
    op_ctx *c = m->ctx;
    const int64_t D = m->cfg.D;
    op_layernorm_modulate(c, xn, x, chunk(mod, D, 3), chunk(mod, D, 4), SD3_EPS);
    op_linear(c, hid, xn, w1, &b1, OP_ACT_GELU_TANH);
    op_linear(c, y, hid, w2, &b2, OP_ACT_NONE);
    op_gate_residual(c, x, chunk(mod, D, 5), y);
}

/* JointTransformerBlock.forward (with SD35AdaLayerNormZeroX for dual blocks); last: the
 * context_pre_only block, whose text stream ends after giving its keys and values */
static void joint_block(sd3_model *m, const sd3_block_w *w, int last, int dual) {
    op_ctx *c = m->ctx;
    const sd3_config *cf = &m->cfg;
    const int64_t D = cf->D, N = m->N, T = m->T;
    const tensor mod = tensor_slice(m->mod, 1, 0, (dual ? 9 : 6) * D);
    const tensor cmod = tensor_slice(m->cmod, 1, 0, (last ? 2 : 6) * D);
    op_linear(c, mod, m->s, w->mod_w, &w->mod_b, OP_ACT_NONE);
    op_linear(c, cmod, m->s, w->cmod_w, &w->cmod_b, OP_ACT_NONE);

    /* norm1 (both modulations from the one LayerNorm of the block input) and norm1_context */
    op_layernorm_modulate(c, m->xn, m->x, chunk(mod, D, 0), chunk(mod, D, 1), SD3_EPS);
    if (dual) op_layernorm_modulate(c, m->xn2, m->x, chunk(mod, D, 6), chunk(mod, D, 7), SD3_EPS);
    if (last) {
        /* AdaLayerNormContinuous: scale, shift (Stability stores shift, scale) */
        const int o = cf->original_names;
        op_layernorm_modulate(c, m->cn, m->c, chunk(cmod, D, o ? 0 : 1), chunk(cmod, D, o ? 1 : 0),
                              SD3_EPS);
    } else {
        op_layernorm_modulate(c, m->cn, m->c, chunk(cmod, D, 0), chunk(cmod, D, 1), SD3_EPS);
    }

    /* JointAttnProcessor2_0: q, k, v of the image rows then the text rows; no RoPE */
    const tensor qx = seq(m->qkv, 0, N), qc = seq(m->qkv, N, T);
    project(m, qx, m->xn, (tensor[]){w->q_w, w->k_w, w->v_w}, (tensor[]){w->q_b, w->k_b, w->v_b},
            3);
    if (last)
        project(m, tensor_slice(qc, 2, D, 2 * D), m->cn, (tensor[]){w->ck_w, w->cv_w},
                (tensor[]){w->ck_b, w->cv_b}, 2);
    else
        project(m, qc, m->cn, (tensor[]){w->cq_w, w->ck_w, w->cv_w},
                (tensor[]){w->cq_b, w->ck_b, w->cv_b}, 3);
    qk_norm(m, qx, 0, w->norm_q);
    qk_norm(m, qx, 1, w->norm_k);
    if (!last) qk_norm(m, qc, 0, w->cnorm_q);
    qk_norm(m, qc, 1, w->cnorm_k);
    /* the joint sequence's queries (the last block: the image's only) over all its keys */
    const int64_t nq = last ? N : m->L;
    op_attention(c, heads(m, seq(m->o, 0, nq)), part(m, seq(m->qkv, 0, nq), 0), part(m, m->qkv, 1),
                 part(m, m->qkv, 2), NULL, attn_scale(m), 0);

    /* image: x += gate attn.to_out(O_img) */
    op_linear(c, m->y, seq(m->o, 0, N), w->out_w, &w->out_b, OP_ACT_NONE);
    op_gate_residual(c, m->x, chunk(mod, D, 2), m->y);
    if (dual) {
        /* x += gate2 attn2(x̂₂): self-attention over the image tokens only (AttnProcessor2_0),
         * in the image rows of qkv and o (the text rows of o wait for to_add_out) */
        project(m, qx, m->xn2, (tensor[]){w->q2_w, w->k2_w, w->v2_w},
                (tensor[]){w->q2_b, w->k2_b, w->v2_b}, 3);
        qk_norm(m, qx, 0, w->norm_q2);
        qk_norm(m, qx, 1, w->norm_k2);
        op_attention(c, heads(m, seq(m->o, 0, N)), part(m, qx, 0), part(m, qx, 1), part(m, qx, 2),
                     NULL, attn_scale(m), 0);
        op_linear(c, m->y, seq(m->o, 0, N), w->out2_w, &w->out2_b, OP_ACT_NONE);
        op_gate_residual(c, m->x, chunk(mod, D, 8), m->y);
    }
    mlp(m, m->x, m->xn, m->ffx, m->y, mod, w->ff1_w, w->ff1_b, w->ff2_w, w->ff2_b);
    if (last) return;

    /* text: c += cgate attn.to_add_out(O_txt), then its own gated MLP */
    op_linear(c, m->yc, seq(m->o, N, T), w->cout_w, &w->cout_b, OP_ACT_NONE);
    op_gate_residual(c, m->c, chunk(cmod, D, 2), m->yc);
    mlp(m, m->c, m->cn, m->ffc, m->yc, cmod, w->cff1_w, w->cff1_b, w->cff2_w, w->cff2_b);
}

/* every activation of the plan, each [B, ...] */
#define SD3_ACTS 24
static void acts(sd3_model *m, tensor **l) {
    tensor *a[SD3_ACTS] = {&m->x,     &m->xn,  &m->xn2,  &m->y,     &m->ffx,   &m->c,
                           &m->cn,    &m->yc,  &m->ffc,  &m->qkv,   &m->o,     &m->patches,
                           &m->pos,   &m->po,  &m->tproj, &m->temb, &m->s,     &m->tmp,
                           &m->tmp2,  &m->mod, &m->cmod, NULL,      NULL,      NULL};
    memcpy(l, a, sizeof a);
}

static void forward(sd3_model *m, tensor out, tensor x, const float *t, tensor ctxt, tensor pooled) {
    const sd3_config *cf = &m->cfg;
    op_ctx *c = m->ctx;
    const int64_t B = m->B, D = cf->D, p = cf->patch, N = m->N;
    CHECK(m->mem);
    CHECK(x.ndim == 4 && x.shape[0] == B && x.shape[1] == cf->in_ch && x.shape[2] == m->hp * p &&
          x.shape[3] == m->wp * p);
    CHECK(out.ndim == 4 && out.shape[0] == B && out.shape[1] == cf->out_ch &&
          out.shape[2] == m->hp * p && out.shape[3] == m->wp * p);
    CHECK(ctxt.ndim == 3 && ctxt.shape[0] == B && ctxt.shape[1] == m->T &&
          ctxt.shape[2] == cf->joint_dim);
    CHECK(pooled.ndim == 2 && pooled.shape[0] == B && pooled.shape[1] == cf->pooled_dim);
    const sd3_globals_w *g = &m->g;

    /* temb = timestep_embedder(proj(t)) + text_embedder(pooled)
     * (CombinedTimestepTextProjEmbeddings; Timesteps(256, flip_sin_to_cos=True,
     * downscale_freq_shift=0) on the unscaled scheduler timestep) */
    op_timestep_embedding(c, m->tproj, t, 1, 0.0f, 1.0f, 10000.0f);
    op_linear(c, m->tmp, m->tproj, g->t1_w, &g->t1_b, OP_ACT_SILU);
    op_linear(c, m->temb, m->tmp, g->t2_w, &g->t2_b, OP_ACT_NONE);
    op_linear(c, m->tmp, pooled, g->p1_w, &g->p1_b, OP_ACT_SILU);
    op_linear(c, m->tmp2, m->tmp, g->p2_w, &g->p2_b, OP_ACT_NONE);
    op_add(c, m->temb, m->temb, m->tmp2);
    /* every modulation takes SiLU(temb) (AdaLayerNormZero*.silu) */
    op_act_apply(c, m->s, m->temb, OP_ACT_SILU);

    /* PatchEmbed: conv p x p stride p, flatten(2).transpose(1, 2), + the cropped pos_embed */
    static const int nopad[4] = {0, 0, 0, 0};
    op_conv2d(c, m->patches, x, g->pe_w, &g->pe_b, (int)p, nopad);
    const tensor pt = tensor_reshape(m->patches, 3, (int64_t[]){B, D, N});
    op_copy(c, m->x, tensor_transpose(pt, 1, 2));
    op_add(c, m->x, m->x, m->pos);
    op_linear(c, m->c, ctxt, g->ctx_w, &g->ctx_b, OP_ACT_NONE);

    const int nb = (int)cf->layers;
    for (int i = 0; i < nb; i++) {
        sd3_block_w b;
        memset(&b, 0, sizeof b);
        /* a skipped block is still acquired: WP_STREAM expects the blocks in cyclic order */
        wbind_acquire(&m->blocks, i, &b);
        if (!m->skip[i]) joint_block(m, &b, i == nb - 1, cf->dual[i]);
        wbind_release(&m->blocks, i);
    }

    /* norm_out (AdaLayerNormContinuous: scale, shift; Stability: shift, scale), proj_out, then
     * unpatchify (features ordered (p, q, c)) */
    const tensor e = tensor_slice(m->mod, 1, 0, 2 * D);
    op_linear(c, e, m->s, g->nout_w, &g->nout_b, OP_ACT_NONE);
    const int o = cf->original_names;
    op_layernorm_modulate(c, m->xn, m->x, chunk(e, D, o ? 0 : 1), chunk(e, D, o ? 1 : 0), SD3_EPS);
    op_linear(c, m->po, m->xn, g->proj_w, &g->proj_b, OP_ACT_NONE);
    op_unpatchify(c, out, m->po, (int)p);
}

void sd3_forward(sd3_model *m, tensor out, tensor x, const float *t, tensor ctxt, tensor pooled) {
    const int64_t b = x.shape[0], B = m->B;
    CHECK(m->mem && x.ndim == 4 && b >= 1 && b <= B);
    if (b == B) {
        forward(m, out, x, t, ctxt, pooled);
        return;
    }
    /* a smaller batch runs on the first b rows of every activation */
    tensor *l[SD3_ACTS], full[SD3_ACTS];
    acts(m, l);
    for (int i = 0; l[i]; i++)
        full[i] = *l[i], *l[i] = tensor_slice(*l[i], 0, 0, b);
    m->B = b;
    forward(m, out, x, t, ctxt, pooled);
    m->B = B;
    for (int i = 0; l[i]; i++)
        *l[i] = full[i];
}

err sd3_set_skip_layers(sd3_model *m, const int *layers, int n) {
    for (int i = 0; i < n; i++)
        FAIL_IF(layers[i] < 0 || layers[i] >= m->cfg.layers, ERR_ARG,
                "skip layer %d: the transformer has blocks 0 to %lld", layers[i],
                (long long)m->cfg.layers - 1);
    memset(m->skip, 0, sizeof m->skip);
    for (int i = 0; i < n; i++)
        m->skip[layers[i]] = 1;
    return ERR_OK;
}

size_t sd3_device_bytes(const sd3_model *m) {
    return wt_blocks_device_bytes(m->blocks.blocks) + wt_blocks_device_bytes(m->globals.blocks) +
           m->mem_bytes;
}

void sd3_free(sd3_model *m) {
    if (!m) return;
    free_plan(m);
    wbind_free(&m->globals);
    wbind_free(&m->blocks);
    free(m);
}
