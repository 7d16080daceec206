/* clip_tokenizer: the pipeline of transformers' CLIPTokenizer (models/clip/tokenization_clip.py
 * in transformers 5, run by HF tokenizers), in its order:
 *   1. added tokens (<|startoftext|>, <|endoftext|>, a pad "!") are cut out of the raw text,
 *      leftmost-longest (tokenizers AddedVocabulary::extract_and_normalize);
 *   2. each remaining piece is normalized: NFC, every \s+ run to one space, lowercase; added
 *      tokens marked "normalized" are then cut out of the normalized text;
 *   3. pre-tokenized by CLIP's regex (Split, invert), then ByteLevel (bytes to symbols);
 *   4. BPE by merge rank with "</w>" on the last symbol (tokenizers models/bpe).
 * Spec and test vectors: docs/MODEL-SPEC.md §5.1. */
#include "text_encoder/clip_tokenizer.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/fileio.h"
#include "core/log.h"
#include "text_encoder/unicode.h"

#define CLIP_EOW "</w>"
#define CLIP_PATH_MAX 4096

typedef struct vocab_slot {
    const char *key; /* NULL: empty */
    uint32_t len;
    int32_t id;
} vocab_slot;

typedef struct merge_slot {
    uint64_t key; /* left id << 32 | right id */
    int32_t rank; /* -1: empty */
    int32_t id;   /* the merged symbol */
} merge_slot;

/* A token matched in the text before BPE (tokenizers AddedToken; single_word is not used by
 * any CLIP tokenizer and is ignored with a warning). */
typedef struct added_tok {
    const char *content;
    uint32_t *cps;
    int len;
    int32_t id;
    int normalized, lstrip, rstrip;
} added_tok;

struct clip_tok {
    arena ar;
    vocab_slot *vocab;
    uint32_t vocab_mask;
    int n_vocab;
    merge_slot *merges;
    uint32_t merge_mask;
    int n_merges;
    int32_t byte_id[256], byte_eow_id[256]; /* the byte's symbol, alone and with "</w>" */
    added_tok *added;
    int n_added, cap_added;
    int32_t bos_id, eos_id, pad_id;
};

/* ---- hash tables ---- */

static uint32_t hash_str(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(uint64_t k) { return (uint32_t)((k * 0x9E3779B97F4A7C15ull) >> 32); }

/* Smallest power of two >= 2n (load factor <= 1/2). */
static uint32_t table_size(int n) {
    uint32_t s = 16;
    while (s < 2u * (uint32_t)n)
        s <<= 1;
    return s;
}

static int32_t vocab_get(const clip_tok *t, const char *s, size_t n) {
    for (uint32_t i = hash_str(s, n) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        const vocab_slot *v = &t->vocab[i];
        if (!v->key) return -1;
        if (v->len == n && memcmp(v->key, s, n) == 0) return v->id;
    }
}

/* Inserts or replaces (a later duplicate key wins, as a JSON map read by serde or Python). */
static void vocab_put(clip_tok *t, const char *key, int32_t id) {
    size_t n = strlen(key);
    for (uint32_t i = hash_str(key, n) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        vocab_slot *v = &t->vocab[i];
        if (!v->key) {
            *v = (vocab_slot){key, (uint32_t)n, id};
            t->n_vocab++;
            return;
        }
        if (v->len == n && memcmp(v->key, key, n) == 0) {
            v->id = id;
            return;
        }
    }
}

static const merge_slot *merge_get(const clip_tok *t, int32_t a, int32_t b) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = hash_pair(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *m = &t->merges[i];
        if (m->rank < 0) return NULL;
        if (m->key == k) return m;
    }
}

/* A later duplicate merge takes the later rank (tokenizers and CLIP build a map). */
static void merge_put(clip_tok *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = hash_pair(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        merge_slot *m = &t->merges[i];
        if (m->rank < 0) t->n_merges++;
        if (m->rank < 0 || m->key == k) {
            *m = (merge_slot){k, rank, id};
            return;
        }
    }
}

/* ---- loading: vocab and merges ---- */

