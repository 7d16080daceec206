/* clip.c: the CLIP text transformer as a straight sequence of ops, mirroring transformers
 * models/clip/modeling_clip.py (CLIPTextTransformer.forward, CLIPEncoderLayer.forward,
 * CLIPAttention, CLIPMLP, CLIPTextModelWithProjection.forward). docs/MODEL-SPEC.md §4.1. Weights in
 * HF names, or in raw OpenCLIP names (open_clip transformer.py: TextTransformer,
 * ResidualAttentionBlock over nn.MultiheadAttention) bound to the same fields (wbind.h). */
#include "text_encoder/clip.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "weights/wbind.h"

#define CLIP_HEAD_DIM 64 /* every CLIP text model (L, G) has 64-wide heads */
#define CLIP_PREFIX_MAX 128
#define CLIP_NAME_MAX 256
#define CLIP_ALIGN 256

/* Blocks in the order the forward uses them (so any provider mode could serve them): 0 the
 * embeddings, 1 + i layer i, layers + 1 the final norm and projection. Shapes: D hidden, I
 * intermediate, V vocab, T positions, P projection; HF names, OpenCLIP's in brackets. */
typedef struct clip_embed_w {
    tensor tok; /* embeddings.token_embedding.weight [V, D] (token_embedding.weight) */
    tensor pos; /* embeddings.position_embedding.weight [T, D] (positional_embedding) */
} clip_embed_w;

/* encoder.layers.i (transformer.resblocks.i, whose nn.MultiheadAttention keeps q, k, v as the
 * row thirds of one in_proj) */
typedef struct clip_layer_w {
    tensor ln1_w, ln1_b; /* layer_norm1 [D], [D] (ln_1) */
    tensor q_w, q_b;     /* self_attn.q_proj [D, D], [D] (attn.in_proj_weight [3D, D] rows
                            [0, D), attn.in_proj_bias [3D] the same rows) */
    tensor k_w, k_b;     /* self_attn.k_proj [D, D], [D] (in_proj rows [D, 2D)) */
    tensor v_w, v_b;     /* self_attn.v_proj [D, D], [D] (in_proj rows [2D, 3D)) */
    tensor o_w, o_b;     /* self_attn.out_proj [D, D], [D] (attn.out_proj) */
    tensor ln2_w, ln2_b; /* layer_norm2 [D], [D] (ln_2) */
    tensor fc1_w, fc1_b; /* mlp.fc1 [I, D], [I] (mlp.c_fc) */
    tensor fc2_w, fc2_b; /* mlp.fc2 [D, I], [D] (mlp.c_proj) */
} clip_layer_w;

typedef struct clip_final_w {
    tensor ln_w, ln_b; /* final_layer_norm [D], [D] (ln_final) */
    tensor proj;       /* text_projection.weight [P, D], optional, outside "text_model."
                          (text_projection, stored [D, P] for x·P: bound transposed) */
} clip_final_w;

#define CLIP_MAX_W 16 /* tensors in the largest block (a layer in HF names) */

typedef struct clip_config {
    int64_t dim;       /* D, hidden_size */
    int64_t heads;     /* H; head dim D / H */
    int64_t layers;    /* num_hidden_layers */
    int64_t inter;     /* intermediate_size (fc1 rows) */
    int64_t vocab;     /* token_embedding rows */
    int64_t positions; /* max_position_embeddings (77) */
    int64_t proj;      /* text_projection rows, 0 without one */
    op_act act;        /* hidden_act */
    int openclip;      /* raw OpenCLIP names (positional_embedding, transformer.resblocks...) */
    float eps;         /* layer_norm_eps */
    int64_t eos;       /* eos_token_id (2 selects transformers' legacy argmax pooling) */
} clip_config;

