"""Run folders, atomic writes, the environment record, seeding and device choice.

:func:`start_run` is the preamble every experiment verb shares: seed, device, process group,
run folder and environment record, in that order.

Every command writes into a run folder ``runs/<verb>/<YYYYmmdd-HHMMSS>-<id>/`` (or ``--out``):
``config.json`` (the resolved options), ``env.json`` (versions, git commit, device, seed),
result JSON and figures. Every file is written to a temporary name in the same folder and
renamed into place, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.distributed import Context

log = logging.getLogger(__name__)

RUNS_ROOT_ENV = "CNNLAB_RUNS"


def runs_root() -> Path:
    """Where run folders go: ``$CNNLAB_RUNS`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ROOT_ENV, "runs"))


def new_run_dir(verb: str, out: str | Path | None = None) -> Path:
    """Create (or reuse, when ``out`` is given) a run folder and return its path."""
    if out is not None:
        path = Path(out)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = runs_root() / verb / f"{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` atomically.

    On any failure the temporary file is removed, so ``path`` is either the complete new file
    or whatever was there before. An ``OSError`` (disk full, read-only folder, no permission)
    is raised again naming ``path`` itself rather than the temporary name.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy / torch scalars
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (dataclasses, paths, numpy/torch values allowed) as indented JSON."""
    return write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format=fmt))
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- environment
def git_commit() -> str | None:
    """The commit of the source tree cnnlab runs from, if it is a git checkout."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record(device: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Versions, commit, machine and device: enough to reproduce or explain a result."""
    from importlib import metadata

    from cnnlab import __version__

    packages = {}
    for name in ("torch", "torchvision", "numpy", "pillow", "scikit-learn", "matplotlib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    record: dict[str, Any] = {
        "cnnlab": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "device": device,
        "seed": seed,
        "command": sys.argv,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    if "torch" in sys.modules:
        import torch

        record["torch_threads"] = torch.get_num_threads()
        if device and device.startswith("cuda") and torch.cuda.is_available():
            record["cuda_device"] = torch.cuda.get_device_name(0)
            record["cuda_version"] = torch.version.cuda
    return record


def write_run_metadata(run_dir: Path, config: Any, device: str | None, seed: int | None) -> None:
    """Write ``config.json`` and ``env.json`` into ``run_dir``."""
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "env.json", environment_record(device=device, seed=seed))


# ----------------------------------------------------------------------------- seeds, devices
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return device


# ----------------------------------------------------------------------------- the preamble
@dataclass(frozen=True)
class Run:
    """A started experiment: where it writes, what it computes on, and its place among ranks.

    ``dir`` is ``None`` on every rank but rank 0 (only rank 0 writes files).
    """

    verb: str
    dir: Path | None
    device: str
    seed: int
    ranks: Context

    @property
    def is_main(self) -> bool:
        return self.ranks.is_main


def start_run(verb: str, config: Any, *, device: str | None = None, join_group: bool = False,
              run_dir: Path | None = None, record: Any = None) -> Run:
    """Seed, choose the device, join the process group, create the run folder, record the run.

    ``config`` is a :class:`~cnnlab.options.RunOptions` (its ``seed``, ``deterministic``,
    ``device`` and ``out`` are read). ``device`` fixes the device instead of ``config.device``
    (an experiment that only runs on the CPU); ``join_group`` joins torchrun's process group,
    which may narrow the device to this rank's GPU; ``run_dir`` is a folder the verb already
    chose (default: :func:`new_run_dir`); ``record`` is what ``config.json`` holds (default:
    ``config``).
    """
    from cnnlab import distributed

    seed_everything(config.seed, config.deterministic)
    device = device or resolve_device(config.device)
    ranks = distributed.setup(device) if join_group else distributed.Context(device=device)
    folder = None
    if ranks.is_main:
        folder = run_dir if run_dir is not None else new_run_dir(verb, config.out)
        folder.mkdir(parents=True, exist_ok=True)
        write_run_metadata(folder, config if record is None else record, ranks.device, config.seed)
    return Run(verb, folder, ranks.device, config.seed, ranks)
