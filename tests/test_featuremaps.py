"""Feature maps: layers from the graph in depth order, live channels, maps in [0, 1]."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.featuremaps import run as fm
from cnnlab.featuremaps.extract import candidate_layers, extract, pick_stages
from cnnlab.featuremaps.select import choose_channels, normalize01, score_channels


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Activation caches go under the test's tmp_path."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def test_real_run_writes_files_and_valid_choices(peppers_path, tmp_path, mobilenet):
    result = fm.run(fm.Config(image=peppers_path, out=tmp_path / "fm", per_stage=5, top_k=0))  # the photo alone
    out = tmp_path / "fm"
    for name in ("featuremaps.png", "stage_early.png", "stage_middle.png", "stage_late.png",
                 "featuremaps.json", "maps.npz", "config.json", "env.json"):
        assert (out / name).stat().st_size > 0, name
    depths = [s.depth for s in result.stages]
    assert [s.stage for s in result.stages] == ["early", "middle", "late"]
    assert depths[0] < depths[1] < depths[2]
    maps = np.load(out / "maps.npz")
    for stage in ("early", "middle", "late"):
        m = maps[stage]
        assert m.shape[0] == 5 and m.min() >= 0.0 and m.max() <= 1.0
        assert all(m[k].max() - m[k].min() > 0.5 for k in range(5))  # not constant
        assert len(set(maps[f"{stage}_channels"].tolist())) == 5
        on_photo = maps[f"{stage}_on_photo"]  # the maps upsampled onto the 224 x 224 crop
        assert on_photo.shape == (5, 224, 224) and on_photo.min() >= 0.0 and on_photo.max() <= 1.0
        scale = 224 / m.shape[1]
        for k in range(5):  # the overlay is aligned with its map: the hot spot lands in the same place
            y, x = np.unravel_index(on_photo[k].argmax(), (224, 224))
            assert m[k][int(y // scale), int(x // scale)] >= 0.75 * m[k].max() or m[k].max() - m[k].min() < 1e-6
    saved = json.loads((out / "featuremaps.json").read_text())
    assert saved["image_set"] is None and not (out / "tuning_early.png").exists()
    assert "score" in saved["score_definition"]
    assert all(len(s["channels"]) == 5 and s["chosen_by"] == "score" for s in saved["stages"])


def test_user_layers_and_channels_override(peppers_path, tmp_path, mobilenet):
    result = fm.run(fm.Config(image=peppers_path, out=tmp_path / "fm", layers=["features.1", "features.5", "features.14"],
                              channels=["0,1,2"], top_k=0))
    assert [s.layer for s in result.stages] == ["features.1", "features.5", "features.14"]
    assert all([c["channel"] for c in s.channels] == [0, 1, 2] and s.chosen_by == "user" for s in result.stages)
    with pytest.raises(ValueError, match="depth order"):
        fm.run(fm.Config(image=peppers_path, out=tmp_path / "x", layers=["features.14", "features.5", "features.1"], top_k=0))
    with pytest.raises(ValueError, match="unknown layer"):
        fm.run(fm.Config(image=peppers_path, out=tmp_path / "y", layers=["nope", "features.5", "features.14"], top_k=0))


def test_scores_prefer_structure_and_reject_dead_channels():
    torch.manual_seed(0)
    H = W = 16
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    smooth = torch.sin(xx / 3.0) + torch.cos(yy / 4.0)  # structured
    noise = torch.randn(H, W)  # no spatial structure
    dead = torch.full((H, W), 3.0)
    fmap = torch.stack([noise, dead, smooth, smooth * 2 + 1])  # channel 3 duplicates channel 2
    scores = score_channels(fmap)
    assert scores[1].dead and scores[1].score == 0.0
    assert scores[2].score > 2 * scores[0].score
    chosen = [c.channel for c in choose_channels(fmap, k=2)]
    assert chosen[0] in (2, 3) and 1 not in chosen
    assert not {2, 3} <= set(chosen)  # the near-duplicate is skipped


def test_normalize01_per_map():
    x = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]])
    n = normalize01(x)
    assert torch.allclose(n[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.all(n[1] == 0)


def test_candidate_layers_on_a_tiny_network():
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()
    layers = candidate_layers(net)
    assert [layer.name for layer in layers] == ["0.0", "0.2", "0.4"]
    stages = pick_stages(layers)
    assert stages["early"].depth < stages["middle"].depth < stages["late"].depth
    out = extract(net, torch.rand(1, 3, 12, 12), ["0.0", "0.4"])
    assert out["0.0"].shape == (1, 4, 10, 10) and out["0.4"].shape == (1, 4, 6, 6)
    assert not net.training


# ----------------------------------------------------------------------------- receptive fields
def test_receptive_field_of_mobilenet_blocks_matches_a_hand_computation():
    from torchvision.models import mobilenet_v2

    from cnnlab.featuremaps.receptive import receptive_field

    net = mobilenet_v2().eval()  # the architecture only: no weights needed
    # features.0: 3x3 stride 2 -> 3 px, jump 2; features.1: a 3x3 depthwise conv -> 3 + 2*2 = 7;
    # features.2: 3x3 stride-2 depthwise -> 7 + 2*2 = 11, jump 4; features.3: 3x3 -> 11 + 2*4 = 19,
    # its residual branch (11 px) lies inside. Every conv is centred (padding = (k-1)/2), so start 0.
    expected = {"features.0": (3, 2), "features.1": (7, 2), "features.2": (11, 4), "features.3": (19, 4)}
    for node, (size, jump) in expected.items():
        rf = receptive_field(net, node)
        assert rf.size == (size, size) and rf.jump == (jump, jump) and rf.start == (0, 0), node
    rf = receptive_field(net, "features.3")
    assert rf.box(10, 20) == (40 - 9, 80 - 9, 40 + 10, 80 + 10)  # centre (4*10, 4*20), 19 px wide
    assert rf.box(0, 0, 224, 224) == (0, 0, 10, 10)  # clipped at the image border


def _chain():
    return nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.AvgPool2d(2), nn.Conv2d(1, 1, 3, padding=2, dilation=2))


def test_receptive_field_with_pooling_and_dilation_is_the_gradient_support():
    from cnnlab.featuremaps.receptive import receptive_field

    torch.manual_seed(0)
    net = nn.Sequential(_chain()).eval()
    rf = receptive_field(net, "0")
    # 5x5 -> 5 px; 2x2 pool stride 2 -> 6 px, start 0.5, jump 2; 3x3 dilated by 2 (5 px) -> 6 + 4*2 = 14
    assert rf.size == (14, 14) and rf.jump == (2, 2) and rf.start == (0.5, 0.5)
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    net(x)[0, 0, 5, 5].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    top, left, bottom, right = rf.box(5, 5)
    assert (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1) == (top, left, bottom, right)


def test_receptive_field_refuses_graphs_it_cannot_follow():
    from cnnlab.errors import CnnlabError
    from cnnlab.featuremaps.receptive import receptive_field

    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(4), nn.Conv2d(4, 4, 3))).eval()
    with pytest.raises(CnnlabError, match="AdaptiveAvgPool2d"):
        receptive_field(net, "0")


# ----------------------------------------------------------------------------- tuning over an image set
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220)}


def _square_images(root, per_class=5, size=64, seed=0):
    """Grey noise with one coloured square per image, in the part of the image the crop keeps."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(rng.normal(128, 12, (size, size, 3)), 0, 255)
            y, x = rng.integers(14, size - 24, 2)
            arr[y:y + 10, x:x + 10] = rgb
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


