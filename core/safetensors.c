/* safetensors: a strict reader (every header field checked against the file before any tensor
 * is handed out, since the input may be hostile), a writer, and sharded index files. */
#include "core/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/fileio.h"
#include "core/safetensors_internal.h"

/* The reference implementation refuses headers over 100 MB; a larger one is an attack or
 * corruption, and parsing it would cost gigabytes of cJSON nodes. */
#define ST_MAX_HEADER 100000000ull
/* Integers beyond 2^53 do not survive cJSON's doubles; no real tensor comes near. */
#define ST_MAX_JSON_INT 9007199254740992.0
/* Names in messages are cut so a hostile 100 MB name cannot flood the error text. */
#define NM "%.200s"


typedef struct meta_kv {
    const char *key, *value;
} meta_kv;

struct st_file {
    fio_map map; /* zeroed for st_open_memory */
    const uint8_t *bytes;
    size_t len;
    size_t header_len;
    const char *path;
    arena ar;
    st_tensor *tensors;
    int count;
    name_ix *by_name;
    meta_kv *meta;
    int meta_count;
    name_ix *meta_by_name;
};

/* ---- helpers shared by reader, writer and index ---- */

static int cmp_name_ix(const void *a, const void *b) {
    const name_ix *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorts v; returns the index in v of the second of the first duplicate pair, or -1. */
int st_sort_find_dup(name_ix *v, int n) {
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_name_ix);
    for (int i = 1; i < n; i++)
        if (strcmp(v[i - 1].name, v[i].name) == 0) return i;
    return -1;
}

static int cmp_name_only(const void *a, const void *b) {
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

/* The idx of name in sorted v, or -1. */
int st_lookup(const name_ix *v, int n, const char *name) {
    name_ix key = {name, 0};
    const name_ix *r = n > 0 ? bsearch(&key, v, (size_t)n, sizeof *v, cmp_name_only) : NULL;
    return r ? r->idx : -1;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes available), or 0 if invalid:
 * overlong forms, surrogates and code points past U+10FFFF are rejected as RFC 3629 says. */
static size_t utf8_seq(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (len > n || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return len;
}

static int utf8_valid(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0, k; i < n; i += k)
        if ((k = utf8_seq((const uint8_t *)s + i, n - i)) == 0) return 0;
    return 1;
}

/* Checks what cJSON lets through: invalid UTF-8, raw control characters (JSON allows none in
 * strings and only whitespace outside), and "\u0000", which would cut a C string short.
 * Returns NULL if fine, else what is wrong, with its offset in *at. */
const char *st_scan_header(const uint8_t *p, size_t n, size_t *at) {
    int in_str = 0;
    for (size_t i = 0, k; i < n; i += k) {
        *at = i;
        uint8_t c = p[i];
        k = 1;
        if (c >= 0x80) {
            if ((k = utf8_seq(p + i, n - i)) == 0) return "invalid UTF-8";
        } else if (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            return "a control character";
        } else if (c < 0x20 && in_str) {
            return "a control character inside a string";
        } else if (c == '"') {
            in_str = !in_str;
        } else if (c == '\\' && in_str && i + 1 < n) {
            if (p[i + 1] == 'u' && n - i >= 6 && memcmp(p + i + 2, "0000", 4) == 0)
                return "an escaped NUL character";
            k = p[i + 1] < 0x80 ? 2 : 1; /* a bad escape is cJSON's to reject; UTF-8 is ours */
        }
    }
    return NULL;
}

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_JSON_INT)) return 0;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 0;
    *out = u;
    return 1;
}

static void format_shape(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* numel and byte size of a shape; 0 on overflow or when the bits do not fill whole bytes
 * (the reference refuses sub-byte tensors that end mid-byte). */
static int shape_size(dtype t, int ndim, const int64_t *shape, uint64_t *numel, uint64_t *nbytes) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > UINT64_MAX / d) return 0;
        n *= d;
    }
    uint64_t bits = (uint64_t)dtype_bits(t);
    if (bits == 0 || (n != 0 && n > UINT64_MAX / bits) || (n * bits) % 8 != 0) return 0;
    *numel = n;
    *nbytes = n * bits / 8;
    return 1;
}

