"""Features cached on disk as safetensors, keyed by everything that determines them.

The key is a SHA-256 over a *description* of what the tensors depend on. For the probe's
penultimate features (:func:`describe`) that is: model name, weights (enum name and file), the
evaluation transform, the requested precision, and the data set's file list (path, size,
mtime, label); other users (the feature-map viewer's per-layer activations) describe their
own, always with the ``files`` record. The file also stores a SHA-256 of the tensor bytes. On
load, a missing file is a miss; a file that cannot be parsed, whose key differs (stale), whose
checksum fails or whose tensors lack a row per file (corrupted) is reported, removed and
rebuilt by the caller; it is never used.

:func:`load_tensors` / :func:`save_tensors` / :func:`load_or_build_tensors` store any named
tensors with one row per file; :func:`load` / :func:`save` / :func:`load_or_build` are the
probe's (features, labels) pair on top of them.
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


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' bytes in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(tensors[name].contiguous().numpy().tobytes())
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
    tensors: dict[str, torch.Tensor] | None = None  # every stored tensor, by name


def load_tensors(path: Path, description: dict, shapes: dict[str, Sequence[int] | None] | None = None) -> CacheLookup:
    """Read cached tensors if (and only if) they match ``description`` and their checksum.

    Every tensor must have one row per file of ``description["files"]``; each name in ``shapes``
    must be present, with exactly that shape unless it maps to None.
    """
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
        if _digest(tensors) != meta.get("sha256"):
            return CacheLookup("corrupted", reason="checksum mismatch")
        shapes = shapes or {}
        missing = [n for n in shapes if n not in tensors]
        if missing:
            return CacheLookup("corrupted", reason=f"missing tensors {missing}")
        n_files = len(description["files"])
        for name, t in tensors.items():
            want = shapes.get(name)
            if t.ndim == 0 or t.shape[0] != n_files or (want is not None and list(t.shape) != list(want)):
                return CacheLookup("corrupted", reason=f"{name} has shape {tuple(t.shape)}")
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        return CacheLookup("corrupted", reason=f"{type(exc).__name__}: {exc}")
    return CacheLookup("hit", meta=json.loads(meta.get("extra", "{}")), tensors=tensors)


def save_tensors(path: Path, description: dict, tensors: dict[str, torch.Tensor], extra: dict | None = None) -> Path:
    """Write named tensors (one row per file) atomically with the description's key and a checksum."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    meta = {
        "key": key_of(description),
        "sha256": _digest(tensors),
        "description": json.dumps(description, sort_keys=True),
        "extra": json.dumps(extra or {}),
    }
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    log.info("cached %s in %s", ", ".join(tensors), path)
    return Path(path)


def load_or_build_tensors(path: Path | None, description: dict, build,
                          shapes: dict[str, Sequence[int] | None] | None = None
                          ) -> tuple[dict[str, torch.Tensor], dict, str]:
    """Cached (tensors, extra) or ``build()`` -> (tensors, extra) saved to ``path``.

    Returns the status too: ``hit``, ``disabled`` (no path), or what made it rebuild
    (``missing``, ``stale``, ``corrupted``).
    """
    if path is None:
        tensors, extra = build()
        return tensors, extra, "disabled"
    found = load_tensors(path, description, shapes)
    if found.status == "hit":
        log.info("tensors from cache %s", path)
        return found.tensors or {}, found.meta or {}, "hit"
    if found.status != "missing":
        log.warning("cache %s is %s (%s): rebuilding it", path, found.status, found.reason)
        Path(path).unlink(missing_ok=True)
    tensors, extra = build()
    save_tensors(path, description, tensors, extra)
    return tensors, extra, found.status


def load(path: Path, description: dict) -> CacheLookup:
    """The probe's cached (features (N, D), labels (N,)), checked as in :func:`load_tensors`."""
    found = load_tensors(path, description, _probe_shapes(description))
    if found.status != "hit":
        return found
    found.features, found.labels = found.tensors["features"], found.tensors["labels"]
    return found


def save(path: Path, description: dict, features: torch.Tensor, labels: torch.Tensor, extra: dict | None = None) -> Path:
    """Write features (N, D) float32 and labels (N,) int64 atomically with key and checksum."""
    tensors = {"features": features.detach().cpu().float(), "labels": labels.detach().cpu().long()}
    return save_tensors(path, description, tensors, extra)


def _probe_shapes(description: dict) -> dict[str, list[int]]:
    n = len(description["files"])
    return {"features": [n, description["feature_dim"]], "labels": [n]}


def load_or_build(path: Path | None, description: dict, build) -> tuple[torch.Tensor, torch.Tensor, dict, str]:
    """Cached (features, labels, extra) or ``build()`` -> (features, labels, extra) saved to ``path``.

    Returns the status too: ``hit``, ``disabled`` (no path), or what made it rebuild
    (``missing``, ``stale``, ``corrupted``).
    """
    def build_tensors():
        feats, labels, extra = build()
        return {"features": feats.detach().cpu().float(), "labels": labels.detach().cpu().long()}, extra

    tensors, extra, status = load_or_build_tensors(path, description, build_tensors, _probe_shapes(description))
    return tensors["features"], tensors["labels"], extra, status
