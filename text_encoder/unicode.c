/* unicode: UTF-8, NFC, lowercase and character classes over the generated tables
 * (unicode_tables.h). NFC follows UAX #15: full canonical decomposition (Hangul by formula),
 * canonical ordering, then canonical composition of unblocked pairs. */
#include "text_encoder/unicode.h"

#include <stdlib.h>

#include "core/err.h"
#include "text_encoder/unicode_tables.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(UNICODE_NFD_MAX_EXPANSION <= UNICODE_NFD_MAX, "regenerated tables expand more");

/* Hangul syllables decompose and compose by arithmetic (Unicode 3.12). */
enum {
    HANGUL_S0 = 0xAC00,
    HANGUL_L0 = 0x1100,
    HANGUL_V0 = 0x1161,
    HANGUL_T0 = 0x11A7,
    HANGUL_LN = 19,
    HANGUL_VN = 21,
    HANGUL_TN = 28,
    HANGUL_NN = HANGUL_VN * HANGUL_TN,
    HANGUL_SN = HANGUL_LN * HANGUL_NN,
};

const char *unicode_version(void) { return UNICODE_TABLES_VERSION; }

/* ---- UTF-8 ---- */

size_t unicode_utf8_decode(const char *s, size_t len, uint32_t *out) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = 0, i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c < 0x80) {
            out[n++] = c;
            i++;
            continue;
        }
        /* The lead byte fixes the length and the range of the second byte (RFC 3629: no
         * overlongs, no surrogates, nothing past U+10FFFF). */
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            out[n++] = UNICODE_REPLACEMENT;
            i++;
            continue;
        }
        /* Consume the well-formed prefix; a byte that cannot continue it is not consumed, so
         * the prefix (the maximal subpart) becomes one U+FFFD, as CPython's "replace". */
        size_t j = i + 1;
        int k = 0;
        for (; k < need && j < len; k++, j++) {
            uint8_t b = p[j];
            if (k == 0 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
            cp = cp << 6 | (b & 0x3Fu);
        }
        out[n++] = k == need ? cp : UNICODE_REPLACEMENT;
        i = j;
    }
    return n;
}

int unicode_utf8_encode(uint32_t cp, char *buf) {
    uint8_t *b = (uint8_t *)buf;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = UNICODE_REPLACEMENT;
    if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (uint8_t)(0xF0 | cp >> 18);
    b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- table look-ups ---- */

/* Index of the {first, last, ...} row of a sorted range table holding cp, or -1. */
static long range_find(const uint32_t *rows, size_t n, size_t stride, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uint32_t *r = rows + mid * stride;
        if (cp < r[0])
            hi = mid;
        else if (cp > r[1])
            lo = mid + 1;
        else
            return (long)mid;
    }
    return -1;
}

static int char_class(uint32_t cp) {
    long i = range_find(&uni_class_ranges[0][0], NELEM(uni_class_ranges), 3, cp);
    return i < 0 ? 0 : (int)uni_class_ranges[i][2];
}

int unicode_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return char_class(cp) == 1;
}

int unicode_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return char_class(cp) == 2;
}

int unicode_is_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return range_find(&uni_space_ranges[0][0], NELEM(uni_space_ranges), 2, cp) >= 0;
}

int unicode_ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    long i = range_find(&uni_ccc_ranges[0][0], NELEM(uni_ccc_ranges), 3, cp);
    return i < 0 ? 0 : (int)uni_ccc_ranges[i][2];
}

int unicode_lower(uint32_t cp, uint32_t out[UNICODE_LOWER_MAX]) {
    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    for (size_t i = 0; i < NELEM(uni_lower_multi); i++) {
        if (uni_lower_multi[i][0] != cp) continue;
        int n = 0;
        for (int k = 1; k < 4 && uni_lower_multi[i][k]; k++)
            out[n++] = uni_lower_multi[i][k];
        return n;
    }
    /* The last run starting at or before cp. */
    size_t lo = 0, hi = NELEM(uni_lower_runs);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uint32_t)uni_lower_runs[mid][0] <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    out[0] = cp;
    if (lo > 0) {
        const int32_t *r = uni_lower_runs[lo - 1];
        if (cp <= (uint32_t)r[1] && (cp - (uint32_t)r[0]) % (uint32_t)r[3] == 0)
            out[0] = (uint32_t)((int32_t)cp + r[2]);
    }
    return 1;
}