/* ---- reader ---- */

static err parse_dtype(st_file *f, const char *name, const cJSON *v, st_tensor *t) {
    FAIL_IF(!cJSON_IsString(v), ERR_FORMAT, "%s: tensor \"" NM "\": \"dtype\" must be a string",
            f->path, name);
    t->dtype = dtype_from_name(v->valuestring);
    FAIL_IF(t->dtype == DTYPE_INVALID, ERR_UNSUPPORTED,
            "%s: tensor \"" NM "\": unsupported dtype \"" NM "\"", f->path, name, v->valuestring);
    return ERR_OK;
}

static err parse_shape(st_file *f, const char *name, const cJSON *v, st_tensor *t) {
    FAIL_IF(!cJSON_IsArray(v), ERR_FORMAT, "%s: tensor \"" NM "\": \"shape\" must be an array",
            f->path, name);
    int n = cJSON_GetArraySize(v);
    FAIL_IF(n > ST_MAX_DIMS, ERR_UNSUPPORTED,
            "%s: tensor \"" NM "\": shape has %d dimensions, at most %d are supported", f->path,
            name, n, ST_MAX_DIMS);
    int i = 0;
    for (const cJSON *d = v->child; d; d = d->next, i++) {
        uint64_t u;
        FAIL_IF(!json_uint(d, &u), ERR_FORMAT,
                "%s: tensor \"" NM "\": shape[%d] must be a non-negative integer (at most 2^53)",
                f->path, name, i);
        t->shape[i] = (int64_t)u;
    }
    t->ndim = n;
    return ERR_OK;
}

static err parse_offsets(st_file *f, const char *name, const cJSON *v, st_tensor *t) {
    uint64_t b, e;
    FAIL_IF(!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !json_uint(v->child, &b) ||
                !json_uint(v->child->next, &e),
            ERR_FORMAT, "%s: tensor \"" NM "\": \"data_offsets\" must be two non-negative integers",
            f->path, name);
    FAIL_IF(b > e, ERR_FORMAT,
            "%s: tensor \"" NM "\": data_offsets [%llu, %llu] end before they begin", f->path, name,
            (unsigned long long)b, (unsigned long long)e);
    t->begin = b;
    t->end = e;
    return ERR_OK;
}

/* One header entry; unknown fields are ignored as the reference does, repeated ones are not. */
static err parse_fields(st_file *f, const cJSON *item, st_tensor *t) {
    const char *name = t->name;
    FAIL_IF(!cJSON_IsObject(item), ERR_FORMAT, "%s: tensor \"" NM "\": entry must be an object",
            f->path, name);
    static const char *keys[3] = {"dtype", "shape", "data_offsets"};
    int seen[3] = {0};
    for (const cJSON *c = item->child; c; c = c->next) {
        int k = 0;
        while (k < 3 && strcmp(c->string, keys[k]) != 0)
            k++;
        if (k == 3) continue;
        FAIL_IF(seen[k]++, ERR_FORMAT, "%s: tensor \"" NM "\": \"%s\" appears twice", f->path, name,
                keys[k]);
        if (k == 0) TRY(parse_dtype(f, name, c, t));
        if (k == 1) TRY(parse_shape(f, name, c, t));
        if (k == 2) TRY(parse_offsets(f, name, c, t));
    }
    for (int k = 0; k < 3; k++)
        FAIL_IF(!seen[k], ERR_FORMAT, "%s: tensor \"" NM "\": missing \"%s\"", f->path, name,
                keys[k]);
    return ERR_OK;
}

