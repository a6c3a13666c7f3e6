#!/usr/bin/env python3
"""Writes small copies of torchvision's CIFAR layouts for tests/data.rs: cifar-10-batches-py/
(what torchvision.datasets.CIFAR10(root, download=True) unpacks from cifar-10-python.tar.gz) and
../cifar-100-python/ (CIFAR100's, from cifar-100-python.tar.gz). Needs numpy only. Run from the
repository root: python3 tests/data/cifar-10-batches-py/make.py

  data_batch_1 .. data_batch_5   2 images each: the first 10 of the bundled training images
                                 (web/data/train.bin), in order
  test_batch                     the first 5 bundled test images (web/data/test.bin)
  batches.meta                   label_names, num_cases_per_batch, num_vis
  ../cifar-100-python/train      the same 10 training images with fine label
                                 (10 x label + i) % 100 for the i-th, coarse label fine // 5
  ../cifar-100-python/test       the same 5 test images, labelled the same way
  ../cifar-100-python/meta       fine_label_names class_00 ... class_99, coarse_label_names

Each file is a pickle as the archives' were written (Python 2's cPickle, protocol 2): a dict
with byte-string keys b"batch_label", b"labels" (CIFAR-100: b"fine_labels" and
b"coarse_labels"; lists of ints), b"data" (a numpy uint8 array of N x 3072: 1024 R, 1024 G,
1024 B bytes an image, row by row) and b"filenames". Python 2's str was bytes: it is written
with SHORT_BINSTRING and BINSTRING, which Python 3 reads back with encoding="bytes" (or
"latin1", as torchvision does). Each file is then read back both ways and checked against the
records it came from.
"""
import pickle
import struct
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent
DATA = OUT.parents[2] / "web" / "data"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: str and bytes as byte strings, and numpy's classes
    under the module names of numpy 1 (numpy.core.multiarray), which the archive names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_byte_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_byte_string
    dispatch[str] = save_byte_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def records(name, count):
    raw = np.frombuffer((DATA / name).read_bytes(), dtype=np.uint8).reshape(-1, 3073)[:count]
    return [int(l) for l in raw[:, 0]], np.ascontiguousarray(raw[:, 1:])


def write(name, obj):
    with open(OUT / name, "wb") as f:
        Python2Pickler(f, protocol=2).dump(obj)


def check(name, labels, data, labels_key="labels"):
    for encoding in ["bytes", "latin1"]:
        with open(OUT / name, "rb") as f:
            d = pickle.load(f, encoding=encoding)
        key = (lambda k: k.encode()) if encoding == "bytes" else (lambda k: k)
        assert d[key(labels_key)] == labels, name
        assert d[key("data")].dtype == np.uint8 and np.array_equal(d[key("data")], data), name


def cifar100():
    """The same images as CIFAR-100's, in ../cifar-100-python."""
    (OUT.parent / "cifar-100-python").mkdir(exist_ok=True)
    for split, source, count in [("train", "train.bin", 10), ("test", "test.bin", 5)]:
        labels, data = records(source, count)
        fine = [(10 * l + i) % 100 for i, l in enumerate(labels)]
        batch = {
            b"filenames": [f"{split}_{i}.png".encode() for i in range(count)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": data,
        }
        name = f"../cifar-100-python/{split}"
        write(name, batch)
        check(name, fine, data, "fine_labels")
    names = {
        b"fine_label_names": [f"class_{k:02d}".encode() for k in range(100)],
        b"coarse_label_names": [f"superclass_{k:02d}".encode() for k in range(20)],
    }
    write("../cifar-100-python/meta", names)


def main():
    labels, data = records("train.bin", 10)
    for k in range(5):
        part = slice(2 * k, 2 * k + 2)
        batch = {
            b"batch_label": f"training batch {k + 1} of 5".encode(),
            b"labels": labels[part],
            b"data": data[part],
            b"filenames": [f"image_{i}.png".encode() for i in range(2 * k, 2 * k + 2)],
        }
        write(f"data_batch_{k + 1}", batch)
        check(f"data_batch_{k + 1}", labels[part], data[part])
    labels, data = records("test.bin", 5)
    test = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"test_{i}.png".encode() for i in range(5)],
    }
    write("test_batch", test)
    check("test_batch", labels, data)
    meta = {b"num_cases_per_batch": 2, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    write("batches.meta", meta)
    with open(OUT / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"] == CLASSES


if __name__ == "__main__":
    main()
    cifar100()
