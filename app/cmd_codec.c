/* cmd_codec: df11 compress | decompress | verify | inspect. */
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cli.h"
#include "app/progress.h"
#include "df11/container.h"
#include "df11/cuda/df11_cuda.h"
#include "df11/tree.h"

typedef struct codec_args {
    const char *pos[2];
    int npos, force, gpu, json, tensors, totals;
    df11_params params;
} codec_args;

/* Parses a codec command's options; returns -1 when all is well, else the exit code. */
static int parse_args(const char *cmd, int argc, char **argv, int want_pos, codec_args *a) {
    memset(a, 0, sizeof *a);
    df11_params_init(&a->params);
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        long x;
        int r;
        if (only_pos || argv[i][0] != '-' || !argv[i][1]) {
            if (a->npos == want_pos)
                return cli_usage_error(cmd, "%s: unexpected argument \"%s\"", cmd, argv[i]);
            a->pos[a->npos++] = argv[i];
        } else if (!strcmp(argv[i], "--")) only_pos = 1;
        else if (cli_opt(argc, argv, &i, "-f", "--force", NULL)) a->force = 1;
        else if (cli_opt(argc, argv, &i, NULL, "--gpu", NULL)) a->gpu = 1;
        else if (cli_opt(argc, argv, &i, NULL, "--json", NULL)) a->json = 1;
        else if (cli_opt(argc, argv, &i, NULL, "--tensors", NULL)) a->tensors = 1;
        else if (cli_opt(argc, argv, &i, NULL, "--totals", NULL)) a->totals = 1;
        else if ((r = cli_opt(argc, argv, &i, "-j", "--threads", &v))) {
            if (r < 0 || !cli_int("--threads", v, 1, 4096, &x)) return CLI_EXIT_USAGE;
            omp_set_num_threads((int)x);
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--table-log", &v))) {
            if (r < 0 || !cli_int("--table-log", v, 5, 12, &x)) return CLI_EXIT_USAGE;
            a->params.table_log = (int)x;
        } else if ((r = cli_opt(argc, argv, &i, NULL, "--steps", &v))) {
            if (r < 0 || !cli_int("--steps", v, 1, 65536, &x)) return CLI_EXIT_USAGE;
            a->params.steps = (uint32_t)x;
        } else return cli_usage_error(cmd, "%s: unknown option \"%s\"", cmd, argv[i]);
    }
    if (a->npos != want_pos)
        return cli_usage_error(cmd, "%s: expected %d path%s, got %d", cmd, want_pos,
                               want_pos > 1 ? "s" : "", a->npos);
    return -1;
}

static int run_convert(const char *cmd, df11_op op, int argc, char **argv, const cli_common *c) {
    codec_args a;
    int rc = parse_args(cmd, argc, argv, 2, &a);
    if (rc >= 0) return rc;
    progress pg;
    progress_init(&pg, cmd, c->quiet);
    df11_progress pr = {progress_update, &pg};
    err e = df11_convert_path(op, a.pos[0], a.pos[1], &a.params, a.force, &pr);
    if (e) {
        if (pg.tty && !c->quiet) fputc('\n', stderr);
        return cli_fail();
    }
    progress_finish(&pg);
    return 0;
}

int cmd_compress(int argc, char **argv, const cli_common *c) {
    return run_convert("compress", DF11_OP_COMPRESS, argc, argv, c);
}

int cmd_decompress(int argc, char **argv, const cli_common *c) {
    return run_convert("decompress", DF11_OP_DECOMPRESS, argc, argv, c);
}

int cmd_verify(int argc, char **argv, const cli_common *c) {
    codec_args a;
    int rc = parse_args("verify", argc, argv, 1, &a);
    if (rc >= 0) return rc;
    progress pg;
    progress_init(&pg, "verify", c->quiet);
    df11_progress pr = {progress_update, &pg};
    if (df11_verify_path(a.pos[0], &pr)) return cli_fail();
    progress_finish(&pg);
    if (a.gpu) {
        char **files = NULL;
        int n = 0;
        if (df11_list_checkpoints(a.pos[0], &files, &n)) return cli_fail();
        err e = ERR_OK;
        for (int i = 0; i < n && !e; i++) e = cli_verify_gpu_file(files[i]);
        for (int i = 0; i < n; i++) free(files[i]);
        free(files);
        if (e) return cli_fail();
        if (!c->quiet) fprintf(stderr, "df11: verify: GPU decoder matches the CPU decoder\n");
    }
    printf("%s: OK\n", a.pos[0]);
    return 0;
}