static err parse_entry(st_file *f, const cJSON *item, st_tensor *t, uint64_t data_size) {
    TRY(parse_fields(f, item, t));
    char shp[256];
    format_shape(shp, sizeof shp, t->shape, t->ndim);
    uint64_t nbytes;
    FAIL_IF(!shape_size(t->dtype, t->ndim, t->shape, &t->numel, &nbytes), ERR_FORMAT,
            "%s: tensor \"" NM "\": shape %s of %s overflows or does not fill whole bytes", f->path,
            t->name, shp, dtype_name(t->dtype));
    FAIL_IF(t->end - t->begin != nbytes, ERR_FORMAT,
            "%s: tensor \"" NM "\": %s %s needs %llu bytes, data_offsets [%llu, %llu] give %llu",
            f->path, t->name, dtype_name(t->dtype), shp, (unsigned long long)nbytes,
            (unsigned long long)t->begin, (unsigned long long)t->end,
            (unsigned long long)(t->end - t->begin));
    FAIL_IF(t->end > data_size, ERR_FORMAT,
            "%s: tensor \"" NM
            "\": data_offsets [%llu, %llu] run past the data section (%llu bytes)",
            f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
            (unsigned long long)data_size);
    return ERR_OK;
}

static err parse_metadata(st_file *f, const cJSON *m) {
    FAIL_IF(!cJSON_IsObject(m), ERR_FORMAT, "%s: \"__metadata__\" must be an object", f->path);
    int n = cJSON_GetArraySize(m), i = 0;
    f->meta = arena_alloc(&f->ar, (size_t)n * sizeof *f->meta + 1);
    f->meta_by_name = arena_alloc(&f->ar, (size_t)n * sizeof *f->meta_by_name + 1);
    FAIL_IF(!f->meta || !f->meta_by_name, ERR_NOMEM, "%s: out of memory", f->path);
    for (const cJSON *c = m->child; c; c = c->next, i++) {
        FAIL_IF(!cJSON_IsString(c), ERR_FORMAT,
                "%s: __metadata__ \"" NM "\": value must be a string", f->path, c->string);
        meta_kv *kv = &f->meta[i];
        *kv = (meta_kv){arena_strdup(&f->ar, c->string), arena_strdup(&f->ar, c->valuestring)};
        FAIL_IF(!kv->key || !kv->value, ERR_NOMEM, "%s: out of memory", f->path);
        f->meta_by_name[i] = (name_ix){kv->key, i};
    }
    f->meta_count = n;
    int d = st_sort_find_dup(f->meta_by_name, n);
    FAIL_IF(d >= 0, ERR_FORMAT, "%s: __metadata__ key \"" NM "\" appears twice", f->path,
            f->meta_by_name[d].name);
    return ERR_OK;
}

