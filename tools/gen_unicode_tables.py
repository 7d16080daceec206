#!/usr/bin/env python3
r"""Writes text_encoder/unicode_tables.h: the Unicode data the CLIP tokenizer's text cleanup needs
(text_encoder/unicode.c), generated from this Python's unicodedata, as compact sorted tables:

  letter / number ranges     general category L* and N* (the regex classes \p{L} and \p{N})
  canonical combining class  ranges of equal non-zero class
  canonical decompositions   one or two code points each, applied recursively (Hangul is
                             algorithmic in unicode.c, not tabled)
  canonical compositions     the primary composites: pairs that NFC recomposes
  lowercase                  runs mapped by one delta with stride 1 or 2, and the one-to-many
                             mappings (U+0130), as Rust's char::to_lowercase (no final-sigma rule)
  white space                White_Space, which unicodedata lacks: Zs, Zl, Zp plus U+0009..U+000D
                             and U+0085 (the same set; --check compares it with Oniguruma's \s)

usage: python3 tools/gen_unicode_tables.py [out.h]       (default text_encoder/unicode_tables.h)
       python3 tools/gen_unicode_tables.py --check       compare with the installed `tokenizers`
The header records the Unicode version. HF tokenizers (Rust) takes its classes from Oniguruma and
std and its NFC from the unicode-normalization-alignments crate, each with its own Unicode version:
--check lists the code points where they and this Python disagree. With Python 3.13 (Unicode
15.1) and tokenizers 0.23.3: 4302 letters and 80 digits of Unicode 16-17 (Oniguruma knows them:
there they are words and digits, here symbols), the lowercase of 55 letters of Unicode 16-17
(Rust std is newer), and U+11935 U+11930 (Dives Akuru), which the Rust crate, older than Unicode
13, leaves uncomposed. Only scripts added in Unicode 13 or later meet any of these."""
import os
import sys
import unicodedata as ud

CPS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
HANGUL_S0, HANGUL_SN = 0xAC00, 11172


def ranges(pred):
    """[start, end] runs of code points where pred holds."""
    out, start = [], None
    for c in range(0x110001):
        ok = c < 0x110000 and pred(c)
        if ok and start is None:
            start = c
        elif not ok and start is not None:
            out.append((start, c - 1))
            start = None
    return out


def category_ranges():
    """(start, end, 1=letter 2=number) runs."""
    def cls(c):
        g = ud.category(chr(c))[0]
        return 1 if g == "L" else 2 if g == "N" else 0
    out = []
    for cl in (1, 2):
        out += [(a, b, cl) for a, b in ranges(lambda c, cl=cl: cls(c) == cl)]
    return sorted(out)


def space_ranges():
    return ranges(lambda c: c in (9, 10, 11, 12, 13, 0x85) or
                  ud.category(chr(c)) in ("Zs", "Zl", "Zp"))


def ccc_ranges():
    out = []
    for c in CPS:
        k = ud.combining(chr(c))
        if not k:
            continue
        if out and out[-1][1] == c - 1 and out[-1][2] == k:
            out[-1] = (out[-1][0], c, k)
        else:
            out.append((c, c, k))
    return out


def canonical_decomp(c):
    d = ud.decomposition(chr(c))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def decomp_table():
    """(cp, first, second or 0) for every canonical decomposition except Hangul syllables."""
    out = []
    for c in CPS:
        if HANGUL_S0 <= c < HANGUL_S0 + HANGUL_SN:
            continue
        d = canonical_decomp(c)
        if d:
            assert len(d) <= 2, hex(c)
            out.append((c, d[0], d[1] if len(d) == 2 else 0))
    return out


def comp_table(decomps):
    """(first, second, composite): pairs NFC recomposes (not excluded, not singletons, not
    non-starter decompositions: exactly those whose composite survives NFC)."""
    out = []
    for c, a, b in decomps:
        if b and ud.normalize("NFC", chr(c)) == chr(c):
            out.append((a, b, c))
    return sorted(out)


def max_nfd_expansion():
    return max(len(ud.normalize("NFD", chr(c))) for c in CPS)


def lower_tables():
    """Runs (start, end, delta, stride) of one-to-one lowercase mappings, and the one-to-many."""
    single, multi = [], []
    for c in CPS:
        lo = chr(c).lower()
        if lo == chr(c):
            continue
        if len(lo) == 1:
            single.append((c, ord(lo) - c))
        else:
            multi.append((c, [ord(x) for x in lo]))
    runs = []
    for c, d in single:
        if runs:
            s, e, dd, st = runs[-1]
            if dd == d and st in (0, c - e) and c - e in (1, 2):
                runs[-1] = (s, c, d, c - e)
                continue
        runs.append((c, c, d, 0))
    return [(s, e, d, st or 1) for s, e, d, st in runs], multi


