/* weights: a component's named tensors from plain or DF11 files, handed to model code as
 * tensors on the CPU or through the provider on the GPU, patched where a wt_patch asks
 * (weights.h). */
#include "weights/weights.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/arena.h"
#include "core/fileio.h"
#include "core/half.h"
#include "core/log.h"

struct wt_source {
    char *path;       /* the weights file or index that was opened */
    char *config_dir; /* the folder whose config.json describes it, or NULL */
    df11_ckpt **shard;
    int n_shards;
    const df11_tensor **tab; /* open-addressing hash table of every tensor, by name */
    uint64_t tab_size;
    int n;
    const df11_tensor **list; /* file order */
    char prefix[128];
    const wt_patch *patch; /* wt_set_patch's, or NULL */
};

static uint64_t name_hash(const char *a, const char *b) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a over a then b */
    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 1099511628211ull;
    for (; *b; b++)
        h = (h ^ (uint8_t)*b) * 1099511628211ull;
    return h;
}

static int name_eq(const char *full, const char *a, const char *b) {
    size_t la = strlen(a);
    return strncmp(full, a, la) == 0 && strcmp(full + la, b) == 0;
}

static const df11_tensor *lookup(const wt_source *s, const char *prefix, const char *name) {
    uint64_t m = s->tab_size - 1, i = name_hash(prefix, name) & m;
    for (; s->tab[i]; i = (i + 1) & m)
        if (name_eq(s->tab[i]->name, prefix, name)) return s->tab[i];
    return NULL;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The weights file a folder holds: the diffusers and transformers names first, else the one
 * safetensors file (or index) in it. */
static err resolve_dir(const char *dir, char **file) {
    static const char *const known[] = {"diffusion_pytorch_model.safetensors.index.json",
                                        "model.safetensors.index.json",
                                        "diffusion_pytorch_model.safetensors", "model.safetensors"};
    char buf[4096];
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        snprintf(buf, sizeof buf, "%s/%s", dir, known[i]);
        if (is_file(buf))
            return (*file = strdup(buf)) ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
    }
    DIR *d = opendir(dir);
    FAIL_IF(!d, ERR_IO, "%s: cannot open the folder", dir);
    int n_st = 0, n_idx = 0;
    char st_name[1024] = "", idx_name[1024] = "";
    for (struct dirent *e; (e = readdir(d));) {
        if (ends_with(e->d_name, ".safetensors.index.json"))
            n_idx++, snprintf(idx_name, sizeof idx_name, "%s", e->d_name);
        else if (ends_with(e->d_name, ".safetensors"))
            n_st++, snprintf(st_name, sizeof st_name, "%s", e->d_name);
    }
    closedir(d);
    FAIL_IF(n_idx > 1 || (n_idx == 0 && n_st > 1), ERR_ARG,
            "%s: the folder holds %d safetensors files and %d indexes; name the file to use", dir,
            n_st, n_idx);
    FAIL_IF(n_idx == 0 && n_st == 0, ERR_ARG, "%s: the folder holds no .safetensors file", dir);
    snprintf(buf, sizeof buf, "%s/%s", dir, n_idx ? idx_name : st_name);
    return (*file = strdup(buf)) ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
}

static err add_shard(wt_source *s, const char *path) {
    df11_ckpt **sh = realloc(s->shard, sizeof *sh * (size_t)(s->n_shards + 1));
    FAIL_IF(!sh, ERR_NOMEM, "out of memory");
    s->shard = sh;
    TRY(df11_ckpt_open(path, &s->shard[s->n_shards]));
    s->n_shards++;
    return ERR_OK;
}

static err build_table(wt_source *s) {
    for (int i = 0; i < s->n_shards; i++)
        s->n += df11_ckpt_count(s->shard[i]);
    s->tab_size = 16;
    while (s->tab_size < 2 * (uint64_t)s->n)
        s->tab_size *= 2;
    s->tab = calloc(s->tab_size, sizeof *s->tab);
    s->list = calloc((size_t)s->n + 1, sizeof *s->list);
    FAIL_IF(!s->tab || !s->list, ERR_NOMEM, "out of memory");
    int k = 0;
    for (int i = 0; i < s->n_shards; i++)
        for (int j = 0; j < df11_ckpt_count(s->shard[i]); j++) {
            const df11_tensor *t = df11_ckpt_at(s->shard[i], j);
            FAIL_IF(lookup(s, "", t->name), ERR_FORMAT, "%s: tensor '%s' is stored twice", s->path,
                    t->name);
            uint64_t m = s->tab_size - 1, h = name_hash("", t->name) & m;
            while (s->tab[h])
                h = (h + 1) & m;
            s->tab[h] = t;
            s->list[k++] = t;
        }
    return ERR_OK;
}