/* Parses a whole JSON file. *out = NULL (and ERR_OK) when it is absent and optional. */
static err json_read(const char *path, int optional, cJSON **out) {
    *out = NULL;
    if (optional && !fio_exists(path)) return ERR_OK;
    fio_map m;
    TRY(fio_map_open(path, &m));
    *out = cJSON_ParseWithLength((const char *)m.data, m.size);
    fio_map_close(&m);
    FAIL_IF(!*out, ERR_FORMAT, "%s: not valid JSON", path);
    return ERR_OK;
}

static err vocab_load(clip_tok *t, const cJSON *obj, const char *path) {
    FAIL_IF(!cJSON_IsObject(obj), ERR_FORMAT, "%s: the vocab is not a JSON object", path);
    int n = cJSON_GetArraySize(obj);
    uint32_t size = table_size(n);
    t->vocab = calloc(size, sizeof *t->vocab);
    FAIL_IF(!t->vocab, ERR_NOMEM, "%s: no memory for a vocab of %d", path, n);
    t->vocab_mask = size - 1;
    for (const cJSON *it = obj->child; it; it = it->next) {
        double id = it->valuedouble;
        FAIL_IF(!cJSON_IsNumber(it) || id < 0 || id > INT32_MAX || id != (int32_t)id, ERR_FORMAT,
                "%s: vocab entry \"%.80s\" has no integer id", path, it->string);
        const char *key = arena_strdup(&t->ar, it->string);
        FAIL_IF(!key, ERR_NOMEM, "%s: no memory for the vocab", path);
        vocab_put(t, key, (int32_t)id);
    }
    return ERR_OK;
}

/* Adds merge a + b with the given rank; both parts and their concatenation must be in the
 * vocab (tokenizers refuses such a file too). */
static err merge_add(clip_tok *t, const char *a, size_t na, const char *b, size_t nb, int rank,
                     const char *path) {
    char buf[512];
    FAIL_IF(na + nb >= sizeof buf, ERR_FORMAT, "%s: merge %d is %zu bytes long", path, rank,
            na + nb);
    memcpy(buf, a, na);
    memcpy(buf + na, b, nb);
    int32_t ia = vocab_get(t, a, na), ib = vocab_get(t, b, nb), im = vocab_get(t, buf, na + nb);
    FAIL_IF(ia < 0 || ib < 0 || im < 0, ERR_FORMAT,
            "%s: merge %d \"%.*s %.*s\": \"%.*s\" is not in the vocab", path, rank, (int)na, a,
            (int)nb, b,
            ia < 0   ? (int)na
            : ib < 0 ? (int)nb
                     : (int)(na + nb),
            ia < 0   ? a
            : ib < 0 ? b
                     : buf);
    merge_put(t, ia, ib, rank, im);
    return ERR_OK;
}

static err merges_alloc(clip_tok *t, int n, const char *path) {
    uint32_t size = table_size(n);
    t->merges = malloc(size * sizeof *t->merges);
    FAIL_IF(!t->merges, ERR_NOMEM, "%s: no memory for %d merges", path, n);
    for (uint32_t i = 0; i < size; i++)
        t->merges[i].rank = -1;
    t->merge_mask = size - 1;
    return ERR_OK;
}

/* merges.txt: "#version" lines skipped, then one "left right" per line; rank = line order. */
static err merges_txt_load(clip_tok *t, const char *path) {
    fio_map m;
    TRY(fio_map_open(path, &m));
    const char *p = (const char *)m.data, *end = p + m.size;
    int lines = 0;
    for (const char *q = p; q < end; q++)
        lines += *q == '\n';
    err e = merges_alloc(t, lines + 1, path);
    int rank = 0, line_no = 0;
    while (!e && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        line_no++;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r') n--;
        if (n && !(n >= 8 && memcmp(p, "#version", 8) == 0)) {
            const char *sp = memchr(p, ' ', n);
            if (!sp || sp == p || sp == p + n - 1 || memchr(sp + 1, ' ', n - (size_t)(sp - p) - 1))
                e = err_set(ERR_FORMAT, "%s: line %d is not \"left right\"", path, line_no);
            else
                e = merge_add(t, p, (size_t)(sp - p), sp + 1, n - (size_t)(sp - p) - 1, rank++,
                              path);
        }
        p = le + 1;
    }
    fio_map_close(&m);
    return e;
}