def emit(path):
    cat = category_ranges()
    ccc = ccc_ranges()
    dec = decomp_table()
    comp = comp_table(dec)
    low, multi = lower_tables()
    assert all(len(m) <= 3 for _, m in multi)
    maxexp = max_nfd_expansion()
    L = []
    w = L.append
    w("/* unicode_tables: generated by tools/gen_unicode_tables.py from Python %s's unicodedata"
      % sys.version.split()[0])
    w(" * (Unicode %s). Do not edit; rerun the script. Included only by text_encoder/unicode.c."
      % ud.unidata_version)
    w(" * Sorted tables for binary search; see the script's docstring for what each holds. */")
    w("#define UNICODE_TABLES_VERSION \"%s\"" % ud.unidata_version)
    w("#define UNICODE_NFD_MAX_EXPANSION %d" % maxexp)
    w("")

    def table(decl, rows, fmt, per_line):
        w(decl.replace("[]", "[%d]" % len(rows), 1) + " = {")
        for i in range(0, len(rows), per_line):
            w("    " + " ".join(fmt % r for r in rows[i:i + per_line]))
        w("};")
        w("")

    w("/* {first, last, class}: 1 letter (L*), 2 number (N*) */")
    table("static const uint32_t uni_class_ranges[][3]", cat, "{0x%X, 0x%X, %d},", 4)
    w("/* {first, last}: White_Space */")
    table("static const uint32_t uni_space_ranges[][2]", space_ranges(), "{0x%X, 0x%X},", 6)
    w("/* {first, last, canonical combining class}, non-zero classes only */")
    table("static const uint32_t uni_ccc_ranges[][3]", ccc, "{0x%X, 0x%X, %d},", 4)
    w("/* {code point, first, second (0: a singleton)}: canonical decompositions, Hangul apart */")
    table("static const uint32_t uni_decomp[][3]", dec, "{0x%X, 0x%X, 0x%X},", 4)
    w("/* {first, second, composite}: primary composites, sorted by (first, second) */")
    table("static const uint32_t uni_comp[][3]", comp, "{0x%X, 0x%X, 0x%X},", 4)
    w("/* {first, last, delta, stride}: c in [first, last] with (c - first) %% stride == 0 maps to")
    w(" * c + delta; the others map to themselves */")
    rows = [(s, e, d, st) for s, e, d, st in low]
    table("static const int32_t uni_lower_runs[][4]", rows, "{0x%X, 0x%X, %d, %d},", 4)
    w("/* {code point, lowercase..., 0}: the one-to-many lowercase mappings */")
    mrows = [(c, *(m + [0] * (3 - len(m)))) for c, m in multi]
    table("static const uint32_t uni_lower_multi[][4]", mrows, "{0x%X, 0x%X, 0x%X, 0x%X},", 4)
    with open(path, "w") as f:
        f.write("\n".join(L))
    print("%s: Unicode %s, %d class ranges, %d ccc ranges, %d decompositions, %d compositions, "
          "%d lowercase runs, %d one-to-many" % (path, ud.unidata_version, len(cat), len(ccc),
                                                 len(dec), len(comp), len(low), len(multi)))


def check():
    """Lists where HF tokenizers (the Rust library transformers' CLIPTokenizer runs) disagrees
    with this Python's unicodedata, over every code point."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    import tokenizers
    print("Python unicodedata %s, tokenizers %s" % (ud.unidata_version, tokenizers.__version__))
    big = "".join(chr(c) for c in CPS)

    def onig(pat):
        sp = pre_tokenizers.Split(Regex(pat), behavior="removed", invert=True)
        hit = set()
        for i in range(0, len(big), 65536):
            s = big[i:i + 65536]
            for _, (a, b) in sp.pre_tokenize_str(s):
                hit.update(ord(s[k]) for k in range(a, b))
        return hit

    white = set(c for a, b in space_ranges() for c in range(a, b + 1))
    for name, pat, mine in (
            ("\\p{L}", r"\p{L}", {c for c in CPS if ud.category(chr(c))[0] == "L"}),
            ("\\p{N}", r"\p{N}", {c for c in CPS if ud.category(chr(c))[0] == "N"}),
            ("\\s", r"\s", white)):
        theirs = onig(pat)
        report(name + " only in tokenizers", theirs - mine)
        report(name + " only in Python", mine - theirs)
    nfc, low = normalizers.NFC(), normalizers.Lowercase()
    report("NFC of one code point",
           [c for c in CPS if nfc.normalize_str(chr(c)) != ud.normalize("NFC", chr(c))])
    report("NFC of a canonical decomposition",
           [c for c in CPS if (lambda d: nfc.normalize_str(d) != ud.normalize("NFC", d))(
               ud.normalize("NFD", chr(c)))])
    report("lowercase", [c for c in CPS if low.normalize_str(chr(c)) != chr(c).lower()])


def report(what, cps):
    cps = sorted(cps)
    if not cps:
        print("%s: none" % what)
        return
    runs = []
    for c in cps:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    print("%s: %d code points: %s" % (what, len(cps), " ".join(
        "%04X" % a if a == b else "%04X-%04X" % (a, b) for a, b in runs)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        check()
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        emit(sys.argv[1] if len(sys.argv) > 1 else
             os.path.normpath(os.path.join(here, "..", "text_encoder", "unicode_tables.h")))
