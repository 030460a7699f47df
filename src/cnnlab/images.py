"""Robust image loading: every file a user may have becomes an upright 8-bit RGB image.

Handles JPEG, PNG, GIF (first frame), BMP, TIFF and WebP; grayscale, palette, RGBA/LA and
palette transparency (composited onto white), CMYK, 16-bit and 32-bit integer/float modes;
EXIF orientation. Anything unusable raises :class:`~cnnlab.errors.ImageError` with the file
and a one-line reason: missing path, zero bytes, not an image, truncated or corrupt data,
decompression-bomb-sized images.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cnnlab.errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (about 0.25 GB at 24 bit)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit integer or float single-channel images to 8-bit ``L``."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or (arr.dtype == np.uint16):
        arr8 = (arr.astype(np.float64) / 65535.0 * 255.0).round()
    elif img.mode == "I":
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0  # PNG 16-bit often opens as "I"
        arr8 = arr.astype(np.float64) / hi * 255.0
    else:  # "F": assume [0, 1] floats when they fit, else stretch
        arr = arr.astype(np.float64)
        lo, hi = (0.0, 1.0) if arr.min(initial=0) >= 0 and arr.max(initial=0) <= 1 else (arr.min(), arr.max())
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


def load_image(path: str | Path) -> Image.Image:
    """Load ``path`` as an upright 8-bit RGB PIL image or raise :class:`ImageError`."""
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
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
