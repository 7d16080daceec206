/* t5.c: the T5 v1.1 encoder as a straight sequence of ops, mirroring transformers
 * models/t5/modeling_t5.py (T5Stack.forward for the encoder, T5LayerSelfAttention,
 * T5Attention.compute_bias, T5LayerFF, T5DenseGatedActDense, T5LayerNorm). docs/MODEL-SPEC.md §4.2.
 */
#include "text_encoder/t5.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/log.h"
#include "weights/wbind.h"

#define T5_PREFIX_MAX 128
#define T5_NAME_MAX 256
#define T5_ALIGN 256

/* Blocks in the order the forward uses them (so any provider mode could serve them): 0 the
 * embedding and the bias table (read once, at load), 1 + i layer i (encoder.block.i.),
 * layers + 1 the final norm. Shapes: d d_model, F d_ff, V vocab, E = H d_kv, R buckets. */
typedef struct t5_embed_w {
    tensor emb; /* shared.weight (or encoder.embed_tokens.weight) [V, d] */
    tensor rel; /* encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [R, H] */
} t5_embed_w;

/* encoder.block.i: no biases anywhere in T5 */
typedef struct t5_layer_w {
    tensor ln0;      /* layer.0.layer_norm.weight [d] */
    tensor q, k, v;  /* layer.0.SelfAttention.q/k/v.weight [E, d] */
    tensor o;        /* layer.0.SelfAttention.o.weight [d, E] */
    tensor ln1;      /* layer.1.layer_norm.weight [d] */
    tensor wi0, wi1; /* layer.1.DenseReluDense.wi_0/wi_1.weight [F, d] */
    tensor wo;       /* layer.1.DenseReluDense.wo.weight [d, F] */
} t5_layer_w;

typedef struct t5_final_w {
    tensor ln; /* encoder.final_layer_norm.weight [d] */
} t5_final_w;

#define T5_MAX_W 9 /* tensors in the largest block (a layer) */

typedef struct t5_config {
    int64_t d_model;  /* d */
    int64_t heads;    /* H */
    int64_t d_kv;     /* head dim; inner = H d_kv */
    int64_t d_ff;     /* gated FFN width */
    int64_t layers;   /* num_layers */
    int64_t vocab;    /* embedding rows */
    int64_t buckets;  /* relative_attention_num_buckets */
    int64_t max_dist; /* relative_attention_max_distance */
    float eps;        /* layer_norm_epsilon */
} t5_config;

struct t5_model {
    t5_config cfg;
    op_ctx *ctx;
    wbind_table w; /* the blocks above */
    char prefix[T5_PREFIX_MAX];
    char emb_name[64]; /* "shared.weight" or "encoder.embed_tokens.weight" */
    int max_len;
    float *rel; /* relative_attention_bias [buckets, H] on the host, in fp32 */
    /* activations, one allocation on the ctx's device: [max_len, .] each */
    void *act_mem;
    size_t act_bytes;
    tensor h;            /* [L,d] residual stream */
    tensor x;            /* [L,d] normed input of a sublayer */
    tensor q, k, v, att; /* [L,inner] */
    tensor t;            /* [L,d] sublayer output */
    tensor a, b, g;      /* [L,d_ff] wi_0, wi_1 outputs and the gated product */
    /* the position bias [H,n,n] F32 for the length last used (bias_len; 0: none yet), built
     * in bias_host and copied to bias_mem on the ctx's device */
    void *bias_mem;
    float *bias_host;
    int bias_len;
};

int t5_relative_bucket(int rp, int num_buckets, int max_distance) {
    /* bidirectional: half the buckets for keys after the query */
    const int half = num_buckets / 2, max_exact = half / 2;
    const int base = rp > 0 ? half : 0, n = rp < 0 ? -rp : rp;
    if (n < max_exact) return base + n;
    /* fp32 like torch: log(n.float() / max_exact) / log(max_distance / max_exact) (a Python
     * float, used as fp32) * (half - max_exact), truncated toward zero */
    float r = logf((float)n / (float)max_exact);
    r = r / (float)log((double)max_distance / (double)max_exact);
    r = r * (float)(half - max_exact);
    int large = max_exact + (int)r;
    return base + (large < half - 1 ? large : half - 1);
}

