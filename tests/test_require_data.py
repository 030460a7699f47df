"""CI fails instead of skipping: under ``CNNLAB_REQUIRE_DATA=1`` (set by ``.ci/run``) a test whose
shared data set is missing fails, and the tiny report still runs on a built-in photo."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REQUIRE_DATA, ROOT, missing_data


@pytest.mark.parametrize("required", [False, True])
def test_missing_data_skips_or_fails(monkeypatch, required):
    if required:
        monkeypatch.setenv(REQUIRE_DATA, "1")
    else:
        monkeypatch.delenv(REQUIRE_DATA, raising=False)
    with pytest.raises(BaseException) as outcome:  # skip and fail are BaseExceptions: catch either here
        missing_data("CIFAR-10 not found at /nowhere")
    assert outcome.type is (pytest.fail.Exception if required else pytest.skip.Exception)
    assert "CIFAR-10 not found at /nowhere" in str(outcome.value)


def test_ci_requires_the_data():
    assert re.search(rf"^export {REQUIRE_DATA}=1\b", (ROOT / ".ci" / "run").read_text(), re.M)


def test_a_run_without_the_shared_data_fails_under_require_data(tmp_path):
    """pytest on tests that need the shared data, pointed at a folder that does not exist: the
    data tests fail (none is skipped) and the tiny report's photo falls back to a built-in one."""
    env = {**os.environ, "CNNLAB_SHARED_DATA": str(tmp_path / "no-data"), REQUIRE_DATA: "1"}
    tests = ["tests/test_pets.py::test_reads_shared_pets_copy",  # the shared_data fixture
             "tests/test_cli.py::test_run_folder_contents",  # peppers_path
             "tests/test_cifar10_data.py::test_first_test_labels_and_class_counts",
             "tests/test_report.py::test_the_photo_works_without_the_shared_data"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                           "--basetemp", str(tmp_path / "basetemp"), *tests],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "1 passed, 3 errors" in out and "skipped" not in out, out[-3000:]
    assert out.count(f"{REQUIRE_DATA}=1: missing data fails the run") >= 3, out[-3000:]
