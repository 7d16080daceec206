/* blob: the df11 blob's header and tables (FORMAT.md "Blob layout"): offsets, writer, the
 * validating parser, CRC and byte accounting. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "df11/blob_layout.h"
#include "df11/df11.h"
#include "df11/tans.h"

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, v), wr16(p + 2, v >> 16); }
static void wr64(uint8_t *p, uint64_t v) { wr32(p, (uint32_t)v), wr32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t rd16(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

uint32_t df11_crc32(const void *data, size_t len) {
    const size_t chunk = (size_t)8 << 20;
    const uint8_t *p = data;
    if (len <= chunk) return (uint32_t)crc32(0L, p, (uInt)len);
    size_t nchunks = (len + chunk - 1) / chunk;
    uint32_t *parts = malloc(nchunks * sizeof *parts);
    if (!parts) { /* fall back to one thread */
        uLong c = crc32(0L, Z_NULL, 0);
        for (size_t off = 0; off < len; off += chunk)
            c = crc32(c, p + off, (uInt)(len - off < chunk ? len - off : chunk));
        return (uint32_t)c;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)nchunks; i++) {
        size_t off = (size_t)i * chunk, m = len - off < chunk ? len - off : chunk;
        parts[i] = (uint32_t)crc32(0L, p + off, (uInt)m);
    }
    uLong c = parts[0];
    for (size_t i = 1; i < nchunks; i++) {
        size_t off = i * chunk, m = len - off < chunk ? len - off : chunk;
        c = crc32_combine(c, parts[i], (z_off_t)m);
    }
    free(parts);
    return (uint32_t)c;
}

err df11_layout_offsets(df11_layout *lay) {
    lay->n_syms = 0;
    for (int s = 0; s < 256; s++) lay->n_syms += lay->count[s] != 0;
    lay->sym_off = DF11_HEADER_BYTES;
    lay->seg_off = align_up(lay->sym_off + 3u * (uint64_t)lay->n_syms, 4);
    lay->code_off = align_up(lay->seg_off + 4u * (uint64_t)lay->n_segments, 16);
    FAIL_IF(lay->code_words > (UINT64_MAX >> 4) || lay->n > (UINT64_MAX >> 4), ERR_UNSUPPORTED,
            "blob too large");
    lay->raw_off = align_up(lay->code_off + 4 * lay->code_words, 16);
    lay->len = align_up(lay->raw_off + lay->n, DF11_BLOB_ALIGN);
    return ERR_OK;
}

static uint32_t side_crc(const uint8_t *b, uint64_t code_off) {
    uLong c = crc32(0L, b, 56);
    return (uint32_t)crc32(c, b + DF11_HEADER_BYTES, (uInt)(code_off - DF11_HEADER_BYTES));
}

static void write_header(const df11_layout *lay, uint8_t *b) {
    memcpy(b, DF11_MAGIC, 4);
    wr16(b + 4, DF11_VERSION);
    b[6] = (uint8_t)lay->table_log;
    b[7] = DF11_LANES;
    b[8] = DF11_GROUP;
    wr16(b + 10, (uint32_t)lay->n_syms);
    wr32(b + 12, lay->steps);
    wr64(b + 16, lay->n);
    wr32(b + 24, lay->n_segments);
    wr32(b + 28, lay->crc);
    wr64(b + 32, lay->code_off);
    wr64(b + 40, lay->code_words);
    wr64(b + 48, lay->raw_off);
}

