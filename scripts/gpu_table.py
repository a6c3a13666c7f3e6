#!/usr/bin/env python3
"""The GPU check's tables (scripts/gpu-check.sh): from its bench.jsonl, training and inference
images/s, a row per model, batch and image size, resnet-wgpu's columns then one per PyTorch mode
and layout measured; PyTorch results another GPU process may have disturbed marked INVALID; then
PyTorch's ResNet-50 training against the published anchors, over 2x away marked SUSPECT.

usage: gpu_table.py BENCH_JSONL STEPS WARMUP   (the steps and warm-up of resnet-wgpu's benches)
"""
import json
import sys

MODES = ["fp32", "tf32", "amp-fp16", "amp-bf16"]
NAMES = {"fp32": "fp32", "tf32": "TF32", "amp-fp16": "AMP fp16", "amp-bf16": "AMP bf16",
         "nchw": "NCHW", "channels-last": "CL"}

# PyTorch's ResNet-50 v1.5 training, images/s per GPU, as published (BENCHMARKS.md): GPU -> mode
# -> (images/s, source).
ANCHORS = {
    "V100": {"fp32": (367, "NVIDIA DeepLearningExamples, b112")},
    "A100": {"tf32": (938, "NVIDIA DeepLearningExamples, b256"),
             "amp-fp16": (2470, "NVIDIA DeepLearningExamples, b256 channels_last")},
    # SXM figures, against which an H100 PCIe (fewer SMs, lower clocks) falls somewhat short
    "H100": {"tf32": (1825, "H100 SXM, Lambda, ~1,750-1,900"),
             "amp-fp16": (2700, "H100 SXM, Lambda, ~2,600-2,800")},
}
ANCHORS["H200"] = ANCHORS["H100"]  # no published H200 figure: an H200 computes at least as fast


def cell(t, key):
    if t is None:
        return "-"
    if "skipped" in t:
        return "skipped"
    return f"{t[key]:.1f}" + (" *" if t.get("invalid") else "")


def speed_tables(ours, pt):
    """Training and inference images/s: resnet-wgpu per precision, PyTorch per mode and layout."""
    precisions = sorted({k[3] for k in ours}, key=lambda p: p != "fp32")
    cols = sorted({k[3:] for k in pt}, key=lambda c: (c[2], MODES.index(c[0]), c[1] != "nchw"))
    models = list(dict.fromkeys(k[0] for k in [*ours, *pt]))
    keys = sorted({*(k[:3] for k in ours), *(k[:3] for k in pt)},
                  key=lambda k: (models.index(k[0]), k[1], k[2]))
    heads = [f"resnet-wgpu {p}" for p in precisions]
    heads += [f"PyTorch {NAMES[m]} {NAMES[l]}" + (" compiled" if c else "") for m, l, c in cols]
    for title, key in (("Training", "train_images_per_sec"),
                       ("Inference", "inference_images_per_sec")):
        print(f"{title}, images/s:\n")
        print("| model | batch | image | " + " | ".join(heads) + " |")
        print("|---|---:|---:|" + "---:|" * len(heads))
        for k in keys:
            cells = [cell(ours.get((*k, p)), key) for p in precisions]
            cells += [cell(pt.get((*k, *c)), key) for c in cols]
            print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
        print()


def how_measured(ours, pt, steps, warmup):
    """What each engine ran on and how it was timed, then the INVALID results and why."""
    r = next(iter(ours.values()), None)
    if r:
        print(f"resnet-wgpu: `resnet bench` on {r['adapter']} ({r['backend']}), images/s from the "
              f"median of {steps} steps after {warmup} warm-up steps; mixed is `--precision mixed` "
              f"(f16 convolution operands, f32 accumulation, loss scaling).")
    t = next((t for t in pt.values() if "skipped" not in t), None)
    if t:
        print(f"PyTorch {t['torch']} (CUDA {t['cuda']}, cuDNN {t['cudnn']}) on {t['device']} "
              f"({t['sm_count']} SMs), eager unless compiled: images/s from the median of "
              f"{t['steps']} steps after {t['warmup']} warm-up steps ({t['timing']}); fp32 is "
              f"strict (no TF32), AMP is autocast, CL is channels-last.")
    invalid = {}
    for t in pt.values():
        for reason in t.get("invalid_reasons", []):
            which = f"{t['model']} b{t['batch_size']} {t['mode']} {t['layout']}"
            invalid.setdefault(reason, []).append(which + (" compiled" if t["compiled"] else ""))
    for reason, which in invalid.items():
        print(f"* INVALID, {reason}: {', '.join(which)}")


def against_anchors(pt):
    """PyTorch's ResNet-50 training beside the published anchors of its GPU: the best valid
    figure of each anchored mode (any batch or layout); more than 2x away is a broken
    measurement until explained, never a result."""
    resnet50 = [t for t in pt.values() if t["model"] == "resnet50" and t["image_size"] == 224
                and not t["compiled"]]
    measured = [t for t in resnet50 if "skipped" not in t and not t.get("invalid")]
    if resnet50 and not measured:
        print("\nNo valid PyTorch ResNet-50 figure to hold against the published anchors.")
    if not measured:
        return
    device = measured[0]["device"]
    gpu = next((g for g in ANCHORS if g in device), None)
    if gpu is None:
        print(f"\nNo published ResNet-50 anchor for {device}.")
        return
    print(f"\nPyTorch ResNet-50 training against the published anchors ({gpu}; {device}):\n")
    print("| mode | measured best, images/s | anchor | source | ratio | verdict |")
    print("|---|---:|---:|---|---:|---|")
    for mode, (anchor, source) in ANCHORS[gpu].items():
        runs = [t for t in measured if t["mode"] == mode]
        if not runs:
            print(f"| {NAMES[mode]} | - | {anchor} | {source} | - | not measured |")
            continue
        best = max(runs, key=lambda t: t["train_images_per_sec"])
        ratio = best["train_images_per_sec"] / anchor
        verdict = "within 2x" if 0.5 <= ratio <= 2 else (
            "SUSPECT: over 2x from the anchor; check the machine (GPU processes, clocks, SMs, "
            "warm-up)")
        print(f"| {NAMES[mode]} | {best['train_images_per_sec']:.1f} (b{best['batch_size']} "
              f"{NAMES[best['layout']]}) | {anchor} | {source} | {ratio:.2f} | {verdict} |")


def main():
    path, steps, warmup = sys.argv[1:]
    rows, unreadable = [], 0
    for line in open(path):
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by a step's time limit, or not a result
            unreadable += line.strip() != ""
    ours = {(r["model"], r["batch_size"], r["image_size"], r.get("precision", "fp32")): r
            for r in rows if "adapter" in r}
    pt = {(t["model"], t["batch_size"], t["image_size"], t["mode"], t["layout"], t["compiled"]): t
          for t in rows if t.get("engine") == "pytorch"}
    speed_tables(ours, pt)
    how_measured(ours, pt, steps, warmup)
    against_anchors(pt)
    if unreadable:
        print(f"\n{unreadable} line(s) of {path} were not results and were left out.")


if __name__ == "__main__":
    main()
