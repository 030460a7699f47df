"""CIFAR-10 from the official *binary* release, held in memory as one uint8 tensor.

The release (``cifar-10-binary.tar.gz``) unpacks to ``cifar-10-batches-bin/``: five training
files ``data_batch_{1..5}.bin`` and ``test_batch.bin``. Each record is 3,073 bytes: one label
byte (0-9), then 3,072 pixel bytes (the 1,024 red values, then green, then blue, each 32x32
row-major). Reading it is ``numpy.fromfile`` + a reshape: no pickle is ever loaded.

Batches are augmented on tensors (random translation with padding, horizontal flip), so the
training loop never touches a PIL image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data import data_root
from cnnlab.errors import CnnlabError
from cnnlab.runs import atomic_write

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-bin"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
# The published MD5 sums of the six files of the official release.
MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes
# Per-channel mean and standard deviation of the training images (in [0, 1]).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _missing_hint(folder: Path) -> str:
    return (f"run `cnnlab data fetch cifar10 --data-root {folder.parent}` (needs internet), or pass "
            f"--data-root / set CNNLAB_DATA_ROOT to a folder that holds {FOLDER}/")


# ----------------------------------------------------------------------------- reading / writing
def read_bin(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one binary batch file."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"CIFAR-10 file not found: {path}; {_missing_hint(path.parent)}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise CnnlabError(f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records "
                          f"(truncated or not the binary release); {_missing_hint(path.parent)}")
    records = raw.reshape(-1, RECORD)  # N, 3073
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise CnnlabError(f"{path}: label byte {labels.max()} > 9: not a CIFAR-10 binary file")
    images = records[:, 1:].reshape(-1, 3, 32, 32)  # N, C, H, W (planes R, G, B; rows; columns)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def write_bin(path: str | Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    """Write images uint8 (N, 3, 32, 32) and labels (N,) in the CIFAR-10 binary format."""
    N = images.shape[0]
    if images.shape[1:] != (3, 32, 32) or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, 3, 32, 32), got {images.dtype} {tuple(images.shape)}")
    records = np.empty((N, RECORD), dtype=np.uint8)
    records[:, 0] = labels.numpy().astype(np.uint8)
    records[:, 1:] = images.reshape(N, -1).numpy()
    return atomic_write(path, records.tofile)


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def problems(folder: str | Path, files: tuple[str, ...] = TRAIN_FILES + TEST_FILES) -> dict[str, str]:
    """``{file: what is wrong}`` for each of ``files`` under ``folder`` that is missing or fails its MD5."""
    folder = Path(folder)
    found: dict[str, str] = {}
    for f in files:
        if not (folder / f).is_file():
            found[f] = "missing"
        elif (digest := md5sum(folder / f)) != MD5[f]:
            found[f] = f"failed its MD5 check (expected {MD5[f]}, got {digest})"
    return found


def verify(folder: str | Path, files: tuple[str, ...] = TRAIN_FILES + TEST_FILES) -> None:
    """Check the files against the published MD5 sums; raise a CnnlabError naming the bad ones."""
    folder = Path(folder)
    found = problems(folder, files)
    missing = [f for f, why in found.items() if why == "missing"]
    if missing:
        raise CnnlabError(f"CIFAR-10 not found under {folder} (missing {', '.join(missing)}); {_missing_hint(folder)}")
    if found:
        raise CnnlabError(f"CIFAR-10 files under {folder} are corrupt (MD5 mismatch: {', '.join(found)}); "
                          f"run `cnnlab data fetch cifar10 --data-root {folder.parent}` to replace them with "
                          "verified copies (needs internet)")


def fetch(root: str | Path | None = None) -> Path:
    """Download the official binary archive (MD5-checked) and put in place the files that are missing
    or corrupt; files that match their published MD5 are left alone.

    The archive is downloaded and unpacked into a temporary folder under the data root; a
    corrupt file of the user's is replaced (by an atomic rename) only once the downloaded copy
    has passed its own MD5 check, so a failed download never loses anything.
    """
    root = data_root(root)
    folder = root / FOLDER
    todo = problems(folder)
    if not todo:
        log.info("CIFAR-10 already present and verified in %s", folder)
        return folder
    corrupt = _describe_corrupt(folder, todo)
    if corrupt:
        log.warning("%s: downloading a fresh copy (a file is replaced only by a verified one)", corrupt)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".cnnlab-fetch-", dir=root))
    except OSError as exc:  # e.g. the read-only shared copy
        raise CnnlabError(f"{corrupt + '; ' if corrupt else ''}cannot download into {root} ({exc.strerror}); "
                          "pass --data-root to a folder you can write to") from exc
    try:
        fresh = _download(staging, folder, corrupt) / FOLDER
        still = problems(fresh, tuple(todo))
        if still:
            raise CnnlabError(f"the downloaded {ARCHIVE_URL} is not the official release ("
                              + "; ".join(f"{f} {why}" for f, why in still.items())
                              + f"); nothing under {folder} was changed")
        folder.mkdir(parents=True, exist_ok=True)
        for item in fresh.iterdir():  # the files to mend, and extras (meta, readme) not yet there
            if item.name in todo or not (folder / item.name).exists():
                os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verify(folder)
    return folder


def _describe_corrupt(folder: Path, found: dict[str, str]) -> str:
    """The files of ``found`` (see :func:`problems`) that failed their MD5, in a few words ("" if none)."""
    bad = [f for f, why in found.items() if why != "missing"]
    if len(bad) == 1:
        return f"{folder / bad[0]} {found[bad[0]]}"
    return f"{', '.join(bad)} under {folder} failed their MD5 checks" if bad else ""


def _download(staging: Path, folder: Path, corrupt: str) -> Path:
    """Download the official archive into ``staging``, check its MD5 and unpack it there.

    A failed or corrupt download is a CnnlabError that starts with the user's corrupt files
    (``corrupt``) and says that nothing under ``folder`` was changed.
    """
    from torchvision.datasets.utils import download_url, extract_archive

    archive = staging / ARCHIVE_URL.rsplit("/", 1)[-1]
    kept = f"{corrupt}; " if corrupt else ""
    try:
        download_url(ARCHIVE_URL, str(staging), filename=archive.name)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, OSError)
        raise CnnlabError(f"{kept}could not download {ARCHIVE_URL} ({exc}); nothing under {folder} was "
                          f"changed. Copy the unpacked {FOLDER}/ into {folder.parent} by hand, or pass "
                          "--data-root to a folder that holds it") from exc
    if (digest := md5sum(archive)) != ARCHIVE_MD5:
        raise CnnlabError(f"{kept}the downloaded {archive.name} failed its MD5 check (expected {ARCHIVE_MD5}, "
                          f"got {digest}); nothing under {folder} was changed. Try again later")
    extract_archive(str(archive), str(staging))
    return staging


# ----------------------------------------------------------------------------- the data set
@dataclass
class Split:
    images: torch.Tensor  # N, 3, 32, 32 uint8
    labels: torch.Tensor  # N int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: str | torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, n: int | None) -> Split:
        """The first ``n`` images (all when ``n`` is None)."""
        return self if n is None else Split(self.images[:n], self.labels[:n])

    def hold_out(self, n: int, seed: int) -> tuple[Split, Split]:
        """(the rest, ``n`` held-out images): class-balanced, drawn by ``seed``, each part in its original order.

        Every class gives ``n // classes`` images (the first ``n % classes`` classes one more),
        so the validation set has the class mix of the test set whatever the seed.
        """
        classes = torch.unique(self.labels)
        if not 0 < n < len(self):
            raise ValueError(f"a validation split of {n} images needs 0 < n < {len(self)} (the training set)")
        generator = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        held = []
        for i, c in enumerate(classes.tolist()):
            members = torch.nonzero(labels == c).flatten()
            take = n // len(classes) + (i < n % len(classes))
            if take > len(members):
                raise ValueError(f"class {c} has {len(members)} images, fewer than the {take} a split of {n} needs")
            held.append(members[torch.randperm(len(members), generator=generator)[:take]])
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[torch.cat(held)] = True
        mask = mask.to(self.labels.device)
        return Split(self.images[~mask], self.labels[~mask]), Split(self.images[mask], self.labels[mask])


@dataclass
class CIFAR10:
    train: Split
    test: Split
    folder: Path

    classes = CLASSES


def load(root: str | Path | None = None, *, verify_md5: bool = True, download: bool = False) -> CIFAR10:
    """Read the whole data set into memory (about 180 MB of uint8).

    ``root`` is a data root (holding ``cifar-10-batches-bin/``) or that folder itself. With
    ``verify_md5`` the six files must match the official release; turn it off for your own
    files in the same format (e.g. a small synthetic set). With ``download`` a missing set is
    fetched first.
    """
    root = data_root(root)
    folder = root if (root / TEST_FILES[0]).is_file() else root / FOLDER
    if download and not (folder / TEST_FILES[0]).is_file():
        folder = fetch(root)
    if verify_md5:
        verify(folder)
    else:
        missing = [f for f in TRAIN_FILES + TEST_FILES if not (folder / f).is_file()]
        if missing:
            raise CnnlabError(f"CIFAR-10 not found under {folder} (missing {', '.join(missing)}); "
                              f"{_missing_hint(folder)}")
    parts = [read_bin(folder / f) for f in TRAIN_FILES]
    train = Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = Split(*read_bin(folder / TEST_FILES[0]))
    return CIFAR10(train, test, folder)


def write_synthetic(folder: str | Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """A tiny learnable CIFAR-format set (class = which colour/quadrant is bright) for smoke runs."""
    g = torch.Generator().manual_seed(seed)
    folder = Path(folder) / FOLDER

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 10
        images = torch.randint(0, 96, (n, 3, 32, 32), generator=g, dtype=torch.int64)
        for k in range(10):  # class k: channel k % 3 bright in a class-specific block
            idx = labels == k
            r, c = divmod(k, 4)
            images[idx, k % 3, 8 * r:8 * r + 12, 8 * c:8 * c + 12] += 150
        return images.clamp(0, 255).to(torch.uint8), labels

    per_file = max(1, n_train // len(TRAIN_FILES))
    for f in TRAIN_FILES:
        write_bin(folder / f, *make(per_file))
    write_bin(folder / TEST_FILES[0], *make(n_test))
    return folder


# ----------------------------------------------------------------------------- augmentation
def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> ``dtype`` in [0, 1]."""
    return images.to(dtype).div_(255)