err df11_layout_write(df11_layout *lay, const uint16_t *src, const uint32_t *seg_start,
                      const df11_seg_code *segs, uint8_t **blob, size_t *len) {
    TRY(df11_layout_offsets(lay));
    FAIL_IF(lay->len > SIZE_MAX, ERR_UNSUPPORTED, "blob too large");
    uint8_t *b = calloc(1, lay->len);
    FAIL_IF(!b, ERR_NOMEM, "out of memory for a %llu-byte blob", (unsigned long long)lay->len);
    write_header(lay, b);
    uint8_t *sym = b + lay->sym_off;
    for (int s = 0; s < 256; s++)
        if (lay->count[s]) *sym++ = (uint8_t)s, wr16(sym, lay->count[s]), sym += 2;
    for (uint32_t s = 0; s < lay->n_segments; s++) wr32(b + lay->seg_off + 4u * s, seg_start[s]);
    wr32(b + 56, side_crc(b, lay->code_off));
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 4) nowait
        for (int64_t s = 0; s < (int64_t)lay->n_segments; s++) {
            uint8_t *dst = b + lay->code_off + 4 * (uint64_t)seg_start[s];
            for (uint32_t w = 0; w < segs[s].n_words; w++) wr32(dst + 4u * w, segs[s].words[w]);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)lay->n; i++) {
            uint16_t x = src[i];
            b[lay->raw_off + (uint64_t)i] = (uint8_t)(((x >> 8) & 0x80) | (x & 0x7F));
        }
    }
    *blob = b;
    *len = (size_t)lay->len;
    return ERR_OK;
}

static err parse_tables(const uint8_t *b, df11_layout *lay, df11_blob *out) {
    uint32_t sum = 0;
    int prev = -1;
    for (int i = 0; i < lay->n_syms; i++) {
        const uint8_t *e = b + lay->sym_off + 3u * i;
        int s = e[0];
        uint32_t c = rd16(e + 1);
        FAIL_IF(s <= prev, ERR_FORMAT, "symbol table entry %d: exponent %d not above %d", i, s,
                prev);
        FAIL_IF(c == 0, ERR_FORMAT, "symbol table entry %d: count 0", i);
        out->sym[i] = (uint8_t)s;
        out->count[s] = (uint16_t)c;
        lay->count[s] = (uint16_t)c;
        sum += c;
        prev = s;
    }
    FAIL_IF(lay->n && sum != 1u << lay->table_log, ERR_FORMAT,
            "symbol counts sum to %u, expected %u", sum, 1u << lay->table_log);
    uint32_t last = 0;
    for (uint32_t s = 0; s < lay->n_segments; s++) {
        uint32_t v = rd32(b + lay->seg_off + 4u * s);
        FAIL_IF(s == 0 && v != 0, ERR_FORMAT, "segment 0 starts at word %u, expected 0", v);
        FAIL_IF(v < last || v > lay->code_words, ERR_FORMAT,
                "segment %u starts at word %u (previous %u, stream has %llu)", s, v, last,
                (unsigned long long)lay->code_words);
        last = v;
    }
    return ERR_OK;
}