typedef struct span {
    uint64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The reference accepts only a data section that tensors tile exactly: sorted by offset, each
 * begins where the previous ended and the last ends at the file's end. */
static err check_coverage(st_file *f, uint64_t data_size) {
    span *s = malloc((size_t)f->count * sizeof *s + 1);
    FAIL_IF(!s, ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->count; i++)
        s[i] = (span){f->tensors[i].begin, f->tensors[i].end, i};
    qsort(s, (size_t)f->count, sizeof *s, cmp_span);
    uint64_t pos = 0;
    err e = ERR_OK;
    for (int i = 0; i < f->count && e == ERR_OK; i++) {
        const st_tensor *t = &f->tensors[s[i].idx];
        if (t->begin != pos && i == 0)
            e = err_set(ERR_FORMAT,
                        "%s: tensor \"" NM "\": data_offsets [%llu, %llu] leave a hole: the "
                        "first tensor must begin at 0",
                        f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
        else if (t->begin != pos)
            e = err_set(ERR_FORMAT,
                        "%s: tensor \"" NM "\": data_offsets [%llu, %llu] %s: expected it to "
                        "begin at %llu, where \"" NM "\" ends",
                        f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        t->begin > pos ? "leave a hole" : "overlap", (unsigned long long)pos,
                        f->tensors[s[i - 1].idx].name);
        pos = t->end;
    }
    free(s);
    TRY(e);
    FAIL_IF(pos != data_size, ERR_FORMAT,
            "%s: tensors end at byte %llu of the data section, but it has %llu bytes", f->path,
            (unsigned long long)pos, (unsigned long long)data_size);
    return ERR_OK;
}

static err parse_root(st_file *f, const cJSON *root, uint64_t data_size) {
    int n = cJSON_GetArraySize(root), nt = 0, have_meta = 0;
    f->tensors = arena_alloc(&f->ar, (size_t)n * sizeof *f->tensors + 1);
    f->by_name = arena_alloc(&f->ar, (size_t)n * sizeof *f->by_name + 1);
    FAIL_IF(!f->tensors || !f->by_name, ERR_NOMEM, "%s: out of memory", f->path);
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            FAIL_IF(have_meta++, ERR_FORMAT, "%s: \"__metadata__\" appears twice", f->path);
            TRY(parse_metadata(f, c));
            continue;
        }
        st_tensor *t = &f->tensors[nt];
        t->name = arena_strdup(&f->ar, c->string);
        FAIL_IF(!t->name, ERR_NOMEM, "%s: out of memory", f->path);
        TRY(parse_entry(f, c, t, data_size));
        f->by_name[nt] = (name_ix){t->name, nt};
        nt++;
    }
    f->count = nt;
    int d = st_sort_find_dup(f->by_name, nt);
    FAIL_IF(d >= 0, ERR_FORMAT, "%s: tensor \"" NM "\" appears twice", f->path, f->by_name[d].name);
    TRY(check_coverage(f, data_size));
    const uint8_t *data = f->bytes + 8 + f->header_len;
    for (int i = 0; i < nt; i++)
        f->tensors[i].data = data + f->tensors[i].begin;
    return ERR_OK;
}

/* Parses a NUL-terminated copy: cJSON has a history of reading one byte past the length it is
 * given, and past the mapping that byte can be an unmapped page. Only whitespace may follow
 * the value (serde_json's rule; the writer pads with spaces). */
