/* t5_tokenizer_load: reads T5's tokenizer from tokenizer.json (the tokenizers library's
 * format; cJSON) or spiece.model (sentencepiece_model.proto's ModelProto, read field by field),
 * both untrusted: every length, id and offset is checked, a bad file is an error naming it. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"
#include "core/log.h"
#include "text_encoder/t5_tokenizer_internal.h"

#define NM "%.200s"
#define T5_EXTRA_IDS 100 /* T5Tokenizer's extra_ids default: <extra_id_k> = n_pieces + 99 - k */

/* ---- the charsmap and the pieces' trie ---- */

static err cm_load(t5_charsmap *cm, const uint8_t *b, size_t n, const char *file) {
    FAIL_IF(n < 4, ERR_FORMAT, NM ": precompiled charsmap of %zu bytes", file, n);
    uint32_t ts =
        (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    FAIL_IF(ts < 4 || ts % 4 || ts > n - 4, ERR_FORMAT,
            NM ": precompiled charsmap: trie of %u bytes in a %zu-byte map", file, ts, n);
    cm->n_units = ts / 4;
    cm->norm_len = n - 4 - ts;
    cm->units = malloc(ts);
    cm->norm = malloc(cm->norm_len + 1);
    FAIL_IF(!cm->units || !cm->norm, ERR_NOMEM, NM ": charsmap of %zu bytes", file, n);
    for (size_t i = 0; i < cm->n_units; i++) {
        const uint8_t *q = b + 4 + 4 * i;
        cm->units[i] =
            (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
    }
    memcpy(cm->norm, b + 4 + ts, cm->norm_len);
    cm->norm[cm->norm_len] = 0;
    /* tokenizers refuses a replacement blob that is not UTF-8; every leaf (bit 31) must point
     * into it at a character start, so a lookup never reads outside or splits a character */
    FAIL_IF(!t5_tok_utf8_ok(cm->norm, cm->norm_len), ERR_FORMAT,
            NM ": charsmap replacements are not UTF-8", file);
    for (size_t i = 0; i < cm->n_units; i++) {
        uint32_t v = cm->units[i] & 0x7FFFFFFFu;
        FAIL_IF((cm->units[i] >> 31) && (v > cm->norm_len || ((uint8_t)cm->norm[v] & 0xC0) == 0x80),
                ERR_FORMAT, NM ": charsmap leaf %zu points at byte %u of %zu", file, i, v,
                cm->norm_len);
    }
    return ERR_OK;
}

/* Builds the trie over every piece; a later duplicate replaces the earlier (tokenizers keeps the
 * last id for a token string); *dup gets the first duplicate's id, or -1. */
static err tr_build(t5_tok *t, int32_t *dup) {
    t5_trie *tr = &t->tr;
    size_t bytes = 0;
    for (int i = 0; i < t->n_pieces; i++)
        bytes += t->pieces[i].len;
    FAIL_IF(bytes >= (1u << 23), ERR_UNSUPPORTED, "vocabulary of %zu bytes", bytes);
    tr->cap = 1024;
    while (tr->cap < 2 * bytes + 16)
        tr->cap *= 2;
    tr->keys = calloc(tr->cap, sizeof *tr->keys);
    tr->vals = malloc(tr->cap * sizeof *tr->vals);
    tr->node_piece = malloc((bytes + 1) * sizeof *tr->node_piece);
    FAIL_IF(!tr->keys || !tr->vals || !tr->node_piece, ERR_NOMEM, "trie of %zu bytes", bytes);
    tr->n_nodes = 1;
    tr->node_piece[0] = -1;
    *dup = -1;
    for (int i = 0; i < t->n_pieces; i++) {
        const char *s = t->pool + t->pieces[i].off;
        int32_t node = 0;
        for (uint32_t j = 0; j < t->pieces[i].len; j++) {
            uint32_t key = ((uint32_t)node << 8 | (uint8_t)s[j]) + 1, k = t5_tr_slot(tr, key);
            while (tr->keys[k] && tr->keys[k] != key)
                k = (k + 1) & (tr->cap - 1);
            if (!tr->keys[k]) {
                tr->keys[k] = key;
                tr->vals[k] = tr->n_nodes;
                tr->node_piece[tr->n_nodes++] = -1;
            }
            node = tr->vals[k];
        }
        if (tr->node_piece[node] >= 0 && *dup < 0) *dup = i;
        tr->node_piece[node] = i;
    }
    return ERR_OK;
}

/* ---- loading: shared parts ---- */

static err pool_add(t5_tok *t, const char *s, size_t n, uint32_t *off) {
    int oom = 0;
    FAIL_IF(t->pool_len + n + 1 > UINT32_MAX, ERR_UNSUPPORTED, "tokenizer strings over 4 GB");
    FAIL_IF(!t5_tok_grow((void **)&t->pool, &t->pool_cap, t->pool_len + n + 1, 1, &oom), ERR_NOMEM,
            "tokenizer strings of %zu bytes", t->pool_len + n + 1);
    memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = 0;
    *off = (uint32_t)t->pool_len;
    t->pool_len += n + 1;
    return ERR_OK;
}

static err add_piece(t5_tok *t, const char *s, size_t n, double score, int type, const char *file) {
    FAIL_IF(!n || !t5_tok_utf8_ok(s, n), ERR_FORMAT, NM ": piece %d is empty or not UTF-8", file,
            t->n_pieces);
    FAIL_IF(!isfinite(score), ERR_FORMAT, NM ": piece %d has score %g", file, t->n_pieces, score);
    FAIL_IF(t->n_pieces >= T5_MAX_IDS, ERR_UNSUPPORTED, NM ": over %d pieces", file, T5_MAX_IDS);
    int oom = 0;
    FAIL_IF(!t5_tok_grow((void **)&t->pieces, &t->pieces_cap, (size_t)t->n_pieces + 1,
                         sizeof *t->pieces, &oom),
            ERR_NOMEM, NM ": %d pieces", file, t->n_pieces);
    t5_piece *p = &t->pieces[t->n_pieces];
    TRY(pool_add(t, s, n, &p->off));
    p->len = (uint32_t)n;
    p->score = score;
    p->type = type;
    t->n_pieces++;
    return ERR_OK;
}

static err add_added(t5_tok *t, const char *s, size_t n, int32_t id, int lstrip, int rstrip,
                     const char *file) {
    FAIL_IF(!n || !t5_tok_utf8_ok(s, n) || id < 0 || id >= T5_MAX_IDS, ERR_FORMAT,
            NM ": added token %d (id %d) is empty, not UTF-8 or out of range", file, t->n_added,
            id);
    int oom = 0;
    FAIL_IF(!t5_tok_grow((void **)&t->added, &t->added_cap, (size_t)t->n_added + 1,
                         sizeof *t->added, &oom),
            ERR_NOMEM, NM ": %d added tokens", file, t->n_added);
    t5_added *a = &t->added[t->n_added];
    TRY(pool_add(t, s, n, &a->off));
    a->len = (uint32_t)n, a->id = id, a->lstrip = lstrip, a->rstrip = rstrip;
    t->n_added++;
    return ERR_OK;
}

/* A token's id: an added token of that text, else the piece; -1 if neither. */
static int32_t token_id(const t5_tok *t, const char *s) {
    size_t n = strlen(s);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->pool + t->added[i].off, s, n)) return t->added[i].id;
    return t5_tr_find(&t->tr, s, n);
}

