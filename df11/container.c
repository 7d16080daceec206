/* container: DF11 checkpoint files (FORMAT.md "Container"): open either kind of checkpoint,
 * compress a safetensors file, rebuild the original, verify. */
#include "df11/container.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/fileio.h"

struct df11_ckpt {
    st_file *f;
    int is_df11;
    int n;
    df11_tensor *t;
    arena a;
    uint64_t orig_size;
};

static int cmp_begin(const void *a, const void *b) {
    const df11_tensor *x = *(const df11_tensor *const *)a, *y = *(const df11_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static err json_u64(const cJSON *j, uint64_t *v) {
    FAIL_IF(!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > 9007199254740992.0 ||
                j->valuedouble != (double)(uint64_t)j->valuedouble,
            ERR_FORMAT, "expected a non-negative integer");
    *v = (uint64_t)j->valuedouble;
    return ERR_OK;
}

/* Parses one entry of the original header into t (name already set). */
static err parse_entry(const cJSON *e, df11_tensor *t) {
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    FAIL_IF(!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
                cJSON_GetArraySize(off) != 2 || cJSON_GetArraySize(sh) > ST_MAX_DIMS,
            ERR_FORMAT, "malformed entry");
    t->dtype = dtype_from_name(dt->valuestring);
    FAIL_IF(t->dtype == DTYPE_INVALID, ERR_FORMAT, "unknown dtype \"%s\"", dt->valuestring);
    t->ndim = cJSON_GetArraySize(sh);
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t v = 0;
        TRY(json_u64(cJSON_GetArrayItem(sh, d), &v));
        t->shape[d] = (int64_t)v;
        FAIL_IF(v && t->numel > UINT64_MAX / v, ERR_FORMAT, "shape overflows");
        t->numel *= v;
    }
    TRY(json_u64(cJSON_GetArrayItem(off, 0), &t->begin));
    TRY(json_u64(cJSON_GetArrayItem(off, 1), &t->end));
    FAIL_IF(t->end < t->begin || t->end - t->begin != dtype_nbytes(t->dtype, t->numel), ERR_FORMAT,
            "data_offsets [%llu, %llu] do not hold %llu %s elements", (unsigned long long)t->begin,
            (unsigned long long)t->end, (unsigned long long)t->numel, dtype_name(t->dtype));
    return ERR_OK;
}

/* Matches an original tensor with what the DF11 file stores for it. */
static err bind_stored(df11_ckpt *c, df11_tensor *t, const cJSON *crcs) {
    const st_tensor *s = st_find(c->f, t->name);
    FAIL_IF(!s, ERR_FORMAT, "not stored in the file");
    t->data = s->data;
    t->stored_bytes = s->end - s->begin;
    if (t->dtype == DTYPE_BF16 && s->dtype == DTYPE_U8) {
        df11_blob b;
        TRY(df11_blob_parse(s->data, t->stored_bytes, &b));
        FAIL_IF(b.n != t->numel, ERR_FORMAT, "blob holds %llu elements, shape says %llu",
                (unsigned long long)b.n, (unsigned long long)t->numel);
        t->compressed = 1;
        t->crc = b.crc;
        return ERR_OK;
    }
    FAIL_IF(s->dtype != t->dtype || s->ndim != t->ndim ||
                memcmp(s->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) != 0,
            ERR_FORMAT, "stored as %s with another shape than the original %s", dtype_name(s->dtype),
            dtype_name(t->dtype));
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(crcs, t->name);
    FAIL_IF(!cJSON_IsString(h) || strlen(h->valuestring) != 8, ERR_FORMAT, "no checksum in %s",
            DF11_META_RAW_CRC);
    t->crc = (uint32_t)strtoul(h->valuestring, NULL, 16);
    return ERR_OK;
}

static err parse_original(df11_ckpt *c, const char *hdr, const char *crc_json) {
    cJSON *root = cJSON_Parse(hdr), *crcs = cJSON_Parse(crc_json ? crc_json : "{}");
    err e = ERR_OK;
    if (!cJSON_IsObject(root) || !cJSON_IsObject(crcs)) {
        e = err_set(ERR_FORMAT, "metadata %s or %s is not a JSON object", DF11_META_HEADER,
                    DF11_META_RAW_CRC);
        goto done;
    }
    int n = 0;
    for (const cJSON *it = root->child; it; it = it->next) n += strcmp(it->string, "__metadata__") != 0;
    c->t = arena_alloc(&c->a, sizeof *c->t * (size_t)(n ? n : 1));
    df11_tensor **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!c->t || !order) {
        free(order);
        e = err_set(ERR_NOMEM, "out of memory");
        goto done;
    }
    for (const cJSON *it = root->child; it && !e; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        df11_tensor *t = &c->t[c->n];
        order[c->n++] = t;
        t->name = arena_strdup(&c->a, it->string);
        e = parse_entry(it, t);
        if (!e) e = bind_stored(c, t, crcs);
        if (e) err_wrap(e, "original tensor '%s'", it->string);
    }
    uint64_t at = 0;
    qsort(order, (size_t)c->n, sizeof *order, cmp_begin);
    for (int i = 0; i < c->n && !e; i++, at = order[i - 1]->end)
        if (order[i]->begin != at)
            e = err_set(ERR_FORMAT, "original tensor '%s' starts at %llu, expected %llu",
                        order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)at);
    if (!e && c->n != st_count(c->f))
        e = err_set(ERR_FORMAT, "file stores %d tensors, the original header lists %d",
                    st_count(c->f), c->n);
    c->orig_size = 8 + strlen(hdr) + at;
    free(order);
