#!/usr/bin/env bash
# The browser test (run by .ci/run): builds the page, trains a small checkpoint with the CLI and
# records its `resnet predict` answers, drives the page in headless Chromium (web/test/browser.mjs),
# then evaluates the weights the page saved with `resnet eval`. Screenshot, figures and logs land
# in $OUT (default web/test/out). Needs node/npm, Debian's chromium, and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-web/test/out}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TARBALL=${TARBALL:-../shared/data/cifar10-jpeg.tar.gz}
rm -rf "$OUT"
mkdir -p "$OUT"

web/build.sh
(cd web && npm ci --no-audit --no-fund --loglevel=error)
cargo build --release --bin resnet
R=target/release/resnet

# a small image folder of real CIFAR-10: 256 training and 100 test images per class
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
tar xzf "$TARBALL" -C "$DATA"
SMALL="$DATA/small"
for split in train:256 test:100; do
  name=${split%%:*}
  for dir in "$DATA/$name"/*/; do
    class=$(basename "$dir")
    mkdir -p "$SMALL/$name/$class"
    mapfile -t files < <(find "$dir" -type f | sort | head -n "${split##*:}")
    cp -t "$SMALL/$name/$class" "${files[@]}"
  done
done

"$R" train --model resnet20 --epochs 1 --data "$SMALL" --out "$OUT/cli-run" --eval-batch-size 250
"$R" predict --json --checkpoint "$OUT/cli-run/last.safetensors" web/data/samples/*.png >"$OUT/predict.jsonl"

node web/test/browser.mjs --checkpoint "$OUT/cli-run/last.safetensors" --expected "$OUT/predict.jsonl" \
  --out "$OUT" --chromium "$CHROMIUM"

# weights trained in the page load in the CLI
"$R" eval --checkpoint "$OUT/browser.safetensors" --data "$SMALL" --json | tee "$OUT/eval-browser.json"
grep -q '"accuracy"' "$OUT/eval-browser.json"
echo "browser test passed; screenshot: $OUT/screenshot.png"
