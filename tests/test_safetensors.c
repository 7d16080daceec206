/* test_safetensors: the safetensors reader/writer/index and the fileio helpers, on files in a
 * fresh folder under /tmp. Exits non-zero if any expectation fails. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/err.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "tests/testutil.h"

static char tmp[256];

/* An error with the expected code whose message names `name`. */
#define EXPECT_ERR(call, code, name)                                                               \
    do {                                                                                           \
        err e_ = (call);                                                                           \
        EXPECT(e_ == (code) && strstr(err_msg(), (name)) != NULL,                                  \
               "got %s (%s), wanted %s naming %s", err_name(e_), err_msg(), err_name(code),        \
               (name));                                                                            \
    } while (0)

static const char *tpath(const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", tmp, name);
    return p;
}

static uint8_t *read_all(const char *path, size_t *len) {
    fio_map m;
    if (fio_map_open(path, &m) != ERR_OK) return NULL;
    uint8_t *p = malloc(m.size + 1);
    if (m.size) memcpy(p, m.data, m.size);
    *len = m.size;
    fio_map_close(&m);
    return p;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* header_len = (size_t)-1 means "use strlen(header)". */
static uint8_t *make_bytes(const char *header, size_t header_len, size_t data_len, size_t *len) {
    size_t n = header_len == (size_t)-1 ? strlen(header) : header_len;
    *len = 8 + n + data_len;
    uint8_t *p = calloc(1, *len);
    put_le64(p, n);
    memcpy(p + 8, header, n);
    for (size_t i = 0; i < data_len; i++)
        p[8 + n + i] = (uint8_t)i;
    return p;
}

/* Writes a raw file with the given header and data length and opens it. */
static err open_raw(const char *name, const char *header, size_t data_len) {
    size_t len;
    uint8_t *p = make_bytes(header, (size_t)-1, data_len, &len);
    err e = fio_write_file(tpath(name), p, len);
    free(p);
    if (e != ERR_OK) return e;
    st_file *f = NULL;
    e = st_open(tpath(name), &f);
    EXPECT((e == ERR_OK) == (f != NULL), "out pointer and result disagree");
    st_close(f);
    return e;
}

/* ---- writer and reader round trip ---- */

typedef struct spec {
    const char *name;
    dtype t;
    int ndim;
    int64_t shape[3];
} spec;

static int nspecs;
static spec specs[DTYPE_COUNT + 4];
static uint8_t *spec_data[DTYPE_COUNT + 4];
static uint64_t spec_bytes[DTYPE_COUNT + 4];

static void build_specs(void) {
    static char names[DTYPE_COUNT][32];
    for (int t = DTYPE_INVALID + 1; t < DTYPE_COUNT; t++) {
        snprintf(names[t], sizeof names[t], "layer.%d.%s", t, dtype_name((dtype)t));
        /* 2*4 elements: whole bytes for F4 (4 bytes) and F6 (6 bytes) as well */
        specs[nspecs++] = (spec){names[t], (dtype)t, 2, {2, 4}};
    }
    specs[nspecs++] = (spec){"scalar", DTYPE_F32, 0, {0}};
    specs[nspecs++] = (spec){"empty", DTYPE_BF16, 2, {3, 0}};
    specs[nspecs++] = (spec){"odd \"name\"\\\n\x01 é", DTYPE_U8, 3, {1, 2, 3}};
    for (int i = 0; i < nspecs; i++) {
        uint64_t n = 1;
        for (int d = 0; d < specs[i].ndim; d++)
            n *= (uint64_t)specs[i].shape[d];
        spec_bytes[i] = dtype_nbytes(specs[i].t, n);
        spec_data[i] = malloc(spec_bytes[i] + 1);
        for (uint64_t k = 0; k < spec_bytes[i]; k++)
            spec_data[i][k] = (uint8_t)(i * 31 + k * 7);
    }
}

static err write_specs(const char *path, uint64_t align) {
    st_writer *w;
    TRY(st_writer_create(&w));
    err e = st_writer_meta(w, "format", "pt");
    if (!e) e = st_writer_meta(w, "quote\"key", "va\\lue\nline2");
    if (!e) e = st_writer_meta(w, "utf8", "h\xc3\xa9llo");
    if (!e) e = st_writer_meta(w, "format", "df11"); /* replaces, keeps its place */
    for (int i = 0; i < nspecs && !e; i++)
        e = st_writer_add(w, specs[i].name, specs[i].t, specs[i].ndim, specs[i].shape, spec_data[i],
                          spec_bytes[i]);
    if (!e) e = st_writer_finish(w, path, align);
    st_writer_free(w);
    return e;
}

static void check_specs(const st_file *f) {
    EXPECT(st_count(f) == nspecs, "count %d, wanted %d", st_count(f), nspecs);
    uint64_t off = 0;
    for (int i = 0; i < nspecs && i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const spec *s = &specs[i];
        EXPECT(strcmp(t->name, s->name) == 0, "tensor %d is %s, wanted %s", i, t->name, s->name);
        EXPECT(t->dtype == s->t, "%s: dtype %s", s->name, dtype_name(t->dtype));
        EXPECT(t->ndim == s->ndim, "%s: ndim %d", s->name, t->ndim);
        uint64_t numel = 1;
        for (int d = 0; d < s->ndim; d++) {
            EXPECT(t->shape[d] == s->shape[d], "%s: shape[%d]", s->name, d);
            numel *= (uint64_t)s->shape[d];
        }
        EXPECT(t->numel == numel, "%s: numel %llu", s->name, (unsigned long long)t->numel);
        EXPECT(t->begin == off && t->end == off + spec_bytes[i], "%s: offsets", s->name);
        EXPECT(spec_bytes[i] == 0 || memcmp(t->data, spec_data[i], spec_bytes[i]) == 0,
               "%s: bytes differ", s->name);
        EXPECT(st_find(f, s->name) == t, "%s: st_find", s->name);
        off = t->end;
    }
    EXPECT(st_find(f, "missing") == NULL, "found a missing tensor");
    const st_tensor *sc = st_find(f, "scalar"), *em = st_find(f, "empty");
    EXPECT(sc && sc->numel == 1 && sc->end - sc->begin == 4, "0-dim tensor");
    EXPECT(em && em->numel == 0 && em->end == em->begin, "empty tensor");
    EXPECT(st_meta_count(f) == 3, "meta count %d", st_meta_count(f));
    const char *k, *v;
    if (st_meta_count(f) == 3) {
        st_meta_at(f, 0, &k, &v);
        EXPECT(strcmp(k, "format") == 0 && strcmp(v, "df11") == 0, "meta 0: %s=%s", k, v);
        st_meta_at(f, 1, &k, &v);
        EXPECT(strcmp(k, "quote\"key") == 0 && strcmp(v, "va\\lue\nline2") == 0, "meta 1");
    }
    EXPECT(st_meta(f, "utf8") && strcmp(st_meta(f, "utf8"), "h\xc3\xa9llo") == 0, "utf8 meta");
    EXPECT(st_meta(f, "nope") == NULL, "missing meta");
}

static void test_round_trip(void) {
    const uint64_t aligns[] = {8, 64, 4096};
    for (int a = 0; a < 3; a++) {
        const char *path = tpath("all.safetensors");
        err e = write_specs(path, aligns[a]);
        EXPECT(e == ERR_OK, "write: %s", err_msg());
        st_file *f = NULL;
        e = st_open(path, &f);
        EXPECT(e == ERR_OK, "open: %s", err_msg());
        if (!f) continue;
        check_specs(f);
        EXPECT(strcmp(st_path(f), path) == 0, "st_path");
        size_t hlen, flen, dlen;
        const char *h = st_header(f, &hlen);
        const uint8_t *b = st_bytes(f, &flen);
        uint8_t *disk = read_all(path, &dlen);
        EXPECT((8 + hlen) % aligns[a] == 0, "header %zu not aligned to %llu", hlen,
               (unsigned long long)aligns[a]);
        EXPECT(h[0] == '{' && (h[hlen - 1] == '}' || h[hlen - 1] == ' '), "header ends");
        EXPECT(disk && dlen == flen && memcmp(disk, b, flen) == 0, "st_bytes differ from file");
        EXPECT((const uint8_t *)h == b + 8, "header points into the file");
        /* rebuild from header + data and read it again from memory */
        uint8_t *copy = malloc(flen);
        put_le64(copy, hlen);
        memcpy(copy + 8, h, hlen);
        memcpy(copy + 8 + hlen, b + 8 + hlen, flen - 8 - hlen);
        EXPECT(memcmp(copy, disk, flen) == 0, "rebuilt file differs");
        st_file *g = NULL;
        e = st_open_memory(copy, flen, "copy", &g);
        EXPECT(e == ERR_OK, "open memory: %s", err_msg());
        if (g) check_specs(g);
        st_close(g);
        free(copy);
        free(disk);
        st_close(f);
    }
    EXPECT(!fio_exists(tpath("all.safetensors.tmp.0")), "no temporary left");
}

static void test_writer_errors(void) {
    st_writer *w;
    EXPECT(st_writer_create(&w) == ERR_OK, "create");
    int64_t shape[2] = {2, 3};
    uint8_t data[12] = {0};
    EXPECT(st_writer_add(w, "a", DTYPE_BF16, 2, shape, data, 12) == ERR_OK, "add");
    EXPECT_ERR(st_writer_add(w, "b", DTYPE_BF16, 2, shape, data, 11), ERR_ARG, "b");
    int64_t odd[1] = {3};
    EXPECT_ERR(st_writer_add(w, "f4", DTYPE_F4, 1, odd, data, 2), ERR_ARG, "f4");
    int64_t neg[1] = {-1};
    EXPECT_ERR(st_writer_add(w, "neg", DTYPE_U8, 1, neg, data, 0), ERR_ARG, "neg");
    EXPECT_ERR(st_writer_add(w, "__metadata__", DTYPE_U8, 0, shape, data, 1), ERR_ARG,
               "__metadata__");
    EXPECT_ERR(st_writer_add(w, "bad\xff", DTYPE_U8, 0, shape, data, 1), ERR_ARG, "UTF-8");
    EXPECT(st_writer_add(w, "a", DTYPE_BF16, 2, shape, data, 12) == ERR_OK, "add dup");
    const char *path = tpath("dup.safetensors");
    EXPECT_ERR(st_writer_finish(w, path, 8), ERR_ARG, "\"a\"");
    EXPECT(!fio_exists(path), "failed finish left a file");
    st_writer_free(w);
    EXPECT(st_writer_create(&w) == ERR_OK, "create");
    EXPECT_ERR(st_writer_finish(w, path, 12), ERR_ARG, path);
    EXPECT(st_writer_finish(w, path, 16) == ERR_OK, "empty file: %s", err_msg());
    st_writer_free(w);
    st_file *f = NULL;
    EXPECT(st_open(path, &f) == ERR_OK && st_count(f) == 0 && st_meta_count(f) == 0,
           "empty file reads back: %s", err_msg());
    size_t n;
    if (f) EXPECT(st_bytes(f, &n) && n == 16, "empty file is %zu bytes", n);
    st_close(f);
}

/* ---- malformed inputs ---- */

static void test_truncation_and_flips(void) {
    const char *path = tpath("all.safetensors");
    EXPECT(write_specs(path, 8) == ERR_OK, "write: %s", err_msg());
    size_t len;
    uint8_t *p = read_all(path, &len);
    if (!p) return;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *q = malloc(cut + 1); /* exact size, so ASan sees any over-read */
        memcpy(q, p, cut);
        st_file *f = NULL;
        err e = st_open_memory(q, cut, "cut.safetensors", &f);
        EXPECT(e == ERR_FORMAT && strstr(err_msg(), "cut.safetensors"), "cut at %zu: %s (%s)", cut,
               err_name(e), err_msg());
        st_close(f);
        free(q);
    }
    const size_t cuts[] = {0, 5, 8, 20, len / 2, len - 1};
    for (int i = 0; i < 6; i++) {
        char name[64];
        snprintf(name, sizeof name, "cut%zu.safetensors", cuts[i]);
        fio_write_file(tpath(name), p, cuts[i]);
        st_file *f = NULL;
        EXPECT_ERR(st_open(tpath(name), &f), ERR_FORMAT, name);
    }
    /* every single-bit flip: any answer is fine, a crash or sanitizer report is not */
    uint8_t *q = malloc(len);
    int ok = 0;
    for (size_t i = 0; i < len * 8; i++) {
        memcpy(q, p, len);
        q[i / 8] ^= (uint8_t)(1u << (i % 8));
        st_file *f = NULL;
        err e = st_open_memory(q, len, "flip", &f);
        if (e == ERR_OK) {
            ok++;
            for (int k = 0; k < st_count(f); k++) {
                const st_tensor *t = st_at(f, k);
                EXPECT(t->data + (t->end - t->begin) <= q + len, "tensor past the end");
            }
        } else {
            EXPECT(strstr(err_msg(), "flip") != NULL, "message without label: %s", err_msg());
        }
        st_close(f);
    }
    EXPECT(ok > 0, "no flip in the data section was accepted");
    free(q);
    free(p);
}

