/* t5_tokenizer: T5's SentencePiece unigram tokenizer after three references. transformers 5
 * models/t5/tokenization_t5.py::T5Tokenizer (T5TokenizerFast) rebuilds the pipeline from the
 * class; the tokenizers library runs tokenizer.json as written (normalizers/precompiled.rs,
 * pre_tokenizers/metaspace.rs, models/unigram/model.rs::encode_optimized, added_vocabulary.rs);
 * sentencepiece runs normalizer.cc::Normalize then unigram_model.cc::EncodeOptimized. One
 * pipeline serves all three: added tokens, normalizer steps, pre-tokenizer steps, Viterbi.
 * Loading is in t5_tokenizer_load.c. */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "text_encoder/t5_tokenizer_internal.h"
#include "text_encoder/t5_tokenizer_tables.h"
#include "text_encoder/unicode.h"

#define T5_UNK_PENALTY 10.0 /* sentencepiece kUnkPenalty, tokenizers K_UNK_PENALTY */

/* ---- growable buffers: an allocation failure sets oom and later appends do nothing ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

typedef struct ivec {
    int32_t *p;
    size_t len, cap;
    int oom;
} ivec;

int t5_tok_grow(void **p, size_t *cap, size_t need, size_t elem, int *oom) {
    if (need <= *cap) return 1;
    if (*oom) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return !(*oom = 1);
    *p = q;
    *cap = c;
    return 1;
}

static void sb_put(sbuf *b, const void *s, size_t n) {
    if (!t5_tok_grow((void **)&b->p, &b->cap, b->len + n + 1, 1, &b->oom)) return;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void iv_push(ivec *v, int32_t x) {
    if (t5_tok_grow((void **)&v->p, &v->cap, v->len + 1, sizeof *v->p, &v->oom)) v->p[v->len++] = x;
}

/* ---- UTF-8 (unicode.c decodes; everything past the input's decoding is well-formed) ---- */

/* Input as UTF-8 with each maximal ill-formed subpart replaced by U+FFFD, as unicode.c decodes. */
static void u8_sanitize(const char *s, size_t n, sbuf *o) {
    uint32_t *cp = malloc((n ? n : 1) * sizeof *cp);
    if (!cp) return (void)(o->oom = 1);
    size_t m = unicode_utf8_decode(s, n, cp);
    char b[4];
    for (size_t i = 0; i < m; i++)
        sb_put(o, b, (size_t)unicode_utf8_encode(cp[i], b));
    free(cp);
}

int t5_tok_utf8_ok(const char *s, size_t n) {
    uint32_t cp[4];
    char b[4];
    for (size_t i = 0, k; i < n; i += k) { /* each character re-encodes to its own bytes */
        unicode_utf8_decode(s + i, n - i < 4 ? n - i : 4, cp);
        k = (size_t)unicode_utf8_encode(cp[0], b);
        if (k > n - i || memcmp(s + i, b, k)) return 0;
    }
    return 1;
}