struct clip_model {
    clip_config cfg;
    op_ctx *ctx;
    wbind_table w;               /* the blocks above */
    char outer[CLIP_PREFIX_MAX]; /* text_projection.weight's prefix */
    char inner[CLIP_PREFIX_MAX]; /* the text model's: outer or outer + "text_model." */
    /* activations, one allocation on the ctx's device: [positions, .] each */
    void *act_mem;
    size_t act_bytes;
    tensor h;            /* [L,D] residual stream */
    tensor x;            /* [L,D] normed input of a sublayer; final-normed output */
    tensor q, k, v, att; /* [L,D] */
    tensor t;            /* [L,D] sublayer output */
    tensor f;            /* [L,inter] MLP hidden */
    int32_t *pos_ids;    /* 0..positions-1 on the host */
};

static const char *act_name(op_act a) {
    switch (a) {
    case OP_ACT_QUICK_GELU: return "quick_gelu";
    case OP_ACT_GELU_ERF: return "gelu";
    case OP_ACT_GELU_TANH: return "gelu_tanh";
    default: return "none";
    }
}

/* HF: the tensor that marks a text model, after its inner prefix; raw OpenCLIP: the same */
static const char hf_key[] = "embeddings.token_embedding.weight";
static const char oc_key[] = "transformer.resblocks.0.attn.in_proj_weight";

/* The prefix in front of key in the file (for hf_key ending in "text_model." in the HF layout;
 * transformers 5 saves a bare CLIPTextModel without it), *found whether there is one; ERR_ARG
 * when the file holds more than one text model (the caller then names one). */
static err find_inner(const wt_source *src, const char *key, char *inner, int *found_out) {
    int found = 0;
    for (int i = 0; i < wt_count(src); i++) {
        const char *name = wt_at(src, i)->name;
        size_t pl;
        if (!wt_name_prefix(name, key, &pl)) continue;
        FAIL_IF(pl >= CLIP_PREFIX_MAX, ERR_FORMAT, "%s: tensor '%s': prefix too long", wt_path(src),
                name);
        if (found && (strlen(inner) != pl || strncmp(inner, name, pl) != 0))
            FAIL(ERR_ARG, "%s: two CLIP text models, under '%s' and '%.*s'; pass the prefix of one",
                 wt_path(src), inner, (int)pl, name);
        memcpy(inner, name, pl);
        inner[pl] = 0;
        found = 1;
    }
    *found_out = found;
    return ERR_OK;
}

/* Whether prefix + key names a tensor. */
static int has(const wt_source *src, const char *prefix, const char *key) {
    char probe[CLIP_NAME_MAX];
    snprintf(probe, sizeof probe, "%s%s", prefix, key);
    return wt_find(src, probe) != NULL;
}

/* The two prefixes: outer (where text_projection.weight lives) and inner (the text model's
 * tensors: outer + "text_model." in the HF layout, or outer itself). */
static err set_prefixes(clip_model *m, const wt_source *src, const char *prefix) {
    static const char tm[] = "text_model.", tf[] = "transformer.";
    int *oc = &m->cfg.openclip;
    if (prefix) {
        FAIL_IF(strlen(prefix) >= CLIP_PREFIX_MAX - strlen(tm), ERR_ARG,
                "CLIP prefix too long: '%s'", prefix);
        strcpy(m->outer, prefix);
        snprintf(m->inner, sizeof m->inner, "%s%s", prefix, tm);
        if (has(src, m->inner, hf_key)) return ERR_OK;
        strcpy(m->inner, prefix);
        if (has(src, prefix, hf_key)) return ERR_OK;
        /* raw OpenCLIP under prefix, or under the part before "transformer." (the prefix the HF
           layout has there, "text_encoders.clip_g.transformer.", given for "text_encoders.clip_g.")
         */
        size_t ol;
        if (!has(src, prefix, oc_key) && wt_name_prefix(prefix, tf, &ol)) m->outer[ol] = 0;
        *oc = has(src, m->outer, oc_key);
        if (!*oc) strcpy(m->outer, prefix); /* neither: HF names, whose absence is reported */
        strcpy(m->inner, m->outer);
        return ERR_OK;
    }
    int hf = 0;
    char oc_inner[CLIP_PREFIX_MAX];
    TRY(find_inner(src, hf_key, m->inner, &hf));
    TRY(find_inner(src, oc_key, oc_inner, oc));
    FAIL_IF(hf && *oc, ERR_ARG,
            "%s: two CLIP text models, under '%s' (HF names) and '%s' (OpenCLIP names); pass the "
            "prefix of one",
            wt_path(src), m->inner, oc_inner);
    FAIL_IF(!hf && !*oc, ERR_FORMAT, "%s: no CLIP text model (no tensor named '*%s' or '*%s')",
            wt_path(src), hf_key, oc_key);
    if (*oc) {
        strcpy(m->inner, oc_inner);
        strcpy(m->outer, oc_inner);
        return ERR_OK;
    }
    size_t ol;
    strcpy(m->outer, m->inner);
    if (wt_name_prefix(m->inner, tm, &ol)) m->outer[ol] = 0;
    return ERR_OK;
}