/* T5Tokenizer's own pre-tokenizer: WhitespaceSplit, then Metaspace("▁", prepend_scheme="always").
 */
static void set_t5_pre(t5_tok *t, int ws_split, int prepend) {
    t->n_pre = 0;
    if (ws_split) t->pre[t->n_pre++] = (t5_pre_step){.kind = T5_PRE_WS_SPLIT};
    t->pre[t->n_pre++] = (t5_pre_step){.kind = T5_PRE_METASPACE,
                                       .prepend = prepend,
                                       .split = 1,
                                       .rep = "\xE2\x96\x81",
                                       .rep_len = 3};
}

static err finish(t5_tok *t, const char *file) {
    int sp = t->mode == T5_TOK_SENTENCEPIECE;
    FAIL_IF(!t->n_pieces, ERR_FORMAT, NM ": no pieces", file);
    FAIL_IF(t->unk_id < 0 || t->unk_id >= t->n_pieces, ERR_FORMAT, NM ": unk id %d, %d pieces",
            file, t->unk_id, t->n_pieces);
    int32_t dup = -1;
    err e = tr_build(t, &dup);
    if (e) return err_wrap(e, NM, file);
    FAIL_IF(sp && dup >= 0, ERR_FORMAT, NM ": piece %d is a duplicate", file, dup);
    t->min_score = INFINITY;
    for (int i = 0; i < t->n_pieces; i++) /* unigram_model.cc: sentencepiece's normal pieces */
        if (!sp || t->pieces[i].type == T5_PIECE_NORMAL)
            t->min_score = fmin(t->min_score, t->pieces[i].score);
    FAIL_IF(!isfinite(t->min_score), ERR_FORMAT, NM ": no normal pieces", file);
    t->n_ids = t->n_pieces;
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].id >= t->n_ids) t->n_ids = t->added[i].id + 1;
        t->added_first[(uint8_t)t->pool[t->added[i].off]] = 1;
    }
    t->pad_id = token_id(t, "<pad>");
    FAIL_IF(t->pad_id < 0, ERR_FORMAT, NM ": no <pad> token", file);
    if (!t->has_post) { /* T5Tokenizer's "$A </s>" */
        int32_t eos = token_id(t, "</s>");
        FAIL_IF(eos < 0, ERR_FORMAT, NM ": no </s> token", file);
        t->n_prefix = 0, t->n_suffix = 1, t->suffix[0] = eos;
    }
    return ERR_OK;
}

