"""cnnlab.train.heap: with it, a training loop's repeated large allocations stop page-faulting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnlab.train import heap

pytestmark = pytest.mark.skipif(not heap.supported(), reason="glibc's malloc only")

# Allocate, touch and free a 64 MB tensor six times; report the minor page faults of the last three
# (the first rounds are a warm-up: the heap grows to its working size).
PROBE = """
import json, resource, sys, torch
from cnnlab.train.heap import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MB, every page written
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"took": took, "faults": faults[3:]}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_freed_memory_is_reused_without_page_faults():
    default = _probe("default")
    assert min(default["faults"]) > 10_000  # glibc's default: 16,384 pages faulted in every time
    kept = _probe("keep")
    assert kept["took"] is True
    assert max(kept["faults"]) < 100  # the same pages, reused


def test_it_is_idempotent():
    first = heap.keep_freed_memory()
    assert heap.keep_freed_memory() is first
