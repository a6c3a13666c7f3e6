#!/usr/bin/env python3
"""Writes the PyTorch checkpoints tests/checkpoint.rs and tests/cli.rs read, with PyTorch itself
(torch.save), and PyTorch's own evaluation of the ResNet-20 among them. Run from the repository
root with torch installed (CPU is enough): python3 tests/data/torch/make.py

  resnet20.pth                a ResNet-20 (He et al.'s CIFAR layout, option-A shortcuts, our
                              state_dict names) trained briefly by PyTorch on the bundled
                              2,000 images (web/data/train.bin): torch.save(model.state_dict())
  resnet20.json               PyTorch's loss, top-1 and top-5 accuracy of it on the 500 bundled
                              test images (web/data/test.bin), normalised with CIFAR-10's mean
                              and std (the top-5 added later by resnet20_top5, the rest as was)
  resnet20_step.json          one SGD step of PyTorch's from resnet20.pth on the first 32 bundled
                              training images (no augmentation; lr 0.1, momentum 0.9, weight decay
                              1e-4; BatchNorm in training mode): the batch's loss and, per
                              floating-point tensor, the update's L2 norm and its projection onto
                              sin(1), sin(2), ... (so a test compares updates without keeping them)
  training_checkpoint.pth     {"epoch", "state_dict", "optimizer"} as a training script saves it;
                              the state_dict holds f16 (a transposed, non-contiguous view), bf16,
                              f64, int32 and int64 tensors with exactly representable values
  resnet20_decay_step.json    the same step with torchvision's parameter groups of
                              set_weight_decay: weight decay 5e-3, norm layers 0, biases 5e-2
                              (--weight-decay, --norm-weight-decay, --bias-weight-decay)
  resnet20_norm_decay_step.json  the same with norm layers 0 and no bias decay: BatchNorm's
                              biases go with the norm layers, fc's bias with the others
  resnet20_clip_step.json     the step of resnet20_step.json with the gradients clipped to norm
                              0.5 first (torch.nn.utils.clip_grad_norm_, torchvision's
                              --clip-grad-norm), and their norm before it
  resnet20_rmsprop_steps.json  two steps of torch.optim.RMSprop as torchvision's --opt rmsprop
                              builds it (alpha 0.9, eps 0.0316; lr 1e-3, momentum 0.9, weight
                              decay 1e-4) from resnet20.pth on the first and the next 32 bundled
                              training images: both losses and the updates, as above
  resnet20_adamw_steps.json   the same with torch.optim.AdamW (lr 1e-3, weight decay 0.3)
  tiny_bottleneck.pth         a net of torchvision's ResNet layout (its Bottleneck blocks and
                              _make_layer: 7x7/2 stem, max pool, projection shortcuts, stride on
                              the 3x3 as in v1.5) narrowed to widths 8 and 16, blocks [2, 1], 10
                              classes, its BatchNorm statistics moved off their initial values
  tiny_bottleneck_module.pth  the same net saved whole, torch.save(model), and ..._in_dict.pth
                              as {"model": model, "epoch": 3}: both read as its state_dict
  tiny_bottleneck_step.json   one SGD step of it, recorded as resnet20_step.json is (the first 16
                              bundled training images, 32x32)
  gradscaler_trace.json       torch.amp.GradScaler's scale after each of 16 steps (initial scale
                              1024, growth interval 3) whose gradients overflow where the file
                              says, for tests/amp.rs
  legacy.pth                  that state_dict in PyTorch's pre-1.6 format
                              (_use_new_zipfile_serialization=False)
  tutorial_checkpoint.pth     {"epoch", "model_state_dict", "optimizer_state_dict", "loss"}, as
                              PyTorch's tutorials save one, holding that state_dict
  submodule_model.pth         the state_dict of a module with a child named `model` beside a
                              `head`: keys model.weight and head.weight, not a wrapper
  ddp_state_dict.pth          the small state_dict as DistributedDataParallel's state_dict()
                              names it: module. before every key
  bool_buffer.pth             a state_dict with a bool tensor, which no ResNet has
  trivial_augment.json        torchvision's TrivialAugmentWide on PIL images, op by op: its
                              magnitude tables (torch.linspace's float32 values) and
                              RandAugment's at four image sizes, three input
                              images (two crops of bundled CIFAR JPEGs and a small synthetic one)
                              and _apply_op's output for chosen bins and signs, with bilinear
                              interpolation as its reference recipe uses
  augmix.json                 torchvision's AugMix on PIL images, which it turns into uint8
                              tensors and augments with its tensor operations: its 10-bin tables
                              at three image sizes, _apply_op's output on the [1, 3, H, W] tensor
                              for every operation at chosen bins and signs, and whole forwards
                              with the chains' draws (torch.randint) and the Dirichlet weights
                              given, byte for byte; the same operations on augmix_224.png (a
                              bundled photo enlarged to 224x224), their outputs' SHA-256
  interpolation.json          torchvision's --interpolation modes on PIL images: F.resize of a
                              64x48 patterned photo to four sizes (shrinking, growing, both) in
                              each of nearest, bilinear, bicubic, box, hamming and lanczos, and
                              Resize(37) + CenterCrop(30) of it in each, and six sizes either
                              side of Pillow 13's choice of which pass comes first; the
                              automatic augmentations' warps (_apply_op's shears, translations
                              and rotations) in nearest and bicubic on the images of
                              trivial_augment.json, and on AugMix's uint8 tensors in nearest
                              (the tensor path takes no bicubic: the file records its refusal)
"""
import json
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

