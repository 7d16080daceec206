/* t5: the T5 v1.1 encoder (T5EncoderModel; T5-XXL for FLUX and SD3), gated-GELU FFN, RMS norms,
 * relative position bias. Spec: docs/MODEL-SPEC.md §4.2 (structure, bias buckets, names), §4.3.
 * Weights come from a wt_source (plain or DF11) and stay resident; the model owns its
 * activation buffers and the bias table; the output is the caller's tensor. */
#ifndef TEXT_ENCODER_T5_H
#define TEXT_ENCODER_T5_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/ops.h"
#include "weights/weights.h"

typedef struct t5_model t5_model;

/* Loads the encoder whose tensors carry HF names (shared.weight or encoder.embed_tokens.weight,
 * encoder.block.i.layer.{0,1}..., encoder.final_layer_norm.weight) behind a prefix found in
 * the file ("", "text_encoders.t5xxl.transformer.", ...). Config from config.json or, without
 * one, from the shapes (heads from relative_attention_bias, max distance 128, eps 1e-6).
 * Activations are planned for up to max_len tokens. src is borrowed; its name prefix is reset to
 * "". */
err t5_load(wt_source *src, op_ctx *ctx, int max_len, t5_model **out);
int64_t t5_hidden_size(const t5_model *m);
/* out [1,n,d_model] = last_hidden_state for n ids (1 <= n <= max_len), no attention mask (the
 * pipelines pass none); out lives on the ctx's device in its activation dtype. */
void t5_encode(t5_model *m, const int32_t *ids, int n, tensor out);
/* Device bytes held: weights, activations and the bias table (0 on the CPU). */
size_t t5_device_bytes(const t5_model *m);
void t5_free(t5_model *m); /* accepts NULL */

/* The bidirectional bucket of relative position rp = key - query, as transformers'
 * T5Attention._relative_position_bucket computes it (the log in fp32). */
int t5_relative_bucket(int rp, int num_buckets, int max_distance);

#endif
