"""Any folder of images as a classification dataset.

Two layouts are read:

* ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``: the given split;
* ``PATH/<class>/*``: one pool, split per class with a seeded stratified split
  (``test_fraction`` of each class held out as test).

Class names are the sub-folder names, sorted; files are those with an image suffix
(:data:`cnnlab.images.IMAGE_SUFFIXES`), sorted, so the file list is reproducible.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnnlab.data.labeled import ImageSplits, LabeledImages, stratified_split
from cnnlab.data.pets import DatasetNotFoundError
from cnnlab.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_split(folder: Path, classes: list[str]) -> LabeledImages:
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        sub = folder / name
        found = _images_in(sub) if sub.is_dir() else []
        paths.extend(found)
        labels.extend([label] * len(found))
    return LabeledImages(tuple(paths), tuple(labels), tuple(classes))


def load_image_folder(path: str | Path, *, test_fraction: float = 0.2, seed: int = 0) -> ImageSplits:
    """Read ``path`` (either layout above) as :class:`ImageSplits`."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist (expected {root}/<class>/*.jpg "
                                   f"or {root}/train/<class>/* and {root}/test/<class>/*)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = [d.name for d in _class_dirs(root / "train")]
        extra = sorted({d.name for d in _class_dirs(root / "test")} - set(classes))
        if extra:
            raise DatasetNotFoundError(f"{root}/test has classes missing from {root}/train: {', '.join(extra)}")
        train, test = _read_split(root / "train", classes), _read_split(root / "test", classes)
    else:
        classes = [d.name for d in _class_dirs(root)]
        pool = _read_split(root, classes)
        kept, held = stratified_split(pool.labels, test_fraction, seed)
        train, test = pool.subset(kept), pool.subset(held)
    if len(classes) < 2:
        raise DatasetNotFoundError(f"{root} needs at least two class sub-folders of images, found {len(classes)}")
    empty = [c for c, n in zip(classes, train.class_counts()) if n == 0]
    if empty:
        raise DatasetNotFoundError(f"no training images for classes {', '.join(empty)} under {root} "
                                   f"(image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(test) == 0:
        raise DatasetNotFoundError(f"no test images under {root}; add more images per class or a test/ folder")
    log.info("image folder %s: %d classes, %d train, %d test images", root, len(classes), len(train), len(test))
    return ImageSplits(f"folder-{root.resolve().name}", train, test)


def all_images(path: str | Path) -> tuple[LabeledImages | None, list[Path]]:
    """Every image under ``path``: (labelled images, unlabelled images).

    Class sub-folders (either layout above, train and test together) give the labelled images;
    image files directly in ``path`` (or in all of it, when it has no class sub-folders with
    images) are unlabelled. Raises :class:`DatasetNotFoundError` when there is no image at all.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    split_dirs = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    classes = sorted({d.name for s in split_dirs for d in _class_dirs(s)})
    parts = [_read_split(s, classes) for s in split_dirs]
    labelled = LabeledImages(tuple(p for part in parts for p in part.paths),
                             tuple(y for part in parts for y in part.labels), tuple(classes))
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not len(labelled):
        labelled, loose = None, _images_in(root)
    if labelled is None and not loose:
        raise DatasetNotFoundError(f"no image files under {root} (image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return labelled, loose
