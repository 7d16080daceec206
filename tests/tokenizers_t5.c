/* tokenizers_t5: the T5 unigram tokenizer's checks, run by test_tokenizers. Ids against
 * tests/fixtures/tokenizers/t5_ids.json (transformers' T5TokenizerFast, the tokenizers library
 * on older tokenizer.json forms, sentencepiece; made by tests/fixtures/make_t5_tokenizer.py)
 * for every file and mode; truncated and corrupted files; bad arguments; speed. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/fileio.h"
#include "text_encoder/t5_tokenizer.h"

int t5_tokenizer_tests(const char *fixtures_dir);

typedef struct t5_case {
    const char *name;
    char *text;
    size_t len;
    const cJSON *rec;
} t5_case;

typedef struct t5_ctx {
    t5_case *cases;
    int n;
    char dir[4096], json[4200], spiece[4200], tmp[64];
    int failures;
} t5_ctx;

static double t5_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* One line per check; returns ok. */
static int t5_check(t5_ctx *c, int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("t5 tokenizer: ");
    vprintf(fmt, ap);
    printf(": %s\n", ok ? "ok" : "FAILED");
    va_end(ap);
    if (!ok) c->failures++;
    return ok;
}

static int t5_ids_of(const cJSON *a, int32_t *out, int cap) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) if (n < cap) out[n++] = (int32_t)v->valuedouble;
    return n;
}

/* The ids a case should get for field: "hf"; "spm" (sentencepiece's ids then </s>, or hf's
 * where the two agree); a variant's name (its ids, or hf's where they agree). */
static int t5_expected(const t5_case *k, const char *field, int32_t *out, int cap) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(k->rec, field);
    if (!f) return t5_ids_of(cJSON_GetObjectItemCaseSensitive(k->rec, "hf"), out, cap);
    int n = t5_ids_of(f, out, cap - 1);
    if (!strcmp(field, "spm")) out[n++] = 1;
    return n;
}

static void t5_print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "    %s (%d):", what, n);
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Encodes every case and compares with its expected ids (max_len = their count: no padding). */
static void t5_run_cases(t5_ctx *c, const t5_tok *t, const char *field, const char *what) {
    int32_t want[2048], got[2048];
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        int n = t5_expected(&c->cases[i], field, want, 2048), nc = -1;
        err e = t5_tok_encode_bytes(t, c->cases[i].text, c->cases[i].len, n, got, &nc);
        if (!e && nc == n - 1 && !memcmp(want, got, (size_t)n * sizeof *got)) continue;
        if (bad++ < 5) {
            fprintf(stderr, "  %s: case %s: %s\n", what, c->cases[i].name,
                    e ? err_msg() : "ids differ");
            t5_print_ids("want", want, n);
            t5_print_ids("got ", got, e ? 0 : n);
        }
    }
    t5_check(c, bad == 0, "%s: %d of %d cases match", what, c->n - bad, c->n);
}

/* The pipelines' call: content cut to max_len-1, </s>, <pad>s; *n_content untruncated. */
static void t5_run_pipeline(t5_ctx *c, const t5_tok *t, int max_len) {
    int32_t hf[2048], got[600], want[600];
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        int n = t5_expected(&c->cases[i], "hf", hf, 2048), nc = -1, k = 0;
        for (; k < n - 1 && k < max_len - 1; k++)
            want[k] = hf[k];
        for (want[k++] = 1; k < max_len; k++)
            want[k] = 0;
        err e = t5_tok_encode_bytes(t, c->cases[i].text, c->cases[i].len, max_len, got, &nc);
        if (!e && nc == n - 1 && !memcmp(want, got, (size_t)max_len * sizeof *got)) continue;
        if (bad++ < 3)
            fprintf(stderr, "  max_len %d: case %s differs\n", max_len, c->cases[i].name);
    }
    t5_check(c, bad == 0, "padding=max_length, max_length=%d, truncation: %d of %d cases", max_len,
             c->n - bad, c->n);
}

static t5_tok *t5_load(t5_ctx *c, const char *path, t5_tok_mode mode, const char *what) {
    t5_tok *t = NULL;
    err e = t5_tok_load_mode(path, mode, &t);
    if (!t5_check(c, e == ERR_OK, "load %s", what)) fprintf(stderr, "  %s\n", err_msg());
    return t;
}