err st_parse_json(const char *label, const char *what, const uint8_t *text, size_t n,
                      cJSON **out) {
    *out = NULL;
    char *copy = malloc(n + 1);
    FAIL_IF(!copy, ERR_NOMEM, "%s: out of memory for a %zu-byte %s", label, n, what);
    if (n) memcpy(copy, text, n);
    copy[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(copy, n, &end, 0);
    size_t at = end ? (size_t)(end - copy) : 0;
    if (root)
        while (at < n &&
               (copy[at] == ' ' || copy[at] == '\t' || copy[at] == '\n' || copy[at] == '\r'))
            at++;
    free(copy);
    FAIL_IF(!root, ERR_FORMAT, "%s: %s is not valid JSON (error near byte %zu of %zu)", label, what,
            at, n);
    if (at != n) {
        cJSON_Delete(root);
        FAIL(ERR_FORMAT, "%s: %s has data after the JSON value (at byte %zu of %zu)", label, what,
             at, n);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        FAIL(ERR_FORMAT, "%s: %s is not a JSON object", label, what);
    }
    *out = root;
    return ERR_OK;
}

static err parse_file(st_file *f) {
    FAIL_IF(f->len < 8, ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
            f->path, f->len);
    uint64_t n = read_le64(f->bytes);
    FAIL_IF(n > ST_MAX_HEADER, ERR_FORMAT,
            "%s: header length %llu is over the %llu-byte limit (corrupt file?)", f->path,
            (unsigned long long)n, ST_MAX_HEADER);
    FAIL_IF(n > f->len - 8, ERR_FORMAT,
            "%s: header length %llu is larger than the %zu bytes after it (truncated file?)",
            f->path, (unsigned long long)n, f->len - 8);
    f->header_len = (size_t)n;
    const uint8_t *h = f->bytes + 8;
    FAIL_IF(n == 0 || h[0] != '{', ERR_FORMAT, "%s: header does not start with '{'", f->path);
    size_t at = 0;
    const char *bad = st_scan_header(h, (size_t)n, &at);
    FAIL_IF(bad, ERR_FORMAT, "%s: header has %s at byte %zu", f->path, bad, at);
    cJSON *root;
    TRY(st_parse_json(f->path, "header", h, (size_t)n, &root));
    err e = parse_root(f, root, (uint64_t)(f->len - 8 - n));
    cJSON_Delete(root);
    return e;
}

static err open_common(st_file *f, st_file **out) {
    err e = parse_file(f);
    if (e != ERR_OK) {
        st_close(f);
        return e;
    }
    *out = f;
    return ERR_OK;
}

static st_file *file_new(const char *label) {
    st_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = arena_strdup(&f->ar, label);
    if (!f->path) {
        free(f);
        return NULL;
    }
    return f;
}

err st_open(const char *path, st_file **out) {
    *out = NULL;
    st_file *f = file_new(path);
    FAIL_IF(!f, ERR_NOMEM, "%s: out of memory", path);
    err e = fio_map_open(path, &f->map);
    if (e != ERR_OK) {
        st_close(f);
        return e;
    }
    f->bytes = f->map.data;
    f->len = f->map.size;
    return open_common(f, out);
}

err st_open_memory(const void *bytes, size_t len, const char *label, st_file **out) {
    *out = NULL;
    if (!label) label = "<memory>";
    st_file *f = file_new(label);
    FAIL_IF(!f, ERR_NOMEM, "%s: out of memory", label);
    f->bytes = bytes;
    f->len = bytes ? len : 0;
    return open_common(f, out);
}

void st_close(st_file *f) {
    if (!f) return;
    fio_map_close(&f->map);
    arena_free(&f->ar);
    free(f);
}

int st_count(const st_file *f) { return f->count; }

const st_tensor *st_at(const st_file *f, int i) {
    CHECK(i >= 0 && i < f->count);
    return &f->tensors[i];
}

const st_tensor *st_find(const st_file *f, const char *name) {
    int i = st_lookup(f->by_name, f->count, name);
    return i < 0 ? NULL : &f->tensors[i];
}

const char *st_meta(const st_file *f, const char *key) {
    int i = st_lookup(f->meta_by_name, f->meta_count, key);
    return i < 0 ? NULL : f->meta[i].value;
}

int st_meta_count(const st_file *f) { return f->meta_count; }

void st_meta_at(const st_file *f, int i, const char **key, const char **value) {
    CHECK(i >= 0 && i < f->meta_count);
    *key = f->meta[i].key;
    *value = f->meta[i].value;
}

const char *st_header(const st_file *f, size_t *len) {
    *len = f->header_len;
    return (const char *)f->bytes + 8;
}

const uint8_t *st_bytes(const st_file *f, size_t *len) {
    *len = f->len;
    return f->bytes;
}

const char *st_path(const st_file *f) { return f->path; }

/* ---- writer ---- */

struct st_writer {
    arena ar;
    st_tensor *t; /* begin/end assigned as added; data borrowed */
    int count, cap;
    meta_kv *meta;
    int meta_count, meta_cap;
};

/* p grown (realloc) to hold more than count items of size bytes; NULL when out of memory. */
static void *grow(void *p, int count, int *cap, size_t size) {
    if (count < *cap) return p;
    int n = *cap ? *cap * 2 : 16;
    void *q = realloc(p, (size_t)n * size);
    if (q) *cap = n;
    return q;
}

static void put_json_str(FILE *m, const char *s) {
    fputc('"', m);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(m, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(m, "\\u%04x", *c);
        else
            fputc(*c, m);
    }
    fputc('"', m);
}

err st_writer_create(st_writer **out) {
    *out = calloc(1, sizeof **out);
    FAIL_IF(!*out, ERR_NOMEM, "out of memory creating a safetensors writer");
    return ERR_OK;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    arena_free(&w->ar);
    free(w->t);
    free(w->meta);
    free(w);
}

/* Setting a key again replaces its value in place, so callers can copy an input's metadata
 * and then override entries. */
err st_writer_meta(st_writer *w, const char *key, const char *value) {
    FAIL_IF(!utf8_valid(key) || !utf8_valid(value), ERR_ARG,
            "metadata \"" NM "\": key and value must be UTF-8", key);
    char *v = arena_strdup(&w->ar, value);
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    for (int i = 0; i < w->meta_count; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            w->meta[i].value = v;
            return ERR_OK;
        }
    }
    meta_kv *m = grow(w->meta, w->meta_count, &w->meta_cap, sizeof *m);
    FAIL_IF(!m, ERR_NOMEM, "out of memory");
    w->meta = m;
    char *k = arena_strdup(&w->ar, key);
    FAIL_IF(!k, ERR_NOMEM, "out of memory");
    w->meta[w->meta_count++] = (meta_kv){k, v};
    return ERR_OK;
}

