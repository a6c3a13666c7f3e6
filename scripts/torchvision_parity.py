#!/usr/bin/env python3
"""torchvision's full-size ResNets against `resnet predict`, class by class.

For each --model (torchvision's resnet18 and resnet50 by default; any of its ResNets, the wide
ones too) it builds torchvision's network with seeded random weights whose BatchNorm statistics
fit its activations (as a trained net's do: one pass in training mode over the photos, a
cumulative average), with random BatchNorm scales and shifts, and saves its state_dict with
torch.save. Then it prepares six photos (all fit the BatchNorm statistics, the first four are
compared) as torchvision's ImageNet evaluation does (PIL open, convert("RGB"), Resize(256),
CenterCrop(224), ToTensor, Normalize with ImageNet's mean and std), computes PyTorch's softmax
over the 1000 classes, and runs `resnet predict --checkpoint that.pth --model M --top 1000
--json` on the same files. It reports the largest difference between the two probabilities of
any class of any photo (`resnet predict` prints them to 1e-6), the largest difference of their
logarithms where PyTorch's is at least 0.01 (a difference of the logits, up to the softmax's
shift: fp32 through 50 layers in another order of summation leaves some 1e-4), and whether the
top classes agree; beside it, how far ours and PyTorch's fp32 each are from the network in fp64
(the exact answer, to fp32's eyes), for scale. The exit status is 1 when that logarithm's
difference is above --tolerance and ours is more than twice as far from fp64 as PyTorch's fp32
is (a network as deep as resnet152 leaves PyTorch's own fp32 some 2e-3 from fp64). The
classifier's weights are multiplied by 8 after the BatchNorm pass, so that the outputs are far
from uniform and the printed probabilities carry the logits' digits.

The photos are the repository's bundled CIFAR-10 samples enlarged to 500x375 (ImageNet's usual
size) with PIL's bicubic filter and saved as PNG (--format png, the default: lossless, so both
sides read the same pixels) or as JPEG at quality 90 (--format jpeg: then the JPEG decoders
take part too, PIL's libjpeg-turbo against `resnet`'s own, which follows its arithmetic).

  python3 scripts/torchvision_parity.py --resnet target/release/resnet
  python3 scripts/torchvision_parity.py --resnet target/release/resnet --format jpeg --model resnet50

Needs torch, torchvision and Pillow; the files go into --work (a temporary folder by default).
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["cat", "ship", "frog", "truck", "dog", "horse"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resnet", default=str(ROOT / "target/release/resnet"), help="the resnet binary")
    p.add_argument("--model", default="resnet18,resnet50", help="torchvision ResNets, comma-separated")
    p.add_argument("--format", choices=["png", "jpeg"], default="png", help="how the photos are saved")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest |log p - log p_torch| of a class PyTorch gives at least 0.01")
    p.add_argument("--work", help="folder for the checkpoints and photos (default: a temporary one)")
    return p.parse_args()


def photos(work, fmt):
    from PIL import Image

    paths = []
    for name in SAMPLES:
        path = work / f"{name}.{'png' if fmt == 'png' else 'jpg'}"
        img = Image.open(ROOT / "web/data/samples" / f"{name}.png").convert("RGB")
        img = img.resize((500, 375), Image.BICUBIC)
        img.save(path, **({"quality": 90} if fmt == "jpeg" else {}))
        paths.append(path)
    return paths


def torch_probabilities(model_name, paths, work):
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms as T

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)()
    prepare = T.Compose([
        T.Resize(256), T.CenterCrop(224), T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    x = torch.stack([prepare(Image.open(p).convert("RGB")) for p in paths])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the pass below
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(x)
        # sharper outputs than the initial classifier's near-uniform ones, so that the printed
        # probabilities carry more digits of the logits
        model.fc.weight.mul_(8)
    model.eval()
    checkpoint = work / f"{model_name}.pth"
    torch.save(model.state_dict(), checkpoint)
    with torch.no_grad():
        log32 = torch.log_softmax(model(x[:4]).double(), 1)
        log64 = torch.log_softmax(model.double()(x[:4].double()), 1)
    # PyTorch's own fp32 error, against the same network in fp64: what the fp32 order of
    # summation alone leaves
    likely = log64.exp() >= 0.01
    own = (log32 - log64).abs()[likely].max().item()
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    return checkpoint, (log32.exp().tolist(), log64.exp().tolist()), categories, own


def ours(resnet, model_name, checkpoint, paths):
    cmd = [resnet, "predict", "--checkpoint", str(checkpoint), "--model", model_name,
           "--top", "1000", "--json"] + [str(p) for p in paths]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines()]


def compare(model_name, torch_probs, predictions, categories):
    """The largest |p - p_torch| of any class, the largest |log p - log p_torch| of the classes
    PyTorch gives at least 0.01 (where the 6 printed decimals hold 4 digits or more), and how
    many photos have the same top class."""
    index = {c: i for i, c in enumerate(categories)}
    worst, worst_log, same_top = 0.0, 0.0, 0
    for want, got in zip(torch_probs, predictions):
        p = {index[t["class"]]: t["probability"] for t in got["top"]}
        if len(p) != 1000:
            sys.exit(f"{model_name}: {got['image']}: {len(p)} classes, not 1000")
        worst = max(worst, max(abs(p[i] - want[i]) for i in range(1000)))
        likely = [i for i in range(1000) if want[i] >= 0.01]
        worst_log = max([worst_log] + [abs(math.log(max(p[i], 1e-12) / want[i])) for i in likely])
        same_top += max(p, key=p.get) == max(range(1000), key=want.__getitem__)
    return worst, worst_log, same_top


def main():
    a = parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = photos(work, a.format)
        for model_name in a.model.split(","):
            checkpoint, (probs, exact), categories, own = torch_probabilities(model_name, paths, work)
            predictions = ours(a.resnet, model_name, checkpoint, paths[:4])
            worst, worst_log, same_top = compare(model_name, probs, predictions, categories)
            _, ours_log, _ = compare(model_name, exact, predictions, categories)
            top = max(max(p) for p in probs)
            close = worst_log <= a.tolerance or ours_log <= 2 * own
            ok = close and not math.isnan(worst)
            failed |= not ok
            print(f"{model_name}, 4 {a.format} photos x 1000 classes: largest |p - p_torch| "
                  f"{worst:.2e} (largest p {top:.3f}), largest |log p - log p_torch| where "
                  f"p_torch >= 0.01: {worst_log:.2e} (against fp64, where p >= 0.01: ours "
                  f"{ours_log:.2e}, PyTorch's fp32 {own:.2e}), "
                  f"same top-1 {same_top}/4"
                  f"{'' if ok else f'  ABOVE {a.tolerance:g} AND TWICE PYTORCH FP32'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