/* tokenizer.json's model: a BPE with "</w>" as the end-of-word suffix (CLIP's), merges as
 * "left right" strings (older files) or [left, right] pairs (tokenizers >= 0.20). */
static err tokenizer_json_model(clip_tok *t, const cJSON *root, const char *path) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *eow = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    FAIL_IF(!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0, ERR_UNSUPPORTED,
            "%s: model.type is not \"BPE\"; not a CLIP tokenizer", path);
    FAIL_IF(!cJSON_IsString(eow) || strcmp(eow->valuestring, CLIP_EOW) != 0, ERR_UNSUPPORTED,
            "%s: model.end_of_word_suffix is not \"" CLIP_EOW "\"; not a CLIP tokenizer", path);
    TRY(vocab_load(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path));
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    FAIL_IF(!cJSON_IsArray(merges), ERR_FORMAT, "%s: model.merges is not an array", path);
    TRY(merges_alloc(t, cJSON_GetArraySize(merges), path));
    int rank = 0;
    for (const cJSON *it = merges->child; it; it = it->next, rank++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring, *sp = strchr(s, ' ');
            if (sp && !strchr(sp + 1, ' ')) a = s, na = (size_t)(sp - s), b = sp + 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring, na = strlen(a), b = it->child->next->valuestring;
        }
        FAIL_IF(!a || !na || !*b, ERR_FORMAT, "%s: model.merges[%d] is not a pair", path, rank);
        nb = strlen(b);
        TRY(merge_add(t, a, na, b, nb, rank, path));
    }
    return ERR_OK;
}

/* The symbols of the 256 bytes (GPT-2's bytes_to_unicode): printable bytes 33-126, 161-172,
 * 174-255 stand for themselves, the other 68 take U+0100.. in byte order. */
static err byte_symbols(clip_tok *t, const char *path) {
    uint32_t next = 0x100;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        uint32_t cp = keep ? (uint32_t)b : next++;
        char s[8 + sizeof CLIP_EOW];
        int n = unicode_utf8_encode(cp, s);
        memcpy(s + n, CLIP_EOW, sizeof CLIP_EOW);
        t->byte_id[b] = vocab_get(t, s, (size_t)n);
        t->byte_eow_id[b] = vocab_get(t, s, strlen(s));
        FAIL_IF(t->byte_id[b] < 0 || t->byte_eow_id[b] < 0, ERR_FORMAT,
                "%s: the symbol of byte %d (\"%s\", with or without " CLIP_EOW
                ") is not in the vocab",
                path, b, s);
    }
    return ERR_OK;
}

/* ---- loading: added and special tokens ---- */

static added_tok *added_find(const clip_tok *t, const char *content) {
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, content) == 0) return &t->added[i];
    return NULL;
}