/* transformers' ACT2FN names that CLIP configs use */
static err parse_act(const char *path, const char *s, op_act *a) {
    if (!strcmp(s, "quick_gelu"))
        *a = OP_ACT_QUICK_GELU;
    else if (!strcmp(s, "gelu"))
        *a = OP_ACT_GELU_ERF;
    else if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh"))
        *a = OP_ACT_GELU_TANH;
    else
        FAIL(ERR_UNSUPPORTED, "%s: config.json: hidden_act '%s' is not supported", path, s);
    return ERR_OK;
}

/* config.json's keys over the values from the shapes: a CLIPTextConfig, or a CLIPConfig's
 * text_config (projection_dim at either level) */
static err apply_json(const cJSON *root, const char *path, void *arg) {
    clip_config *c = arg;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (!cJSON_IsObject(j)) j = root;
    TRY(wt_config_int(j, "hidden_size", path, &c->dim));
    TRY(wt_config_int(j, "num_attention_heads", path, &c->heads));
    TRY(wt_config_int(j, "num_hidden_layers", path, &c->layers));
    TRY(wt_config_int(j, "intermediate_size", path, &c->inter));
    TRY(wt_config_int(j, "vocab_size", path, &c->vocab));
    TRY(wt_config_int(j, "max_position_embeddings", path, &c->positions));
    TRY(wt_config_int(j, "eos_token_id", path, &c->eos));
    if (c->proj) {
        TRY(wt_config_int(root, "projection_dim", path, &c->proj));
        TRY(wt_config_int(j, "projection_dim", path, &c->proj));
    }
    TRY(wt_config_float(j, "layer_norm_eps", path, &c->eps));
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    return cJSON_IsString(act) ? parse_act(path, act->valuestring, &c->act) : ERR_OK;
}

