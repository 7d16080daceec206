/* t5_tokenizer_internal: the tokenizer's data, shared by t5_tokenizer.c (encoding) and
 * t5_tokenizer_load.c (tokenizer.json and spiece.model); nothing else includes it. */
#ifndef TEXT_ENCODER_T5_TOKENIZER_INTERNAL_H
#define TEXT_ENCODER_T5_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "text_encoder/t5_tokenizer.h"

#define T5_MAX_IDS (1 << 24)
#define T5_MAX_STEPS 16

enum {
    T5_PIECE_NORMAL = 1,
    T5_PIECE_UNKNOWN = 2,
    T5_PIECE_CONTROL = 3,
    T5_PIECE_USER = 4,
    T5_PIECE_UNUSED = 5
};
enum { T5_NORM_CHARSMAP, T5_NORM_REPLACE, T5_NORM_REPLACE_RUN, T5_NORM_STRIP, T5_NORM_PREPEND };
enum { T5_PRE_WS_SPLIT, T5_PRE_METASPACE };
enum { T5_PREPEND_NEVER, T5_PREPEND_ALWAYS, T5_PREPEND_FIRST };

typedef struct t5_piece {
    uint32_t off, len; /* in the pool */
    double score;
    int type;
} t5_piece;

typedef struct t5_added {
    uint32_t off, len;
    int32_t id;
    int lstrip, rstrip;
} t5_added;

typedef struct t5_norm_step {
    int kind;
    uint32_t pat_off, pat_len; /* REPLACE: the literal; REPLACE_RUN: the repeated character */
    uint32_t rep_off, rep_len; /* REPLACE*: the replacement; PREPEND: the prefix */
    int min_run, max_run;      /* REPLACE_RUN: {min,max}, max -1 for no bound */
    int left, right;           /* STRIP */
} t5_norm_step;

typedef struct t5_pre_step {
    int kind, prepend, split;
    char rep[5];
    int rep_len;
} t5_pre_step;

/* sentencepiece's precompiled charsmap: a darts-clone double array over UTF-8 bytes whose leaf
 * values index NUL-terminated replacements in norm. */
typedef struct t5_charsmap {
    uint32_t *units;
    size_t n_units;
    char *norm;
    size_t norm_len;
} t5_charsmap;

/* The pieces' byte trie: an open-addressing table (node << 8 | byte) + 1 -> child node. */
typedef struct t5_trie {
    uint32_t *keys;
    int32_t *vals, *node_piece;
    uint32_t cap;
    int32_t n_nodes;
} t5_trie;

struct t5_tok {
    t5_tok_mode mode;
    char *pool;
    size_t pool_len, pool_cap;
    t5_piece *pieces;
    int n_pieces, n_ids;
    size_t pieces_cap, added_cap;
    t5_trie tr;
    double min_score; /* over the pieces Viterbi may pick */
    int32_t unk_id, pad_id;
    int has_cm;
    t5_charsmap cm;
    t5_norm_step norm[T5_MAX_STEPS];
    int n_norm;
    t5_pre_step pre[T5_MAX_STEPS];
    int n_pre;
    t5_added *added;
    int n_added;
    int32_t prefix[4], suffix[4];
    int n_prefix, n_suffix, has_post; /* has_post: the specials come from the file's template */
    int sp_dummy_prefix, sp_remove_ws, sp_escape_ws;
    uint8_t added_first[256]; /* which bytes start an added token */
};

/* Grows *p (elements of elem bytes) to hold need; on failure sets *oom and returns 0. */
int t5_tok_grow(void **p, size_t *cap, size_t need, size_t elem, int *oom);
/* Whether s[0..n) is well-formed UTF-8. */
int t5_tok_utf8_ok(const char *s, size_t n);

/* The length of the UTF-8 sequence that starts with c (the text is well-formed by then). */
static inline size_t t5_u8_len(char c) {
    uint8_t b = (uint8_t)c;
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

static inline uint32_t t5_tr_slot(const t5_trie *tr, uint32_t key) {
    uint32_t h = key * 0x9E3779B1u;
    return (h ^ (h >> 15)) & (tr->cap - 1);
}

/* The child of node along byte b, or -1. */
static inline int32_t t5_tr_child(const t5_trie *tr, int32_t node, uint8_t b) {
    uint32_t key = ((uint32_t)node << 8 | b) + 1;
    for (uint32_t i = t5_tr_slot(tr, key);; i = (i + 1) & (tr->cap - 1)) {
        if (tr->keys[i] == key) return tr->vals[i];
        if (!tr->keys[i]) return -1;
    }
}

/* The piece spelled s[0..n) exactly, or -1. */
static inline int32_t t5_tr_find(const t5_trie *tr, const char *s, size_t n) {
    int32_t node = 0;
    for (size_t i = 0; i < n && node >= 0; i++)
        node = t5_tr_child(tr, node, (uint8_t)s[i]);
    return node >= 0 ? tr->node_piece[node] : -1;
}

#endif
