#!/usr/bin/env python3
"""Writes the JPEGs of tests/jpeg.rs and what Pillow decodes them to. Needs Pillow (built with
libjpeg-turbo, as its wheels are). Run from the repository root:
python3 tests/data/jpeg/make.py

  *.jpg         bundled CIFAR-10 samples (web/data/samples) resized with PIL's bicubic filter
                and saved by Pillow in each chroma subsampling (4:4:4, 4:2:2, 4:2:0), at odd
                sizes (the blocks at the right and bottom edges partly outside the image, chroma
                2 samples wide where libjpeg stops filtering), in grayscale, at qualities 50 to
                100, with optimised Huffman tables, with restart markers, and progressive (in
                three layouts, in grayscale, with restarts)
  pillow.json   for each of them and for the 300 JPEGs of tests/data/cifar10-jpeg: the SHA-256
                of Image.open(path).convert("RGB").tobytes(), and Pillow's and libjpeg-turbo's
                versions
"""
import hashlib
import json
from pathlib import Path

import PIL
from PIL import Image, features

OUT = Path(__file__).parent
ROOT = OUT.parents[2]

CASES = [
    # name, sample, size, save options
    ("cat_500x375_420", "cat", (500, 375), {"quality": 90, "subsampling": 2}),
    ("ship_500x375_422", "ship", (500, 375), {"quality": 90, "subsampling": 1}),
    ("frog_500x375_444", "frog", (500, 375), {"quality": 90, "subsampling": 0}),
    ("truck_37x23_420", "truck", (37, 23), {"quality": 75, "subsampling": 2}),
    ("dog_17x9_422", "dog", (17, 9), {"quality": 75, "subsampling": 1}),
    ("horse_3x5_420", "horse", (3, 5), {"quality": 75, "subsampling": 2}),
    ("deer_4x4_420", "deer", (4, 4), {"quality": 75, "subsampling": 2}),
    ("bird_1x1_420", "bird", (1, 1), {"quality": 75, "subsampling": 2}),
    ("airplane_64x48_q50", "airplane", (64, 48), {"quality": 50, "subsampling": 2}),
    ("automobile_64x48_q100", "automobile", (64, 48), {"quality": 100, "subsampling": 2}),
    ("cat_120x90_optimized", "cat", (120, 90), {"quality": 85, "optimize": True}),
    ("ship_120x90_restarts", "ship", (120, 90), {"quality": 85, "restart_marker_blocks": 3}),
    ("frog_121x91_restart_rows", "frog", (121, 91), {"quality": 85, "restart_marker_rows": 1}),
    ("truck_99x77_gray", "truck", (99, 77), {"quality": 85, "mode": "L"}),
    ("dog_80x60_progressive", "dog", (80, 60), {"quality": 85, "progressive": True}),
    ("cat_500x375_progressive_420", "cat", (500, 375), {"quality": 90, "progressive": True}),
    ("ship_123x77_progressive_444", "ship", (123, 77), {"quality": 95, "progressive": True, "subsampling": 0}),
    ("frog_91x45_progressive_gray", "frog", (91, 45), {"quality": 80, "progressive": True, "mode": "L"}),
    ("horse_150x100_progressive_restarts", "horse", (150, 100),
     {"quality": 85, "progressive": True, "optimize": True, "restart_marker_blocks": 5}),
]


def rgb_sha256(path):
    return hashlib.sha256(Image.open(path).convert("RGB").tobytes()).hexdigest()


def main():
    record = {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "files": {},
    }
    for name, sample, size, options in CASES:
        options = dict(options)
        mode = options.pop("mode", "RGB")
        img = Image.open(ROOT / "web/data/samples" / f"{sample}.png").convert("RGB")
        img = img.resize(size, Image.BICUBIC).convert(mode)
        path = OUT / f"{name}.jpg"
        img.save(path, **options)
        record["files"][f"tests/data/jpeg/{name}.jpg"] = rgb_sha256(path)
    for path in sorted((ROOT / "tests/data/cifar10-jpeg").rglob("*.jpg")):
        record["files"][str(path.relative_to(ROOT))] = rgb_sha256(path)
    (OUT / "pillow.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
