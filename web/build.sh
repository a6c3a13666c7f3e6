#!/usr/bin/env bash
# Builds the browser demo: the engine for wasm32 plus its JS glue (wasm-bindgen) into web/pkg/.
# Installs, once, the wasm32 target and the wasm-bindgen-cli of exactly the version in Cargo.lock.
# Then `node web/serve.mjs` serves the page on http://127.0.0.1:8080/.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ -z "$version" ]; then
  echo "error: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
  echo "installing wasm-bindgen-cli $version (the version in Cargo.lock; once)"
  # unoptimised, the one binary used: half the build time, and it writes the same files (it
  # takes half a second on this wasm instead of a tenth)
  cargo install wasm-bindgen-cli --version "$version" --debug --bin wasm-bindgen
fi
cargo build --release --target wasm32-unknown-unknown -p resnet-web
rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  target/wasm32-unknown-unknown/release/resnet_web.wasm
if [ ! -f web/data/train.bin ]; then
  echo "note: web/data/ is missing; make it with: cargo run --release --example web_subset" >&2
fi
wasm=web/pkg/resnet_web_bg.wasm
echo "built web/pkg: $(du -k "$wasm" | cut -f1) KiB wasm, $(gzip -9c "$wasm" | wc -c | awk '{printf "%d", $1/1024}') KiB gzipped"
