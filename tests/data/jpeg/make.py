#!/usr/bin/env python3
"""Writes the JPEGs of tests/jpeg.rs and what Pillow decodes them to. Needs Pillow (built with
libjpeg-turbo, as its wheels are). Run from the repository root:
python3 tests/data/jpeg/make.py

  *.jpg         bundled CIFAR-10 samples (web/data/samples) resized with PIL's bicubic filter
                and saved by Pillow in each chroma subsampling (4:4:4, 4:2:2, 4:2:0), at odd
                sizes (the blocks at the right and bottom edges partly outside the image, chroma
                2 samples wide where libjpeg stops filtering), in grayscale, at qualities 50 to
                100, with optimised Huffman tables, with restart markers, and progressive (in
                three layouts, in grayscale, with restarts); and in CMYK, as Pillow writes it
                (Adobe's APP14 segment, transform 0), with that segment's transform made 2
                (YCCK: the same coefficients read as YCbCr + K) or with the segment removed
                (plain CMYK, as libjpeg takes four components without it); and in RGB
                (keep_rgb: Adobe's transform 0, or no segment and components named R, G, B)
  pillow.json   for each of them and for the 300 JPEGs of tests/data/cifar10-jpeg: the SHA-256
                of Image.open(path).convert("RGB").tobytes(), and Pillow's and libjpeg-turbo's
                versions
"""
import hashlib
import json
from pathlib import Path

import PIL
from PIL import Image, ImageChops, features

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
    ("cat_120x90_cmyk_420", "cat", (120, 90), {"quality": 90, "mode": "CMYK", "subsampling": 2}),
    ("ship_37x23_cmyk_444", "ship", (37, 23), {"quality": 75, "mode": "CMYK", "subsampling": 0}),
    ("frog_91x45_cmyk_progressive", "frog", (91, 45),
     {"quality": 85, "mode": "CMYK", "progressive": True}),
    ("dog_80x60_ycck_420", "dog", (80, 60),
     {"quality": 90, "mode": "CMYK", "subsampling": 2, "adobe_transform": 2}),
    ("horse_33x17_ycck_progressive_422", "horse", (33, 17),
     {"quality": 80, "mode": "CMYK", "subsampling": 1, "progressive": True, "adobe_transform": 2}),
    ("deer_64x48_cmyk_no_adobe", "deer", (64, 48),
     {"quality": 85, "mode": "CMYK", "subsampling": 0, "adobe_transform": None}),
    ("airplane_61x47_rgb", "airplane", (61, 47), {"quality": 90, "keep_rgb": True, "subsampling": 0}),
    ("bird_45x33_rgb_no_adobe", "bird", (45, 33),
     {"quality": 90, "keep_rgb": True, "subsampling": 0, "adobe_transform": None}),
]


def cmyk(img):
    """CMYK with black where the colour is dark (k = 255 - max(r, g, b), c = max - r, ...):
    Pillow's own convert("CMYK") leaves k at 0, which would test nothing of it."""
    r, g, b = img.split()
    top = ImageChops.lighter(ImageChops.lighter(r, g), b)
    inks = [ImageChops.subtract(top, channel) for channel in (r, g, b)]
    return Image.merge("CMYK", inks + [ImageChops.invert(top)])


def set_adobe_transform(path, transform):
    """Rewrites the transform byte of Pillow's Adobe APP14 segment, or removes the segment."""
    data = path.read_bytes()
    at = data.index(b"\xff\xee")
    length = int.from_bytes(data[at + 2:at + 4], "big")
    assert data[at + 4:at + 9] == b"Adobe" and data[at + 15] == 0
    if transform is None:
        data = data[:at] + data[at + 2 + length:]
    else:
        data = data[:at + 15] + bytes([transform]) + data[at + 16:]
    path.write_bytes(data)


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
        transform = options.pop("adobe_transform", 0)
        img = Image.open(ROOT / "web/data/samples" / f"{sample}.png").convert("RGB")
        img = img.resize(size, Image.BICUBIC)
        img = cmyk(img) if mode == "CMYK" else img.convert(mode)
        path = OUT / f"{name}.jpg"
        img.save(path, **options)
        if transform != 0:
            set_adobe_transform(path, transform)
        record["files"][f"tests/data/jpeg/{name}.jpg"] = rgb_sha256(path)
    for path in sorted((ROOT / "tests/data/cifar10-jpeg").rglob("*.jpg")):
        record["files"][str(path.relative_to(ROOT))] = rgb_sha256(path)
    (OUT / "pillow.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
