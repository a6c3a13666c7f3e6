#!/usr/bin/env bash
# Trains the same short fixed-seed runs with the `resnet` of git revision REV and with the working
# tree's, and compares their checkpoints byte for byte. A change that must not touch the math (a
# refactor) passes; anything else prints which files differ and exits 1.
#
#   scripts/same-checkpoints.sh REV [MODEL ...]     (default: resnet20 plain20 resnet18 resnet50)
#
# MODEL may also be `photos` (resnet18 streaming the JPEG folder tests/data/cifar10-jpeg with
# torchvision's transforms on worker threads), `ranks2` (resnet20 as 2 MPI ranks) or `syncbn2`
# (the same with --sync-bn); the last two build both revisions with `--features mpi` and need
# Open MPI's mpirun.
#
# The data is the bundled subset (web/data) in CIFAR-10's binary layout; each run is 2 epochs of 64
# images at batch 16, evaluated on 32 held-out ones. Builds REV in a temporary git worktree.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 REV [MODEL ...]" >&2; exit 2; }
REV=$1; shift
MODELS=${*:-resnet20 plain20 resnet18 resnet50}
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/rev" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

FEATURES=()
case " $MODELS " in *" ranks2 "* | *" syncbn2 "*) FEATURES=(--features mpi) ;; esac
git worktree add -q --detach "$WORK/rev" "$REV"
CARGO_TARGET_DIR=target/same-checkpoints cargo build --release -q --bin resnet "${FEATURES[@]}" --manifest-path "$WORK/rev/Cargo.toml"
cp target/same-checkpoints/release/resnet "$WORK/resnet-rev"
cargo build --release -q --bin resnet "${FEATURES[@]}"
cp target/release/resnet "$WORK/resnet-now"

# web/data/train.bin (2,000 records) as data_batch_1..5.bin, test.bin as test_batch.bin
DATA="$WORK/data/cifar-10-batches-bin"
mkdir -p "$DATA"
split -b $((400 * 3073)) -a 1 --numeric-suffixes=1 --additional-suffix=.bin web/data/train.bin "$DATA/data_batch_"
cp web/data/test.bin "$DATA/test_batch.bin"
printf '%s\n' airplane automobile bird cat deer dog frog horse ship truck >"$DATA/batches.meta.txt"

export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$WORK}
status=0
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2 -x XDG_RUNTIME_DIR)
for model in $MODELS; do
  COMMON=(--epochs 2 --batch-size 16 --subset 96 --val-split 32 --seed 5)
  case $model in
    photos) LAUNCH=(); ARGS=(--model resnet18 "${COMMON[@]}" --data tests/data/cifar10-jpeg --train-crop 32
      --eval-resize 36 --eval-crop 32 --workers 2) ;;
    ranks2) LAUNCH=("${MPIRUN[@]}"); ARGS=(--model resnet20 "${COMMON[@]}" --data "$WORK/data") ;;
    syncbn2) LAUNCH=("${MPIRUN[@]}"); ARGS=(--model resnet20 "${COMMON[@]}" --data "$WORK/data" --sync-bn) ;;
    *) LAUNCH=(); ARGS=(--model "$model" "${COMMON[@]}" --data "$WORK/data") ;;
  esac
  for which in rev now; do
    "${LAUNCH[@]}" "$WORK/resnet-$which" train "${ARGS[@]}" --out "$WORK/$which-$model" \
      >/dev/null 2>"$WORK/$which-$model.log" || { cat "$WORK/$which-$model.log" >&2; exit 1; }
  done
  for f in last.safetensors last.state.safetensors; do
    a=$(sha256sum <"$WORK/rev-$model/$f" | cut -c1-16)
    b=$(sha256sum <"$WORK/now-$model/$f" | cut -c1-16)
    if [ "$a" = "$b" ]; then
      echo "same      $model/$f  $a"
    else
      echo "DIFFERENT $model/$f  $REV $a, working tree $b"
      status=1
    fi
  done
done
exit $status