/* tokenizer.json with its normalizer and pre_tokenizer replaced by a variant's, "$ORIGINAL"
 * standing for the file's own charsmap. */
static void t5_subst(cJSON *o, const char *charsmap) {
    for (cJSON *v = o ? o->child : NULL; v; v = v->next) {
        if (cJSON_IsString(v) && !strcmp(v->valuestring, "$ORIGINAL"))
            cJSON_SetValuestring(v, charsmap);
        t5_subst(v, charsmap);
    }
}

static void t5_variants(t5_ctx *c, const cJSON *meta, const cJSON *tj) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(tj, "normalizer"), *v;
    const char *cm =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(norm, "precompiled_charsmap"));
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(meta, "variants")) {
        cJSON *j = cJSON_Duplicate(tj, 1),
              *n = cJSON_Duplicate(cJSON_GetObjectItem(v, "normalizer"), 1),
              *p = cJSON_Duplicate(cJSON_GetObjectItem(v, "pre_tokenizer"), 1);
        t5_subst(n, cm ? cm : "");
        cJSON_ReplaceItemInObjectCaseSensitive(j, "normalizer", n);
        cJSON_ReplaceItemInObjectCaseSensitive(j, "pre_tokenizer", p);
        char path[4200], what[200], *s = cJSON_PrintUnformatted(j);
        snprintf(path, sizeof path, "%s/%s.json", c->tmp, v->string);
        snprintf(what, sizeof what, "tokenizer.json as the \"%s\" variant, as written", v->string);
        if (t5_check(c, s && fio_write_file(path, s, strlen(s)) == ERR_OK, "write %s", path)) {
            t5_tok *t = t5_load(c, path, T5_TOK_AS_WRITTEN, what);
            if (t) t5_run_cases(c, t, v->string, what);
            t5_tok_free(t);
        }
        free(s);
        cJSON_Delete(j);
    }
}

/* Every cut of a file must fail to load, with the file named in the message. */
static void t5_truncations(t5_ctx *c, const char *src, const char *name, t5_tok_mode mode,
                           size_t keep_tail) {
    fio_map m = {0};
    if (!t5_check(c, fio_map_open(src, &m) == ERR_OK, "read %s", src)) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", c->tmp, name);
    int bad = 0, tried = 0;
    for (int k = 0; k < 80; k++) {
        size_t cut = k < 16 ? (size_t)k * 7 : (m.size - keep_tail) / 64 * (size_t)(k - 16);
        if (cut >= m.size - keep_tail) continue;
        t5_tok *t = NULL;
        tried++;
        if (fio_write_file(path, m.data, cut) != ERR_OK)
            bad++;
        else if (t5_tok_load_mode(path, mode, &t) == ERR_OK || !strstr(err_msg(), path)) {
            if (bad++ < 3)
                fprintf(stderr, "  %s cut to %zu bytes: %s\n", name, cut, t ? "loaded" : err_msg());
        }
        t5_tok_free(t);
    }
    t5_check(c, bad == 0, "%s cut at %d places: each refused with the path named", name, tried);
    fio_map_close(&m);
}

/* Random byte changes: loading and encoding must not crash (errors are fine). In tokenizer.json
 * the changes go into the charsmap's base64, as base64 letters, so that most files still load. */
