/* clip: the CLIP text transformer (CLIP-L, CLIP-G), with its optional text_projection.
 * Spec: docs/MODEL-SPEC.md §4.1 (structure, names), §4.3 (what FLUX and SD3 take from it). Weights
 * come from a wt_source (plain or DF11) and stay resident; the model owns its activation
 * buffers; outputs are the caller's tensors. */
#ifndef TEXT_ENCODER_CLIP_H
#define TEXT_ENCODER_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/ops.h"
#include "weights/weights.h"

#define CLIP_EOS_ID 49407

typedef struct clip_model clip_model;

/* Loads the text model whose tensors carry HF names (text_model.embeddings..., ...,
 * text_projection.weight optional; or a bare CLIPTextModel as transformers 5 saves it, without
 * "text_model.") behind a prefix found in the file ("", "cond_stage_model.transformer.",
 * "text_encoders.clip_l.transformer.", ...). Config from config.json (a CLIPTextConfig or a
 * CLIPConfig's text_config) or, without one, from the shapes: head dim 64, quick_gelu except
 * 1280 wide (OpenCLIP bigG: gelu), eps 1e-5. src is borrowed; its name prefix is reset to "". */
err clip_load(wt_source *src, op_ctx *ctx, clip_model **out);
/* The same with the prefix given (the one before "text_model."; NULL: found as clip_load does),
 * for files that hold two CLIPs (SD3.5 single files). */
err clip_load_prefix(wt_source *src, op_ctx *ctx, const char *prefix, clip_model **out);
int64_t clip_hidden_size(const clip_model *m);
/* Width of the projected pooled output, 0 when the model has no text_projection. */
int64_t clip_projection_size(const clip_model *m);
/* Positions the model takes (77). */
int clip_max_length(const clip_model *m);
/* One prompt of n ids (n <= clip_max_length): pooled [1,D] (final-LN hidden at the first EOS,
 * or projected [1,P] when project and the model has a projection), and, unless NULL, the
 * penultimate hidden states [1,n,D] (hidden_states[-2], not final-normed) and the last hidden
 * state [1,n,D] (final-normed). Outputs live on the ctx's device in its activation dtype. */
void clip_encode(clip_model *m, const int32_t *ids, int n, int project, tensor pooled,
                 const tensor *penultimate, const tensor *last);
/* Device bytes held: weights and activation buffers (0 on the CPU). */
size_t clip_device_bytes(const clip_model *m);
void clip_free(clip_model *m); /* accepts NULL */

#endif
