/* safetensors_index: sharded checkpoints through *.safetensors.index.json (API in
 * core/safetensors.h). */
#include "core/safetensors.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/arena.h"
#include "core/fileio.h"
#include "core/safetensors_internal.h"
#define NM "%.200s"

/* ---- sharded index ---- */

struct st_index {
    arena ar;
    const char *path;
    const char **shards; /* full paths, first-appearance order */
    st_file **open;      /* lazily opened, parallel to shards */
    int nshards;
    name_ix *map; /* tensor name -> shard, sorted by name */
    int nmap;
};

/* Shards must stay inside the index's folder: no absolute paths, no ".." components. */
static int shard_name_ok(const char *s) {
    if (!s[0] || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        p += n;
        if (*p) p++;
    }
    return 1;
}

static char *shard_path(st_index *x, const char *name) {
    const char *slash = strrchr(x->path, '/');
    if (!slash) return arena_strdup(&x->ar, name);
    size_t dl = (size_t)(slash - x->path) + 1, nl = strlen(name);
    char *p = arena_alloc(&x->ar, dl + nl + 1);
    if (!p) return NULL;
    memcpy(p, x->path, dl);
    memcpy(p + dl, name, nl + 1);
    return p;
}

/* Distinct shard names in first-appearance order, without a quadratic scan: sort (name,
 * entry) pairs; the first of each run of equal names is where that shard first appears. */
static err assign_shards(st_index *x, const char **file_of, int n) {
    name_ix *v = malloc((size_t)n * sizeof *v + 1);
    int *leader = malloc((size_t)n * sizeof *leader + 1);
    x->shards = arena_alloc(&x->ar, (size_t)n * sizeof *x->shards + 1);
    err e = ERR_OK;
    if (!v || !leader || !x->shards) e = err_set(ERR_NOMEM, "%s: out of memory", x->path);
    for (int i = 0; e == ERR_OK && i < n; i++)
        v[i] = (name_ix){file_of[i], i};
    if (e == ERR_OK) {
        st_sort_find_dup(v, n);
        for (int i = 0; i < n; i++)
            leader[v[i].idx] =
                (i && strcmp(v[i].name, v[i - 1].name) == 0) ? leader[v[i - 1].idx] : v[i].idx;
        for (int i = 0; i < n && e == ERR_OK; i++) {
            if (leader[i] != i) {
                x->map[i].idx = x->map[leader[i]].idx;
                continue;
            }
            x->map[i].idx = x->nshards;
            x->shards[x->nshards] = shard_path(x, file_of[i]);
            if (!x->shards[x->nshards++]) e = err_set(ERR_NOMEM, "%s: out of memory", x->path);
        }
    }
    free(v);
    free(leader);
    return e;
}

static err parse_weight_map(st_index *x, const cJSON *root) {
    const cJSON *wm =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    FAIL_IF(!cJSON_IsObject(wm), ERR_FORMAT, "%s: no \"weight_map\" object", x->path);
    int n = cJSON_GetArraySize(wm), i = 0;
    x->map = arena_alloc(&x->ar, (size_t)n * sizeof *x->map + 1);
    const char **file_of = malloc((size_t)n * sizeof *file_of + 1);
    err e = (!x->map || !file_of) ? err_set(ERR_NOMEM, "%s: out of memory", x->path) : ERR_OK;
    for (const cJSON *c = wm->child; c && e == ERR_OK; c = c->next, i++) {
        if (!cJSON_IsString(c))
            e = err_set(ERR_FORMAT, "%s: tensor \"" NM "\": shard must be a file name", x->path,
                        c->string);
        else if (!shard_name_ok(c->valuestring))
            e = err_set(ERR_FORMAT,
                        "%s: tensor \"" NM "\": shard \"" NM "\" is outside the "
                        "index's folder",
                        x->path, c->string, c->valuestring);
        else if (!(x->map[i].name = arena_strdup(&x->ar, c->string)))
            e = err_set(ERR_NOMEM, "%s: out of memory", x->path);
        file_of[i] = e == ERR_OK ? c->valuestring : NULL;
    }
    if (e == ERR_OK) e = assign_shards(x, file_of, n);
    free(file_of);
    TRY(e);
    x->nmap = n;
    /* map[i].idx now holds shard ids; re-sort by name (ties cannot matter: they are errors) */
    int dup = st_sort_find_dup(x->map, n);
    FAIL_IF(dup >= 0, ERR_FORMAT, "%s: tensor \"" NM "\" appears twice in weight_map", x->path,
            x->map[dup].name);
    x->open = calloc((size_t)x->nshards + 1, sizeof *x->open);
    FAIL_IF(!x->open, ERR_NOMEM, "%s: out of memory", x->path);
    return ERR_OK;
}

static err index_parse(st_index *x) {
    fio_map m;
    TRY(fio_map_open(x->path, &m));
    size_t bad_at = 0;
    const char *bad = st_scan_header(m.data, m.size, &bad_at);
    cJSON *root = NULL;
    err e = bad ? err_set(ERR_FORMAT, "%s: has %s at byte %zu", x->path, bad, bad_at)
                : st_parse_json(x->path, "index", m.data, m.size, &root);
    fio_map_close(&m);
    if (e == ERR_OK) e = parse_weight_map(x, root);
    cJSON_Delete(root);
    return e;
}

err st_index_open(const char *index_path, st_index **out) {
    *out = NULL;
    st_index *x = calloc(1, sizeof *x);
    FAIL_IF(!x, ERR_NOMEM, "%s: out of memory", index_path);
    x->path = arena_strdup(&x->ar, index_path);
    err e = x->path ? index_parse(x) : err_set(ERR_NOMEM, "%s: out of memory", index_path);
    if (e != ERR_OK) {
        st_index_close(x);
        return e;
    }
    *out = x;
    return ERR_OK;
}

void st_index_close(st_index *x) {
    if (!x) return;
    for (int i = 0; x->open && i < x->nshards; i++)
        st_close(x->open[i]);
    free(x->open);
    arena_free(&x->ar);
    free(x);
}

int st_index_shard_count(const st_index *x) { return x->nshards; }

const char *st_index_shard_path(const st_index *x, int i) {
    CHECK(i >= 0 && i < x->nshards);
    return x->shards[i];
}

err st_index_find(st_index *x, const char *name, const st_file **file, const st_tensor **t) {
    if (file) *file = NULL;
    if (t) *t = NULL;
    int s = st_lookup(x->map, x->nmap, name);
    FAIL_IF(s < 0, ERR_FORMAT, "%s: tensor \"" NM "\" is not in the weight_map", x->path, name);
    if (!x->open[s]) TRY(st_open(x->shards[s], &x->open[s]));
    const st_tensor *found = st_find(x->open[s], name);
    FAIL_IF(!found, ERR_FORMAT, "%s: tensor \"" NM "\" is listed for shard %s but absent from it",
            x->path, name, x->shards[s]);
    if (file) *file = x->open[s];
    if (t) *t = found;
    return ERR_OK;
}