static int json_flag(const cJSON *obj, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* Adds a token, or replaces the flags and id of one with the same content (the last added wins,
 * as in tokenizers' add_tokens). */
static err added_put(clip_tok *t, const char *content, int32_t id, int normalized, int lstrip,
                     int rstrip) {
    FAIL_IF(!*content, ERR_FORMAT, "an added token is empty");
    added_tok *a = added_find(t, content);
    if (!a) {
        if (t->n_added == t->cap_added) {
            int cap = t->cap_added ? 2 * t->cap_added : 8;
            added_tok *na = realloc(t->added, (size_t)cap * sizeof *na);
            FAIL_IF(!na, ERR_NOMEM, "no memory for added tokens");
            t->added = na, t->cap_added = cap;
        }
        a = &t->added[t->n_added++];
        size_t n = strlen(content);
        a->content = arena_strdup(&t->ar, content);
        a->cps = arena_alloc(&t->ar, (n + 1) * sizeof *a->cps);
        FAIL_IF(!a->content || !a->cps, ERR_NOMEM, "no memory for added tokens");
        a->len = (int)unicode_utf8_decode(content, n, a->cps);
    }
    a->id = id, a->normalized = normalized, a->lstrip = lstrip, a->rstrip = rstrip;
    return ERR_OK;
}

/* Adds an AddedToken object ({"content", "lstrip", "rstrip", "normalized", ...}) with id. */
static err added_put_json(clip_tok *t, const cJSON *tok, int32_t id, const char *path) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(tok, "content");
    FAIL_IF(!cJSON_IsString(c), ERR_FORMAT, "%s: added token %d has no content", path, id);
    if (json_flag(tok, "single_word", 0))
        LOG_WARN("%s: added token \"%.40s\" is single_word, which is not implemented", path,
                 c->valuestring);
    /* AddedToken's normalized defaults to "not special" */
    int normalized = json_flag(tok, "normalized", !json_flag(tok, "special", 0));
    return added_put(t, c->valuestring, id, normalized, json_flag(tok, "lstrip", 0),
                     json_flag(tok, "rstrip", 0));
}

/* The AddedToken object with this content in tokenizer.json's "added_tokens" array or in an
 * "added_tokens_decoder" object (keys are ids), or NULL; *id gets its id. */
static const cJSON *added_lookup(const cJSON *list, const char *content, int32_t *id) {
    for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(c) || strcmp(c->valuestring, content) != 0) continue;
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(it, "id");
        *id = cJSON_IsNumber(i) ? (int32_t)i->valuedouble : (int32_t)strtol(it->string, NULL, 10);
        return it;
    }
    return NULL;
}

/* Adds the added tokens of tokenizer.json (list) or of an added_tokens_decoder (object). */
static err added_put_all(clip_tok *t, const cJSON *list, const char *path) {
    for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(it, "id");
        char nul = 0, *endp = &nul;
        double id = cJSON_IsNumber(i) ? i->valuedouble
                    : it->string      ? (double)strtol(it->string, &endp, 10)
                                      : -1;
        FAIL_IF(*endp || id < 0 || id > INT32_MAX, ERR_FORMAT, "%s: an added token has no id",
                path);
        TRY(added_put_json(t, it, (int32_t)id, path));
    }
    return ERR_OK;
}

/* Adds one special token: its entry in the added tokens (known) when there is one, else from
 * its dict, else a plain non-normalized token. *id gets its id, -1 if not in the vocab. */
static err special_put(clip_tok *t, const char *content, const cJSON *v, const cJSON *known_list,
                       int32_t *id) {
    const cJSON *known = added_lookup(known_list, content, id);
    if (known) return added_put_json(t, known, *id, "added tokens");
    *id = vocab_get(t, content, strlen(content));
    if (*id < 0) return ERR_OK;
    if (cJSON_IsObject(v))
        return added_put(t, content, *id, json_flag(v, "normalized", 0), json_flag(v, "lstrip", 0),
                         json_flag(v, "rstrip", 0));
    return added_put(t, content, *id, 0, 0, 0);
}

/* Resolves the special tokens and the added-token list as transformers 5 from_pretrained does
 * (tokenization_utils_base.py _from_pretrained, TokenizersBackend._post_init):
 * - with "added_tokens_decoder" in tokenizer_config.json: those tokens, and that file's special
 *   tokens; without it: special_tokens_map.json over tokenizer_config.json, resolved against
 *   tokenizer.json's added tokens;
 * - each special token (bos, eos, unk, sep, pad, cls, mask, in that order) is (re)added, the
 *   last addition deciding its flags; CLIPTokenizer's defaults fill bos, eos, unk and pad. */