OUT = Path(__file__).parent
DATA = OUT.parents[2] / "web" / "data"
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.247, 0.2435, 0.2616]).view(1, 3, 1, 1)


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
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate([16, 32, 64]):
            blocks = [Block(cin if j == 0 else planes, planes, 2 if i > 0 and j == 0 else 1) for j in range(3)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = planes
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def bundled(name):
    """CIFAR-10 binary records: a label byte, then 32x32 R, G and B planes."""
    raw = torch.frombuffer(bytearray((DATA / name).read_bytes()), dtype=torch.uint8).view(-1, 3073)
    x = raw[:, 1:].view(-1, 3, 32, 32).float() / 255
    return (x - MEAN) / STD, raw[:, 0].long()


def resnet20():
    torch.manual_seed(0)
    model = ResNet20()
    x, y = bundled("train.bin")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    for step in range(240):
        i = torch.randint(0, len(x), (128,))
        xb = torch.where(torch.rand(128, 1, 1, 1) < 0.5, x[i], x[i].flip(3))
        loss = F.cross_entropy(model(xb), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), OUT / "resnet20.pth")
    (OUT / "resnet20.json").write_text(json.dumps(test_scores(model), indent=1) + "\n")


def test_scores(model):
    """The model's loss, top-1 and top-5 accuracy on the bundled test images, the top-5 as
    torchvision's reference script computes it (utils.accuracy: output.topk(5))."""
    model.eval()
    tx, ty = bundled("test.bin")
    with torch.no_grad():
        logits = model(tx)
    top5 = logits.topk(5, 1, True, True)[1].eq(ty[:, None]).any(1)
    result = {
        "torch": torch.__version__,
        "images": len(ty),
        "loss": F.cross_entropy(logits, ty).item(),
        "accuracy": (logits.argmax(1) == ty).float().mean().item(),
        "accuracy5": top5.float().mean().item(),
    }
    print(result)
    return result


def resnet20_top5():
    """Adds the top-5 accuracy to resnet20.json without training anew (the rest must not move)."""
    model = ResNet20()
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    old = json.loads((OUT / "resnet20.json").read_text())
    new = test_scores(model)
    # the loss in float32 with other threads: within its last bits
    same = new["images"] == old["images"] and new["accuracy"] == old["accuracy"]
    assert same and abs(new["loss"] - old["loss"]) <= 1e-6 * old["loss"], (old, new)
    old["accuracy5"] = new["accuracy5"]
    (OUT / "resnet20.json").write_text(json.dumps(old, indent=1) + "\n")


class TinyTorchvision(nn.Module):
    """torchvision.models.ResNet with other widths: its own blocks and _make_layer."""

    _make_layer = torchvision.models.resnet.ResNet._make_layer

    def __init__(self, block, layers, widths, num_classes):
        super().__init__()
        self._norm_layer, self.groups, self.base_width, self.dilation = nn.BatchNorm2d, 1, 64, 1
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (n, w) in enumerate(zip(layers, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, stride=1 if i == 0 else 2))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_bottleneck():
    torch.manual_seed(2)
    model = TinyTorchvision(torchvision.models.resnet.Bottleneck, [2, 1], [8, 16], 10)
    model.train()
    with torch.no_grad():  # running statistics away from 0 and 1
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 1.5 + 0.3)
    torch.save(model.state_dict(), OUT / "tiny_bottleneck.pth")
    torch.save(model, OUT / "tiny_bottleneck_module.pth")
    torch.save({"model": model, "epoch": 3}, OUT / "tiny_bottleneck_module_in_dict.pth")
    step(model, 16, "tiny_bottleneck_step.json")


# The batch of the recorded steps: small, so that the tests take them quickly on a CPU driver
# (they were recorded at 128 until 2026-12-07).
STEP_BATCH = 32


