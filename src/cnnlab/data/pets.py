"""Oxford-IIIT Pet (37 cat and dog breeds) through torchvision's ``OxfordIIITPet``.

The official split is ``trainval`` (3,680 images) / ``test`` (3,669 images). torchvision
downloads the archives for users who are online; otherwise point ``--data-root`` (or
``$CNNLAB_DATA_ROOT``) at a folder holding ``oxford-iiit-pet/images`` and
``oxford-iiit-pet/annotations``. Decoding is left to :func:`cnnlab.images.load_image`, which
copes with the release's odd files (``Abyssinian_34.jpg`` is a GIF, ``Abyssinian_5.jpg`` a PNG)
where torchvision's own ``Image.open(...).convert`` would not composite transparency.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnnlab.data import data_root
from cnnlab.data.labeled import ImageSplits, LabeledImages
from cnnlab.errors import CnnlabError

log = logging.getLogger(__name__)

FOLDER = "oxford-iiit-pet"
SPLITS = ("trainval", "test")
NUM_CLASSES = 37


class DatasetNotFoundError(CnnlabError):
    """A dataset is neither on disk nor downloadable."""


def _missing_message(root: Path, reason: str) -> str:
    base = root / FOLDER
    return (
        f"Oxford-IIIT Pet not found under {base} ({reason}). It needs {base}/images/*.jpg and "
        f"{base}/annotations/{{trainval,test}}.txt. Either run online with --download (the "
        f"default) so torchvision fetches it, copy the unpacked images.tar.gz and "
        f"annotations.tar.gz there, or pass --data-root DIR (or set CNNLAB_DATA_ROOT) to the "
        f"folder that contains {FOLDER}/."
    )


def _class_names(labelled_ids: list[tuple[str, int]]) -> list[str]:
    """37 breed names indexed by label, from image ids such as ``american_bulldog_12``."""
    names = {label: " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))
             for image_id, label in labelled_ids}
    return [names.get(i, f"class {i + 1}") for i in range(NUM_CLASSES)]


def load_pets(root: str | Path | None = None, *, download: bool = True) -> ImageSplits:
    """The official trainval/test split as :class:`ImageSplits` (labels 0..36).

    ``root`` is resolved by :func:`cnnlab.data.data_root`; the data sit in ``root/oxford-iiit-pet``.
    Raises :class:`DatasetNotFoundError` saying where the files must go when they are absent
    and cannot be downloaded.
    """
    from torchvision.datasets import OxfordIIITPet

    root = data_root(root)
    splits = {}
    for split in SPLITS:
        try:
            splits[split] = OxfordIIITPet(root, split=split, download=download)
        except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True"
            raise DatasetNotFoundError(_missing_message(root, str(exc).split(".")[0])) from None
        except OSError as exc:  # URLError (offline), permission or disk errors while downloading
            raise DatasetNotFoundError(_missing_message(root, f"download failed: {exc}")) from None
    # OxfordIIITPet keeps (path, label) in _images/_labels; its `classes` list is built from the
    # breeds present in one split only, so the names are rebuilt here from both splits.
    ids = [(p.stem, y) for ds in splits.values() for p, y in zip(ds._images, ds._labels)]
    classes = tuple(_class_names(ids))
    parts = {}
    for split, ds in splits.items():
        paths = tuple(Path(p) for p in ds._images)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} images listed in {root / FOLDER}/annotations/{split}.txt are missing "
                f"(first: {missing[0]}); re-download or fix the copy under {root / FOLDER}"
            )
        parts[split] = LabeledImages(paths, tuple(int(y) for y in ds._labels), classes)
    log.info("Oxford-IIIT Pet at %s: %d trainval, %d test images", root / FOLDER,
             len(parts["trainval"]), len(parts["test"]))
    return ImageSplits("oxford-pets", parts["trainval"], parts["test"])