/* Decodes the well-formed sequence at s (everything past load or u8_sanitize is well-formed). */
static uint32_t u8_dec(const char *p, size_t *len) {
    const uint8_t *s = (const uint8_t *)p;
    if (s[0] < 0x80) return *len = 1, s[0];
    if (s[0] < 0xE0) return *len = 2, (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    if (s[0] < 0xF0)
        return *len = 3, (uint32_t)(s[0] & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    *len = 4;
    return (uint32_t)(s[0] & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

/* ---- extended grapheme clusters (UAX #29), as far as the Precompiled normalizer needs ---- */

enum { G_CONTROL, G_EXTEND, G_PREPEND, G_OTHER, G_CR, G_LF, G_L, G_V, G_T, G_LV, G_LVT };

static int gcb_class(uint32_t c) {
    if (c < 0x80)
        return c == 13 ? G_CR : c == 10 ? G_LF : (c < 32 || c == 127) ? G_CONTROL : G_OTHER;
    if (c >= 0xAC00 && c <= 0xD7A3) return (c - 0xAC00) % 28 ? G_LVT : G_LV;
    if ((c >= 0x1100 && c <= 0x115F) || (c >= 0xA960 && c <= 0xA97C)) return G_L;
    if ((c >= 0x1160 && c <= 0x11A7) || (c >= 0xD7B0 && c <= 0xD7C6)) return G_V;
    if ((c >= 0x11A8 && c <= 0x11FF) || (c >= 0xD7CB && c <= 0xD7FB)) return G_T;
    size_t lo = 0, hi = sizeof t5_gcb_table / sizeof *t5_gcb_table;
    while (lo < hi) { /* the last range starting at or below c */
        size_t mid = (lo + hi) / 2;
        if ((t5_gcb_table[mid] >> 11) <= c)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo) return G_OTHER;
    uint32_t w = t5_gcb_table[lo - 1];
    return c <= (w >> 11) + ((w >> 2) & 511) ? (int)(w & 3) : G_OTHER;
}

/* Whether no cluster boundary falls between classes a and b (GB3-GB9b). GB9c (Indic conjuncts),
 * GB11 (emoji ZWJ sequences) and GB12/13 (flag pairs) are left out: the clusters they join are
 * 6 bytes or longer, which the normalizer takes character by character anyway. Splitting them
 * leaves one cluster under 6 bytes, U+00A9 or U+00AE then U+200D, which a charsmap mapping
 * those two (nmt_nfkc does not) would treat differently. */
static int gcb_joins(int a, int b) {
    if (a == G_CR && b == G_LF) return 1;
    if (a == G_CONTROL || a == G_CR || a == G_LF || b == G_CONTROL || b == G_CR || b == G_LF)
        return 0;
    if (a == G_L && (b == G_L || b == G_V || b == G_LV || b == G_LVT)) return 1;
    if ((a == G_LV || a == G_V) && (b == G_V || b == G_T)) return 1;
    if ((a == G_LVT || a == G_T) && b == G_T) return 1;
    return b == G_EXTEND || a == G_PREPEND;
}

static size_t grapheme_len(const char *s, size_t n) {
    size_t i, k;
    int prev = gcb_class(u8_dec(s, &i));
    while (i < n) {
        int c = gcb_class(u8_dec(s + i, &k));
        if (!gcb_joins(prev, c)) break;
        prev = c;
        i += k;
    }
    return i;
}

/* ---- the charsmap ---- */

/* The shortest (tokenizers' spm_precompiled::transform takes results[0]) or the longest
 * (sentencepiece's NormalizePrefix) key that prefixes s[0..n); 0 if none. */
static int cm_match(const t5_charsmap *cm, const char *s, size_t n, int longest, size_t *mlen,
                    const char **rep, size_t *rep_len) {
    const uint32_t *u = cm->units;
    size_t pos = (u[0] >> 10) << ((u[0] & (1u << 9)) >> 6);
    int found = 0;
    uint32_t value = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (!c || (pos ^= c) >= cm->n_units) break;
        uint32_t unit = u[pos];
        if ((unit & ((1u << 31) | 0xFF)) != c) break;
        pos ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);
        if (pos >= cm->n_units) break;
        if ((unit >> 8) & 1) {
            found = 1;
            *mlen = i + 1;
            value = u[pos] & 0x7FFFFFFFu;
            if (!longest) break;
        }
    }
    if (!found) return 0;
    *rep = cm->norm + value; /* checked at load: inside norm, on a character boundary */
    *rep_len = strlen(*rep);
    return 1;
}

/* ---- normalizers ---- */

/* tokenizers normalizers/precompiled.rs: a grapheme cluster under 6 bytes is replaced whole by
 * the mapping of its shortest matching prefix (whatever follows the prefix is dropped); longer
 * clusters, and clusters with no match, character by character. */
static void norm_charsmap(const t5_charsmap *cm, const char *s, size_t n, sbuf *o) {
    size_t ml, rl;
    const char *r;
    for (size_t i = 0, g; i < n; i += g) {
        g = grapheme_len(s + i, n - i);
        if (g < 6 && cm_match(cm, s + i, g, 0, &ml, &r, &rl)) {
            sb_put(o, r, rl);
            continue;
        }
        for (size_t j = i, k; j < i + g; j += k) {
            k = t5_u8_len(s[j]);
            if (cm_match(cm, s + j, k, 0, &ml, &r, &rl))
                sb_put(o, r, rl);
            else
                sb_put(o, s + j, k);
        }
    }
}

/* tokenizers Replace with a regex "c{min,max}" (or "c+"): leftmost greedy matches within runs
 * of the character. */
static void norm_replace_run(const t5_tok *t, const t5_norm_step *st, const char *s, size_t n,
                             sbuf *o) {
    const char *pat = t->pool + st->pat_off;
    size_t pl = st->pat_len;
    for (size_t i = 0; i < n;) {
        size_t run = 0;
        while (i + (run + 1) * pl <= n && !memcmp(s + i + run * pl, pat, pl))
            run++;
        if (!run) {
            size_t k = t5_u8_len(s[i]);
            sb_put(o, s + i, k);
            i += k;
            continue;
        }
        while (run) {
            size_t take = st->max_run >= 0 && run > (size_t)st->max_run ? (size_t)st->max_run : run;
            if (take < (size_t)st->min_run) {
                sb_put(o, s + i, run * pl);
                i += run * pl;
                break;
            }
            sb_put(o, t->pool + st->rep_off, st->rep_len);
            i += take * pl;
            run -= take;
        }
    }
}

static void norm_apply(const t5_tok *t, const t5_norm_step *st, const char *s, size_t n, sbuf *o) {
    const char *pat = t->pool + st->pat_off;
    size_t a = 0, b = n, k;
    switch (st->kind) {
    case T5_NORM_CHARSMAP: norm_charsmap(&t->cm, s, n, o); return;
    case T5_NORM_REPLACE_RUN: norm_replace_run(t, st, s, n, o); return;
    case T5_NORM_REPLACE: /* non-overlapping, left to right */
        for (size_t i = 0; i < n;) {
            if (i + st->pat_len <= n && !memcmp(s + i, pat, st->pat_len)) {
                sb_put(o, t->pool + st->rep_off, st->rep_len);
                i += st->pat_len;
            } else {
                sb_put(o, s + i, k = t5_u8_len(s[i]));
                i += k;
            }
        }
        return;
    case T5_NORM_STRIP:
        while (st->left && a < b && unicode_is_space(u8_dec(s + a, &k)))
            a += k;
        while (st->right && a < b) { /* back to the last character's first byte */
            size_t j = b - 1;
            while (j > a && ((uint8_t)s[j] & 0xC0) == 0x80)
                j--;
            if (!unicode_is_space(u8_dec(s + j, &k))) break;
            b = j;
        }
        sb_put(o, s + a, b - a);
        return;
    case T5_NORM_PREPEND:
        if (n) sb_put(o, t->pool + st->rep_off, st->rep_len);
        sb_put(o, s, n);
        return;
    }
}

/* sentencepiece normalizer.cc::NormalizePrefix (no user-defined pieces: refused at load): the
 * longest charsmap key, else one character. */
static size_t sp_prefix(const t5_tok *t, const char *s, size_t n, const char **r, size_t *rl) {
    size_t ml = 0;
    if (t->has_cm && cm_match(&t->cm, s, n, 1, &ml, r, rl)) return ml;
    *r = s;
    return *rl = t5_u8_len(s[0]);
}

/* sentencepiece normalizer.cc::Normalize: leading, repeated and trailing spaces removed, the
 * dummy prefix added, spaces escaped to U+2581, as the NormalizerSpec flags say. */
static void sp_normalize(const t5_tok *t, const char *s, size_t n, sbuf *o) {
    const char *ws = t->sp_escape_ws ? "\xE2\x96\x81" : " ", *r;
    size_t wl = strlen(ws), rl, i = 0, c;
    while (t->sp_remove_ws && i < n && (c = sp_prefix(t, s + i, n - i, &r, &rl)) && rl == 1 &&
           *r == ' ')
        i += c;
    if (i == n) return;
    if (t->sp_dummy_prefix) sb_put(o, ws, wl);
    int prev_space = t->sp_remove_ws;
    for (; i < n; i += c) {
        c = sp_prefix(t, s + i, n - i, &r, &rl);
        while (prev_space && rl && *r == ' ')
            r++, rl--;
        if (rl) {
            for (size_t j = 0; j < rl; j++) {
                if (r[j] == ' ' && t->sp_escape_ws)
                    sb_put(o, ws, wl);
                else
                    sb_put(o, r + j, 1);
            }
            prev_space = r[rl - 1] == ' ';
        }
        if (!t->sp_remove_ws) prev_space = 0;
    }
    while (t->sp_remove_ws && !o->oom && o->len >= wl && !memcmp(o->p + o->len - wl, ws, wl))
        o->len -= wl;
}

/* ---- unigram Viterbi ---- */

typedef struct work {
    sbuf a, b, in;
    ivec cut, cut2, path;
    int origin; /* the first piece still starts at the input's first byte */
    double *best;
    int32_t *from, *pid;
    size_t cap;
    int oom;
} work;

/* unigram_model.cc::EncodeOptimized and model.rs::encode_optimized alike: at each character, every
 * piece that starts there (shortest first; a candidate replaces the best only if strictly better),
 * then <unk> for the character if no piece is that character alone. sentencepiece adds in float
 * and matches only normal pieces; tokenizers adds in double and matches every vocabulary entry.
 * Runs of <unk> are fused; tokenizers then looks the fused text up again. */
static void viterbi(const t5_tok *t, const char *s, size_t n, work *w, ivec *out) {
    int sp = t->mode == T5_TOK_SENTENCEPIECE;
    if (!t5_tok_grow((void **)&w->best, &w->cap, n + 1, sizeof(double) + 8, &w->oom)) return;
    w->from = (int32_t *)(w->best + w->cap);
    w->pid = w->from + w->cap;
    for (size_t i = 0; i <= n; i++)
        w->from[i] = -1;
    w->best[0] = 0;
    double unk_score = t->min_score - T5_UNK_PENALTY;
    for (size_t at = 0, mb; at < n; at += mb) {
        double base = w->best[at];
        int single = 0;
        mb = t5_u8_len(s[at]);
        int32_t node = 0;
        for (size_t k = at; k < n && (node = t5_tr_child(&t->tr, node, (uint8_t)s[k])) >= 0; k++) {
            int32_t p = t->tr.node_piece[node];
            if (p < 0) continue;
            if (sp && t->pieces[p].type != T5_PIECE_NORMAL) continue;
            double sc = t->pieces[p].score;
            double cand = sp ? (double)(float)(sc + (float)base) : sc + base;
            if (w->from[k + 1] < 0 || cand > w->best[k + 1])
                w->best[k + 1] = cand, w->from[k + 1] = (int32_t)at, w->pid[k + 1] = p;
            if (k + 1 - at == mb) single = 1;
        }
        if (!single) {
            size_t e = at + mb > n ? n : at + mb;
            double cand = sp ? (double)(float)((float)unk_score + (float)base) : unk_score + base;
            if (w->from[e] < 0 || cand > w->best[e])
                w->best[e] = cand, w->from[e] = (int32_t)at, w->pid[e] = t->unk_id;
        }
    }
    w->path.len = 0;
    for (size_t e = n; e > 0; e = (size_t)w->from[e]) {
        CHECK(w->from[e] >= 0); /* every character start is reached: by a piece or by <unk> */
        iv_push(&w->path, (int32_t)e);
    }
    if (w->path.oom) return;
    size_t start = 0, m = w->path.len;
    for (size_t i = m; i-- > 0;) {
        size_t e = (size_t)w->path.p[i];
        int32_t id = w->pid[e];
        if (id == t->unk_id) { /* fuse the run of <unk> that starts here */
            while (i > 0 && w->pid[w->path.p[i - 1]] == t->unk_id)
                e = (size_t)w->path.p[--i];
            int32_t p = sp ? -1 : t5_tr_find(&t->tr, s + start, e - start);
            if (p >= 0) id = p;
        }
        iv_push(out, id);
        start = e;
    }
}

/* ---- pre-tokenizers: the pieces of w->a are cut at the offsets in w->cut ---- */

static void pre_apply(const t5_pre_step *st, work *w) {
    sbuf *src = &w->a, *dst = &w->b;
    dst->len = 0;
    w->cut2.len = 0;
    for (size_t c = 0; c < w->cut.len; c++) {
        size_t b = (size_t)w->cut.p[c], e = c + 1 < w->cut.len ? (size_t)w->cut.p[c + 1] : src->len,
               k;
        const char *s = src->p;
        if (st->kind == T5_PRE_WS_SPLIT) { /* split on whitespace, dropping it */
            int open = 0;
            for (size_t i = b; i < e; i += k) {
                if (unicode_is_space(u8_dec(s + i, &k)))
                    open = 0, w->origin &= c > 0 || dst->len > 0;
                else {
                    if (!open) iv_push(&w->cut2, (int32_t)dst->len), open = 1;
                    sb_put(dst, s + i, k);
                }
            }
            continue;
        }
        /* Metaspace: spaces to the replacement, prepended as the scheme says, then split before
         * each replacement. "first": the first piece, when it starts at the input's first byte
         * (tokenizers' offsets_original().0 == 0) */
        size_t start = dst->len;
        int starts_rep = (e > b && s[b] == ' ') || ((size_t)st->rep_len <= e - b &&
                                                    !memcmp(s + b, st->rep, (size_t)st->rep_len));
        int prep = st->prepend == T5_PREPEND_ALWAYS ||
                   (st->prepend == T5_PREPEND_FIRST && w->origin && c == 0);
        if (e > b && prep && !starts_rep) sb_put(dst, st->rep, (size_t)st->rep_len);
        for (size_t i = b; i < e; i += k) {
            k = t5_u8_len(s[i]);
            if (s[i] == ' ')
                sb_put(dst, st->rep, (size_t)st->rep_len);
            else
                sb_put(dst, s + i, k);
        }
        if (dst->oom) return;
        if (dst->len > start) iv_push(&w->cut2, (int32_t)start);
        for (size_t i = start + 1; st->split && i + (size_t)st->rep_len <= dst->len; i++)
            if (!memcmp(dst->p + i, st->rep, (size_t)st->rep_len)) iv_push(&w->cut2, (int32_t)i);
    }
    sbuf ts = *src;
    *src = *dst;
    *dst = ts;
    ivec tv = w->cut;
    w->cut = w->cut2;
    w->cut2 = tv;
}

/* One stretch of text between added tokens: normalizers, pre-tokenizers, Viterbi per piece. */
static void hf_segment(const t5_tok *t, const char *s, size_t n, int first_seg, work *w,
                       ivec *out) {
    w->a.len = 0;
    sb_put(&w->a, s, n);
    for (int i = 0; i < t->n_norm; i++) {
        w->b.len = 0;
        norm_apply(t, &t->norm[i], w->a.p, w->a.len, &w->b);
        sbuf ts = w->a;
        w->a = w->b;
        w->b = ts;
    }
    w->cut.len = 0;
    w->origin = first_seg;
    if (w->a.len) iv_push(&w->cut, 0);
    for (int i = 0; i < t->n_pre && !w->a.oom && !w->b.oom; i++)
        pre_apply(&t->pre[i], w);
    if (w->a.oom || w->b.oom || w->cut.oom || w->cut2.oom) return (void)(w->oom = 1);
    for (size_t c = 0; c < w->cut.len; c++) {
        size_t b = (size_t)w->cut.p[c], e = c + 1 < w->cut.len ? (size_t)w->cut.p[c + 1] : w->a.len;
        viterbi(t, w->a.p + b, e - b, w, out);
    }
}

/* added_vocabulary.rs: added tokens are cut out of the raw text first, leftmost then longest,
 * with the whitespace beside them when they say lstrip/rstrip. */
static void hf_encode(const t5_tok *t, const char *s, size_t n, work *w, ivec *out) {
    size_t seg = 0, k;
    for (size_t i = 0; i < n;) {
        int best = -1;
        uint32_t blen = 0;
        for (int a = 0; t->added_first[(uint8_t)s[i]] && a < t->n_added; a++) {
            const t5_added *ad = &t->added[a];
            if (ad->len > blen && ad->len <= n - i && !memcmp(s + i, t->pool + ad->off, ad->len))
                best = a, blen = ad->len;
        }
        if (best < 0) {
            i++;
            continue;
        }
        size_t ms = i, me = i + blen;
        while (t->added[best].lstrip && ms > seg) {
            size_t j = ms - 1;
            while (j > seg && ((uint8_t)s[j] & 0xC0) == 0x80)
                j--;
            if (!unicode_is_space(u8_dec(s + j, &k))) break;
            ms = j;
        }
        while (t->added[best].rstrip && me < n && unicode_is_space(u8_dec(s + me, &k)))
            me += k;
        hf_segment(t, s + seg, ms - seg, seg == 0, w, out);
        iv_push(out, t->added[best].id);
        seg = i = me;
    }
    hf_segment(t, s + seg, n - seg, seg == 0, w, out);
}

err t5_tok_encode_bytes(const t5_tok *t, const void *text, size_t len, int max_len, int32_t *ids,
                        int *n_content) {
    FAIL_IF(!t || (!text && len) || !ids, ERR_ARG, "t5_tok_encode: NULL argument");
    /* normalization can grow text about 18-fold; offsets are int32 */
    FAIL_IF(len > (1u << 26), ERR_ARG, "t5_tok_encode: %zu bytes of text (at most 64 MiB)", len);
    FAIL_IF(max_len < t->n_prefix + t->n_suffix || max_len > T5_MAX_IDS, ERR_ARG,
            "t5_tok_encode: max_len %d (the special tokens alone take %d)", max_len,
            t->n_prefix + t->n_suffix);
    work w = {0};
    ivec out = {0};
    u8_sanitize(text, len, &w.in);
    if (!w.in.oom) {
        if (t->mode == T5_TOK_SENTENCEPIECE) {
            sp_normalize(t, w.in.p ? w.in.p : "", w.in.len, &w.a);
            if (!w.a.oom) viterbi(t, w.a.p, w.a.len, &w, &out);
        } else {
            hf_encode(t, w.in.p ? w.in.p : "", w.in.len, &w, &out);
        }
    }
    int oom = w.oom || w.in.oom || w.a.oom || w.path.oom || out.oom;
    free(w.a.p), free(w.b.p), free(w.in.p), free(w.cut.p), free(w.cut2.p), free(w.path.p),
        free(w.best);
    if (oom) {
        free(out.p);
        FAIL(ERR_NOMEM, "t5_tok_encode: %zu bytes of text", len);
    }
    size_t room = (size_t)(max_len - t->n_prefix - t->n_suffix),
           keep = out.len < room ? out.len : room;
    int at = 0;
    for (int i = 0; i < t->n_prefix; i++)
        ids[at++] = t->prefix[i];
    for (size_t i = 0; i < keep; i++)
        ids[at++] = out.p[i];
    for (int i = 0; i < t->n_suffix; i++)
        ids[at++] = t->suffix[i];
    while (at < max_len)
        ids[at++] = t->pad_id;
    if (n_content) *n_content = out.len > (size_t)INT32_MAX ? INT32_MAX : (int)out.len;
    free(out.p);
    return ERR_OK;
}

err t5_tok_encode(const t5_tok *t, const char *utf8, int max_len, int32_t *ids, int *n_content) {
    return t5_tok_encode_bytes(t, utf8, utf8 ? strlen(utf8) : 0, max_len, ids, n_content);
}

int t5_tok_vocab_size(const t5_tok *t) { return t ? t->n_ids : 0; }