static err special_tokens(clip_tok *t, const char *dir, const cJSON *tj_added) {
    static const char *keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                 "pad_token", "cls_token", "mask_token"};
    static const char *dflt[] = {
        "<|startoftext|>", "<|endoftext|>", "<|endoftext|>", NULL, "<|endoftext|>", NULL, NULL};
    char p_cfg[CLIP_PATH_MAX], p_map[CLIP_PATH_MAX];
    TRY(fio_join(p_cfg, sizeof p_cfg, dir, "tokenizer_config.json"));
    TRY(fio_join(p_map, sizeof p_map, dir, "special_tokens_map.json"));
    cJSON *cfg = NULL, *map = NULL;
    err e = json_read(p_cfg, 1, &cfg);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    if (!e && !dec) e = json_read(p_map, 1, &map); /* read only without a decoder */
    if (!e) e = added_put_all(t, tj_added, dir);
    if (!e) e = added_put_all(t, dec, p_cfg);
    const cJSON *known_list = dec ? dec : tj_added;
    t->bos_id = t->eos_id = t->pad_id = -1;
    for (int k = 0; k < 7 && !e; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(map, keys[k]);
        if (!v) v = cJSON_GetObjectItemCaseSensitive(cfg, keys[k]);
        const char *content = v ? NULL : dflt[k];
        if (cJSON_IsString(v)) content = v->valuestring;
        if (cJSON_IsObject(v)) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
            content = cJSON_IsString(c) ? c->valuestring : NULL;
        }
        if (!content) continue;
        int32_t id = -1;
        e = special_put(t, content, v, known_list, &id);
        if (!e && id < 0) {
            if (k == 0 || k == 1 || k == 4)
                e = err_set(ERR_FORMAT, "%s: the %s \"%.40s\" is not in the vocab", dir, keys[k],
                            content);
            else
                LOG_WARN("%s: the %s \"%.40s\" is not in the vocab; ignored", dir, keys[k],
                         content);
        }
        if (k == 0) t->bos_id = id;
        if (k == 1) t->eos_id = id;
        if (k == 4) t->pad_id = id;
    }
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    TRY(e);
    /* a null token in the configs: transformers could not pad or add the specials either */
    FAIL_IF(t->bos_id < 0 || t->eos_id < 0 || t->pad_id < 0, ERR_FORMAT,
            "%s: bos_token, eos_token or pad_token is null", dir);
    return ERR_OK;
}

/* Loads the vocab and merges from the form found at path; *dir gets the folder of the config
 * files, *tj the parsed tokenizer.json (NULL for vocab.json + merges.txt). */
static err load_model(clip_tok *t, const char *path, char *dir, size_t n_dir, cJSON **tj) {
    char p[CLIP_PATH_MAX];
    *tj = NULL;
    if (fio_is_dir(path)) {
        FAIL_IF(strlen(path) >= n_dir, ERR_ARG, "%s: path too long", path);
        strcpy(dir, path);
        TRY(fio_join(p, sizeof p, path, "tokenizer.json"));
        if (!fio_exists(p)) {
            TRY(fio_join(p, sizeof p, path, "vocab.json"));
            FAIL_IF(!fio_exists(p), ERR_IO,
                    "%s: neither tokenizer.json nor vocab.json + merges.txt is there", path);
            cJSON *vocab;
            TRY(json_read(p, 0, &vocab));
            err e = vocab_load(t, vocab, p);
            cJSON_Delete(vocab);
            TRY(e);
            TRY(fio_join(p, sizeof p, path, "merges.txt"));
            return merges_txt_load(t, p);
        }
    } else {
        FAIL_IF(strlen(path) >= sizeof p, ERR_ARG, "%s: path too long", path);
        strcpy(p, path);
        const char *slash = strrchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : 1;
        FAIL_IF(n >= n_dir, ERR_ARG, "%s: path too long", path);
        memcpy(dir, slash ? path : ".", n);
        dir[n] = 0;
        if (slash == path) strcpy(dir, "/");
    }
    TRY(json_read(p, 0, tj));
    return tokenizer_json_model(t, *tj, p);
}

