"""The CIFAR-10 binary reader, MD5 checks, fetch errors and tensor augmentation."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import missing_data

from cnnlab.data import cifar10
from cnnlab.errors import CnnlabError


@pytest.fixture(scope="module")
def cifar_dir(shared_data):
    folder = shared_data / cifar10.FOLDER
    if not folder.is_dir():
        missing_data(f"CIFAR-10 not found at {folder}")
    return folder


def test_first_test_labels_and_class_counts(cifar_dir):
    images, labels = cifar10.read_bin(cifar_dir / "test_batch.bin")
    assert images.shape == (10_000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert torch.bincount(labels, minlength=10).tolist() == [1000] * 10


def test_load_whole_set_verified(cifar_dir):
    data = cifar10.load(cifar_dir.parent)  # verifies the six published MD5 sums
    assert data.train.images.shape == (50_000, 3, 32, 32)
    assert torch.bincount(data.train.labels, minlength=10).tolist() == [5000] * 10
    assert len(data.test) == 10_000
    # a known pixel: the first test image (a cat) and a plain statistic of the training set
    mean = data.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(cifar10.MEAN), atol=1e-3)


def test_pixel_layout_round_trips(tmp_path):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.tensor([7, 0, 9])
    path = cifar10.write_bin(tmp_path / "x.bin", images, labels)
    raw = np.fromfile(path, dtype=np.uint8).reshape(3, 3073)
    # record layout: label, then the red plane row by row, then green, then blue
    assert raw[1, 0] == 0 and raw[2, 0] == 9
    assert raw[0, 1] == images[0, 0, 0, 0] and raw[0, 2] == images[0, 0, 0, 1]
    assert raw[0, 1 + 32] == images[0, 0, 1, 0]
    assert raw[0, 1 + 1024] == images[0, 1, 0, 0] and raw[0, 1 + 2048 + 1023] == images[0, 2, 31, 31]
    back, back_labels = cifar10.read_bin(path)
    assert torch.equal(back, images) and back_labels.tolist() == [7, 0, 9]


def test_truncated_and_missing_files_say_what_to_do(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(CnnlabError, match="not a whole number"):
        cifar10.read_bin(tmp_path / "bad.bin")
    with pytest.raises(CnnlabError, match="cnnlab data fetch cifar10"):
        cifar10.load(tmp_path / "nowhere", download=False)


def test_corrupt_files_fail_md5(tmp_path):
    cifar10.write_synthetic(tmp_path, n_train=50, n_test=10)
    with pytest.raises(CnnlabError, match="MD5 mismatch"):
        cifar10.load(tmp_path)
    assert len(cifar10.load(tmp_path, verify_md5=False).test) == 10


def test_fetch_uses_official_archive_and_reports_network_errors(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = {}

    def fake_download(url, root, filename=None, md5=None):
        calls.update(url=url, root=root, filename=filename)
        raise OSError("no network")

    monkeypatch.setattr(tvu, "download_url", fake_download)
    with pytest.raises(CnnlabError, match="could not download .*no network"):
        cifar10.fetch(tmp_path)
    assert calls["url"] == cifar10.ARCHIVE_URL and calls["filename"] == "cifar-10-binary.tar.gz"
    assert Path(calls["root"]).parent == tmp_path  # a temporary folder under the data root
    assert cifar10.ARCHIVE_MD5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone


@pytest.fixture
def user_copy(tmp_path, monkeypatch):
    """A synthetic CIFAR-10 set under ``tmp_path/user`` taken as the official one (its MD5 sums and
    archive patched in), with ``data_batch_3.bin`` corrupted; returns (root, archive, corrupt bytes)."""
    folder = cifar10.write_synthetic(tmp_path / "release", n_train=50, n_test=10)
    (folder / "batches.meta.txt").write_text("\n".join(cifar10.CLASSES) + "\n")
    monkeypatch.setattr(cifar10, "MD5", {f: cifar10.md5sum(folder / f) for f in cifar10.MD5})
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=cifar10.FOLDER)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", cifar10.md5sum(archive))
    root = tmp_path / "user"
    shutil.copytree(folder, root / cifar10.FOLDER)
    bad = root / cifar10.FOLDER / "data_batch_3.bin"
    corrupt = bytearray(bad.read_bytes())
    corrupt[100] ^= 0xFF  # one flipped byte: same size, wrong MD5
    bad.write_bytes(bytes(corrupt))
    return root, archive, bytes(corrupt)


def _serve(archive, seen=None):
    """A stand-in for torchvision's download_url that copies the local ``archive``."""

    def download_url(url, root, filename=None, md5=None):
        if seen is not None:
            seen.append(True)
        shutil.copy(archive, Path(root) / filename)

    return download_url


