"""The inputs the report's experiments share: the photo, the data root."""

from __future__ import annotations

from pathlib import Path

from cnnlab.images import default_photo
from cnnlab.runs import atomic_write


def report_photo(root: Path | None, work: Path, photo: Path | None = None) -> tuple[Path, str]:
    """(path, name): ``photo`` when given, else ``peppers.png`` under the data root when present,
    else the built-in photo (written once under ``work/inputs/``)."""
    if photo is not None:
        return Path(photo).resolve(), Path(photo).stem
    path, img, name = default_photo(root)
    if path is not None:
        return Path(path).resolve(), name
    dest = work / "inputs" / f"{name}.png"
    if not dest.exists():
        atomic_write(dest, lambda p: img.save(p, format="PNG"))
    return dest.resolve(), name
