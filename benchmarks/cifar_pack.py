"""Carry CIFAR-10 to a machine without internet in fewer bytes, and rebuild it byte-exact.

``pack`` turns each binary batch file of ``cifar-10-batches-bin/`` (10,000 records of one label byte
and a 32x32x3 image) into a lossless WebP mosaic of its images (100 x 100 tiles) and the labels in
a small file; ``unpack`` rebuilds the batch files from them, byte for byte, and checks every file
against the official MD5 sums (``cnnlab.data.cifar10``). The packed set is about two thirds of the
184 MB of binaries, in files of 20 MB or less, so it can travel in pieces where a transfer is
capped (the GPU checks in ``benchmarks/gpu_check.sh`` and ``recipe_search.py`` ran this way).

Usage: python benchmarks/cifar_pack.py pack DATA_ROOT PACKED [--files data_batch_1 ...]
       python benchmarks/cifar_pack.py unpack PACKED DATA_ROOT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.cifar10 import FOLDER, RECORD, TEST_FILES, TRAIN_FILES, problems

GRID = 100  # tiles per side of a mosaic: 10,000 images per batch file
FILES = tuple(f.removesuffix(".bin") for f in TRAIN_FILES + TEST_FILES)


def to_mosaic(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's bytes -> (labels (N,), mosaic (GRID*32, GRID*32, 3) uint8)."""
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    if len(records) != GRID * GRID:
        raise ValueError(f"expected {GRID * GRID} records, found {len(records)}")
    images = records[:, 1:].reshape(GRID, GRID, 3, 32, 32)  # rows, cols, channel, y, x
    return records[:, 0].copy(), images.transpose(0, 3, 1, 4, 2).reshape(GRID * 32, GRID * 32, 3)


def from_mosaic(labels: np.ndarray, mosaic: np.ndarray) -> bytes:
    """The inverse of :func:`to_mosaic`."""
    images = mosaic.reshape(GRID, 32, GRID, 32, 3).transpose(0, 2, 4, 1, 3).reshape(GRID * GRID, -1)
    return np.concatenate([labels[:, None], images], axis=1).tobytes()


def pack(root: Path, packed: Path, files: tuple[str, ...] = FILES) -> None:
    packed.mkdir(parents=True, exist_ok=True)
    for name in files:
        labels, mosaic = to_mosaic((root / FOLDER / f"{name}.bin").read_bytes())
        Image.fromarray(mosaic).save(packed / f"{name}.webp", lossless=True, quality=100, method=6)
        (packed / f"{name}.labels").write_bytes(labels.tobytes())
        print(f"{name}: {(packed / f'{name}.webp').stat().st_size / 1e6:.1f} MB", flush=True)
    meta = root / FOLDER / "batches.meta.txt"
    if meta.is_file():
        (packed / meta.name).write_bytes(meta.read_bytes())


def unpack(packed: Path, root: Path) -> list[str]:
    """Rebuild every packed batch file under ``root``; the names of those whose MD5 is wrong."""
    out = root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    webps = sorted(packed.glob("*.webp"))
    for webp in webps:
        labels = np.frombuffer((packed / f"{webp.stem}.labels").read_bytes(), np.uint8)
        (out / f"{webp.stem}.bin").write_bytes(from_mosaic(labels, np.asarray(Image.open(webp).convert("RGB"))))
    if (packed / "batches.meta.txt").is_file():
        (out / "batches.meta.txt").write_bytes((packed / "batches.meta.txt").read_bytes())
    return [f.removesuffix(".bin") for f in problems(out, tuple(f"{w.stem}.bin" for w in webps))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack")
    p.add_argument("root", type=Path)
    p.add_argument("packed", type=Path)
    p.add_argument("--files", nargs="+", default=FILES, choices=FILES)
    u = sub.add_parser("unpack")
    u.add_argument("packed", type=Path)
    u.add_argument("root", type=Path)
    args = ap.parse_args()
    if args.verb == "pack":
        pack(args.root, args.packed, tuple(args.files))
        return 0
    bad = unpack(args.packed, args.root)
    print("MD5 wrong: " + ", ".join(bad) if bad else "all files match the official MD5 sums")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