/* ---- tokenizer.json ---- */

static const cJSON *jget(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = jget(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A JSON boolean, def when absent; -1 when present but not a boolean. */
static int jbool(const cJSON *o, const char *k, int def) {
    const cJSON *v = jget(o, k);
    return !v ? def : cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

static err b64_charsmap(t5_tok *t, const char *b64, const char *file) {
    FAIL_IF(!b64, ERR_FORMAT, NM ": Precompiled normalizer without precompiled_charsmap", file);
    FAIL_IF(t->has_cm, ERR_UNSUPPORTED, NM ": two Precompiled normalizers", file);
    size_t n = strlen(b64), len = 0;
    uint8_t *b = malloc(n / 4 * 3 + 3);
    FAIL_IF(!b, ERR_NOMEM, NM ": charsmap of %zu bytes", file, n);
    uint32_t acc = 0;
    int bits = 0, bad = n % 4 != 0;
    for (size_t i = 0; i < n && !bad; i++) {
        const char *al = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", *q;
        if (b64[i] == '=') {
            bad = i + 2 < n || (i + 2 == n && b64[i + 1] != '=');
            break;
        }
        if (!(q = strchr(al, b64[i])))
            bad = 1;
        else
            acc = acc << 6 | (uint32_t)(q - al), bits += 6;
        if (bits >= 8) b[len++] = (uint8_t)(acc >> (bits -= 8));
    }
    err e = bad ? err_set(ERR_FORMAT, NM ": precompiled_charsmap is not base64", file)
                : cm_load(&t->cm, b, len, file);
    free(b);
    t->has_cm = !e;
    return e;
}

/* The regexes Replace normalizers use on whitespace: one character (a backslash may escape
 * punctuation) repeated {n}, {n,}, {n,m} or +. Anything else is refused, not guessed. */
static int parse_run_regex(const char *re, const char **c, size_t *clen, int *mn, int *mx) {
    const char *q = re + (re[0] == '\\');
    if (!*q || (q == re ? strchr(".[]()*+?{}|^$", *q) != NULL : !strchr(" .[]()*+?{}|^$\\/-", *q)))
        return 0;
    *c = q, *clen = t5_u8_len(*q);
    if (strnlen(q, *clen) < *clen || !t5_tok_utf8_ok(q, *clen)) return 0;
    q += *clen;
    *mn = *mx = 1;
    if (*q == '+') return *mx = -1, q[1] == 0;
    if (*q != '{') return *q == 0;
    char *e;
    long a = strtol(q + 1, &e, 10), b = a;
    if (e == q + 1 || a < 1 || a > 1 << 20) return 0;
    if (*e == ',' && e[1] == '}')
        b = -1, e++;
    else if (*e == ',') {
        q = e + 1;
        b = strtol(q, &e, 10);
        if (e == q || b < a || b > 1 << 20) return 0;
    }
    *mn = (int)a, *mx = (int)b;
    return e[0] == '}' && e[1] == 0;
}

static err parse_norm(t5_tok *t, const cJSON *n, const char *file, int depth) {
    if (!n || cJSON_IsNull(n)) return ERR_OK;
    const char *ty = jstr(n, "type");
    FAIL_IF(!ty || depth > 4, ERR_FORMAT, NM ": normalizer without a type", file);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *v, *list = jget(n, "normalizers");
        FAIL_IF(!cJSON_IsArray(list), ERR_FORMAT, NM ": Sequence normalizer without a list", file);
        cJSON_ArrayForEach(v, list) TRY(parse_norm(t, v, file, depth + 1));
        return ERR_OK;
    }
    FAIL_IF(t->n_norm >= T5_MAX_STEPS, ERR_UNSUPPORTED, NM ": over %d normalizers", file,
            T5_MAX_STEPS);
    t5_norm_step st = {0};
    const char *rep = NULL, *lit = NULL, *re = NULL, *rc = NULL;
    if (!strcmp(ty, "Precompiled")) {
        TRY(b64_charsmap(t, jstr(n, "precompiled_charsmap"), file));
        st.kind = T5_NORM_CHARSMAP;
    } else if (!strcmp(ty, "Replace")) {
        const cJSON *pat = jget(n, "pattern");
        lit = jstr(pat, "String"), re = jstr(pat, "Regex"), rep = jstr(n, "content");
        size_t cl;
        FAIL_IF(!rep || !(lit ? *lit : re != NULL), ERR_FORMAT,
                NM ": Replace normalizer without pattern or content", file);
        FAIL_IF(re && !parse_run_regex(re, &rc, &cl, &st.min_run, &st.max_run), ERR_UNSUPPORTED,
                NM ": Replace regex \"%.60s\" (only a repeated character is supported)", file, re);
        st.kind = lit ? T5_NORM_REPLACE : T5_NORM_REPLACE_RUN;
        if (!re) rc = lit, cl = strlen(lit);
        TRY(pool_add(t, rc, cl, &st.pat_off));
        st.pat_len = (uint32_t)cl;
    } else if (!strcmp(ty, "Strip")) {
        st.kind = T5_NORM_STRIP, st.left = jbool(n, "strip_left", 1),
        st.right = jbool(n, "strip_right", 1);
        FAIL_IF(st.left < 0 || st.right < 0, ERR_FORMAT, NM ": Strip normalizer flags", file);
    } else if (!strcmp(ty, "Prepend")) {
        st.kind = T5_NORM_PREPEND, rep = jstr(n, "prepend");
        FAIL_IF(!rep, ERR_FORMAT, NM ": Prepend normalizer without prepend", file);
    } else {
        FAIL(ERR_UNSUPPORTED, NM ": normalizer %.40s is not supported", file, ty);
    }
    if (rep) {
        FAIL_IF(!t5_tok_utf8_ok(rep, strlen(rep)), ERR_FORMAT, NM ": normalizer text is not UTF-8",
                file);
        TRY(pool_add(t, rep, strlen(rep), &st.rep_off));
        st.rep_len = (uint32_t)strlen(rep);
    }
    t->norm[t->n_norm++] = st;
    return ERR_OK;
}

static err parse_pre(t5_tok *t, const cJSON *p, const char *file, int depth) {
    if (!p || cJSON_IsNull(p)) return ERR_OK;
    const char *ty = jstr(p, "type");
    FAIL_IF(!ty || depth > 4, ERR_FORMAT, NM ": pre_tokenizer without a type", file);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *v, *list = jget(p, "pretokenizers");
        FAIL_IF(!cJSON_IsArray(list), ERR_FORMAT, NM ": Sequence pre_tokenizer without a list",
                file);
        cJSON_ArrayForEach(v, list) TRY(parse_pre(t, v, file, depth + 1));
        return ERR_OK;
    }
    FAIL_IF(t->n_pre >= T5_MAX_STEPS, ERR_UNSUPPORTED, NM ": over %d pre_tokenizers", file,
            T5_MAX_STEPS);
    t5_pre_step st = {.kind = T5_PRE_WS_SPLIT};
    if (!strcmp(ty, "Metaspace")) {
        /* pre_tokenizers/metaspace.rs: prepend_scheme defaults to "always"; a legacy
         * add_prefix_space false must come with "never" */
        const char *rep = jstr(p, "replacement"), *sch = jstr(p, "prepend_scheme");
        int aps = jbool(p, "add_prefix_space", 2);
        size_t k;
        st.kind = T5_PRE_METASPACE, st.split = jbool(p, "split", 1);
        FAIL_IF(!rep || !*rep || strlen(rep) != t5_u8_len(*rep) ||
                    !t5_tok_utf8_ok(rep, strlen(rep)) || st.split < 0 || aps < 0,
                ERR_FORMAT, NM ": Metaspace needs one replacement character", file);
        memcpy(st.rep, rep, k = strlen(rep));
        st.rep_len = (int)k;
        st.prepend = !sch                     ? T5_PREPEND_ALWAYS
                     : !strcmp(sch, "always") ? T5_PREPEND_ALWAYS
                     : !strcmp(sch, "never")  ? T5_PREPEND_NEVER
                     : !strcmp(sch, "first")  ? T5_PREPEND_FIRST
                                              : -1;
        FAIL_IF(st.prepend < 0 || (aps == 0 && st.prepend != T5_PREPEND_NEVER), ERR_FORMAT,
                NM ": Metaspace prepend_scheme %.20s, add_prefix_space %d", file, sch ? sch : "-",
                aps);
    } else {
        FAIL_IF(strcmp(ty, "WhitespaceSplit"), ERR_UNSUPPORTED,
                NM ": pre_tokenizer %.40s is not supported", file, ty);
    }
    t->pre[t->n_pre++] = st;
    return ERR_OK;
}

/* TemplateProcessing's "single": the special tokens around $A. */
static err parse_post(t5_tok *t, const cJSON *p, const char *file) {
    t->has_post = 1;
    if (!p || cJSON_IsNull(p)) return ERR_OK;
    const char *ty = jstr(p, "type");
    FAIL_IF(!ty || strcmp(ty, "TemplateProcessing"), ERR_UNSUPPORTED,
            NM ": post_processor %.40s is not supported", file, ty ? ty : "without a type");
    const cJSON *it, *single = jget(p, "single"), *specials = jget(p, "special_tokens");
    FAIL_IF(!cJSON_IsArray(single), ERR_FORMAT, NM ": TemplateProcessing without \"single\"", file);
    int seen_a = 0;
    cJSON_ArrayForEach(it, single) {
        const cJSON *sq = jget(it, "Sequence"), *sp = jget(it, "SpecialToken"), *id;
        if (sq) {
            FAIL_IF(seen_a++, ERR_UNSUPPORTED, NM ": template with $A twice", file);
            continue;
        }
        const char *name = jstr(sp, "id");
        const cJSON *ids = jget(jget(specials, name ? name : ""), "ids");
        FAIL_IF(!name || !cJSON_IsArray(ids), ERR_FORMAT, NM ": template special token without ids",
                file);
        cJSON_ArrayForEach(id, ids) {
            int *cnt = seen_a ? &t->n_suffix : &t->n_prefix;
            int32_t *dst = seen_a ? t->suffix : t->prefix;
            FAIL_IF(!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= T5_MAX_IDS ||
                        *cnt >= 4,
                    ERR_FORMAT, NM ": template special token %.40s", file, name);
            dst[(*cnt)++] = (int32_t)id->valuedouble;
        }
    }
    FAIL_IF(!seen_a, ERR_FORMAT, NM ": template without $A", file);
    return ERR_OK;
}

static err json_parse(t5_tok *t, const cJSON *root, const char *file) {
    const cJSON *model = jget(root, "model"), *it;
    const char *ty = jstr(model, "type");
    FAIL_IF(!ty || strcmp(ty, "Unigram"), ERR_UNSUPPORTED,
            NM ": model type %.40s, expected Unigram", file, ty ? ty : "missing");
    FAIL_IF(jbool(model, "byte_fallback", 0), ERR_UNSUPPORTED,
            NM ": byte_fallback is not supported", file);
    const cJSON *unk = jget(model, "unk_id"), *vocab = jget(model, "vocab");
    FAIL_IF(!cJSON_IsNumber(unk) || !cJSON_IsArray(vocab), ERR_FORMAT,
            NM ": Unigram model without unk_id or vocab", file);
    t->unk_id =
        unk->valuedouble >= 0 && unk->valuedouble < T5_MAX_IDS ? (int32_t)unk->valuedouble : -1;
    cJSON_ArrayForEach(it, vocab) {
        const cJSON *s = cJSON_GetArrayItem(it, 0), *sc = cJSON_GetArrayItem(it, 1);
        FAIL_IF(!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsString(s) ||
                    !cJSON_IsNumber(sc),
                ERR_FORMAT, NM ": vocab entry %d is not [piece, score]", file, t->n_pieces);
        TRY(add_piece(t, s->valuestring, strlen(s->valuestring), sc->valuedouble, T5_PIECE_NORMAL,
                      file));
    }
    const cJSON *added = jget(root, "added_tokens");
    FAIL_IF(added && !cJSON_IsArray(added) && !cJSON_IsNull(added), ERR_FORMAT,
            NM ": added_tokens is not a list", file);
    if (!cJSON_IsArray(added)) added = NULL;
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = jget(it, "id");
        const char *s = jstr(it, "content");
        int ls = jbool(it, "lstrip", 0), rs = jbool(it, "rstrip", 0);
        FAIL_IF(!s || !cJSON_IsNumber(id) || ls < 0 || rs < 0, ERR_FORMAT, NM ": added token %d",
                file, t->n_added);
        /* tokens matched after normalization, or only as whole words, are not needed by T5 */
        FAIL_IF(jbool(it, "normalized", 0) || jbool(it, "single_word", 0), ERR_UNSUPPORTED,
                NM ": added token %.40s is normalized or single_word", file, s);
        TRY(add_added(
            t, s, strlen(s),
            id->valuedouble >= 0 && id->valuedouble < T5_MAX_IDS ? (int32_t)id->valuedouble : -1,
            ls, rs, file));
    }
    const cJSON *norm = jget(root, "normalizer");
    if (t->mode == T5_TOK_AS_WRITTEN) {
        TRY(parse_norm(t, norm, file, 0));
        TRY(parse_pre(t, jget(root, "pre_tokenizer"), file, 0));
        return parse_post(t, jget(root, "post_processor"), file);
    }
    /* transformers 5 tokenization_utils_tokenizers.py::convert_to_native_format keeps the first
     * Precompiled charsmap of the normalizer and nothing else of it */
    const cJSON *pc = NULL;
    const char *nty = jstr(norm, "type");
    if (nty && !strcmp(nty, "Sequence")) {
        cJSON_ArrayForEach(it, jget(norm, "normalizers")) {
            if (jstr(it, "type") && !strcmp(jstr(it, "type"), "Precompiled") &&
                jget(it, "precompiled_charsmap")) {
                pc = it;
                break;
            }
        }
    } else if (nty && !strcmp(nty, "Precompiled") && jget(norm, "precompiled_charsmap")) {
        pc = norm;
    }
    if (pc) {
        TRY(b64_charsmap(t, jstr(pc, "precompiled_charsmap"), file));
        t->norm[t->n_norm++] = (t5_norm_step){.kind = T5_NORM_CHARSMAP};
    }
    set_t5_pre(t, 1, T5_PREPEND_ALWAYS);
    return ERR_OK;
}

