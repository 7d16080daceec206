#!/usr/bin/env bash
# test_window: `df11 window` end to end under Xvfb on the tiny FLUX.1-dev fixture. Scripted
# sessions (window_session.txt, window_cancel.txt and a few written here) drive the window
# through its own event path; window_check.py reads their screenshots beside the geometry JSON
# they wrote. Checked: the progress bar and the live preview mid-run, the final image pixel for
# pixel where it belongs and the bar complete, Save writing generate's bytes, the history,
# cancelling, closing mid-run, a run that fails, a bad field, script errors, the layout after a
# resize; without a display a clear message, and usage errors. Skips (77) where df11 was built
# without SDL2 or Xvfb is missing. usage: test_window.sh DF11 FIXTURES_DIR
set -u
DF11=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") # absolute: the sessions run in $T
FX=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/df11_win_XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
. "$HERE/testlib.sh"
check() { # window_check.py's checks on a screenshot
  if python3 "$HERE/window_check.py" "$@" 2>"$T/cerr"; then ok; else bad "window_check $*"; sed 's/^/  | /' "$T/cerr" >&2; fi
}
geom() { # geom FILE EXPR: EXPR, Python over g (FILE's JSON), holds
  if python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); sys.exit(not eval(sys.argv[2]))' \
    "$1" "$2" 2>"$T/gerr"; then ok; else
    bad "$1: not $2"; sed 's/^/  | /' "$T/gerr" >&2
    python3 -c 'import json, sys; g = json.load(open(sys.argv[1])); [print("  |", k, g[k]) for k in g if k not in ("widgets",)]' "$1" >&2 2>/dev/null
  fi
}

DEV=$FX/flux_tiny/dev
P="A cat holding a sign that says hello world" # as window_session.txt types it
job=(-W 128 -H 128 --steps 4 --max-sequence-length 64 --cpu)
nodisplay=(timeout 60 env -u DISPLAY -u WAYLAND_DISPLAY -u SDL_VIDEODRIVER)

expect 0 "$DF11" window --help
if grep -qF "usage: df11 window" "$T/out"; then ok; else bad "df11 window --help: no usage"; fi
# no display: a clear message naming the commands that need none (and the skip, when the window
# was left out of this build)
"${nodisplay[@]}" "$DF11" window -m "$DEV" --cpu >"$T/out" 2>"$T/err"
rc=$?
if grep -qF "built without SDL2" "$T/err"; then
  echo "SKIP: df11 was built without SDL2 (libsdl2-dev, libsdl2-ttf-dev): no window to test" >&2
  exit 77
fi
[ "$rc" -eq 1 ] && ok || bad "no display: exit $rc (wanted 1)"
says "no display"
says "df11 generate"
says "df11 batch"
expect 2 "$DF11" window -m "$DEV" --bogus
says 'unknown option "--bogus"'
expect 2 "$DF11" window -p "$P"
says "no model"
expect 2 "$DF11" window -m "$DEV" --steps 0
if ! command -v Xvfb >/dev/null; then
  echo "SKIP: Xvfb is missing (the xvfb package): no display to test the window on" >&2
  exit 77
fi
# one X server for the whole test (it picks a free display and writes its number to fd 3);
# xvfb-run a command could fail on its own clean-up under load
Xvfb -displayfd 3 -screen 0 1280x800x24 -nolisten tcp 3>"$T/display" 2>"$T/xvfb.log" &
xpid=$!
trap 'kill $xpid 2>/dev/null; wait $xpid 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 100); do [ -s "$T/display" ] && break; sleep 0.1; done
[ -s "$T/display" ] || { echo "FAILED: Xvfb did not start:" >&2; cat "$T/xvfb.log" >&2; exit 1; }
xdisplay=:$(tr -d '\n' <"$T/display")
xv() { timeout 300 env -u SDL_VIDEODRIVER DISPLAY="$xdisplay" "$@"; }

# the references: generate's PNG for the same job
expect 0 "$DF11" generate -m "$DEV" -p "$P" "${job[@]}" -s 7 -o "$T/ref7.png"

