"""Parsing what the user types: target classes, ε as a fraction, and the default photos.

Targets are ImageNet indices (``812``) or class names from the weights' own
``meta["categories"]`` (``'space shuttle'``, case-insensitive). ε is a number or a fraction of
grey levels (``2/255``).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from fractions import Fraction

from PIL import Image

from cnnlab.data import peppers_path
from cnnlab.errors import CnnlabError

log = logging.getLogger(__name__)

SPACE_SHUTTLE = 812


def parse_fraction(text: str | float) -> float:
    """``"2/255"`` -> 0.00784..., ``"0.01"`` -> 0.01; ValueError with a hint otherwise."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number or fraction: {text!r} (examples: 2/255, 0.008)") from None


def parse_class(text: str | int, categories: list[str]) -> int:
    """An ImageNet class index from ``812`` or ``'space shuttle'``; CnnlabError if unknown."""
    s = str(text).strip()
    n = len(categories)
    if s.lstrip("+-").isdigit():
        idx = int(s)
        if not 0 <= idx < n:
            raise CnnlabError(f"target class {idx} is outside 0-{n - 1}")
        return idx
    lowered = [c.lower() for c in categories]
    if s.lower() in lowered:
        return lowered.index(s.lower())
    close = difflib.get_close_matches(s.lower(), lowered, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(categories[lowered.index(c)]) for c in close)}?" if close else ""
    raise CnnlabError(f"unknown class name {s!r}{hint} (give an index 0-{n - 1} or an exact name; "
                      "`cnnlab predict` prints names)")


@dataclass(frozen=True)
class Photo:
    """An image to attack: its name, where it came from, and (for built-ins) the truth."""

    name: str
    source: str  # a path, or "skimage.data.chelsea" for built-ins
    image: Image.Image
    default_target: int = SPACE_SHUTTLE
    true_classes: tuple[int, ...] = ()  # accepted correct top-1 classes (empty: unknown)


def _skimage(name: str) -> Image.Image:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:  # grayscale photos: replicate to RGB
        import numpy as np

        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr)


# Built-in photos that ship inside scikit-image, each checked against MobileNetV2
# (IMAGENET1K_V1) top-1: (name, loader, accepted true classes, default target).
# chelsea: Egyptian cat 0.72 (tabby/tiger cat also right); coffee: espresso 0.99;
# camera (the "cameraman"): tripod 0.98.
BUILTINS = {
    "chelsea": ("skimage.data.chelsea", (281, 282, 285), 954),  # tabby/tiger/Egyptian cat -> banana
    "coffee": ("skimage.data.coffee", (967, 968), SPACE_SHUTTLE),  # espresso/cup -> space shuttle
    "camera": ("skimage.data.camera", (872,), 755),  # tripod -> radio telescope
}
# Targets are unrelated to the photo's class. The grayscale cameraman gets a target that can be
# reached through brightness alone: the robustness check's grayscale undoes any colour noise, so
# a target defined by colour would fail it there.
PEPPERS_TRUE = (945,)  # bell pepper


def builtin_photo(name: str) -> Photo:
    source, truth, target = BUILTINS[name]
    return Photo(name, source, _skimage(source.rsplit(".", 1)[1]), target, truth)


def default_targets() -> dict[str, int]:
    """Each default photo's target class, by photo name (peppers included)."""
    return {"peppers": SPACE_SHUTTLE, **{name: target for name, (_, _, target) in BUILTINS.items()}}


def default_photos() -> list[Photo]:
    """Peppers (when the shared copy exists) plus the three built-in photos."""
    from cnnlab.images import load_image

    photos = []
    path = peppers_path()  # cnnlab.data: under the data root, else the shared copy
    if path is not None:
        photos.append(Photo("peppers", str(path), load_image(path), default_targets()["peppers"], PEPPERS_TRUE))
    else:
        log.warning("peppers.png not found under ../shared/data; attacking the built-in photos only")
    return photos + [builtin_photo(n) for n in BUILTINS]


EXCLUDE_TOP = 5  # a random target is never one of the clean photo's top-5 classes


def random_target(p_clean, rng) -> tuple[int, list[int]]:
    """(a target drawn uniformly over the classes outside the clean top-5, that top-5).

    ``p_clean`` is the clean photo's probability vector; ``rng`` a ``numpy.random.Generator``
    seeded by the caller (``cnnlab attack --target random`` uses the run's seed), drawn once per
    photo in order.
    """
    import numpy as np

    p = np.asarray(p_clean, dtype=np.float64)
    top = [int(i) for i in np.argsort(-p, kind="stable")[:EXCLUDE_TOP]]
    candidates = np.setdiff1d(np.arange(p.size), top)
    return int(rng.choice(candidates)), top