done:
    cJSON_Delete(root);
    cJSON_Delete(crcs);
    return e;
}

static err ckpt_plain(df11_ckpt *c) {
    c->n = st_count(c->f);
    c->t = arena_alloc(&c->a, sizeof *c->t * (size_t)(c->n ? c->n : 1));
    FAIL_IF(!c->t, ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n; i++) {
        const st_tensor *s = st_at(c->f, i);
        df11_tensor *t = &c->t[i];
        t->name = s->name;
        t->dtype = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof t->shape);
        t->numel = s->numel;
        t->begin = s->begin;
        t->end = s->end;
        t->data = s->data;
        t->stored_bytes = s->end - s->begin;
    }
    st_bytes(c->f, &c->orig_size);
    return ERR_OK;
}

static int header_crc_ok(const st_file *f, const char *hdr) {
    const char *stored = st_meta(f, DF11_META_HEADER_CRC);
    char hex[9];
    snprintf(hex, sizeof hex, "%08x", df11_crc32(hdr, strlen(hdr)));
    return stored && strcmp(stored, hex) == 0;
}

static err ckpt_open(const char *path, const void *bytes, size_t len, df11_ckpt **out) {
    *out = NULL;
    df11_ckpt *c = calloc(1, sizeof *c);
    FAIL_IF(!c, ERR_NOMEM, "out of memory");
    err e = bytes ? st_open_memory(bytes, len, path, &c->f) : st_open(path, &c->f);
    if (!e) {
        const char *v = st_meta(c->f, DF11_META_VERSION), *h = st_meta(c->f, DF11_META_HEADER);
        c->is_df11 = v != NULL;
        if (!c->is_df11) e = ckpt_plain(c);
        else if (strcmp(v, "1") != 0)
            e = err_set(ERR_UNSUPPORTED, "DF11 container version \"%s\", this build reads \"1\"", v);
        else if (!h) e = err_set(ERR_FORMAT, "metadata %s is missing", DF11_META_HEADER);
        else if (!header_crc_ok(c->f, h))
            e = err_set(ERR_CHECKSUM, "metadata %s does not match its CRC %s", DF11_META_HEADER,
                        DF11_META_HEADER_CRC);
        else e = parse_original(c, h, st_meta(c->f, DF11_META_RAW_CRC));
        if (e) err_wrap(e, "%s", path);
    }
    if (e) {
        df11_ckpt_close(c);
        return e;
    }
    *out = c;
    return ERR_OK;
}

err df11_ckpt_open(const char *path, df11_ckpt **out) { return ckpt_open(path, NULL, 0, out); }

err df11_ckpt_open_memory(const void *bytes, size_t len, const char *label, df11_ckpt **out) {
    return ckpt_open(label, bytes, len, out);
}

void df11_ckpt_close(df11_ckpt *c) {
    if (!c) return;
    st_close(c->f);
    arena_free(&c->a);
    free(c);
}

int df11_ckpt_is_df11(const df11_ckpt *c) { return c->is_df11; }
int df11_ckpt_count(const df11_ckpt *c) { return c->n; }
const df11_tensor *df11_ckpt_at(const df11_ckpt *c, int i) { return &c->t[i]; }
const st_file *df11_ckpt_file(const df11_ckpt *c) { return c->f; }
uint64_t df11_ckpt_original_size(const df11_ckpt *c) { return c->orig_size; }

const df11_tensor *df11_ckpt_find(const df11_ckpt *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->t[i].name, name) == 0) return &c->t[i];
    return NULL;
}

err df11_ckpt_read(const df11_ckpt *c, const df11_tensor *t, void *dst) {
    if (!t->compressed) {
        memcpy(dst, t->data, t->stored_bytes);
        if (c->is_df11 && df11_crc32(dst, t->stored_bytes) != t->crc)
            FAIL(ERR_CHECKSUM, "%s: tensor '%s': CRC %08x, stored %08x", st_path(c->f), t->name,
                 df11_crc32(dst, t->stored_bytes), t->crc);
        return ERR_OK;
    }
    df11_blob b;
    err e = df11_blob_parse(t->data, t->stored_bytes, &b);
    if (!e) e = df11_decode_cpu(&b, dst);
    if (!e) e = df11_check(&b, dst);
    if (e) return err_wrap(e, "%s: tensor '%s'", st_path(c->f), t->name);
    return ERR_OK;
}