# the main session: prompt, size and steps typed, seed 7 from -s
expect 0 xv "$DF11" window -m "$DEV" --cpu --max-sequence-length 64 -s 7 -o "$T/saved" \
  --script "$HERE/window_session.txt"
# mid-run (held after step 2 of 4): the bar half full, the preview drawn, the counts
check bar running.png running.json 0.5
check preview running.png running.json
geom running.json 'g["running"] and g["step"] == 2 and g["n_steps"] == 4'
geom running.json '"step 2/4" in g["progress"] and "/" in g["progress"].split("step 2/4")[1] and "ETA" in g["progress"]'
geom running.json 'g["fields"]["prompt"] == "'"$P"'" and g["fields"]["width"] == "128" and g["fields"]["height"] == "128" and g["fields"]["steps"] == "4"'
# done: generate's image, pixel for pixel, 1:1 in the middle of the panel; the bar full
check image done.png done.json ref7.png
check bar done.png done.json 1
geom done.json 'not g["running"] and g["history_count"] == 1 and g["history"] == "image 1 of 1"'
# Save: generate's bytes, under the next free name
geom saved.json 'g["saved"].endswith("/saved/df11-00001-7.png") and g["status"].startswith("saved ")'
same "$T/saved/df11-00001-7.png" "$T/ref7.png"
[ "$(ls "$T/saved" | wc -l)" -eq 1 ] && ok || bad "Save wrote more than one file: $(ls "$T/saved")"
geom one.json 'g["history_index"] == 1 and g["history_count"] == 1'
# the second image, with a re-rolled seed: the history shows 2 of 2, Left goes back to the
# first, Right to the second, and each is generate's image for its seed
geom second.json 'g["history_count"] == 2 and g["history_index"] == 2 and g["history"] == "image 2 of 2"'
geom second.json 'g["fields"]["seed"] != "7" and g["status"].startswith("image 2: seed " + g["fields"]["seed"] + ",")'
seed2=$(python3 -c 'import json; print(json.load(open("second.json"))["fields"]["seed"])')
expect 0 "$DF11" generate -m "$DEV" -p "$P" "${job[@]}" -s "$seed2" -o "$T/ref2.png"
check image second.png second.json ref2.png
geom left.json 'g["history_index"] == 1 and g["history"] == "image 1 of 2"'
check image left.png left.json ref7.png
geom right.json 'g["history_index"] == 2'
# resized: every widget inside the window, the column left of the panel, the bar below it
geom small.json 'g["window"] == [900, 640]'
geom small.json 'all(x >= 0 and y >= 0 and x + w <= 900 and y + h <= 640 for x, y, w, h in g["widgets"].values())'
geom small.json 'all(r[0] + r[2] < g["widgets"]["image"][0] for k, r in g["widgets"].items() if k not in ("image", "progress", "status"))'
geom small.json 'g["widgets"]["image"][1] + g["widgets"]["image"][3] < g["widgets"]["progress"][1] < g["widgets"]["status"][1]'

# cancelling: no image added, the status says so; the next run gives generate's image (the job
# from flags this time)
expect 0 xv "$DF11" window -m "$DEV" -p "$P" "${job[@]}" -s 7 -o "$T/c" --script "$HERE/window_cancel.txt"
geom cancelled.json 'g["history_count"] == 0 and "cancelled" in g["status"] and not g["status_error"]'
geom cancelled.json 'g["progress"].startswith("cancelled at step 1/4")'
geom after.json 'g["history_count"] == 1'
check image after.png after.json ref7.png
[ ! -e "$T/c" ] && ok || bad "a cancelled session saved something"

# closed mid-run: the worker is cancelled and joined, the exit clean
printf 'hold-at-step 1\nclick generate\nwait-step 1\nquit\n' >close.txt
expect 0 xv "$DF11" window -m "$DEV" -p "$P" "${job[@]}" --script close.txt --geometry closed.json
geom closed.json 'g["history_count"] == 0 and not g["running"]'

