"""Small made-up data sets for the tiny (smoke-test) profile: written once, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.runs import atomic_write

COLOURS = ((220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30))


def image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 64, seed: int = 0) -> Path:
    """``root/train/<class>/*.png`` and ``root/test/<class>/*.png``: each class a colour with a shape, plus noise."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for c in range(classes):
        for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(128, 30, (size, size, 3))  # H, W, 3 noise background
                lo, hi = sorted(rng.integers(size // 8, size - size // 8, 2))
                img[lo:hi + 4, lo:hi + 4] = COLOURS[c % len(COLOURS)]
                pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
                atomic_write(folder / f"{i}.png", lambda p, pil=pil: pil.save(p, format="PNG"))
    done.touch()
    return root
