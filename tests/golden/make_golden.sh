#!/usr/bin/env bash
# The golden set: PNGs that `df11 generate` rendered on the CPU backend from the tiny fixture
# pipelines with the tree of commit 28a900d (before the pipeline moved into pipeline/). The
# `golden` test renders each again through `df11 regress` and compares the bytes, so any change
# of the pipeline's numerics, parameters or PNG metadata shows up. Rerun only on purpose (a
# deliberate change of the output), and say why in the commit.
# One folder a fixture model (flux_dev, flux_schnell, sd3_large, sd3_medium), as regress takes
# one model a run.
# usage: tests/golden/make_golden.sh DF11_BINARY [OUTDIR]
set -eu -o pipefail
df11=$1
out=${2:-$(dirname "$0")}
F=$(cd "$(dirname "$0")/../fixtures" && pwd)
mkdir -p "$out/flux_dev" "$out/flux_schnell" "$out/sd3_large" "$out/sd3_medium"
run() { "$df11" generate --cpu -q -f "$@" >/dev/null; }
run -m "$F/flux_tiny/dev" -p "a red fox in the snow" -s 7 -W 64 -H 48 --steps 4 --guidance 4.0 \
    --max-sequence-length 64 -o "$out/flux_dev/flux-dev.png"
run -m "$F/flux_tiny/schnell" -p "a bowl of ramen, steam rising" -s 3 -W 48 -H 64 \
    -o "$out/flux_schnell/flux-schnell.png"
run -m "$F/sd3_tiny/large" -p "a lighthouse at dusk" -n "blurry, low quality" -s 11 -W 64 -H 64 \
    --steps 5 --cfg-scale 4.5 --slg-scale 2.5 --skip-layers 1 --skip-layer-start 0.01 \
    --skip-layer-end 0.8 -o "$out/sd3_large/cfg-slg.png"
run -m "$F/sd3_tiny/large" -p "a lighthouse at dusk" -s 12 -W 48 -H 48 --steps 3 --cfg-scale 0 \
    -o "$out/sd3_large/nocfg.png"
run -m "$F/sd3_tiny/medium" -p "an astronaut riding a horse" -s 5 -W 64 -H 64 --steps 6 \
    --max-sequence-length 77 -o "$out/sd3_medium/medium.png"
