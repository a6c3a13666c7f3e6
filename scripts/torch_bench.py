#!/usr/bin/env python3
"""PyTorch's images/s for the models and batches `resnet bench` measures, to put beside them.

Eager PyTorch, fp32, the same recipe as resnet-wgpu: SGD (lr 0.1, momentum 0.9, weight decay 1e-4),
softmax cross-entropy, random inputs. A training step is forward + loss + backward + SGD step; an
inference pass is forward in eval mode under no_grad. Each is timed as the median of --steps runs
after --warmup untimed ones, with the device synchronised around every run (as `resnet bench`
waits for every step).

  python3 scripts/torch_bench.py --model resnet20 --batch-size 128 --tf32 off --json
  python3 scripts/torch_bench.py --model resnet50 --batch-size 64 --image-size 224 --tf32 on

`--tf32 off` is strict fp32 (what the engine's f32 WGSL computes); `on` lets cuDNN and cuBLAS use
TensorFloat-32 on GPUs that have it. resnet20 is He et al.'s CIFAR net (option-A shortcuts, as
akamaster's pytorch_resnet_cifar10); resnet18..152 are torchvision's.
"""

import argparse
import json
import statistics
import sys
import time


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
    if name.startswith("resnet") and name[6:].isdigit() and (int(name[6:]) - 2) % 6 == 0:
        return cifar_resnet(torch, int(name[6:]), num_classes)
    import torchvision

    return getattr(torchvision.models, name)(num_classes=num_classes)


def set_tf32(torch, on):
    """TF32 for matmuls and cuDNN convolutions, on or off (strict IEEE fp32)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # PyTorch 2.9 and later
        precision = "tf32" if on else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def median_seconds(torch, device, run, warmup, steps):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=None, help="default: 32 for CIFAR nets, 224 else")
    p.add_argument("--num-classes", type=int, default=None, help="default: 10 for CIFAR nets, 1000 else")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--tf32", choices=["on", "off"], default="off")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.batch_size < 1 or a.steps < 1 or a.warmup < 0:
        sys.exit("error: --batch-size and --steps must be at least 1, --warmup at least 0")
    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed (pip install torch torchvision)")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but PyTorch sees no CUDA GPU (try --device cpu)")
    cifar = not a.model.startswith("resnet") or a.model[6:] not in ("18", "34", "50", "101", "152")
    size = a.image_size or (32 if cifar else 224)
    classes = a.num_classes or (10 if cifar else 1000)
    set_tf32(torch, a.tf32 == "on")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build(torch, a.model, classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(a.batch_size, 3, size, size, device=device)
    y = torch.randint(0, classes, (a.batch_size,), device=device)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def inference():
        with torch.no_grad():
            model(x)

    model.train()
    t_train = median_seconds(torch, device, train_step, a.warmup, a.steps)
    model.eval()
    t_eval = median_seconds(torch, device, inference, a.warmup, a.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "model": a.model,
        "batch_size": a.batch_size,
        "image_size": size,
        "device": name,
        "torch": torch.__version__,
        "tf32": a.tf32 == "on",
        "train_images_per_sec": round(a.batch_size / t_train, 2),
        "inference_images_per_sec": round(a.batch_size / t_eval, 2),
        "train_step_ms": round(t_train * 1e3, 2),
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(
            f"{a.model} batch {a.batch_size} at {size}x{size} on {name}, PyTorch {torch.__version__}, "
            f"TF32 {a.tf32}: training {result['train_images_per_sec']} images/s, "
            f"inference {result['inference_images_per_sec']} images/s"
        )


if __name__ == "__main__":
    main()
