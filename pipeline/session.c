/* session: a model opened once (pipeline.h). Opening finds the diffusion model, its family and
 * variant from the family table, and every part; the components load when a stage first needs
 * them and stay or go by the residency policy; a run resolves its jobs through the job schema
 * and the family's rules, then runs the stages (the family's encoders, the one sampling loop,
 * the VAE). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/log.h"
#include "pipeline/internal.h"
#include "text_encoder/clip.h"
#include "text_encoder/t5.h"
#include "vae/vae.h"

static const pl_family *const families[] = {&pl_family_flux, &pl_family_sd3};
#define N_FAMILIES (sizeof families / sizeof *families)

/* A loaded component and what is known of its needs. */
typedef struct pl_slot {
    void *model;
    wt_source *src;
    size_t bytes;  /* device bytes the model holds */
    size_t need;   /* device bytes its stage took last time (0: not run yet) */
    size_t est;    /* the estimate before it ran (0: not made yet) */
    int t5_len;    /* T5: the tokens it was planned for */
    double t_used; /* when its stage last began, to free the oldest first */
    double t_load; /* the load's seconds in the stage running */
    int loaded;    /* the stage running loaded it */
} pl_slot;

struct pipeline_session {
    pipeline_paths paths; /* borrowed */
    pipeline_options opt;
    const pl_family *fam;
    int variant;
    char dit_path[4096];
    const char *single; /* the checkpoint file -m named, which may hold several parts */
    wt_source *dit;     /* for detection, probes and the hash; the transformer loads its own */
    char part_buf[PL_N_PARTS][4096];
    const char *part[PL_N_PARTS];
    sampler_config sc;
    uint64_t hash;
    int hashed;
    op_ctx *ctx;
    clip_tok *ctok, *gtok;
    t5_tok *ttok;
    pl_slot slot[PL_N_COMP];
    size_t free0, free_min, stage_free0, stage_min; /* device memory marks */
};

static const char *const comp_what[PL_N_COMP] = {"CLIP-L text encoder", "CLIP-G text encoder",
                                                 "T5 text encoder", "transformer", "VAE"};
static const char *const comp_stage[PL_N_COMP] = {"CLIP-L", "CLIP-G", "T5", "transformer", "VAE"};
static const pl_part comp_part[PL_N_COMP] = {PL_PART_CLIP_L, PL_PART_CLIP_G, PL_PART_T5, PL_N_PARTS,
                                             PL_PART_VAE};

