/* testutil_flux: what the FLUX transformer tests (test_flux, test_patch) share: a variant's
 * reference tensors read from the fixture's ref.safetensors, and one forward of a model on them
 * for a tu_dit. Header-only; include after testutil_dit.h. */
#ifndef TESTS_TESTUTIL_FLUX_H
#define TESTS_TESTUTIL_FLUX_H

#include "tests/testutil_dit.h"
#include "unet_dit/flux.h"

/* one variant's reference tensors (F32, host) */
typedef struct tu_flux_variant {
    const char *name; /* "dev", "schnell" */
    const st_tensor *x, *ts, *g, *out, *t5, *pooled;
    int64_t h2, w2;
} tu_flux_variant;

/* The variant's tensors (the guidance for "dev" only) and its packed grid, pixels / 16 each
 * way (VAE factor 8, 2x2 packing) from ref's height and width; 0 (a failed check) if any is
 * missing. */
static inline int tu_flux_variant_read(const st_file *ref, const char *name, tu_flux_variant *p) {
    const int dev = !strcmp(name, "dev");
    const char *hs = st_meta(ref, "height"), *ws = st_meta(ref, "width");
    char n[64];
    *p = (tu_flux_variant){.name = name};
    snprintf(n, sizeof n, "%s.fwd.x", name), p->x = tu_ref_f32(ref, n);
    snprintf(n, sizeof n, "%s.fwd.timestep", name), p->ts = tu_ref_f32(ref, n);
    snprintf(n, sizeof n, "%s.fwd.out", name), p->out = tu_ref_f32(ref, n);
    snprintf(n, sizeof n, "%s.fwd.guidance", name), p->g = dev ? tu_ref_f32(ref, n) : NULL;
    p->t5 = tu_ref_f32(ref, "t5.hidden");
    p->pooled = tu_ref_f32(ref, "clip.pooled");
    p->h2 = hs ? atoi(hs) / 16 : 0, p->w2 = ws ? atoi(ws) / 16 : 0;
    const int ok = p->x && p->ts && p->out && (!dev || p->g) && p->t5 && p->pooled &&
                   p->h2 * p->w2 == p->x->shape[1];
    EXPECT(ok, "%s: reference tensors or height/width metadata missing", name);
    return ok;
}

/* Plans m for the variant, sets its text, runs one forward on d's device (tau, gs as given
 * when use_tau, else the pipeline's chain from t = 1000 timestep and g) into r. */
static inline err tu_flux_run(const tu_dit *d, flux_model *m, const tu_flux_variant *p, int use_tau,
                              float tau, float gs, tu_result *r) {
    TRY(flux_plan(m, p->h2, p->w2, p->t5->shape[1]));
    tensor x = tu_to_dev(p->x, d->gpu), t5 = tu_to_dev(p->t5, d->gpu),
           pooled = tu_to_dev(p->pooled, d->gpu);
    tensor out = tu_dev_alloc(x.ndim, x.shape, d->gpu);
    flux_set_text(m, t5, pooled);
    const float t = 1000.0f * ((const float *)p->ts->data)[0];
    const float g = p->g ? ((const float *)p->g->data)[0] : 0.0f;
    if (use_tau)
        flux_forward_tau(m, out, x, tau, gs);
    else
        flux_forward(m, out, x, t, g);
    const err e = tu_collect(d->ctx, out, d->gpu, r);
    tu_dev_free(x, d->gpu), tu_dev_free(t5, d->gpu), tu_dev_free(pooled, d->gpu),
        tu_dev_free(out, d->gpu);
    return e;
}

#endif
