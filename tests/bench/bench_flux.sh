#!/usr/bin/env bash
# bench_flux: FLUX.1-dev end to end on this GPU at 1024x1024, 28 steps, from BF16 and from DF11
# weights, beside diffusers' FluxPipeline in BF16 run in the same script on the same model
# (the ceiling we measure against; docs/MODEL-SPEC.md §7.3 puts the GEMM floor at about 95 ms a step).
# The model has FLUX.1-dev's full-size transformer, VAE and CLIP-L with random weights, made
# here by flux_full.py and compressed with `df11 compress`. Prints a table; keeps the logs.
# usage: bench_flux.sh BUILD_DIR WORK_DIR OUT_DIR
set -u -o pipefail
B=$1 W=$2 O=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$W" "$O"
. "$here/flux_model.sh"
flux_model "$B" "$W" || exit 1
du -sb "$W/bf16/transformer" "$W/df11/transformer" | awk '{print "bench_flux: transformer " $2 ": " $1/1e9 " GB"}'
python3 "$here/flux_full.py" diffusers "$W/bf16" "$O/diffusers.json" >"$O/diffusers.log" 2>&1 ||
  { tail -5 "$O/diffusers.log"; echo "bench_flux: diffusers run failed"; }
# two images (seeds 42, 43) with the models loaded once: the second VAE decode is the warm
# one (the first also builds cuDNN's plans), as diffusers' figure is
for w in bf16 df11; do
  "$B/df11" generate -v -f -m "$W/$w" -p "A cat holding a sign that says hello world" -s 42 \
    --steps 28 -b 2 -o "$O/${w}_%d.png" >/dev/null 2>"$O/$w.log" || { tail -5 "$O/$w.log"; exit 1; }
done
same="byte-identical"
for i in 0 1; do cmp -s "$O/bf16_$i.png" "$O/df11_$i.png" || same="DIFFERENT"; done
# per-step median, VAE decode (cold, warm), time to first step, peak memory, s per image
stat() {
  local log=$1
  local step=$(grep -oE "step [0-9]+/28: [0-9.]+ ms" "$log" | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  local vae1=$(grep -oE "decoded in [0-9.]+ ms" "$log" | awk '{print $3}' | sed -n 1p)
  local vae2=$(grep -oE "decoded in [0-9.]+ ms" "$log" | awk '{print $3}' | sed -n 2p)
  local first=$(grep -oE "first step done [0-9.]+ s" "$log" | awk '{print $4}')
  local peak=$(grep -oE "peak device memory: [0-9.]+ GB" "$log" | awk '{print $4}')
  local img=$(awk -v s="$step" -v v="$vae2" 'BEGIN{printf "%.2f", 28 * s / 1000 + v / 1000}')
  echo "$step $vae2/$vae1 $first $peak $img"
}
read -r bs bv bf bp bt <<<"$(stat "$O/bf16.log")"
read -r ds dv df dp dt <<<"$(stat "$O/df11.log")"
py=$(python3 -c "import json;r=json.load(open('$O/diffusers.json'));print('%.1f %.1f %.2f %.2f %.2f'%(r['step_ms_median'],r['vae_ms'],r['first_step_s'],r['peak_gb'],r['image_s']))" 2>/dev/null || echo "- - - - -")
read -r ps pv pf pp pi <<<"$py"
printf "\nFLUX.1-dev-shaped random weights, 1024x1024, 28 steps, %s\n" "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
printf "%-16s %9s %18s %14s %9s %10s\n" run "ms/step" "VAE ms warm/cold" "first step s" "peak GB" "s/image"
printf "%-16s %9s %18s %14s %9s %10s\n" "diffusers BF16" "$ps" "$pv" "$pf" "$pp" "$pi"
printf "%-16s %9s %18s %14s %9s %10s\n" "df11 BF16" "$bs" "$bv" "$bf" "$bp" "$bt"
printf "%-16s %9s %18s %14s %9s %10s\n" "df11 DF11" "$ds" "$dv" "$df" "$dp" "$dt"
echo "(first step: from the program's start, loading included; s/image: 28 steps + a warm decode;"
echo " peak: ours from cudaMemGetInfo above the CUDA context, diffusers' torch.cuda.max_memory_allocated)"
awk -v b="$bs" -v d="$ds" 'BEGIN{ if (b > 0) printf "DF11 / BF16 per step: %.3fx\n", d / b }'
echo "DF11 and BF16 PNGs (2 seeds): $same"