/* inspect */

typedef struct row_totals {
    uint64_t orig, stored, n_comp, comp_orig, code, raw, side;
    double entropy_sum; /* entropy * n, over compressed tensors */
} row_totals;

static void shape_text(const df11_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static err inspect_tensor(const df11_ckpt *ck, const df11_tensor *t, df11_stats *st) {
    memset(st, 0, sizeof *st);
    st->n = t->numel;
    if (!t->compressed) {
        if (t->dtype == DTYPE_BF16 && t->numel)
            st->entropy_bits = df11_exponent_entropy((const uint16_t *)t->data, t->numel);
        return ERR_OK;
    }
    uint16_t *buf = malloc(t->numel * 2);
    FAIL_IF(!buf, ERR_NOMEM, "out of memory for tensor '%s'", t->name);
    df11_blob b;
    err e = df11_ckpt_read(ck, t, buf);
    if (!e) e = df11_blob_parse(t->data, t->stored_bytes, &b);
    if (!e) df11_blob_stats(&b, buf, st);
    free(buf);
    return e;
}

static void print_row(const df11_tensor *t, const df11_stats *s) {
    char shape[64], o[32], st[32];
    shape_text(t, shape, sizeof shape);
    uint64_t ob = t->end - t->begin;
    printf("%-44.44s %-5s %-16.16s %10s %10s", t->name, dtype_name(t->dtype), shape,
           progress_bytes(o, sizeof o, (double)ob), progress_bytes(st, sizeof st, (double)t->stored_bytes));
    if (!t->compressed) {
        printf("  %6.2f%%  stored as is\n", ob ? 100.0 * (double)t->stored_bytes / (double)ob : 100.0);
        return;
    }
    double n = (double)s->n, code = 8.0 * (double)s->code_bytes / n, side = 8.0 * (double)s->side_bytes / n;
    printf("  %6.2f%%  %6.3f + %d + %6.4f = %7.4f  bound %7.4f  +%.4f\n",
           100.0 * (double)t->stored_bytes / (double)ob, code, 8, side, code + 8 + side,
           s->entropy_bits + 8, code + 8 + side - s->entropy_bits - 8);
}

static cJSON *json_row(const df11_tensor *t, const df11_stats *s) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "name", t->name);
    cJSON_AddStringToObject(r, "dtype", dtype_name(t->dtype));
    cJSON *sh = cJSON_AddArrayToObject(r, "shape");
    for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
    cJSON_AddNumberToObject(r, "original_bytes", (double)(t->end - t->begin));
    cJSON_AddNumberToObject(r, "stored_bytes", (double)t->stored_bytes);
    cJSON_AddBoolToObject(r, "compressed", t->compressed);
    if (t->compressed) {
        double n = (double)s->n;
        cJSON_AddNumberToObject(r, "bits_exponent_code", 8.0 * (double)s->code_bytes / n);
        cJSON_AddNumberToObject(r, "bits_raw", 8.0);
        cJSON_AddNumberToObject(r, "bits_side", 8.0 * (double)s->side_bytes / n);
        cJSON_AddNumberToObject(r, "entropy_bound_bits", s->entropy_bits + 8);
    }
    return r;
}

static void add_totals(row_totals *tot, const df11_tensor *t, const df11_stats *s) {
    tot->orig += t->end - t->begin;
    tot->stored += t->stored_bytes;
    if (!t->compressed) return;
    tot->n_comp += s->n;
    tot->comp_orig += t->end - t->begin;
    tot->code += s->code_bytes;
    tot->raw += s->raw_bytes;
    tot->side += s->side_bytes;
    tot->entropy_sum += s->entropy_bits * (double)s->n;
}