static err json_load(t5_tok *t, const char *file) {
    fio_map m = {0};
    TRY(fio_map_open(file, &m));
    cJSON *root = m.size ? cJSON_ParseWithLength((const char *)m.data, m.size) : NULL;
    size_t at = root || !m.size ? 0 : (size_t)(cJSON_GetErrorPtr() - (const char *)m.data);
    size_t size = m.size;
    fio_map_close(&m);
    FAIL_IF(!root, ERR_FORMAT, NM ": not JSON (%zu bytes, stops near byte %zu)", file, size, at);
    err e = json_parse(t, root, file);
    cJSON_Delete(root);
    return e;
}

/* ---- spiece.model: sentencepiece_model.proto's ModelProto, read field by field ---- */

typedef struct pb {
    const uint8_t *p, *end;
} pb;

static int pb_varint(pb *r, uint64_t *v) {
    uint64_t x = 0;
    for (int s = 0; s < 70 && r->p < r->end; s += 7) {
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << s;
        if (!(b & 0x80)) return *v = x, 1;
    }
    return 0;
}

/* One field: its number and wire type, the value (varint, fixed32) or the payload (LEN). */
static int pb_field(pb *r, uint32_t *num, int *wt, uint64_t *v, pb *sub) {
    uint64_t key, len;
    if (!pb_varint(r, &key) || key >> 3 == 0 || key >> 3 > 0x1FFFFFFF) return 0;
    *num = (uint32_t)(key >> 3), *wt = (int)(key & 7), *v = 0;
    size_t left = (size_t)(r->end - r->p);
    switch (*wt) {
    case 0: return pb_varint(r, v);
    case 1: return left >= 8 ? (r->p += 8, 1) : 0;
    case 2:
        if (!pb_varint(r, &len) || len > (uint64_t)(r->end - r->p)) return 0;
        sub->p = r->p, sub->end = r->p + len, r->p += len;
        return 1;
    case 5:
        if (left < 4) return 0;
        *v = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 |
             (uint64_t)r->p[3] << 24;
        r->p += 4;
        return 1;
    }
    return 0;
}