err clip_tok_load(const char *path, clip_tok **out) {
    *out = NULL;
    clip_tok *t = calloc(1, sizeof *t);
    FAIL_IF(!t, ERR_NOMEM, "%s: no memory for a tokenizer", path);
    char dir[CLIP_PATH_MAX];
    cJSON *tj = NULL;
    err e = load_model(t, path, dir, sizeof dir, &tj);
    if (!e) e = byte_symbols(t, path);
    if (!e) e = special_tokens(t, dir, cJSON_GetObjectItemCaseSensitive(tj, "added_tokens"));
    cJSON_Delete(tj);
    if (e) {
        clip_tok_free(t);
        return err_wrap(e, "CLIP tokenizer");
    }
    LOG_DEBUG("CLIP tokenizer %s: %d vocab, %d merges, %d added tokens, pad id %d", path,
              t->n_vocab, t->n_merges, t->n_added, t->pad_id);
    *out = t;
    return ERR_OK;
}

err clip_tok_load_pad(const char *path, const char *pad, clip_tok **out) {
    TRY(clip_tok_load(path, out));
    int32_t id = -1;
    err e = special_put(*out, pad, NULL, NULL, &id);
    if (!e && id < 0)
        e = err_set(ERR_FORMAT, "%s: the pad token \"%.40s\" is not in the vocab", path, pad);
    if (e) {
        clip_tok_free(*out);
        *out = NULL;
        return err_wrap(e, "CLIP tokenizer");
    }
    (*out)->pad_id = id;
    return ERR_OK;
}

void clip_tok_free(clip_tok *t) {
    if (!t) return;
    free(t->vocab);
    free(t->merges);
    free(t->added);
    arena_free(&t->ar);
    free(t);
}

int32_t clip_tok_pad_id(const clip_tok *t) { return t->pad_id; }
int32_t clip_tok_bos_id(const clip_tok *t) { return t->bos_id; }
int32_t clip_tok_eos_id(const clip_tok *t) { return t->eos_id; }

/* ---- encoding ---- */

/* The content ids: all are counted, the first cap stored. */
typedef struct emitter {
    int32_t *ids;
    int cap, n;
} emitter;

static void emit(emitter *e, int32_t id) {
    if (e->n < e->cap) e->ids[e->n] = id;
    e->n++;
}

/* Per-call buffers, grown as needed. */
typedef struct scratch {
    uint32_t *nfc, *low;
    size_t cap_nfc, cap_low;
    char *bytes;
    int32_t *sym, *rank;
    uint8_t *fresh;
    size_t cap_sym;
} scratch;

static void scratch_free(scratch *w) {
    free(w->nfc), free(w->low), free(w->bytes), free(w->sym), free(w->rank), free(w->fresh);
}

/* Grows *p to hold n elements of size sz. */
static err grow(void *pp, size_t *cap, size_t n, size_t sz) {
    if (n <= *cap) return ERR_OK;
    void *q = realloc(*(void **)pp, n * sz);
    FAIL_IF(!q, ERR_NOMEM, "CLIP tokenizer: no memory for %zu work elements", n);
    *(void **)pp = q;
    *cap = n;
    return ERR_OK;
}

/* Makes room for a pre-token of need bytes. */
static err scratch_word(scratch *w, size_t need) {
    if (need <= w->cap_sym) return ERR_OK;
    char *b = realloc(w->bytes, need);
    if (b) w->bytes = b;
    int32_t *s = realloc(w->sym, need * sizeof *s);
    if (s) w->sym = s;
    int32_t *r = realloc(w->rank, need * sizeof *r);
    if (r) w->rank = r;
    uint8_t *f = realloc(w->fresh, need);
    if (f) w->fresh = f;
    FAIL_IF(!b || !s || !r || !f, ERR_NOMEM, "CLIP tokenizer: no memory for a %zu-byte word", need);
    w->cap_sym = need;
    return ERR_OK;
}

static int32_t pair_rank(const clip_tok *t, int32_t a, int32_t b) {
    const merge_slot *m = merge_get(t, a, b);
    return m ? m->rank : INT32_MAX;
}

/* BPE of one pre-token (tokenizers models/bpe/word.rs merge_all): its UTF-8 bytes as symbols,
 * "</w>" on the last; then, while any adjacent pair is a merge, merge every occurrence of the
 * lowest-ranked pair, left to right without overlap. Pair ranks are cached and recomputed only
 * next to a merge. */
