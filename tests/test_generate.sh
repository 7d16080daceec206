#!/usr/bin/env bash
# test_generate: `df11 generate` end to end on the tiny FLUX.1 and SD3.5 fixtures
# (tests/fixtures/flux_tiny, sd3_tiny): a DF11 run and a BF16 run write the same PNG bytes, the same job twice writes the
# same bytes (CPU backend always, the GPU too where there is one); the PNG's text chunks carry
# the parameters and nothing run-specific; batches and output patterns; parts given on their
# own; and the errors a user can cause, each a clear message and a non-zero exit, never a
# partial output. usage: test_generate.sh DF11 FIXTURES_DIR
set -u
DF11=$1
FX=$2
T=$(mktemp -d /tmp/df11_gen_XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/testlib.sh"

DEV=$FX/flux_tiny/dev
P="A cat holding a sign that says hello world"
small=(-W 128 -H 128 --steps 3 --max-sequence-length 64 -s 7)
expect 0 "$DF11" compress -q "$DEV" "$T/dev-df11"
backends=(--cpu)
nvidia-smi >/dev/null 2>&1 && backends+=(gpu)
for be in "${backends[@]}"; do
  b=(); [ "$be" = --cpu ] && b=(--cpu)
  expect 0 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" "${b[@]}" -o "$T/bf16$be.png"
  expect 0 "$DF11" generate -m "$T/dev-df11" -p "$P" "${small[@]}" "${b[@]}" -o "$T/df11$be.png"
  same "$T/bf16$be.png" "$T/df11$be.png"
  expect 0 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" "${b[@]}" -o "$T/again$be.png"
  same "$T/bf16$be.png" "$T/again$be.png"
done
if [ ${#backends[@]} -gt 1 ]; then
  # DF11 blocks streamed from host memory under a budget: the same bytes again; BF16 cannot
  expect 0 "$DF11" generate -m "$T/dev-df11" -p "$P" "${small[@]}" --vram-budget 0.5 -o "$T/stream.png"
  same "$T/bf16gpu.png" "$T/stream.png"
  expect 1 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" --vram-budget 0.5 -o "$T/stream2.png"
  says "not DF11"
fi

# the text chunks: parameters with the prompt and the seed, JSON, the model hash; no path,
# no time chunk, no weight format
png=$T/bf16--cpu.png
for s in "parameters" "$P" "Seed: 7" "Steps: 3" "Size: 128x128" "Model: FLUX.1-dev" "Model hash: " \
  '"seed":7' '"model":"FLUX.1-dev"'; do
  if grep -aqF -- "$s" "$png"; then ok; else bad "the PNG lacks '$s'"; fi
done
for s in "$T" "tIME" "DF11" "df11-df11" "flux_tiny"; do
  if grep -aqF -- "$s" "$png"; then bad "the PNG holds '$s'"; else ok; fi
done
# df11 info reads them back: the text as written, and JSON whose fields are the job's
expect 0 "$DF11" info "$png"
for s in "$png: 128 x 128" "parameters:" "$P" "Seed: 7" "Steps: 3" "df11:"; do
  if grep -qF -- "$s" "$T/out"; then ok; else bad "df11 info lacks '$s'"; fi
done
expect 0 "$DF11" info --json "$png"
if python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))
d = o["df11"]
assert o["width"] == 128 and o["height"] == 128 and o["file"] == sys.argv[2], o
assert d["seed"] == 7 and d["steps"] == 3 and d["prompt"] == sys.argv[3], d
assert o["parameters"].startswith(sys.argv[3]), o["parameters"]
' "$T/out" "$png" "$P"; then ok; else bad "df11 info --json: wrong fields"; fi
# a PNG without parameters (text chunks), a file that is not a PNG, an unknown option
python3 -c '
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + b"\x80" * 6 for _ in range(2))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' "$T/plain.png"
expect 1 "$DF11" info "$T/plain.png"
says "no generation parameters"
head -c 100 "$png" >"$T/cut.png"
expect 1 "$DF11" info "$T/cut.png" "$png"
says "cut.png"
if grep -qF -- "$png: 128 x 128" "$T/out"; then ok; else bad "df11 info stopped at the bad file"; fi
expect 2 "$DF11" info --xml "$png"
says "--xml"
# stdout lists the file written
expect 0 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" --cpu -o "$T/list.png"
if grep -qx "$T/list.png" "$T/out"; then ok; else bad "stdout does not list the file"; fi

