"""The probe verb end to end: run folder contents, numbers, cache reuse, CLI errors, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from probe_helpers import make_folder, tiny_model

from cnnlab.cli import main
from cnnlab.probe.run import Config, run

RESULT_KEYS = {"mean_per_class_accuracy", "overall_accuracy", "C", "grid", "val_scores", "per_class", "n_train",
               "n_test", "feature_dim", "extraction", "confusion_matrix", "classes"}


def test_probe_on_image_folder_writes_run_and_reuses_cache(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=8)
    config = Config(dataset=f"imagefolder:{root}", out=tmp_path / "run1", cache_dir=tmp_path / "cache",
                    c_min=1, c_max=100, c_steps=3, quiet=True)
    model = tiny_model()
    result = run(config, model=model)
    run_dir = tmp_path / "run1"
    assert result.run_dir == run_dir
    for name in ("config.json", "env.json", "results.json", "confusion.png", "validation.png"):
        assert (run_dir / name).stat().st_size > 0, name
    saved = json.loads((run_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(saved)
    assert (saved["n_train"], saved["n_test"], saved["feature_dim"]) == (18, 6, 8)
    assert saved["classes"] == ["blue", "green", "red"]
    assert saved["C"] in saved["grid"] and len(saved["val_scores"]) == 3
    cm = np.array(saved["confusion_matrix"])
    assert cm.sum() == 6 and [row["n_test"] for row in saved["per_class"]] == cm.sum(axis=1).tolist()
    assert saved["mean_per_class_accuracy"] == pytest.approx(np.mean(np.diag(cm) / cm.sum(axis=1)))
    assert saved["mean_per_class_accuracy"] > 0.8  # chance: 1/3 (colour is easy even for a random CNN)
    ext = saved["extraction"]["trainval"]
    assert ext["cache"] == "missing" and ext["images"] == 18 and ext["images_per_second"] > 0
    assert ext["precision"] in ("fp32", "bf16")
    assert json.loads((run_dir / "config.json").read_text())["dataset"] == f"imagefolder:{root}"

    again = run(Config(**{**vars(config), "out": tmp_path / "run2"}), model=model)
    assert again.extraction["trainval"]["cache"] == "hit" and again.extraction["test"]["cache"] == "hit"
    assert again.mean_per_class_accuracy == result.mean_per_class_accuracy and again.C == result.C


def test_real_mobilenet_on_three_pet_breeds(tmp_path, shared_data, mobilenet):
    """The real features separate three Pets breeds far above chance (1/3)."""
    from cnnlab.data.pets import load_pets

    pets = load_pets(shared_data, download=False)
    root = tmp_path / "pets3"
    for split, part, n in (("train", pets.train, 6), ("test", pets.test, 4)):
        for label in (0, 1, 5):  # Abyssinian, American Bulldog, Bengal: complete in the shared copy
            folder = root / split / pets.classes[label].replace(" ", "_")
            folder.mkdir(parents=True)
            for p in [p for p, y in zip(part.paths, part.labels) if y == label][:n]:
                (folder / p.name).symlink_to(p.resolve())
    result = run(Config(dataset=f"imagefolder:{root}", out=tmp_path / "run", cache=False, c_steps=3,
                        c_min=10, c_max=1000, quiet=True), model=mobilenet)
    assert result.feature_dim == 1280 and (result.n_train, result.n_test) == (18, 12)
    assert result.mean_per_class_accuracy >= 0.75


def test_cli_missing_pets_is_a_one_line_error(tmp_path, capsys):
    code = main(["probe", "--data-root", str(tmp_path / "none"), "--no-download", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "oxford-iiit-pet" in err and "--data-root" in err and "Traceback" not in err


def test_config_validation():
    with pytest.raises(ValueError, match="batch-size"):
        Config(batch_size=0)
    with pytest.raises(ValueError, match="c_min"):
        Config(c_min=10, c_max=1)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*imagefolder:PATH"):
        run(Config(dataset="cifar", quiet=True))


TORCHRUN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from probe_helpers import tiny_model
from cnnlab.probe.run import Config, run
r = run(Config(dataset="imagefolder:" + sys.argv[1], out=sys.argv[2], cache_dir=sys.argv[3], c_steps=1,
               precision="fp32", quiet=True), model=tiny_model())
print("RANK", r.rank, r.run_dir)
"""


@pytest.mark.slow
def test_torchrun_shards_match_single_process(tmp_path):
    """Two processes extract half each; rank 0 gathers features identical to one process's."""
    from safetensors.torch import load_file

    from cnnlab.data.folders import load_image_folder
    from cnnlab.probe import cache
    from cnnlab.probe.extract import extract_features

    root = make_folder(tmp_path / "imgs", per_class=5)
    script = tmp_path / "probe_dist.py"
    script.write_text(TORCHRUN_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(root), str(tmp_path / "dist"), str(tmp_path / "cache_dist")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANK 0" in proc.stdout and "RANK 1 None" in proc.stdout
    dist_res = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert dist_res["extraction"]["trainval"]["processes"] == 2
    splits = load_image_folder(root)
    model = tiny_model()
    for split, part in (("trainval", splits.train), ("test", splits.test)):
        name = cache.cache_path(Path(""), splits.name, split, "mobilenet_v2", "fp32").name
        gathered = load_file(str(tmp_path / "cache_dist" / name))
        single = extract_features(model, list(part.paths), precision="fp32", workers=0).features
        np.testing.assert_allclose(gathered["features"].numpy(), single.numpy(), atol=1e-5)
        assert gathered["labels"].tolist() == list(part.labels)  # rank 0 put the shards back in order