static void test_header_length(void) {
    size_t len;
    uint8_t *p = make_bytes("{}", (size_t)-1, 0, &len);
    st_file *f = NULL;
    EXPECT(st_open_memory(p, len, "ok", &f) == ERR_OK, "{}: %s", err_msg());
    st_close(f);
    put_le64(p, 3);
    EXPECT_ERR(st_open_memory(p, len, "long.st", &f), ERR_FORMAT, "long.st");
    put_le64(p, UINT64_MAX);
    EXPECT_ERR(st_open_memory(p, len, "huge.st", &f), ERR_FORMAT, "huge.st");
    put_le64(p, 200000000);
    EXPECT_ERR(st_open_memory(p, len, "limit.st", &f), ERR_FORMAT, "limit");
    put_le64(p, 0);
    EXPECT_ERR(st_open_memory(p, len, "zero.st", &f), ERR_FORMAT, "zero.st");
    free(p);
    EXPECT_ERR(st_open_memory(NULL, 0, "null.st", &f), ERR_FORMAT, "null.st");
    EXPECT_ERR(st_open(tpath("does-not-exist.safetensors"), &f), ERR_IO, "does-not-exist");
    EXPECT_ERR(st_open(tmp, &f), ERR_IO, tmp); /* a folder */
}

typedef struct bad_case {
    const char *file, *header;
    size_t data;
    err code;
    const char *also; /* a second word the message must contain */
} bad_case;