def _colour_model():
    """Channel 0 fires only on red, channel 1 only on green (on normalized input), then a 3x3 blur."""
    from cnnlab.models.pretrained import ImageNetClassifier, resolve

    detect = nn.Conv2d(3, 2, 1)
    blur = nn.Conv2d(2, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        detect.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5]]).view(2, 3, 1, 1))
        detect.bias.fill_(-1.0)
        blur.weight.zero_()
        blur.weight[0, 0], blur.weight[1, 1] = 1 / 9, 1 / 9
    net = nn.Sequential(nn.Sequential(detect, nn.ReLU(), blur), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1000))
    return ImageNetClassifier(net, resolve("mobilenet_v2")).eval()


def test_a_colour_channel_picks_patches_of_that_colour(tmp_path, one_thread):
    from cnnlab.featuremaps.imageset import folder_set
    from cnnlab.featuremaps.receptive import receptive_field
    from cnnlab.featuremaps.selectivity import chance_level, channel_selectivity
    from cnnlab.featuremaps.tuning import activations, patch, response_box, top_images, top_images_all

    model = _colour_model()
    images = folder_set(_square_images(tmp_path / "set"))
    acts = activations(model, images, ["0"], cache_dir=None, workers=0)
    stats = acts.layers["0"]
    rf = receptive_field(model.net, "0")
    assert rf.size == (3, 3)
    for channel, colour in ((0, "red"), (1, "green")):
        top = top_images(stats, channel, 5)
        assert [images.class_of(i) for i in top] == [colour] * 5
        for i in top:
            where = response_box(stats, i, channel, acts.shapes["0"][2], rf, (224, 224))
            crop = EvalTransformLoad(model, images.paths[i])
            p = patch(crop, rf, where["y"], where["x"])  # 3 x 3 x 3 in [0, 1]
            r, g, b = p.reshape(-1, 3).mean(0)
            want = {"red": r, "green": g}[colour]
            assert want > 0.6 and want > 2 * min(r, g, b), (colour, p.reshape(-1, 3).mean(0))
    labels = np.asarray(images.labels)
    chance = chance_level(labels, 5)
    sel = channel_selectivity(top_images_all(stats, 5), labels, np.ones(2, dtype=bool), chance)
    assert sel.selective.tolist() == [True, True] and np.allclose(sel.selectivity, 1.0)
    assert [images.classes[c] for c in sel.top_class] == ["red", "green"]