static err inspect_file(const char *path, const codec_args *a, row_totals *tot, cJSON *jfiles) {
    df11_ckpt *ck = NULL;
    TRY(df11_ckpt_open(path, &ck));
    int n = df11_ckpt_count(ck);
    int rows = !a->totals && (a->tensors || n <= 40);
    cJSON *jf = a->json ? cJSON_CreateObject() : NULL, *jt = NULL;
    if (jf) {
        cJSON_AddStringToObject(jf, "path", path);
        cJSON_AddBoolToObject(jf, "df11", df11_ckpt_is_df11(ck));
        jt = cJSON_AddArrayToObject(jf, "tensors");
        cJSON_AddItemToArray(jfiles, jf);
    } else {
        printf("%s: %s, %d tensors\n", path, df11_ckpt_is_df11(ck) ? "DF11" : "plain safetensors", n);
        if (rows)
            printf("%-44s %-5s %-16s %10s %10s  %7s  %s\n", "tensor", "dtype", "shape", "original",
                   "stored", "ratio", "bits/weight: exponent code + raw + side = total");
    }
    err e = ERR_OK;
    for (int i = 0; i < n && !e; i++) {
        const df11_tensor *t = df11_ckpt_at(ck, i);
        df11_stats s;
        e = inspect_tensor(ck, t, &s);
        if (e) break;
        add_totals(tot, t, &s);
        if (jt) cJSON_AddItemToArray(jt, json_row(t, &s));
        else if (rows) print_row(t, &s);
    }
    df11_ckpt_close(ck);
    return e;
}

static void print_totals(const row_totals *t, cJSON *root) {
    double n = (double)t->n_comp;
    double code = n ? 8.0 * (double)t->code / n : 0, side = n ? 8.0 * (double)t->side / n : 0;
    double bound = n ? t->entropy_sum / n + 8 : 0;
    if (root) {
        cJSON *j = cJSON_AddObjectToObject(root, "total");
        cJSON_AddNumberToObject(j, "original_bytes", (double)t->orig);
        cJSON_AddNumberToObject(j, "stored_bytes", (double)t->stored);
        cJSON_AddNumberToObject(j, "compressed_elements", n);
        cJSON_AddNumberToObject(j, "bits_exponent_code", code);
        cJSON_AddNumberToObject(j, "bits_side", side);
        cJSON_AddNumberToObject(j, "entropy_bound_bits", bound);
        return;
    }
    char o[32], s[32];
    printf("total: %s -> %s tensor data (%.2f%%)\n", progress_bytes(o, sizeof o, (double)t->orig),
           progress_bytes(s, sizeof s, (double)t->stored),
           t->orig ? 100.0 * (double)t->stored / (double)t->orig : 100.0);
    if (n)
        printf("compressed tensors: %.0f weights, %.4f bits/weight = %.4f exponent code + 8 raw + "
               "%.4f side; entropy bound %.4f (+%.4f)\n",
               n, code + 8 + side, code, side, bound, code + 8 + side - bound);
}

int cmd_inspect(int argc, char **argv, const cli_common *c) {
    codec_args a;
    int rc = parse_args("inspect", argc, argv, 1, &a);
    if (rc >= 0) return rc;
    char **files = NULL;
    int n = 0;
    if (df11_list_checkpoints(a.pos[0], &files, &n)) return cli_fail();
    row_totals tot;
    memset(&tot, 0, sizeof tot);
    cJSON *root = a.json ? cJSON_CreateObject() : NULL;
    cJSON *jfiles = root ? cJSON_AddArrayToObject(root, "files") : NULL;
    err e = ERR_OK;
    for (int i = 0; i < n && !e; i++) e = inspect_file(files[i], &a, &tot, jfiles);
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    if (e) {
        cJSON_Delete(root);
        return cli_fail();
    }
    print_totals(&tot, root);
    if (root) {
        char *s = cJSON_Print(root);
        puts(s);
        free(s);
        cJSON_Delete(root);
    }
    return 0;
}