# batches: seeds seed, seed+1 with a pattern; without one, _0 and _1 before the extension
expect 0 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" --cpu -b 2 -o "$T/img_%02d.png"
[ -f "$T/img_00.png" ] && [ -f "$T/img_01.png" ] && ok || bad "-b 2 with %02d: files missing"
same "$T/img_00.png" "$T/bf16--cpu.png"
differ "$T/img_00.png" "$T/img_01.png"
expect 0 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" --cpu -b 2 -o "$T/b.png"
[ -f "$T/b_0.png" ] && [ -f "$T/b_1.png" ] && ok || bad "-b 2 without a pattern: files missing"
if grep -aqF "Seed: 8" "$T/b_1.png"; then ok; else bad "the second image's seed is not 8"; fi

# the parts given on their own (no -m): the same image
expect 0 "$DF11" generate --diffusion-model "$DEV/transformer" --vae "$DEV/vae" \
  --clip_l "$DEV/text_encoder/model.safetensors" --t5xxl "$DEV/text_encoder_2" \
  --clip-tokenizer "$DEV/tokenizer" --t5-tokenizer "$DEV/tokenizer_2" -p "$P" "${small[@]}" --cpu \
  -o "$T/parts.png"
same "$T/parts.png" "$T/bf16--cpu.png"

# schnell: no guidance, 4 steps by default
expect 0 "$DF11" generate -m "$FX/flux_tiny/schnell" -p "$P" -W 128 -H 128 --max-sequence-length 64 \
  --cpu -o "$T/schnell.png"
if grep -aqF "Model: FLUX.1-schnell" "$T/schnell.png" && grep -aqF "Steps: 4," "$T/schnell.png"; then ok; else bad "schnell's parameters"; fi

# SD3.5: CFG with a negative prompt, DF11 = BF16 and the same job twice on each backend; the
# variant's name and defaults; skip-layer guidance; its flags refused by FLUX and vice versa
L=$FX/sd3_tiny/large M=$FX/sd3_tiny/medium
sd3=(-W 128 -H 128 --steps 3 --max-sequence-length 32 -s 7)
expect 0 "$DF11" compress -q "$L" "$T/large-df11"
for be in "${backends[@]}"; do
  b=(); [ "$be" = --cpu ] && b=(--cpu)
  expect 0 "$DF11" generate -m "$L" -p "$P" -n "blurry" "${sd3[@]}" "${b[@]}" -o "$T/l$be.png"
  expect 0 "$DF11" generate -m "$T/large-df11" -p "$P" -n "blurry" "${sd3[@]}" "${b[@]}" -o "$T/ld$be.png"
  same "$T/l$be.png" "$T/ld$be.png"
  expect 0 "$DF11" generate -m "$L" -p "$P" -n "blurry" "${sd3[@]}" "${b[@]}" -o "$T/la$be.png"
  same "$T/l$be.png" "$T/la$be.png"
done
for s in "Negative prompt: blurry" "CFG scale: 3.5," "Model: SD3.5-Large," "Steps: 3," \
  '"negative_prompt":"blurry"' '"cfg_scale":3.5'; do
  if grep -aqF -- "$s" "$T/l--cpu.png"; then ok; else bad "the SD3 PNG lacks '$s'"; fi
done
# the default negative prompt is "", which differs from "blurry"
expect 0 "$DF11" generate -m "$L" -p "$P" "${sd3[@]}" --cpu -o "$T/lneg.png"
differ "$T/lneg.png" "$T/l--cpu.png"
if grep -aqF "Negative prompt: " "$T/lneg.png"; then ok; else bad "no Negative prompt line"; fi
# Medium by its dual-attention blocks (40 steps, CFG 4.5 by default); SLG changes the image
expect 0 "$DF11" generate -m "$M" -p "$P" "${sd3[@]}" --steps 6 --cpu -o "$T/m.png"
if grep -aqF "Model: SD3.5-Medium," "$T/m.png" && grep -aqF "CFG scale: 4.5," "$T/m.png"; then ok; else bad "Medium's parameters"; fi
expect 0 "$DF11" generate -m "$M" -p "$P" "${sd3[@]}" --steps 6 --cpu --slg-scale 2.8 \
  --skip-layers "[1]" --skip-layer-end 0.5 -o "$T/mslg.png"
