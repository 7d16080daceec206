/* provider: the three ways a block's BF16 weights reach the device (provider.h). */
#include "weights/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/log.h"
#include "df11/cuda/df11_cuda.h"

#define ALIGN 256u

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

static uint64_t numel(const wp_src *s) {
    uint64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= (uint64_t)s->shape[d];
    return n;
}

typedef struct blk {
    int n;
    const wp_src *w;
    uint64_t *off, bf16_bytes;      /* each weight's place in a slot (or the resident copy) */
    uint64_t *blob_off, blob_bytes; /* each blob's place in the block's blob area */
    df11_blob *parsed;
    uint8_t *d_bf16;  /* WP_RESIDENT */
    uint8_t *d_blobs; /* WP_DF11, or WP_STREAM when resident; else NULL */
    uint8_t *h_blobs; /* WP_STREAM, streamed: pinned copy */
    int stream_pos;   /* index among the streamed blocks, or -1 */
    int handed;       /* WP_RESIDENT: acquired before */
    /* decode into slot s from the resident blobs (plan[s]) or from staging buffer b
     * (plan[2 * s + b]) */
    df11_cuda_plan *plan[4];
} blk;

struct weight_provider {
    wp_mode mode;
    int n;
    blk *b;
    struct CUstream_st *compute, *decode, *copy;
    uint8_t *d_resident, *d_blob_pool, *slot[2], *staging[2];
    size_t device_bytes;
    int slot_holds[2], last_slot; /* the block each slot holds (or -1); the slot last handed out */
    int slot_fresh[2];            /* the slot holds a decode not handed out yet */
    struct CUevent_st *ready[2], *free_[2], *staged[2], *consumed[2];
    int *streamed; /* block ids of the streamed blocks, in order */
    int n_streamed;
    uint64_t n_copy, n_dec; /* streamed copies issued, streamed decodes issued */
};

static err check_block(const wp_config *cfg, const wp_block *bl, int i) {
    for (int j = 0; j < bl->n; j++) {
        const wp_src *s = &bl->w[j];
        FAIL_IF(s->ndim < 1 || s->ndim > TENSOR_MAX_DIMS, ERR_ARG, "block %d weight %d: %d dims", i,
                j, s->ndim);
        FAIL_IF(!s->blob && (cfg->mode != WP_RESIDENT || !s->bf16), ERR_ARG,
                "block %d weight %d: no DF11 blob for a DF11 mode", i, j);
    }
    return ERR_OK;
}

/* Lays out block i's weights (slot offsets) and blobs (blob-area offsets), and parses and
 * checks each blob against its weight's shape. */
static err layout(blk *b, const wp_block *src, int i) {
    b->n = src->n;
    b->w = src->w;
    b->off = calloc((size_t)b->n + 1, sizeof *b->off);
    b->blob_off = calloc((size_t)b->n + 1, sizeof *b->blob_off);
    b->parsed = calloc((size_t)b->n + 1, sizeof *b->parsed);
    b->stream_pos = -1;
    FAIL_IF(!b->off || !b->blob_off || !b->parsed, ERR_NOMEM, "out of memory");
    for (int j = 0; j < b->n; j++) {
        const wp_src *s = &b->w[j];
        b->off[j] = b->bf16_bytes;
        b->bf16_bytes += align_up(2 * numel(s));
        if (s->blob) {
            b->blob_off[j] = b->blob_bytes;
            b->blob_bytes += align_up(s->blob_len);
            err e = df11_blob_parse(s->blob, s->blob_len, &b->parsed[j]);
            if (e) return err_wrap(e, "block %d weight %d", i, j);
            FAIL_IF(b->parsed[j].n != numel(s), ERR_FORMAT,
                    "block %d weight %d: blob holds %llu values, shape needs %llu", i, j,
                    (unsigned long long)b->parsed[j].n, (unsigned long long)numel(s));
        }
    }
    return ERR_OK;
}