#define T(name, dt, shp, b, e)                                                                     \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shp ",\"data_offsets\":[" #b "," #e "]}"

static const bad_case bad_cases[] = {
    {"badjson", "{\"a\":", 0, ERR_FORMAT, "JSON"},
    {"notobj", "[1,2]", 0, ERR_FORMAT, "{"},
    {"trailing", "{} x", 0, ERR_FORMAT, "after"},
    {"twojson", "{}{}", 0, ERR_FORMAT, "after"},
    {"dtype", "{" T("w", "Q7", "[1]", 0, 1) "}", 1, ERR_UNSUPPORTED, "Q7"},
    {"dtypenum", "{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,1]}}", 1, ERR_FORMAT, "w"},
    {"size", "{" T("w", "BF16", "[2]", 0, 3) "}", 3, ERR_FORMAT, "needs 4 bytes"},
    {"overlap", "{" T("a", "F16", "[2]", 0, 4) "," T("b", "F16", "[2]", 2, 6) "}", 6, ERR_FORMAT,
     "overlap"},
    {"hole", "{" T("a", "F16", "[2]", 0, 4) "," T("b", "F16", "[2]", 6, 10) "}", 10, ERR_FORMAT,
     "hole"},
    {"start", "{" T("a", "F16", "[2]", 2, 6) "}", 6, ERR_FORMAT, "begin at 0"},
    {"tail", "{" T("a", "F16", "[2]", 0, 4) "}", 6, ERR_FORMAT, "6 bytes"},
    {"past", "{" T("a", "F16", "[2]", 0, 4) "}", 2, ERR_FORMAT, "past"},
    {"dupname", "{" T("a", "U8", "[2]", 0, 2) "," T("a", "U8", "[2]", 2, 4) "}", 4, ERR_FORMAT,
     "twice"},
    {"metanum", "{\"__metadata__\":{\"k\":1}}", 0, ERR_FORMAT, "\"k\""},
    {"metaobj", "{\"__metadata__\":[]}", 0, ERR_FORMAT, "__metadata__"},
    {"metadup", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, ERR_FORMAT, "twice"},
    {"meta2", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, ERR_FORMAT, "twice"},
    {"nodtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, ERR_FORMAT, "dtype"},
    {"twodtype", "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
     1, ERR_FORMAT, "twice"},
    {"entry", "{\"w\":7}", 0, ERR_FORMAT, "object"},
    {"shapeneg", "{" T("w", "U8", "[-1]", 0, 0) "}", 0, ERR_FORMAT, "shape[0]"},
    {"shapefrac", "{" T("w", "U8", "[1.5]", 0, 0) "}", 0, ERR_FORMAT, "shape[0]"},
    {"shapestr", "{" T("w", "U8", "\"2\"", 0, 2) "}", 2, ERR_FORMAT, "array"},
    {"shapedims", "{" T("w", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1, ERR_UNSUPPORTED, "9"},
    {"shapebig", "{" T("w", "U8", "[1e300]", 0, 1) "}", 1, ERR_FORMAT, "shape[0]"},
    {"overflow", "{" T("w", "U8", "[4294967296,4294967296,4294967296]", 0, 1) "}", 1, ERR_FORMAT,
     "overflow"},
    {"f4odd", "{" T("w", "F4", "[3]", 0, 2) "}", 2, ERR_FORMAT, "whole bytes"},
    {"offs3", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 1, ERR_FORMAT,
     "two"},
    {"offsrev", "{" T("w", "U8", "[0]", 2, 1) "}", 2, ERR_FORMAT, "end before"},
    {"ctrl", "{\"w\x01\":1}", 0, ERR_FORMAT, "control"},
    {"utf8", "{\"w\xc0\xaf\":1}", 0, ERR_FORMAT, "UTF-8"},
    {"nul", "{\"w\\u0000x\":1}", 0, ERR_FORMAT, "NUL"},
};

static void test_bad_headers(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        char name[64];
        snprintf(name, sizeof name, "%s.safetensors", c->file);
        err e = open_raw(name, c->header, c->data);
        EXPECT(e == c->code && strstr(err_msg(), name) && strstr(err_msg(), c->also),
               "%s: got %s (%s), wanted %s mentioning %s", c->file, err_name(e), err_msg(),
               err_name(c->code), c->also);
    }
    /* nesting far past cJSON's limit must fail cleanly, not overflow the stack */
    size_t depth = 100000;
    char *deep = malloc(depth + 8);
    memcpy(deep, "{\"w\":", 5);
    memset(deep + 5, '[', depth);
    deep[5 + depth] = 0;
    EXPECT_ERR(open_raw("deep.safetensors", deep, 0), ERR_FORMAT, "deep.safetensors");
    free(deep);
    /* valid oddities: padding, unknown fields, empty tensors sharing an offset */
    EXPECT(open_raw("pad.safetensors", "{}      ", 0) == ERR_OK, "padding: %s", err_msg());
    EXPECT(open_raw("extra.safetensors",
                    "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[]}}",
                    1) == ERR_OK,
           "unknown field: %s", err_msg());
    EXPECT(open_raw("empties.safetensors",
                    "{" T("b", "U8", "[0]", 0, 0) "," T("a", "U8", "[0]", 0,
                                                        0) "," T("c", "U8", "[2]", 0, 2) "}",
                    2) == ERR_OK,
           "empty tensors: %s", err_msg());
    EXPECT(open_raw("esc.safetensors",
                    "{\"\\u00e9\\n\":{\"dtype\":\"U8\",\"shape\":[],"
                    "\"data_offsets\":[0,1]}}",
                    1) == ERR_OK,
           "escaped name: %s", err_msg());
}

/* ---- sharded checkpoints ---- */

static void write_shard(const char *path, const char *const *names, int n) {
    st_writer *w;
    st_writer_create(&w);
    static const uint8_t data[4] = {1, 2, 3, 4};
    int64_t shape[1] = {2};
    for (int i = 0; i < n; i++)
        st_writer_add(w, names[i], DTYPE_BF16, 1, shape, data, 4);
    EXPECT(st_writer_finish(w, path, 8) == ERR_OK, "shard: %s", err_msg());
    st_writer_free(w);
}

static void write_text(const char *path, const char *text) {
    EXPECT(fio_write_file(path, text, strlen(text)) == ERR_OK, "%s", err_msg());
}

static void test_index(void) {
    EXPECT(fio_mkdirs(tpath("ckpt/sub")) == ERR_OK, "mkdirs: %s", err_msg());
    const char *s1[] = {"a", "b"}, *s2[] = {"c"};
    write_shard(tpath("ckpt/m-1.safetensors"), s1, 2);
    write_shard(tpath("ckpt/sub/m-2.safetensors"), s2, 1);
    write_text(tpath("ckpt/m.safetensors.index.json"),
               "{\"metadata\": {\"total_size\": 12},\n \"weight_map\": {\"c\": "
               "\"sub/m-2.safetensors\", \"a\": \"m-1.safetensors\", \"b\": \"m-1.safetensors\", "
               "\"d\": \"sub/m-2.safetensors\"}}\n");
    st_index *x = NULL;
    err e = st_index_open(tpath("ckpt/m.safetensors.index.json"), &x);
    EXPECT(e == ERR_OK, "index: %s", err_msg());
    if (!x) return;
    EXPECT(st_index_shard_count(x) == 2, "shards %d", st_index_shard_count(x));
    EXPECT(strcmp(st_index_shard_path(x, 0), tpath("ckpt/sub/m-2.safetensors")) == 0, "shard 0 %s",
           st_index_shard_path(x, 0));
    EXPECT(strcmp(st_index_shard_path(x, 1), tpath("ckpt/m-1.safetensors")) == 0, "shard 1");
    const char *names[] = {"a", "b", "c", "a"};
    for (int i = 0; i < 4; i++) {
        const st_file *f = NULL;
        const st_tensor *t = NULL;
        e = st_index_find(x, names[i], &f, &t);
        EXPECT(e == ERR_OK && t && strcmp(t->name, names[i]) == 0 && t->data[0] == 1, "find %s: %s",
               names[i], err_msg());
        EXPECT(f && st_find(f, names[i]) == t, "file for %s", names[i]);
    }
    EXPECT_ERR(st_index_find(x, "d", NULL, NULL), ERR_FORMAT, "m-2.safetensors");
    EXPECT(strstr(err_msg(), "\"d\"") != NULL, "names the tensor: %s", err_msg());
    EXPECT_ERR(st_index_find(x, "zz", NULL, NULL), ERR_FORMAT, "zz");
    st_index_close(x);

    static const char *bad[][2] = {
        {"up.index.json", "{\"weight_map\": {\"a\": \"../m-1.safetensors\"}}"},
        {"abs.index.json", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}"},
        {"mid.index.json", "{\"weight_map\": {\"a\": \"sub/../../x.safetensors\"}}"},
        {"num.index.json", "{\"weight_map\": {\"a\": 3}}"},
        {"nomap.index.json", "{\"metadata\": {}}"},
        {"dup.index.json", "{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}"},
        {"json.index.json", "{\"weight_map\": {"},
    };
    for (int i = 0; i < 7; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "ckpt/%s", bad[i][0]);
        write_text(tpath(rel), bad[i][1]);
        x = NULL;
        EXPECT_ERR(st_index_open(tpath(rel), &x), ERR_FORMAT, bad[i][0]);
        EXPECT(x == NULL, "index returned on failure");
    }
    write_text(tpath("ckpt/missing.index.json"), "{\"weight_map\": {\"a\": \"gone.safetensors\"}}");
    EXPECT(st_index_open(tpath("ckpt/missing.index.json"), &x) == ERR_OK, "%s", err_msg());
    EXPECT_ERR(st_index_find(x, "a", NULL, NULL), ERR_IO, "gone.safetensors");
    st_index_close(x);
}

