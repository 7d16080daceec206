/* convert: one safetensors file to a DF11 file and back, and verification (FORMAT.md
 * "Container"). Compressed blobs are written first, each a multiple of 256 bytes after a
 * 256-aligned header, so every blob starts 256-aligned in the file; the tensors kept as they
 * are follow, in the original order. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "df11/container.h"

static void progress(const df11_progress *pr, uint64_t done, uint64_t total, const char *what) {
    if (pr && pr->fn) pr->fn(pr->ctx, done, total, what);
}

typedef struct packed {
    uint8_t *blob; /* NULL: stored as it is */
    size_t len;
} packed;

/* Decides and encodes one tensor: BF16 tensors of at least DF11_MIN_ELEMS elements whose blob
 * is smaller than the original bytes are compressed. */
static err pack_tensor(const st_tensor *t, const df11_params *p, packed *out) {
    out->blob = NULL;
    if (t->dtype != DTYPE_BF16 || t->numel < DF11_MIN_ELEMS) return ERR_OK;
    /* the mapped bytes are 2-aligned only if the original offsets were; copy if not */
    const uint16_t *src = (const uint16_t *)t->data;
    uint16_t *copy = NULL;
    if ((uintptr_t)t->data % 2) {
        copy = malloc(t->numel * 2);
        FAIL_IF(!copy, ERR_NOMEM, "out of memory");
        memcpy(copy, t->data, t->numel * 2);
        src = copy;
    }
    err e = df11_encode(src, t->numel, p, &out->blob, &out->len);
    free(copy);
    TRY(e);
    if (out->len >= t->numel * 2) {
        free(out->blob);
        out->blob = NULL;
    }
    return ERR_OK;
}

static err add_metadata(st_writer *w, const st_file *f, const packed *pk) {
    size_t hlen;
    const char *h = st_header(f, &hlen);
    char *hdr = malloc(hlen + 1);
    cJSON *crcs = cJSON_CreateObject();
    char *crc_json = NULL;
    err e = (!hdr || !crcs) ? err_set(ERR_NOMEM, "out of memory") : ERR_OK;
    for (int i = 0; !e && i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (pk[i].blob) continue;
        char hex[9];
        snprintf(hex, sizeof hex, "%08x", df11_crc32(t->data, t->end - t->begin));
        if (!cJSON_AddStringToObject(crcs, t->name, hex)) e = err_set(ERR_NOMEM, "out of memory");
    }
    if (!e) {
        memcpy(hdr, h, hlen);
        hdr[hlen] = 0;
        if (strlen(hdr) != hlen) e = err_set(ERR_UNSUPPORTED, "header contains a NUL byte");
    }
    if (!e) {
        crc_json = cJSON_PrintUnformatted(crcs);
        if (!crc_json) e = err_set(ERR_NOMEM, "out of memory");
    }
    if (!e) e = st_writer_meta(w, DF11_META_VERSION, "1");
    if (!e) e = st_writer_meta(w, DF11_META_HEADER, hdr);
    if (!e) e = st_writer_meta(w, DF11_META_RAW_CRC, crc_json);
    char hcrc[9];
    snprintf(hcrc, sizeof hcrc, "%08x", hdr ? df11_crc32(hdr, hlen) : 0);
    if (!e) e = st_writer_meta(w, DF11_META_HEADER_CRC, hcrc);
    free(hdr);
    free(crc_json);
    cJSON_Delete(crcs);
    return e;
}

static err write_df11(const st_file *f, const packed *pk, const char *out) {
    st_writer *w = NULL;
    TRY(st_writer_create(&w));
    err e = add_metadata(w, f, pk);
    for (int pass = 0; pass < 2 && !e; pass++) /* blobs first, then the rest */
        for (int i = 0; i < st_count(f) && !e; i++) {
            const st_tensor *t = st_at(f, i);
            if (pass == 0 && pk[i].blob) {
                int64_t shape[1] = {(int64_t)pk[i].len};
                e = st_writer_add(w, t->name, DTYPE_U8, 1, shape, pk[i].blob, pk[i].len);
            } else if (pass == 1 && !pk[i].blob)
                e = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->end - t->begin);
        }
    if (!e) e = st_writer_finish(w, out, DF11_BLOB_ALIGN);
    st_writer_free(w);
    return e;
}

