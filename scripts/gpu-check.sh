#!/usr/bin/env bash
# The GPU check in one command: resnet-wgpu beside PyTorch on one NVIDIA GPU, for a machine with
# PyTorch but no Rust toolchain and no network (the `device` tool's machines, see
# /work/.library/device/README.md). It runs `resnet info`, `resnet selftest` (fp32 and
# --precision mixed), `resnet bench` for resnet20 at batch 128 (32x32) and resnet50 at batch 64
# (224x224; in fp32 also at 128) after `resnet tune` of both (every kernel family timed at every convolution shape), in
# fp32 and in mixed precision (there with `resnet info --amp`, which says whether the tensor-core
# family runs, and `resnet tune --amp` of resnet50), `resnet bench --profile` of both (where a step's GPU time goes per
# kind of op, against the GPU's peaks: profile-MODEL-bBATCH-PRECISION.txt; resnet50's once more
# with every op unfused, RESNET_FUSE=0: ...-fuse0.txt), then scripts/torch_bench.py (eager
# PyTorch, 20 warm-up and 50 timed steps, CUDA events; its versions, clocks and GPU processes in
# torch_bench.log) on 16 combinations: resnet20 at batch 128 and 512 in strict fp32 and AMP fp16,
# NCHW and channels-last; resnet50 (torchvision's) at batch 64 and 256 in strict fp32, TF32 and
# AMP fp16 channels-last, and strict fp32 NCHW. PyTorch gets at most TORCH_SECONDS (default 240)
# and no more than leaves CHECK_SECONDS (default 500, inside the device tool's 540) for the table
# and the training and fine-tuning below; combinations that do not fit are listed as skipped.
# Then it writes two Markdown tables of images/s (training, inference), resnet-wgpu beside every
# PyTorch mode and layout measured, results another GPU process may have disturbed marked
# INVALID, and PyTorch's ResNet-50 against the published anchors, over 2x away marked SUSPECT
# (table.md), with the logs, into $OUT (or .gpu-check/out).
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
#      needs no GPU: `resnet info`, `resnet bench` and its --profile at one step on whatever
#      adapter exists, the
#      PyTorch script for one step of resnet20 fp32 on the CPU where torch is installed (a smoke
#      test, so marked INVALID), and the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu-check
OUT=${OUT:-$PACK/out}
MODE=${1:-check}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
STEP_LIMIT=${STEP_LIMIT:-150}
TORCH_STEPS=${TORCH_STEPS:-50}
TORCH_WARMUP=${TORCH_WARMUP:-20}
TORCH_SECONDS=${TORCH_SECONDS:-240}
CHECK_SECONDS=${CHECK_SECONDS:-500}
CHECK_START=0 # when CHECK_SECONDS began, in $SECONDS (--dry-run: after --prepare)
TRAIN_SECONDS=${TRAIN_SECONDS:-0}
FINETUNE_SECONDS=${FINETUNE_SECONDS:-0}
CIFAR_TAR=${CIFAR_TAR:-../shared/data/cifar10-jpeg.tar.gz}
FAILED=0

