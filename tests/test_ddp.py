"""Data-parallel training on two CPU ranks (torchrun, gloo): weights identical across ranks and equal
(within a stated tolerance) to one process on the same global batches, with and without BatchNorm
(synchronized over the ranks); precise BN, TTA and resume under DDP; the synchronized layer itself."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from cnnlab import distributed
from cnnlab.models.cifar import build
from cnnlab.train.config import Config
from cnnlab.train.loop import make_optimizer, param_groups

# each spec is MODEL[:bf16|:muon] (SGD in fp32 unless named); one torchrun launch trains them all (its start-up is most of the time)
SPECS = ("hw-mish", "hw-mish-bn", "hw-mish-bn:bf16", "hw-mish-bn:muon")

WORKER = textwrap.dedent("""
    import sys, torch
    from cnnlab.data.cifar10 import Split
    from cnnlab.models.cifar import build
    from cnnlab import distributed
    from cnnlab.precision import Precision
    from cnnlab.train.config import Config
    from cnnlab.train.loop import evaluate, precise_bn, train_epoch
    from cnnlab.train.state import TrainState

    out = sys.argv[1]
    g = torch.Generator().manual_seed(1)
    data = Split(torch.randint(0, 256, (48, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.randint(0, 10, (48,), generator=g))
    ctx = distributed.setup("cpu")
    for spec in sys.argv[2:]:
        name, _, mode = spec.partition(":")
        torch.manual_seed(0)
        model = build(name)
        net = distributed.wrap(model, ctx)
        precision = Precision(mode == "bf16", False)
        optimizer = dict(optimizer="muon", muon_lr=0.05, muon_momentum=0.9) if mode == "muon" else dict(optimizer="sgd")
        recipe = Config.from_flat(model=name, batch_size=16, epochs=1, lr=0.05, lookahead=False, **optimizer).recipe
        state = TrainState.create(model, recipe, seed=0, images=len(data))  # 3 steps of 16
        stats = train_epoch(state, data, ctx=ctx, precision=precision, net=net)
        opt, step = state.optimizer, state.step
        trained = {k: v.clone() for k, v in model.state_dict().items()}
        precise_bn(model, data, precision=precision, batch_size=15, ctx=ctx)  # shares of 8 and 7, 2 and 1
        tta = evaluate(model, data, ctx=ctx, precision=precision, tta=True, batch_size=16)
        torch.save({"state": trained, "optimizer": opt.state_dict(), "precise": model.state_dict(),
                    "tta": tta, "loss": stats.loss, "images": stats.images, "steps": step,
                    "norms": sorted({type(m).__name__ for m in model.modules()
                                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)})},
                   f"{out}/{spec}_rank{ctx.rank}_of{ctx.world_size}.pt")
    # one BatchNorm layer, rank 0 holding the whole batch and rank 1 an empty share
    g = torch.Generator().manual_seed(2)
    xs, up = torch.randn(5, 3, 4, 4, generator=g) * 2 + 1, torch.randn(5, 3, 4, 4, generator=g)
    bn = distributed.sync_batchnorm(torch.nn.BatchNorm2d(3), "cpu")
    n = 5 if ctx.rank == 0 else 0
    x = xs[:n].clone().requires_grad_()
    y = bn(x)
    (y * up[:n]).sum().backward()
    torch.save({"y": y.detach(), "dx": x.grad, "dw": bn.weight.grad, "db": bn.bias.grad, "state": bn.state_dict()},
               f"{out}/uneven_rank{ctx.rank}_of{ctx.world_size}.pt")
    distributed.teardown(ctx, wait=True)  # without the barrier a rank aborts now and then
""")

# Tolerances, as allclose(rtol=s, atol=s/10). fp32: the ranks add their per-channel sums in
# another order than one process's fused kernel, so weights and statistics agree to rounding grown
# over 3 steps (measured: s = 1e-6); s = 1e-4 leaves a wide margin, while unsynchronized BatchNorm
# (each rank normalizing its 8 images alone) needs s = 6e-2. bf16: activations keep 8 mantissa bits
# and one ulp (0.4 %) flips wherever the two summation orders round differently (measured: s = 7e-4
# for the weights, 5e-3 for the precise-BN statistics, averages of rounded activations); s = 1e-2
# (2e-2 for those statistics) passes that and still fails unsynchronized weights (s = 6e-2).
# Muon: torch.optim.Muon orthogonalizes each update in bf16, so the filters' steps round like bf16
# activations (measured in fp32 training: 6.5e-4 for the weights, 3.1e-3 for the statistics); it
# takes the bf16 tolerances.
TOLERANCE = {"fp32": dict(rtol=1e-4, atol=1e-5), "bf16": dict(rtol=1e-2, atol=1e-3)}
PRECISE_BN_TOLERANCE = {"fp32": TOLERANCE["fp32"], "bf16": dict(rtol=2e-2, atol=2e-3)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{spec: (rank 0, rank 1, one process)} results of the same steps."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(out), *SPECS], capture_output=True, text=True, timeout=240, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [str(script), str(out), *SPECS])
        mp.delenv("WORLD_SIZE", raising=False)
        runpy.run_path(str(script), run_name="__main__")  # the same steps in this one process
    ranks = ("rank0_of2", "rank1_of2", "rank0_of1")
    return {s: tuple(torch.load(out / f"{s}_{r}.pt", weights_only=True) for r in ranks) for s in (*SPECS, "uneven")}


def _assert_close(a: dict, b: dict, tol: dict) -> None:
    for k in b:
        assert torch.allclose(a[k].double(), b[k].double(), **tol), \
            f"{k}: max difference {(a[k].double() - b[k].double()).abs().max():.3g}"


@pytest.mark.parametrize("spec", SPECS)
def test_two_ranks_match_each_other_and_one_process(runs, spec):
    r0, r1, one = runs[spec]
    kind = "bf16" if spec.endswith((":bf16", ":muon")) else "fp32"
    tol = TOLERANCE[kind]
    assert r0["steps"] == one["steps"] == 3 and r0["images"] == one["images"] == 48
    for k in one["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # ranks never drift apart
    _assert_close(r0["state"], one["state"], tol)  # weights and BatchNorm running statistics
    assert abs(r0["loss"] - one["loss"]) < tol["rtol"] * abs(one["loss"])
    # precise BatchNorm statistics and evaluation with test-time augmentation under DDP
    _assert_close(r0["precise"], one["precise"], PRECISE_BN_TOLERANCE[kind])
    assert r0["tta"] == pytest.approx(one["tta"], rel=PRECISE_BN_TOLERANCE[kind]["rtol"])
    # the weights really moved (a no-op trainer would pass the equalities above)
    torch.manual_seed(0)
    fresh = build(spec.partition(":")[0]).state_dict()
    assert not torch.allclose(fresh["features.0.weight"], one["state"]["features.0.weight"])


def test_batchnorm_is_synchronized_only_under_ddp(runs):
    r0, _, one = runs["hw-mish-bn"]
    assert r0["norms"] == ["CpuSyncBatchNorm"] and one["norms"] == ["BatchNorm2d"]
    assert runs["hw-mish"][0]["norms"] == []


def test_an_empty_share_takes_part_forward_and_backward(runs):
    r0, r1, one = runs["uneven"]  # one process: plain BatchNorm over the same 5 images
    assert r1["y"].shape == (0, 3, 4, 4) and r1["dx"].shape == (0, 3, 4, 4)
    assert torch.equal(r1["dw"], torch.zeros(3)) and torch.equal(r1["db"], torch.zeros(3))  # no data, no share
    for k in ("y", "dx", "dw", "db"):
        torch.testing.assert_close(r0[k], one[k], rtol=1e-5, atol=1e-6)
    for k in ("running_mean", "running_var"):  # every rank updates them from the global batch
        torch.testing.assert_close(r0["state"][k], one["state"][k])
        torch.testing.assert_close(r1["state"][k], one["state"][k])


def test_a_ddp_checkpoint_resumes_in_one_plain_process(runs):
    """Rank 0's model and optimizer state load into a plain ``build`` (same keys, same groups)."""
    r0 = runs["hw-mish-bn"][0]
    model = build("hw-mish-bn")
    model.load_state_dict(r0["state"])  # strict: SyncBatchNorm keeps BatchNorm's state-dict keys
    optimizer = make_optimizer(model, Config.from_flat(model="hw-mish-bn", lr=0.05, optimizer="sgd").recipe)
    optimizer.load_state_dict(r0["optimizer"])
    saved, now = r0["optimizer"]["param_groups"], optimizer.state_dict()["param_groups"]
    assert [g["params"] for g in saved] == [g["params"] for g in now]
    assert [g["lr_scale"] for g in saved] == [g["lr_scale"] for g in now] == [1.0, 1.0]
    x = torch.rand(4, 3, 32, 32)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    optimizer.step()  # the momentum buffers restored from DDP fit this model's parameters
    assert torch.isfinite(loss)


def test_a_ddp_muon_checkpoint_resumes_in_one_plain_process(runs):
    """The same with Muon: its 2-D momentum buffers and SGD's groups load into a plain model's optimizer."""
    r0 = runs["hw-mish-bn:muon"][0]
    model = build("hw-mish-bn")
    model.load_state_dict(r0["state"])
    recipe = Config.from_flat(model="hw-mish-bn", lr=0.05, optimizer="muon", muon_lr=0.05, muon_momentum=0.9).recipe
    optimizer = make_optimizer(model, recipe)
    optimizer.load_state_dict(r0["optimizer"])
    buffers = [v["momentum_buffer"].shape for v in r0["optimizer"]["muon"]["state"].values()]
    assert buffers == [(64, 3 * 11 * 11), (128, 64 * 9), (128, 128 * 9)]
    before = model.features[0].weight.clone()
    model(torch.rand(4, 3, 32, 32)).logsumexp(1).mean().backward()
    optimizer.step()
    assert not torch.equal(before, model.features[0].weight)


# ----------------------------------------------------------------------------- in one process
@pytest.fixture
def one_rank_group(tmp_path):
    """A 1-rank gloo process group (its all-reduce is the identity), destroyed afterwards."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_batch_norm_over_ranks_matches_torch_forward_and_backward(one_rank_group):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64) * 3 + 2).requires_grad_()
    w = torch.rand(4, generator=g, dtype=torch.float64).add_(0.5).requires_grad_()
    b = torch.randn(4, generator=g, dtype=torch.float64).requires_grad_()
    y, mean, var, count = distributed.batch_norm_over_ranks(x, w, b, 1e-5, one_rank_group)
    ref = F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    assert y.dtype == torch.float64 and count == 6 * 5 * 5
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(var, x.var((0, 2, 3), unbiased=False))
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(y, (x, w, b), up)
    torch.testing.assert_close(ours, torch.autograd.grad(ref, (x, w, b), up))
    assert torch.autograd.gradcheck(lambda *t: distributed.batch_norm_over_ranks(*t, 1e-5, one_rank_group)[0],
                                    (x[:2, :2, :2, :3], w[:2], b[:2]))


def test_batch_norm_over_ranks_under_bf16_autocast(one_rank_group):
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)
    x = torch.rand(4, 3, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        ours = distributed.batch_norm_over_ranks(h, bn.weight, bn.bias, bn.eps, one_rank_group)[0]
        ref = bn(h)
    assert h.dtype == ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-2, atol=1e-2)  # a bf16 ulp or two


def test_sync_batchnorm_keeps_parameters_buffers_and_state_dict_keys():
    torch.manual_seed(0)
    model = build("hw-mish-bn")
    keys, params, buffers = list(model.state_dict()), list(model.parameters()), list(model.buffers())
    x = torch.rand(4, 3, 32, 32)
    ref_train, ref_eval = model.train()(x), model.eval()(x)
    assert distributed.sync_batchnorm(model, "cpu") is model  # converted in place
    kinds = [type(m) for m in model.modules() if isinstance(m, _BatchNorm)]
    assert kinds == [distributed.CpuSyncBatchNorm] * 3
    assert list(model.state_dict()) == keys
    assert all(p is q for p, q in zip(model.parameters(), params, strict=True))
    assert all(p is q for p, q in zip(model.buffers(), buffers, strict=True))
    assert torch.equal(model.eval()(x), ref_eval)
    assert torch.equal(model.train()(x), ref_train)  # no process group: plain BatchNorm
    cuda = distributed.sync_batchnorm(build("hw-mish-bn"), "cuda")  # torch's own layer on accelerators
    assert [type(m) for m in cuda.modules() if isinstance(m, _BatchNorm)] == [torch.nn.SyncBatchNorm] * 3


def test_optimizer_groups_are_the_same_after_the_conversion():
    recipe = Config(model="improved").recipe  # BatchNorm biases: 64x the lr
    plain = param_groups(build("improved"), recipe)
    synced = param_groups(distributed.sync_batchnorm(build("improved"), "cpu"), recipe)
    assert len(plain) == 2 and recipe.bias_lr_scale == 64
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in synced] == \
        [(len(g["params"]), g["lr"], g["weight_decay"]) for g in plain]


# ----------------------------------------------------------------------------- the train verb
@pytest.mark.slow
def test_a_run_resumed_under_torchrun_matches_one_uninterrupted_process(syn_root, tmp_path, monkeypatch):
    """hw-mish-bn (precise BN, TTA): epoch 1 in one process, epoch 2 on two ranks from its checkpoint."""
    from test_train import crash_in_second_epoch, tiny

    from cnnlab.runs import read_json
    from cnnlab.train import checkpoint, run

    sgd = dict(model="hw-mish-bn", deterministic=True, optimizer="sgd")  # fp32 all through (Muon steps in bf16)
    full = run(tiny(syn_root, tmp_path / "full", **sgd))
    crash_in_second_epoch(tiny(syn_root, tmp_path / "crash", **sgd), monkeypatch)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_NO_PROGRESS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "cnnlab", "train", "--resume", str(tmp_path / "crash"), "--quiet"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    result = read_json(tmp_path / "crash" / "result.json")
    assert [s["world_size"] for s in result["processes"]] == [1, 2] and result["world_size"] == 2
    assert result["precise_bn"]["images"] == full.precise_bn["images"] == 80
    resumed = checkpoint.load_model(tmp_path / "crash")  # a plain build("hw-mish-bn") (strict keys)
    assert all(type(m) is torch.nn.BatchNorm2d for m in resumed.modules() if isinstance(m, _BatchNorm))
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    _assert_close(resumed.state_dict(), a, TOLERANCE["fp32"])
    assert result["test_accuracy"] == pytest.approx(full.test_accuracy, abs=1 / 40)  # at most one test image
