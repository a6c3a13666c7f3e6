#!/usr/bin/env bash
# The GPU check in one command: resnet-wgpu beside PyTorch on one NVIDIA GPU, for a machine with
# PyTorch but no Rust toolchain and no network (the `device` tool's machines, see
# /work/.library/device/README.md). It runs `resnet info`, `resnet selftest`, `resnet bench` for
# resnet20 at batch 128 (32x32) and resnet50 at batch 64 (224x224) after `resnet tune` of both
# (every kernel family timed at every convolution shape), and scripts/torch_bench.py with
# the same models, batches and steps in eager PyTorch fp32 with TF32 off and on, then writes one
# Markdown table of images/s side by side (table.md) with the logs, into $OUT (or .gpu-check/out).
#
# Two steps, because the GPU machine cannot build:
#
#   1. here (a machine with cargo and Debian's apt):
#        scripts/gpu-check.sh --prepare
#      builds `resnet` (release) into .gpu-check/resnet and downloads the Vulkan loader and the
#      GL dispatch libraries NVIDIA's driver loads (which the GPU machine lacks; the device
#      README's list) as .deb files into .gpu-check/debs. It prints the call to make. The folder is
#      ignored by git; it travels with `carry`.
#   2. there (device tool: command `scripts/gpu-check.sh`, carry [".gpu-check"], timeout_s 540):
#        scripts/gpu-check.sh
#      unpacks the loader, points Vulkan at NVIDIA's driver, runs the check. Every step has a time
#      limit (STEP_LIMIT seconds, default 150) and a failed step does not stop the others; the
#      table is written whatever happens, and the exit status is 1 if any step failed.
#
#   With TRAIN_SECONDS=N (and the CIFAR-10 JPEG tarball packed: --prepare copies $CIFAR_TAR, default
#   ../shared/data/cifar10-jpeg.tar.gz, when it exists), the check then trains resnet20 with the
#   paper's recipe on it for N seconds and keeps metrics.csv (test error per epoch, images/s).
#   With FINETUNE_SECONDS=N as well, it times resnet50 fine-tuning on those photos streamed at
#   224x224 (all layers, then --train-only fc), at most N seconds each (finetune.txt).
#
#   scripts/gpu-check.sh --dry-run   (here, without a GPU) prepares, then runs every step that
#      needs no GPU: `resnet info` and `resnet bench` at one step on whatever adapter exists, the
#      PyTorch script on the CPU where torch is installed, and the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu-check
OUT=${OUT:-$PACK/out}
MODE=${1:-check}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
STEP_LIMIT=${STEP_LIMIT:-150}
TRAIN_SECONDS=${TRAIN_SECONDS:-0}
FINETUNE_SECONDS=${FINETUNE_SECONDS:-0}
CIFAR_TAR=${CIFAR_TAR:-../shared/data/cifar10-jpeg.tar.gz}
FAILED=0

# Runs one step of the check under the time limit; a failure is noted, not fatal.
step() {
  if ! timeout "$STEP_LIMIT" "$@"; then
    echo "FAILED (or over ${STEP_LIMIT} s): $*" | tee -a "$OUT/log.txt" >&2
    FAILED=1
  fi
}

prepare() {
  mkdir -p "$PACK/debs"
  grep -qx "/$PACK/" .git/info/exclude 2>/dev/null || echo "/$PACK/" >>.git/info/exclude
  cargo build --release --bin resnet
  cp target/release/resnet "$PACK/resnet"
  # the device README's recipe: amd64 packages whatever this machine is, into our own folder
  local lists=/tmp/gpu-check-apt-lists
  mkdir -p "$lists/partial"
  local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  apt-get "${o[@]}" update -qq
  (cd "$PACK/debs" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 \
    libglx0 libgles2 >/dev/null)
  ls "$PACK/debs"/libvulkan1_*.deb >/dev/null
  if [ -f "$CIFAR_TAR" ]; then cp "$CIFAR_TAR" "$PACK/cifar10-jpeg.tar.gz"; fi
  echo "packed: $(du -sh "$PACK" | cut -f1) in $PACK (resnet $(stat -c %s "$PACK/resnet") bytes, $(ls "$PACK/debs"))"
  echo "on the GPU machine: command 'scripts/gpu-check.sh', carry [\"$PACK\"], timeout_s 540"
}

# The Vulkan loader and NVIDIA's driver manifest on a machine that has neither set up.
vulkan_setup() {
  if ! ldconfig -p | grep libvulkan.so.1 >/dev/null; then
    for f in "$PACK"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
    export VK_DRIVER_FILES=$icd
  fi
}

# resnet bench and torch_bench.py for one model and batch; JSON lines into $OUT/bench.jsonl.
bench_pair() {
  local model=$1 batch=$2 size=$3 device=$4
  step "$R" bench --model "$model" --batch-size "$batch" --image-size "$size" --steps "$STEPS" \
    --warmup "$WARMUP" --json >>"$OUT/bench.jsonl"
  if python3 -c "import torch" 2>/dev/null; then
    for tf32 in off on; do
      step python3 scripts/torch_bench.py --model "$model" --batch-size "$batch" --image-size "$size" \
        --steps "$STEPS" --warmup "$WARMUP" --tf32 "$tf32" --device "$device" --json >>"$OUT/bench.jsonl"
    done
  else
    echo "PyTorch not installed: no PyTorch column for $model" | tee -a "$OUT/log.txt"
  fi
}

