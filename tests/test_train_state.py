"""cnnlab.train.state: a training state saved and loaded continues exactly as if never interrupted."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.cifar10 import Split
from cnnlab.distributed import Context
from cnnlab.models.cifar import build
from cnnlab.precision import FP32
from cnnlab.train.config import Config
from cnnlab.train.loop import train_epoch
from cnnlab.train.state import TrainState


def _data() -> Split:
    g = torch.Generator().manual_seed(3)
    return Split(torch.randint(0, 256, (32, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.randint(0, 10, (32,), generator=g))


def _fresh_state(model_seed: int, **recipe) -> TrainState:
    # improved: lookahead, alternating flip, a frozen whitening bias after 1 epoch, BatchNorm bias groups
    changes = dict(epochs=3, batch_size=8, whiten_bias_epochs=1, lookahead=True, **recipe)
    torch.manual_seed(model_seed)
    return TrainState.create(build("improved"), Config(model="improved", recipe=changes).recipe, seed=0, images=32)


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_a_saved_state_continues_like_the_uninterrupted_one(tmp_path, optimizer):
    data, ctx = _data(), Context()
    recipe = dict(optimizer="muon", muon_lr=0.05, muon_momentum=0.9) if optimizer == "muon" else dict(optimizer="sgd")
    first = _fresh_state(0, **recipe)
    train_epoch(first, data, ctx=ctx, precision=FP32)
    first.history.append({"epoch": 1, "train_loss": 2.0})
    first.processes.append({"first_epoch": 1, "device": "cpu"})
    first.save(tmp_path / "checkpoint.pt")
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # plain data only
    assert (saved["epoch"], saved["step"]) == (1, 4) and "lookahead" in saved
    for _ in range(2):
        train_epoch(first, data, ctx=ctx, precision=FP32)

    resumed = _fresh_state(1, **recipe)  # other initial weights: everything must come from the file
    resumed.resume(tmp_path / "checkpoint.pt", "cpu")
    assert (resumed.epoch, resumed.step, resumed.history, resumed.processes) == \
        (1, 4, [{"epoch": 1, "train_loss": 2.0}], [{"first_epoch": 1, "device": "cpu"}])
    for _ in range(2):
        train_epoch(resumed, data, ctx=ctx, precision=FP32)
    assert (resumed.epoch, resumed.step) == (first.epoch, first.step) == (3, 12)
    a, b = first.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(first.generator.get_state(), resumed.generator.get_state())

    # without the checkpoint the same two epochs end elsewhere: the comparison above can fail
    other = _fresh_state(1, **recipe)
    for _ in range(3):
        train_epoch(other, data, ctx=ctx, precision=FP32)
    assert not torch.equal(other.model.state_dict()["head.weight"], a["head.weight"])


def test_wall_time_adds_the_earlier_processes():
    state = _fresh_state(0)
    state.load_state_dict({**state.state_dict(), "wall_seconds": 100.0})
    assert 100.0 <= state.wall_seconds() < 200.0
    assert state.state_dict()["wall_seconds"] >= 100.0


def test_a_checkpoint_of_another_format_is_a_clear_error():
    from cnnlab.errors import CnnlabError

    state = _fresh_state(0)
    saved = state.state_dict()
    assert tuple(saved) == state.state_dict_keys()
    del saved["processes"]
    with pytest.raises(CnnlabError, match="lacks processes"):
        state.load_state_dict(saved)


@pytest.mark.parametrize("steps, averaged", [(3, False), (8, True)])
def test_lookahead_ends_on_the_average_only_after_one_averaging_period(steps, averaged):
    """A run shorter than the lookahead's period (5 steps) keeps its trained weights: its average
    would hold only the initial ones. A longer run ends on the average."""
    from cnnlab.train.loop import Lookahead

    recipe = Config(model="improved", recipe=dict(epochs=1, batch_size=4, lookahead=True, optimizer="sgd")).recipe
    torch.manual_seed(0)
    state = TrainState.create(build("improved"), recipe, seed=0, images=4 * steps)
    start = state.model.state_dict()["head.weight"].clone()
    data = _data()
    train_epoch(state, Split(data.images[:4 * steps], data.labels[:4 * steps]), ctx=Context(), precision=FP32)
    assert state.step == steps and (steps >= Lookahead.every) == averaged
    trained = state.model.state_dict()["head.weight"]
    assert not torch.equal(trained, start)  # never reset to the initial weights
    assert torch.equal(trained, state.lookahead.ema["head.weight"]) == averaged
