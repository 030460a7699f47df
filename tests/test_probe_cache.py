"""The feature cache: reused when nothing changed, rebuilt when the model, the file list or the file changed."""

from __future__ import annotations

import os

import pytest
import torch
from probe_helpers import tiny_model

from cnnlab.probe import cache


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / "data" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x" * (i + 1))
        paths.append(p)
    return paths


class Builder:
    def __init__(self):
        self.calls = 0

    def __call__(self, n=4, d=8):
        self.calls += 1
        feats = torch.nn.functional.normalize(torch.randn(n, d), dim=1)
        return feats, torch.arange(n), {"seconds": 1.0}


def _describe(model, files, labels=(0, 1, 0, 1), precision="auto"):
    return cache.describe(model, {"resize": 256}, precision, files, labels)


def test_reuse_then_rebuild_on_changes(tmp_path, files):
    model = tiny_model()
    path = cache.cache_path(tmp_path / "cache", "toy", "train", model.spec.name)
    build = Builder()
    f1, y1, extra, status = cache.load_or_build(path, _describe(model, files), build)
    assert (status, build.calls) == ("missing", 1) and path.is_file()
    f2, y2, extra2, status = cache.load_or_build(path, _describe(model, files), build)
    assert (status, build.calls) == ("hit", 1)
    torch.testing.assert_close(f2, f1)
    assert torch.equal(y2, y1) and extra2 == {"seconds": 1.0}

    # a different model (weights or name) -> stale, rebuilt
    other = tiny_model()
    other.spec = type(model.spec)("resnet18", model.spec.weights)
    found = cache.load(path, _describe(other, files))
    assert found.status == "stale" and "model" in found.reason
    # the file list changes: one file removed, one file rewritten, a label changed
    assert cache.load(path, _describe(model, files[:3], labels=(0, 1, 0))).status == "stale"
    assert cache.load(path, _describe(model, files, labels=(1, 1, 0, 1))).status == "stale"
    files[2].write_bytes(b"changed content")
    os.utime(files[2], ns=(1, 1))
    found = cache.load(path, _describe(model, files))
    assert found.status == "stale" and "files" in found.reason
    _, _, _, status = cache.load_or_build(path, _describe(model, files), build)
    assert (status, build.calls) == ("stale", 2)
    assert cache.load(path, _describe(model, files)).status == "hit"
    # the requested precision is part of the key
    assert cache.load(path, _describe(model, files, precision="fp32")).status == "stale"


def test_corrupted_files_are_rebuilt(tmp_path, files):
    model = tiny_model()
    desc = _describe(model, files)
    path = tmp_path / "c.safetensors"
    build = Builder()
    cache.load_or_build(path, desc, build)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the feature bytes: parses, but the checksum fails
    path.write_bytes(bytes(data))
    found = cache.load(path, desc)
    assert found.status == "corrupted" and "checksum" in found.reason
    _, _, _, status = cache.load_or_build(path, desc, build)
    assert (status, build.calls) == ("corrupted", 2)
    assert cache.load(path, desc).status == "hit"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    assert cache.load(path, desc).status == "corrupted"
    path.write_bytes(b"")  # empty
    assert cache.load(path, desc).status == "corrupted"
    _, _, _, status = cache.load_or_build(path, desc, build)
    assert (status, build.calls) == ("corrupted", 3)


def test_default_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "x"))
    assert cache.default_cache_dir() == tmp_path / "x"
