"""The CIFAR-10 binary reader, MD5 checks, fetch errors and tensor augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.data import cifar10
from cnnlab.errors import CnnlabError


@pytest.fixture(scope="module")
def cifar_dir(shared_data):
    folder = shared_data / cifar10.FOLDER
    if not folder.is_dir():
        pytest.skip(f"CIFAR-10 not found at {folder}")
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

    def fake_download(url, download_root, md5):
        calls.update(url=url, md5=md5, root=download_root)
        raise OSError("no network")

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    with pytest.raises(CnnlabError, match="could not download"):
        cifar10.fetch(tmp_path)
    assert calls == {"url": cifar10.ARCHIVE_URL, "md5": "c32a1d4ab5d03f1284b67883e8d87530", "root": str(tmp_path)}


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