/* A plan decoding block b's blobs, at device address blobs, into slot dst. */
static err make_plan(const blk *b, const uint8_t *blobs, uint8_t *dst, df11_cuda_plan **out) {
    df11_cuda_item *it = calloc((size_t)b->n + 1, sizeof *it);
    FAIL_IF(!it, ERR_NOMEM, "out of memory");
    for (int j = 0; j < b->n; j++) {
        it[j].blob = &b->parsed[j];
        it[j].d_blob = blobs + b->blob_off[j];
        it[j].d_out = (uint16_t *)(dst + b->off[j]);
    }
    err e = df11_cuda_plan_create(it, b->n, out);
    free(it);
    return e;
}

/* The blocks whose blobs stay in host memory: as few as the budget allows, spread evenly
 * through the order so that copies overlap compute all along the forward. */
static err choose_streamed(weight_provider *p, const wp_config *cfg, uint64_t slot_bytes) {
    uint64_t total = 0, max_blob = 0;
    for (int i = 0; i < p->n; i++) {
        total += p->b[i].blob_bytes;
        if (p->b[i].blob_bytes > max_blob) max_blob = p->b[i].blob_bytes;
    }
    const uint64_t fixed = 2 * slot_bytes;
    FAIL_IF(cfg->budget < fixed + 2 * max_blob, ERR_NOMEM,
            "VRAM budget of %.1f MiB is below the %.1f MiB that two slots and two staging "
            "buffers need",
            cfg->budget / 1048576.0, (fixed + 2 * max_blob) / 1048576.0);
    if (fixed + total <= cfg->budget) return ERR_OK; /* everything fits: nothing streamed */
    const uint64_t room = cfg->budget - fixed - 2 * max_blob;
    const double frac = total ? 1.0 - (double)room / (double)total : 0.0;
    uint64_t seen = 0, streamed = 0, resident = 0;
    for (int i = 0; i < p->n; i++) {
        seen += p->b[i].blob_bytes;
        int stream = (double)streamed < frac * (double)seen || resident + p->b[i].blob_bytes > room;
        if (stream) {
            p->b[i].stream_pos = p->n_streamed;
            p->streamed[p->n_streamed++] = i;
            streamed += p->b[i].blob_bytes;
        } else {
            resident += p->b[i].blob_bytes;
        }
    }
    return ERR_OK;
}