/* ---- fileio ---- */

static int file_is(const char *path, const char *text) {
    size_t n;
    uint8_t *p = read_all(path, &n);
    int ok = p && n == strlen(text) && memcmp(p, text, n) == 0;
    free(p);
    return ok;
}

static void test_fio_out(void) {
    const char *path = tpath("out.bin");
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    fio_out *o;
    EXPECT(fio_out_open(path, &o) == ERR_OK, "open: %s", err_msg());
    EXPECT(fio_exists(tmpname) && !fio_exists(path), "temporary name in use");
    fio_out_write(o, "abc", 3);
    fio_out_abort(o);
    EXPECT(!fio_exists(tmpname) && !fio_exists(path), "abort left a file");
    fio_out_abort(NULL);

    write_text(path, "old");
    EXPECT(fio_out_open(path, &o) == ERR_OK, "open: %s", err_msg());
    EXPECT(fio_out_write(o, "new!xyz", 7) == ERR_OK, "write");
    EXPECT(fio_out_pwrite(o, "N", 1, 0) == ERR_OK, "pwrite");
    EXPECT(fio_out_write(o, "+", 1) == ERR_OK, "append after pwrite");
    EXPECT(file_is(path, "old"), "replaced before commit");
    EXPECT(fio_out_commit(o) == ERR_OK, "commit: %s", err_msg());
    EXPECT(file_is(path, "New!xyz+"), "content after commit");
    EXPECT(!fio_exists(tmpname), "temporary left after commit");

    /* a second writer while one is open collides on the temporary name */
    EXPECT(fio_out_open(path, &o) == ERR_OK, "open");
    fio_out *o2 = NULL;
    EXPECT_ERR(fio_out_open(path, &o2), ERR_IO, "out.bin");
    fio_out_abort(o);
    EXPECT_ERR(fio_write_file(tpath("nodir/x"), "x", 1), ERR_IO, "nodir");

    fio_map m;
    write_text(tpath("empty"), "");
    EXPECT(fio_map_open(tpath("empty"), &m) == ERR_OK && m.size == 0 && m.data == NULL, "empty");
    fio_map_close(&m);
    EXPECT_ERR(fio_map_open(tpath("none"), &m), ERR_IO, "none");
    fio_map_close(&m);

    size_t big = 3u << 20;
    uint8_t *p = malloc(big);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 13);
    EXPECT(fio_write_file(tpath("big"), p, big) == ERR_OK, "big");
    chmod(tpath("big"), 0640);
    EXPECT(fio_copy_file(tpath("big"), tpath("big.copy")) == ERR_OK, "copy: %s", err_msg());
    size_t n;
    uint8_t *q = read_all(tpath("big.copy"), &n);
    EXPECT(q && n == big && memcmp(p, q, big) == 0, "copy differs");
    struct stat st;
    EXPECT(stat(tpath("big.copy"), &st) == 0 && (st.st_mode & 07777) == 0640, "mode %o",
           (unsigned)st.st_mode);
    EXPECT_ERR(fio_copy_file(tpath("none"), tpath("none.copy")), ERR_IO, "none");
    EXPECT(!fio_exists(tpath("none.copy")), "failed copy left a file");
    free(p);
    free(q);
}