# Runs one step of the check under the time limit (LIMIT seconds where set, else STEP_LIMIT); a
# failure is noted, not fatal.
step() {
  local limit=${LIMIT:-$STEP_LIMIT}
  if ! timeout "$limit" "$@"; then
    echo "FAILED (or over ${limit} s): $*" | tee -a "$OUT/log.txt" >&2
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

# resnet bench for one model and batch; a JSON line into $OUT/bench.jsonl.
bench_ours() {
  local model=$1 batch=$2 size=$3 precision=${4:-fp32}
  step "$R" bench --model "$model" --batch-size "$batch" --image-size "$size" --steps "$STEPS" \
    --warmup "$WARMUP" --precision "$precision" --json >>"$OUT/bench.jsonl"
}

# resnet bench --profile for one model and batch: where a training step's GPU time goes, per kind
# of op, against the GPU's published peaks; the table into $OUT/profile-MODEL-bBATCH.txt.
profile_ours() {
  local model=$1 batch=$2 size=$3 precision=${4:-fp32}
  local file="$OUT/profile-$model-b$batch-$precision${RESNET_FUSE:+-fuse$RESNET_FUSE}.txt"
  step "$R" bench --model "$model" --batch-size "$batch" --image-size "$size" --steps 1 \
    --warmup 1 --precision "$precision" --profile >"$file"
  cat "$file"
}

# PyTorch's columns need torch here; without it the table has resnet-wgpu's alone.
have_torch() {
  python3 -c "import torch" 2>/dev/null && return
  echo "PyTorch not installed: no PyTorch columns" | tee -a "$OUT/log.txt"
  return 1
}

# When PyTorch's time ends, in $SECONDS: TORCH_SECONDS from now at most, and soon enough to leave
# the table, training and fine-tuning their time in CHECK_SECONDS.
torch_deadline() {
  local cap=$((SECONDS + TORCH_SECONDS))
  local end=$((CHECK_START + CHECK_SECONDS - 20 - TRAIN_SECONDS - 2 * FINETUNE_SECONDS))
  echo $((cap < end ? cap : end))
}

# torch_bench.py with these options until TORCH_END: JSON lines into bench.jsonl, its report into
# torch_bench.log. It drops what does not fit itself (--time-budget); the time limit, 30 s later,
# is for a hang.
torch_run() {
  local left=$((TORCH_END - SECONDS))
  if [ "$left" -le 0 ]; then
    echo "no PyTorch time left (TORCH_SECONDS, CHECK_SECONDS): skipped torch_bench.py $*" \
      | tee -a "$OUT/log.txt"
    return
  fi
  LIMIT=$((left + 30)) step python3 scripts/torch_bench.py --json --steps "$TORCH_STEPS" \
    --warmup "$TORCH_WARMUP" --time-budget "$left" "$@" >>"$OUT/bench.jsonl" \
    2> >(tee -a "$OUT/torch_bench.log" >&2)
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

# The Markdown tables from bench.jsonl (scripts/gpu_table.py): training and inference images/s, a
# row per model, batch and image size, a column per resnet-wgpu precision and per PyTorch mode and
# layout measured, then PyTorch's ResNet-50 against the published anchors. A failure is noted and
# the check goes on (training and fine-tuning come after it).
table() {
  if ! python3 scripts/gpu_table.py "$OUT/bench.jsonl" "$STEPS" "$WARMUP" | tee "$OUT/table.md"; then
    echo "FAILED: the tables (scripts/gpu_table.py)" | tee -a "$OUT/log.txt" >&2
    FAILED=1
  fi
}

case "$MODE" in
  --prepare)
    prepare
    ;;
  --dry-run)
    prepare
    R=$PACK/resnet
    CHECK_START=$SECONDS
    mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
    step "$R" info | tee "$OUT/info.txt"
    STEPS=1 WARMUP=0
    bench_ours resnet20 8 32
    bench_ours resnet20 8 32 mixed
    profile_ours resnet20 8 32
    if have_torch; then
      TORCH_END=$(torch_deadline) TORCH_STEPS=1 TORCH_WARMUP=0
      torch_run --device cpu --model resnet20 --batch-size 8 --mode fp32 --layout nchw
    fi
    table
    echo "dry run: the GPU machine runs the same with selftest (fp32 and mixed), resnet20 at batch 128 and resnet50 at batch 64 (fp32 and mixed) and 128 (fp32), and 16 PyTorch combinations, with PyTorch's ResNet-50 against the published anchors"
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
    step "$R" selftest --precision mixed >"$OUT/selftest-mixed.txt"
    cat "$OUT/selftest-mixed.txt"
    # every kernel family's time at every convolution shape (and the choices the benches then use)
    step "$R" tune --model resnet20 --batch-size 128 --eval-batch-size 500 >"$OUT/tune-resnet20.txt"
    step "$R" tune --model resnet50 --batch-size 64 --eval-batch-size 64 >"$OUT/tune-resnet50.txt"
    step "$R" tune --model resnet50 --batch-size 128 --eval-batch-size 128 >"$OUT/tune-resnet50-b128.txt"
    bench_ours resnet20 128 32
    bench_ours resnet50 64 224
    # the fp32 aim's batch (35% of the fp32 peak at batch 128 or 256), tuned above
    bench_ours resnet50 128 224
    profile_ours resnet20 128 32
    profile_ours resnet50 64 224
    # the same step with every op unfused (BatchNorm's statistics read back from the output)
    RESNET_FUSE=0 profile_ours resnet50 64 224
    # mixed precision: whether the tensor-core family runs (the adapter's cooperative matrices),
    # every f16 family's time at resnet50's shapes (coop64x64-f16 among them where it runs), then
    # the same benches
    step "$R" info --amp >"$OUT/info-mixed.txt"
    grep -i "cooperative" "$OUT/info-mixed.txt" || true
    step "$R" tune --amp --model resnet50 --batch-size 64 --eval-batch-size 64 >"$OUT/tune-resnet50-mixed.txt"
    bench_ours resnet20 128 32 mixed
    bench_ours resnet50 64 224 mixed
    profile_ours resnet50 64 224 mixed
    # PyTorch, most wanted first (what does not fit in its time is skipped): resnet20 (cheap: its
    # steps are bound by kernel launches), resnet50 in every mode in channels-last (PyTorch's advice
    # for convolutions on tensor cores), then in strict fp32 NCHW, the engine's layout, as well
    if have_torch; then
      TORCH_END=$(torch_deadline)
      torch_run --model resnet20 --batch-size 128,512 --mode fp32,amp-fp16 --layout both
      torch_run --model resnet50 --batch-size 64,256 --mode fp32,tf32,amp-fp16 --layout channels-last
      torch_run --model resnet50 --batch-size 64,256 --mode fp32 --layout nchw
    fi
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