/* ---- normalization ---- */

/* The canonical decomposition row of cp, or NULL. */
static const uint32_t *decomp_find(uint32_t cp) {
    size_t lo = 0, hi = NELEM(uni_decomp);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uni_decomp[mid][0] < cp)
            lo = mid + 1;
        else if (uni_decomp[mid][0] > cp)
            hi = mid;
        else
            return uni_decomp[mid];
    }
    return NULL;
}

/* Appends the full canonical decomposition of cp at out; returns the count. */
static size_t decompose(uint32_t cp, uint32_t *out) {
    if (cp >= HANGUL_S0 && cp < HANGUL_S0 + HANGUL_SN) {
        uint32_t s = cp - HANGUL_S0, t = s % HANGUL_TN;
        out[0] = HANGUL_L0 + s / HANGUL_NN;
        out[1] = HANGUL_V0 + s % HANGUL_NN / HANGUL_TN;
        if (!t) return 2;
        out[2] = HANGUL_T0 + t;
        return 3;
    }
    const uint32_t *d = cp < 0xC0 ? NULL : decomp_find(cp);
    if (!d) {
        out[0] = cp;
        return 1;
    }
    size_t n = decompose(d[1], out);
    if (d[2]) n += decompose(d[2], out + n);
    return n;
}

/* Canonical ordering: a stable sort by combining class of each run of non-starters. */
static void canonical_order(uint32_t *s, size_t n) {
    for (size_t i = 1; i < n; i++) {
        int cc = unicode_ccc(s[i]);
        if (!cc) continue;
        uint32_t c = s[i];
        size_t j = i;
        while (j > 0 && unicode_ccc(s[j - 1]) > cc) {
            s[j] = s[j - 1];
            j--;
        }
        s[j] = c;
    }
}

size_t unicode_nfd(const uint32_t *in, size_t n, uint32_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += decompose(in[i], out + m);
    canonical_order(out, m);
    return m;
}

/* The primary composite of a + b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L0 && a < HANGUL_L0 + HANGUL_LN && b >= HANGUL_V0 && b < HANGUL_V0 + HANGUL_VN)
        return HANGUL_S0 + ((a - HANGUL_L0) * HANGUL_VN + (b - HANGUL_V0)) * HANGUL_TN;
    if (a >= HANGUL_S0 && a < HANGUL_S0 + HANGUL_SN && (a - HANGUL_S0) % HANGUL_TN == 0 &&
        b > HANGUL_T0 && b < HANGUL_T0 + HANGUL_TN)
        return a + (b - HANGUL_T0);
    size_t lo = 0, hi = NELEM(uni_comp);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const uint32_t *r = uni_comp[mid];
        if (r[0] < a || (r[0] == a && r[1] < b))
            lo = mid + 1;
        else if (r[0] > a || r[1] > b)
            hi = mid;
        else
            return r[2];
    }
    return 0;
}

size_t unicode_nfc(const uint32_t *in, size_t n, uint32_t *out) {
    size_t m = unicode_nfd(in, n, out);
    /* Compose in place: w <= r always. After the last starter only non-starters were kept,
     * in canonical order, so c is blocked from the starter exactly when the last kept one has
     * a class >= c's (or c is a starter and something lies between). */
    size_t w = 0;
    long starter = -1;
    int last_cc = 0;
    for (size_t r = 0; r < m; r++) {
        uint32_t c = out[r];
        int cc = unicode_ccc(c);
        if (starter >= 0 && ((size_t)starter == w - 1 || last_cc < cc)) {
            uint32_t comp = compose(out[starter], c);
            if (comp) {
                out[starter] = comp;
                continue;
            }
        }
        if (!cc) starter = (long)w;
        last_cc = cc;
        out[w++] = c;
    }
    return w;
}