#define PB_BAD(at)                                                                                 \
    err_set(ERR_FORMAT, NM ": protobuf cut short or corrupt at byte %zu", file, (size_t)(at))

typedef struct spm_spec {
    int have_trainer, have_norm, model_type, byte_fallback, ws_suffix;
    int64_t vocab_size;
    pb charsmap;
} spm_spec;

static err spm_message(t5_tok *t, pb r, int which, spm_spec *sp, const uint8_t *base,
                       const char *file) {
    const char *piece = NULL;
    size_t plen = 0;
    double score = 0;
    int type = T5_PIECE_NORMAL;
    while (r.p < r.end) {
        uint32_t num;
        int wt;
        uint64_t v;
        pb sub = {0};
        const uint8_t *at = r.p;
        if (!pb_field(&r, &num, &wt, &v, &sub)) return PB_BAD(at - base);
        if (which == 1) { /* SentencePiece: piece, score, type */
            if (num == 1 && wt == 2)
                piece = (const char *)sub.p, plen = (size_t)(sub.end - sub.p);
            else if (num == 2 && wt == 5) {
                float f;
                uint32_t u = (uint32_t)v;
                memcpy(&f, &u, 4);
                score = f;
            } else if (num == 3 && wt == 0)
                type = v >= 1 && v <= 6 ? (int)v : -1;
            else if (num <= 3)
                return PB_BAD(at - base);
        } else if (which == 2) { /* TrainerSpec */
            if (wt == 0 && num == 3)
                sp->model_type = (int)v;
            else if (wt == 0 && num == 4)
                sp->vocab_size = (int64_t)v;
            else if (wt == 0 && num == 24)
                sp->ws_suffix = v != 0;
            else if (wt == 0 && num == 35)
                sp->byte_fallback = v != 0;
        } else { /* NormalizerSpec */
            if (num == 2 && wt == 2)
                sp->charsmap = sub;
            else if (wt == 0 && num == 3)
                t->sp_dummy_prefix = v != 0;
            else if (wt == 0 && num == 4)
                t->sp_remove_ws = v != 0;
            else if (wt == 0 && num == 5)
                t->sp_escape_ws = v != 0;
        }
    }
    if (which != 1) return ERR_OK;
    FAIL_IF(!piece || type < 0, ERR_FORMAT, NM ": piece %d has no text or a bad type", file,
            t->n_pieces);
    FAIL_IF(type == 6 || type == T5_PIECE_USER, ERR_UNSUPPORTED,
            NM ": piece %d: byte and user-defined pieces are not supported", file, t->n_pieces);
    if (type == T5_PIECE_UNKNOWN) {
        FAIL_IF(t->unk_id >= 0, ERR_FORMAT, NM ": pieces %d and %d are both <unk>", file, t->unk_id,
                t->n_pieces);
        t->unk_id = t->n_pieces;
    }
    return add_piece(t, piece, plen, score, type, file);
}

