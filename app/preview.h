/* preview: the live preview of a denoising run, a linear latent-to-RGB projection per latent
 * pixel (assets/preview.json: rgb = (latent . factors + bias + 1) / 2, clamped to [0, 1], as
 * ComfyUI's Latent2RGB previews compute it), cheap enough to draw at every step. */
#ifndef APP_PREVIEW_H
#define APP_PREVIEW_H

#include <stdint.h>

#include "core/err.h"

typedef struct preview_proj {
    float factors[16][3]; /* latent channel c's weight in R, G, B */
    float bias[3];
} preview_proj;

/* The projection of a model family (pipeline_info.family: "flux", "sd3") from
 * assets/preview.json (built into the program). */
err preview_proj_get(const char *family, preview_proj *out);
/* lat [16, h, w] (the diffusion model's latent space) to rgb [h, w, 3]: each value
 * (sum_c lat[c] * factors[c][k] + bias[k] + 1) / 2 clamped to [0, 1], times 255, truncated (in
 * float32, channels summed in order). */
void preview_rgb(const preview_proj *p, const float *lat, int64_t h, int64_t w, uint8_t *rgb);

#endif
