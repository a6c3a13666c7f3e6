#!/usr/bin/env python3
"""PyTorch's images/s for the models and batches `resnet bench` measures, to put beside them.

The recipe is resnet-wgpu's: SGD (lr 0.1, momentum 0.9, weight decay 1e-4), softmax
cross-entropy, synthetic inputs and labels made once on the device (no loader in the loop). A
training step is zero_grad + forward + loss + backward + SGD step; an inference pass is forward in
eval mode under inference_mode. Each is run --warmup times untimed (cuDNN's autotuning, the
caching allocator, torch.compile's compilation happen there), then --steps times timed: on a GPU
with CUDA events recorded around every step and read after one synchronisation at the end (the
host does not stall the queue between steps), on the CPU with time.perf_counter. Both the median
and the mean step time are reported; images/s come from the median.

Every combination of --model, --batch-size, --mode and --layout is run, with a fresh model:

  fp32      strict IEEE fp32: no TF32 in cuDNN convolutions or cuBLAS matmuls (what the engine's
            f32 WGSL computes)
  tf32      fp32 tensors, TF32 tensor cores for convolutions and matmuls
  amp-fp16  torch.autocast to float16 with a GradScaler (fp32 elsewhere, as in strict fp32)
  amp-bf16  torch.autocast to bfloat16, no scaler (bfloat16 has fp32's exponent range)

each in NCHW (contiguous) and channels-last memory format; --compile adds each under
torch.compile, an upper bound rather than what eager PyTorch does. Default: ResNet-50
(torchvision) at batch 64 and 256 (224x224), ResNet-20 (He et al.'s CIFAR net, option-A
shortcuts, as akamaster's pytorch_resnet_cifar10) at 128 and 512 (32x32), every mode and layout:
32 combinations. resnet18..152 are torchvision's; resnet20/32/44/56/110 the CIFAR nets.

Before timing it prints the torch, CUDA and cuDNN versions, the GPU, its SM count, its clocks and
nvidia-smi's list of compute processes (without nvidia-smi, it says so and goes on). A result is
marked INVALID ("invalid": true, with the reasons) when another process held the GPU around it,
when it ran fewer than 50 timed or 20 warm-up steps (a smoke test), or when its training loss was
not finite. With --time-budget S, the combination under way when S seconds have passed is dropped
and it and the rest are printed as skipped. The exit status is 1 if a combination failed (out of
memory, say; the others still run). Needs PyTorch 2.3 or later (torch.amp.GradScaler).

  python3 scripts/torch_bench.py                                    # all 32, text
  python3 scripts/torch_bench.py --model resnet50 --batch-size 64 --mode fp32,amp-fp16 \\
      --layout channels-last --json                                 # one JSON line each
  python3 scripts/torch_bench.py --model resnet20 --batch-size 128 --tf32 off   # = --mode fp32
"""

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time

# mode: (TF32 for fp32 convolutions and matmuls, autocast dtype or None)
MODES = {
    "fp32": (False, None),
    "tf32": (True, None),
    "amp-fp16": (False, "float16"),
    "amp-bf16": (False, "bfloat16"),
}
LAYOUTS = ("nchw", "channels-last")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
DEFAULT_MODELS = ("resnet50", "resnet20")
MIN_WARMUP, MIN_STEPS = 20, 50
APPS_QUERY = ("--query-compute-apps=pid,process_name,used_memory", "--format=csv")
CLOCKS_QUERY = (
    "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw",
    "--format=csv",
)


class OverBudget(Exception):
    """--time-budget ran out; what is left is reported as skipped."""


def is_cifar(name):
    """He et al.'s CIFAR nets have depth 6n+2; so do 50 and 152, which are torchvision's."""
    depth = name[6:]
    return (
        name.startswith("resnet")
        and depth.isdigit()
        and (int(depth) - 2) % 6 == 0
        and name not in TORCHVISION_RESNETS
    )