static err spm_parse(t5_tok *t, const uint8_t *d, size_t n, const char *file) {
    pb r = {d, d + n};
    spm_spec sp = {.model_type = 1, .vocab_size = -1};
    t->sp_dummy_prefix = t->sp_remove_ws = t->sp_escape_ws = 1; /* the proto's defaults */
    t->unk_id = -1;
    while (r.p < r.end) {
        uint32_t num;
        int wt;
        uint64_t v;
        pb sub = {0};
        const uint8_t *at = r.p;
        if (!pb_field(&r, &num, &wt, &v, &sub)) return PB_BAD(at - d);
        if (num <= 3 && wt != 2) return PB_BAD(at - d);
        if (num == 2) sp.have_trainer = 1;
        if (num == 3) sp.have_norm = 1;
        if (num >= 1 && num <= 3) TRY(spm_message(t, sub, (int)num, &sp, d, file));
    }
    /* a file cut at a field boundary still parses: the specs, and as many pieces as the trainer
     * asked for, must be there */
    FAIL_IF(!sp.have_trainer || !sp.have_norm, ERR_FORMAT, NM ": no %s (truncated?)", file,
            sp.have_trainer ? "normalizer_spec" : "trainer_spec");
    FAIL_IF(sp.vocab_size >= 0 && sp.vocab_size != t->n_pieces, ERR_FORMAT,
            NM ": %d pieces, trainer_spec says %lld (truncated?)", file, t->n_pieces,
            (long long)sp.vocab_size);
    FAIL_IF(sp.model_type != 1, ERR_UNSUPPORTED, NM ": model type %d is not unigram", file,
            sp.model_type);
    FAIL_IF(sp.byte_fallback || sp.ws_suffix, ERR_UNSUPPORTED,
            NM ": byte_fallback and treat_whitespace_as_suffix are not supported", file);
    FAIL_IF(t->unk_id < 0, ERR_FORMAT, NM ": no <unk> piece", file);
    if (sp.charsmap.end > sp.charsmap.p) {
        TRY(cm_load(&t->cm, sp.charsmap.p, (size_t)(sp.charsmap.end - sp.charsmap.p), file));
        t->has_cm = 1;
        if (t->mode != T5_TOK_SENTENCEPIECE)
            t->norm[t->n_norm++] = (t5_norm_step){.kind = T5_NORM_CHARSMAP};
    }
    if (t->mode == T5_TOK_SENTENCEPIECE) return ERR_OK;
    /* what T5TokenizerFast builds from spiece.model: control and unknown pieces as special added
     * tokens, then <extra_id_99> .. <extra_id_0> appended to the vocabulary */
    int base = t->n_pieces;
    for (int i = 0; i < base; i++)
        if (t->pieces[i].type == T5_PIECE_CONTROL || t->pieces[i].type == T5_PIECE_UNKNOWN)
            TRY(add_added(t, t->pool + t->pieces[i].off, t->pieces[i].len, i, 0, 0, file));
    for (int k = T5_EXTRA_IDS - 1; k >= 0; k--) {
        char s[32];
        snprintf(s, sizeof s, "<extra_id_%d>", k);
        TRY(add_piece(t, s, strlen(s), 0.0, T5_PIECE_CONTROL, file));
        TRY(add_added(t, s, strlen(s), t->n_pieces - 1, 0, 0, file));
    }
    FAIL_IF(t->mode == T5_TOK_AS_WRITTEN && !t->sp_escape_ws, ERR_UNSUPPORTED,
            NM ": escape_whitespaces false is not supported", file);
    if (t->mode == T5_TOK_AS_WRITTEN)
        set_t5_pre(t, t->sp_remove_ws, t->sp_dummy_prefix ? T5_PREPEND_ALWAYS : T5_PREPEND_NEVER);
    else
        set_t5_pre(t, 1, T5_PREPEND_ALWAYS);
    return ERR_OK;
}

