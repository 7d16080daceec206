/* t5_tokenizer: T5's SentencePiece unigram tokenizer (FLUX tokenizer_2, SD3.5 tokenizer_3), id for
 * id as transformers' T5TokenizerFast, the tokenizers library or sentencepiece tokenize.
 * Spec: docs/MODEL-SPEC.md §5.2; the inputs on which those three disagree, and why, are listed in
 * tests/fixtures/tokenizers/t5_ids.json (made by tests/fixtures/make_t5_tokenizer.py). */
#ifndef TEXT_ENCODER_T5_TOKENIZER_H
#define TEXT_ENCODER_T5_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct t5_tok t5_tok;

/* Whose tokenization to reproduce. */
typedef enum t5_tok_mode {
    /* transformers 5's T5TokenizerFast, what the diffusers pipelines run: the file's vocabulary,
     * charsmap and added tokens, with the class's own WhitespaceSplit + Metaspace and "$A </s>"
     * (it ignores the rest of tokenizer.json's normalizer and pre_tokenizer) */
    T5_TOK_TRANSFORMERS = 0,
    /* tokenizer.json's normalizer, pre_tokenizer and post_processor as written, as the tokenizers
     * library (and transformers 4) runs them; for spiece.model, its NormalizerSpec flags */
    T5_TOK_AS_WRITTEN,
    /* sentencepiece's SentencePieceProcessor.encode (spiece.model; no added tokens), then </s> */
    T5_TOK_SENTENCEPIECE,
} t5_tok_mode;

/* Loads from tokenizer.json (preferred) or spiece.model, given a folder holding them or a file
 * path: t5_tok_load_mode(path, T5_TOK_TRANSFORMERS, out). */
err t5_tok_load(const char *path, t5_tok **out);
/* The same for a mode; T5_TOK_SENTENCEPIECE reads spiece.model (the folder's, or the file). */
err t5_tok_load_mode(const char *path, t5_tok_mode mode, t5_tok **out);
void t5_tok_free(t5_tok *t); /* accepts NULL */

/* ids[max_len]: the pieces' ids truncated to max_len-1, then </s> (1), then <pad> (0) up to
 * max_len (padding="max_length", truncation=True, add_special_tokens=True). *n_content gets the
 * untruncated piece count, may be NULL. Invalid UTF-8: each maximal ill-formed subsequence is
 * read as U+FFFD, as Python's bytes.decode("utf-8", "replace") does. */
err t5_tok_encode(const t5_tok *t, const char *utf8, int max_len, int32_t *ids, int *n_content);
/* The same for len bytes of text, which may hold NULs. */
err t5_tok_encode_bytes(const t5_tok *t, const void *text, size_t len, int max_len, int32_t *ids,
                        int *n_content);
/* Largest id the tokenizer can produce, plus one (32100 for T5 v1.1; its embedding has 32128). */
int t5_tok_vocab_size(const t5_tok *t);

#endif