static err check_add(const char *name, dtype t, int ndim, const int64_t *shape, const void *data,
                     uint64_t nbytes, uint64_t *numel) {
    FAIL_IF(!utf8_valid(name), ERR_ARG, "tensor \"" NM "\": name must be UTF-8", name);
    FAIL_IF(strcmp(name, "__metadata__") == 0, ERR_ARG, "a tensor cannot be named __metadata__");
    FAIL_IF(dtype_bits(t) == 0, ERR_ARG, "tensor \"" NM "\": invalid dtype %d", name, (int)t);
    FAIL_IF(ndim < 0 || ndim > ST_MAX_DIMS, ERR_ARG, "tensor \"" NM "\": %d dimensions (0 to %d)",
            name, ndim, ST_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        FAIL_IF(shape[i] < 0, ERR_ARG, "tensor \"" NM "\": negative shape[%d] = %lld", name, i,
                (long long)shape[i]);
    char shp[256];
    format_shape(shp, sizeof shp, shape, ndim);
    uint64_t need;
    FAIL_IF(!shape_size(t, ndim, shape, numel, &need), ERR_ARG,
            "tensor \"" NM "\": shape %s of %s overflows or does not fill whole bytes", name, shp,
            dtype_name(t));
    FAIL_IF(nbytes != need, ERR_ARG, "tensor \"" NM "\": %s %s needs %llu bytes, got %llu", name,
            dtype_name(t), shp, (unsigned long long)need, (unsigned long long)nbytes);
    FAIL_IF(nbytes > SIZE_MAX, ERR_ARG, "tensor \"" NM "\": too large for this machine", name);
    FAIL_IF(nbytes && !data, ERR_ARG, "tensor \"" NM "\": no data", name);
    return ERR_OK;
}

err st_writer_add(st_writer *w, const char *name, dtype t, int ndim, const int64_t *shape,
                  const void *data, uint64_t nbytes) {
    uint64_t numel, begin = w->count ? w->t[w->count - 1].end : 0;
    TRY(check_add(name, t, ndim, shape, data, nbytes, &numel));
    FAIL_IF(nbytes > UINT64_MAX - begin, ERR_ARG, "tensor \"" NM "\": data size overflows", name);
    st_tensor *all = grow(w->t, w->count, &w->cap, sizeof *all);
    FAIL_IF(!all, ERR_NOMEM, "out of memory");
    w->t = all;
    st_tensor *x = &w->t[w->count];
    *x = (st_tensor){.name = arena_strdup(&w->ar, name),
                     .dtype = t,
                     .ndim = ndim,
                     .numel = numel,
                     .begin = begin,
                     .end = begin + nbytes,
                     .data = data};
    FAIL_IF(!x->name, ERR_NOMEM, "out of memory");
    if (ndim) memcpy(x->shape, shape, (size_t)ndim * sizeof *shape);
    w->count++;
    return ERR_OK;
}

/* The compact header, keys in the order added, "__metadata__" first like the reference
 * writer, padded with spaces so the data starts at a multiple of align. Numbers go through
 * %llu: exact, where a JSON library's %g would print exponents. */
static err build_header(const st_writer *w, uint64_t align, char **buf, size_t *len) {
    FILE *m = open_memstream(buf, len);
    FAIL_IF(!m, ERR_NOMEM, "out of memory building a safetensors header");
    fputc('{', m);
    if (w->meta_count) fputs("\"__metadata__\":{", m);
    for (int i = 0; i < w->meta_count; i++) {
        if (i) fputc(',', m);
        put_json_str(m, w->meta[i].key);
        fputc(':', m);
        put_json_str(m, w->meta[i].value);
    }
    if (w->meta_count) fputs(w->count ? "}," : "}", m);
    for (int i = 0; i < w->count; i++) {
        const st_tensor *x = &w->t[i];
        if (i) fputc(',', m);
        put_json_str(m, x->name);
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(x->dtype));
        for (int d = 0; d < x->ndim; d++)
            fprintf(m, "%s%llu", d ? "," : "", (unsigned long long)x->shape[d]);
        fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)x->begin,
                (unsigned long long)x->end);
    }
    fputc('}', m);
    long n = ftell(m);
    for (uint64_t pad = n < 0 ? 0 : (align - (8 + (uint64_t)n) % align) % align; pad; pad--)
        fputc(' ', m);
    int bad = ferror(m);
    if (fclose(m) != 0 || bad || n < 0) {
        free(*buf);
        *buf = NULL;
        FAIL(ERR_NOMEM, "out of memory building a safetensors header");
    }
    return ERR_OK;
}

