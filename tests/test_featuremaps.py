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


def test_real_run_writes_files_and_valid_choices(peppers_path, tmp_path, mobilenet):
    result = fm.run(fm.Config(image=peppers_path, out=tmp_path / "fm", per_stage=5))
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
    saved = json.loads((out / "featuremaps.json").read_text())
    assert "score" in saved["score_definition"]
    assert all(len(s["channels"]) == 5 and s["chosen_by"] == "score" for s in saved["stages"])


def test_user_layers_and_channels_override(peppers_path, tmp_path, mobilenet):
    result = fm.run(fm.Config(image=peppers_path, out=tmp_path / "fm", layers=["features.1", "features.5", "features.14"],
                              channels=["0,1,2"]))
    assert [s.layer for s in result.stages] == ["features.1", "features.5", "features.14"]
    assert all([c["channel"] for c in s.channels] == [0, 1, 2] and s.chosen_by == "user" for s in result.stages)
    with pytest.raises(ValueError, match="depth order"):
        fm.run(fm.Config(image=peppers_path, out=tmp_path / "x", layers=["features.14", "features.5", "features.1"]))
    with pytest.raises(ValueError, match="unknown layer"):
        fm.run(fm.Config(image=peppers_path, out=tmp_path / "y", layers=["nope", "features.5", "features.14"]))


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