static void t5_mutations(t5_ctx *c, const char *src, const char *name, t5_tok_mode mode,
                         int rounds) {
    fio_map m = {0};
    if (!t5_check(c, fio_map_open(src, &m) == ERR_OK, "read %s", src)) return;
    uint8_t *b = malloc(m.size);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", c->tmp, name);
    const char *b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *key = "\"precompiled_charsmap\": \"",
               *at0 = memmem(m.data, m.size, key, strlen(key));
    size_t lo = at0 ? (size_t)(at0 - (const char *)m.data) + strlen(key) : 0, span = m.size;
    if (at0)
        span =
            (size_t)((const char *)memchr(m.data + lo, '"', m.size - lo) - (const char *)m.data) -
            lo - 4;
    uint64_t s = 0x5DEECE66Dull;
    int loaded = 0;
    int32_t ids[600];
    for (int r = 0; r < rounds && b; r++) {
        memcpy(b, m.data, m.size);
        for (int f = 0; f < 1 + r % 8; f++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = lo + (size_t)(s >> 33) % span;
            b[at] = at0     ? (uint8_t)b64[(s >> 13) & 63]
                    : r % 3 ? (uint8_t)(s >> 13)
                            : (uint8_t)(b[at] ^ (1u << (s >> 61)));
        }
        t5_tok *t = NULL;
        if (fio_write_file(path, b, m.size) != ERR_OK || t5_tok_load_mode(path, mode, &t) != ERR_OK)
            continue;
        loaded++;
        for (int i = 0; i < c->n; i++)
            t5_tok_encode_bytes(t, c->cases[i].text, c->cases[i].len, 600, ids, NULL);
        t5_tok_free(t);
    }
    t5_check(c, b != NULL, "%s with random changes, %d rounds (%d loaded and encoded): no crash",
             name, rounds, loaded);
    free(b);
    fio_map_close(&m);
}

/* tokenizer.json edited one way; the load must give want. */
static void t5_bad_json(t5_ctx *c, const cJSON *tj, const char *key, const char *json,
                        t5_tok_mode mode, err want, const char *what) {
    cJSON *j = cJSON_Duplicate(tj, 1), *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    cJSON *at = strncmp(key, "model.", 6) ? j : model;
    const char *k = at == j ? key : key + 6;
    cJSON_ReplaceItemInObjectCaseSensitive(at, k, cJSON_Parse(json));
    char path[4200], *s = cJSON_PrintUnformatted(j);
    snprintf(path, sizeof path, "%s/bad.json", c->tmp);
    t5_tok *t = NULL;
    err e = fio_write_file(path, s, strlen(s));
    if (!e) e = t5_tok_load_mode(path, mode, &t);
    t5_check(c, e == want && (want == ERR_OK || strstr(err_msg(), path)), "%s: %s", what,
             e ? err_msg() : "loads");
    t5_tok_free(t);
    free(s);
    cJSON_Delete(j);
}

static void t5_speed(t5_ctx *c, const t5_tok *t, const cJSON *tj) {
    const t5_case *lc = NULL;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->cases[i].name, "long")) lc = &c->cases[i];
    int32_t ids[512];
    int nc = 0;
    double t0 = t5_now_ms();
    for (int r = 0; r < 100 && lc; r++)
        t5_tok_encode_bytes(t, lc->text, lc->len, 512, ids, &nc);
    double per = (t5_now_ms() - t0) / 100;
    /* the time is printed, not asserted: a timed test fails on a loaded machine */
    t5_check(c, lc && nc >= 511, "a %d-piece prompt (%zu bytes) encodes, in %.3f ms", nc,
             lc ? lc->len : 0, per);
    /* a vocabulary of T5's size: the fixture's, plus made-up pieces up to 32100 */
    cJSON *j = cJSON_Duplicate(tj, 1),
          *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "vocab");
    for (int i = cJSON_GetArraySize(vocab); i < 32100; i++) {
        char p[32];
        snprintf(p, sizeof p, "\xE2\x96\x81q%dx%d", i * 7919 % 32100, i % 13);
        cJSON *e = cJSON_CreateArray();
        cJSON_AddItemToArray(e, cJSON_CreateString(p));
        cJSON_AddItemToArray(e, cJSON_CreateNumber(-12.0 - i * 1e-4));
        cJSON_AddItemToArray(vocab, e);
    }
    char path[4200], *s = cJSON_PrintUnformatted(j);
    snprintf(path, sizeof path, "%s/big.json", c->tmp);
    t5_tok *big = NULL;
    double ms = -1;
    if (s && fio_write_file(path, s, strlen(s)) == ERR_OK) {
        t0 = t5_now_ms();
        if (t5_tok_load(path, &big) == ERR_OK) ms = t5_now_ms() - t0;
    }
    t5_check(c, big && t5_tok_vocab_size(big) == 32100,
             "a 32100-piece tokenizer.json (%zu bytes) loads (in %.1f ms; printed, not asserted)",
             s ? strlen(s) : 0, ms);
    t5_tok_free(big);
    free(s);
    cJSON_Delete(j);
}