# a bad field: a red message, the field focused, nothing started
printf 'click width\ntype 130\nkey Return\ngeometry bad.json\n' >badfield.txt
expect 0 xv "$DF11" window -m "$DEV" -p "$P" "${job[@]}" --script badfield.txt
geom bad.json 'g["status_error"] and "multiple of 16" in g["status"] and g["focus"] == "width"'
geom bad.json 'not g["running"] and g["history_count"] == 0'

# SD3.5: a negative prompt and a CFG scale typed in; Save writes generate's bytes for them.
# FLUX.1-schnell takes neither guidance nor a negative prompt: no such fields
L=$FX/sd3_tiny/large
sd3=(-W 128 -H 128 --steps 3 --max-sequence-length 32 --cpu)
printf '%s\n' 'click negative' 'type blurry' 'click cfg' 'type 4.5' 'key F5' 'wait-done' 'click save' \
  'geometry sd3.json' >sd3.txt
expect 0 xv "$DF11" window -m "$L" -p "$P" "${sd3[@]}" -s 7 -o "$T/sd3" --script sd3.txt
expect 0 "$DF11" generate -m "$L" -p "$P" -n blurry --cfg-scale 4.5 "${sd3[@]}" -s 7 -o "$T/refsd3.png"
same "$T/sd3/df11-00001-7.png" "$T/refsd3.png"
geom sd3.json 'g["fields"]["negative"] == "blurry" and g["fields"]["guidance"] == "4.5"'
printf 'geometry schnell.json\n' >schnell.txt
expect 0 xv "$DF11" window -m "$FX/flux_tiny/schnell" --cpu --script schnell.txt
geom schnell.json '"guidance" not in g["widgets"] and "negative" not in g["widgets"] and g["fields"]["steps"] == "4"'

# editing: a line break, Up and End, select all, copy and paste, Backspace and Delete, Tab into
# a one-line field (its text selected, so typing replaces it)
printf '%s\n' 'click prompt' 'type one two' 'key Return' 'type three' 'key Up' 'key End' 'type !' \
  'key Ctrl+A' 'key Ctrl+C' 'key Right' 'type | ' 'key Ctrl+V' 'key Left' 'key Left' \
  'key Backspace' 'key Delete' 'key Tab' 'type 256' 'geometry edit.json' >edit.txt
expect 0 xv "$DF11" window -m "$DEV" "${job[@]}" --script edit.txt
geom edit.json 'g["fields"]["prompt"] == "one two!\nthree| one two!\nthe" and g["fields"]["width"] == "256" and g["focus"] == "width"'

# a run that fails (a truncated VAE, found only when it loads): the error in the status line
mkdir -p "$T/novae" && cp -rL "$DEV"/. "$T/novae/"
vae=$(ls "$T/novae/vae/"*.safetensors | head -1)
head -c 3000 "$vae" >"$vae.tmp" && mv "$vae.tmp" "$vae"
printf 'key F5\nwait-done\ngeometry failed.json\n' >fail.txt
expect 0 xv "$DF11" window -m "$T/novae" -p "$P" "${job[@]}" --script fail.txt
geom failed.json 'g["status_error"] and "'"$(basename "$vae")"'" in g["status"] and g["history_count"] == 0'

# a font that cannot be opened: a clear message, no window
expect 1 xv "$DF11" window -m "$DEV" --cpu --font "$T/nofont.ttf"
says "cannot open the font $T/nofont.ttf"

# script errors name their line; a timed-out wait still closes the window, its run cancelled
printf 'click prompt\nfrobnicate 3\n' >bad1.txt
expect 1 xv "$DF11" window -m "$DEV" "${job[@]}" --script bad1.txt
says "bad1.txt:2: unknown command"
printf 'hold-at-step 1\nclick generate\ntimeout 1\nwait-done\n' >bad2.txt
expect 1 xv "$DF11" window -m "$DEV" -p "$P" "${job[@]}" --script bad2.txt
says "bad2.txt:4: wait-done"
printf 'click negative\n' >bad3.txt
expect 1 xv "$DF11" window -m "$DEV" "${job[@]}" --script bad3.txt
says "negative is not shown"

finish test_window
