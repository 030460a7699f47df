"""Features cached on disk as safetensors, keyed by everything that determines them.

The key is a SHA-256 over: model name, weights (enum name and file), the evaluation
transform, the requested precision, and the data set's file list (path, size, mtime, label).
The file also stores a SHA-256 of the feature bytes. On load, a missing file is a miss; a
file that cannot be parsed, whose key differs (stale) or whose checksum fails (corrupted) is
reported, removed and rebuilt by the caller; it is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.runs import atomic_write

log = logging.getLogger(__name__)

CACHE_ENV = "CNNLAB_CACHE_DIR"
FORMAT_VERSION = "1"


def default_cache_dir() -> Path:
    """``$CNNLAB_CACHE_DIR`` or ``~/.cache/cnnlab/features``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnlab" / "features"


def file_list_record(paths: Sequence[Path], labels: Sequence[int]) -> list[list]:
    """(absolute path, bytes, mtime in ns, label) per file: changes when any file changes."""
    rows = []
    for p, y in zip(paths, labels):
        st = Path(p).stat()
        rows.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns, int(y)])
    return rows


def describe(model, transform: dict, precision: str, paths: Sequence[Path], labels: Sequence[int]) -> dict:
    """What the features depend on (the key is a hash of this)."""
    weights = model.spec.weights
    return {
        "format": FORMAT_VERSION,
        "model": model.spec.name,
        "weights": f"{type(weights).__name__}.{weights.name}",
        "weights_file": Path(weights.url).name,
        "feature_dim": int(model.feature_dim),
        "transform": transform,
        "precision": precision,
        "files": file_list_record(paths, labels),
    }


def key_of(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _digest(features: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256(features.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _changed_parts(old: dict, new: dict) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def cache_path(cache_dir: Path, dataset: str, split: str, model_name: str, precision: str = "auto") -> Path:
    """One file per data set, split, model and requested precision (so fp32 and auto runs coexist);
    anything else that changes (weights, transform, files) makes the file stale."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}-{split}-{model_name}-{precision}")
    return Path(cache_dir) / f"{slug}.safetensors"


@dataclass
class CacheLookup:
    """Outcome of :func:`load`: ``status`` is hit, missing, stale or corrupted."""

    status: str
    features: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    meta: dict | None = None
    reason: str = ""


def load(path: Path, description: dict) -> CacheLookup:
    """Read cached features if (and only if) they match ``description`` and their checksum."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        return CacheLookup("missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        stored = json.loads(meta.get("description", "null"))
        if meta.get("key") != key_of(description):
            changed = _changed_parts(stored or {}, description)
            return CacheLookup("stale", reason=f"changed: {', '.join(changed) or 'key'}")
        tensors = load_file(str(path))
        feats, labels = tensors["features"], tensors["labels"]
        if _digest(feats, labels) != meta.get("sha256"):
            return CacheLookup("corrupted", reason="checksum mismatch")
        if feats.shape != (len(description["files"]), description["feature_dim"]):
            return CacheLookup("corrupted", reason=f"shape {tuple(feats.shape)}")
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        return CacheLookup("corrupted", reason=f"{type(exc).__name__}: {exc}")
    return CacheLookup("hit", feats, labels, json.loads(meta.get("extra", "{}")))


def save(path: Path, description: dict, features: torch.Tensor, labels: torch.Tensor, extra: dict | None = None) -> Path:
    """Write features (N, D) float32 and labels (N,) int64 atomically with key and checksum."""
    from safetensors.torch import save_file

    features = features.detach().cpu().float().contiguous()
    labels = labels.detach().cpu().long().contiguous()
    meta = {
        "key": key_of(description),
        "sha256": _digest(features, labels),
        "description": json.dumps(description, sort_keys=True),
        "extra": json.dumps(extra or {}),
    }
    atomic_write(path, lambda p: save_file({"features": features, "labels": labels}, str(p), metadata=meta))
    log.info("cached features in %s", path)
    return Path(path)


def load_or_build(path: Path | None, description: dict, build) -> tuple[torch.Tensor, torch.Tensor, dict, str]:
    """Cached (features, labels, extra) or ``build()`` -> (features, labels, extra) saved to ``path``.

    Returns the status too: ``hit``, ``disabled`` (no path), or what made it rebuild
    (``missing``, ``stale``, ``corrupted``).
    """
    if path is None:
        feats, labels, extra = build()
        return feats, labels, extra, "disabled"
    found = load(path, description)
    if found.status == "hit":
        log.info("features from cache %s", path)
        return found.features, found.labels, found.meta or {}, "hit"
    if found.status != "missing":
        log.warning("feature cache %s is %s (%s): rebuilding it", path, found.status, found.reason)
        Path(path).unlink(missing_ok=True)
    feats, labels, extra = build()
    save(path, description, feats, labels, extra)
    return feats, labels, extra, found.status