err df11_blob_parse(const void *data, size_t len, df11_blob *out) {
    const uint8_t *b = data;
    memset(out, 0, sizeof *out);
    FAIL_IF(len < DF11_HEADER_BYTES, ERR_FORMAT, "blob of %zu bytes is shorter than its %d-byte header",
            len, DF11_HEADER_BYTES);
    FAIL_IF(memcmp(b, DF11_MAGIC, 4) != 0, ERR_FORMAT, "blob does not start with \"DF11\"");
    uint32_t version = rd16(b + 4);
    FAIL_IF(version != DF11_VERSION, ERR_UNSUPPORTED, "blob version %u, this build reads %d",
            version, DF11_VERSION);
    FAIL_IF(b[7] != DF11_LANES || b[8] != DF11_GROUP || b[9] || rd32(b + 60), ERR_FORMAT,
            "blob header: lanes %d group %d (expected %d, %d) or reserved bytes set", b[7], b[8],
            DF11_LANES, DF11_GROUP);
    df11_layout lay;
    memset(&lay, 0, sizeof lay);
    lay.table_log = b[6];
    lay.n_syms = (int)rd16(b + 10);
    lay.steps = rd32(b + 12);
    lay.n = rd64(b + 16);
    lay.n_segments = rd32(b + 24);
    lay.crc = rd32(b + 28);
    lay.code_words = rd64(b + 40);
    if (lay.n == 0) {
        FAIL_IF(lay.table_log || lay.n_syms || lay.n_segments || lay.code_words, ERR_FORMAT,
                "empty blob with tables");
    } else {
        FAIL_IF(lay.table_log < DF11_TANS_MIN_LOG || lay.table_log > DF11_MAX_TABLE_LOG, ERR_FORMAT,
                "table_log %d outside %d..%d", lay.table_log, DF11_TANS_MIN_LOG, DF11_MAX_TABLE_LOG);
        FAIL_IF(lay.n_syms < 1 || lay.n_syms > 256 || lay.n_syms > (1 << lay.table_log),
                ERR_FORMAT, "%d symbols", lay.n_syms);
        FAIL_IF(lay.steps < 1 || lay.steps > 65536, ERR_FORMAT, "%u steps per segment", lay.steps);
        uint64_t seg = (uint64_t)DF11_LANES * DF11_GROUP * lay.steps;
        FAIL_IF(lay.n > (UINT64_MAX >> 8) || (lay.n + seg - 1) / seg != lay.n_segments, ERR_FORMAT,
                "%u segments for %llu elements", lay.n_segments, (unsigned long long)lay.n);
    }
    /* offsets are derived from the counts; compare before trusting them */
    uint64_t code_off = rd64(b + 32), raw_off = rd64(b + 48);
    uint64_t n_syms = (uint64_t)lay.n_syms;
    lay.sym_off = DF11_HEADER_BYTES;
    lay.seg_off = align_up(lay.sym_off + 3 * n_syms, 4);
    FAIL_IF(lay.code_words > (UINT64_MAX >> 4) || lay.n > (UINT64_MAX >> 4), ERR_FORMAT,
            "code words %llu", (unsigned long long)lay.code_words);
    lay.code_off = align_up(lay.seg_off + 4u * (uint64_t)lay.n_segments, 16);
    lay.raw_off = align_up(lay.code_off + 4 * lay.code_words, 16);
    lay.len = align_up(lay.raw_off + lay.n, DF11_BLOB_ALIGN);
    FAIL_IF(code_off != lay.code_off || raw_off != lay.raw_off, ERR_FORMAT,
            "blob offsets code %llu raw %llu, expected %llu %llu", (unsigned long long)code_off,
            (unsigned long long)raw_off, (unsigned long long)lay.code_off,
            (unsigned long long)lay.raw_off);
    FAIL_IF(len != lay.len, ERR_FORMAT, "blob is %zu bytes, its header implies %llu", len,
            (unsigned long long)lay.len);
    uint32_t sc = rd32(b + 56);
    FAIL_IF(side_crc(b, lay.code_off) != sc, ERR_CHECKSUM,
            "blob header or tables corrupt (side CRC %08x, stored %08x)", side_crc(b, lay.code_off),
            sc);
    TRY(parse_tables(b, &lay, out));
    out->base = b;
    out->len = len;
    out->n = lay.n;
    out->table_log = lay.table_log;
    out->steps = lay.steps;
    out->n_segments = lay.n_segments;
    out->crc = lay.crc;
    out->n_syms = lay.n_syms;
    out->seg_start = b + lay.seg_off;
    out->code = b + lay.code_off;
    out->code_words = lay.code_words;
    out->raw = b + lay.raw_off;
    return ERR_OK;
}

err df11_check(const df11_blob *b, const uint16_t *decoded) {
    uint32_t c = df11_crc32(decoded, b->n * 2);
    FAIL_IF(c != b->crc, ERR_CHECKSUM, "decoded data CRC %08x, stored %08x", c, b->crc);
    return ERR_OK;
}

double df11_exponent_entropy(const uint16_t *src, uint64_t n) {
    uint64_t hist[256] = {0};
    for (uint64_t i = 0; i < n; i++) hist[(src[i] >> 7) & 0xFF]++;
    double h = 0;
    for (int s = 0; s < 256; s++)
        if (hist[s]) {
            double p = (double)hist[s] / (double)n;
            h -= p * log2(p);
        }
    return h;
}

void df11_blob_stats(const df11_blob *b, const uint16_t *decoded, df11_stats *s) {
    s->n = b->n;
    s->code_bytes = 4 * b->code_words;
    s->raw_bytes = b->n;
    s->side_bytes = b->len - s->code_bytes - s->raw_bytes;
    s->entropy_bits = decoded ? df11_exponent_entropy(decoded, b->n) : 0;
}