static err bpe_word(const clip_tok *t, const uint32_t *s, size_t n, scratch *w, emitter *out) {
    TRY(scratch_word(w, 4 * n));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += (size_t)unicode_utf8_encode(s[i], w->bytes + m);
    int32_t *sym = w->sym, *rank = w->rank;
    for (size_t i = 0; i < m; i++)
        sym[i] = (i + 1 < m ? t->byte_id : t->byte_eow_id)[(uint8_t)w->bytes[i]];
    for (size_t i = 0; i + 1 < m; i++)
        rank[i] = pair_rank(t, sym[i], sym[i + 1]);
    while (m > 1) {
        int32_t best = INT32_MAX;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) best = rank[i];
        if (best == INT32_MAX) break;
        /* a rank names one pair, so rank[i] == best finds its occurrences */
        size_t k = 0;
        for (size_t i = 0; i < m; k++) {
            w->fresh[k] = i + 1 < m && rank[i] == best;
            if (w->fresh[k]) {
                sym[k] = merge_get(t, sym[i], sym[i + 1])->id;
                i += 2;
            } else {
                sym[k] = sym[i];
                rank[k] = rank[i];
                i++;
            }
        }
        m = k;
        for (size_t i = 0; i + 1 < m; i++)
            if (w->fresh[i] || w->fresh[i + 1]) rank[i] = pair_rank(t, sym[i], sym[i + 1]);
    }
    for (size_t i = 0; i < m; i++)
        emit(out, sym[i]);
    return ERR_OK;
}

/* Length of the contraction ('s 't 're 've 'm 'll 'd) at s, or 0. */
static size_t contraction(const uint32_t *s, size_t n) {
    static const char *forms[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (int f = 0; f < 7; f++) {
        size_t k = strlen(forms[f]), i = 0;
        while (i < k && i < n && s[i] == (uint8_t)forms[f][i])
            i++;
        if (i == k) return k;
    }
    return 0;
}

/* Length of "<|startoftext|>" or "<|endoftext|>" at s, or 0. */
static size_t special_literal(const uint32_t *s, size_t n) {
    static const char *forms[] = {"<|startoftext|>", "<|endoftext|>"};
    for (int f = 0; f < 2; f++) {
        size_t k = strlen(forms[f]), i = 0;
        while (i < k && i < n && s[i] == (uint8_t)forms[f][i])
            i++;
        if (i == k) return k;
    }
    return 0;
}

/* Pre-tokenizes normalized text and BPEs each piece. The regex (taking every match, dropping
 * what lies between): <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|
 * [\p{N}]|[^\s\p{L}\p{N}]+, alternatives tried in order at each position. ByteLevel's own
 * GPT-2 regex then splits only the two literals, into "<|", the word, "|>". */
static err pretokenize(const clip_tok *t, const uint32_t *s, size_t n, scratch *w, emitter *out) {
    for (size_t i = 0; i < n;) {
        uint32_t c = s[i];
        size_t j = i + 1, k;
        if (c == '<' && (k = special_literal(s + i, n - i))) {
            TRY(bpe_word(t, s + i, 2, w, out));
            TRY(bpe_word(t, s + i + 2, k - 4, w, out));
            TRY(bpe_word(t, s + i + k - 2, 2, w, out));
            i += k;
            continue;
        }
        if (c == '\'' && (k = contraction(s + i, n - i))) {
            j = i + k;
        } else if (unicode_is_letter(c)) {
            while (j < n && unicode_is_letter(s[j]))
                j++;
        } else if (unicode_is_number(c)) {
            /* one digit per piece */
        } else if (unicode_is_space(c)) {
            i++;
            continue;
        } else {
            while (j < n && !unicode_is_space(s[j]) && !unicode_is_letter(s[j]) &&
                   !unicode_is_number(s[j]))
                j++;
        }
        TRY(bpe_word(t, s + i, j - i, w, out));
        i = j;
    }
    return ERR_OK;
}

/* The leftmost-longest occurrence in s[from, n) of an added token whose "normalized" flag is
 * normalized: returns its start (n if none), *end its end, widened over white space for
 * lstrip / rstrip (tokenizers AddedVocabulary::split_with_indices). */
static size_t find_added(const clip_tok *t, int normalized, const uint32_t *s, size_t from,
                         size_t n, const added_tok **tok, size_t *end) {
    for (size_t i = from; i < n; i++) {
        const added_tok *best = NULL;
        for (int a = 0; a < t->n_added; a++) {
            const added_tok *x = &t->added[a];
            if (x->normalized != normalized || (size_t)x->len > n - i) continue;
            if (best && x->len <= best->len) continue;
            if (memcmp(x->cps, s + i, (size_t)x->len * sizeof *s) == 0) best = x;
        }
        if (!best) continue;
        size_t start = i;
        *end = i + (size_t)best->len;
        if (best->lstrip)
            while (start > from && unicode_is_space(s[start - 1]))
                start--;
        if (best->rstrip)
            while (*end < n && unicode_is_space(s[*end]))
                (*end)++;
        *tok = best;
        return start;
    }
    return n;
}

/* Normalizes one stretch of raw text between added tokens (NFC, \s+ to " ", lowercase), cuts
 * out the normalized added tokens, and tokenizes the rest. */
static err encode_piece(const clip_tok *t, const uint32_t *raw, size_t n, scratch *w,
                        emitter *out) {
    TRY(grow(&w->nfc, &w->cap_nfc, UNICODE_NFD_MAX * n, sizeof *w->nfc));
    TRY(grow(&w->low, &w->cap_low, UNICODE_LOWER_MAX * UNICODE_NFD_MAX * n, sizeof *w->low));
    size_t m = unicode_nfc(raw, n, w->nfc), k = 0;
    int in_space = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = w->nfc[i];
        if (unicode_is_space(c)) {
            if (!in_space) w->low[k++] = ' ';
            in_space = 1;
            continue;
        }
        in_space = 0;
        k += (size_t)unicode_lower(c, w->low + k);
    }
    const uint32_t *s = w->low;
    for (size_t pos = 0; pos < k;) {
        const added_tok *tok = NULL;
        size_t end = 0, start = find_added(t, 1, s, pos, k, &tok, &end);
        TRY(pretokenize(t, s + pos, start - pos, w, out));
        if (!tok) break;
        emit(out, tok->id);
        pos = end;
    }
    return ERR_OK;
}

