/* preview: see preview.h. The projections come from assets/preview.json, built in as the
 * string df11_preview_json (CMake writes preview_json.c). */
#include "app/preview.h"

#include <cjson/cJSON.h>
#include <string.h>

extern const char df11_preview_json[];

err preview_proj_get(const char *name, preview_proj *out) {
    cJSON *js = cJSON_Parse(df11_preview_json);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(js, name);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "factors");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "bias");
    int ok = cJSON_GetArraySize(f) == 16 && cJSON_GetArraySize(b) == 3;
    for (int c = 0; ok && c < 16; c++) {
        const cJSON *row = cJSON_GetArrayItem(f, c);
        ok = cJSON_GetArraySize(row) == 3;
        for (int k = 0; ok && k < 3; k++) {
            const cJSON *v = cJSON_GetArrayItem(row, k);
            ok = cJSON_IsNumber(v);
            if (ok) out->factors[c][k] = (float)v->valuedouble;
        }
    }
    for (int k = 0; ok && k < 3; k++) {
        const cJSON *v = cJSON_GetArrayItem(b, k);
        ok = cJSON_IsNumber(v);
        if (ok) out->bias[k] = (float)v->valuedouble;
    }
    cJSON_Delete(js);
    FAIL_IF(!ok, ERR_FORMAT, "assets/preview.json: no 16 x 3 factors and 3 biases for \"%s\"",
            name);
    return ERR_OK;
}

void preview_rgb(const preview_proj *p, const float *lat, int64_t h, int64_t w, uint8_t *rgb) {
    const int64_t n = h * w;
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            float s = 0.0f;
            for (int c = 0; c < 16; c++)
                s += lat[c * n + i] * p->factors[c][k];
            float v = (s + p->bias[k] + 1.0f) / 2.0f;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            rgb[i * 3 + k] = (uint8_t)(v * 255.0f);
        }
}
