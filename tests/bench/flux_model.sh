# flux_model: the FLUX.1-dev-shaped full-size random model the end-to-end benches share,
# BF16 in $W/bf16 (made by flux_full.py if missing) and DF11 in $W/df11 (df11 compress).
# Sourced by bench_flux.sh and bench_session.sh: flux_model BUILD_DIR WORK_DIR
flux_model() {
  local b=$1 w=$2 here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [ ! -f "$w/bf16/transformer/config.json" ]; then
    local t0
    t0=$(date +%s)
    python3 "$here/flux_full.py" make "$w/bf16" "$here/../fixtures" || return 1
    echo "flux_model: random full-size model written in $(($(date +%s) - t0)) s"
  fi
  if [ ! -f "$w/df11/transformer/config.json" ]; then
    "$b/df11" compress -q "$w/bf16" "$w/df11" || return 1
  fi
}
