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
# seconds since the start before each step, so a slow CI run shows where its time went
step() { echo "-- browser test, ${SECONDS}s: $*"; }

step "build the page"
web/build.sh
(cd web && npm ci --no-audit --no-fund --loglevel=error)
# the CLI: $RESNET where given (CI passes the one its tests built: `cargo build` would build the
# library again, with other features of its dependencies than `cargo test` unifies)
R=${RESNET:-}
if [ -z "$R" ]; then
  cargo build --release --bin resnet
  R=target/release/resnet
fi

# a small image folder of real CIFAR-10: 128 training and 50 test images per class, enough for
# a checkpoint whose answers differ from image to image (browser.mjs checks it)
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
tar xzf "$TARBALL" -C "$DATA"
SMALL="$DATA/small"
for split in train:128 test:50; do
  name=${split%%:*}
  for dir in "$DATA/$name"/*/; do
    class=$(basename "$dir")
    mkdir -p "$SMALL/$name/$class"
    mapfile -t files < <(find "$dir" -type f | sort | head -n "${split##*:}")
    cp -t "$SMALL/$name/$class" "${files[@]}"
  done
done

step "train a checkpoint with the CLI"
# 40 steps of 32, with the page's default kernels rather than timing kernels for this batch
"$R" train --model resnet20 --epochs 1 --data "$SMALL" --out "$OUT/cli-run" --batch-size 32 \
  --eval-batch-size 250 --kernels register16x16
"$R" predict --json --checkpoint "$OUT/cli-run/last.safetensors" web/data/samples/*.png >"$OUT/predict.jsonl"

step "the page in Chromium"
node web/test/browser.mjs --checkpoint "$OUT/cli-run/last.safetensors" --expected "$OUT/predict.jsonl" \
  --out "$OUT" --chromium "$CHROMIUM"

step "the page's weights in the CLI"
# weights trained in the page load in the CLI
# (the page's kernels again: timing kernels for batch 500 would take minutes on a CPU driver)
"$R" eval --checkpoint "$OUT/browser.safetensors" --data "$SMALL" --json --kernels register16x16 \
  | tee "$OUT/eval-browser.json"
grep -q '"accuracy"' "$OUT/eval-browser.json"
echo "browser test passed; screenshot: $OUT/screenshot.png"