err df11_compress_file(const char *in, const char *out, const df11_params *p,
                       const df11_progress *pr) {
    FAIL_IF(fio_same_file(in, out), ERR_ARG, "%s: output would overwrite the input", out);
    st_file *f = NULL;
    TRY(st_open(in, &f));
    err e = ERR_OK;
    if (st_meta(f, DF11_META_VERSION))
        e = err_set(ERR_ARG, "%s: already a DF11 checkpoint", in);
    int n = st_count(f);
    packed *pk = calloc((size_t)(n ? n : 1), sizeof *pk);
    if (!e && !pk) e = err_set(ERR_NOMEM, "out of memory");
    uint64_t total = 0, done = 0;
    for (int i = 0; i < n; i++) total += st_at(f, i)->end - st_at(f, i)->begin;
    for (int i = 0; i < n && !e; i++) {
        const st_tensor *t = st_at(f, i);
        progress(pr, done, total, t->name);
        e = pack_tensor(t, p, &pk[i]);
        if (e) err_wrap(e, "%s: tensor '%s'", in, t->name);
        done += t->end - t->begin;
    }
    if (!e) e = write_df11(f, pk, out);
    if (!e) progress(pr, total, total, "");
    for (int i = 0; pk && i < n; i++) free(pk[i].blob);
    free(pk);
    st_close(f);
    return e;
}

err df11_decompress_file(const char *in, const char *out, const df11_progress *pr) {
    FAIL_IF(fio_same_file(in, out), ERR_ARG, "%s: output would overwrite the input", out);
    df11_ckpt *c = NULL;
    TRY(df11_ckpt_open(in, &c));
    err e = df11_ckpt_is_df11(c) ? ERR_OK : err_set(ERR_ARG, "%s: not a DF11 checkpoint", in);
    const char *hdr = st_meta(df11_ckpt_file(c), DF11_META_HEADER);
    uint64_t hlen = hdr ? strlen(hdr) : 0, total = df11_ckpt_original_size(c), done = 0;
    fio_out *o = NULL;
    if (!e) e = fio_out_open(out, &o);
    uint8_t len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (uint8_t)(hlen >> (8 * b));
    if (!e) e = fio_out_write(o, len8, 8);
    if (!e) e = fio_out_write(o, hdr, hlen);
    void *buf = NULL;
    for (int i = 0; i < (e ? 0 : df11_ckpt_count(c)); i++) {
        const df11_tensor *t = df11_ckpt_at(c, i);
        progress(pr, done, total, t->name);
        uint64_t nb = t->end - t->begin;
        free(buf);
        buf = malloc(nb ? nb : 1);
        if (!buf) e = err_set(ERR_NOMEM, "out of memory for tensor '%s'", t->name);
        if (!e) e = df11_ckpt_read(c, t, buf);
        if (!e) e = fio_out_pwrite(o, buf, nb, 8 + hlen + t->begin);
        if (e) break;
        done += nb;
    }
    free(buf);
    if (!e) e = fio_out_commit(o);
    else fio_out_abort(o);
    if (!e) progress(pr, total, total, "");
    df11_ckpt_close(c);
    return e;
}

err df11_verify_file(const char *path, const df11_progress *pr) {
    df11_ckpt *c = NULL;
    TRY(df11_ckpt_open(path, &c));
    err e = df11_ckpt_is_df11(c) ? ERR_OK : err_set(ERR_ARG, "%s: not a DF11 checkpoint", path);
    uint64_t total = 0, done = 0;
    for (int i = 0; i < df11_ckpt_count(c); i++)
        total += df11_ckpt_at(c, i)->end - df11_ckpt_at(c, i)->begin;
    void *buf = NULL;
    for (int i = 0; i < (e ? 0 : df11_ckpt_count(c)); i++) {
        const df11_tensor *t = df11_ckpt_at(c, i);
        uint64_t nb = t->end - t->begin;
        progress(pr, done, total, t->name);
        free(buf);
        buf = malloc(nb ? nb : 1);
        if (!buf) e = err_set(ERR_NOMEM, "out of memory for tensor '%s'", t->name);
        if (!e) e = df11_ckpt_read(c, t, buf);
        if (e) break;
        done += nb;
    }
    free(buf);
    if (!e) progress(pr, total, total, "");
    df11_ckpt_close(c);
    return e;
}
