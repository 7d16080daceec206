/* testutil_sd3: SD3's transformer in Stability's names (docs/MODEL-SPEC.md §2.7, diffusers'
 * convert_sd3_transformer_checkpoint_to_diffusers read backwards), renamed from a diffusers
 * folder: for test_sd3 (the DiT alone, with and without "model.diffusion_model.") and
 * test_pipeline (inside one file with the VAE and the text encoders, as sd3.5_large.safetensors
 * holds them). */
#ifndef TESTS_TESTUTIL_SD3_H
#define TESTS_TESTUTIL_SD3_H

#include "tests/testutil_dit.h"
#include "unet_dit/sd3.h"

/* Every tensor of o's source (a diffusers SD3 transformer with config c) in Stability's names:
 * q, k, v fused, the final and the last context modulations' halves swapped. */
static inline void tu_sd3_rename_original(tu_renamer *o, const sd3_config *c) {
    tu_rename_linear(o, "x_embedder.proj", (const char *[]){"pos_embed.proj"}, 1, 0);
    tu_rename_one(o, "pos_embed", "pos_embed.pos_embed");
    tu_rename_linear(o, "t_embedder.mlp.0",
                     (const char *[]){"time_text_embed.timestep_embedder.linear_1"}, 1, 0);
    tu_rename_linear(o, "t_embedder.mlp.2",
                     (const char *[]){"time_text_embed.timestep_embedder.linear_2"}, 1, 0);
    tu_rename_linear(o, "y_embedder.mlp.0",
                     (const char *[]){"time_text_embed.text_embedder.linear_1"}, 1, 0);
    tu_rename_linear(o, "y_embedder.mlp.2",
                     (const char *[]){"time_text_embed.text_embedder.linear_2"}, 1, 0);
    tu_rename_linear(o, "context_embedder", (const char *[]){"context_embedder"}, 1, 0);
    tu_rename_linear(o, "final_layer.adaLN_modulation.1", (const char *[]){"norm_out.linear"}, 1,
                     1);
    tu_rename_linear(o, "final_layer.linear", (const char *[]){"proj_out"}, 1, 0);
    for (int i = 0; i < c->layers; i++) {
        const int last = i == c->layers - 1;
        char d[64], s[64], a[3][96], b[96];
#define D_(x) (snprintf(b, sizeof b, "%s%s", d, x), b)
#define S_(x) (snprintf(s, sizeof s, "joint_blocks.%d.%s", i, x), s)
        snprintf(d, sizeof d, "transformer_blocks.%d.", i);
        tu_rename_linear(o, S_("x_block.adaLN_modulation.1"), (const char *[]){D_("norm1.linear")},
                         1, 0);
        tu_rename_linear(o, S_("context_block.adaLN_modulation.1"),
                         (const char *[]){D_("norm1_context.linear")}, 1, last);
        static const char *const qkv[3][3] = {
            {"attn.to_q", "attn.to_k", "attn.to_v"},
            {"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"},
            {"attn2.to_q", "attn2.to_k", "attn2.to_v"}};
        static const char *const fused[3] = {"x_block.attn.qkv", "context_block.attn.qkv",
                                             "x_block.attn2.qkv"};
        for (int f = 0; f < (c->dual[i] ? 3 : 2); f++) {
            for (int j = 0; j < 3; j++)
                snprintf(a[j], sizeof a[j], "%s%s", d, qkv[f][j]);
            tu_rename_linear(o, S_(fused[f]), (const char *[]){a[0], a[1], a[2]}, 3, 0);
        }
        static const char *const norms[][2] = {
            {"x_block.attn.ln_q.weight", "attn.norm_q.weight"},
            {"x_block.attn.ln_k.weight", "attn.norm_k.weight"},
            {"context_block.attn.ln_q.weight", "attn.norm_added_q.weight"},
            {"context_block.attn.ln_k.weight", "attn.norm_added_k.weight"},
            {"x_block.attn2.ln_q.weight", "attn2.norm_q.weight"},
            {"x_block.attn2.ln_k.weight", "attn2.norm_k.weight"}};
        for (int j = 0; j < (c->dual[i] ? 6 : 4); j++)
            tu_rename_one(o, S_(norms[j][0]), D_(norms[j][1]));
        static const char *const lin[][2] = {{"x_block.attn.proj", "attn.to_out.0"},
                                             {"x_block.mlp.fc1", "ff.net.0.proj"},
                                             {"x_block.mlp.fc2", "ff.net.2"},
                                             {"x_block.attn2.proj", "attn2.to_out.0"},
                                             {"context_block.attn.proj", "attn.to_add_out"},
                                             {"context_block.mlp.fc1", "ff_context.net.0.proj"},
                                             {"context_block.mlp.fc2", "ff_context.net.2"}};
        for (int j = 0; j < 7; j++) {
            if ((j == 3 && !c->dual[i]) || (j >= 4 && last)) continue;
            tu_rename_linear(o, S_(lin[j][0]), (const char *[]){D_(lin[j][1])}, 1, 0);
        }
#undef D_
#undef S_
    }
}

#endif
