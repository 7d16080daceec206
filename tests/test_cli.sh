#!/usr/bin/env bash
# test_cli: the df11 program's codec commands end to end on a generated model folder: byte-exact
# round trips of a folder, a sharded checkpoint and a single file; verify and inspect; and the
# errors a user can cause, each a clear message and a non-zero exit, never a partial output.
# usage: test_cli.sh DF11 GEN_CHECKPOINT
set -u
DF11=$1
GEN=$2
T=$(mktemp -d /tmp/df11_cli_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }
# expect RC CMD...: runs CMD, checks its exit code, keeps stderr in $T/err
expect() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "exit $rc (wanted $want): $*"; sed 's/^/  | /' "$T/err" >&2; fi
}
# says TEXT: the last command's stderr mentions TEXT
says() { if grep -qF -- "$1" "$T/err"; then ok; else bad "message lacks '$1':"; sed 's/^/  | /' "$T/err" >&2; fi; }
same_tree() { # every file of $1 equals $2's, by sha256, and no file more or less
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/a.sum"
  (cd "$2" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/b.sum"
  if cmp -s "$T/a.sum" "$T/b.sum"; then ok; else bad "trees differ: $1 $2"; diff "$T/a.sum" "$T/b.sum" >&2; fi
}

"$GEN" "$T/model" 256 || { echo "gen_checkpoint failed"; exit 1; }

# a whole folder
expect 0 "$DF11" compress -q "$T/model" "$T/model-df11"
expect 0 "$DF11" verify -q "$T/model-df11"
expect 0 "$DF11" decompress -q "$T/model-df11" "$T/model-back"
same_tree "$T/model" "$T/model-back"
[ -f "$T/model-df11/tokenizer/vocab.json" ] && ok || bad "other files not copied"
small=$(du -sb "$T/model-df11/transformer" | cut -f1); big=$(du -sb "$T/model/transformer" | cut -f1)
[ "$small" -lt $((big * 72 / 100)) ] && ok || bad "compressed transformer is $small of $big bytes"

# a sharded checkpoint through its index, and a single file
idx=diffusion_pytorch_model.safetensors.index.json
mkdir -p "$T/sharded"
expect 0 "$DF11" compress -q "$T/model/transformer/$idx" "$T/sharded/$idx"
expect 0 "$DF11" verify -q "$T/sharded/$idx"
expect 0 "$DF11" decompress -q "$T/sharded/$idx" "$T/sharded-back/$idx"
for f in "$T"/sharded-back/*; do cmp -s "$f" "$T/model/transformer/$(basename "$f")" && ok || bad "$f differs"; done
one="$T/model/transformer/diffusion_pytorch_model-00001-of-00002.safetensors"
expect 0 "$DF11" compress -q "$one" "$T/one.df11"
expect 0 "$DF11" decompress -q "$T/one.df11" "$T/one.back"
cmp -s "$one" "$T/one.back" && ok || bad "single file round trip differs"

# inspect, text and JSON
expect 0 "$DF11" inspect "$T/one.df11"
grep -q "transformer_blocks.0.attn.to_qkv.weight" "$T/out" && grep -q "^total:" "$T/out" && ok || bad "inspect text"
expect 0 "$DF11" inspect --json "$T/model-df11"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["total"]["stored_bytes"] < d["total"]["original_bytes"]' "$T/out" && ok || bad "inspect --json"

# errors: existing output, overwriting the input, bad flags, missing and corrupt inputs
expect 1 "$DF11" compress -q "$one" "$T/one.df11"; says "exists"
expect 0 "$DF11" compress -q --force "$one" "$T/one.df11"
expect 1 "$DF11" compress -q "$T/model" "$T/model/inside"; says "inside"
expect 2 "$DF11" compress --bogus "$one" "$T/x"; says "unknown option"
expect 2 "$DF11" compress "$one"; says "expected 2 paths"
expect 2 "$DF11" frobnicate; says "unknown command"
expect 2 "$DF11" compress -j zero "$one" "$T/x"; says "--threads"
expect 1 "$DF11" compress -q "$T/nope.safetensors" "$T/x"; says "nope.safetensors"
echo "not a checkpoint" >"$T/junk.safetensors"
expect 1 "$DF11" compress -q "$T/junk.safetensors" "$T/x"; says "junk.safetensors"
expect 1 "$DF11" compress -q "$T/one.df11" "$T/x"; says "already a DF11"
expect 1 "$DF11" decompress -q "$one" "$T/x"; says "not a DF11"
size=$(stat -c %s "$T/one.df11")
head -c $((size - 1000)) "$T/one.df11" >"$T/trunc.df11"
expect 1 "$DF11" verify -q "$T/trunc.df11"; says "trunc.df11"
expect 1 "$DF11" decompress -q "$T/trunc.df11" "$T/trunc.back"; says "trunc.df11"
[ ! -e "$T/trunc.back" ] && ok || bad "a failed decompress left an output"
cp "$T/one.df11" "$T/flip.df11"
printf '\x55' | dd of="$T/flip.df11" bs=1 seek=$((size - 3000)) conv=notrunc status=none
expect 1 "$DF11" verify -q "$T/flip.df11"; says "tensor '"
ls "$T" | grep -q '\.tmp\.' && bad "temporary files left behind" || ok
expect 0 "$DF11" --help
expect 0 "$DF11" compress --help

echo "test_cli: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
