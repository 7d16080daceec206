/* tree: file / sharded index / folder dispatch for compress, decompress and verify. */
#include "df11/tree.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/safetensors.h"

#define PATH_MAX_LEN 4096

/* Progress over several files, in input bytes: each file's own progress (which may count
 * original bytes) is scaled to its input size and shifted by the files before it. */
typedef struct multi_progress {
    const df11_progress *outer;
    uint64_t before, total, current; /* current: the input size of the file being converted */
} multi_progress;

static void multi_fn(void *ctx, uint64_t done, uint64_t total, const char *what) {
    multi_progress *m = ctx;
    uint64_t at = total ? (uint64_t)((double)done / (double)total * (double)m->current) : 0;
    if (m->outer && m->outer->fn) m->outer->fn(m->outer->ctx, m->before + at, m->total, what);
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static err convert_one(df11_op op, const char *in, const char *out, const df11_params *p,
                       multi_progress *mp) {
    df11_progress pr = {multi_fn, mp};
    mp->current = file_size(in);
    err e;
    if (op == DF11_OP_COMPRESS) e = df11_compress_file(in, out, p, &pr);
    else if (op == DF11_OP_DECOMPRESS) e = df11_decompress_file(in, out, &pr);
    else e = df11_verify_file(in, &pr);
    mp->before += file_size(in);
    return e;
}

/* In a folder, a safetensors file is converted when it is of the kind the op takes (plain for
 * compress, DF11 for decompress) and copied otherwise. */
static err file_kind(const char *path, int *is_st, int *is_df11) {
    *is_st = fio_has_suffix(path, ".safetensors");
    *is_df11 = 0;
    if (!*is_st) return ERR_OK;
    st_file *f = NULL;
    TRY(st_open(path, &f));
    *is_df11 = st_meta(f, DF11_META_VERSION) != NULL;
    st_close(f);
    return ERR_OK;
}

static err convert_folder(df11_op op, const char *in, const char *out, const df11_params *p,
                          multi_progress *mp) {
    char **files = NULL;
    int n = 0;
    TRY(fio_list_files(in, &files, &n));
    char src[PATH_MAX_LEN], dst[PATH_MAX_LEN];
    err e = ERR_OK;
    mp->total = 0;
    for (int i = 0; i < n && !e; i++)
        if (!(e = fio_join(src, sizeof src, in, files[i]))) mp->total += file_size(src);
    int converted = 0;
    for (int i = 0; i < n && !e; i++) {
        int is_st, is_df11;
        e = fio_join(src, sizeof src, in, files[i]);
        if (!e) e = fio_join(dst, sizeof dst, out, files[i]);
        if (!e) e = file_kind(src, &is_st, &is_df11);
        if (e) break;
        int take = is_st && (op == DF11_OP_COMPRESS ? !is_df11 : is_df11);
        if (op == DF11_OP_VERIFY) {
            if (take) e = convert_one(op, src, NULL, p, mp), converted++;
            else mp->before += file_size(src);
            continue;
        }
        char *slash = strrchr(dst, '/');
        *slash = 0;
        e = fio_mkdirs(dst);
        *slash = '/';
        if (!e && take) e = convert_one(op, src, dst, p, mp), converted++;
        else if (!e) e = fio_copy_file(src, dst), mp->before += file_size(src);
    }
    fio_list_free(files, n);
    if (!e && op != DF11_OP_COMPRESS && !converted)
        e = err_set(ERR_ARG, "%s: no DF11 checkpoint in this folder", in);
    return e;
}

static err convert_index(df11_op op, const char *in, const char *out, const df11_params *p,
                         multi_progress *mp) {
    st_index *x = NULL;
    TRY(st_index_open(in, &x));
    char dir[PATH_MAX_LEN], dst[PATH_MAX_LEN];
    snprintf(dir, sizeof dir, "%s", out ? out : ".");
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    err e = out ? fio_mkdirs(dir) : ERR_OK;
    for (int i = 0; i < st_index_shard_count(x); i++) mp->total += file_size(st_index_shard_path(x, i));
    for (int i = 0; i < st_index_shard_count(x) && !e; i++) {
        const char *shard = st_index_shard_path(x, i), *base = strrchr(shard, '/');
        base = base ? base + 1 : shard;
        e = fio_join(dst, sizeof dst, dir, base);
        if (!e) e = convert_one(op, shard, out ? dst : NULL, p, mp);
    }
    if (!e && out) e = fio_copy_file(in, out);
    st_index_close(x);
    return e;
}

/* Folders are built at "<out>.tmp.<pid>" and renamed into place (the old one, with force, is
 * moved aside first and removed last). */
static err convert_folder_atomic(df11_op op, const char *in, const char *out, const df11_params *p,
                                 int force, multi_progress *mp) {
    char tmp[PATH_MAX_LEN], old[PATH_MAX_LEN];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid());
    snprintf(old, sizeof old, "%s.old.%d", out, (int)getpid());
    TRY(fio_mkdirs(tmp));
    err e = convert_folder(op, in, tmp, p, mp);
    int had_old = 0;
    if (!e && fio_exists(out)) {
        if (rename(out, old) != 0) e = err_set(ERR_IO, "%s: cannot move aside", out);
        had_old = 1;
    }
    if (!e && rename(tmp, out) != 0) e = err_set(ERR_IO, "%s: cannot rename into place", out);
    if (e) fio_remove_tree(tmp);
    else if (had_old) fio_remove_tree(old);
    return e;
}