def random_translate(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop of the ``pad``-reflect-padded batch back to its size: a shift of up to ``pad`` px.

    Works on any dtype (uint8 included) and on the batch's device; one gather, no Python loop.
    """
    if pad <= 0:
        return images
    B, C, H, W = images.shape
    padded = torch.nn.functional.pad(images.float() if images.dtype == torch.uint8 else images,
                                     (pad, pad, pad, pad), mode="reflect").to(images.dtype)  # B, C, H+2p, W+2p
    shifts = torch.randint(0, 2 * pad + 1, (2, B), generator=generator).to(images.device)
    rows = shifts[0][:, None] + torch.arange(H, device=images.device)  # B, H
    cols = shifts[1][:, None] + torch.arange(W, device=images.device)  # B, W
    b = torch.arange(B, device=images.device)[:, None, None, None]
    c = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # B, C, H, W


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2, or where the bool ``mask`` (B,) says."""
    B = images.shape[0]
    if mask is None:
        mask = torch.rand(B, generator=generator) < 0.5
    return torch.where(mask.to(images.device).view(B, 1, 1, 1), images.flip(-1), images)


def alternating_flips(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images to mirror in ``epoch`` under "alternating flip" (the airbench idea).

    ``base`` (N,) bool is a random half of the training set, fixed for the run: it is mirrored in
    even epochs and the other half in odd ones. Each image thus appears in both orientations in
    every pair of epochs, instead of the same one twice a quarter of the time by chance, which
    makes a short run see more distinct views for the same cost.
    """
    return base ^ bool(epoch % 2)


def augment(images: torch.Tensor, *, translate: int = 4, flip: bool = True,
            generator: torch.Generator | None = None, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Random translation (reflect padding of ``translate`` px) and horizontal flip of a batch.

    ``flip_mask`` (B,) bool, if given, chooses the mirrored images instead of chance.
    """
    out = random_translate(images, translate, generator)
    return random_flip(out, generator, mask=flip_mask) if flip else out