void pipeline_options_init(pipeline_options *o) {
    memset(o, 0, sizeof *o);
    o->mode = -1;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

const pl_variant *pl_variant_of(const pipeline_session *s) { return &s->fam->variants[s->variant]; }
const char *pl_part_path(const pipeline_session *s, pl_part p) { return s->part[p]; }
const char *pl_dit_path(const pipeline_session *s) { return s->dit_path; }
const sampler_config *pl_schedule(const pipeline_session *s) { return &s->sc; }

const df11_tensor *pl_dit_tensor(const pipeline_session *s, const char *diffusers,
                                 const char *original) {
    const df11_tensor *t = wt_find(s->dit, diffusers);
    char b[256];
    snprintf(b, sizeof b, "model.diffusion_model.%s", original);
    if (!t) t = wt_find(s->dit, original);
    if (!t) t = wt_find(s->dit, b);
    return t;
}

/* ---- opening ---- */

/* The diffusion model: --diffusion-model, else -m's file (a checkpoint), else -m's
 * transformer/ folder. */
static err find_dit(pipeline_session *s) {
    const char *d = s->paths.model_dir;
    struct stat st;
    if (d) {
        FAIL_IF(stat(d, &st) != 0, ERR_IO, "%s: no such model folder or file", d);
        if (S_ISREG(st.st_mode)) {
            s->single = d;
        } else {
            char mi[4200];
            snprintf(mi, sizeof mi, "%s/model_index.json", d);
            if (!exists(mi))
                LOG_WARN("%s has no model_index.json; looking for the diffusers sub-folders anyway",
                         d);
        }
    }
    const char *p = s->paths.diffusion_model ? s->paths.diffusion_model : s->single;
    if (!p && d) {
        snprintf(s->dit_path, sizeof s->dit_path, "%s/transformer", d);
        p = exists(s->dit_path) ? s->dit_path : NULL;
    }
    FAIL_IF(!p, ERR_ARG,
            "no diffusion model: pass -m MODEL_DIR (a diffusers folder) or a checkpoint file, or "
            "--diffusion-model FILE");
    if (p != s->dit_path) snprintf(s->dit_path, sizeof s->dit_path, "%s", p);
    return wt_open(s->dit_path, &s->dit);
}

static err detect(pipeline_session *s) {
    char tried[1024];
    size_t n = 0;
    for (size_t f = 0; f < N_FAMILIES; f++) {
        n += (size_t)snprintf(tried + n, sizeof tried - n, "%s%s:", f ? "; " : "",
                              families[f]->name);
        for (const char *const *m = families[f]->marks; *m && n < sizeof tried; m++) {
            if (wt_find(s->dit, *m)) {
                s->fam = families[f];
                s->variant = s->fam->variant(s->dit, s->dit_path);
                return ERR_OK;
            }
            n += (size_t)snprintf(tried + n, sizeof tried - n, " %s", *m);
        }
    }
    FAIL(ERR_FORMAT, "%s: not a transformer of a family df11 knows (no tensor named %s)",
         s->dit_path, tried);
}

/* The parts given on their own (by their flags), from the folder, or in the checkpoint file. */
static err locate_parts(pipeline_session *s) {
    const pipeline_paths *p = &s->paths;
    const char *own[PL_N_PARTS] = {
        p->vae,          p->clip_l, p->clip_g, p->t5xxl, p->clip_tokenizer, p->clip_g_tokenizer,
        p->t5_tokenizer, NULL};
    for (int k = 0; k < PL_N_PARTS; k++) {
        const pl_part_spec *ps = &s->fam->parts[k];
        if (!ps->sub) continue;
        const char *found = own[k];
        if (!found && s->single) {
            for (const char *const *pr = ps->probes; pr && *pr && !found; pr++)
                if (wt_find(s->dit, *pr)) found = s->single;
        } else if (!found && p->model_dir) {
            snprintf(s->part_buf[k], sizeof s->part_buf[k], "%s/%s", p->model_dir, ps->sub);
            if (exists(s->part_buf[k])) found = s->part_buf[k];
        }
        s->part[k] = found;
    }
    /* what each part is, and the flag that gives it on its own */
    static const char *const what[PL_N_PARTS][2] = {
        {"VAE", "--vae FILE"},
        {"CLIP-L text encoder", "--clip_l FILE"},
        {"CLIP-G text encoder", "--clip_g FILE"},
        {"T5-XXL text encoder", "--t5xxl FILE"},
        {"CLIP tokenizer", "--clip-tokenizer DIR (vocab.json + merges.txt, or tokenizer.json)"},
        {"CLIP-G tokenizer", "--clip-g-tokenizer DIR"},
        {"T5 tokenizer", "--t5-tokenizer DIR (tokenizer.json or spiece.model)"},
        {"scheduler config", "-m MODEL_DIR"}};
    const pl_part_spec *ps = s->fam->parts;
    for (int k = 0; k < PL_N_PARTS; k++) {
        const int need = ps[k].required || (k == PL_PART_T5_TOK && s->part[PL_PART_T5]);
        FAIL_IF(need && !s->part[k], ERR_ARG,
                "no %s: pass -m MODEL_DIR (a diffusers %s folder) or %s%s", what[k][0],
                s->fam->name, what[k][1], ps[k].note ? ps[k].note : "");
        if (ps[k].sub && !s->part[k] && !need && ps[k].note && ps[k].note[0])
            LOG_WARN("%s", ps[k].note);
    }
    return ERR_OK;
}

static err schedule(pipeline_session *s) {
    s->fam->schedule(s->variant, &s->sc);
    const char *path = s->part[PL_PART_SCHED];
    if (!path) return ERR_OK;
    fio_map mp;
    TRY(fio_map_open(path, &mp));
    cJSON *js = cJSON_ParseWithLength((const char *)mp.data, mp.size);
    fio_map_close(&mp);
    FAIL_IF(!js, ERR_FORMAT, "%s: not valid JSON", path);
    err e = sampler_config_from_json(js, path, &s->sc);
    cJSON_Delete(js);
    return e;
}

err pipeline_open(const pipeline_paths *p, const pipeline_options *o, pipeline_session **out) {
    *out = NULL;
    pipeline_session *s = calloc(1, sizeof *s);
    FAIL_IF(!s, ERR_NOMEM, "out of memory");
    s->paths = *p;
    if (o)
        s->opt = *o;
    else
        pipeline_options_init(&s->opt);
    err e = find_dit(s);
    if (!e) e = detect(s);
    if (!e) e = locate_parts(s);
    if (!e) e = schedule(s);
    if (e) {
        pipeline_close(s);
        return e;
    }
    *out = s;
    return ERR_OK;
}

static void slot_free(pipeline_session *s, pl_comp c) {
    pl_slot *sl = &s->slot[c];
    if (!sl->model) return;
    switch (c) {
    case PL_CLIP_L:
    case PL_CLIP_G: clip_free(sl->model); break;
    case PL_T5: t5_free(sl->model); break;
    case PL_DIT: s->fam->dit_free(sl->model); break;
    case PL_VAE: vae_free(sl->model); break;
    default: break;
    }
    wt_close(sl->src);
    sl->model = NULL, sl->src = NULL, sl->bytes = 0;
}

void pipeline_close(pipeline_session *s) {
    if (!s) return;
    for (int c = 0; c < PL_N_COMP; c++)
        slot_free(s, (pl_comp)c);
    clip_tok_free(s->ctok);
    clip_tok_free(s->gtok);
    t5_tok_free(s->ttok);
    wt_close(s->dit);
    op_ctx_free(s->ctx);
    free(s);
}

size_t pipeline_loaded_bytes(const pipeline_session *s) {
    size_t b = 0;
    for (int c = 0; c < PL_N_COMP; c++)
        b += s->slot[c].model ? s->slot[c].bytes : 0;
    return b;
}

err pl_clip_tok(pipeline_session *s, int g, const clip_tok **out) {
    const char *ct = s->part[PL_PART_CLIP_TOK], *gt = s->part[PL_PART_CLIP_G_TOK];
    if (!g && !s->ctok) TRY(clip_tok_load(ct, &s->ctok));
    if (g && !s->gtok) {
        if (gt) {
            TRY(clip_tok_load(gt, &s->gtok));
        } else {
            LOG_INFO("CLIP-G tokenizer: CLIP-L's (%s) padding with \"!\", as SD3's tokenizer_2 "
                     "does (--clip-g-tokenizer DIR to give one)",
                     ct);
            TRY(clip_tok_load_pad(ct, "!", &s->gtok));
        }
    }
    *out = g ? s->gtok : s->ctok;
    return ERR_OK;
}

err pl_t5_tok(pipeline_session *s, const t5_tok **out) {
    if (!s->ttok) TRY(t5_tok_load(s->part[PL_PART_T5_TOK], &s->ttok));
    *out = s->ttok;
    return ERR_OK;
}

/* ---- the components, and what stays loaded ---- */

void pl_mem_mark(pl_run *run) {
    pipeline_session *s = run->s;
    size_t f, t;
    if (!run->cuda || gpu_mem_info(&f, &t)) return;
    if (!s->free0) s->free0 = s->free_min = f;
    if (f < s->free_min) s->free_min = f;
    if (f < s->stage_min) s->stage_min = f;
}

static size_t free_now(const pl_run *run) {
    size_t f = 0, t;
    if (run->cuda && gpu_mem_info(&f, &t)) f = 0;
    return f;
}

/* What a component's stage needs on the device before it ran once: its weights as the
 * loader will hold them (BF16, or DF11 as stored for the transformer's DF11 modes), a tenth
 * more and 256 MB for activations. */
static size_t estimate(pipeline_session *s, pl_comp c) {
    const char *path = c == PL_DIT ? s->dit_path : s->part[comp_part[c]];
    wt_source *w = NULL;
    if (s->slot[c].est) return s->slot[c].est;
    if (!path || wt_open(path, &w)) return 0;
    const int df11_mode = c == PL_DIT && wt_is_df11(w) && s->opt.mode != WP_RESIDENT;
    size_t b = 0;
    for (int i = 0; i < wt_count(w); i++) {
        const df11_tensor *t = wt_at(w, i);
        b += df11_mode ? t->stored_bytes : t->numel * 2;
    }
    wt_close(w);
    return s->slot[c].est = b + b / 10 + ((size_t)256 << 20);
}

static size_t budget_left(const pl_run *run) {
    const pipeline_session *s = run->s;
    if (s->opt.vram_budget_gb <= 0) return free_now(run);
    const size_t budget = (size_t)(s->opt.vram_budget_gb * 1e9), held = pipeline_loaded_bytes(s);
    return budget > held ? budget - held : 0;
}

/* AUTO: the largest need of a stage whose model is not loaded, other than c's. */
static size_t others_need(pipeline_session *s, pl_comp c) {
    size_t m = 0;
    for (int k = 0; k < PL_N_COMP; k++) {
        if (k == (int)c || s->slot[k].model || (k == PL_CLIP_G && !s->part[PL_PART_CLIP_G]) ||
            (k == PL_T5 && !s->part[PL_PART_T5]))
            continue;
        const size_t n = s->slot[k].need ? s->slot[k].need : estimate(s, (pl_comp)k);
        m = n > m ? n : m;
    }
    return m;
}

/* AUTO, before loading c: frees the models kept longest unused until c's need fits. */
static void make_room(pl_run *run, pl_comp c) {
    pipeline_session *s = run->s;
    if (!run->cuda || s->opt.residency != PIPELINE_KEEP_AUTO) return;
    const size_t need = s->slot[c].need ? s->slot[c].need : estimate(s, c);
    while (budget_left(run) < need) {
        int old = -1;
        for (int k = 0; k < PL_N_COMP; k++)
            if (s->slot[k].model && k != (int)c &&
                (old < 0 || s->slot[k].t_used < s->slot[old].t_used))
                old = k;
        if (old < 0) return;
        LOG_INFO("%s: released to make room for the %s", comp_stage[old], comp_stage[c]);
        slot_free(s, (pl_comp)old);
    }
}

static err load(pl_run *run, pl_comp c) {
    pipeline_session *s = run->s;
    pl_slot *sl = &s->slot[c];
    const char *path = c == PL_DIT ? s->dit_path : s->part[comp_part[c]];
    TRY(wt_open(path, &sl->src));
    err e = ERR_OK;
    if (c == PL_CLIP_L || c == PL_CLIP_G) {
        const char *pre = c == PL_CLIP_L ? "text_encoders.clip_l.transformer."
                                         : "text_encoders.clip_g.transformer.";
        clip_model *m = NULL;
        e = path == s->single ? clip_load_prefix(sl->src, s->ctx, pre, &m)
                              : clip_load(sl->src, s->ctx, &m);
        sl->model = m, sl->bytes = m ? clip_device_bytes(m) : 0;
    } else if (c == PL_T5) {
        int T = 0;
        for (int k = 0; k < run->n; k++)
            T = run->jobs[k].info.job.max_seq > T ? run->jobs[k].info.job.max_seq : T;
        t5_model *m = NULL;
        e = t5_load(sl->src, s->ctx, T, &m);
        sl->model = m, sl->t5_len = T, sl->bytes = m ? t5_device_bytes(m) : 0;
    } else if (c == PL_DIT) {
        e = s->fam->dit_load(run, sl->src, &sl->model);
        sl->bytes = sl->model ? s->fam->dit_bytes(sl->model) : 0;
    } else {
        vae_model *m = NULL;
        cJSON *cfg = NULL;
        e = vae_load(sl->src, s->ctx, &m);
        if (!e) e = wt_config(sl->src, &cfg);
        /* a single file has no config: the family's scaling (the loader's default is FLUX's) */
        if (!e && !cfg && s->fam->vae_scaling > 0) {
            vae_set_scaling(m, s->fam->vae_scaling, s->fam->vae_shift);
            LOG_INFO("vae: no config.json: the latent scaling %.4f and shift %.4f of %s",
                     s->fam->vae_scaling, s->fam->vae_shift, pl_variant_of(s)->name);
        }
        cJSON_Delete(cfg);
        sl->model = m, sl->bytes = m ? vae_device_bytes(m) : 0;
    }
    if (e) slot_free(s, c);
    return e;
}

err pl_dit_mode(const pl_run *run, wt_source *src, wp_mode *mode, size_t *budget) {
    const pipeline_options *o = &run->s->opt;
    *mode = WP_RESIDENT, *budget = 0;
    if (o->mode >= 0)
        *mode = (wp_mode)o->mode;
    else if (wt_is_df11(src))
        *mode = WP_DF11;
    if (o->vram_budget_gb > 0 && run->cuda) {
        FAIL_IF(!wt_is_df11(src), ERR_ARG,
                "--vram-budget streams DF11 weights; %s is not DF11 (compress it with df11 "
                "compress)",
                wt_path(src));
        *mode = WP_STREAM, *budget = (size_t)(o->vram_budget_gb * 1e9);
    }
    return ERR_OK;
}

void pl_log_dit(const pl_run *run, size_t device_bytes, wp_mode mode) {
    LOG_INFO("transformer: %.2f GB on the device (%s)", (double)device_bytes / 1e9,
             !run->cuda            ? "mapped on the host"
             : mode == WP_RESIDENT ? "resident"
             : mode == WP_DF11     ? "DF11, decoded per block"
                                   : "DF11, streamed");
}

err pl_use(pl_run *run, pl_comp c, void **model) {
    pipeline_session *s = run->s;
    pl_slot *sl = &s->slot[c];
    const double t0 = pl_now();
    if (c == PL_T5 && sl->model)
        for (int k = 0; k < run->n; k++)
            if (run->jobs[k].info.job.max_seq > sl->t5_len) slot_free(s, c); /* longer now */
    if (!sl->model) make_room(run, c);
    s->stage_free0 = s->stage_min = free_now(run);
    sl->t_used = t0, sl->t_load = 0, sl->loaded = !sl->model;
    if (!sl->model) {
        err e = load(run, c);
        if (e) return pl_wrap(run, c, e);
        sl->t_load = pl_now() - t0;
        run->t_load += sl->t_load;
    }
    pl_mem_mark(run);
    *model = sl->model;
    return ERR_OK;
}

err pl_wrap(pl_run *run, pl_comp c, err e) {
    if (!e || e == ERR_CANCELLED) return e;
    const char *path = c == PL_DIT ? run->s->dit_path : run->s->part[comp_part[c]];
    return err_wrap(e, "%s %s", comp_what[c], path ? path : "");
}

/* Whether the policy keeps c's model after its stage. */
static int keep(pl_run *run, pl_comp c) {
    pipeline_session *s = run->s;
    if (s->opt.residency == PIPELINE_KEEP_ALL) return 1;
    if (s->opt.residency == PIPELINE_KEEP_NONE) return 0;
    if (!run->cuda) return 1; /* mmapped host memory: nothing to gain by closing */
    return budget_left(run) >= others_need(s, c) + ((size_t)256 << 20);
}

err pl_done(pl_run *run, pl_comp c, err e) {
    pipeline_session *s = run->s;
    pl_slot *sl = &s->slot[c];
    if (!e && run->cuda) e = op_ctx_sync(s->ctx);
    pl_mem_mark(run);
    if (run->cuda && s->stage_free0 > s->stage_min) sl->need = s->stage_free0 - s->stage_min;
    pipeline_stage_report r = {.stage = comp_stage[c],
                               .seconds = pl_now() - sl->t_used,
                               .loaded = sl->loaded,
                               .load_seconds = sl->t_load,
                               .model_bytes = sl->bytes,
                               .peak_bytes = s->free0 > s->stage_min ? s->free0 - s->stage_min : 0};
    /* a cancelled stage's model is as good as it was: the policy decides as after a run */
    r.kept = (!e || e == ERR_CANCELLED) && keep(run, c);
    if (!e) {
        char ld[48] = ", kept loaded";
        if (sl->loaded) snprintf(ld, sizeof ld, ", loaded in %.2f s", sl->t_load);
        char mem[96] = "";
        if (run->cuda)
            snprintf(mem, sizeof mem, ", %.2f GB on the device, peak %.2f GB",
                     (double)r.model_bytes / 1e9, (double)r.peak_bytes / 1e9);
        LOG_INFO("%s: %.2f s%s%s; %s", r.stage, r.seconds, ld, mem,
                 r.kept ? "kept" : "released");
        if (run->cb->on_stage) run->cb->on_stage(run->cb->ctx, &r);
    }
    if (!r.kept) slot_free(s, c);
    return pl_wrap(run, c, e);
}

/* ---- jobs ---- */

err pl_cancelled(const pl_run *run) {
    FAIL_IF(run->cb->cancel && *run->cb->cancel, ERR_CANCELLED, "cancelled");
    return ERR_OK;
}

void pl_warn_cut(const char *what, int n, int max) {
    if (n > max) LOG_WARN("the prompt is %d %s tokens; %s sees the first %d", n, what, what, max);
}

/* A JOB_F_VARIANT row's default in variant v. */
static double variant_default(const pl_variant *v, job_key k) {
    switch (k) {
    case JOB_STEPS: return v->steps;
    case JOB_GUIDANCE: return v->guidance;
    case JOB_CFG_SCALE: return v->cfg_scale;
    case JOB_MAX_SEQ: return v->max_seq;
    default: CHECK(!"a variant default"); return 0;
    }
}

/* The job as the model runs it: the schema's values where given, the variant's defaults where
 * not, a parameter the family does not take refused, then the family's own rules. */
static err resolve(pipeline_session *s, const pipeline_job *j, pipeline_info *in) {
    const pl_family *f = s->fam;
    const pl_variant *v = pl_variant_of(s);
    memset(in, 0, sizeof *in);
    in->family = f->key, in->model_name = v->name, in->backend = s->opt.cpu ? "cpu" : "cuda";
    if (s->hashed)
        snprintf(in->model_hash, sizeof in->model_hash, "%016llx", (unsigned long long)s->hash);
    in->accepts = f->accepts, in->given = j->set;
    FAIL_IF(!j->prompt, ERR_ARG, "no prompt (-p)");
    FAIL_IF(j->batch_count < 1, ERR_ARG, "batch count %d: at least 1", j->batch_count);
    for (int k = 0; k < JOB_N_KEYS; k++)
        FAIL_IF(j->set & JOB_BIT(k) & ~f->accepts, ERR_ARG, "%s (%s given)", f->refusal,
                job_params[k].flag ? job_params[k].flag : job_params[k].key);
    pipeline_job *r = &in->job;
    *r = *j; /* its strings stay the caller's */
    /* the defaults: the schema's, the variant's (the family table's), and the noise of the
       backend's diffusers pipeline */
    for (int k = 0; k < JOB_N_KEYS; k++) {
        const job_param *p = &job_params[k];
        if (j->set & JOB_BIT(k)) continue;
        if (p->def) CHECK(job_set_text(r, (job_key)k, p->def, p->key) == ERR_OK);
        if (p->flags & JOB_F_VARIANT)
            CHECK(job_set_number(r, (job_key)k, variant_default(v, (job_key)k), p->key) == ERR_OK);
    }
    if (!(j->set & JOB_BIT(JOB_NOISE))) r->noise = s->opt.cpu ? NOISE_F32 : NOISE_BF16;
    r->set = ~0u;
    FAIL_IF(r->width < 16 || r->height < 16 || r->width > 8192 || r->height > 8192, ERR_ARG,
            "image size %dx%d: width and height must be 16..8192", r->width, r->height);
    if (r->width % 16 || r->height % 16) {
        FAIL_IF(!f->floor16, ERR_ARG, "image size %dx%d: %s takes multiples of 16", r->width,
                r->height, v->name);
        LOG_WARN("%dx%d is not a multiple of 16; rendering %dx%d", r->width, r->height,
                 r->width / 16 * 16, r->height / 16 * 16);
        r->width = r->width / 16 * 16, r->height = r->height / 16 * 16;
    }
    in->active = JOB_BIT(JOB_PROMPT) | JOB_BIT(JOB_SEED) | JOB_BIT(JOB_WIDTH) |
                 JOB_BIT(JOB_HEIGHT) | JOB_BIT(JOB_STEPS) | JOB_BIT(JOB_MAX_SEQ) |
                 JOB_BIT(JOB_NOISE);
    return f->resolve(v, in);
}

const char *pipeline_default_text(job_key k, char *buf, size_t n) {
    const job_param *p = &job_params[k];
    size_t m = 0;
    buf[0] = 0;
    if (k == JOB_NOISE)
        return snprintf(buf, n,
                        "as diffusers' pipeline on the backend: bf16 on the GPU, f32 on "
                        "the CPU"),
               buf;
    if (!(p->flags & JOB_F_VARIANT)) return snprintf(buf, n, "%s", p->def ? p->def : ""), buf;
    for (size_t f = 0; f < N_FAMILIES; f++) {
        const pl_family *fam = families[f];
        if (!(fam->accepts & JOB_BIT(k))) continue;
        int same = 1; /* one value for the whole family: said once */
        for (int i = 1; i < fam->n_variants; i++)
            same &= variant_default(&fam->variants[i], k) == variant_default(fam->variants, k);
        for (int i = 0; i < (same ? 1 : fam->n_variants) && m < n; i++)
            m += (size_t)snprintf(buf + m, n - m, "%s%s %g", m ? ", " : "",
                                  same ? fam->name : fam->variants[i].name,
                                  variant_default(&fam->variants[i], k));
    }
    return buf;
}

err pipeline_resolve(pipeline_session *s, const pipeline_job *j, pipeline_info *info) {
    pipeline_job e;
    if (!j->prompt) {
        e = *j;
        e.prompt = "";
        j = &e;
    }
    return resolve(s, j, info);
}

err pipeline_describe(pipeline_session *s, pipeline_info *info) {
    pipeline_job j;
    job_init(&j);
    return pipeline_resolve(s, &j, info);
}

static void job_release(pl_run *run, pl_job *jb) {
    if (run->fam->cond_free) run->fam->cond_free(run, jb);
    for (int i = 0; jb->lat && i < jb->info.job.batch_count; i++)
        pl_buf_free(run->ctx, &jb->lat[i]);
    free(jb->lat), free(jb->sig);
    jb->lat = NULL, jb->sig = NULL;
}

/* Jobs that resolve go to the front of run->jobs; the others are reported (on_skip) or fail
 * the run. */
static err resolve_all(pl_run *run, const pipeline_job *jobs, int n) {
    const pipeline_callbacks *cb = run->cb;
    for (int k = 0; k < n; k++) {
        pl_job *jb = &run->jobs[run->n];
        *jb = (pl_job){.job = &jobs[k], .index = k};
        err e = resolve(run->s, &jobs[k], &jb->info);
        const int S = jb->info.job.steps, B = jb->info.job.batch_count;
        if (!e) {
            jb->lh = jb->info.job.height / 8, jb->lw = jb->info.job.width / 8;
            jb->lat = calloc((size_t)B, sizeof *jb->lat);
            jb->sig = malloc(sizeof *jb->sig * (size_t)(2 * S + 1));
            if (!jb->lat || !jb->sig) e = err_set(ERR_NOMEM, "out of memory");
        }
        if (e) {
            free(jb->lat), free(jb->sig);
            if (!cb->on_skip) return e;
            cb->on_skip(cb->ctx, k, err_msg());
            continue;
        }
        sampler_config sc = run->s->sc;
        if (jb->info.active & JOB_BIT(JOB_SHIFT)) sc.shift = jb->info.job.shift;
        run->fam->sigmas(&sc, S, jb->lh, jb->lw, jb->sig);
        sampler_timesteps(&sc, S, jb->sig, jb->sig + S + 1);
        if (cb->on_info) cb->on_info(cb->ctx, k, &jb->info);
        run->n++;
    }
    return ERR_OK;
}

static err transformer_stage(pl_run *run) {
    err e = pl_use(run, PL_DIT, &run->dit);
    if (e) return e;
    for (int k = 0; !e && k < run->n; k++)
        e = pl_denoise_job(run, &run->jobs[k]);
    e = pl_done(run, PL_DIT, e);
    run->dit = NULL;
    return e;
}

err pipeline_run(pipeline_session *s, const pipeline_job *jobs, int n,
                 const pipeline_callbacks *cb) {
    FAIL_IF(n < 1, ERR_ARG, "no job to run");
    pl_run run = {.s = s, .fam = s->fam, .cb = cb, .cuda = !s->opt.cpu, .t_start = pl_now()};
    if (!s->hashed) {
        TRY(wt_hash(s->dit, &s->hash));
        s->hashed = 1;
    }
    run.jobs = calloc((size_t)n, sizeof *run.jobs);
    FAIL_IF(!run.jobs, ERR_NOMEM, "out of memory");
    err e = resolve_all(&run, jobs, n);
    if (!e && run.n && !s->ctx) e = op_ctx_create(run.cuda ? TENSOR_CUDA : TENSOR_CPU, &s->ctx);
    run.ctx = s->ctx;
    s->free_min = SIZE_MAX; /* free0 stays the session's: the memory above the CUDA context */
    if (!e && run.n) {
        pl_mem_mark(&run);
        const double t0 = pl_now();
        e = s->fam->encode(&run);
        run.t_text = pl_now() - t0;
    }
    if (!e && run.n) e = pl_cancelled(&run);
    if (!e && run.n) e = transformer_stage(&run);
    for (int k = 0; k < run.n && run.fam->cond_free; k++)
        run.fam->cond_free(&run, &run.jobs[k]);
    if (!e && run.n) e = pl_decode_all(&run);
    if (!e && run.n && run.cuda)
        LOG_INFO("peak device memory: %.2f GB above the CUDA context",
                 (double)(s->free0 - s->free_min) / 1e9);
    for (int k = 0; k < run.n; k++)
        job_release(&run, &run.jobs[k]);
    free(run.jobs);
    return e;
}