def test_fetch_names_the_corrupt_file_first_and_keeps_it_when_the_download_fails(user_copy, monkeypatch, capsys):
    import torchvision.datasets.utils as tvu

    from cnnlab.cli import main

    root, _, corrupt = user_copy
    said_first = []

    def offline(url, root, filename=None, md5=None):
        said_first.append(capsys.readouterr().err)  # what the user was told before the download
        raise OSError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    assert main(["data", "fetch", "cifar10", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "data_batch_3.bin" in said_first[0] and "MD5" in said_first[0]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "data_batch_3.bin failed its MD5 check" in last
    assert "could not download" in last and "nothing under" in last and "Traceback" not in err
    assert (root / cifar10.FOLDER / "data_batch_3.bin").read_bytes() == corrupt
    assert sorted(p.name for p in root.iterdir()) == [cifar10.FOLDER]  # no temporary folder left


def test_fetch_into_a_folder_it_cannot_write_to_says_so(user_copy, monkeypatch):
    import errno
    import os

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/somewhere/.cnnlab-fetch-x")

    root, _, corrupt = user_copy
    monkeypatch.setattr(cifar10.tempfile, "mkdtemp", read_only)
    with pytest.raises(CnnlabError, match=r"data_batch_3.bin failed its MD5 .*cannot download into .*user "
                                          r"\(Permission denied\); pass --data-root"):
        cifar10.fetch(root)
    assert (root / cifar10.FOLDER / "data_batch_3.bin").read_bytes() == corrupt


def test_fetch_replaces_only_the_corrupt_file_after_verifying_the_download(user_copy, monkeypatch):
    import torchvision.datasets.utils as tvu

    root, archive, _ = user_copy
    folder = root / cifar10.FOLDER
    (folder / "batches.meta.txt").write_text("my own notes\n")
    monkeypatch.setattr(tvu, "download_url", _serve(archive))
    assert cifar10.fetch(root) == folder
    cifar10.verify(folder)
    assert (folder / "batches.meta.txt").read_text() == "my own notes\n"  # a file that was fine stays
    assert sorted(p.name for p in root.iterdir()) == [cifar10.FOLDER]  # archive and staging removed


def test_fetch_keeps_the_users_file_when_the_download_is_corrupt_too(user_copy, monkeypatch, tmp_path):
    import torchvision.datasets.utils as tvu

    root, _, corrupt = user_copy
    bad_release = tmp_path / "bad-release"
    shutil.copytree(root / cifar10.FOLDER, bad_release / cifar10.FOLDER)
    (bad_release / cifar10.FOLDER / "data_batch_3.bin").write_bytes(corrupt[:-1])  # corrupt another way
    bad_archive = tmp_path / "bad.tar.gz"
    with tarfile.open(bad_archive, "w:gz") as tar:
        tar.add(bad_release / cifar10.FOLDER, arcname=cifar10.FOLDER)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", cifar10.md5sum(bad_archive))  # the archive itself checks out
    monkeypatch.setattr(tvu, "download_url", _serve(bad_archive))
    with pytest.raises(CnnlabError, match="not the official release.*data_batch_3.bin failed its MD5"):
        cifar10.fetch(root)
    assert (root / cifar10.FOLDER / "data_batch_3.bin").read_bytes() == corrupt

    seen = []
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", "0" * 32)  # a download that fails the archive's MD5
    monkeypatch.setattr(tvu, "download_url", _serve(bad_archive, seen))
    with pytest.raises(CnnlabError, match="data_batch_3.bin failed .*cifar-10-binary.tar.gz failed its MD5"):
        cifar10.fetch(root)
    assert seen and (root / cifar10.FOLDER / "data_batch_3.bin").read_bytes() == corrupt
    assert sorted(p.name for p in root.iterdir()) == [cifar10.FOLDER]


def test_augmentation_is_a_reflect_padded_shift_or_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    assert torch.equal(cifar10.random_translate(x, 0), x)
    out = cifar10.random_translate(x, 2, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    shifted = 0
    for b in range(16):
        crops = [padded[b, :, dy:dy + 32, dx:dx + 32] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(c, out[b].float()) for c in crops)
        shifted += not torch.equal(out[b], x[b])
    assert shifted >= 10  # 24 of 25 shifts move the image
    flipped = cifar10.random_flip(x, generator=g)
    same = [torch.equal(flipped[b], x[b]) for b in range(16)]
    mirrored = [torch.equal(flipped[b], x[b].flip(-1)) for b in range(16)]
    assert all(s or m for s, m in zip(same, mirrored)) and 0 < sum(mirrored) < 16


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(100, generator=g) < 0.5
    even, odd = cifar10.alternating_flips(base, 0), cifar10.alternating_flips(base, 1)
    assert torch.equal(even, base) and torch.equal(odd, ~base)  # both orientations in every pair of epochs
    assert torch.equal(cifar10.alternating_flips(base, 6), even) and torch.equal(cifar10.alternating_flips(base, 7), odd)
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
    mask = torch.tensor([True, False] * 4)
    out = cifar10.augment(x, translate=0, flip=True, generator=g, flip_mask=mask)
    assert torch.equal(out[mask], x[mask].flip(-1)) and torch.equal(out[~mask], x[~mask])
