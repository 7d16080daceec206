#!/usr/bin/env bash
# The golden set (tests/golden/, made by make_golden.sh with the tree before the pipeline moved
# into pipeline/): every PNG rendered again through `df11 regress` from the fixture pipeline it
# was made with, and compared byte for byte; then the job schema's round trip: each PNG's df11
# parameters (df11 info --json) fed back as a `df11 batch` line, which must write the same
# bytes. Between them the golden PNGs carry every parameter a PNG records.
# usage: test_golden.sh DF11_BINARY FIXTURES_DIR
set -u
df11=$1
F=$2
G=$(cd "$(dirname "$0")/golden" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/testlib.sh"
for pair in flux_dev:flux_tiny/dev flux_schnell:flux_tiny/schnell sd3_large:sd3_tiny/large \
            sd3_medium:sd3_tiny/medium; do
  d=${pair%%:*} m=${pair#*:}
  n=$(ls "$G/$d"/*.png | wc -l)
  expect 0 "$df11" regress "$G/$d" -m "$F/$m" -q --diff-dir "$T/$d" --json "$T/$d.json"
  if [ "$(grep -cE '"result":[[:space:]]*"pass"' "$T/$d.json")" = "$n" ]; then ok; else
    bad "golden $d: not every one of its $n PNGs matched"; cat "$T/$d.json" >&2; fi
done
for pair in flux_dev:flux_tiny/dev flux_schnell:flux_tiny/schnell sd3_large:sd3_tiny/large \
            sd3_medium:sd3_tiny/medium; do
  d=${pair%%:*} m=${pair#*:}
  for png in "$G/$d"/*.png; do
    name=$(basename "$png" .png)
    expect 0 "$df11" info --json "$png"
    python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))["df11"]
o["output"] = sys.argv[2]
print(json.dumps(o))' "$T/out" "$name" >"$T/$d-$name.jsonl"
    expect 0 "$df11" batch "$T/$d-$name.jsonl" -m "$F/$m" --cpu -q -o "$T/batch-$d"
    same "$T/batch-$d/$name.png" "$png"
  done
done
finish golden