static err open_resolved(wt_source *s, const char *given) {
    if (is_dir(given)) {
        TRY(resolve_dir(given, &s->path));
        FAIL_IF(!(s->config_dir = strdup(given)), ERR_NOMEM, "out of memory");
    } else {
        FAIL_IF(!is_file(given), ERR_IO, "%s: no such file or folder", given);
        FAIL_IF(!(s->path = strdup(given)), ERR_NOMEM, "out of memory");
    }
    if (ends_with(s->path, ".json")) {
        st_index *x = NULL;
        TRY(st_index_open(s->path, &x));
        err e = ERR_OK;
        for (int i = 0; i < st_index_shard_count(x) && !e; i++)
            e = add_shard(s, st_index_shard_path(x, i));
        st_index_close(x);
        TRY(e);
    } else {
        TRY(add_shard(s, s->path));
    }
    return build_table(s);
}

err wt_open(const char *path, wt_source **out) {
    *out = NULL;
    wt_source *s = calloc(1, sizeof *s);
    FAIL_IF(!s, ERR_NOMEM, "out of memory");
    err e = open_resolved(s, path);
    if (e) {
        wt_close(s);
        return e;
    }
    LOG_DEBUG("weights: %s: %d tensors in %d file(s)%s", s->path, s->n, s->n_shards,
              wt_is_df11(s) ? ", DF11" : "");
    *out = s;
    return ERR_OK;
}

void wt_close(wt_source *s) {
    if (!s) return;
    for (int i = 0; i < s->n_shards; i++)
        df11_ckpt_close(s->shard[i]);
    free(s->shard);
    free(s->tab);
    free(s->list);
    free(s->path);
    free(s->config_dir);
    free(s);
}

const char *wt_path(const wt_source *s) { return s->path; }

int wt_is_df11(const wt_source *s) {
    for (int i = 0; i < s->n_shards; i++)
        if (df11_ckpt_is_df11(s->shard[i])) return 1;
    return 0;
}

void wt_set_prefix(wt_source *s, const char *prefix) {
    CHECK(strlen(prefix) < sizeof s->prefix);
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
}

void wt_set_patch(wt_source *s, const wt_patch *p) { s->patch = p; }

const df11_tensor *wt_find(const wt_source *s, const char *name) {
    return lookup(s, s->prefix, name);
}

err wt_need(const wt_source *s, const df11_tensor **out, int ndim, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    const int len = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    CHECK(len >= 0 && (size_t)len < sizeof name);
    const df11_tensor *t = *out = wt_find(s, name);
    FAIL_IF(!t, ERR_FORMAT, "%s: tensor '%s%s' is missing", s->path, s->prefix, name);
    if (t->ndim != ndim) {
        *out = NULL;
        FAIL(ERR_FORMAT, "%s: tensor '%s%s': expected %d dims, got %d", s->path, s->prefix, name,
             ndim, t->ndim);
    }
    return ERR_OK;
}

int wt_name_prefix(const char *name, const char *key, size_t *len) {
    const size_t nl = strlen(name), kl = strlen(key);
    if (nl < kl || strcmp(name + nl - kl, key) != 0) return 0;
    *len = nl - kl;
    return *len == 0 || name[*len - 1] == '.';
}

int wt_count(const wt_source *s) { return s->n; }
const df11_tensor *wt_at(const wt_source *s, int i) {
    CHECK(i >= 0 && i < s->n);
    return s->list[i];
}

