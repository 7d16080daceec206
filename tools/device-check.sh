#!/usr/bin/env bash
# device-check: the whole check on a GPU machine (the lent H100): unpack the Debian packages
# the machine lacks (carried in .deb/), build for sm_90, run the whole CTest suite (GPU tests
# included), compute-sanitizer on the CUDA decoder's and ops' tests, and the codec and runtime
# benchmarks (with PyTorch's SDPA as the attention ceiling), printing short tables last.
# Logs go to $OUT (or build-gpu/) when set.
# usage: tools/device-check.sh [--no-bench] [--no-sanitizer] [--fixtures] [--ncu] [--flux-bench]
#                              [--sd3-bench] [--sd3-prepare] [--sd3-profile] [--no-tests]
#   --no-tests: build, but skip the CTest suite (a second call on a machine that just ran it)
#   --flux-bench: also FLUX.1-dev end to end at full size (tests/bench/bench_flux.sh: random
#     weights made here, BF16 and DF11, beside diffusers; needs the diffusers wheel in .whl/)
#   --sd3-bench: also SD3.5 Large end to end at full size, CFG 4.5 (tests/bench/bench_sd3.sh,
#     the same way); --sd3-prepare: only make and compress its model in /tmp/df11-sd3 (a few
#     minutes, once per machine), so that a later --sd3-bench call fits in the time limit
#   --sd3-batch: make the SD3 model if needed, then df11 batch of 8 lines (sizes, seeds, CFG
#     and steps per line; one bad) from its DF11 weights, the models loaded once: the log and
#     summary in $OUT/sd3_batch.txt (the PNGs in /tmp/df11-sd3-batch); then df11 regress of
#     those PNGs from the BF16 weights (the table in $OUT/sd3_regress.txt, JUnit XML beside)
#   --sd3-profile: make the SD3 model if needed, then 3 steps of it from BF16 and from DF11
#     with DF11_PROFILE_OPS=1 (time per op and shape), the tables in $OUT/sd3_profile_*.txt
#   --fixtures: first regenerate the reference fixtures that need torch (tests/fixtures/make_*.py,
#     with the Python wheels carried in .whl/), and copy them to $OUT to be committed
#   --ncu: also profile the decoder on a FLUX double block with Nsight Compute (pipe use, stalls)
#   --gpu-tests: of the CTest suite only the GPU tests, and compute-sanitizer on the patch test
#     (after the benches)
#   --session-bench: two jobs in one session at full size, first step of each, BF16 and DF11,
#     residency auto and release (tests/bench/bench_session.sh; FLUX's bench model, made if
#     missing; needs the diffusers wheel in .whl/ then)
set -u -o pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-build-gpu}
mkdir -p "$OUTDIR"
bench=1 sanitize=1 ncu=0 fixtures=0 flux=0 sd3=0 tests=1 sd3prof=0 sd3batch=0 session=0
for a in "$@"; do
  case $a in --no-bench) bench=0 ;; --no-sanitizer) sanitize=0 ;; --ncu) ncu=1 ;;
    --fixtures) fixtures=1 ;; --no-tests) tests=0 ;; --flux-bench) flux=1 ;; --sd3-bench) sd3=1 ;;
    --sd3-prepare) [ $sd3 = 1 ] || sd3=prepare ;;
    --sd3-profile) sd3prof=1; [ $sd3 = 1 ] || sd3=prepare ;;
    --sd3-batch) sd3batch=1; [ $sd3 = 1 ] || sd3=prepare ;;
    --gpu-tests) tests=gpu ;; --session-bench) session=1 ;;
    *) echo "device-check: unknown option $a" >&2; exit 2 ;; esac
