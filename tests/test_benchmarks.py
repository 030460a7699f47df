"""The benchmark scripts' baselines: like-for-like precision (bench_train) and the plain loop's
own batch size and DataLoader workers (bench_extract), on tiny models and synthetic data."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

from cnnlab.precision import Precision

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_train():
    return load_script("bench_train")


@pytest.fixture(scope="module")
def bench_extract():
    return load_script("bench_extract")


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


@pytest.mark.parametrize("bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_plain_epoch_runs_in_the_requested_precision(bench_train, one_thread, bf16, dtype):
    torch.manual_seed(0)
    model = tiny_net()
    seen_dtypes = []
    model[0].register_forward_hook(lambda m, i, out: seen_dtypes.append(out.dtype))
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 8, 8), torch.randint(0, 10, (12,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[0].weight.detach().clone()

    seen = bench_train.plain_epoch(model, loader, opt, Precision(bf16=bf16, channels_last=False))

    assert seen == 12
    assert seen_dtypes == [dtype] * 3  # every step's convolution ran in that precision
    assert model[0].weight.dtype == torch.float32  # autocast leaves the fp32 master weights
    assert not torch.equal(model[0].weight, before)  # the optimizer stepped


def test_plain_epoch_channels_last_feeds_that_layout(bench_train, one_thread):
    model = tiny_net().to(memory_format=torch.channels_last)
    layouts = []
    model[0].register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bench_train.plain_epoch(model, torch.utils.data.DataLoader(data, batch_size=4), opt, Precision(True, True))
    assert layouts == [True]


BF16 = {"bf16": True, "channels_last": False}
FP32 = {"bf16": False, "channels_last": False}


def test_like_for_like_pairs_each_engine_side_with_the_plain_side_of_its_precision(bench_train):
    precisions = {"plain": FP32, "plain-bf16": BF16, "cnnlab": BF16, "cnnlab-fp32": FP32,
                  "cnnlab-default-malloc": BF16}
    assert bench_train.like_for_like(precisions) == {
        "cnnlab": "plain-bf16", "cnnlab-fp32": "plain", "cnnlab-default-malloc": "plain-bf16"}
    # bf16 + channels_last has no plain twin here: no like-for-like ratio rather than a wrong one
    assert bench_train.like_for_like({"plain": FP32, "cnnlab": {"bf16": True, "channels_last": True}}) == {}


def test_summary_ratios_are_per_round_medians_against_the_right_baseline(bench_train):
    rates = {"plain": [100, 50, 80], "plain-bf16": [200, 100, 100], "cnnlab": [400, 150, 500]}
    rounds = [{"round": r, "loop": side, "images_per_s": v[r]} for side, v in rates.items() for r in range(3)]
    s = bench_train.summarize(rounds, {"plain": FP32, "plain-bf16": BF16, "cnnlab": BF16})
    assert s["median_images_per_s"] == {"plain": 80, "plain-bf16": 100, "cnnlab": 400}
    assert s["vs_plain"]["cnnlab"]["median_round_ratio"] == pytest.approx(4.0)  # 4, 3, 6.25
    assert s["vs_plain"]["cnnlab"]["best_ratio"] == pytest.approx(5.0)  # 500 / 100
    lfl = s["like_for_like"]["cnnlab"]
    assert lfl["baseline"] == "plain-bf16"
    assert lfl["median_round_ratio"] == pytest.approx(2.0)  # 2, 1.5, 5
    assert lfl["best_ratio"] == pytest.approx(2.5)  # 500 / 200


class FakeClassifier(nn.Module):
    """What plain_features needs of cnnlab's ImageNetClassifier; records each batch's size."""

    resize_size, crop_size, interpolation = [12], [8], InterpolationMode.BILINEAR

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        self.batches.append(B)
        return x.mean(dim=(2, 3))  # B, 3


@pytest.fixture
def pngs(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_plain_features_uses_the_given_batch_size_and_workers(bench_extract, pngs, one_thread):
    model = FakeClassifier()
    serial = bench_extract.plain_features(model, pngs, batch_size=2, workers=0)
    assert model.batches == [2, 2, 1]
    model.batches.clear()
    parallel = bench_extract.plain_features(model, pngs, batch_size=4, workers=2)
    assert model.batches == [4, 1]
    assert parallel.shape == (5, 3)
    torch.testing.assert_close(parallel, serial)  # the workers keep the order of the images


def test_the_sweep_covers_the_grid_once_with_the_fixed_baseline_as_plain(bench_extract, pngs, one_thread):
    args = argparse.Namespace(plain_batches="2,64", plain_workers="0,1", batch_size=16)
    model = FakeClassifier()
    methods = bench_extract.build_methods(model, args, "fp32")
    plains = [k for k in methods if k.startswith("plain")]
    assert plains == ["plain", "plain-b2-w0", "plain-b2-w1", "plain-b64-w1"]  # (64, 0) is "plain"
    methods["plain-b2-w1"](pngs)
    assert model.batches == [2, 2, 1]


def test_summary_quotes_the_fastest_plain_configuration(bench_extract):
    f = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    feats = {k: [f[:2], f[2:]] for k in ("plain", "plain-b16-w2", "cnnlab")}
    seconds = {"plain": 8.0, "plain-b16-w2": 4.0, "cnnlab": 1.0}
    rounds = [{"plain": 1.0, "plain-b16-w2": 2.0, "cnnlab": 8.0}, {"plain": 1.0, "plain-b16-w2": 3.0, "cnnlab": 6.0}]
    s = bench_extract.summarize(4, seconds, feats, rounds)
    assert s["plain_best"] == "plain-b16-w2"
    m = s["methods"]["cnnlab"]
    assert m["speedup_vs_plain"] == pytest.approx(8.0)
    assert m["speedup_vs_plain_best"] == pytest.approx(4.0)
    assert m["median_round_speedup_vs_plain_best"] == pytest.approx(3.0)  # median of 4 and 2
    assert m["cosine_vs_plain_min"] == pytest.approx(1.0)


def _search_record(model: str, epochs: int, val: float | None) -> dict:
    name = f"val-{model}-e{epochs}" if val is not None else f"test-{model}-e{epochs}-s0"
    return {"name": name, "model": model, "val_split": 5000 if val is not None else 0,
            "result": {"val_accuracy": val, "test_accuracy": 0.99}}


def test_round_3_takes_the_fewest_epochs_that_clear_the_target_on_validation_only():
    search = load_script("recipe_search")
    grid = {"hw-mish": {f"e{n}": ["--epochs", str(n)] for n in (12, 6, 8)},  # listed out of order
            "hw-mish-bn": {f"e{n}": ["--epochs", str(n)] for n in (8, 20)}}
    bar = search.TARGET["hw-mish"] + search.MARGIN
    records = [_search_record("hw-mish", 6, bar - 0.001), _search_record("hw-mish", 8, bar),
               _search_record("hw-mish", 12, bar + 0.05), _search_record("hw-mish", 6, None),
               _search_record("hw-mish-bn", 8, 0.80), _search_record("hw-mish-bn", 20, 0.8599)]
    # 6 epochs misses the bar by 0.1 point (its perfect test run is ignored); 8 reaches it exactly;
    # no hw-mish-bn length clears 86 %, so it gets no entry and keeps its recipe
    assert search.shortest(records, grid) == {"hw-mish": ["--epochs", "8"]}


def test_round_4_takes_the_fewest_epochs_then_the_best_validation_among_changed_recipes():
    search = load_script("recipe_search")
    grid = {"hw-mish-bn": {"e25": ["--epochs", "25"], "la-e15": ["--epochs", "15", "--lookahead"],
                           "ls2-e15": ["--epochs", "15", "--label-smoothing", "0.2"],
                           "mu2-e12": ["--epochs", "12", "--muon-lr", "0.2"]}}
    bar = search.TARGET["hw-mish-bn"] + search.MARGIN

    def record(key: str, val: float | None) -> dict:
        return {"name": f"val-hw-mish-bn-{key}" if val is not None else f"test-hw-mish-bn-{key}-s0",
                "model": "hw-mish-bn", "val_split": 5000 if val is not None else 0,
                "result": {"val_accuracy": val, "test_accuracy": 0.99}}

    records = [record("e25", bar + 0.02), record("la-e15", bar + 0.001), record("ls2-e15", bar + 0.004),
               record("mu2-e12", bar - 0.001), record("mu2-e12", None)]
    # 12 epochs misses the bar (its test run never counts); of the two 15-epoch candidates that
    # clear it the better on validation wins, although 25 epochs would be more accurate still
    assert search.shortest(records, grid) == {"hw-mish-bn": ["--epochs", "15", "--label-smoothing", "0.2"]}
    assert search.shortest(records[-2:], grid) == {}
    assert all(search.epochs_of(f) in (12, 15, 20, 22, 25) for f in search.ROUND4["hw-mish-bn"].values())


def test_only_restricts_a_round_to_declared_candidates_and_rejects_unknown_keys():
    search = load_script("recipe_search")
    grid = {"hw-mish": {"e6": ["--epochs", "6"], "e8": ["--epochs", "8"]},
            "hw-mish-bn": {"t2-e20": ["--epochs", "20", "--translate", "2"], "e22": ["--epochs", "22"]}}
    assert search.subset(grid, None) is grid
    # a model none of whose candidates is named drops out, so none of its runs is trained
    assert search.subset(grid, ["t2-e20"]) == {"hw-mish-bn": {"t2-e20": ["--epochs", "20", "--translate", "2"]}}
    with pytest.raises(SystemExit, match="e7"):
        search.subset(grid, ["e6", "e7"])


def test_rounds_3_and_4_start_from_the_defaults_they_ran_with():
    search = load_script("recipe_search")
    # round 4 changed hw-mish-bn's default to translate 2; its candidates (and round 3's) were
    # declared against translate 4, which a rerun must still train
    assert search.base_flags(4, "hw-mish-bn") == ["--translate", "4"]
    assert search.base_flags(3, "hw-mish") == []
    assert search.base_flags(1, "hw-mish-bn")[:2] == ["--epochs", "30"]


def test_cifar_pack_rebuilds_the_batch_files_byte_exact_and_flags_a_wrong_md5(tmp_path, monkeypatch):
    pack = load_script("cifar_pack")
    monkeypatch.setattr(pack, "GRID", 3)  # 9 records per file instead of 10,000
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (9, pack.RECORD), dtype=np.uint8).tobytes()
    labels, mosaic = pack.to_mosaic(raw)
    assert mosaic.shape == (96, 96, 3) and list(labels) == list(raw[::pack.RECORD])
    # image 1 is the tile right of image 0: its red plane's first byte is pixel (0, 32)
    assert mosaic[0, 32, 0] == raw[pack.RECORD + 1] and pack.from_mosaic(labels, mosaic) == raw
    src = tmp_path / "data" / pack.FOLDER
    src.mkdir(parents=True)
    (src / "test_batch.bin").write_bytes(raw)
    pack.pack(tmp_path / "data", tmp_path / "packed", ("test_batch",))
    bad = pack.unpack(tmp_path / "packed", tmp_path / "out")
    assert (tmp_path / "out" / pack.FOLDER / "test_batch.bin").read_bytes() == raw  # lossless
    assert bad == ["test_batch"]  # random bytes are not the official file
