#!/usr/bin/env bash
# demo: the product's job in one go. Compresses a FLUX.1 model folder to DF11 (the ratio),
# renders the same prompt from the BF16 folder and from the DF11 folder and shows that the two
# PNGs are byte-identical, then rebuilds the original files from DF11 and checks them by
# sha256. With no model given it uses the tiny random-weight FLUX.1-dev fixture (real
# structure, tests/fixtures/flux_tiny/dev; its image is noise-like, the weights are random);
# pointed at a real diffusers FLUX.1 folder it renders the real thing at 1024x1024. Runs on the
# GPU when there is one, else on the CPU backend.
# usage: tools/demo.sh BUILD_DIR [MODEL_DIR] [PROMPT]
set -eu
B=$1
model=${2:-}
prompt=${3:-"A cat holding a sign that says hello world"}
T=$(mktemp -d /tmp/df11_demo_XXXXXX)
trap 'rm -rf "$T"' EXIT
size=()
if [ -z "$model" ]; then
  model=$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/flux_tiny/dev
  size=(-W 256 -H 256 --steps 8 --max-sequence-length 64)
  nvidia-smi >/dev/null 2>&1 || size=(-W 128 -H 128 --steps 8 --max-sequence-length 64)
  echo "== no model given: the tiny random-weight FLUX.1-dev fixture ($model)"
fi
backend=()
if ! nvidia-smi >/dev/null 2>&1; then
  backend=(--cpu)
  echo "== no GPU: rendering on the CPU backend"
fi
echo "== df11 compress $model"
"$B/df11" compress -q "$model" "$T/model-df11"
"$B/df11" inspect --totals "$T/model-df11"
for w in bf16 df11; do
  src=$model
  [ $w = df11 ] && src=$T/model-df11
  echo "== df11 generate from the ${w^^} weights"
  t0=$(date +%s.%N)
  "$B/df11" generate -q -m "$src" -p "$prompt" -s 42 "${size[@]}" "${backend[@]}" -o "$T/$w.png" \
    >/dev/null 2>"$T/$w.log" || { cat "$T/$w.log" >&2; exit 1; }
  grep -E "^df11: (warning|error)" "$T/$w.log" || true
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "rendered in %.1f s\n", b - a }'
done
if cmp -s "$T/bf16.png" "$T/df11.png"; then
  echo "DF11 and BF16 renders: byte-identical ($(sha256sum <"$T/bf16.png" | cut -c1-16)...)"
else
  echo "DF11 and BF16 renders DIFFER" >&2
  exit 1
fi
cp "$T/df11.png" demo.png
echo "the image: $(pwd)/demo.png"
echo "== df11 decompress, then sha256 of every file"
"$B/df11" decompress -q "$T/model-df11" "$T/model-back"
(cd "$model" && find -L . -type f | sort | xargs sha256sum) >"$T/a"
(cd "$T/model-back" && find -L . -type f | sort | xargs sha256sum) >"$T/b"
if ! cmp -s "$T/a" "$T/b"; then
  echo "round trip: the rebuilt files DIFFER" >&2
  diff "$T/a" "$T/b" >&2
  exit 1
fi
echo "round trip: all $(wc -l <"$T/a") files byte-identical"
du -sbL "$model" "$T/model-df11" |
  awk 'NR==1{a=$1} NR==2{printf "size: %d -> %d bytes (%.1f%%)\n", a, $1, 100*$1/a}'
