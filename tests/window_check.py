#!/usr/bin/env python3
"""window_check: what test_window.sh asks of df11 window's screenshots, beside the geometry
file (JSON: the widgets' rectangles in screenshot pixels, the image as drawn) the same script
wrote. Stdlib only (CI has no PIL or numpy): PNGs read with pngedit.py.

  window_check.py bar SHOT GEOM FRACTION   the progress bar's filled part is FRACTION of it
  window_check.py preview SHOT GEOM        the panel shows the live preview, scaled to fit
  window_check.py image SHOT GEOM REF      REF's pixels, exactly, once, centred 1:1 in the panel
Exits 1 with a message when a check fails.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pngedit  # noqa: E402  (the PNG reader the tests share)


def read_png(path):
    """(w, h, rows): rows as bytes of w RGB pixels"""
    w, h, bpp, rows = pngedit.decode(pngedit.read_chunks(path))
    return w, h, [bytes(b for k, b in enumerate(r) if k % bpp < 3) for r in rows]


def px(rows, x, y):
    return rows[y][3 * x:3 * x + 3]


def fail(msg):
    print(f"window_check: {msg}", file=sys.stderr)
    sys.exit(1)


def bar(shot, geom, want):
    """The middle row of the bar: a run of the fill colour from its left end, then its
    background to the right end."""
    _, _, rows = read_png(shot)
    x, y, w, h = json.load(open(geom))["widgets"]["progress"]
    row = y + h // 2
    fill, back = px(rows, x, row), px(rows, x + w - 1, row)
    n = 0
    while n < w and px(rows, x + n, row) == fill:
        n += 1
    rest = {px(rows, x + k, row) for k in range(n, w)}
    got = n / w
    if abs(got - want) > 0.02:
        fail(f"{shot}: the bar is {got:.3f} filled, wanted {want:.3f}")
    if want < 1 and (fill == back or rest != {back}):
        fail(f"{shot}: the bar's unfilled part is not one colour apart from the fill")


def preview(shot, geom):
    _, _, rows = read_png(shot)
    g = json.load(open(geom))
    if g["image_kind"] != "preview" or not g["image"]:
        fail(f"{geom}: the panel shows {g['image_kind']}, not the preview")
    px0, py0, pw, ph = g["widgets"]["image"]
    x, y, w, h = g["image"]
    side = min(pw, ph)  # a square preview scaled to fit the panel, centred
    if not (w == h and abs(w - side) <= 1 and abs(x - (px0 + (pw - w) // 2)) <= 1 and
            abs(y - (py0 + (ph - h) // 2)) <= 1):
        fail(f"{geom}: the preview is drawn at {g['image']} in the panel {g['widgets']['image']}")
    back = px(rows, px0 + 1, py0 + 1) if x > px0 + 1 or y > py0 + 1 else None
    if back is None:
        fail(f"{geom}: the preview leaves no panel background to compare with")
    # the panel outside the preview is flat background; inside it, an image
    for yy in range(py0, py0 + ph, 7):
        for xx in list(range(px0, x, 5)) + list(range(x + w, px0 + pw, 5)):
            if px(rows, xx, yy) != back:
                fail(f"{shot}: panel pixel ({xx}, {yy}) outside the preview is not background")
    inside = [px(rows, xx, yy) for yy in range(y, y + h, 3) for xx in range(x, x + w, 3)]
    colours, flat = len(set(inside)), sum(p == back for p in inside) / len(inside)
    if colours < 64 or flat > 0.01:
        fail(f"{shot}: the preview has {colours} colours, {flat:.1%} background")


def image(shot, geom, ref):
    W, H, rows = read_png(shot)
    w, h, want = read_png(ref)
    g = json.load(open(geom))
    hits = []
    for y in range(H - h + 1):
        x = rows[y].find(want[0])
        while x >= 0:
            if x % 3 == 0 and all(rows[y + k][x:x + 3 * w] == want[k] for k in range(h)):
                hits.append((x // 3, y))
            x = rows[y].find(want[0], x + 1)
    px0, py0, pw, ph = g["widgets"]["image"]
    centre = (px0 + (pw - w) // 2, py0 + (ph - h) // 2)
    if hits != [centre]:
        fail(f"{shot}: {ref} found at {hits}, wanted once at {centre}, 1:1 in the panel")
    if g["image"] != [centre[0], centre[1], w, h] or g["image_kind"] != "image":
        fail(f"{geom}: the image is said drawn at {g['image']} ({g['image_kind']})")


def main(argv):
    if len(argv) == 5 and argv[1] == "bar":
        bar(argv[2], argv[3], float(argv[4]))
    elif len(argv) == 4 and argv[1] == "preview":
        preview(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "image":
        image(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
