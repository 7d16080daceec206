#!/usr/bin/env python3
"""pngedit: the PNG surgery the regress test plants its mismatches with (stdlib only: CI has no
PIL). Chunks are read and written as they are (CRCs kept); pixels decoded for 8-bit RGB/RGBA
(all five filters) and re-encoded with filter 0.

  pngedit.py swap-texts A B          swap the two files' text chunks (tEXt, zTXt, iTXt)
  pngedit.py add-text F KEY TEXT     append a tEXt chunk before IEND
  pngedit.py poke F X Y C DELTA      add DELTA to channel C of pixel (X, Y), keeping the texts
  pngedit.py pixels F                print width, height and a SHA-256 of the RGB bytes
"""
import hashlib
import struct
import sys
import zlib

SIG = b"\x89PNG\r\n\x1a\n"
TEXT = (b"tEXt", b"zTXt", b"iTXt")


def read_chunks(path):
    data = open(path, "rb").read()
    assert data[:8] == SIG, f"{path}: not a PNG"
    out, i = [], 8
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        out.append((kind, data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def write_chunks(path, chunks):
    with open(path, "wb") as f:
        f.write(SIG)
        for kind, body in chunks:
            f.write(struct.pack(">I4s", len(body), kind) + body)
            f.write(struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def decode(chunks):
    """(w, h, bytes per pixel, rows as bytearrays) of an 8-bit RGB or RGBA PNG"""
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1][:13])
    assert depth == 8 and ctype in (2, 6) and not interlace, "8-bit RGB or RGBA, not interlaced, only"
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    rows, prev, stride = [], bytearray(w * bpp), w * bpp
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for x in range(stride):
                line[x] = (line[x] + ((line[x - bpp] if x >= bpp else 0) + prev[x]) // 2) & 255
        elif f == 4:
            for x in range(stride):
                a, b = line[x - bpp] if x >= bpp else 0, prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def rgb(path):
    w, h, bpp, rows = decode(read_chunks(path))
    return w, h, b"".join(bytes(r[x] for x in range(len(r)) if x % bpp < 3) for r in rows)


def main(argv):
    cmd = argv[1]
    if cmd == "swap-texts":
        a, b = read_chunks(argv[2]), read_chunks(argv[3])
        ta, tb = [c for c in a if c[0] in TEXT], [c for c in b if c[0] in TEXT]
        assert ta and tb, "both files need text chunks"
        for path, chunks, texts in ((argv[2], a, tb), (argv[3], b, ta)):
            rest = [c for c in chunks if c[0] not in TEXT]
            write_chunks(path, rest[:-1] + texts + rest[-1:])
    elif cmd == "add-text":
        chunks = read_chunks(argv[2])
        body = argv[3].encode("latin-1") + b"\0" + argv[4].encode("latin-1")
        write_chunks(argv[2], chunks[:-1] + [(b"tEXt", body)] + chunks[-1:])
    elif cmd == "poke":
        chunks = read_chunks(argv[2])
        w, h, bpp, rows = decode(chunks)
        x, y, c, d = (int(v) for v in argv[3:7])
        rows[y][x * bpp + c] = (rows[y][x * bpp + c] + d) & 255
        idat = zlib.compress(b"".join(b"\0" + bytes(r) for r in rows), 9)
        first = next(i for i, k in enumerate(chunks) if k[0] == b"IDAT")
        rest = [k for k in chunks if k[0] != b"IDAT"]
        write_chunks(argv[2], rest[:first] + [(b"IDAT", idat)] + rest[first:])
    elif cmd == "pixels":
        w, h, px = rgb(argv[2])
        print(w, h, hashlib.sha256(px).hexdigest())
    else:
        sys.exit(f"pngedit: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