static err create(weight_provider *p, const wp_config *cfg, const wp_block *blocks) {
    uint64_t slot_bytes = 0, pool = 0, stage = 0;
    for (int i = 0; i < p->n; i++) {
        TRY(check_block(cfg, &blocks[i], i));
        TRY(layout(&p->b[i], &blocks[i], i));
        if (p->b[i].bf16_bytes > slot_bytes) slot_bytes = p->b[i].bf16_bytes;
    }
    if (cfg->mode == WP_RESIDENT) {
        uint64_t total = 0;
        for (int i = 0; i < p->n; i++)
            total += p->b[i].bf16_bytes;
        TRY(gpu_alloc((void **)&p->d_resident, total));
        p->device_bytes = total;
        uint64_t at = 0;
        for (int i = 0; i < p->n; i++) {
            blk *b = &p->b[i];
            b->d_bf16 = p->d_resident + at;
            at += b->bf16_bytes;
            int from_blob = 0;
            for (int j = 0; j < b->n; j++) {
                if (b->w[j].bf16)
                    TRY(gpu_upload(b->d_bf16 + b->off[j], b->w[j].bf16, 2 * numel(&b->w[j])));
                else
                    from_blob = 1;
            }
            if (from_blob) { /* decode once, through a temporary copy of the blobs */
                uint8_t *tmp;
                df11_cuda_plan *plan = NULL;
                TRY(gpu_alloc((void **)&tmp, b->blob_bytes));
                err e = ERR_OK;
                for (int j = 0; j < b->n && !e; j++)
                    e = gpu_upload(tmp + b->blob_off[j], b->w[j].blob, b->w[j].blob_len);
                if (!e) e = make_plan(b, tmp, b->d_bf16, &plan);
                if (!e) e = df11_cuda_decode(plan, p->compute);
                if (!e) e = gpu_sync();
                df11_cuda_plan_free(plan);
                gpu_free(tmp);
                TRY(e);
            }
        }
        return ERR_OK;
    }
    /* decoding and copies run in the background of the compute stream's kernels */
    TRY(gpu_stream_create_background(&p->decode));
    TRY(gpu_stream_create_background(&p->copy));
    for (int s = 0; s < 2; s++) {
        TRY(gpu_event_create(&p->ready[s]));
        TRY(gpu_event_create(&p->free_[s]));
        TRY(gpu_event_create(&p->staged[s]));
        TRY(gpu_event_create(&p->consumed[s]));
        TRY(gpu_alloc((void **)&p->slot[s], slot_bytes));
    }
    p->device_bytes = 2 * slot_bytes;
    if (cfg->mode == WP_STREAM) TRY(choose_streamed(p, cfg, slot_bytes));
    for (int i = 0; i < p->n; i++) {
        if (p->b[i].stream_pos >= 0) {
            if (p->b[i].blob_bytes > stage) stage = p->b[i].blob_bytes;
        } else {
            pool += p->b[i].blob_bytes;
        }
    }
    TRY(gpu_alloc((void **)&p->d_blob_pool, pool));
    p->device_bytes += pool;
    if (stage)
        for (int s = 0; s < 2; s++)
            TRY(gpu_alloc((void **)&p->staging[s], stage));
    p->device_bytes += 2 * stage;
    uint64_t at = 0;
    for (int i = 0; i < p->n; i++) {
        blk *b = &p->b[i];
        uint8_t *blobs = NULL;
        if (b->stream_pos < 0) {
            blobs = b->d_blobs = p->d_blob_pool + at;
            at += b->blob_bytes;
            for (int j = 0; j < b->n; j++)
                TRY(gpu_upload(blobs + b->blob_off[j], b->w[j].blob, b->w[j].blob_len));
        } else {
            TRY(gpu_host_alloc((void **)&b->h_blobs, b->blob_bytes));
            for (int j = 0; j < b->n; j++)
                memcpy(b->h_blobs + b->blob_off[j], b->w[j].blob, b->w[j].blob_len);
        }
        for (int s = 0; s < 2; s++) {
            if (b->stream_pos < 0)
                TRY(make_plan(b, blobs, p->slot[s], &b->plan[s]));
            else
                for (int g = 0; g < 2; g++)
                    TRY(make_plan(b, p->staging[g], p->slot[s], &b->plan[2 * s + g]));
        }
    }
    return ERR_OK;
}

err wp_create(const wp_config *cfg, const wp_block *blocks, int n_blocks,
              struct CUstream_st *compute, weight_provider **out) {
    *out = NULL;
    FAIL_IF(n_blocks < 1, ERR_ARG, "weight provider: no blocks");
    weight_provider *p = calloc(1, sizeof *p);
    FAIL_IF(!p, ERR_NOMEM, "out of memory");
    p->mode = cfg->mode;
    p->n = n_blocks;
    p->compute = compute;
    p->slot_holds[0] = p->slot_holds[1] = -1;
    p->last_slot = -1;
    p->b = calloc((size_t)n_blocks, sizeof *p->b);
    p->streamed = calloc((size_t)n_blocks, sizeof *p->streamed);
    err e = (!p->b || !p->streamed) ? err_set(ERR_NOMEM, "out of memory") : create(p, cfg, blocks);
    if (!e) e = gpu_sync();
    if (e) {
        wp_free(p);
        return e;
    }
    static const char *names[] = {"BF16 resident", "DF11 resident, decoded per block",
                                  "DF11 streamed from host"};
    LOG_INFO("weights: %s, %d blocks, %.2f GiB on the GPU", names[p->mode], p->n,
             p->device_bytes / 1073741824.0);
    if (p->n_streamed)
        LOG_INFO("weights: %d of %d blocks stream from pinned host memory", p->n_streamed, p->n);
    *out = p;
    return ERR_OK;
}

