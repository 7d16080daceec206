/* profile: per-op GPU times of a CUDA op context, for finding where a forward's time goes.
 * Off unless DF11_PROFILE_OPS is set (read when a context is created); then ops.c brackets
 * every op with two events on the ops' stream, and the context prints, when it is freed, one
 * line per op and shape: calls, total and mean time, TFLOP/s where the op counts its FLOPs,
 * and its share, with the gaps between ops (waits on another stream, launch latency) beside.
 * A shape's first call (plans chosen, kernels compiled) is shown apart and left out of the
 * rest.
 * The events are read back every PROF_BATCH ops (a stream sync), so a profiled run is slower
 * and overlaps less than a plain one: the shares are the point, not the total. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/common.cuh"

#define PROF_BATCH 4096
#define PROF_KEYS 256

struct prof_key {
    char name[72];
    long calls; /* the first one included */
    double ms, flops, first_ms; /* ms and flops without the first call */
};

struct prof_rec {
    cudaEvent_t a, b;
    int key, first;
};

struct opcu_prof {
    prof_rec rec[PROF_BATCH];
    int n, made; /* records in use; event pairs created */
    prof_key key[PROF_KEYS];
    int nkeys;
    double ops_ms, span_ms; /* op time, and first begin to last end, over the batches */
};

static void prof_flush(opcu_prof *p) {
    if (!p->n) return;
    CU_OK(cudaEventSynchronize(p->rec[p->n - 1].b));
    for (int i = 0; i < p->n; i++) {
        float ms = 0;
        CU_OK(cudaEventElapsedTime(&ms, p->rec[i].a, p->rec[i].b));
        prof_key *k = &p->key[p->rec[i].key];
        if (p->rec[i].first) {
            k->first_ms = ms;
        } else {
            k->ms += ms;
            p->ops_ms += ms;
        }
    }
    float span = 0;
    CU_OK(cudaEventElapsedTime(&span, p->rec[0].a, p->rec[p->n - 1].b));
    p->span_ms += span;
    p->n = 0;
}

static int by_time(const void *x, const void *y) {
    const double a = ((const prof_key *)x)->ms, b = ((const prof_key *)y)->ms;
    return (a < b) - (a > b);
}

extern "C" {

struct opcu_prof *opcu_prof_create(void) {
    const char *e = getenv("DF11_PROFILE_OPS");
    if (!e || !*e || !strcmp(e, "0")) return NULL;
    return (opcu_prof *)calloc(1, sizeof(opcu_prof));
}

void opcu_prof_begin(op_ctx *c) {
    opcu_prof *p = c->cu->prof;
    if (p->n == PROF_BATCH) prof_flush(p);
    prof_rec *r = &p->rec[p->n];
    if (p->n == p->made) {
        CU_OK(cudaEventCreate(&r->a));
        CU_OK(cudaEventCreate(&r->b));
        p->made++;
    }
    CU_OK(cudaEventRecord(r->a, c->cu->stream));
}

void opcu_prof_end(op_ctx *c, const char *name, double flops) {
    opcu_prof *p = c->cu->prof;
    prof_rec *r = &p->rec[p->n];
    CU_OK(cudaEventRecord(r->b, c->cu->stream));
    int k = 0;
    while (k < p->nkeys && strcmp(p->key[k].name, name)) k++;
    if (k == p->nkeys) {
        if (k == PROF_KEYS) k--; /* the last line gathers the rest */
        else snprintf(p->key[p->nkeys++].name, sizeof p->key[0].name, "%s", name);
    }
    r->first = !p->key[k].calls++;
    if (!r->first) p->key[k].flops += flops;
    r->key = k;
    p->n++;
}

void opcu_prof_free(struct opcu_prof *p) {
    if (!p) return;
    prof_flush(p);
    qsort(p->key, (size_t)p->nkeys, sizeof p->key[0], by_time);
    double first = 0;
    for (int i = 0; i < p->nkeys; i++)
        first += p->key[i].first_ms;
    fprintf(stderr,
            "ops profile (DF11_PROFILE_OPS): %.1f ms in ops over a span of %.1f ms, first calls "
            "apart (%.1f ms)\n",
            p->ops_ms, p->span_ms, first);
    fprintf(stderr, "%-48s %7s %10s %9s %8s %6s %9s\n", "op", "calls", "ms", "ms/call",
            "TFLOP/s", "share", "first ms");
    for (int i = 0; i < p->nkeys; i++) {
        const prof_key *k = &p->key[i];
        const long n = k->calls - 1;
        char rate[16] = "", mean[16] = "";
        if (k->flops > 0 && k->ms > 0) snprintf(rate, sizeof rate, "%.0f", k->flops / k->ms / 1e9);
        if (n > 0) snprintf(mean, sizeof mean, "%.4f", k->ms / (double)n);
        fprintf(stderr, "%-48s %7ld %10.2f %9s %8s %5.1f%% %9.3f\n", k->name, n, k->ms, mean, rate,
                100.0 * k->ms / (p->ops_ms > 0 ? p->ops_ms : 1), k->first_ms);
    }
    for (int i = 0; i < p->made; i++) {
        cudaEventDestroy(p->rec[i].a);
        cudaEventDestroy(p->rec[i].b);
    }
    free(p);
}

} /* extern "C" */
