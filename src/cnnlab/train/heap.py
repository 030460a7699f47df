"""Keep freed memory for reuse while training on the CPU (glibc's malloc, Linux).

A training step allocates and frees a few hundred MB of activations and gradients. By default
glibc serves large blocks with fresh ``mmap`` pages and gives freed memory back to the kernel,
so every step page-faults the same memory in again: about 95,000 minor page faults per
``hw-mish`` step at batch 256 on the dev CPU. Without them the engine trains 1.20x faster there
(``benchmarks/RESULTS.md``, ``benchmarks/bench_train.py``). :func:`keep_freed_memory` tells malloc
to take every block from its heap and never trim it, so each step after the first reuses the previous step's pages with no
page faults. This is the same effect as the jemalloc/tcmalloc preload that PyTorch's CPU
performance guide recommends, without the extra library.

The cost: the process keeps its peak memory until it exits. That is why the library does not
set it on import: ``cnnlab train`` calls it once before training on the CPU, unless
``--no-tune-heap`` (``Config(tune_heap=False)``) is given. glibc has no
way to switch back to its adaptive defaults, so the setting lasts for the rest of the process. On
other C libraries (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_done: bool | None = None  # None: not tried yet; else whether it took effect


def supported() -> bool:
    """Whether this process runs on glibc's malloc (Linux), the only one this module tunes."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse freed memory; True if it took effect (idempotent)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not supported():
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # No mmap'ed blocks (they are unmapped on free), and never give the heap's top back.
        _done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        pass
    log.debug("malloc keeps freed memory for reuse: %s", _done)
    return _done