def cifar_resnet(torch, depth, num_classes):
    """He et al. 2016 section 4.2: 3x3 stem, stages of 16/32/64, option-A shortcuts."""
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = (planes - cin) // 2 if stride != 1 or cin != planes else None

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.pad is None:
                short = x
            else:
                short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(out + short)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            layers, cin = [], 16
            for i, planes in enumerate([16, 32, 64]):
                for j in range(n):
                    layers.append(Block(cin, planes, 2 if i > 0 and j == 0 else 1))
                    cin = planes
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.layers(F.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return Net()


def build(torch, name, num_classes):
    if is_cifar(name):
        return cifar_resnet(torch, int(name[6:]), num_classes)
    import torchvision

    return getattr(torchvision.models, name)(num_classes=num_classes)


def parse_args():
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(
        description=doc[0],
        epilog="\n\n".join(doc[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", help="comma list or repeated (default: resnet50,resnet20)")
    p.add_argument(
        "--batch-size",
        action="append",
        help="comma list or repeated (default: 64,256 for torchvision nets, 128,512 for CIFAR nets)",
    )
    p.add_argument(
        "--mode",
        action="append",
        metavar="{" + ",".join(MODES) + "}",
        help="comma list or repeated (default: all; the modes are below)",
    )
    p.add_argument(
        "--layout", choices=[*LAYOUTS, "both"], default="both", help="memory format, or both (the default)"
    )
    p.add_argument("--compile", action="store_true", help="also time each under torch.compile (minutes more)")
    p.add_argument("--tf32", choices=["on", "off"], help="older spelling of --mode tf32 (on), fp32 (off)")
    p.add_argument("--image-size", type=int, default=None, help="default: 32 for CIFAR nets, 224 else")
    p.add_argument("--num-classes", type=int, default=None, help="default: 10 for CIFAR nets, 1000 else")
    p.add_argument("--steps", type=int, default=MIN_STEPS, help=f"timed steps (default {MIN_STEPS})")
    p.add_argument("--warmup", type=int, default=MIN_WARMUP, help=f"untimed steps (default {MIN_WARMUP})")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds from the start after which the combination under way stops and the rest are skipped",
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--json", action="store_true", help="one JSON line per combination; the report to stderr")
    return p.parse_args()


def split_list(values, default):
    """Repeated options and comma lists alike (--mode a,b --mode c), in order, without repeats."""
    items = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    return list(dict.fromkeys(items)) or list(default)


def batches_for(a, model):
    default = (128, 512) if is_cifar(model) else (64, 256)
    batches = split_list(a.batch_size, default)
    if not all(str(b).isdigit() and int(b) >= 1 for b in batches):
        sys.exit(f"error: --batch-size takes whole numbers of at least 1, got {','.join(a.batch_size)!r}")
    return [int(b) for b in batches]


def plan(a):
    """Every (model, batch, mode, layout, compiled) to run, in the order given; bad input stops here,
    with one line."""
    if a.tf32 and a.mode:
        sys.exit("error: --tf32 is the older spelling of --mode fp32/tf32: give one of them")
    modes = ["tf32" if a.tf32 == "on" else "fp32"] if a.tf32 else split_list(a.mode, MODES)
    bad = [m for m in modes if m not in MODES]
    if bad:
        sys.exit(f"error: unknown --mode {bad[0]!r}: the modes are {', '.join(MODES)}")
    models = split_list(a.model, DEFAULT_MODELS)
    bad = [m for m in models if not is_cifar(m) and m not in TORCHVISION_RESNETS]
    if bad:
        known = ", ".join(TORCHVISION_RESNETS)
        sys.exit(f"error: unknown --model {bad[0]!r}: the models are {known} and resnet20/32/44/56/110")
    given = [v for v in (a.image_size, a.num_classes, a.time_budget) if v is not None]
    if a.steps < 1 or a.warmup < 0 or any(v <= 0 for v in given):
        sys.exit("error: --steps, --image-size, --num-classes, --time-budget must be above 0, --warmup >= 0")
    layouts = LAYOUTS if a.layout == "both" else (a.layout,)
    compiled = (False, True) if a.compile else (False,)
    return [
        (model, *rest)
        for model in models
        for rest in itertools.product(batches_for(a, model), modes, layouts, compiled)
    ]


def nvidia_smi(query):
    """nvidia-smi's CSV answer as header -> value dicts, one per line; None where it is missing or fails."""
    try:
        run = subprocess.run(["nvidia-smi", *query], capture_output=True, text=True, timeout=20, check=True)
        out = run.stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in out.splitlines() if line.strip()]
    header = [h.strip() for h in lines[0].split(",")] if lines else []
    return [dict(zip(header, (v.strip() for v in line.split(",")))) for line in lines[1:]]


def gpu_apps():
    """Compute processes on the GPU (lines that are not a pid, e.g. "No running processes found", dropped)."""
    rows = nvidia_smi(APPS_QUERY)
    return None if rows is None else [r for r in rows if r.get("pid", "").isdigit()]


def others_on_gpu(apps, holding_gpu):
    """Compute processes that are not this one; None where that cannot be told."""
    # no nvidia-smi, or one that cannot see processes (not even this one, which holds a context)
    if apps is None or (holding_gpu and not apps):
        return None
    pid = str(os.getpid())
    if not holding_gpu or any(r["pid"] == pid for r in apps):
        return [r for r in apps if r["pid"] != pid]
    # In a container nvidia-smi may list host pids, ours under a number we do not know: then a
    # second process is someone else's.
    return apps if len(apps) > 1 else []


def union(*lists):
    known = [rows for rows in lists if rows is not None]
    return None if not known else list({r["pid"]: r for rows in known for r in rows}.values())


def import_torch():
    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed (pip install torch torchvision)")
    return torch


def open_device(torch, name):
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but PyTorch sees no CUDA GPU (try --device cpu)")
        # a CUDA context now, so that nvidia-smi lists this process from the first check on
        torch.zeros(1, device=device)
    return device


def environment(torch, device):
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "device": "cpu",
        "sm_count": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device=props.name,
            sm_count=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    return env


def print_report(env, device, others_before, log):
    """What a reader needs to trust (or not) the figures, before any of them."""
    for key, value in env.items():
        print(f"{key}: {value}", file=log)
    print(f"this process: pid {os.getpid()}", file=log)
    for query in (APPS_QUERY, CLOCKS_QUERY):
        rows = nvidia_smi(query)
        print(f"nvidia-smi {' '.join(query)}:", file=log)
        lines = ["(no nvidia-smi)"] if rows is None else [str(r) for r in rows] or ["(none)"]
        print("\n".join(f"  {line}" for line in lines), file=log)
    if others_before:
        print(f"INVALID: other processes held the GPU before this one started: {others_before}", file=log)
    if device.type == "cuda" and others_on_gpu(gpu_apps(), True) is None:
        print("other GPU processes cannot be seen: no nvidia-smi, or it lists none, not even us", file=log)
    log.flush()


def set_precision(torch, tf32):
    """TF32 on or off through the legacy flags only: PyTorch 2.9+ raises when the legacy and the
    fp32_precision APIs are mixed, and torch.compile still reads the legacy ones."""
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def autocast(torch, device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def check_time(deadline):
    if time.monotonic() > deadline:
        raise OverBudget


def clock(torch, device):
    """(stamp, milliseconds between two stamps, wait for the device). CUDA events time the GPU's
    stream: recorded around every step and read after the last, they need no host sync between."""
    if device.type != "cuda":
        return time.perf_counter, lambda start, end: (end - start) * 1e3, lambda: None

    def stamp():
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    return stamp, lambda start, end: start.elapsed_time(end), torch.cuda.synchronize


def time_steps(torch, device, run, warmup, steps, deadline):
    """Milliseconds of each timed run, and the last run's result."""
    stamp, span, sync = clock(torch, device)
    for _ in range(warmup):
        check_time(deadline)
        run()
    sync()
    marks, out = [], None
    for _ in range(steps):
        check_time(deadline)
        start = stamp()
        out = run()
        marks.append((start, stamp()))
    sync()
    return [span(start, end) for start, end in marks], out


def training(torch, model, x, y, device, amp_dtype):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    # loss scaling for fp16 only; disabled, the scaler passes the loss and the step through
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(torch, device, amp_dtype):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    return step, scaler


def inference(torch, model, x, device, amp_dtype):
    def run():
        with torch.inference_mode(), autocast(torch, device, amp_dtype):
            return model(x)

    return run


def image_size(a, name):
    return a.image_size or (32 if is_cifar(name) else 224)


def num_classes(a, name):
    return a.num_classes or (10 if is_cifar(name) else 1000)


def make_model(torch, a, name, device, layout, compiled):
    torch.manual_seed(0)
    model = build(torch, name, num_classes(a, name)).to(device)
    if layout == "channels-last":
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        # dynamo gives up recompiling a code object after a few tries and runs it eagerly: every
        # combination runs the same forward(), so each starts afresh
        torch._dynamo.reset()
        model = torch.compile(model)
    return model


def make_batch(torch, a, name, batch, device, layout):
    size = image_size(a, name)
    fmt = torch.channels_last if layout == "channels-last" else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes(a, name), (batch,), device=device)
    return x, y


def measure(torch, a, combo, device, deadline):
    """Training and inference times of one combination, with a model of its own."""
    name, batch, mode, layout, compiled = combo
    tf32, amp = MODES[mode]
    amp_dtype = getattr(torch, amp) if amp else None
    set_precision(torch, tf32)
    model = make_model(torch, a, name, device, layout, compiled)
    x, y = make_batch(torch, a, name, batch, device, layout)
    step, scaler = training(torch, model, x, y, device, amp_dtype)
    model.train()
    train_ms, loss = time_steps(torch, device, step, a.warmup, a.steps, deadline)
    model.eval()
    infer = inference(torch, model, x, device, amp_dtype)
    infer_ms, _ = time_steps(torch, device, infer, a.warmup, a.steps, deadline)
    return {
        "train_images_per_sec": round(batch / statistics.median(train_ms) * 1e3, 2),
        "inference_images_per_sec": round(batch / statistics.median(infer_ms) * 1e3, 2),
        "train_step_ms": round(statistics.median(train_ms), 3),
        "train_step_ms_mean": round(statistics.mean(train_ms), 3),
        "inference_ms": round(statistics.median(infer_ms), 3),
        "inference_ms_mean": round(statistics.mean(infer_ms), 3),
        "steps": a.steps,
        "warmup": a.warmup,
        "timing": "cuda-events" if device.type == "cuda" else "perf_counter",
        "loss": loss.item(),
        "grad_scale": scaler.get_scale() if scaler.is_enabled() else None,
        # read back: what convolutions and matmuls were allowed to do
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def judge(a, result, seen, device):
    """The result with whether it can be trusted, and the other processes on the GPU now (for the
    next one): another process during a combination shows in the check before it or after it."""
    cuda = device.type == "cuda"
    now = others_on_gpu(gpu_apps(), True) if cuda else []
    others = union(seen, now)
    reasons = []
    if others:
        names = ", ".join(f"{r['pid']} {r.get('process_name')}" for r in others)
        reasons.append(f"other processes on the GPU: {names}")
    if a.steps < MIN_STEPS or a.warmup < MIN_WARMUP:
        reasons.append(f"fewer than {MIN_STEPS} timed or {MIN_WARMUP} warm-up steps: a smoke test")
    finite = math.isfinite(result["loss"])
    if not finite:
        reasons.append("training loss not finite (diverged, or fp16 steps skipped)")
    judged = {
        **result,
        "loss": result["loss"] if finite else None,  # JSON has no NaN
        "invalid": bool(reasons),
        "invalid_reasons": reasons,
        "other_gpu_processes": others,
        "nvidia_smi_after": nvidia_smi(CLOCKS_QUERY) if cuda else None,
    }
    return judged, now


def base_record(a, combo, env):
    name, batch, mode, layout, compiled = combo
    return {
        "engine": "pytorch",
        "model": name,
        "batch_size": batch,
        "image_size": image_size(a, name),
        "mode": mode,
        "layout": layout,
        "compiled": compiled,
        "tf32": MODES[mode][0],
        **env,
    }


def describe(record):
    compiled = " compiled" if record["compiled"] else ""
    return f"{record['model']} batch {record['batch_size']} {record['mode']} {record['layout']}{compiled}"


def emit(a, record):
    """One JSON line (--json; an INVALID result says so on stderr too) or one sentence, on stdout."""
    invalid = f"INVALID: {'; '.join(record['invalid_reasons'])}" if record.get("invalid") else ""
    if a.json:
        print(json.dumps(record), flush=True)
        if invalid:
            print(f"{describe(record)}: {invalid}", file=sys.stderr, flush=True)
    elif "skipped" in record:
        print(f"{describe(record)}: skipped ({record['skipped']})", flush=True)
    else:
        print(
            f"{describe(record)} at {record['image_size']}x{record['image_size']}: "
            f"training {record['train_images_per_sec']} images/s (step median {record['train_step_ms']} ms, "
            f"mean {record['train_step_ms_mean']} ms), "
            f"inference {record['inference_images_per_sec']} images/s "
            f"(median {record['inference_ms']} ms, mean {record['inference_ms_mean']} ms) {invalid}".rstrip(),
            flush=True,
        )


def free_memory(torch, device):
    """The last combination's model, gradients and cached blocks go before the next one starts."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_all(torch, a, combos, device, env, others_before, deadline):
    """Measures every combination and prints each; returns how many failed."""
    seen, failed = others_before, 0
    for i, combo in enumerate(combos):
        try:
            result = measure(torch, a, combo, device, deadline)
        except OverBudget:
            left = len(combos) - i
            print(f"--time-budget {a.time_budget} s spent: skipped {left} combinations", file=sys.stderr)
            for rest in combos[i:]:
                emit(a, {**base_record(a, rest, env), "skipped": f"over --time-budget {a.time_budget} s"})
            return failed
        except RuntimeError as e:  # out of memory, or bfloat16 on a GPU without it: the rest still run
            failed += 1
            result = {"skipped": f"failed: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"}
        # after the except block, whose traceback would keep the failed combination's tensors
        free_memory(torch, device)
        if "skipped" in result:
            print(f"error: {describe(base_record(a, combo, env))}: {result['skipped']}", file=sys.stderr)
        else:
            result, seen = judge(a, result, seen, device)
        emit(a, {**base_record(a, combo, env), **result})
    return failed


def main():
    start = time.monotonic()
    a = parse_args()
    combos = plan(a)
    # before this process touches the GPU, every compute process nvidia-smi lists is another's
    others_before = others_on_gpu(gpu_apps(), False) if a.device.startswith("cuda") else []
    torch = import_torch()
    device = open_device(torch, a.device)
    torch.backends.cudnn.benchmark = True
    env = environment(torch, device)
    print_report(env, device, others_before, sys.stderr if a.json else sys.stdout)
    print(f"{len(combos)} combinations, {a.warmup} warm-up and {a.steps} timed steps each", flush=True,
          file=sys.stderr if a.json else sys.stdout)
    deadline = start + a.time_budget if a.time_budget else math.inf
    sys.exit(1 if run_all(torch, a, combos, device, env, others_before, deadline) else 0)


if __name__ == "__main__":
    main()