/* Config from config.json where there is one, the rest from the shapes (documented defaults). */
static err read_config(const clip_model *m, wt_source *src, clip_config *c) {
    const char *path = wt_path(src), *in = m->inner;
    const int oc = c->openclip;
    const df11_tensor *tok, *pos, *fc1;
    TRY(wt_need(src, &tok, 2, "%s%s", in, oc ? "token_embedding.weight" : hf_key));
    TRY(wt_need(src, &pos, 2, "%s%s", in,
                oc ? "positional_embedding" : "embeddings.position_embedding.weight"));
    TRY(wt_need(src, &fc1, 2, "%s%s", in,
                oc ? "transformer.resblocks.0.mlp.c_fc.weight"
                   : "encoder.layers.0.mlp.fc1.weight"));
    char name[CLIP_NAME_MAX];
    /* HF: text_projection.weight [P,D]; OpenCLIP: text_projection [D,P] (x·P) */
    snprintf(name, sizeof name, "%stext_projection%s", m->outer, oc ? "" : ".weight");
    const df11_tensor *proj = wt_find(src, name);
    c->dim = tok->shape[1];
    c->vocab = tok->shape[0];
    c->positions = pos->shape[0];
    c->inter = fc1->shape[0];
    c->proj = proj && proj->ndim == 2 ? proj->shape[oc ? 1 : 0] : 0;
    c->layers = 0;
    for (;; c->layers++) {
        snprintf(name, sizeof name,
                 oc ? "%stransformer.resblocks.%lld.attn.in_proj_weight"
                    : "%sencoder.layers.%lld.self_attn.q_proj.weight",
                 in, (long long)c->layers);
        if (!wt_find(src, name)) break;
    }
    /* the defaults: CLIP-L (768: 12 heads, quick_gelu), OpenCLIP ViT-H and bigG (1024, 1280:
       16 and 20 heads, gelu; open_clip's TextTransformer uses nn.GELU unless the model config
       asks for QuickGELU, which the OpenAI weights at 512 and 768 do). Where an SD3.5 single
       file names the model ("text_encoders.clip_g.transformer." / "clip_l.transformer."), the
       name decides. */
    c->heads = c->dim % CLIP_HEAD_DIM == 0 ? c->dim / CLIP_HEAD_DIM : 1;
    c->act = c->dim == 1280 || c->dim == 1024 ? OP_ACT_GELU_ERF : OP_ACT_QUICK_GELU;
    if (strstr(m->outer, "clip_g.transformer.")) c->act = OP_ACT_GELU_ERF;
    if (strstr(m->outer, "clip_l.transformer.")) c->act = OP_ACT_QUICK_GELU;
    c->eps = 1e-5f;
    c->eos = CLIP_EOS_ID;
    TRY(wt_config_apply(src, apply_json, c));
    FAIL_IF(c->layers < 1, ERR_FORMAT, "%s: no CLIP layers (no '%s%s')", path, in,
            oc ? "transformer.resblocks.0.*" : "encoder.layers.0.*");
    FAIL_IF(c->heads < 1 || c->dim % c->heads, ERR_FORMAT,
            "%s: hidden size %lld is not a multiple of %lld heads", path, (long long)c->dim,
            (long long)c->heads);
    return ERR_OK;
}

/* ---- weight names: a visitor lists each block's tensors and the field each goes to ---- */

typedef wbind_visit wvisit;
#define MODEL(v) ((const clip_model *)(v)->cfg)

static void wv_prefix(wvisit *v, const char *prefix, const char *layers, int i) {
    const int n = i < 0 ? snprintf(v->prefix, sizeof v->prefix, "%s", prefix)
                        : snprintf(v->prefix, sizeof v->prefix, "%s%s%d.", prefix, layers, i);
    CHECK(n < (int)sizeof v->prefix);
}

static void wv_embed(wvisit *v, clip_embed_w *e) {
    const clip_config *c = &MODEL(v)->cfg;
    const int oc = c->openclip;
    v->base = e;
    wv_prefix(v, MODEL(v)->inner, NULL, -1);
    wbind_mat(v, &e->tok, oc ? "token_embedding.weight" : hf_key, c->vocab, c->dim);
    wbind_mat(v, &e->pos, oc ? "positional_embedding" : "embeddings.position_embedding.weight",
              c->positions, c->dim);
}