static void test_fio_paths(void) {
    const char *files[] = {"t/b", "t/a/z", "t/a/b", "t/a.txt", "t/.hidden", "t/c/d/e"};
    EXPECT(fio_mkdirs(tpath("t/c/d")) == ERR_OK && fio_mkdirs(tpath("t/a/")) == ERR_OK, "mkdirs");
    EXPECT(fio_mkdirs(tpath("t/empty")) == ERR_OK && fio_mkdirs(tpath("t/empty")) == ERR_OK,
           "mkdirs twice");
    for (int i = 0; i < 6; i++)
        write_text(tpath(files[i]), files[i]);
    EXPECT(symlink("b", tpath("t/l")) == 0, "symlink");
    EXPECT(symlink("a", tpath("t/ld")) == 0, "symlink");
    EXPECT(symlink("nowhere", tpath("t/dangling")) == 0, "symlink");
    EXPECT(symlink("..", tpath("t/c/up")) == 0 && symlink(".", tpath("t/c/d/self")) == 0,
           "symlink"); /* cycles: not followed */
    EXPECT(fio_mkdirs(tpath("t/b/x")) != ERR_OK, "mkdirs through a file");
    char **list;
    int n;
    EXPECT(fio_list_files(tpath("t"), &list, &n) == ERR_OK, "list: %s", err_msg());
    /* links are followed, to files and to folders (a pipeline folder links shared parts) */
    const char *want[] = {".hidden", "a.txt", "a/b", "a/z", "b", "c/d/e", "l", "ld/b", "ld/z"};
    EXPECT(n == 9, "listed %d files", n);
    for (int i = 0; i < n && i < 9; i++)
        EXPECT(strcmp(list[i], want[i]) == 0, "file %d is %s, wanted %s", i, list[i], want[i]);
    fio_list_free(list, n);
    EXPECT_ERR(fio_list_files(tpath("nope"), &list, &n), ERR_IO, "nope");

    EXPECT(fio_is_dir(tpath("t/a")) && !fio_is_dir(tpath("t/b")) && fio_is_dir(tpath("t/ld")),
           "is_dir");
    EXPECT(fio_exists(tpath("t/dangling")) && !fio_exists(tpath("t/nope")), "exists");
    EXPECT(fio_same_file(tpath("t/l"), tpath("t/b")) &&
               !fio_same_file(tpath("t/a/b"), tpath("t/b")),
           "same_file");
    EXPECT(fio_same_file(tpath("t/a/../c"), tpath("t/c")) && !fio_same_file(tpath("x"), tpath("x")),
           "same_file folders");

    EXPECT(symlink("/usr", tpath("t/out")) == 0, "symlink");
    char d[512]; /* tpath's buffers rotate */
    snprintf(d, sizeof d, "%s", tpath("t"));
    EXPECT(fio_path_inside(tpath("t/a/b"), d), "file inside");
    EXPECT(fio_path_inside(tpath("t/new/deeper/x"), d), "new path inside");
    EXPECT(fio_path_inside(tpath("t/new/../a"), d), "new/.. inside");
    EXPECT(fio_path_inside(d, d), "folder inside itself");
    EXPECT(fio_path_inside(tpath("t/ld/z"), d), "link to inside");
    EXPECT(!fio_path_inside(tpath("t/new/../../x"), d), "escapes through new/..");
    EXPECT(!fio_path_inside(tpath("t/out/lib"), d), "symlink leading out");
    EXPECT(!fio_path_inside(tpath("t/out/new"), d), "new under a link leading out");
    EXPECT(!fio_path_inside(tpath("tt"), d), "sibling with the same prefix");
    EXPECT(!fio_path_inside("/", d) && fio_path_inside(d, "/"), "root");
    EXPECT(fio_path_inside(tpath("t/a"), tpath("t/ld")), "through a folder link");

    char buf[16];
    EXPECT(fio_join(buf, sizeof buf, "a", "b") == ERR_OK && strcmp(buf, "a/b") == 0, "join");
    EXPECT(fio_join(buf, sizeof buf, "a/", "b") == ERR_OK && strcmp(buf, "a/b") == 0, "join /");
    EXPECT(fio_join(buf, sizeof buf, "", "b") == ERR_OK && strcmp(buf, "b") == 0, "join empty");
    EXPECT(fio_join(buf, 4, "ab", "c") == ERR_ARG, "join too long");
    EXPECT(fio_has_suffix("x.safetensors", ".safetensors") && !fio_has_suffix("s", ".s2"),
           "suffix");

    EXPECT(fio_remove_tree(tpath("t")) == ERR_OK && !fio_exists(tpath("t")), "remove_tree");
    EXPECT(fio_exists("/usr"), "remove_tree followed a symlink");
    EXPECT(fio_remove_tree(tpath("t")) == ERR_OK, "remove missing");
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/test_safetensors.XXXXXX");
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 2;
    }
    build_specs();
    test_round_trip();
    test_writer_errors();
    test_truncation_and_flips();
    test_header_length();
    test_bad_headers();
    test_index();
    test_fio_out();
    test_fio_paths();
    for (int i = 0; i < nspecs; i++)
        free(spec_data[i]);
    if (fio_remove_tree(tmp) != ERR_OK) fprintf(stderr, "cleanup: %s\n", err_msg());
    if (tu_failures) {
        fprintf(stderr, "test_safetensors: %d failure(s)\n", tu_failures);
        return 1;
    }
    printf("test_safetensors: ok\n");
    return 0;
}