static void t5_arguments(t5_ctx *c, const t5_tok *t) {
    t5_tok *x = NULL;
    int32_t ids[8];
    int nc = -1;
    t5_check(c, t5_tok_load(NULL, &x) == ERR_ARG, "load(NULL) is ERR_ARG");
    t5_check(c,
             t5_tok_load("/nonexistent/t5", &x) == ERR_IO && strstr(err_msg(), "/nonexistent/t5"),
             "a missing path is ERR_IO naming it");
    t5_check(c, t5_tok_load(c->tmp, &x) == ERR_IO && strstr(err_msg(), c->tmp),
             "a folder without the files is ERR_IO naming it");
    t5_check(c, t5_tok_load_mode(c->json, T5_TOK_SENTENCEPIECE, &x) == ERR_ARG,
             "the sentencepiece mode refuses tokenizer.json");
    t5_check(c, t5_tok_encode(t, "a", 0, ids, NULL) == ERR_ARG, "max_len 0 is ERR_ARG");
    t5_check(c,
             t5_tok_encode(t, NULL, 4, ids, &nc) == ERR_OK && ids[0] == 1 && ids[1] == 0 &&
                 ids[3] == 0 && nc == 0,
             "NULL text encodes as the empty prompt: 1 0 0 0");
    t5_check(c,
             t5_tok_encode(t, "a photo of a cat", 1, ids, &nc) == ERR_OK && ids[0] == 1 && nc > 0,
             "max_len 1 leaves only </s>");
    t5_check(c, t5_tok_vocab_size(t) == 1100, "vocab size %d (1000 pieces + 100 extra ids)",
             t5_tok_vocab_size(t));
}

/* Every check, once the fixtures are read. */
static void t5_all(t5_ctx *c, const cJSON *meta, const cJSON *tj) {
    double t0 = t5_now_ms();
    t5_tok *tf =
        t5_load(c, c->dir, T5_TOK_TRANSFORMERS, "the folder (tokenizer.json), transformers");
    double load_ms = t5_now_ms() - t0;
    if (tf) {
        printf("t5 tokenizer: (the folder's tokenizer.json loads in %.1f ms)\n", load_ms);
        t5_run_cases(c, tf, "hf", "tokenizer.json, transformers");
        const cJSON *ml;
        cJSON_ArrayForEach(ml, cJSON_GetObjectItem(meta, "max_lengths"))
            t5_run_pipeline(c, tf, (int)ml->valuedouble);
        t5_arguments(c, tf);
        t5_speed(c, tf, tj);
    }
    t5_tok_free(tf);
    static const struct {
        int spiece;
        t5_tok_mode mode;
        const char *field, *what;
    } forms[] = {
        {0, T5_TOK_AS_WRITTEN, "hf", "tokenizer.json as written"},
        {1, T5_TOK_TRANSFORMERS, "hf", "spiece.model, transformers"},
        {1, T5_TOK_AS_WRITTEN, "hf", "spiece.model with its NormalizerSpec flags"},
        {1, T5_TOK_SENTENCEPIECE, "spm", "spiece.model, sentencepiece"},
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        t5_tok *t = t5_load(c, forms[i].spiece ? c->spiece : c->json, forms[i].mode, forms[i].what);
        if (t) t5_run_cases(c, t, forms[i].field, forms[i].what);
        t5_tok_free(t);
    }
    t5_variants(c, meta, tj);

    /* spiece.model ends with an empty denormalizer_spec (2 bytes): cuts before it must fail */
    t5_truncations(c, c->spiece, "spiece.model", T5_TOK_TRANSFORMERS, 2);
    t5_truncations(c, c->json, "tokenizer.json", T5_TOK_TRANSFORMERS, 2);
    t5_mutations(c, c->spiece, "spiece.model", T5_TOK_TRANSFORMERS, 150);
    t5_mutations(c, c->spiece, "spiece.model", T5_TOK_SENTENCEPIECE, 100);
    t5_mutations(c, c->json, "tokenizer.json", T5_TOK_AS_WRITTEN, 60);
    t5_bad_json(c, tj, "model.type", "\"BPE\"", T5_TOK_TRANSFORMERS, ERR_UNSUPPORTED,
                "a BPE model");
    t5_bad_json(c, tj, "model.unk_id", "5000", T5_TOK_TRANSFORMERS, ERR_FORMAT,
                "unk_id out of range");
    t5_bad_json(c, tj, "model.vocab", "[[\"a\", \"x\"]]", T5_TOK_TRANSFORMERS, ERR_FORMAT,
                "a vocab entry without a score");
    t5_bad_json(c, tj, "normalizer", "{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"AAA*\"}",
                T5_TOK_TRANSFORMERS, ERR_FORMAT, "a charsmap that is not base64");
    t5_bad_json(c, tj, "normalizer",
                "{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"/////wAAAAA=\"}",
                T5_TOK_TRANSFORMERS, ERR_FORMAT, "a charsmap whose trie size is past its end");
    t5_bad_json(c, tj, "normalizer", "{\"type\":\"NFKC\"}", T5_TOK_AS_WRITTEN, ERR_UNSUPPORTED,
                "an NFKC normalizer, as written");
    t5_bad_json(c, tj, "normalizer", "{\"type\":\"NFKC\"}", T5_TOK_TRANSFORMERS, ERR_OK,
                "an NFKC normalizer, which transformers ignores");
    t5_bad_json(c, tj, "normalizer",
                "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\" \"}",
                T5_TOK_AS_WRITTEN, ERR_UNSUPPORTED, "a Replace regex beyond a repeated character");
    t5_bad_json(c, tj, "pre_tokenizer",
                "{\"type\":\"Metaspace\",\"replacement\":\"_\",\"add_prefix_space\":false}",
                T5_TOK_AS_WRITTEN, ERR_FORMAT, "Metaspace add_prefix_space false without never");
}