def EvalTransformLoad(model, path):
    from cnnlab.probe.extract import EvalTransform

    return EvalTransform.from_model(model).load(path)


def test_activation_cache_is_reused_and_rebuilt_when_corrupt(tmp_path, one_thread, caplog):
    from cnnlab.featuremaps.imageset import folder_set
    from cnnlab.featuremaps.tuning import activations

    model = _colour_model()
    images = folder_set(_square_images(tmp_path / "set", per_class=2))
    first = activations(model, images, ["0", "0.0"], cache_dir=tmp_path / "cache", workers=0)
    assert first.cache == "missing" and first.seconds > 0
    again = activations(model, images, ["0", "0.0"], cache_dir=tmp_path / "cache", workers=0)
    assert again.cache == "hit" and again.seconds == 0.0
    for layer in ("0", "0.0"):
        for stat in ("max", "mean", "argmax"):
            assert torch.equal(again.layers[layer][stat], first.layers[layer][stat])
    path = tmp_path / "cache" / next(p.name for p in (tmp_path / "cache").iterdir())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor bytes: the file parses, the checksum fails
    path.write_bytes(bytes(data))
    rebuilt = activations(model, images, ["0", "0.0"], cache_dir=tmp_path / "cache", workers=0)
    assert rebuilt.cache == "corrupted" and "checksum" in caplog.text
    assert torch.equal(rebuilt.layers["0"]["max"], first.layers["0"]["max"])
    assert activations(model, images, ["0", "0.0"], cache_dir=tmp_path / "cache", workers=0).cache == "hit"
    # another layer list is another cache entry, not a stale overwrite of this one
    assert activations(model, images, ["0"], cache_dir=tmp_path / "cache", workers=0).cache == "missing"


def test_selectivity_against_chance():
    from cnnlab.featuremaps.selectivity import chance_level, channel_selectivity, summarize

    labels = np.repeat(np.arange(4), 10)  # 4 balanced classes
    chance = chance_level(labels, 8, seed=0)
    assert 0.25 < chance.mean_top_share < 0.6 < chance.top_share_threshold <= 1
    assert chance.p_value(np.array([1.0]))[0] <= 0.01 < chance.p_value(np.array([0.375]))[0]
    top = np.array([np.arange(8),  # 8 images of class 0
                    [0, 10, 20, 30, 1, 11, 21, 31],  # two of each class: as mixed as can be
                    np.arange(8)])
    sel = channel_selectivity(top, labels, np.array([True, True, False]), chance)
    assert sel.selective.tolist() == [True, False, False]
    assert sel.selectivity[0] == pytest.approx(1.0) and sel.selectivity[1] < 0.1 and np.isnan(sel.selectivity[2])
    s = summarize(sel)
    assert (s.alive, s.selective, s.mixed) == (2, 1, 1)