err wt_config(const wt_source *s, cJSON **out) {
    *out = NULL;
    if (!s->config_dir) return ERR_OK;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", s->config_dir);
    if (!is_file(p)) return ERR_OK;
    fio_map m;
    TRY(fio_map_open(p, &m));
    *out = cJSON_ParseWithLength((const char *)m.data, m.size);
    fio_map_close(&m);
    FAIL_IF(!*out, ERR_FORMAT, "%s: not valid JSON", p);
    return ERR_OK;
}

err wt_config_apply(const wt_source *s, err (*apply)(const cJSON *cfg, const char *path, void *arg),
                    void *arg) {
    cJSON *root = NULL;
    TRY(wt_config(s, &root));
    if (!root) return ERR_OK;
    err e = apply(root, s->path, arg);
    cJSON_Delete(root);
    return e;
}

/* cfg[key] in *j, NULL when absent or null; ERR_FORMAT when neither a number nor a bool */
static err config_number(const cJSON *cfg, const char *key, const char *path, const cJSON **j) {
    *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsNull(*j)) *j = NULL;
    FAIL_IF(*j && !cJSON_IsNumber(*j) && !cJSON_IsBool(*j), ERR_FORMAT,
            "%s: config.json: '%s' is not a number", path, key);
    return ERR_OK;
}

err wt_config_int(const cJSON *cfg, const char *key, const char *path, int64_t *v) {
    const cJSON *j;
    TRY(config_number(cfg, key, path, &j));
    if (j) *v = cJSON_IsBool(j) ? cJSON_IsTrue(j) : (int64_t)j->valuedouble;
    return ERR_OK;
}

err wt_config_float(const cJSON *cfg, const char *key, const char *path, float *v) {
    const cJSON *j;
    TRY(config_number(cfg, key, path, &j));
    if (j) *v = cJSON_IsBool(j) ? (float)cJSON_IsTrue(j) : (float)j->valuedouble;
    return ERR_OK;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const df11_tensor *const *)a)->name, (*(const df11_tensor *const *)b)->name);
}

err wt_hash(wt_source *s, uint64_t *hash) {
    const df11_tensor **v = malloc(sizeof *v * (size_t)(s->n + 1));
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    memcpy(v, s->list, sizeof *v * (size_t)s->n);
    qsort(v, (size_t)s->n, sizeof *v, cmp_name);
    uint64_t h = 1469598103934665603ull;
#define MIX(p, len)                                                                                \
    for (size_t k_ = 0; k_ < (len); k_++)                                                          \
    h = (h ^ ((const uint8_t *)(p))[k_]) * 1099511628211ull
    for (int i = 0; i < s->n; i++) {
        const df11_tensor *t = v[i];
        /* a compressed tensor carries its original bytes' CRC; a raw one is its original bytes */
        uint32_t crc = t->compressed ? t->crc : df11_crc32(t->data, t->stored_bytes);
        const char *dt = dtype_name(t->dtype);
        MIX(t->name, strlen(t->name) + 1);
        MIX(dt, strlen(dt) + 1);
        MIX(t->shape, sizeof(int64_t) * (size_t)t->ndim);
        MIX(&crc, 4);
    }
#undef MIX
    free(v);
    *hash = h;
    return ERR_OK;
}

/* ---- blocks ---- */

struct wt_blocks {
    wt_blocks_config cfg;
    tensor_dev dev; /* op_ctx_dev(cfg.ctx) */
    int n_blocks;
    int *count;   /* tensors per block */
    int *first;   /* index of block i's first tensor in host[] / spec_shape[] */
    tensor *host; /* CPU: every tensor; GPU: shapes only (data NULL for absent ones) */
    int *present; /* GPU: whether tensor k is in the provider's block (absent optionals not) */
    wp_src *src;  /* GPU: provider sources, present tensors only, block after block */
    wp_block *blk;
    weight_provider *wp;
    int64_t numel; /* elements of the tensors found */
    void **owned;  /* buffers this owns (decoded, converted, encoded, names) */
    int n_owned, cap_owned;
    wt_patch patch; /* the source's at creation */
    char **patched; /* with a patch: tensor k's full name if it is patched, else NULL */
    int *n_patched; /* with a patch: block i's patched tensors */
};

