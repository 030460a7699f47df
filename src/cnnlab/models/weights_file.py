"""Pretrained weights files in the torch hub cache: downloaded if missing, hash-checked, read safely.

torchvision's ``Weights.get_state_dict`` reads the cached file with ``weights_only=False`` (a
pickle that runs code) and checks no hash of a file already in the cache. Here a file is checked
before it is read: against its full SHA-256 when :data:`PINNED_SHA256` has it (the file that
``make setup`` installs), otherwise against the SHA-256 prefix torchvision puts in the name
(``resnet18-f37072fd.pth`` -> ``f37072fd``); then it is read with
``torch.load(..., weights_only=True)``, which unpickles tensors and plain containers only.

A file is hashed once per process, and again if its size, mtime or inode change.
"""

from __future__ import annotations

import functools
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import WeightsIntegrityError, WeightsUnavailableError
from cnnlab.models import offline_weights
from cnnlab.progress import progress_enabled

log = logging.getLogger(__name__)

# Full SHA-256 of the weights files this project installs; every other file has only the
# 8+ hex digits of its name (torchvision's convention).
PINNED_SHA256: dict[str, str] = {offline_weights.FILENAME: offline_weights.SHA256}
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")  # "resnet18-f37072fd.pth" -> "f37072fd"


def expected_sha256(filename: str) -> str:
    """The full pinned SHA-256 of ``filename``, else the prefix in its name; ValueError if none."""
    if filename in PINNED_SHA256:
        return PINNED_SHA256[filename]
    m = _NAME_HASH.search(filename)
    if m is None:
        raise ValueError(f"{filename}: no SHA-256 pinned and none in the name (expected NAME-HASH.pth)")
    return m.group(1)


def restore_hint(filename: str, url: str) -> str:
    """How to replace a bad ``filename`` (completes 'To restore it, ...')."""
    if filename == offline_weights.FILENAME:
        return offline_weights.RESTORE_HINT
    return f"delete it and run again online (it is downloaded from {url}), or copy the original file there"


def missing_hint(filename: str, url: str) -> str:
    """How to get a missing ``filename`` (completes 'To get it, ...')."""
    if filename == offline_weights.FILENAME:
        return "run `make setup` (it installs this file offline)"
    return f"download {url} on a machine with internet and place it at that path (or set TORCH_HOME)"


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """SHA-256 of ``path``; the stat fields key the cache so a changed file is hashed again."""
    log.debug("hashing %s (%d bytes)", path, size)
    return offline_weights.sha256_of(Path(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of the file at ``path``, computed once per process while the file is unchanged."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def verify(path: Path, url: str) -> None:
    """Raise :class:`WeightsIntegrityError` unless ``path``'s SHA-256 matches what is expected."""
    expected = expected_sha256(path.name)
    digest = file_sha256(path)
    if not digest.startswith(expected):
        what = "the pinned SHA-256" if len(expected) == 64 else "the SHA-256 prefix in its name"
        raise WeightsIntegrityError(
            f"weights file {path} has SHA-256 {digest[:16]}..., not {what} {expected[:16]}"
            f"{'...' if len(expected) > 16 else ''}: it is corrupt or was replaced, and was not loaded. "
            f"To restore it, {restore_hint(path.name, url)}."
        )


def download(url: str, path: Path) -> None:
    """Download ``url`` to ``path`` (atomically; the name's hash prefix is checked on the way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, path)
    prefix = _NAME_HASH.search(path.name)
    torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix.group(1) if prefix else None,
                                   progress=progress_enabled())  # torch's own bar, hidden like ours


def _load_error_reason(exc: BaseException) -> str:
    """The gist of a torch.load error, one line: the unpickler's own complaint when there is one
    (torch's message around it advises weights_only=False, which is what must not happen here)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\.\s|\n|$)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (m.group(1) if m else lines[0] if lines else type(exc).__name__)[:200]


def read_state_dict(path: Path, url: str) -> dict[str, torch.Tensor]:
    """Check ``path``'s hash, then load it with ``weights_only=True``; errors are one line."""
    try:
        verify(path, url)
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise WeightsIntegrityError(
            f"weights file {path} is not a plain file of tensors (torch.load with weights_only=True "
            f"refused it: {_load_error_reason(exc)}); nothing in it was run. "
            f"To restore it, {restore_hint(path.name, url)}."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsIntegrityError(f"weights file {path} holds a {type(state).__name__}, not a state dict "
                                    f"of tensors. To restore it, {restore_hint(path.name, url)}.")
    return state


def fetch_state_dict(url: str, path: Path, label: str) -> dict[str, torch.Tensor]:
    """The state dict at ``path`` (weights of ``label``), downloaded from ``url`` first if missing.

    A failed download raises :class:`WeightsUnavailableError` naming the file and what to do.
    """
    if not path.is_file():
        log.info("weights %s are not in %s; trying to download them", path.name, path.parent)
        try:
            download(url, path)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
            raise WeightsUnavailableError(
                f"pretrained weights for {label} are unavailable: expected the file {path} "
                f"({exc.__class__.__name__}: {exc}). To get it, {missing_hint(path.name, url)}."
            ) from None
    return read_state_dict(path, url)