static void wv_layer(wvisit *v, int i, clip_layer_w *l) {
    const clip_config *c = &MODEL(v)->cfg;
    const int64_t D = c->dim, I = c->inter;
    v->base = l;
    if (!c->openclip) {
        wv_prefix(v, MODEL(v)->inner, "encoder.layers.", i);
        wbind_affine(v, &l->ln1_w, &l->ln1_b, "layer_norm1", D);
        wbind_linear(v, &l->q_w, &l->q_b, "self_attn.q_proj", D, D);
        wbind_linear(v, &l->k_w, &l->k_b, "self_attn.k_proj", D, D);
        wbind_linear(v, &l->v_w, &l->v_b, "self_attn.v_proj", D, D);
        wbind_linear(v, &l->o_w, &l->o_b, "self_attn.out_proj", D, D);
        wbind_affine(v, &l->ln2_w, &l->ln2_b, "layer_norm2", D);
        wbind_linear(v, &l->fc1_w, &l->fc1_b, "mlp.fc1", I, D);
        wbind_linear(v, &l->fc2_w, &l->fc2_b, "mlp.fc2", D, I);
        return;
    }
    wv_prefix(v, MODEL(v)->inner, "transformer.resblocks.", i);
    wbind_affine(v, &l->ln1_w, &l->ln1_b, "ln_1", D);
    wbind_rows(v, (tensor *[]){&l->q_w, &l->k_w, &l->v_w}, (int64_t[]){D, D, D}, 3,
               "attn.in_proj_weight", D);
    wbind_rows(v, (tensor *[]){&l->q_b, &l->k_b, &l->v_b}, (int64_t[]){D, D, D}, 3,
               "attn.in_proj_bias", 0);
    wbind_linear(v, &l->o_w, &l->o_b, "attn.out_proj", D, D);
    wbind_affine(v, &l->ln2_w, &l->ln2_b, "ln_2", D);
    wbind_linear(v, &l->fc1_w, &l->fc1_b, "mlp.c_fc", I, D);
    wbind_linear(v, &l->fc2_w, &l->fc2_b, "mlp.c_proj", D, I);
}

static void wv_final(wvisit *v, clip_final_w *f) {
    const clip_config *c = &MODEL(v)->cfg;
    const int64_t D = c->dim, P = c->proj ? c->proj : D;
    v->base = f;
    wv_prefix(v, MODEL(v)->inner, NULL, -1);
    wbind_affine(v, &f->ln_w, &f->ln_b, c->openclip ? "ln_final" : "final_layer_norm", D);
    wv_prefix(v, MODEL(v)->outer, NULL, -1);
    /* OpenCLIP's [D,P] is handed out transposed, as the [P,D] weight op_linear takes */
    if (c->openclip)
        wbind_tensor(v, &f->proj, WT_OPTIONAL | WT_TRANSPOSED, "text_projection", 2,
                     (int64_t[]){P, D});
    else
        wbind_tensor(v, &f->proj, WT_OPTIONAL, "text_projection.weight", 2, (int64_t[]){P, D});
}

/* visits block i (the blocks above); the structs only give the fields' offsets */
static void wv_block(wvisit *v, int i) {
    clip_embed_w e;
    clip_layer_w l;
    clip_final_w f;
    if (i == 0)
        wv_embed(v, &e);
    else if (i <= MODEL(v)->cfg.layers)
        wv_layer(v, i - 1, &l);
    else
        wv_final(v, &f);
}

/* One allocation on the ctx's device, carved into the activation tensors. */
static err plan_activations(clip_model *m) {
    const tensor_dev dev = op_ctx_dev(m->ctx);
    const dtype dt = dev == TENSOR_CPU ? DTYPE_F32 : DTYPE_BF16;
    const size_t es = dev == TENSOR_CPU ? 4 : 2;
    const int64_t L = m->cfg.positions, D = m->cfg.dim;
    const int64_t widths[] = {D, D, D, D, D, D, D, m->cfg.inter};
    tensor *slots[] = {&m->h, &m->x, &m->q, &m->k, &m->v, &m->att, &m->t, &m->f};
    const int ns = (int)(sizeof widths / sizeof widths[0]);
    size_t off[sizeof widths / sizeof widths[0]], total = 0;
    for (int i = 0; i < ns; i++) {
        off[i] = total;
        total += ((size_t)(L * widths[i]) * es + CLIP_ALIGN - 1) / CLIP_ALIGN * CLIP_ALIGN;
    }
    err e = op_mem_alloc(m->ctx, total, &m->act_mem);
    if (e) return err_wrap(e, "CLIP activations");
    m->act_bytes = total;
    for (int i = 0; i < ns; i++)
        *slots[i] = tensor_2d((char *)m->act_mem + off[i], dt, dev, L, widths[i]);
    m->pos_ids = malloc((size_t)L * sizeof *m->pos_ids);
    FAIL_IF(!m->pos_ids, ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < L; i++)
        m->pos_ids[i] = (int32_t)i;
    return ERR_OK;
}

