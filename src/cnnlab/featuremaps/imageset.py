"""The image set over which a channel's preferred inputs are looked for.

By default: the Oxford-IIIT Pet images under the data root (every listed image, trainval and
test, labelled by breed) plus the built-in photos (the peppers photo when present, and
scikit-image's bundled ``coffee``, ``chelsea``, ``astronaut`` and ``rocket``), which carry no
label. ``--dataset DIR`` takes any folder instead (class sub-folders give labels, see
:func:`cnnlab.data.folders.all_images`). Class statistics use the labelled images only. By default
at most 20 images per class are used (:func:`balanced_subset`, drawn with the run's seed): on the
shared Pets copy that is 535 of 1,083 images, all 37 breeds, about half the cold pass (see
benchmarks/RESULTS.md); ``--max-per-class 0`` takes them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data import peppers_path

log = logging.getLogger(__name__)

BUILTIN_PHOTOS = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")  # in scikit-image's data folder


@dataclass(frozen=True)
class ImageSet:
    """Image files; ``labels[i]`` indexes ``classes``, or is -1 for an unlabelled image."""

    name: str
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> np.ndarray:
        """Boolean mask (N,) of the images with a label."""
        return np.asarray(self.labels, dtype=np.int64) >= 0

    @property
    def has_classes(self) -> bool:
        """At least two classes among the labelled images: class statistics mean something."""
        return len(set(y for y in self.labels if y >= 0)) >= 2

    def class_of(self, i: int) -> str:
        return self.classes[self.labels[i]] if self.labels[i] >= 0 else "-"


def builtin_photos(data_root: str | Path | None = None) -> list[Path]:
    """The peppers photo (when present) and scikit-image's bundled photos."""
    from skimage import data as skdata

    found = [p for p in (peppers_path(data_root),) if p is not None]
    return found + [Path(skdata.data_dir) / name for name in BUILTIN_PHOTOS if (Path(skdata.data_dir) / name).is_file()]


def pets_set(data_root: str | Path | None = None) -> ImageSet | None:
    """Every listed Oxford-IIIT Pet image under the data root (None when absent; nothing is downloaded)."""
    from cnnlab.data.pets import DatasetNotFoundError, load_pets

    try:
        splits = load_pets(data_root, download=False)
    except DatasetNotFoundError as exc:
        log.warning("no Oxford-IIIT Pet images for the channel statistics: %s", str(exc).split(". ")[0])
        return None
    paths = splits.train.paths + splits.test.paths
    return ImageSet("oxford-pets", paths, splits.train.labels + splits.test.labels, splits.classes)


def folder_set(path: str | Path) -> ImageSet:
    """Every image of a folder (see :func:`cnnlab.data.folders.all_images`)."""
    from cnnlab.data.folders import all_images

    labelled, loose = all_images(path)
    paths = (labelled.paths if labelled else ()) + tuple(loose)
    labels = (labelled.labels if labelled else ()) + (-1,) * len(loose)
    return ImageSet(f"folder-{Path(path).resolve().name}", paths, labels, labelled.classes if labelled else ())


def balanced_subset(images: ImageSet, per_class: int, seed: int = 0) -> ImageSet:
    """At most ``per_class`` images of each class, drawn with ``seed``; unlabelled images all kept; file order kept."""
    labels = np.asarray(images.labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keep = set(np.flatnonzero(labels < 0).tolist())
    for y in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == y)
        keep.update(rng.permutation(idx)[:per_class].tolist())
    if len(keep) == len(images):
        return images
    order = sorted(keep)
    return ImageSet(f"{images.name}-{per_class}pc-seed{seed}", tuple(images.paths[i] for i in order),
                    tuple(images.labels[i] for i in order), images.classes)


def with_photos(images: ImageSet | None, photos: list[Path]) -> ImageSet:
    """``images`` plus the unlabelled ``photos`` (files already in the set are not added twice)."""
    images = images or ImageSet("photos", (), (), ())
    have = {p.resolve() for p in images.paths}
    extra = tuple(p for p in photos if p.resolve() not in have)
    name = f"{images.name}+photos" if images.paths and extra else images.name
    return ImageSet(name, images.paths + extra, images.labels + (-1,) * len(extra), images.classes)