# resnet20 on real CIFAR-10 with the default recipe for TRAIN_SECONDS; every finished epoch is in
# metrics.csv (a run cut short by the time limit is expected, not a failure).
train_for_a_while() {
  local tar="$PACK/cifar10-jpeg.tar.gz"
  if [ "$TRAIN_SECONDS" -le 0 ] || [ ! -f "$tar" ]; then return; fi
  mkdir -p /tmp/gpu-check-cifar
  tar -xzf "$tar" -C /tmp/gpu-check-cifar
  local data
  data=$(dirname "$(find /tmp/gpu-check-cifar -type d -name train -print -quit)")
  timeout "$TRAIN_SECONDS" "$R" train --model resnet20 --data "$data" --epochs 200 \
    --out /tmp/gpu-check-run >"$OUT/train.log" 2>&1 || true
  cp /tmp/gpu-check-run/metrics.csv "$OUT/metrics.csv" 2>/dev/null || true
  tail -n 40 "$OUT/metrics.csv" 2>/dev/null || tail -n 5 "$OUT/train.log"
}

# resnet50 fine-tuning speed on the same photos streamed at 224x224 (RandomResizedCrop upsamples
# them; decoding and transforms on the CPU workers): all layers, then --train-only fc. Each run
# is one epoch of FINETUNE_IMAGES images; metrics.csv's images/s is the figure.
finetune_speed() {
  local data
  data=$(dirname "$(find /tmp/gpu-check-cifar -type d -name train -print -quit 2>/dev/null)" 2>/dev/null) || return 0
  if [ "$FINETUNE_SECONDS" -le 0 ] || [ ! -d "$data/train" ]; then return; fi
  for what in all fc; do
    local extra=() out=/tmp/gpu-check-ft-$what
    [ "$what" = fc ] && extra=(--train-only fc)
    timeout "$FINETUNE_SECONDS" "$R" train --model resnet50 --data "$data" --batch-size 64 \
      --lr 0.01 --epochs 1 --subset "${FINETUNE_IMAGES:-6400}" --eval-batch-size 100 "${extra[@]}" \
      --out "$out" >"$OUT/finetune-$what.log" 2>&1 || true
    echo "resnet50 fine-tuning ($what layers), batch 64 at 224: $(tail -n 1 "$out/metrics.csv" 2>/dev/null)" \
      | tee -a "$OUT/finetune.txt"
  done
}

# One Markdown table from bench.jsonl: resnet-wgpu and PyTorch (TF32 off, on) side by side.
table() {
  python3 - "$OUT/bench.jsonl" <<'PY' | tee "$OUT/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = [r for r in rows if "adapter" in r]
def torch_of(r, tf32):
    for t in rows:
        if "tf32" in t and t["tf32"] == tf32 and t["model"] == r["model"] and t["batch_size"] == r["batch_size"]:
            return t
def cell(t, key):
    return f"{t[key]:.1f}" if t else "-"
print("| model | batch | image | resnet-wgpu train | resnet-wgpu infer | PyTorch fp32 train | PyTorch fp32 infer | PyTorch TF32 train | PyTorch TF32 infer |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in ours:
    off, on = torch_of(r, False), torch_of(r, True)
    print(f"| {r['model']} | {r['batch_size']} | {r['image_size']} | {cell(r, 'train_images_per_sec')} | "
          f"{cell(r, 'inference_images_per_sec')} | {cell(off, 'train_images_per_sec')} | "
          f"{cell(off, 'inference_images_per_sec')} | {cell(on, 'train_images_per_sec')} | {cell(on, 'inference_images_per_sec')} |")
dev = next((t["device"] for t in rows if "device" in t), "-")
print(f"\nimages/s, medians of the same steps; resnet-wgpu on {ours[0]['adapter'] if ours else '-'} "
      f"({ours[0]['backend'] if ours else '-'}), PyTorch on {dev}")
PY
}

case "$MODE" in
  --prepare)
    prepare
    ;;
  --dry-run)
    prepare
    R=$PACK/resnet
    mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
    step "$R" info | tee "$OUT/info.txt"
    STEPS=1 WARMUP=0
    bench_pair resnet20 8 32 cpu
    table
    echo "dry run: the GPU machine runs the same with selftest, resnet20 at batch 128 and resnet50 at batch 64"
    exit "$FAILED"
    ;;
  check | "")
    [ -x "$PACK/resnet" ] || { echo "error: $PACK/resnet missing: run scripts/gpu-check.sh --prepare first, then carry $PACK" >&2; exit 1; }
    R=$PACK/resnet
    mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
    vulkan_setup
    export RESNET_CACHE=/tmp/gpu-check-cache
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt" || true
    step "$R" info >"$OUT/info.txt"
    cat "$OUT/info.txt"
    step "$R" selftest >"$OUT/selftest.txt"
    cat "$OUT/selftest.txt"
    # every kernel family's time at every convolution shape (and the choices the benches then use)
    step "$R" tune --model resnet20 --batch-size 128 --eval-batch-size 500 >"$OUT/tune-resnet20.txt"
    step "$R" tune --model resnet50 --batch-size 64 --eval-batch-size 64 >"$OUT/tune-resnet50.txt"
    bench_pair resnet20 128 32 cuda
    bench_pair resnet50 64 224 cuda
    table
    train_for_a_while
    finetune_speed
    exit "$FAILED"
    ;;
  *)
    echo "usage: scripts/gpu-check.sh [--prepare | --dry-run]   (no argument: run the check)" >&2
    exit 2
    ;;
esac