err df11_convert_path(df11_op op, const char *in, const char *out, const df11_params *p,
                      int force, const df11_progress *pr) {
    multi_progress mp = {pr, 0, 0, 0};
    FAIL_IF(!fio_exists(in), ERR_IO, "%s: no such file or folder", in);
    FAIL_IF(fio_exists(out) && !force, ERR_EXISTS, "%s: exists (use --force to replace it)", out);
    FAIL_IF(fio_same_file(in, out) || fio_path_inside(out, in) || fio_path_inside(in, out), ERR_ARG,
            "%s: output would overwrite or sit inside the input %s", out, in);
    if (fio_is_dir(in)) {
        FAIL_IF(fio_exists(out) && !fio_is_dir(out), ERR_ARG, "%s: input is a folder, output is not",
                out);
        return convert_folder_atomic(op, in, out, p, force, &mp);
    }
    FAIL_IF(fio_is_dir(out), ERR_ARG, "%s: input is a file, output is a folder", out);
    if (fio_has_suffix(in, ".index.json")) return convert_index(op, in, out, p, &mp);
    mp.total = file_size(in);
    return convert_one(op, in, out, p, &mp);
}

err df11_verify_path(const char *path, const df11_progress *pr) {
    multi_progress mp = {pr, 0, 0, 0};
    FAIL_IF(!fio_exists(path), ERR_IO, "%s: no such file or folder", path);
    if (fio_is_dir(path)) return convert_folder(DF11_OP_VERIFY, path, path, NULL, &mp);
    if (fio_has_suffix(path, ".index.json")) return convert_index(DF11_OP_VERIFY, path, NULL, NULL, &mp);
    mp.total = file_size(path);
    return convert_one(DF11_OP_VERIFY, path, NULL, NULL, &mp);
}

err df11_list_checkpoints(const char *path, char ***files, int *count) {
    *files = NULL;
    *count = 0;
    FAIL_IF(!fio_exists(path), ERR_IO, "%s: no such file or folder", path);
    char **list = NULL;
    int n = 0;
    char buf[PATH_MAX_LEN];
    if (fio_is_dir(path)) {
        TRY(fio_list_files(path, &list, &n));
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (!fio_has_suffix(list[i], ".safetensors") || fio_join(buf, sizeof buf, path, list[i])) {
                free(list[i]);
                continue;
            }
            free(list[i]);
            list[k++] = strdup(buf);
        }
        n = k;
    } else if (fio_has_suffix(path, ".index.json")) {
        st_index *x = NULL;
        TRY(st_index_open(path, &x));
        n = st_index_shard_count(x);
        list = calloc((size_t)(n ? n : 1), sizeof *list);
        for (int i = 0; list && i < n; i++) list[i] = strdup(st_index_shard_path(x, i));
        st_index_close(x);
    } else {
        n = 1;
        list = calloc(1, sizeof *list);
        if (list) list[0] = strdup(path);
    }
    FAIL_IF(!list, ERR_NOMEM, "out of memory");
    *files = list;
    *count = n;
    return ERR_OK;
}
