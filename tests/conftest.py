"""Shared fixtures: restored random state, a gpu marker, shared data paths, tiny helpers."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CNNLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
PEPPERS = SHARED_DATA / "peppers.png"

REQUIRE_DATA = "CNNLAB_REQUIRE_DATA"  # set to 1 (as .ci/run does): a missing data set fails the test

os.environ.setdefault("CNNLAB_NO_PROGRESS", "1")


def missing_data(reason: str) -> NoReturn:
    """Skip the test for missing shared data, or fail it when ``$CNNLAB_REQUIRE_DATA=1``, so a CI
    machine without the data goes red instead of green."""
    if os.environ.get(REQUIRE_DATA) == "1":
        pytest.fail(f"{reason} ({REQUIRE_DATA}=1: missing data fails the run)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available() or os.environ.get("CNNLAB_TEST_DEVICE") == "cpu":
        return  # a GPU, or the gpu tests' dry run with the CPU in its place (tests/test_cuda.py)
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_random_state():
    """Tests may seed freely; the global RNG state is put back afterwards."""
    import torch

    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny tensors on a busy 2-core machine are much faster so."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """Default run folders go under the test's tmp_path, never into the checkout."""
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def peppers_path() -> Path:
    if not PEPPERS.exists():
        missing_data(f"shared peppers photo not found at {PEPPERS}")
    return PEPPERS


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory) -> Path:
    """A tiny synthetic CIFAR-10 folder in the binary format (80 training, 40 test images)."""
    from cnnlab.data.cifar10 import write_synthetic

    root = tmp_path_factory.mktemp("syn")
    write_synthetic(root, n_train=80, n_test=40)
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        missing_data(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mobilenet():
    """The real pretrained MobileNetV2 (IMAGENET1K_V1), loaded once per session."""
    from cnnlab.models.pretrained import load_pretrained

    return load_pretrained("mobilenet_v2")