def test_selective_choice_ranks_by_selectivity_among_live_channels():
    H = W = 8
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    fmap = torch.stack([torch.sin(xx / 2.0), torch.full((H, W), 2.0), torch.cos(yy / 2.0), xx.float() * yy])
    chosen = choose_channels(fmap, k=2, rank=[0.1, 0.9, 0.8, float("nan")])
    assert [c.channel for c in chosen] == [2, 0]  # channel 1 is dead on the photo, channel 3's rank unknown
    # channels 2 and 0 prefer the same class: the next channel of another class comes before 0
    chosen = choose_channels(fmap, k=2, rank=[0.1, 0.9, 0.8, 0.05], groups=[5, 1, 5, 7])
    assert [c.channel for c in chosen] == [2, 3]
    # an unranked channel (dead on the image set) comes last even though its group is new
    chosen = choose_channels(fmap, k=2, rank=[0.1, 0.9, 0.8, float("nan")], groups=[5, 1, 5, -1])
    assert [c.channel for c in chosen] == [2, 0]


# ----------------------------------------------------------------------------- the verb with an image set
def test_run_with_an_image_set_writes_tuning_and_selectivity(peppers_path, tmp_path, mobilenet):
    _square_images(tmp_path / "set", per_class=3)
    result = fm.run(fm.Config(image=peppers_path, out=tmp_path / "fm", per_stage=3, top_k=3, select="selective",
                              dataset=tmp_path / "set", builtin_photos=False, cache_dir=tmp_path / "cache"))
    out = tmp_path / "fm"
    for name in ("tuning_early.png", "tuning_middle.png", "tuning_late.png", "selectivity.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "featuremaps.json").read_text())
    assert saved["image_set"]["images"] == 9 and saved["image_set"]["classes"] == 3
    assert saved["chance"]["k"] == 3 and saved["chance"]["top_share_threshold"] is None  # 3 per class: too few
    for stage in saved["stages"]:
        assert stage["chosen_by"] == "selective" and stage["receptive_field"]["size"][0] >= 3
        sel = np.array(stage["all_channels"]["selectivity"], dtype=float)
        picked = [c["selectivity"] for c in stage["channels"]]
        assert len(stage["channels"]) == 3 and all(len(c["top_images"]) == 3 for c in stage["channels"])
        assert max(picked) == pytest.approx(np.nanmax(sel[~np.array(stage["all_channels"]["alive"]) == False]))  # noqa: E712
        assert stage["set_summary"]["alive"] + stage["set_summary"]["dead_on_set"] == stage["shape"][0]
    maps = np.load(out / "maps.npz")
    assert maps["early_on_photo"].shape == (3, 224, 224)
    assert result.stages[2].set_summary["channels"] == 1280


def test_selective_needs_labels_and_the_cli_says_so(tmp_path, capsys, peppers_path):
    from cnnlab.cli import main

    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(flat / "a.png")
    code = main(["featuremaps", str(peppers_path), "--select", "selective", "--dataset", str(flat),
                 "--no-builtin-photos", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "labelled images" in err
    with pytest.raises(ValueError, match="top-k"):
        fm.Config(select="selective", top_k=0)
    with pytest.raises(ValueError, match="max-per-class"):
        fm.Config(max_per_class=-1)


def test_image_sets_from_folders_and_photos(tmp_path):
    from PIL import Image

    from cnnlab.featuremaps.imageset import balanced_subset, folder_set, with_photos

    for split, name, n in (("train", "cat", 2), ("train", "dog", 1), ("test", "cat", 1), ("test", "dog", 2)):
        (tmp_path / "tt" / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / "tt" / split / name / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "tt" / "loose.png")
    s = folder_set(tmp_path / "tt")
    assert s.classes == ("cat", "dog") and len(s) == 7 and s.has_classes
    assert sorted(s.labels) == [-1, 0, 0, 0, 1, 1, 1] and s.class_of(len(s) - 1) == "-"
    both = with_photos(s, [tmp_path / "tt" / "loose.png", tmp_path / "tt" / "train" / "cat" / "0.png"])
    assert len(both) == 7  # files already in the set are not added twice
    sub = balanced_subset(s, 1, seed=3)  # one per class, unlabelled kept, order kept
    assert sorted(sub.labels) == [-1, 0, 1] and list(sub.paths) == sorted(sub.paths, key=list(s.paths).index)
    assert balanced_subset(s, 1, seed=3) == sub and balanced_subset(s, 5) is s
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    f = folder_set(flat)
    assert len(f) == 1 and not f.has_classes and f.labels == (-1,)