static void *own(wt_blocks *b, void *p) {
    if (!p) return NULL;
    if (b->n_owned == b->cap_owned) {
        int cap = b->cap_owned ? 2 * b->cap_owned : 64;
        void **o = realloc(b->owned, sizeof *o * (size_t)cap);
        if (!o) {
            free(p);
            return NULL;
        }
        b->owned = o, b->cap_owned = cap;
    }
    return b->owned[b->n_owned++] = p;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Shapes match when they are equal after dropping trailing 1s (a 1x1 conv is a linear). */
static int shape_match(const wt_spec *sp, const df11_tensor *t) {
    int a = sp->ndim, b = t->ndim;
    while (a > 1 && sp->shape[a - 1] == 1)
        a--;
    while (b > 1 && t->shape[b - 1] == 1)
        b--;
    if (a != b) return 0;
    for (int d = 0; d < a; d++)
        if (sp->shape[d] != t->shape[d]) return 0;
    return 1;
}

static err check_tensor(const wt_source *s, const wt_spec *sp, const df11_tensor *t) {
    char want[96], got[96];
    wt_spec stored = *sp; /* a transposed tensor is stored [cols, rows] */
    if (sp->transposed) {
        CHECK(sp->ndim == 2);
        stored.shape[0] = sp->shape[1], stored.shape[1] = sp->shape[0];
        sp = &stored;
    }
    shape_str(want, sizeof want, sp->ndim, sp->shape);
    FAIL_IF(!t, ERR_FORMAT, "%s: tensor '%s%s' is missing (expected shape %s)", s->path, s->prefix,
            sp->name, want);
    shape_str(got, sizeof got, t->ndim, t->shape);
    FAIL_IF(!shape_match(sp, t) || (stored.transposed && t->ndim != 2), ERR_FORMAT,
            "%s: tensor '%s': expected shape %s, got %s", s->path, t->name, want, got);
    FAIL_IF(t->dtype != DTYPE_BF16 && t->dtype != DTYPE_F16 && t->dtype != DTYPE_F32,
            ERR_UNSUPPORTED, "%s: tensor '%s' is %s; BF16, F16 or F32 expected", s->path, t->name,
            dtype_name(t->dtype));
    return ERR_OK;
}

/* The tensor's values as BF16 on the host: the mmapped bytes, or a decoded / converted copy. */
static err host_bf16(wt_blocks *b, const wt_source *s, const df11_tensor *t, const uint16_t **out) {
    if (t->dtype == DTYPE_BF16 && !t->compressed) {
        *out = (const uint16_t *)t->data;
        return ERR_OK;
    }
    uint16_t *v = own(b, malloc(t->numel * 2 + 2));
    FAIL_IF(!v, ERR_NOMEM, "%s: out of memory for tensor '%s'", s->path, t->name);
    if (t->compressed) {
        df11_blob blob;
        TRY(df11_blob_parse(t->data, t->stored_bytes, &blob));
        TRY(df11_decode_cpu(&blob, v));
        err e = df11_check(&blob, v);
        if (e) return err_wrap(e, "%s: tensor '%s'", s->path, t->name);
    } else if (t->dtype == DTYPE_F16) {
        const uint16_t *h = (const uint16_t *)t->data;
#pragma omp parallel for
        for (int64_t i = 0; i < (int64_t)t->numel; i++)
            v[i] = f32_to_bf16(f16_to_f32(h[i]));
    } else {
#pragma omp parallel for
        for (int64_t i = 0; i < (int64_t)t->numel; i++) {
            float f;
            memcpy(&f, t->data + 4 * i, 4);
            v[i] = f32_to_bf16(f);
        }
    }
    *out = v;
    return ERR_OK;
}

/* The transpose of t (2-D, stored [r, c]) as an owned [c, r] copy of src, whose elements are
 * es bytes each. */
static err transpose_owned(wt_blocks *b, const wt_source *s, const df11_tensor *t,
                           const void *src, size_t es, const void **out) {
    const int64_t r = t->shape[0], c = t->shape[1];
    uint8_t *d = own(b, malloc((size_t)(r * c) * es + 4));
    FAIL_IF(!d, ERR_NOMEM, "%s: out of memory transposing tensor '%s'", s->path, t->name);
    const uint8_t *p = src;
#pragma omp parallel for
    for (int64_t j = 0; j < c; j++)
        for (int64_t i = 0; i < r; i++)
            memcpy(d + (size_t)(j * r + i) * es, p + (size_t)(i * c + j) * es, es);
    *out = d;
    return ERR_OK;
}

static err bind_cpu(wt_blocks *b, const wt_source *s, const df11_tensor *t, int transposed,
                    tensor *h) {
    if (transposed) { /* as stored (BF16, F16, F32), or decoded to BF16 */
        const void *v = t->data;
        h->dt = t->dtype;
        if (t->compressed) {
            const uint16_t *d;
            TRY(host_bf16(b, s, t, &d));
            v = d, h->dt = DTYPE_BF16;
        }
        const void *d = NULL;
        TRY(transpose_owned(b, s, t, v, (size_t)dtype_bits(h->dt) / 8, &d));
        h->data = (void *)d;
        return ERR_OK;
    }
    if (!t->compressed) {
        h->data = (void *)t->data; /* mmapped, as stored */
        h->dt = t->dtype;
        return ERR_OK;
    }
    const uint16_t *v;
    TRY(host_bf16(b, s, t, &v));
    h->data = (void *)v;
    h->dt = DTYPE_BF16;
    return ERR_OK;
}

static err bind_gpu(wt_blocks *b, const wt_source *s, const df11_tensor *t, int transposed,
                    wp_src *w) {
    /* a transposed tensor goes to the provider as the BF16 of its owned transposed copy (its
       blob, if any, holds the stored order) */
    const int has_blob = t->compressed && !transposed;
    if (has_blob) {
        w->blob = t->data, w->blob_len = t->stored_bytes;
        if (b->cfg.mode != WP_RESIDENT) return ERR_OK;
    }
    const uint16_t *v;
    TRY(host_bf16(b, s, t, &v));
    if (transposed) {
        const void *d = NULL;
        TRY(transpose_owned(b, s, t, v, 2, &d));
        v = d;
    }
    if (b->cfg.mode == WP_RESIDENT) {
        w->bf16 = has_blob ? NULL : v; /* the provider decodes blobs itself, on the GPU */
        return ERR_OK;
    }
    /* the DF11 modes need a blob for every weight: the few stored raw (small, or not BF16)
       are encoded here */
    uint8_t *blob;
    size_t len;
    TRY(df11_encode(v, t->numel, NULL, &blob, &len));
    FAIL_IF(!own(b, blob), ERR_NOMEM, "out of memory");
    w->bf16 = v, w->blob = blob, w->blob_len = len;
    return ERR_OK;
}

/* Whether the patch wants tensor k (t, of block i); if so its name is kept. */
static err ask_patch(wt_blocks *b, const wt_source *s, const df11_tensor *t, int i, int k) {
    if (!b->patched || !b->patch.wants(b->patch.ctx, t->name)) return ERR_OK;
    FAIL_IF(!(b->patched[k] = own(b, strdup(t->name))), ERR_NOMEM,
            "%s: out of memory patching tensor '%s'", s->path, t->name);
    b->n_patched[i]++;
    return ERR_OK;
}

/* A patched tensor on the CPU: an owned F32 copy of what bind_cpu made of it, patched once. */
static err patch_cpu(wt_blocks *b, const wt_source *s, const char *name, tensor *h) {
    const int64_t n = tensor_numel(h);
    float *f = own(b, malloc((size_t)n * 4 + 4));
    FAIL_IF(!f, ERR_NOMEM, "%s: out of memory patching tensor '%s'", s->path, name);
    half_widen(h->dt, h->data, n, f);
    h->data = f, h->dt = DTYPE_F32;
    b->patch.apply(b->patch.ctx, b->cfg.ctx, name, *h);
    return ERR_OK;
}

/* The resident blocks' patched tensors, patched once: acquiring a block for the first time
 * patches it. */
static err patch_resident(wt_blocks *b) {
    if (!b->patched || b->cfg.mode != WP_RESIDENT) return ERR_OK;
    for (int i = 0; i < b->n_blocks; i++) {
        if (!b->n_patched[i]) continue;
        tensor w[b->count[i] + 1];
        wt_blocks_acquire(b, i, w);
        wt_blocks_release(b, i);
    }
    return op_ctx_sync(b->cfg.ctx);
}

static err blocks_fill(wt_blocks *b, wt_source *s, const wt_spec *const *specs) {
    int k = 0, kp = 0;
    for (int i = 0; i < b->n_blocks; i++) {
        b->first[i] = k;
        int present = 0;
        for (int j = 0; j < b->count[i]; j++, k++) {
            const wt_spec *sp = &specs[i][j];
            const df11_tensor *t = wt_find(s, sp->name);
            tensor *h = &b->host[k];
            *h = tensor_make(NULL, DTYPE_BF16, b->dev, sp->ndim, sp->shape);
            if (!t && sp->optional) continue;
            TRY(check_tensor(s, sp, t));
            TRY(ask_patch(b, s, t, i, k));
            b->numel += (int64_t)t->numel;
            if (b->dev == TENSOR_CPU) {
                TRY(bind_cpu(b, s, t, sp->transposed, h));
                if (b->patched && b->patched[k]) TRY(patch_cpu(b, s, b->patched[k], h));
                continue;
            }
            wp_src *w = &b->src[kp++];
            w->ndim = sp->ndim;
            memcpy(w->shape, sp->shape, sizeof w->shape);
            TRY(bind_gpu(b, s, t, sp->transposed, w));
            b->present[k] = 1;
            present++;
        }
        if (b->dev == TENSOR_CUDA) b->blk[i] = (wp_block){present, &b->src[kp - present]};
    }
    if (b->dev == TENSOR_CPU) return ERR_OK;
    wp_config pc = {b->cfg.mode, b->cfg.budget};
    TRY(wp_create(&pc, b->blk, b->n_blocks, op_ctx_stream(b->cfg.ctx), &b->wp));
    return patch_resident(b);
}

err wt_blocks_create(wt_source *s, int n_blocks, const int *counts, const wt_spec *const *specs,
                     const wt_blocks_config *cfg, wt_blocks **out) {
    *out = NULL;
    wt_blocks *b = calloc(1, sizeof *b);
    FAIL_IF(!b, ERR_NOMEM, "out of memory");
    b->cfg = *cfg;
    b->dev = op_ctx_dev(cfg->ctx);
    b->n_blocks = n_blocks;
    int total = 0;
    for (int i = 0; i < n_blocks; i++)
        total += counts[i];
    b->count = malloc(sizeof *b->count * (size_t)(n_blocks + 1));
    b->first = malloc(sizeof *b->first * (size_t)(n_blocks + 1));
    b->host = calloc((size_t)total + 1, sizeof *b->host);
    b->present = calloc((size_t)total + 1, sizeof *b->present);
    b->src = calloc((size_t)total + 1, sizeof *b->src);
    b->blk = calloc((size_t)n_blocks + 1, sizeof *b->blk);
    if (s->patch) { /* nothing of this without a patch */
        b->patch = *s->patch;
        b->patched = calloc((size_t)total + 1, sizeof *b->patched);
        b->n_patched = calloc((size_t)n_blocks + 1, sizeof *b->n_patched);
    }
    err e = ERR_OK;
    if (!b->count || !b->first || !b->host || !b->present || !b->src || !b->blk ||
        (s->patch && (!b->patched || !b->n_patched)))
        e = err_set(ERR_NOMEM, "out of memory");
    if (!e) {
        memcpy(b->count, counts, sizeof *counts * (size_t)n_blocks);
        e = blocks_fill(b, s, specs);
    }
    if (e) {
        wt_blocks_free(b);
        return e;
    }
    *out = b;
    return ERR_OK;
}

void wt_blocks_free(wt_blocks *b) {
    if (!b) return;
    wp_free(b->wp);
    for (int i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
    free(b->owned);
    free(b->count);
    free(b->first);
    free(b->host);
    free(b->present);
    free(b->src);
    free(b->blk);
    free(b->patched);
    free(b->n_patched);
    free(b);
}

void wt_blocks_acquire(wt_blocks *b, int i, tensor *w) {
    CHECK(i >= 0 && i < b->n_blocks);
    const tensor *h = &b->host[b->first[i]];
    if (b->dev == TENSOR_CPU) {
        memcpy(w, h, sizeof *w * (size_t)b->count[i]);
        return;
    }
    tensor got[b->count[i] + 1];
    const int fresh = wp_acquire(b->wp, i, got);
    for (int j = 0, k = 0; j < b->count[i]; j++)
        w[j] = b->present[b->first[i] + j] ? got[k++] : h[j];
    /* on the compute stream, after the decode and before the forward's ops */
    if (fresh && b->patched && b->n_patched[i])
        for (int j = 0; j < b->count[i]; j++)
            if (b->patched[b->first[i] + j])
                b->patch.apply(b->patch.ctx, b->cfg.ctx, b->patched[b->first[i] + j], w[j]);
}

void wt_blocks_release(wt_blocks *b, int i) {
    if (b->dev == TENSOR_CUDA) wp_release(b->wp, i);
}

size_t wt_blocks_device_bytes(const wt_blocks *b) { return b->wp ? wp_device_bytes(b->wp) : 0; }

int64_t wt_blocks_numel(const wt_blocks *b) { return b->numel; }

/* ---- layout ---- */

struct wt_layout {
    int n_blocks;
    int *count, *cap; /* tensors listed in block b, and room for them */
    wt_spec **spec;   /* block b's specs; the names are owned */
    int failed;       /* an allocation failed */
};

err wt_layout_create(int n_blocks, wt_layout **out) {
    *out = NULL;
    CHECK(n_blocks >= 0);
    wt_layout *l = calloc(1, sizeof *l);
    FAIL_IF(!l, ERR_NOMEM, "out of memory");
    l->n_blocks = n_blocks;
    l->count = calloc((size_t)n_blocks + 1, sizeof *l->count);
    l->cap = calloc((size_t)n_blocks + 1, sizeof *l->cap);
    l->spec = calloc((size_t)n_blocks + 1, sizeof *l->spec);
    if (!l->count || !l->cap || !l->spec) {
        wt_layout_free(l);
        FAIL(ERR_NOMEM, "out of memory");
    }
    *out = l;
    return ERR_OK;
}

void wt_layout_free(wt_layout *l) {
    if (!l) return;
    for (int b = 0; b < l->n_blocks && l->spec && l->count; b++) {
        for (int j = 0; j < l->count[b]; j++)
            free((char *)l->spec[b][j].name);
        free(l->spec[b]);
    }
    free(l->count);
    free(l->cap);
    free(l->spec);
    free(l);
}

void wt_layout_add(wt_layout *l, int b, int flags, int ndim, const int64_t *shape,
                   const char *fmt, ...) {
    CHECK(b >= 0 && b < l->n_blocks && ndim >= 1 && ndim <= TENSOR_MAX_DIMS);
    CHECK(!(flags & ~(WT_OPTIONAL | WT_TRANSPOSED)) && (!(flags & WT_TRANSPOSED) || ndim == 2));
    if (l->count[b] == l->cap[b]) {
        const int cap = l->cap[b] ? 2 * l->cap[b] : 16;
        wt_spec *sp = realloc(l->spec[b], sizeof *sp * (size_t)cap);
        if (!sp) {
            l->failed = 1;
            return;
        }
        l->spec[b] = sp, l->cap[b] = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    const int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *name = len < 0 ? NULL : malloc((size_t)len + 1);
    if (!name) {
        l->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(name, (size_t)len + 1, fmt, ap);
    va_end(ap);
    wt_spec *sp = &l->spec[b][l->count[b]];
    *sp = (wt_spec){.name = name,
                    .ndim = ndim,
                    .optional = !!(flags & WT_OPTIONAL),
                    .transposed = !!(flags & WT_TRANSPOSED)};
    memcpy(sp->shape, shape, sizeof *shape * (size_t)ndim);
    l->count[b]++;
}

int wt_layout_count(const wt_layout *l, int b) {
    CHECK(b >= 0 && b < l->n_blocks);
    return l->count[b];
}

err wt_blocks_create_from(wt_source *s, const wt_layout *l, const wt_blocks_config *cfg,
                          wt_blocks **out) {
    *out = NULL;
    FAIL_IF(l->failed, ERR_NOMEM, "%s: out of memory listing the tensors", s->path);
    return wt_blocks_create(s, l->n_blocks, l->count, (const wt_spec *const *)l->spec, cfg, out);
}
