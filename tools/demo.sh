#!/usr/bin/env bash
# demo: compresses a generated model folder (diffusers layout, BF16 transformer in two shards),
# shows the ratio, rebuilds the originals and proves the round trip by sha256. With a GPU, it
# also checks the CUDA decoder against the CPU one. usage: tools/demo.sh BUILD_DIR [MODEL_DIR]
set -eu
B=$1
T=$(mktemp -d /tmp/df11_demo_XXXXXX)
trap 'rm -rf "$T"' EXIT
model=${2:-}
if [ -z "$model" ]; then
  model=$T/model
  echo "== generating a model folder with Student-t BF16 weights (4 blocks, hidden 1024)"
  "$B/tests/gen_checkpoint" "$model" 1024
fi
echo "== df11 compress $model"
"$B/df11" compress "$model" "$T/model-df11"
echo "== df11 inspect (totals)"
"$B/df11" inspect --totals "$T/model-df11"
echo "== df11 verify"
gpu=""
nvidia-smi >/dev/null 2>&1 && gpu=--gpu
"$B/df11" verify $gpu "$T/model-df11"
echo "== df11 decompress, then sha256 of every file"
"$B/df11" decompress "$T/model-df11" "$T/model-back"
(cd "$model" && find . -type f | sort | xargs sha256sum) >"$T/a"
(cd "$T/model-back" && find . -type f | sort | xargs sha256sum) >"$T/b"
cmp "$T/a" "$T/b" && echo "round trip: all $(wc -l <"$T/a") files byte-identical"
du -sb "$model" "$T/model-df11" | awk 'NR==1{a=$1} NR==2{printf "size: %d -> %d bytes (%.1f%%)\n", a, $1, 100*$1/a}'
