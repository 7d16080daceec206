#!/usr/bin/env bash
# bench_session: what a session saves the next job, on FLUX.1-dev-shaped full-size random
# weights (bench_flux.sh's model, made here by flux_full.py if missing), 1024x1024. Two jobs run
# one after the other in one session, as the window runs two Generates (df11 batch --group 1:
# each line one pipeline_run on the session the command opened), from BF16 and from DF11
# weights, under the default residency (auto: on this GPU everything fits and stays) and under
# release (each stage's model freed after it, as every run did before sessions). For each run:
# the time from the run's start to the end of its first step, and how much of it was encoding
# and loading. Prints a table; keeps the logs.
# usage: bench_session.sh BUILD_DIR WORK_DIR OUT_DIR   (RESIDENCIES="auto" for the first only)
set -u -o pipefail
B=$1 W=$2 O=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$W" "$O"
. "$here/flux_model.sh"
flux_model "$B" "$W" || exit 1
P="A cat holding a sign that says hello world"
printf '%s\n' "{\"prompt\": \"$P\", \"seed\": 42, \"output\": \"first\"}" \
  "{\"prompt\": \"$P\", \"seed\": 43, \"output\": \"second\"}" >"$O/jobs.txt"
printf "\n%s, FLUX.1-dev-shaped random weights, 1024x1024, two jobs in one session\n" \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
printf "%-6s %-9s %-7s %16s %14s %12s\n" weights residency job "first step, s" "encoders, s" "loading, s"
for w in bf16 df11; do
  for r in ${RESIDENCIES:-auto release}; do
    log=$O/${w}_$r.log
    "$B/df11" batch "$O/jobs.txt" -m "$W/$w" -o "$O/${w}_$r" --group 1 --steps 4 -f \
      --residency $r >/dev/null 2>"$log" || { tail -5 "$log"; exit 1; }
    grep -oE "first step done [0-9.]+ s after the start \(text encoders [0-9.]+ s; loading [0-9.]+ s" "$log" |
      awk -v w=$w -v r=$r '{gsub(/[();]/, ""); printf "%-6s %-9s %-7s %16s %14s %12s\n", w, r, NR == 1 ? "first" : "second", $4, $11, $14}'
  done
  [ -d "$O/${w}_release" ] && { cmp -s "$O/${w}_auto/first.png" "$O/${w}_release/first.png" &&
    cmp -s "$O/${w}_auto/second.png" "$O/${w}_release/second.png" &&
    echo "$w: auto and release wrote the same bytes" || echo "$w: auto and release DIFFER"; }
done
cmp -s "$O/bf16_auto/second.png" "$O/df11_auto/second.png" && echo "DF11 = BF16 bytes" ||
  echo "DF11 and BF16 DIFFER"
echo "(first step: from the run's start; the first run's includes hashing the weights and the"
echo " CUDA context; encoders: the text stages, their loads included; loading: every load)"
