"""Oxford-IIIT Pet loader on the shared partial copy, including its odd files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.data.pets import DatasetNotFoundError, load_pets
from cnnlab.images import load_image


def test_reads_shared_pets_copy(shared_data):
    splits = load_pets(shared_data, download=False)
    assert splits.name == "oxford-pets"
    assert len(splits.classes) == 37
    assert splits.classes[0] == "Abyssinian" and splits.classes[-1] == "Yorkshire Terrier"
    # the counts the shared README gives for its subset; the split files list only present images
    assert (len(splits.train), len(splits.test)) == (728, 355)
    assert set(splits.train.labels) == set(range(37))
    assert len(set(splits.test.labels)) == 25
    assert not set(splits.train.paths) & set(splits.test.paths)
    # labels follow the file names (class ids in the annotation files are 1-based)
    for path, y in list(zip(splits.test.paths, splits.test.labels))[::50]:
        assert path.stem.rsplit("_", 1)[0].replace("_", " ").lower() == splits.classes[y].lower()


def test_odd_files_load_as_rgb(shared_data):
    from PIL import Image

    from cnnlab.probe.extract import EvalTransform

    splits = load_pets(shared_data, download=False)
    by_name = {p.name: p for p in splits.train.paths + splits.test.paths}
    assert "Abyssinian_5.jpg" in by_name  # in test.txt
    # Abyssinian_34 is in no annotation file (as in the official release), but users' folders may hold it
    by_name["Abyssinian_34.jpg"] = shared_data / "oxford-iiit-pet" / "images" / "Abyssinian_34.jpg"
    transform = EvalTransform((256,), (224, 224), "bilinear", True)
    for name, real_format in (("Abyssinian_34.jpg", "GIF"), ("Abyssinian_5.jpg", "PNG")):
        with Image.open(by_name[name]) as raw:
            assert raw.format == real_format  # the quirk is really there
        img = load_image(by_name[name])
        assert img.mode == "RGB" and min(img.size) > 0
        x = transform.load(by_name[name])
        assert x.shape == (3, 224, 224) and x.dtype.is_floating_point is False


def test_missing_root_says_where_files_go(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_pets(tmp_path / "nowhere", download=False)
    msg = str(info.value)
    assert str(tmp_path / "nowhere" / "oxford-iiit-pet") in msg
    assert "annotations" in msg and "--data-root" in msg and "CNNLAB_DATA_ROOT" in msg


def test_missing_image_is_reported(tmp_path: Path, shared_data):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    for split in ("trainval", "test"):
        (base / "annotations" / f"{split}.txt").write_text("Abyssinian_100 1 1 1\n")
    with pytest.raises(DatasetNotFoundError, match="missing"):
        load_pets(tmp_path, download=False)


def test_data_root_env(monkeypatch, shared_data):
    monkeypatch.setenv("CNNLAB_DATA_ROOT", str(shared_data))
    assert len(load_pets(download=False).train) == 728