/* The prefix in front of "encoder.block.0.layer.0.SelfAttention.q.weight". */
static err find_prefix(const wt_source *src, char *prefix) {
    static const char key[] = "encoder.block.0.layer.0.SelfAttention.q.weight";
    for (int i = 0; i < wt_count(src); i++) {
        const char *name = wt_at(src, i)->name;
        size_t pl;
        if (!wt_name_prefix(name, key, &pl)) continue;
        FAIL_IF(pl >= T5_PREFIX_MAX, ERR_FORMAT, "%s: tensor '%s': prefix too long", wt_path(src),
                name);
        memcpy(prefix, name, pl);
        prefix[pl] = 0;
        return ERR_OK;
    }
    FAIL(ERR_FORMAT, "%s: no T5 encoder (no tensor named '*%s')", wt_path(src), key);
}

/* whether prefix + name exists */
static const df11_tensor *find(const wt_source *src, const char *prefix, const char *name) {
    char full[T5_NAME_MAX];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return wt_find(src, full);
}

/* config.json's keys (T5Config) over the values from the shapes */
static err apply_json(const cJSON *root, const char *path, void *arg) {
    t5_config *c = arg;
    TRY(wt_config_int(root, "d_model", path, &c->d_model));
    TRY(wt_config_int(root, "num_heads", path, &c->heads));
    TRY(wt_config_int(root, "d_kv", path, &c->d_kv));
    TRY(wt_config_int(root, "d_ff", path, &c->d_ff));
    TRY(wt_config_int(root, "num_layers", path, &c->layers));
    TRY(wt_config_int(root, "relative_attention_num_buckets", path, &c->buckets));
    TRY(wt_config_int(root, "relative_attention_max_distance", path, &c->max_dist));
    TRY(wt_config_float(root, "layer_norm_epsilon", path, &c->eps));
    /* T5Config: "gated-gelu" means gelu_new (tanh) on wi_0, times wi_1 */
    const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "feed_forward_proj");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "dense_act_fn");
    const int ok =
        !cJSON_IsString(ff) || !strcmp(ff->valuestring, "gated-gelu") ||
        (!strncmp(ff->valuestring, "gated-", 6) && cJSON_IsString(act) &&
         (!strcmp(act->valuestring, "gelu_new") || !strcmp(act->valuestring, "gelu_pytorch_tanh")));
    FAIL_IF(!ok, ERR_UNSUPPORTED,
            "%s: config.json: feed_forward_proj '%s' is not supported (only gated-gelu)", path,
            ff->valuestring);
    return ERR_OK;
}