differ "$T/m.png" "$T/mslg.png"
if grep -aqF "SLG scale: 2.8, Skip layers: 1, SLG start: 0.01, SLG end: 0.5" "$T/mslg.png"; then ok; else bad "SLG parameters"; fi
expect 1 "$DF11" generate -m "$M" -p "$P" "${sd3[@]}" --cpu --slg-scale 2.8 --skip-layers 7 -o "$T/e5.png"
says "skip layer 7"
# Large Turbo, named so by its folder: 4 steps, no CFG, so no negative prompt
ln -s "$(cd "$L" && pwd)" "$T/stable-diffusion-3.5-large-turbo"
expect 0 "$DF11" generate -m "$T/stable-diffusion-3.5-large-turbo" -p "$P" -W 128 -H 128 \
  --max-sequence-length 32 --cpu -o "$T/turbo.png"
if grep -aqF "Model: SD3.5-Large-Turbo," "$T/turbo.png" && grep -aqF "Steps: 4," "$T/turbo.png" &&
  grep -aqF "CFG scale: 0," "$T/turbo.png" && ! grep -aqF "Negative prompt" "$T/turbo.png"; then ok; else bad "Turbo's parameters"; fi
# the parts on their own, T5 left out (its tokens are zeros, as diffusers): it renders, and
# differs from the run with T5
expect 0 "$DF11" generate --diffusion-model "$L/transformer" --vae "$L/vae" \
  --clip_l "$L/text_encoder" --clip_g "$L/text_encoder_2" --clip-tokenizer "$L/tokenizer" \
  --clip-g-tokenizer "$L/tokenizer_2" -p "$P" -n "blurry" "${sd3[@]}" --cpu -o "$T/not5.png"
says "no T5-XXL"
differ "$T/not5.png" "$T/l--cpu.png"
expect 1 "$DF11" generate -m "$L" -p "$P" "${sd3[@]}" --guidance 3 --cpu -o "$T/e6.png"
says "--cfg-scale"
expect 1 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" -n "blurry" --cpu -o "$T/e7.png"
says "guidance-distilled"
expect 1 "$DF11" generate -m "$L" -p "$P" -W 136 -H 128 --cpu -o "$T/e8.png"
says "multiples of 16"
expect 2 "$DF11" generate -m "$L" -p "$P" --skip-layers "7,x" -o "$T/e9.png"
says "--skip-layers"
# the wrong CLIP-G: CLIP-L given for it still fits these tiny widths, so give T5 instead
expect 1 "$DF11" generate -m "$L" --clip_g "$L/text_encoder_3" -p "$P" "${sd3[@]}" --cpu -o "$T/e10.png"
says "CLIP-G text encoder $L/text_encoder_3"

# errors
expect 2 "$DF11" generate -m "$DEV" -p "$P" --bogus
says 'unknown option "--bogus"'
expect 2 "$DF11" generate -m "$DEV"
says "no prompt"
expect 2 "$DF11" generate -p "$P"
says "no model"
expect 2 "$DF11" generate -m "$DEV" -p "$P" -W 8
says "16..8192"
expect 2 "$DF11" generate -m "$DEV" -p "$P" --steps 0
expect 2 "$DF11" generate -m "$DEV" -p "$P" -o "$T/x_%s.png"
says "integer conversion"
expect 2 "$DF11" generate -m "$DEV" -p "$P" --noise-dtype f64
says "--noise-dtype"
expect 1 "$DF11" generate -m "$T/nope" -p "$P" --cpu -o "$T/e1.png"
says "$T/nope"
[ ! -e "$T/e1.png" ] && ok || bad "an output was written after an error"
expect 1 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" --cpu -o "$T/bf16--cpu.png"
says "exists"
# a folder without its VAE
mkdir -p "$T/novae" && for c in transformer text_encoder text_encoder_2 tokenizer tokenizer_2 scheduler model_index.json; do
  ln -s "$(cd "$DEV" && pwd)/$c" "$T/novae/$c"; done
