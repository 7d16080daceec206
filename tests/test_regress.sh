#!/usr/bin/env bash
# test_regress: `df11 regress` end to end on the tiny FLUX.1-dev and SD3.5 Large fixtures, CPU
# backend: references written by df11 batch pass; planted mismatches are caught (two images'
# parameters swapped, one pixel changed by one level, an extra text chunk), each with its
# diff image, in the table, the JUnit XML and the JSON report, with exit status 1; tolerances
# (--max-diff, --psnr) let the one-level change through and not the swapped images; a manifest
# instead of the embedded parameters; PNGs that cannot be checked; usage errors.
# usage: test_regress.sh DF11 FIXTURES_DIR
set -u
DF11=$1
FX=$2
T=$(mktemp -d /tmp/df11_regress_XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/testlib.sh"
PE="python3 $(dirname "$0")/pngedit.py"

DEV=$FX/flux_tiny/dev
L=$FX/sd3_tiny/large
small=(-W 64 -H 64 --steps 2 --max-sequence-length 32 --cpu -q)
R=$T/ref
cat >"$T/p.txt" <<EOF2
a cat holding a sign
{"prompt": "a red bicycle", "seed": 3, "output": "bike"}
{"prompt": "a lighthouse at dusk", "seed": 11, "width": 128, "output": "light"}
EOF2
expect 0 "$DF11" batch "$T/p.txt" -m "$DEV" -o "$R" "${small[@]}"
printf '%s\n' '{"prompt": "a bowl of fruit", "negative_prompt": "blurry", "output": "fruit"}' >"$T/s.txt"
expect 0 "$DF11" batch "$T/s.txt" -m "$L" -o "$T/sd3" "${small[@]}"

# the references pass: exact bytes, a report of each kind
expect 0 "$DF11" regress "$R" -m "$DEV" -q --junit "$T/ok.xml" --json "$T/ok.json"
prints "^3 images: 3 match, 0 differ, 0 could not be checked"
prints "^bike.png +ok +0 +inf +0 "
absent "$R/regress-diff"
python3 - "$T/ok.xml" "$T/ok.json" <<'EOF2' && ok || bad "the passing reports"
import json, sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot().find("testsuite")
assert (s.get("tests"), s.get("failures"), s.get("errors")) == ("3", "0", "0"), s.attrib
r = json.load(open(sys.argv[2]))
assert [x["result"] for x in r] == ["pass"] * 3 and all(x["bytes_equal"] for x in r), r
assert all(x["psnr_db"] is None and x["max_diff"] == 0 for x in r), r
EOF2
expect 0 "$DF11" regress "$T/sd3" -m "$L" -q
prints "^fruit.png +ok "

# planted: two images' parameters swapped (each file's pixels with the other's job), one
# pixel one level off, and an extra text chunk (the same pixels, other bytes)
P=$T/planted
cp -r "$R" "$P"
$PE swap-texts "$P/0001-a-cat-holding-a-sign.png" "$P/bike.png"
$PE poke "$P/light.png" 5 7 1 1
expect 1 "$DF11" regress "$P" -m "$DEV" -q --junit "$T/bad.xml" --json "$T/bad.json"
prints "^3 images: 0 match, 3 differ, 0 could not be checked"
prints "^bike.png +DIFFERS +[0-9]+ +[0-9.]+ +[0-9]+ .*bike.diff.png"
prints "^light.png +DIFFERS +1 +[0-9.]+ +1 "
for f in 0001-a-cat-holding-a-sign bike light; do
  there "$P/regress-diff/$f.actual.png"
  there "$P/regress-diff/$f.diff.png"
done
# the new render is the reference's pixels under the other's parameters: bike.actual.png has
# the cat's pixels
if [ "$($PE pixels "$P/regress-diff/bike.actual.png")" = "$($PE pixels "$R/0001-a-cat-holding-a-sign.png")" ]; then
  ok; else bad "bike.actual.png is not the render of bike's swapped-in job"; fi
# the diff image marks exactly the one pixel of light.png red
python3 - "$P/regress-diff/light.diff.png" "$(dirname "$0")" <<'EOF2' && ok || bad "light.diff.png"
import sys
sys.path.insert(0, sys.argv[2])
import pngedit
w, h, px = pngedit.rgb(sys.argv[1])
red = [i for i in range(w * h) if px[3 * i] >= 128 and px[3 * i + 1] == 0 and px[3 * i + 2] == 0]
assert (w, h) == (128, 64) and red == [7 * w + 5], (w, h, red[:5])
EOF2
python3 - "$T/bad.xml" "$T/bad.json" <<'EOF2' && ok || bad "the failing reports"
import json, sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot().find("testsuite")
assert (s.get("tests"), s.get("failures"), s.get("errors")) == ("3", "3", "0"), s.attrib
fails = {c.get("name"): c.find("failure").get("message") for c in s.iter("testcase")}
assert "largest difference 1, 1 pixels" in fails["light.png"], fails
r = {x["file"].split("/")[-1]: x for x in json.load(open(sys.argv[2]))}
assert r["light.png"]["max_diff"] == 1 and r["light.png"]["pixels_differing"] == 1, r
assert r["light.png"]["psnr_db"] > 80 and r["bike.png"]["psnr_db"] < 40, r
EOF2
# tolerances: one level passes --max-diff 1 and --psnr 80, not --max-diff 0 or --psnr 120; the
# swapped images pass none
expect 1 "$DF11" regress "$P" -m "$DEV" -q --max-diff 1
prints "^light.png +ok +1 "
prints "^bike.png +DIFFERS "
expect 1 "$DF11" regress "$P" -m "$DEV" -q --psnr 80
prints "^light.png +ok "
expect 1 "$DF11" regress "$P" -m "$DEV" -q --max-diff 0
prints "^light.png +DIFFERS "
expect 1 "$DF11" regress "$P" -m "$DEV" -q --psnr 120
prints "^light.png +DIFFERS "
# the same pixels, other bytes: exact mode says so; --max-diff 0 passes it
E=$T/extra
mkdir "$E" && cp "$R/bike.png" "$E/"
$PE add-text "$E/bike.png" Comment "edited"
expect 1 "$DF11" regress "$E" -m "$DEV" -q --diff-dir "$T/ediff"
prints "^bike.png +DIFFERS +0 +inf +0 .*the same pixels, other bytes"
there "$T/ediff/bike.actual.png"
absent "$T/ediff/bike.diff.png"
expect 0 "$DF11" regress "$E" -m "$DEV" -q --max-diff 0

# a manifest names the jobs and their references (here the planted folder's swapped files
# pass again, since the manifest, not their text chunks, says what they are)
cat >"$T/m.jsonl" <<EOF2
{"prompt": "a cat holding a sign", "output": "0001-a-cat-holding-a-sign.png"}
{"prompt": "a red bicycle", "seed": 3, "output": "bike"}
EOF2
expect 0 "$DF11" regress "$P" --manifest "$T/m.jsonl" -m "$DEV" "${small[@]}" --max-diff 0
prints "^2 images: 2 match"
printf '%s\n' '{"prompt": "x", "output": "nope.png"}' >>"$T/m.jsonl"
expect 1 "$DF11" regress "$P" --manifest "$T/m.jsonl" -m "$DEV" "${small[@]}" --max-diff 0
prints "^nope.png +ERROR .*no such reference image"
printf '%s\n' '{"prompt": "x"}' '{"prompt": "y", "sampler": "dpm", "output": "a"}' >"$T/m2.jsonl"
expect 1 "$DF11" regress "$P" --manifest "$T/m2.jsonl" -m "$DEV" "${small[@]}"
says "m2.jsonl:1: no \"output\""
says "m2.jsonl:2: \"sampler\": df11 has one sampler"

# PNGs that cannot be checked: no parameters, A1111's only, not a PNG
N=$T/nop
mkdir "$N" && cp "$R/bike.png" "$N/"
cp "$R/bike.png" "$N/plain.png" && $PE swap-texts "$N/plain.png" "$N/plain.png"
python3 - "$N/plain.png" "$N/a1111.png" "$(dirname "$0")" <<'EOF2'
import sys
sys.path.insert(0, sys.argv[3])
import pngedit
c = pngedit.read_chunks(sys.argv[1])
keep = [k for k in c if k[0] not in pngedit.TEXT]
pngedit.write_chunks(sys.argv[1], keep)
pngedit.write_chunks(sys.argv[2], keep[:-1] + [(b"tEXt", b"parameters\0a cat\nSteps: 20")] + keep[-1:])
EOF2
echo "not a png" >"$N/junk.png"
expect 1 "$DF11" regress "$N" -m "$DEV" -q
prints "^4 images: 1 match, 0 differ, 3 could not be checked"
prints "^plain.png +ERROR .*no parameters"
prints "^a1111.png +ERROR .*A1111 parameters but no df11 ones"
prints "^junk.png +ERROR "

# usage
expect 2 "$DF11" regress "$R"
expect 2 "$DF11" regress "$R" -m "$DEV" --bogus
expect 2 "$DF11" regress "$R" -m "$DEV" -p "x"
expect 2 "$DF11" regress "$R" -m "$DEV" --max-diff 300
expect 1 "$DF11" regress "$T/nowhere" -m "$DEV"
says "nowhere"
mkdir "$T/empty"
expect 1 "$DF11" regress "$T/empty" -m "$DEV"
says "no PNG to check"

finish test_regress