/* Config from config.json where there is one, the rest from the shapes (documented defaults). */
static err read_config(t5_model *m, wt_source *src) {
    t5_config *c = &m->cfg;
    const char *path = wt_path(src), *pre = m->prefix;
    strcpy(m->emb_name,
           find(src, pre, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight");
    FAIL_IF(!find(src, pre, m->emb_name), ERR_FORMAT,
            "%s: tensor '%sshared.weight' (or '%sencoder.embed_tokens.weight') is missing", path,
            pre, pre);
    const df11_tensor *emb, *rel, *q;
    TRY(wt_need(src, &emb, 2, "%s%s", pre, m->emb_name));
    TRY(wt_need(src, &rel, 2,
                "%sencoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", pre));
    TRY(wt_need(src, &q, 2, "%sencoder.block.0.layer.0.SelfAttention.q.weight", pre));
    const df11_tensor *wi0 = find(src, pre, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
    FAIL_IF(!wi0 || wi0->ndim != 2, ERR_UNSUPPORTED,
            "%s: tensor '%sencoder.block.0.layer.1.DenseReluDense.wi_0.weight' is missing: only "
            "the gated-GELU FFN of T5 v1.1 is supported",
            path, pre);
    c->vocab = emb->shape[0];
    c->d_model = emb->shape[1];
    c->buckets = rel->shape[0];
    c->heads = rel->shape[1];
    c->d_kv = q->shape[0] / (c->heads ? c->heads : 1);
    c->d_ff = wi0->shape[0];
    c->max_dist = 128;
    c->eps = 1e-6f;
    c->layers = 0;
    char name[T5_NAME_MAX];
    for (;; c->layers++) {
        snprintf(name, sizeof name, "%sencoder.block.%lld.layer.0.SelfAttention.q.weight", pre,
                 (long long)c->layers);
        if (!wt_find(src, name)) break;
    }
    TRY(wt_config_apply(src, apply_json, c));
    FAIL_IF(c->layers < 1, ERR_FORMAT, "%s: no T5 blocks", path);
    FAIL_IF(c->buckets < 4 || c->max_dist < c->buckets / 2, ERR_FORMAT,
            "%s: %lld buckets with max distance %lld", path, (long long)c->buckets,
            (long long)c->max_dist);
    return ERR_OK;
}

/* ---- weight names: a visitor lists each block's tensors and the field each goes to ---- */

typedef wbind_visit wvisit;
#define MODEL(v) ((const t5_model *)(v)->cfg)

static void wv_embed(wvisit *v, t5_embed_w *e) {
    const t5_config *c = &MODEL(v)->cfg;
    v->base = e;
    wbind_mat(v, &e->emb, MODEL(v)->emb_name, c->vocab, c->d_model);
    wbind_mat(v, &e->rel, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
              c->buckets, c->heads);
}

static void wv_layer(wvisit *v, int i, t5_layer_w *l) {
    const t5_config *c = &MODEL(v)->cfg;
    const int64_t d = c->d_model, E = c->heads * c->d_kv, F = c->d_ff;
    const int n = snprintf(v->prefix, sizeof v->prefix, "%sencoder.block.%d.", MODEL(v)->prefix, i);
    CHECK(n < (int)sizeof v->prefix);
    v->base = l;
    wbind_vec(v, &l->ln0, "layer.0.layer_norm.weight", d);
    wbind_mat(v, &l->q, "layer.0.SelfAttention.q.weight", E, d);
    wbind_mat(v, &l->k, "layer.0.SelfAttention.k.weight", E, d);
    wbind_mat(v, &l->v, "layer.0.SelfAttention.v.weight", E, d);
    wbind_mat(v, &l->o, "layer.0.SelfAttention.o.weight", d, E);
    wbind_vec(v, &l->ln1, "layer.1.layer_norm.weight", d);
    wbind_mat(v, &l->wi0, "layer.1.DenseReluDense.wi_0.weight", F, d);
    wbind_mat(v, &l->wi1, "layer.1.DenseReluDense.wi_1.weight", F, d);
    wbind_mat(v, &l->wo, "layer.1.DenseReluDense.wo.weight", d, F);
}

/* visits block i (the blocks above); the structs only give the fields' offsets */
static void wv_block(wvisit *v, int i) {
    t5_embed_w e;
    t5_layer_w l;
    t5_final_w f;
    snprintf(v->prefix, sizeof v->prefix, "%s", MODEL(v)->prefix);
    if (i == 0) {
        wv_embed(v, &e);
    } else if (i <= MODEL(v)->cfg.layers) {
        wv_layer(v, i - 1, &l);
    } else {
        v->base = &f;
        wbind_vec(v, &f.ln, "encoder.final_layer_norm.weight", MODEL(v)->cfg.d_model);
    }
}

/* relative_attention_bias to fp32 on the host: stored as BF16/F16/F32 on the CPU, BF16 on
 * the device. */
static err read_rel_table(t5_model *m) {
    const int64_t n = m->cfg.buckets * m->cfg.heads;
    t5_embed_w g;
    wbind_acquire(&m->w, 0, &g);
    const tensor r = g.rel;
    const size_t bytes = (size_t)tensor_nbytes(&r);
    m->rel = malloc((size_t)n * sizeof *m->rel);
    void *tmp = malloc(bytes);
    err e = !m->rel || !tmp ? err_set(ERR_NOMEM, "out of memory") : ERR_OK;
    if (!e) e = op_mem_download(m->ctx, tmp, r.data, bytes);
    if (!e) half_widen(r.dt, tmp, n, m->rel);
    wbind_release(&m->w, 0);
    free(tmp);
    return e;
}

/* One allocation on the ctx's device, carved into the activation tensors; and the bias. */
static err plan_activations(t5_model *m) {
    const tensor_dev dev = op_ctx_dev(m->ctx);
    const dtype dt = dev == TENSOR_CPU ? DTYPE_F32 : DTYPE_BF16;
    const size_t es = dev == TENSOR_CPU ? 4 : 2;
    const int64_t L = m->max_len, d = m->cfg.d_model, in = m->cfg.heads * m->cfg.d_kv;
    const int64_t ff = m->cfg.d_ff;
    const int64_t widths[] = {d, d, in, in, in, in, d, ff, ff, ff};
    tensor *slots[] = {&m->h, &m->x, &m->q, &m->k, &m->v, &m->att, &m->t, &m->a, &m->b, &m->g};
    enum { NS = sizeof widths / sizeof widths[0] };
    size_t off[NS], total = 0;
    for (int i = 0; i < NS; i++) {
        off[i] = total;
        total += ((size_t)(L * widths[i]) * es + T5_ALIGN - 1) / T5_ALIGN * T5_ALIGN;
    }
    const size_t bias_bytes = (size_t)(m->cfg.heads * L * L) * sizeof(float);
    m->bias_host = malloc(bias_bytes);
    FAIL_IF(!m->bias_host, ERR_NOMEM, "T5 position bias: out of memory (%zu bytes)", bias_bytes);
    err e = op_mem_alloc(m->ctx, total, &m->act_mem);
    if (e) return err_wrap(e, "T5 activations");
    e = op_mem_alloc(m->ctx, bias_bytes, &m->bias_mem);
    if (e) return err_wrap(e, "T5 position bias");
    m->act_bytes = total + bias_bytes;
    for (int i = 0; i < NS; i++)
        *slots[i] = tensor_2d((char *)m->act_mem + off[i], dt, dev, L, widths[i]);
    return ERR_OK;
}

static err load(t5_model *m, wt_source *src) {
    wt_set_prefix(src, ""); /* names below are full names */
    TRY(find_prefix(src, m->prefix));
    TRY(read_config(m, src));
    const wt_blocks_config bc = {.ctx = m->ctx, .mode = WP_RESIDENT};
    TRY(wbind_load(src, m, (int)m->cfg.layers + 2, T5_MAX_W, wv_block, &bc, &m->w));
    TRY(read_rel_table(m));
    return plan_activations(m);
}

err t5_load(wt_source *src, op_ctx *ctx, int max_len, t5_model **out) {
    *out = NULL;
    FAIL_IF(max_len < 1, ERR_ARG, "T5: max length %d", max_len);
    t5_model *m = calloc(1, sizeof *m);
    FAIL_IF(!m, ERR_NOMEM, "out of memory");
    m->ctx = ctx;
    m->max_len = max_len;
    err e = load(m, src);
    if (e) {
        t5_free(m);
        return e;
    }
    const t5_config *c = &m->cfg;
    LOG_INFO("t5: %s: %lld blocks, d_model %lld, %lld heads of %lld, d_ff %lld, up to %d tokens, "
             "%.1f MiB on the device",
             wt_path(src), (long long)c->layers, (long long)c->d_model, (long long)c->heads,
             (long long)c->d_kv, (long long)c->d_ff, max_len,
             (double)t5_device_bytes(m) / (1024.0 * 1024.0));
    *out = m;
    return ERR_OK;
}

int64_t t5_hidden_size(const t5_model *m) { return m->cfg.d_model; }

/* T5Attention.compute_bias for n queries and n keys: bias[h,i,j] = rel[bucket(j - i), h],
 * computed on the host and kept on the device until the length changes. */
static void set_bias(t5_model *m, int n) {
    if (m->bias_len == n) return;
    const int64_t H = m->cfg.heads;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int bk = t5_relative_bucket(j - i, (int)m->cfg.buckets, (int)m->cfg.max_dist);
            for (int64_t h = 0; h < H; h++)
                m->bias_host[(h * n + i) * n + j] = m->rel[bk * H + h];
        }
    /* the copy waits for the enqueued attention that may still read the previous length's */
    const err e = op_mem_upload(m->ctx, m->bias_mem, m->bias_host, (size_t)(H * n * n) * 4);
    CHECK(e == ERR_OK);
    m->bias_len = n;
}

static tensor rows(tensor t, int n) { return tensor_slice(t, 0, 0, n); }

void t5_encode(t5_model *m, const int32_t *ids, int n, tensor out) {
    const t5_config *c = &m->cfg;
    op_ctx *ctx = m->ctx;
    CHECK(n >= 1 && n <= m->max_len);
    CHECK(out.ndim == 3 && out.shape[0] == 1 && out.shape[1] == n && out.shape[2] == c->d_model);
    set_bias(m, n);
    tensor h = rows(m->h, n), x = rows(m->x, n), q = rows(m->q, n), k = rows(m->k, n);
    tensor v = rows(m->v, n), att = rows(m->att, n), t = rows(m->t, n);
    tensor a = rows(m->a, n), b = rows(m->b, n), g = rows(m->g, n);
    const int64_t shape4[4] = {1, n, c->heads, c->d_kv};
    tensor q4 = tensor_reshape(q, 4, shape4), k4 = tensor_reshape(k, 4, shape4);
    tensor v4 = tensor_reshape(v, 4, shape4), att4 = tensor_reshape(att, 4, shape4);
    const tensor bias = tensor_3d(m->bias_mem, DTYPE_F32, op_ctx_dev(ctx), c->heads, n, n);

    const int last_block = (int)c->layers + 1;
    t5_embed_w e;
    wbind_acquire(&m->w, 0, &e);
    op_embedding(ctx, h, e.emb, ids); /* no scaling of the embeddings in T5 */
    wbind_release(&m->w, 0);
    for (int64_t l = 0; l < c->layers; l++) {
        t5_layer_w w;
        wbind_acquire(&m->w, (int)l + 1, &w);
        /* T5LayerSelfAttention: scores q k^T + bias, no 1/sqrt(d_kv), no mask */
        op_rmsnorm2(ctx, x, h, w.ln0, c->eps);
        op_linear(ctx, q, x, w.q, NULL, OP_ACT_NONE);
        op_linear(ctx, k, x, w.k, NULL, OP_ACT_NONE);
        op_linear(ctx, v, x, w.v, NULL, OP_ACT_NONE);
        op_attention(ctx, att4, q4, k4, v4, &bias, 1.0f, 0);
        op_linear(ctx, t, att, w.o, NULL, OP_ACT_NONE);
        op_add(ctx, h, h, t);
        /* T5LayerFF with T5DenseGatedActDense: wo(gelu_tanh(wi_0 x) * wi_1 x) */
        op_rmsnorm2(ctx, x, h, w.ln1, c->eps);
        op_linear(ctx, a, x, w.wi0, NULL, OP_ACT_NONE);
        op_linear(ctx, b, x, w.wi1, NULL, OP_ACT_NONE);
        op_gated_gelu(ctx, g, a, b);
        op_linear(ctx, t, g, w.wo, NULL, OP_ACT_NONE);
        op_add(ctx, h, h, t);
        wbind_release(&m->w, (int)l + 1);
    }
    t5_final_w fw;
    wbind_acquire(&m->w, last_block, &fw);
    op_rmsnorm2(ctx, tensor_reshape(out, 2, (int64_t[]){n, c->d_model}), h, fw.ln, c->eps);
    wbind_release(&m->w, last_block);
}

size_t t5_device_bytes(const t5_model *m) {
    if (op_ctx_dev(m->ctx) == TENSOR_CPU) return 0;
    return (m->w.blocks ? wt_blocks_device_bytes(m->w.blocks) : 0) + m->act_bytes;
}

void t5_free(t5_model *m) {
    if (!m) return;
    wbind_free(&m->w);
    op_mem_free(m->ctx, m->act_mem);
    op_mem_free(m->ctx, m->bias_mem);
    free(m->bias_host);
    free(m->rel);
    free(m);
}
