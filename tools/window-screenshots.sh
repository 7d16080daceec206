#!/usr/bin/env bash
# window-screenshots: remakes the README's screenshots of df11 window (docs/window-running.png,
# docs/window-done.png) under Xvfb with the tiny FLUX.1-dev fixture on the CPU: a first image,
# then a second with a re-rolled seed, shot at step 4 of 8 and when done (a random-weight
# model: the picture is noise). usage: tools/window-screenshots.sh [BUILD_DIR]
set -eu
cd "$(dirname "$0")/.."
DF11=$PWD/${1:-build}/df11
T=$(mktemp -d /tmp/df11_shots_XXXXXX)
trap 'rm -rf "$T"' EXIT
cat >"$T/s.txt" <<'EOF2'
resize 1100 720
click prompt
type A lighthouse on a cliff at dusk, waves crashing below, dramatic clouds, golden light
click steps
type 8
key F5
wait-done
click reroll
hold-at-step 4
click generate
wait-step 4
screenshot running.png
release
wait-done
screenshot done.png
EOF2
(M=$PWD/tests/fixtures/flux_tiny/dev; cd "$T" && xvfb-run -a -s "-screen 0 1280x800x24" "$DF11" window -m "$M" \
  --cpu -W 256 -H 256 --max-sequence-length 64 --script s.txt)
mkdir -p docs
cp "$T/running.png" docs/window-running.png
cp "$T/done.png" docs/window-done.png
echo "wrote docs/window-running.png and docs/window-done.png"