static err spm_load(t5_tok *t, const char *file) {
    fio_map m = {0};
    TRY(fio_map_open(file, &m));
    err e = spm_parse(t, m.data ? m.data : (const uint8_t *)"", m.size, file);
    fio_map_close(&m);
    return e;
}

/* ---- API ---- */

void t5_tok_free(t5_tok *t) {
    if (!t) return;
    free(t->pool), free(t->pieces), free(t->added), free(t->cm.units), free(t->cm.norm);
    free(t->tr.keys), free(t->tr.vals), free(t->tr.node_piece);
    free(t);
}

err t5_tok_load_mode(const char *path, t5_tok_mode mode, t5_tok **out) {
    FAIL_IF(!path || !out || mode < T5_TOK_TRANSFORMERS || mode > T5_TOK_SENTENCEPIECE, ERR_ARG,
            "t5_tok_load: bad argument");
    *out = NULL;
    char file[4096], js[4096], sp[4096];
    int json;
    if (fio_is_dir(path)) {
        TRY(fio_join(js, sizeof js, path, "tokenizer.json"));
        TRY(fio_join(sp, sizeof sp, path, "spiece.model"));
        json = mode != T5_TOK_SENTENCEPIECE && fio_exists(js);
        FAIL_IF(!json && !fio_exists(sp), ERR_IO, NM ": holds no %s", path,
                mode == T5_TOK_SENTENCEPIECE ? "spiece.model" : "tokenizer.json or spiece.model");
        snprintf(file, sizeof file, "%s", json ? js : sp);
    } else {
        FAIL_IF(!fio_exists(path), ERR_IO, NM ": no such file or folder", path);
        FAIL_IF(strlen(path) >= sizeof file, ERR_ARG, NM ": path too long", path);
        snprintf(file, sizeof file, "%s", path);
        json = fio_has_suffix(path, ".json");
    }
    FAIL_IF(json && mode == T5_TOK_SENTENCEPIECE, ERR_ARG,
            NM ": the sentencepiece mode reads spiece.model, not tokenizer.json", file);
    t5_tok *t = calloc(1, sizeof *t);
    FAIL_IF(!t, ERR_NOMEM, "t5_tok_load: %zu bytes", sizeof *t);
    t->mode = mode;
    err e = json ? json_load(t, file) : spm_load(t, file);
    if (!e) e = finish(t, file);
    if (e) {
        t5_tok_free(t);
        return e;
    }
    LOG_DEBUG("t5 tokenizer %s: %d pieces, %d added tokens, %d ids", file, t->n_pieces, t->n_added,
              t->n_ids);
    *out = t;
    return ERR_OK;
}

err t5_tok_load(const char *path, t5_tok **out) {
    return t5_tok_load_mode(path, T5_TOK_TRANSFORMERS, out);
}