static err check_names(const st_writer *w, const char *path) {
    name_ix *v = malloc((size_t)w->count * sizeof *v + 1);
    FAIL_IF(!v, ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < w->count; i++)
        v[i] = (name_ix){w->t[i].name, i};
    int d = st_sort_find_dup(v, w->count);
    err e = ERR_OK;
    if (d >= 0) e = err_set(ERR_ARG, "%s: tensor \"" NM "\" added twice", path, v[d].name);
    free(v);
    return e;
}

static err write_all(const st_writer *w, const char *path, const char *h, size_t hlen) {
    fio_out *o;
    TRY(fio_out_open(path, &o));
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    err e = fio_out_write(o, len, 8);
    if (e == ERR_OK) e = fio_out_write(o, h, hlen);
    for (int i = 0; i < w->count && e == ERR_OK; i++)
        e = fio_out_write(o, w->t[i].data, (size_t)(w->t[i].end - w->t[i].begin));
    if (e != ERR_OK) {
        fio_out_abort(o);
        return e;
    }
    return fio_out_commit(o);
}

err st_writer_finish(st_writer *w, const char *path, uint64_t header_align) {
    FAIL_IF(header_align < 8 || (header_align & (header_align - 1)), ERR_ARG,
            "%s: header alignment %llu must be a power of two, at least 8", path,
            (unsigned long long)header_align);
    TRY(check_names(w, path));
    char *h;
    size_t hlen;
    TRY(build_header(w, header_align, &h, &hlen));
    err e = ERR_OK;
    if (hlen > ST_MAX_HEADER)
        e = err_set(ERR_ARG, "%s: header would be %zu bytes, over the %llu that readers accept",
                    path, hlen, ST_MAX_HEADER);
    else
        e = write_all(w, path, h, hlen);
    free(h);
    return e;
}
