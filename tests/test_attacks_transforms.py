"""The four robustness transforms are the specified ones; target and ε parsing; CLI errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.attacks.targets import BUILTINS, builtin_photo, parse_class, parse_fraction
from cnnlab.attacks.transforms import (TRANSFORMS, center_crop, crop_box, grayscale, hflip, robustness_transforms,
                                       rotate)
from cnnlab.errors import CnnlabError

CATS = ["tench", "goldfish", "space shuttle", "Space heater"]


def test_the_four_transforms_are_registered_in_order():
    assert list(robustness_transforms()) == ["flip", "crop", "rotate", "grayscale"]
    with pytest.raises(ValueError, match="flip"):
        TRANSFORMS.get("blur")


def test_flip_is_exact():
    x = torch.rand(2, 3, 5, 7)
    assert torch.equal(hflip(x)[..., 0], x[..., -1])
    assert torch.equal(hflip(hflip(x)), x)


def test_crop_keeps_80_percent_of_the_area_and_the_size():
    for H, W in ((384, 512), (300, 451), (224, 224)):
        h, w = crop_box(H, W)
        assert abs(h * w / (H * W) - 0.8) < 0.01
    # An image white inside the centred 80% box and black outside becomes (almost) all white.
    H, W = 60, 80
    h, w = crop_box(H, W)
    x = torch.zeros(1, 3, H, W)
    top, left = (H - h) // 2, (W - w) // 2
    x[..., top:top + h, left:left + w] = 1
    y = center_crop(x)
    assert y.shape == x.shape
    assert y[..., 2:-2, 2:-2].min() > 0.99
    assert 0.75 < x.mean() < 0.85


def test_rotation_is_30_degrees_counter_clockwise():
    S = 101
    x = torch.zeros(1, 3, S, S)
    c = S // 2
    x[..., c - 1:c + 2, c + 10:c + 45] = 1  # a bar pointing right from the centre
    y = rotate(x)[0, 0]
    ys, xs = torch.nonzero(y > 0.5, as_tuple=True)
    angle = math.degrees(math.atan2(-(ys.float().mean() - c), xs.float().mean() - c))  # image y points down
    assert abs(angle - 30) < 1.5
    assert rotate(x).shape == x.shape


def test_grayscale_has_three_equal_channels_with_luma():
    x = torch.rand(1, 3, 8, 8)
    y = grayscale(x)
    assert y.shape == x.shape
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(y[:, 0], luma, atol=1e-5, rtol=0)


def test_parse_class_accepts_indices_and_names():
    assert parse_class("2", CATS) == 2
    assert parse_class(" space shuttle ", CATS) == 2
    assert parse_class("SPACE SHUTTLE", CATS) == 2
    with pytest.raises(CnnlabError, match="outside 0-3"):
        parse_class("4", CATS)
    with pytest.raises(CnnlabError, match="outside"):
        parse_class("-1", CATS)
    with pytest.raises(CnnlabError, match="did you mean 'space shuttle'"):
        parse_class("space shutle", CATS)


def test_parse_fraction():
    assert parse_fraction("2/255") == pytest.approx(2 / 255)
    assert parse_fraction("0.01") == 0.01
    for bad in ("two", "1/0", ""):
        with pytest.raises(ValueError, match="fraction"):
            parse_fraction(bad)


def test_config_rejects_bad_eps_and_counts():
    from cnnlab.attacks.run import Config

    for eps in ("0", "1", "-2/255", "300/255"):
        with pytest.raises(ValueError, match="--eps"):
            Config(eps=eps)
    with pytest.raises(ValueError, match="one per image"):
        Config(images=["a.png", "b.png", "c.png"], target=["1", "2"])
    assert Config(eps="2/255").eps == pytest.approx(2 / 255)


def test_builtin_photos_ship_with_scikit_image():
    for name in BUILTINS:
        photo = builtin_photo(name)
        assert photo.image.mode == "RGB" and min(photo.image.size) >= 200
        assert photo.true_classes and 0 <= photo.default_target < 1000


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_cli_errors_are_one_line(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["attack", str(tmp_path / "missing.png"), "--quiet"]) == 2
    assert "no such file" in _err(capsys)
    assert main(["attack", "--eps", "0", "--quiet"]) == 2
    assert "--eps" in _err(capsys)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["attack", str(bad), "--quiet"]) == 2
    assert "not an image" in _err(capsys)


def test_cli_rejects_unknown_target(tmp_path, capsys):
    from cnnlab.cli import main

    img = tmp_path / "tiny.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(img)
    assert main(["attack", str(img), "--target", "1000", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "outside 0-999" in _err(capsys)
    assert main(["attack", str(img), "--target", "spaceship", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "unknown class name" in _err(capsys)


def test_attack_grid_is_n_by_3_with_the_factor_stated():
    from cnnlab.plots.attacks import AttackRow, amplified_noise, attack_grid, robustness_grid, RobustnessCell

    a = np.zeros((30, 40, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 2
    noise = amplified_noise(a, b, 63.75)
    assert noise[0, 0, 0] == pytest.approx(0.5 + 63.75 * 2 / 255) and noise[1, 1, 1] == 0.5
    fig = attack_grid([AttackRow(a, b, "bell pepper 98.5%", "space shuttle 96.8%", "peppers")] * 2, 63.75, 2)
    axes = fig.get_axes()
    assert len(axes) == 6
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "peppers: bell pepper 98.5%" and "× 63.75" in titles[1] and "space shuttle" in titles[2]
    cells = [RobustnessCell(a, "x 50%", True), RobustnessCell(b, "y 20%", False)]
    fig = robustness_grid([("pgd: a", cells), ("eot: a", cells)], ["none", "flip"])
    assert len(fig.get_axes()) == 4
    assert fig.get_axes()[1].title.get_color() == "tab:red"
