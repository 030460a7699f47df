"""Two CPU ranks (torchrun, gloo) train a few steps: weights identical across ranks and equal
(within float tolerance) to one process on the same global batches."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent("""
    import sys, torch
    from cnnlab.data.cifar10 import Split
    from cnnlab.models.cifar import build
    from cnnlab import distributed
    from cnnlab.train.config import Config
    from cnnlab.train.loop import Precision, make_optimizer, train_epoch

    out = sys.argv[1]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = Split(torch.randint(0, 256, (48, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.randint(0, 10, (48,), generator=g))
    ctx = distributed.setup("cpu")
    model = build("hw-mish")
    net = distributed.wrap(model, ctx)
    recipe = Config(model="hw-mish", batch_size=16, epochs=1, lr=0.05).recipe()
    opt = make_optimizer(model, recipe)
    stats, step = train_epoch(model, net, data, recipe, opt, epoch=0, step=0, total_steps=3,
                              generator=torch.Generator().manual_seed(0), ctx=ctx,
                              precision=Precision(False, False))
    torch.save({"state": model.state_dict(), "loss": stats.loss, "images": stats.images, "steps": step},
               f"{out}/rank{ctx.rank}_of{ctx.world_size}.pt")
    distributed.teardown(ctx)
""")


def test_two_ranks_match_each_other_and_one_process(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=240, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path)])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    runpy.run_path(str(script), run_name="__main__")  # the same steps in this one process
    r0, r1, one = (torch.load(tmp_path / f, weights_only=True) for f in ("rank0_of2.pt", "rank1_of2.pt", "rank0_of1.pt"))
    assert r0["steps"] == one["steps"] == 3 and r0["images"] == one["images"] == 48
    for k in one["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k  # ranks never drift apart
        assert torch.allclose(r0["state"][k], one["state"][k], rtol=1e-4, atol=1e-5), k
    assert abs(r0["loss"] - one["loss"]) < 1e-4
    # the weights really moved (a no-op trainer would pass the equalities above)
    init = torch.load(tmp_path / "rank0_of1.pt", weights_only=True)["state"]
    torch.manual_seed(0)
    from cnnlab.models.cifar import build

    fresh = build("hw-mish").state_dict()
    assert not torch.allclose(fresh["features.0.weight"], init["features.0.weight"])