void wp_free(weight_provider *p) {
    if (!p) return;
    gpu_sync();
    for (int i = 0; p->b && i < p->n; i++) {
        blk *b = &p->b[i];
        for (int k = 0; k < 4; k++)
            df11_cuda_plan_free(b->plan[k]);
        gpu_host_free(b->h_blobs);
        free(b->off);
        free(b->blob_off);
        free(b->parsed);
    }
    for (int s = 0; s < 2; s++) {
        gpu_free(p->slot[s]);
        gpu_free(p->staging[s]);
        gpu_event_destroy(p->ready[s]);
        gpu_event_destroy(p->free_[s]);
        gpu_event_destroy(p->staged[s]);
        gpu_event_destroy(p->consumed[s]);
    }
    gpu_free(p->d_resident);
    gpu_free(p->d_blob_pool);
    gpu_stream_destroy(p->decode);
    gpu_stream_destroy(p->copy);
    free(p->b);
    free(p->streamed);
    free(p);
}

/* CUDA errors in the loop leave nothing to recover (docs/ARCHITECTURE.md "Errors") */
static void ok(err e) {
    if (e) {
        fprintf(stderr, "weight provider: %s\n", err_msg());
        abort();
    }
}

/* Copies the next streamed blobs in, up to two ahead of the decodes. */
static void issue_copies(weight_provider *p) {
    while (p->n_streamed && p->n_copy < p->n_dec + 2) {
        const int g = (int)(p->n_copy & 1);
        const blk *b = &p->b[p->streamed[p->n_copy % (uint64_t)p->n_streamed]];
        ok(gpu_stream_wait(p->copy, p->consumed[g]));
        ok(gpu_upload_async(p->staging[g], b->h_blobs, b->blob_bytes, p->copy));
        ok(gpu_event_record(p->staged[g], p->copy));
        p->n_copy++;
    }
}

/* Decodes block i into slot s on the decode stream, once slot s is free. */
static void decode_into(weight_provider *p, int i, int s) {
    blk *b = &p->b[i];
    ok(gpu_stream_wait(p->decode, p->free_[s]));
    if (b->stream_pos < 0) {
        ok(df11_cuda_decode(b->plan[s], p->decode));
    } else {
        /* streamed blocks come in their cyclic order */
        CHECK(p->streamed[p->n_dec % (uint64_t)p->n_streamed] == i);
        issue_copies(p);
        const int g = (int)(p->n_dec & 1);
        ok(gpu_stream_wait(p->decode, p->staged[g]));
        ok(df11_cuda_decode(b->plan[2 * s + g], p->decode));
        ok(gpu_event_record(p->consumed[g], p->decode));
        p->n_dec++;
        issue_copies(p);
    }
    ok(gpu_event_record(p->ready[s], p->decode));
    p->slot_holds[s] = i;
    p->slot_fresh[s] = 1;
}

int wp_acquire(weight_provider *p, int i, tensor *w) {
    CHECK(i >= 0 && i < p->n);
    blk *b = &p->b[i];
    const uint8_t *base;
    int fresh;
    if (p->mode == WP_RESIDENT) {
        base = b->d_bf16;
        fresh = !b->handed;
        b->handed = 1;
    } else {
        int s = p->slot_holds[0] == i ? 0 : p->slot_holds[1] == i ? 1 : -1;
        if (s < 0) {
            s = p->last_slot < 0 ? 0 : 1 - p->last_slot;
            decode_into(p, i, s);
        }
        ok(gpu_stream_wait(p->compute, p->ready[s]));
        p->last_slot = s;
        base = p->slot[s];
        fresh = p->slot_fresh[s];
        p->slot_fresh[s] = 0;
        const int next = (i + 1) % p->n;
        if (p->n > 1 && p->slot_holds[1 - s] != next) decode_into(p, next, 1 - s);
    }
    for (int j = 0; j < b->n; j++)
        w[j] = tensor_make((void *)(base + b->off[j]), DTYPE_BF16, TENSOR_CUDA, b->w[j].ndim,
                           b->w[j].shape);
    return fresh;
}

void wp_release(weight_provider *p, int i) {
    if (p->mode == WP_RESIDENT) return;
    const int s = p->slot_holds[0] == i ? 0 : 1;
    CHECK(p->slot_holds[s] == i);
    ok(gpu_event_record(p->free_[s], p->compute));
}

size_t wp_device_bytes(const weight_provider *p) { return p->device_bytes; }
int wp_streamed_blocks(const weight_provider *p) { return p->n_streamed; }