def one_step():
    model = ResNet20()
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    step(model, STEP_BATCH, "resnet20_step.json")
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    groups = decay_groups(model, weight_decay=5e-3, norm_weight_decay=0.0, bias_weight_decay=5e-2)
    step(model, STEP_BATCH, "resnet20_decay_step.json", groups)
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    groups = decay_groups(model, weight_decay=5e-3, norm_weight_decay=0.0, bias_weight_decay=None)
    step(model, STEP_BATCH, "resnet20_norm_decay_step.json", groups)
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    step(model, STEP_BATCH, "resnet20_clip_step.json", clip=0.5)


def decay_groups(model, weight_decay, norm_weight_decay, bias_weight_decay):
    """The parameter groups torchvision's training script gives torch.optim.SGD
    (references/classification: utils.set_weight_decay with custom key "bias" where
    bias_weight_decay is given): a parameter named bias takes bias_weight_decay, else one of a
    norm layer norm_weight_decay, else weight_decay."""
    norm_classes = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    groups = {"other": [], "norm": [], "bias": []}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name == "bias" and bias_weight_decay is not None:
                groups["bias"].append(p)
            elif isinstance(module, norm_classes):
                groups["norm"].append(p)
            else:
                groups["other"].append(p)
    decays = {"other": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
    return [{"params": ps, "weight_decay": decays[k]} for k, ps in groups.items() if ps]


def mixed_batch(x, y, mix):
    """torchvision's RandomMixUp or RandomCutMix (references/classification/transforms.py) with
    its draw given: ("mixup", lambda) or ("cutmix", (x1, y1, x2, y2)); the batch is rolled by one
    image, the targets become class probabilities."""
    target = F.one_hot(y, 10).float()
    x_rolled, target_rolled = x.roll(1, 0), target.roll(1, 0)
    x = x.clone()
    if mix[0] == "mixup":
        lam = mix[1]
        x.mul_(lam).add_(x_rolled.mul_(1.0 - lam))
    else:
        x1, y1, x2, y2 = mix[1]
        x[:, :, y1:y2, x1:x2] = x_rolled[:, :, y1:y2, x1:x2]
        lam = float(1.0 - (x2 - x1) * (y2 - y1) / (x.shape[-1] * x.shape[-2]))
    target_rolled.mul_(1.0 - lam)
    return x, target.mul_(lam).add_(target_rolled)


def mixed_steps():
    """One step of the PyTorch ResNet-20 on a MixUp batch, and one on a CutMix batch with label
    smoothing 0.1."""
    model = ResNet20()
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    step(model, STEP_BATCH, "resnet20_mixup_step.json", mix=("mixup", 0.75))
    model.load_state_dict(torch.load(OUT / "resnet20.pth"))
    cutmix = ("cutmix", (5, 9, 21, 27))
    step(model, STEP_BATCH, "resnet20_cutmix_step.json", mix=cutmix, smoothing=0.1)


def step(model, batch, out, groups=None, mix=None, smoothing=0.0, clip=None):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = bundled("train.bin")
    x, y = x[:batch], y[:batch]
    if mix is not None:
        x, y = mixed_batch(x, y, mix)
    params = groups if groups is not None else model.parameters()
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
    opt.zero_grad()
    loss.backward()
    record = {"torch": torch.__version__, "loss": loss.item()}
    if clip is not None:
        record["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), clip).item()
    opt.step()
    record["updates"] = updates(model, before)
    (OUT / out).write_text(json.dumps(record, indent=1) + "\n")
    print(out, "loss", loss.item())


def optimizer_steps():
    """Two steps from resnet20.pth of the other optimizers torchvision's training script builds
    (--opt rmsprop, --opt adamw), on the first and the next 32 bundled training images: torch's
    RMSprop with the script's alpha 0.9 and eps 0.0316, and AdamW with a weight decay of 0.3, so
    that its decoupled decay shows in the updates."""
    cases = [
        ("rmsprop", lambda ps: torch.optim.RMSprop(
            ps, lr=1e-3, momentum=0.9, weight_decay=1e-4, eps=0.0316, alpha=0.9)),
        ("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.3)),
    ]
    for name, make_opt in cases:
        model = ResNet20()
        model.load_state_dict(torch.load(OUT / "resnet20.pth"))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        opt = make_opt(model.parameters())
        x, y = bundled("train.bin")
        model.train()
        losses = []
        for first in (0, STEP_BATCH):
            batch = slice(first, first + STEP_BATCH)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        record = {"torch": torch.__version__, "losses": losses, "updates": updates(model, before)}
        out = f"resnet20_{name}_steps.json"
        (OUT / out).write_text(json.dumps(record, indent=1) + "\n")
        print(out, "losses", losses)


def updates(model, before):
    """Per floating-point tensor of the state_dict, the change's L2 norm and its projection onto
    sin(1), sin(2), ..."""
    out = {}
    for name, after in model.state_dict().items():
        if after.is_floating_point():
            u = (after - before[name]).double().flatten()
            probe = torch.sin(torch.arange(1, len(u) + 1, dtype=torch.float64))
            out[name] = [u.norm().item(), (u * probe).sum().item()]
    return out


def gradscaler_trace():
    overflows = [0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scales = []
    for overflow in overflows:
        opt.zero_grad()
        scaler.scale((p * (float("inf") if overflow else 1.0)).sum()).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    record = {"torch": torch.__version__, "init_scale": 1024.0, "growth_interval": 3,
              "overflows": overflows, "scales": scales}
    (OUT / "gradscaler_trace.json").write_text(json.dumps(record) + "\n")


def torchvision_lr_scheduler(opt, case):
    """The scheduler torchvision's references/classification/train.py builds from its flags."""
    sched = torch.optim.lr_scheduler
    epochs, warmup = case["epochs"], case["lr_warmup_epochs"]
    if case["lr_scheduler"] == "steplr":
        main = sched.StepLR(opt, step_size=case["lr_step_size"], gamma=case["lr_gamma"])
    elif case["lr_scheduler"] == "exponentiallr":
        main = sched.ExponentialLR(opt, gamma=case["lr_gamma"])
    else:
        main = sched.CosineAnnealingLR(opt, T_max=epochs - warmup, eta_min=case["lr_min"])
    if warmup == 0:
        return main
    decay = case["lr_warmup_decay"]
    if case["lr_warmup_method"] == "linear":
        warm = sched.LinearLR(opt, start_factor=decay, total_iters=warmup)
    else:
        warm = sched.ConstantLR(opt, factor=decay, total_iters=warmup)
    return sched.SequentialLR(opt, schedulers=[warm, main], milestones=[warmup])


def lr_warmup():
    """The learning rate of each epoch under torchvision's warm-up and schedulers, stepped once
    an epoch as its training script does."""
    cases = [
        dict(lr=0.5, epochs=12, lr_scheduler="cosineannealinglr", lr_min=1e-4, lr_step_size=0,
             lr_warmup_epochs=3, lr_warmup_method="linear", lr_warmup_decay=0.01),
        dict(lr=0.2, epochs=11, lr_scheduler="steplr", lr_min=0.0, lr_step_size=3,
             lr_warmup_epochs=2, lr_warmup_method="constant", lr_warmup_decay=0.1),
        dict(lr=0.1, epochs=9, lr_scheduler="steplr", lr_min=0.0, lr_step_size=4,
             lr_warmup_epochs=4, lr_warmup_method="linear", lr_warmup_decay=0.25),
        dict(lr=0.3, epochs=8, lr_scheduler="cosineannealinglr", lr_min=0.01, lr_step_size=0,
             lr_warmup_epochs=0, lr_warmup_method="constant", lr_warmup_decay=0.01),
        dict(lr=0.4, epochs=10, lr_scheduler="steplr", lr_min=0.0, lr_step_size=2,
             lr_warmup_epochs=1, lr_warmup_method="linear", lr_warmup_decay=0.1, lr_gamma=0.5),
        dict(lr=0.1, epochs=9, lr_scheduler="exponentiallr", lr_min=0.0, lr_step_size=0,
             lr_warmup_epochs=2, lr_warmup_method="linear", lr_warmup_decay=0.2, lr_gamma=0.8),
        dict(lr=0.2, epochs=6, lr_scheduler="exponentiallr", lr_min=0.0, lr_step_size=0,
             lr_warmup_epochs=0, lr_warmup_method="constant", lr_warmup_decay=0.01, lr_gamma=0.9),
    ]
    for case in cases:
        case.setdefault("lr_gamma", 0.1)
    for case in cases:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=case["lr"])
        scheduler = torchvision_lr_scheduler(opt, case)
        case["lrs"] = []
        for _ in range(case["epochs"]):
            case["lrs"].append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    record = {"torch": torch.__version__, "cases": cases}
    (OUT / "lr_warmup.json").write_text(json.dumps(record, indent=1) + "\n")


def random_erasing():
    """Statistics of torchvision's RandomErasing(p=0.5) rectangles (its own get_params and
    torch.rand(1) < p), over many draws, for two image sizes."""
    import torchvision.transforms as T
    torch.manual_seed(0)
    erasing = T.RandomErasing(p=0.5)
    draws, sizes = 100_000, {}
    for h, w in [(32, 32), (176, 176)]:
        img = torch.zeros(3, h, w)
        rows = []
        for _ in range(draws):
            if torch.rand(1) < erasing.p:
                i, j, eh, ew, _ = erasing.get_params(img, erasing.scale, erasing.ratio, [0.0])
                rows.append([1.0 if eh < h else 0.0, eh, ew, i, j] if eh < h else [0.0] * 5)
            else:
                rows.append([0.0] * 5)
        t = torch.tensor(rows, dtype=torch.float64)
        names = ["erased", "height", "width", "top", "left"]
        sizes[f"{h}x{w}"] = {n: [t[:, k].mean().item(), t[:, k].std().item()] for k, n in enumerate(names)}
    record = {"torch": torch.__version__, "p": 0.5, "draws": draws, "sizes": sizes}
    (OUT / "random_erasing.json").write_text(json.dumps(record, indent=1) + "\n")


def trivial_augment():
    """TrivialAugmentWide's ops as torchvision applies them to PIL images (_apply_op, bilinear as
    the reference recipe's --interpolation), for every op at a few bins and signs."""
    import base64
    from PIL import Image
    from torchvision.transforms import autoaugment, InterpolationMode
    b64 = lambda b: base64.b64encode(bytes(b)).decode()
    jpeg = OUT.parents[1] / "data" / "cifar10-jpeg" / "train"
    square = Image.open(jpeg / "cat" / "0000.jpg").convert("RGB").resize((24, 24), Image.BILINEAR)
    tall = Image.open(jpeg / "ship" / "0001.jpg").convert("RGB").crop((5, 3, 25, 27))
    g = torch.Generator().manual_seed(0)
    flat = torch.stack([torch.full((7, 9), 77), torch.randint(100, 140, (7, 9), generator=g),
                        torch.randint(0, 256, (7, 9), generator=g)], -1).to(torch.uint8)
    images = [square, tall, Image.fromarray(flat.numpy(), "RGB")]
    space = autoaugment.TrivialAugmentWide()._augmentation_space(31)
    tables = {op: {"signed": signed, "magnitudes": m.flatten().tolist()} for op, (m, signed) in space.items()}
    # (bin, sign): bin 0 with sign -1 is torchvision's -0.0
    picks = {"ShearX": [(0, -1), (1, 1), (10, -1), (30, -1)], "ShearY": [(4, -1), (17, 1), (30, 1)],
             "TranslateX": [(0, -1), (1, -1), (15, 1), (30, -1)], "TranslateY": [(8, 1), (23, -1)],
             "Rotate": [(0, -1), (1, 1), (7, -1), (20, 1), (20, -1), (30, 1)],
             "Posterize": [(0, 1), (13, 1), (30, 1)], "Solarize": [(0, 1), (3, 1), (17, 1), (30, 1)]}
    for op in ["Brightness", "Color", "Contrast", "Sharpness"]:
        picks[op] = [(30, -1), (10, -1), (20, 1), (30, 1)]
    cases = []
    for op, (m, signed) in space.items():
        for bin_, sign in picks.get(op, [(0, 1)]):
            magnitude = float(m.flatten()[bin_].item()) * sign
            for k, img in enumerate(images):
                out = autoaugment._apply_op(img, op, magnitude, InterpolationMode.BILINEAR, None)
                cases.append({"op": op, "bin": bin_, "negative": sign < 0, "image": k,
                              "out": b64(out.tobytes())})
    ra_tables = {}
    for h, w in [(224, 224), (176, 176), (32, 32), (24, 20)]:
        space = autoaugment.RandAugment()._augmentation_space(31, (h, w))
        ra_tables[f"{h}x{w}"] = {op: {"signed": signed, "magnitudes": m.flatten().tolist()}
                                 for op, (m, signed) in space.items()}
    record = {"torch": torch.__version__, "torchvision": torchvision.__version__,
              "pillow": Image.__version__, "tables": tables, "ra_tables": ra_tables,
              "images": [{"width": i.width, "height": i.height, "rgb": b64(i.tobytes())} for i in images],
              "cases": cases}
    (OUT / "trivial_augment.json").write_text(json.dumps(record, indent=1) + "\n")


def auto_augment_policies():
    """AutoAugment's learned policies as torchvision lists them, its 10-bin tables at a few image
    sizes, and its forward on a 20x24 photo (bilinear, as the reference scripts pass) for every
    sub-policy of every policy at chosen coins and signs (get_params replaced), byte for byte."""
    import base64
    from PIL import Image
    from torchvision.transforms import autoaugment, InterpolationMode
    b64 = lambda b: base64.b64encode(bytes(b)).decode()
    jpeg = OUT.parents[1] / "data" / "cifar10-jpeg" / "train"
    tall = Image.open(jpeg / "ship" / "0001.jpg").convert("RGB").crop((5, 3, 25, 27))
    record = {"torch": torch.__version__, "torchvision": torchvision.__version__,
              "pillow": Image.__version__, "policies": {}, "tables": {}, "cases": [],
              "image": {"width": tall.width, "height": tall.height, "rgb": b64(tall.tobytes())}}
    for policy in autoaugment.AutoAugmentPolicy:
        aa = autoaugment.AutoAugment(policy, InterpolationMode.BILINEAR)
        record["policies"][policy.value] = [[list(step) for step in pair] for pair in aa.policies]
        # both steps, then the first alone, then the second alone, with both signs in turn
        draws = [([0.0, 0.0], [0, 1]), ([0.0, 0.0], [1, 0]), ([0.0, 0.9999], [1, 1]),
                 ([0.9999, 0.0], [0, 0])]
        for pair in range(len(aa.policies)):
            probs, signs = draws[pair % len(draws)]
            aa.get_params = lambda n, pair=pair, probs=probs, signs=signs: (
                pair, torch.tensor(probs), torch.tensor(signs))
            out = aa(tall)
            record["cases"].append({"policy": policy.value, "pair": pair, "coins": probs,
                                    "signs": signs, "out": b64(out.tobytes())})
    for h, w in [(224, 224), (32, 32), (24, 20)]:
        space = autoaugment.AutoAugment()._augmentation_space(10, (h, w))
        record["tables"][f"{h}x{w}"] = {op: {"signed": signed, "magnitudes": m.flatten().tolist()}
                                        for op, (m, signed) in space.items()}
    (OUT / "auto_augment_policies.json").write_text(json.dumps(record, indent=1) + "\n")


def small_state_dict():
    sd = OrderedDict()
    sd["conv1.weight"] = (torch.arange(12, dtype=torch.float16).view(3, 4) / 4).t()  # a view
    sd["bn1.running_mean"] = torch.tensor([-1.5, 0.25, 3.0], dtype=torch.bfloat16)
    sd["bn1.num_batches_tracked"] = torch.tensor(42, dtype=torch.int64)
    sd["fc.bias"] = torch.tensor([0.1, -2.0], dtype=torch.float64)
    sd["fc.steps"] = torch.tensor([7, -8], dtype=torch.int32)
    assert not sd["conv1.weight"].is_contiguous()
    return sd


def augmix():
    """AugMix as the reference recipe's --auto-augment augmix runs it (bilinear, severity 3, on a
    PIL image): its tables, _apply_op on the uint8 tensor it makes of the image, and whole forwards
    whose torch.randint draws and Dirichlet samples are given."""
    import base64
    import random
    from PIL import Image
    from torchvision.transforms import autoaugment, InterpolationMode
    import torchvision.transforms.functional as TF
    b64 = lambda b: base64.b64encode(bytes(b)).decode()
    jpeg = OUT.parents[1] / "data" / "cifar10-jpeg" / "train"
    square = Image.open(jpeg / "cat" / "0000.jpg").convert("RGB").resize((24, 24), Image.BILINEAR)
    tall = Image.open(jpeg / "ship" / "0001.jpg").convert("RGB").crop((5, 3, 25, 27))
    whole = Image.open(jpeg / "horse" / "0002.jpg").convert("RGB")
    g = torch.Generator().manual_seed(0)
    flat = torch.stack([torch.full((7, 9), 77), torch.randint(100, 140, (7, 9), generator=g),
                        torch.randint(0, 256, (7, 9), generator=g)], -1).to(torch.uint8)
    images = [square, tall, Image.fromarray(flat.numpy(), "RGB"), whole]
    bilinear = InterpolationMode.BILINEAR
    record = {"torch": torch.__version__, "torchvision": torchvision.__version__, "tables": {},
              "images": [{"width": i.width, "height": i.height, "rgb": b64(i.tobytes())} for i in images],
              "cases": [], "forwards": []}
    for h, w in [(224, 224), (32, 32), (24, 20)]:
        space = autoaugment.AugMix()._augmentation_space(10, (h, w))
        record["tables"][f"{h}x{w}"] = {op: {"signed": signed, "magnitudes": m.flatten().tolist()}
                                        for op, (m, signed) in space.items()}
    picks = [(0, -1), (1, 1), (2, -1), (9, 1)]
    for k, img in enumerate(images):
        space = autoaugment.AugMix()._augmentation_space(10, (img.height, img.width))
        tensor = TF.pil_to_tensor(img).unsqueeze(0)
        for op, (m, signed) in space.items():
            for bin_, sign in (picks if m.ndim > 0 else [(0, 1)]):
                sign = sign if signed else 1
                magnitude = float(m[bin_].item()) * sign if m.ndim > 0 else 0.0
                out = autoaugment._apply_op(tensor, op, magnitude, bilinear, None)
                record["cases"].append({"op": op, "bin": bin_, "negative": sign < 0, "image": k,
                                        "out": b64(out[0].permute(1, 2, 0).contiguous().numpy().tobytes())})
    ops = list(autoaugment.AugMix()._augmentation_space(10, (32, 32)).items())
    pick = random.Random(5)
    for case in range(8):
        img = images[case % len(images)]
        chains = []
        for _ in range(3):
            depth = pick.randint(1, 3)
            chain = []
            for _ in range(depth):
                index = pick.randrange(len(ops))
                (name, (m, signed)) = ops[index]
                chain.append([name, pick.randrange(3) if m.ndim > 0 else 0, signed and pick.random() < 0.5])
            chains.append(chain)
        draws = []
        for chain in chains:
            draws.append(len(chain))
            for name, bin_, negative in chain:
                index = [n for n, _ in ops].index(name)
                draws.append(index)
                if ops[index][1][0].ndim > 0:
                    draws.append(bin_)
                if ops[index][1][1]:
                    draws.append(1 if negative else 0)
        dg = torch.Generator().manual_seed(100 + case)
        beta = torch._sample_dirichlet(torch.ones(1, 2), generator=dg)
        mixing = torch._sample_dirichlet(torch.ones(1, 3), generator=dg)
        samples = [beta, mixing]

        class Given(autoaugment.AugMix):
            def _sample_dirichlet(self, params):
                return samples.pop(0)

        queue = list(draws)
        real = torch.randint
        torch.randint = lambda *a, **k: torch.tensor([queue.pop(0)])
        try:
            out = Given(interpolation=bilinear)(img)
        finally:
            torch.randint = real
        assert not queue and not samples
        record["forwards"].append({"image": case % len(images), "chains": chains,
                                   "beta": beta[0].tolist(), "mixing": mixing[0].tolist(),
                                   "out": b64(out.tobytes())})
    # a training-sized image (a CIFAR photo enlarged, saved losslessly): every case's output as
    # its SHA-256, to keep the file small
    import hashlib
    big = Image.open(jpeg / "dog" / "0003.jpg").convert("RGB").resize((224, 224), Image.BILINEAR)
    big.save(OUT / "augmix_224.png", optimize=True)
    digest = lambda t: hashlib.sha256(t[0].permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()
    space = autoaugment.AugMix()._augmentation_space(10, (224, 224))
    tensor = TF.pil_to_tensor(big).unsqueeze(0)
    record["large"] = []
    for op, (m, signed) in space.items():
        for bin_, sign in (picks if m.ndim > 0 else [(0, 1)]):
            sign = sign if signed else 1
            magnitude = float(m[bin_].item()) * sign if m.ndim > 0 else 0.0
            out = autoaugment._apply_op(tensor, op, magnitude, bilinear, None)
            record["large"].append({"op": op, "bin": bin_, "negative": sign < 0, "sha256": digest(out)})
    (OUT / "augmix.json").write_text(json.dumps(record, indent=1) + "\n")


def interpolation():
    """torchvision's InterpolationMode on PIL images as its transforms use it: F.resize (what
    Resize and RandomResizedCrop call) for every PIL mode, and the warps of the automatic
    augmentations with nearest and bicubic, on PIL images and (AugMix's path) uint8 tensors."""
    import base64
    import numpy as np
    from PIL import Image
    from torchvision.transforms import autoaugment, InterpolationMode as M
    import torchvision.transforms.functional as TF
    b64 = lambda b: base64.b64encode(bytes(b)).decode()
    jpeg = OUT.parents[1] / "data" / "cifar10-jpeg" / "train"
    photo = Image.open(jpeg / "bird" / "0003.jpg").convert("RGB").resize((64, 48), Image.NEAREST)
    g = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 64, (48, 64, 3), generator=g, dtype=torch.uint8)
    photo = Image.fromarray((torch.from_numpy(np.array(photo)) ^ noise).numpy(), "RGB")
    modes = [M.NEAREST, M.BILINEAR, M.BICUBIC, M.BOX, M.HAMMING, M.LANCZOS]
    record = {"torch": torch.__version__, "torchvision": torchvision.__version__,
              "pillow": Image.__version__,
              "photo": {"width": photo.width, "height": photo.height, "rgb": b64(photo.tobytes())},
              "resize": [], "resize_center_crop": [], "resize_order": [], "warps": [],
              "tensor_warps": []}
    for mode in modes:
        for h, w in [(18, 24), (37, 83), (70, 45), (20, 60)]:
            out = TF.resize(photo, [h, w], interpolation=mode)
            assert out.size == (w, h)
            record["resize"].append({"mode": mode.value, "height": h, "width": w, "out": b64(out.tobytes())})
        # the evaluation transform: Resize(37) (the shorter side) then CenterCrop(30)
        out = TF.center_crop(TF.resize(photo, 37, interpolation=mode), 30)
        record["resize_center_crop"].append({"mode": mode.value, "resize": 37, "crop": 30,
                                             "out": b64(out.tobytes())})
    # Pillow 13 resamples the columns first where the height loses more than twice as many
    # pixels as the width: sizes on both sides of that line, bilinear
    for h, w in [(19, 50), (20, 50), (43, 62), (44, 62), (30, 63), (47, 65)]:
        out = TF.resize(photo, [h, w], interpolation=M.BILINEAR)
        record["resize_order"].append({"mode": "bilinear", "height": h, "width": w, "out": b64(out.tobytes())})
    square = Image.open(jpeg / "cat" / "0000.jpg").convert("RGB").resize((24, 24), Image.BILINEAR)
    tall = Image.open(jpeg / "ship" / "0001.jpg").convert("RGB").crop((5, 3, 25, 27))
    flat = torch.stack([torch.full((7, 9), 77), torch.randint(100, 140, (7, 9), generator=g),
                        torch.randint(0, 256, (7, 9), generator=g)], -1).to(torch.uint8)
    images = [square, tall, Image.fromarray(flat.numpy(), "RGB")]
    record["images"] = [{"width": i.width, "height": i.height, "rgb": b64(i.tobytes())} for i in images]
    space = autoaugment.TrivialAugmentWide()._augmentation_space(31)
    picks = {"ShearX": [(0, 1), (10, -1), (30, 1)], "ShearY": [(17, 1), (30, -1)],
             "TranslateX": [(0, -1), (15, 1)], "TranslateY": [(8, 1), (23, -1)],
             "Rotate": [(1, 1), (7, -1), (20, 1), (30, 1)]}
    for mode in [M.NEAREST, M.BICUBIC]:
        for op, bins in picks.items():
            for bin_, sign in bins:
                magnitude = float(space[op][0][bin_].item()) * sign
                for k, img in enumerate(images):
                    out = autoaugment._apply_op(img, op, magnitude, mode, None)
                    record["warps"].append({"mode": mode.value, "op": op, "bin": bin_, "negative": sign < 0,
                                            "image": k, "out": b64(out.tobytes())})
    for k, img in enumerate(images):
        space = autoaugment.AugMix()._augmentation_space(10, (img.height, img.width))
        tensor = TF.pil_to_tensor(img).unsqueeze(0)
        for op in picks:
            for bin_, sign in [(1, 1), (4, -1), (9, 1)]:
                magnitude = float(space[op][0][bin_].item()) * sign
                out = autoaugment._apply_op(tensor, op, magnitude, M.NEAREST, None)
                record["tensor_warps"].append({"mode": "nearest", "op": op, "bin": bin_, "negative": sign < 0,
                                               "image": k, "out": b64(out[0].permute(1, 2, 0).contiguous().numpy().tobytes())})
    try:
        autoaugment._apply_op(TF.pil_to_tensor(square).unsqueeze(0), "Rotate", 10.0, M.BICUBIC, None)
        record["tensor_bicubic"] = "accepted"
    except ValueError as e:
        record["tensor_bicubic"] = str(e)
    (OUT / "interpolation.json").write_text(json.dumps(record, indent=1) + "\n")


def small():
    sd = small_state_dict()
    momentum = {"momentum_buffer": torch.ones(4, 3)}
    optimizer = {"state": {0: momentum}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    torch.save({"epoch": 7, "state_dict": sd, "optimizer": optimizer}, OUT / "training_checkpoint.pth")
    torch.save(sd, OUT / "legacy.pth", _use_new_zipfile_serialization=False)
    tutorial = {"epoch": 2, "model_state_dict": sd, "optimizer_state_dict": optimizer, "loss": 0.5}
    torch.save(tutorial, OUT / "tutorial_checkpoint.pth")
    outer = nn.Module()
    outer.model = nn.Linear(2, 1, bias=False)
    outer.head = nn.Linear(1, 1, bias=False)
    torch.save(outer.state_dict(), OUT / "submodule_model.pth")
    torch.save(OrderedDict(("module." + k, v) for k, v in sd.items()), OUT / "ddp_state_dict.pth")
    torch.save({"conv1.weight": torch.ones(2, 2), "mask": torch.tensor([True, False])}, OUT / "bool_buffer.pth")


if __name__ == "__main__":
    torch.set_num_threads(2)
    small()
    gradscaler_trace()
    lr_warmup()
    random_erasing()
    trivial_augment()
    auto_augment_policies()
    augmix()
    interpolation()
    resnet20()
    one_step()
    mixed_steps()
    optimizer_steps()
    tiny_bottleneck()
