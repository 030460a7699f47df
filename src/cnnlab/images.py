"""Robust image loading: every file a user may have becomes an upright 8-bit RGB image.

Handles JPEG, PNG, GIF (first frame), BMP, TIFF and WebP; grayscale, palette, RGBA/LA and
palette transparency (composited onto white), CMYK, 16-bit and 32-bit integer/float modes;
EXIF orientation. Anything unusable raises :class:`~cnnlab.errors.ImageError` with the file
and a one-line reason: missing path, zero bytes, not an image, truncated or corrupt data,
decompression-bomb-sized images.

16-bit images keep their range: a value v of the 16-bit full scale becomes round(v / 257),
the 8-bit value at the same fraction of full scale (what image editors and torchvision's
``to_dtype(..., scale=True)`` do). Nothing is clipped or stretched, so a dark image stays
exactly as dark (4000 of 65535 becomes 16 of 255) and levels one 8-bit step (257) apart
stay distinct. Pillow opens 16-bit PGM/PPM and signed 16-bit TIFF files as 32-bit ``I``:
those are read on the same 16-bit scale whenever their values fit in 0-65535, and stretched
from their minimum to their maximum only when they do not (there is no full scale to use).
Pillow reduces 16-bit RGB(A) files to 8 bits itself (keeping the high byte) when it opens them.

Pillow's decompression-bomb limit is set to :data:`MAX_PIXELS` only while a file is being
read; its global settings are restored afterwards.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cnnlab.errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (about 0.25 GB at 24 bit)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit integer or float single-channel images to 8-bit ``L``.

    Integers are read on the 16-bit full scale (see the module docstring); ``F`` images are
    taken as [0, 1] when they fit, else stretched from their minimum to their maximum.
    """
    arr = np.asarray(img).astype(np.float64)
    lo, hi = arr.min(initial=0), arr.max(initial=0)
    if img.mode.startswith("I") and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    arr8 = (arr - lo) / max(hi - lo, 1e-12) * 255.0
    return Image.fromarray(np.clip(arr8, 0, 255).round().astype(np.uint8), mode="L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited onto ``background``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("LA")
    elif img.mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode == "CMYK":
        return img.convert("RGB")
    return img.convert("RGB")


@contextmanager
def _pillow_limits() -> Iterator[None]:
    """Pillow's pixel limit at :data:`MAX_PIXELS` and truncated files refused, then restored."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_PIXELS, False
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def load_image(path: str | Path) -> Image.Image:
    """Load ``path`` as an upright 8-bit RGB PIL image or raise :class:`ImageError`."""
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with _pillow_limits(), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)  # first frame of animations
                img.load()
                fmt = img.format
                img = ImageOps.exif_transpose(img) or img
                rgb = to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"image too large (decompression-bomb guard, limit {MAX_PIXELS:,} px): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"truncated or corrupt image data ({exc})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(path, "image has no pixels")
    log.debug("loaded %s (%s, %dx%d)", path, fmt, rgb.width, rgb.height)
    return rgb


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Folders become their image files (sorted, by suffix); files are kept as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("%s: folder holds no image files (%s)", p, ", ".join(sorted(IMAGE_SUFFIXES)))
            out.extend(found)
        else:
            out.append(p)
    return out


def pil_to_tensor(img: Image.Image):
    """RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    import torch

    arr = np.asarray(img, dtype=np.uint8)  # H, W, 3
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def save_png(tensor, path: str | Path) -> Path:
    """Save a (3, H, W) tensor in [0, 1] as a lossless 8-bit PNG, atomically."""
    from cnnlab.runs import atomic_write

    arr = (tensor.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    img = Image.fromarray(arr, mode="RGB")
    return atomic_write(path, lambda p: img.save(p, format="PNG"))


def default_photo(data_root: str | Path | None = None) -> tuple[Path | None, Image.Image, str]:
    """The demo photo: peppers when present (see :func:`cnnlab.data.peppers_path`), else
    scikit-image's ``coffee``. Returns (path or None, image, name).
    """
    from cnnlab.data import peppers_path

    path = peppers_path(data_root)
    if path is not None:
        return path, load_image(path), "peppers"
    from skimage import data as skdata

    return None, Image.fromarray(skdata.coffee()), "coffee"
