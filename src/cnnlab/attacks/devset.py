"""The attacks' development set: photos nobody picked for the attack, with seeded random targets.

Twelve photos from public sources installable here: five scikit-image data photos (astronaut,
coffee, chelsea, rocket, the cameraman), six Oxford-IIIT Pet images drawn by a fixed seed from
the copy under the data root, and peppers. Each photo's target is drawn by
:func:`cnnlab.attacks.targets.random_target` with a fixed seed (uniform over the 1000 classes
outside the clean top-5), never picked by hand. ``benchmarks/bench_attack_devset.py`` runs the
attacks on it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cnnlab.attacks.targets import Photo, _skimage
from cnnlab.data import data_root, peppers_path
from cnnlab.errors import CnnlabError
from cnnlab.images import load_image

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")
PETS = 6  # Pets images in the set
PHOTO_SEED = 2026  # draws the Pets images
TARGET_SEED = 0  # draws the targets


def pets_images(root: Path, n: int = PETS, seed: int = PHOTO_SEED) -> list[Path]:
    """``n`` Oxford-IIIT Pet JPEGs drawn by ``seed`` from ``root/oxford-iiit-pet/images``."""
    folder = root / "oxford-iiit-pet" / "images"
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(files) < n:
        raise CnnlabError(f"the development set needs {n} Oxford-IIIT Pet images under {folder}, found {len(files)}")
    pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
    return [files[i] for i in sorted(pick)]


def dev_photos(root: str | Path | None = None) -> list[Photo]:
    """The development set's photos (targets not drawn yet: that needs the model's clean top-5)."""
    base = data_root(root)
    photos = [Photo(name, f"skimage.data.{name}", _skimage(name)) for name in SKIMAGE_PHOTOS]
    photos += [Photo(p.stem, str(p), load_image(p)) for p in pets_images(base)]
    pep = peppers_path(root)
    if pep is None:
        raise CnnlabError(f"the development set needs peppers.png under {base}")
    return photos + [Photo("peppers", str(pep), load_image(pep))]