done
if ls .whl/*.whl >/dev/null 2>&1; then # diffusers, for the fixture scripts and the benches
  py=/tmp/df11-py
  mkdir -p $py
  for w in .whl/*.whl; do python3 -m zipfile -e "$w" $py >/dev/null; done
  export PYTHONPATH=$py${PYTHONPATH:+:$PYTHONPATH}
fi
deps=/tmp/df11-deps
if ! pkg-config --exists libcjson 2>/dev/null; then
  mkdir -p $deps
  for f in .deb/*.deb; do dpkg -x "$f" $deps; done
  export PKG_CONFIG_SYSROOT_DIR=$deps
  export PKG_CONFIG_PATH=$deps/usr/lib/x86_64-linux-gnu/pkgconfig
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export CMAKE_PREFIX_PATH=$deps/usr
fi
zlib=()
if [ ! -f /usr/include/zlib.h ]; then
  mkdir -p $deps
  for f in .deb/zlib*.deb; do dpkg -x "$f" $deps; done
  zlib=(-DZLIB_INCLUDE_DIR=$deps/usr/include -DZLIB_LIBRARY=$deps/usr/lib/x86_64-linux-gnu/libz.a)
fi
if [ $fixtures = 1 ]; then
  python3 tests/fixtures/make_ops_ref.py tests/fixtures/ops_ref.safetensors || exit 1
  cp tests/fixtures/ops_ref.safetensors "$OUTDIR/"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DDF11_WERROR=ON -DDF11_PTXAS_VERBOSE=ON -DDF11_BENCH=$([ $bench = 1 ] && echo ON || echo OFF) "${zlib[@]}" \
  >"$OUTDIR/cmake.log" 2>&1 || { tail -30 "$OUTDIR/cmake.log"; exit 1; }
ninja -C build-gpu >"$OUTDIR/build.log" 2>&1 || { grep -E "error|FAILED" -A3 "$OUTDIR/build.log" | head -60; exit 1; }
grep -E "Used [0-9]+ registers|spill" "$OUTDIR/build.log" | tail -4
rc=0
if [ $tests = 1 ]; then
  (cd build-gpu && ctest --output-on-failure 2>&1) | tee "$OUTDIR/ctest.log" | tail -25
  rc=$?
elif [ $tests = gpu ]; then
  (cd build-gpu && ctest -j4 --output-on-failure -L gpu 2>&1) |
    tee "$OUTDIR/ctest.log" | grep -E "Test +#|tests passed|FAIL|rror" | tail -40
  rc=$?
fi
if [ $sanitize = 1 ]; then
  DF11_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/test_cuda_decode \
    >"$OUTDIR/sanitizer.log" 2>&1 && echo "compute-sanitizer memcheck: clean" ||
    { echo "compute-sanitizer memcheck: FAILED"; tail -30 "$OUTDIR/sanitizer.log"; rc=1; }
  compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/test_ops_cuda \
    >"$OUTDIR/sanitizer_ops.log" 2>&1 && echo "compute-sanitizer memcheck (ops): clean" ||
    { echo "compute-sanitizer memcheck (ops): FAILED"; grep -m5 -A12 "=====" "$OUTDIR/sanitizer_ops.log"; rc=1; }
fi
if [ $bench = 1 ]; then
  build-gpu/tests/bench_codec --real tests/fixtures/minilm_bf16.safetensors 2>&1 | tee "$OUTDIR/bench.txt"
  build-gpu/tests/bench_runtime 2>&1 | tee "$OUTDIR/bench_runtime.txt"
  echo "attention ceiling, measured now on this GPU:"
  python3 tests/bench/sdpa_ref.py 2>&1 | tee -a "$OUTDIR/bench_runtime.txt"
  build-gpu/tests/bench_blocks 2>&1 | tee "$OUTDIR/bench_blocks.txt"
fi
if [ $session = 1 ]; then
  bash tests/bench/bench_session.sh build-gpu /tmp/df11-flux "$OUTDIR/session" 2>&1 |
    tee "$OUTDIR/bench_session.txt" | tail -16
fi
if [ $tests = gpu ]; then
  compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/test_patch --gpu tests/fixtures \
    >"$OUTDIR/sanitizer_patch.log" 2>&1 && echo "compute-sanitizer memcheck (patch): clean" ||
    { echo "compute-sanitizer memcheck (patch): FAILED"; grep -m5 -A12 "=====" "$OUTDIR/sanitizer_patch.log"; rc=1; }
fi
if [ $flux = 1 ]; then
  bash tests/bench/bench_flux.sh build-gpu /tmp/df11-flux "$OUTDIR/flux" 2>&1 | tee "$OUTDIR/bench_flux.txt" | tail -12
fi
if [ $sd3 != 0 ]; then
  # FLUX's bench model (about 42 GB) and SD3's (about 33 GB) do not fit on the 64 GB disk
  # together: FLUX's goes when SD3's is still to be made and the space is short
  if [ -d /tmp/df11-flux ] && [ ! -f /tmp/df11-sd3/df11/model_index.json ] &&
    [ "$(df -P -B1 /tmp | awk 'NR == 2 {printf "%.0f", $4 / 1e9}')" -lt 36 ]; then
    echo "sd3 bench: removing /tmp/df11-flux (FLUX's bench model) to make room"
    rm -rf /tmp/df11-flux
  fi
  if [ $sd3 = prepare ]; then
    bash tests/bench/bench_sd3.sh build-gpu /tmp/df11-sd3 "$OUTDIR/sd3" --prepare 2>&1 | tee "$OUTDIR/bench_sd3.txt"
  else
    bash tests/bench/bench_sd3.sh build-gpu /tmp/df11-sd3 "$OUTDIR/sd3" 2>&1 | tee "$OUTDIR/bench_sd3.txt" | tail -28
  fi
fi
if [ $sd3batch = 1 ] && [ -f /tmp/df11-sd3/df11/model_index.json ]; then
  bp=tests/bench/sd3_batch.txt
  build-gpu/df11 batch $bp -m /tmp/df11-sd3/df11 -o /tmp/df11-sd3-batch -f \
    >"$OUTDIR/sd3_batch.out" 2>"$OUTDIR/sd3_batch.txt"
  echo "== df11 batch $bp, SD3.5 Large-shaped DF11 weights (exit $?)"
  grep -E "images to render|line [0-9]+:|transformer: loaded|CLIP-|T5:|VAE: [0-9.]+ s|peak|batch:" \
    "$OUTDIR/sd3_batch.txt" | grep -v "wrote" | tail -20
  # and the regression check of those images from the BF16 weights: the same bytes
  echo "== df11 regress /tmp/df11-sd3-batch, rendered again from the BF16 weights"
  build-gpu/df11 regress /tmp/df11-sd3-batch -m /tmp/df11-sd3/bf16 -q --junit "$OUTDIR/sd3_regress.xml" \
    >"$OUTDIR/sd3_regress.txt" 2>"$OUTDIR/sd3_regress.log"
  echo "(exit $?)"
  cat "$OUTDIR/sd3_regress.txt"
fi
if [ $sd3prof = 1 ] && [ -f /tmp/df11-sd3/df11/model_index.json ]; then
  for w in bf16 df11; do
    DF11_PROFILE_OPS=1 build-gpu/df11 generate -f -q -m /tmp/df11-sd3/$w -p "a cat" -s 1 --steps 3 \
      --cfg-scale 4.5 -o "$OUTDIR/sd3_profile_$w.png" 2>"$OUTDIR/sd3_profile_$w.txt" >/dev/null ||
      tail -5 "$OUTDIR/sd3_profile_$w.txt"
    echo "== ops profile, SD3.5 Large-shaped, 1024^2, 3 steps, CFG batch 2, from $w"
    awk "/ops profile/{n=1} n && n++ <= 45" "$OUTDIR/sd3_profile_$w.txt"
  done
fi
if [ $ncu = 1 ]; then
  if command -v ncu >/dev/null; then
    ncu -k df11_decode_kernel -c 1 --section SpeedOfLight --section ComputeWorkloadAnalysis \
      --section WarpStateStats --section Occupancy --section LaunchStats \
      build-gpu/tests/bench_codec --flux-only >"$OUTDIR/ncu.txt" 2>&1
    grep -E "Throughput|Pipe|Issue|Stall|Occupancy|Warp Cycles|Registers|Duration|Executed Ipc" \
      "$OUTDIR/ncu.txt" | head -60
  else
    echo "ncu: not installed on this machine"
  fi
fi
exit $rc
