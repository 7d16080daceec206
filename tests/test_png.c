/* test_png: app/png.h. Round trip (pixels and texts, ASCII as tEXt and UTF-8 as iTXt), the
 * same inputs twice give the same file bytes, no time chunk, bad paths fail with ERR_IO naming
 * the path and leave no temporary file, bad keys and sizes are ERR_ARG, a truncated or corrupt
 * file is ERR_FORMAT, and other PNG layouts (gray, palette, RGBA, 16-bit, interlaced) read as
 * RGB8. usage: test_png SCRATCH_DIR (created if missing). */
#include <dirent.h>
#include <errno.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/png.h"
#include "tests/testutil.h"

static char dir[512];

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    CHECK(b && fread(b, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void write_all(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n && fclose(f) == 0);
}

/* files in dir whose name contains part */
static int count_files(const char *d, const char *part) {
    DIR *dp = opendir(d);
    CHECK(dp);
    int n = 0;
    for (struct dirent *e; (e = readdir(dp));)
        n += strstr(e->d_name, part) != NULL;
    closedir(dp);
    return n;
}

/* offset of a chunk type in a PNG's bytes, or -1 */
static long find_chunk(const uint8_t *b, size_t n, const char *type) {
    for (size_t at = 8; at + 8 <= n;) {
        const uint32_t len = (uint32_t)b[at] << 24 | b[at + 1] << 16 | b[at + 2] << 8 | b[at + 3];
        if (!memcmp(b + at + 4, type, 4)) return (long)at;
        at += 12 + (size_t)len;
    }
    return -1;
}

static void test_round_trip(void) {
    const int w = 37, h = 23;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    CHECK(rgb);
    tu_rng r = {42};
    for (int i = 0; i < w * h * 3; i++)
        rgb[i] = (uint8_t)tu_next(&r);
    const char *keys[3] = {"parameters", "df11", "Comment"};
    const char *texts[3] = {"a cat, Steps: 28, Seed: 42",
                            "{\"prompt\": \"caf\xc3\xa9 \xe6\x97\xa5\"}", ""};
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/a.png", dir);
    snprintf(b, sizeof b, "%s/b.png", dir);
    EXPECT(png_write_rgb(a, rgb, w, h, keys, texts, 3) == ERR_OK, "write: %s", err_msg());
    EXPECT(png_write_rgb(b, rgb, w, h, keys, texts, 3) == ERR_OK, "write: %s", err_msg());
    size_t na = 0, nb = 0;
    uint8_t *ba = read_all(a, &na), *bb = read_all(b, &nb);
    EXPECT(ba && bb && na == nb && !memcmp(ba, bb, na), "the same inputs gave %zu and %zu bytes",
           na, nb);
    if (ba) {
        EXPECT(find_chunk(ba, na, "tIME") < 0, "a tIME chunk was written");
        EXPECT(find_chunk(ba, na, "tEXt") > 0 && find_chunk(ba, na, "iTXt") > 0,
               "expected tEXt for ASCII and iTXt for UTF-8");
        EXPECT(find_chunk(ba, na, "tEXt") < find_chunk(ba, na, "IDAT"), "texts after IDAT");
    }
    uint8_t *back = NULL;
    int bw = 0, bh = 0;
    EXPECT(png_read_rgb(a, &back, &bw, &bh) == ERR_OK, "read: %s", err_msg());
    EXPECT(back && bw == w && bh == h && !memcmp(back, rgb, (size_t)w * h * 3),
           "pixels differ after the round trip (%dx%d)", bw, bh);
    png_text_list tl;
    EXPECT(png_read_texts(a, &tl) == ERR_OK, "texts: %s", err_msg());
    EXPECT(tl.n == 3, "%d texts", tl.n);
    for (int i = 0; i < tl.n && i < 3; i++)
        EXPECT(!strcmp(tl.keys[i], keys[i]) && !strcmp(tl.texts[i], texts[i]), "text %d: %s = %s",
               i, tl.keys[i], tl.texts[i]);
    png_text_list_free(&tl);
    EXPECT(count_files(dir, ".tmp.") == 0, "a temporary file was left");

    /* overwriting keeps the file whole; a corrupt or truncated file fails cleanly */
    EXPECT(png_write_rgb(a, rgb, w, h, NULL, NULL, 0) == ERR_OK, "overwrite: %s", err_msg());
    if (ba && na > 100) {
        char c[600];
        snprintf(c, sizeof c, "%s/trunc.png", dir);
        write_all(c, ba, na - 30);
        uint8_t *px = NULL;
        err e = png_read_rgb(c, &px, &bw, &bh);
        EXPECT(e == ERR_FORMAT && strstr(err_msg(), c), "truncated: %d %s", e, err_msg());
        ba[na / 2] ^= 0x55; /* inside IDAT: a CRC error */
        write_all(c, ba, na);
        e = png_read_rgb(c, &px, &bw, &bh);
        EXPECT(e == ERR_FORMAT, "corrupt: %d %s", e, err_msg());
        write_all(c, (const uint8_t *)"not a png at all", 16);
        e = png_read_rgb(c, &px, &bw, &bh);
        EXPECT(e == ERR_FORMAT && strstr(err_msg(), "signature"), "not a PNG: %d %s", e, err_msg());
        unlink(c);
    }
    free(ba);
    free(bb);
    free(back);
    free(rgb);
    unlink(a);
    unlink(b);
}

static void test_errors(void) {
    uint8_t px[12] = {0};
    char p[600];
    /* an existing directory */
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir(p, 0755);
    err e = png_write_rgb(p, px, 2, 2, NULL, NULL, 0);
    EXPECT(e == ERR_IO && strstr(err_msg(), p), "directory: %d %s", e, err_msg());
    EXPECT(count_files(dir, ".tmp.") == 0, "a temporary file was left");
    rmdir(p);
    /* a folder that does not exist */
    snprintf(p, sizeof p, "%s/missing/x.png", dir);
    e = png_write_rgb(p, px, 2, 2, NULL, NULL, 0);
    EXPECT(e == ERR_IO && strstr(err_msg(), p), "missing folder: %d %s", e, err_msg());
    /* an unwritable folder (root ignores permissions: skipped then) */
    snprintf(p, sizeof p, "%s/ro", dir);
    mkdir(p, 0555);
    chmod(p, 0555);
    if (geteuid() != 0) {
        char q[700];
        snprintf(q, sizeof q, "%s/x.png", p);
        e = png_write_rgb(q, px, 2, 2, NULL, NULL, 0);
        EXPECT(e == ERR_IO && strstr(err_msg(), q), "read-only folder: %d %s", e, err_msg());
        EXPECT(count_files(p, "") == 2, "files left in the read-only folder");
    }
    rmdir(p);
    snprintf(p, sizeof p, "%s/k.png", dir);
    const char *bad_keys[] = {
        "", " lead", "two  spaces", "caf\xc3\xa9",
        /* 80 characters, one more than PNG allows */
        ("0123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789")};
    const char *text[1] = {"x"};
    for (int i = 0; i < 5; i++) {
        e = png_write_rgb(p, px, 2, 2, &bad_keys[i], text, 1);
        EXPECT(e == ERR_ARG, "key \"%s\": %d", bad_keys[i], e);
    }
    EXPECT(png_write_rgb(p, px, 0, 2, NULL, NULL, 0) == ERR_ARG, "width 0 accepted");
    EXPECT(access(p, F_OK) != 0, "a failed write left %s", p);
    snprintf(p, sizeof p, "%s/nothing.png", dir);
    uint8_t *out = NULL;
    int w, h;
    e = png_read_rgb(p, &out, &w, &h);
    EXPECT(e == ERR_IO && strstr(err_msg(), p), "missing file: %d %s", e, err_msg());
}

/* a PNG of another layout written straight with libpng, read back as RGB8 */
static void write_layout(const char *path, int w, int h, int ct, int depth, int interlace,
                         const uint8_t *rows_data, size_t rowbytes, const png_color *pal,
                         int npal) {
    FILE *f = fopen(path, "wb");
    CHECK(f);
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    CHECK(p && info && !setjmp(png_jmpbuf(p)));
    png_init_io(p, f);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, depth, ct, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(p, info, pal, npal);
    png_write_info(p, info);
    if (depth == 16) png_set_swap(p); /* rows_data holds little-endian 16-bit samples */
    png_bytep rows[8];
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)rows_data + (size_t)y * rowbytes;
    png_write_image(p, rows);
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    fclose(f);
}