int t5_tokenizer_tests(const char *fixtures_dir) {
    t5_ctx c = {0};
    snprintf(c.dir, sizeof c.dir, "%s/tokenizers/t5", fixtures_dir);
    snprintf(c.json, sizeof c.json, "%s/tokenizer.json", c.dir);
    snprintf(c.spiece, sizeof c.spiece, "%s/spiece.model", c.dir);
    char ids_path[4200];
    snprintf(ids_path, sizeof ids_path, "%s/tokenizers/t5_ids.json", fixtures_dir);
    strcpy(c.tmp, "/tmp/df11_t5tok_XXXXXX");
    fio_map m = {0}, mj = {0};
    cJSON *meta = NULL, *tj = NULL;
    if (!t5_check(&c, mkdtemp(c.tmp) != NULL, "make %s", c.tmp)) return c.failures;
    if (t5_check(&c, fio_map_open(ids_path, &m) == ERR_OK && fio_map_open(c.json, &mj) == ERR_OK,
                 "read %s and %s", ids_path, c.json)) {
        meta = cJSON_ParseWithLength((const char *)m.data, m.size);
        tj = cJSON_ParseWithLength((const char *)mj.data, mj.size);
    }
    const cJSON *cases = cJSON_GetObjectItem(meta, "cases"), *k;
    c.cases = calloc((size_t)cJSON_GetArraySize(cases) + 1, sizeof *c.cases);
    cJSON_ArrayForEach(k, cases) {
        t5_case *tc = &c.cases[c.n++];
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(k, "text"));
        const char *hex = cJSON_GetStringValue(cJSON_GetObjectItem(k, "hex"));
        tc->rec = k;
        tc->name = cJSON_GetStringValue(cJSON_GetObjectItem(k, "name"));
        tc->len = text ? strlen(text) : hex ? strlen(hex) / 2 : 0;
        tc->text = malloc(tc->len + 1);
        for (size_t i = 0; i < tc->len; i++) {
            unsigned v = 0;
            if (text)
                tc->text[i] = text[i];
            else
                sscanf(hex + 2 * i, "%2x", &v), tc->text[i] = (char)v;
        }
    }
    if (t5_check(&c, meta && tj && c.n > 50, "%d cases from %s", c.n, ids_path))
        t5_all(&c, meta, tj);
    for (int i = 0; i < c.n; i++)
        free(c.cases[i].text);
    free(c.cases);
    cJSON_Delete(meta);
    cJSON_Delete(tj);
    fio_map_close(&m);
    fio_map_close(&mj);
    fio_remove_tree(c.tmp);
    return c.failures;
}