expect 1 "$DF11" generate -m "$T/novae" -p "$P" "${small[@]}" --cpu -o "$T/e2.png"
says "no VAE"
# a wrong part: CLIP given as T5; the message names the part
expect 1 "$DF11" generate -m "$DEV" --t5xxl "$DEV/text_encoder" -p "$P" "${small[@]}" --cpu -o "$T/e4.png"
says "T5 text encoder $DEV/text_encoder"
# a truncated transformer shard: the message names the file
mkdir -p "$T/trunc" && cp -rL "$DEV"/. "$T/trunc/"
shard=$(ls "$T/trunc/transformer/"*.safetensors | head -1)
head -c 5000 "$shard" >"$shard.tmp" && mv "$shard.tmp" "$shard"
expect 1 "$DF11" generate -m "$T/trunc" -p "$P" "${small[@]}" --cpu -o "$T/e3.png"
says "$(basename "$shard")"
[ ! -e "$T/e3.png" ] && ok || bad "an output was written after an error"
# an output folder that does not exist: an error, no temporary file left
expect 1 "$DF11" generate -m "$DEV" -p "$P" "${small[@]}" --cpu -o "$T/no/such/dir.png"
if ls "$T" | grep -q "\.tmp\."; then bad "a temporary file was left"; else ok; fi

# df11 batch: plain and JSON lines, comments and blanks skipped, each image the bytes generate
# writes for the same job; bad lines reported by number while the others run; a second run
# resumes (every image there is skipped)
B=$T/batch
mkdir -p "$B"
cat >"$B/p.txt" <<EOF2
# prompts for the tiny FLUX.1-dev
$P

{"prompt": "a red bicycle", "seed": 3, "width": 64, "height": 64, "output": "bike"}
{"prompt": "broken", "seed": -1}
{"prompt": "x", "sampler": "dpm"}
{not json
{"prompt": "a dog", "negative_prompt": "blurry"}
EOF2
expect 1 "$DF11" batch "$B/p.txt" -m "$DEV" -o "$B/out" "${small[@]}" --cpu
for s in "p.txt:5: \"seed\": expected a non-negative integer" "p.txt:6: \"sampler\": df11 has one sampler" \
  "p.txt:7: not a JSON object" "line 8: a negative prompt" "2 images written, 0 already there, 4 failed" \
  "failed lines: 8"; do says "$s"; done
cat1="$B/out/0002-a-cat-holding-a-sign-that-says-hello-wor.png"
same "$cat1" "$T/bf16--cpu.png"
expect 0 "$DF11" generate -m "$DEV" -p "a red bicycle" -s 3 -W 64 -H 64 --steps 3 \
  --max-sequence-length 64 --cpu -o "$B/bike-generate.png"
same "$B/out/bike.png" "$B/bike-generate.png"
expect 0 "$DF11" info "$B/out/bike.png"
if grep -qF "a red bicycle" "$T/out" && grep -qF "Seed: 3," "$T/out"; then ok; else bad "batch PNG parameters"; fi
grep -v '^{"prompt": "\(broken\|x\|a dog\)' "$B/p.txt" | grep -v '^{not' >"$B/good.txt"
expect 0 "$DF11" batch "$B/good.txt" -m "$DEV" -o "$B/out" "${small[@]}" --cpu
says "0 images written, 2 already there, 0 failed"
# SD3: CFG per line; a size the model refuses leaves that line out, with its number
printf '%s\n' "{\"prompt\": \"$P\", \"negative_prompt\": \"blurry\", \"output\": \"l\"}" \
  '{"prompt": "a dog", "width": 136}' >"$B/sd3.txt"
expect 1 "$DF11" batch "$B/sd3.txt" -m "$L" -o "$B/sd3" "${sd3[@]}" --cpu
says "line 2: image size 136x128"
same "$B/sd3/l.png" "$T/l--cpu.png"
expect 2 "$DF11" batch "$B/p.txt" -m "$DEV" -o "$B/out" -p "x"
expect 2 "$DF11" batch -m "$DEV" -o "$B/out"
expect 1 "$DF11" batch "$B/nope.txt" -m "$DEV" -o "$B/out"
says "nope.txt"

finish test_generate
