/* clip_tokenizer: CLIP's byte-level BPE, giving the ids transformers' CLIPTokenizer (the HF
 * tokenizers backend) gives with padding="max_length", truncation=True, as the diffusers
 * pipelines call it. Spec: docs/MODEL-SPEC.md §5.1. Unicode data: text_encoder/unicode.h.
 * The handle is immutable after load: one may serve several threads. */
#ifndef TEXT_ENCODER_CLIP_TOKENIZER_H
#define TEXT_ENCODER_CLIP_TOKENIZER_H

#include <stdint.h>

#include "core/err.h"

typedef struct clip_tok clip_tok;

/* Loads from a folder holding tokenizer.json (preferred, as transformers) or vocab.json +
 * merges.txt, each with special_tokens_map.json / tokenizer_config.json for the special and
 * added tokens (the pad token), or from a tokenizer.json path (those files looked for beside). */
err clip_tok_load(const char *path, clip_tok **out);
/* The same, then pad made the padding token as a special_tokens_map.json "pad_token": pad
 * would make it (a plain special token): SD3's tokenizer_2 is CLIP-L's files with pad "!". */
err clip_tok_load_pad(const char *path, const char *pad, clip_tok **out);
void clip_tok_free(clip_tok *t); /* accepts NULL */

/* ids[max_len] = <|startoftext|>, the first max_len-2 content ids, <|endoftext|>, then pad ids.
 * utf8 may hold invalid UTF-8: each bad sequence reads as U+FFFD (Python's
 * decode('utf-8', 'replace')). *n_content gets the untruncated content length, may be NULL. */
err clip_tok_encode(const clip_tok *t, const char *utf8, int max_len, int32_t *ids, int *n_content);

/* The pad id: 49407 (<|endoftext|>) for CLIP-L, 0 ("!") for SD3's tokenizer_2. */
int32_t clip_tok_pad_id(const clip_tok *t);
/* The <|startoftext|> and <|endoftext|> ids (49406, 49407 for CLIP). */
int32_t clip_tok_bos_id(const clip_tok *t);
int32_t clip_tok_eos_id(const clip_tok *t);

#endif