static void test_layouts(void) {
    char p[600];
    snprintf(p, sizeof p, "%s/layout.png", dir);
    enum { W = 5, H = 4 };
    uint8_t *out = NULL;
    int w, h;
    /* gray 8-bit, interlaced */
    uint8_t gray[W * H];
    for (int i = 0; i < W * H; i++)
        gray[i] = (uint8_t)(i * 13);
    write_layout(p, W, H, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_ADAM7, gray, W, NULL, 0);
    EXPECT(png_read_rgb(p, &out, &w, &h) == ERR_OK && w == W && h == H, "gray: %s", err_msg());
    for (int i = 0; out && i < W * H; i++)
        EXPECT(out[3 * i] == gray[i] && out[3 * i + 1] == gray[i] && out[3 * i + 2] == gray[i],
               "gray pixel %d", i);
    free(out);
    out = NULL;
    /* RGBA: alpha dropped */
    uint8_t rgba[W * H * 4];
    for (int i = 0; i < W * H * 4; i++)
        rgba[i] = (uint8_t)(i * 7 + 1);
    write_layout(p, W, H, PNG_COLOR_TYPE_RGB_ALPHA, 8, PNG_INTERLACE_NONE, rgba, W * 4, NULL, 0);
    EXPECT(png_read_rgb(p, &out, &w, &h) == ERR_OK, "rgba: %s", err_msg());
    for (int i = 0; out && i < W * H; i++)
        EXPECT(!memcmp(out + 3 * i, rgba + 4 * i, 3), "rgba pixel %d", i);
    free(out);
    out = NULL;
    /* palette */
    png_color pal[4] = {{1, 2, 3}, {40, 50, 60}, {200, 100, 0}, {255, 255, 255}};
    uint8_t idx[W * H];
    for (int i = 0; i < W * H; i++)
        idx[i] = (uint8_t)(i % 4);
    write_layout(p, W, H, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, idx, W, pal, 4);
    EXPECT(png_read_rgb(p, &out, &w, &h) == ERR_OK, "palette: %s", err_msg());
    for (int i = 0; out && i < W * H; i++)
        EXPECT(out[3 * i] == pal[i % 4].red && out[3 * i + 2] == pal[i % 4].blue,
               "palette pixel %d", i);
    free(out);
    out = NULL;
    /* 16-bit RGB: scaled to 8 bits (v * 255 / 65535 rounded) */
    uint16_t rgb16[W * H * 3];
    for (int i = 0; i < W * H * 3; i++)
        rgb16[i] = (uint16_t)(i * 1111);
    write_layout(p, W, H, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, (uint8_t *)rgb16, W * 6, NULL,
                 0);
    EXPECT(png_read_rgb(p, &out, &w, &h) == ERR_OK, "rgb16: %s", err_msg());
    for (int i = 0; out && i < W * H * 3; i++) {
        const int want = (int)((rgb16[i] * 255u + 32767u) / 65535u);
        EXPECT(abs(out[i] - want) <= 1, "rgb16 sample %d: %d, expected %d", i, out[i], want);
    }
    free(out);
    unlink(p);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 1;
    }
    test_round_trip();
    test_errors();
    test_layouts();
    return tu_finish("test_png");
}
