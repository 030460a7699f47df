"""Image-folder datasets and the seeded stratified split."""

from __future__ import annotations

from collections import Counter

import pytest
from probe_helpers import make_folder

from cnnlab.data.folders import load_image_folder
from cnnlab.data.labeled import stratified_split
from cnnlab.data.pets import DatasetNotFoundError


def test_stratified_split_is_seeded_and_per_class():
    labels = [0] * 10 + [1] * 5 + [2] * 1
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert sorted(kept + held) == list(range(16))
    assert Counter(labels[i] for i in held) == {0: 2, 1: 1}  # the singleton stays in `kept`
    assert stratified_split(labels, 0.2, seed=3) == (kept, held)
    assert stratified_split(labels, 0.2, seed=4) != (kept, held)


def test_pool_layout(tmp_path):
    splits = load_image_folder(make_folder(tmp_path / "pool", per_class=5), test_fraction=0.2, seed=0)
    assert splits.classes == ("blue", "green", "red")
    assert len(splits.train) == 12 and len(splits.test) == 3
    assert list(splits.test.class_counts()) == [1, 1, 1]
    for p, y in zip(splits.train.paths, splits.train.labels):
        assert p.parent.name == splits.classes[y]


def test_train_test_layout(tmp_path):
    splits = load_image_folder(make_folder(tmp_path / "tt", per_class=6, layout="split"))
    assert (len(splits.train), len(splits.test)) == (12, 6)
    assert all(p.parts[-3] == "test" for p in splits.test.paths)


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "absent")
    (tmp_path / "one" / "cats").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="at least two"):
        load_image_folder(tmp_path / "one")