static err encode_raw(const clip_tok *t, const uint32_t *raw, size_t n, scratch *w, emitter *out) {
    for (size_t pos = 0; pos < n;) {
        const added_tok *tok = NULL;
        size_t end = 0, start = find_added(t, 0, raw, pos, n, &tok, &end);
        if (start > pos) TRY(encode_piece(t, raw + pos, start - pos, w, out));
        if (!tok) break;
        emit(out, tok->id);
        pos = end;
    }
    return ERR_OK;
}

err clip_tok_encode(const clip_tok *t, const char *utf8, int max_len, int32_t *ids,
                    int *n_content) {
    FAIL_IF(max_len < 2, ERR_ARG, "CLIP tokenizer: max_len %d leaves no room for the content",
            max_len);
    size_t len = strlen(utf8);
    uint32_t *raw = malloc((len + 1) * sizeof *raw);
    FAIL_IF(!raw, ERR_NOMEM, "CLIP tokenizer: no memory for a %zu-byte prompt", len);
    size_t n = unicode_utf8_decode(utf8, len, raw);
    scratch w = {0};
    emitter out = {ids + 1, max_len - 2, 0};
    err e = encode_raw(t, raw, n, &w, &out);
    scratch_free(&w);
    free(raw);
    TRY(e);
    int kept = out.n < out.cap ? out.n : out.cap;
    ids[0] = t->bos_id;
    ids[kept + 1] = t->eos_id;
    for (int i = kept + 2; i < max_len; i++)
        ids[i] = t->pad_id;
    if (n_content) *n_content = out.n;
    return ERR_OK;
}