static err load(clip_model *m, wt_source *src, const char *prefix) {
    wt_set_prefix(src, ""); /* names below are full names */
    TRY(set_prefixes(m, src, prefix));
    TRY(read_config(m, src, &m->cfg));
    const wt_blocks_config bc = {.ctx = m->ctx, .mode = WP_RESIDENT};
    TRY(wbind_load(src, m, (int)m->cfg.layers + 2, CLIP_MAX_W, wv_block, &bc, &m->w));
    return plan_activations(m);
}

err clip_load_prefix(wt_source *src, op_ctx *ctx, const char *prefix, clip_model **out) {
    *out = NULL;
    clip_model *m = calloc(1, sizeof *m);
    FAIL_IF(!m, ERR_NOMEM, "out of memory");
    m->ctx = ctx;
    err e = load(m, src, prefix);
    if (e) {
        clip_free(m);
        return e;
    }
    const clip_config *c = &m->cfg;
    LOG_INFO("clip: %s%s%s: %lld layers, width %lld, %lld heads, %s, projection %lld, %.1f MiB on "
             "the device",
             wt_path(src), m->inner[0] ? ": " : "", m->inner, (long long)c->layers,
             (long long)c->dim, (long long)c->heads, act_name(c->act), (long long)c->proj,
             (double)clip_device_bytes(m) / (1024.0 * 1024.0));
    *out = m;
    return ERR_OK;
}

err clip_load(wt_source *src, op_ctx *ctx, clip_model **out) {
    return clip_load_prefix(src, ctx, NULL, out);
}

int64_t clip_hidden_size(const clip_model *m) { return m->cfg.dim; }
int64_t clip_projection_size(const clip_model *m) { return m->cfg.proj; }
int clip_max_length(const clip_model *m) { return (int)m->cfg.positions; }

/* The row transformers pools (CLIPTextTransformer.forward): the first EOS id, or with the
 * legacy eos_token_id 2 the argmax of the ids (its first maximum). */
static int pool_row(const clip_config *c, const int32_t *ids, int n) {
    int r = 0;
    if (c->eos == 2) {
        for (int i = 1; i < n; i++)
            if (ids[i] > ids[r]) r = i;
        return r;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] == c->eos) return i;
    return 0; /* argmax over an all-false mask, as transformers gets without an EOS */
}

static tensor rows(tensor t, int n) { return tensor_slice(t, 0, 0, n); }

void clip_encode(clip_model *m, const int32_t *ids, int n, int project, tensor pooled,
                 const tensor *penultimate, const tensor *last) {
    const clip_config *c = &m->cfg;
    op_ctx *ctx = m->ctx;
    const int64_t D = c->dim, H = c->heads;
    CHECK(n >= 1 && n <= c->positions);
    const int proj = project && c->proj;
    CHECK(pooled.ndim == 2 && pooled.shape[0] == 1 && pooled.shape[1] == (proj ? c->proj : D));
    tensor pen2 = {0}, last2 = {0};
    if (penultimate) {
        CHECK(penultimate->ndim == 3 && penultimate->shape[0] == 1 && penultimate->shape[1] == n);
        pen2 = tensor_reshape(*penultimate, 2, (int64_t[]){n, D});
    }
    if (last) {
        CHECK(last->ndim == 3 && last->shape[0] == 1 && last->shape[1] == n);
        last2 = tensor_reshape(*last, 2, (int64_t[]){n, D});
    }
    tensor h = rows(m->h, n), x = rows(m->x, n), q = rows(m->q, n), k = rows(m->k, n);
    tensor v = rows(m->v, n), att = rows(m->att, n), t = rows(m->t, n), f = rows(m->f, n);
    const int64_t shape4[4] = {1, n, H, D / H};
    tensor q4 = tensor_reshape(q, 4, shape4), k4 = tensor_reshape(k, 4, shape4);
    tensor v4 = tensor_reshape(v, 4, shape4), att4 = tensor_reshape(att, 4, shape4);
    const float scale = 1.0f / sqrtf((float)(D / H)); /* CLIPAttention.scale = head_dim**-0.5 */

    const int last_block = (int)c->layers + 1;
    clip_embed_w e;
    wbind_acquire(&m->w, 0, &e);
    /* CLIPTextEmbeddings: token embedding + position embedding (positions 0..n-1) */
    op_embedding(ctx, h, e.tok, ids);
    op_embedding(ctx, t, e.pos, m->pos_ids);
    op_add(ctx, h, h, t);
    wbind_release(&m->w, 0);
    /* hidden_states[-2] is the input of the last layer (the embeddings for a 1-layer model) */
    if (penultimate && c->layers == 1) op_copy(ctx, pen2, h);
    for (int64_t l = 0; l < c->layers; l++) {
        clip_layer_w w;
        wbind_acquire(&m->w, (int)l + 1, &w);
        /* self-attention: causal, no padding mask (the pipelines pass none) */
        op_layernorm(ctx, x, h, &w.ln1_w, &w.ln1_b, c->eps);
        op_linear(ctx, q, x, w.q_w, &w.q_b, OP_ACT_NONE);
        op_linear(ctx, k, x, w.k_w, &w.k_b, OP_ACT_NONE);
        op_linear(ctx, v, x, w.v_w, &w.v_b, OP_ACT_NONE);
        op_attention(ctx, att4, q4, k4, v4, NULL, scale, 1);
        op_linear(ctx, t, att, w.o_w, &w.o_b, OP_ACT_NONE);
        op_add(ctx, h, h, t);
        /* CLIPMLP: fc2(act(fc1(x))) */
        op_layernorm(ctx, x, h, &w.ln2_w, &w.ln2_b, c->eps);
        op_linear(ctx, f, x, w.fc1_w, &w.fc1_b, c->act);
        op_linear(ctx, t, f, w.fc2_w, &w.fc2_b, OP_ACT_NONE);
        op_add(ctx, h, h, t);
        wbind_release(&m->w, (int)l + 1);
        if (penultimate && l == c->layers - 2) op_copy(ctx, pen2, h);
    }
    /* final_layer_norm, then the pooled row (and its projection, a Linear without bias) */
    tensor fin = last ? last2 : x;
    clip_final_w fw;
    wbind_acquire(&m->w, last_block, &fw);
    op_layernorm(ctx, fin, h, &fw.ln_w, &fw.ln_b, c->eps);
    tensor row = tensor_slice(fin, 0, pool_row(c, ids, n), 1);
    if (proj)
        op_linear(ctx, pooled, row, fw.proj, NULL, OP_ACT_NONE);
    else
        op_copy(ctx, pooled, row);
    wbind_release(&m->w, last_block);
}

size_t clip_device_bytes(const clip_model *m) {
    if (op_ctx_dev(m->ctx) == TENSOR_CPU) return 0;
    return (m->w.blocks ? wt_blocks_device_bytes(m->w.blocks) : 0) + m->act_bytes;
}

void clip_free(clip_model *m) {
    if (!m) return;
    wbind_free(&m->w);
    op_mem_free(m->ctx, m->act_mem);
    free(m->pos_ids);
    free(m);
}
