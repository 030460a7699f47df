"""The command line: fast top-level help, every verb's help, version, errors, run folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnlab import __version__
from cnnlab.cli import VERBS, main


def test_top_level_help_does_not_import_torch():
    code = "import sys; from cnnlab.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    for verb in VERBS:
        assert verb in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and f"cnnlab {verb}" in out and "--" in out


def test_unknown_verb_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predcit"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_out_of_range_option_is_a_one_line_error(capsys):
    assert main(["predict", "a.png", "--top-k", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "top-k must be between 1 and 1000" in err and "Traceback" not in err


def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cnnlab", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_run_folder_contents(peppers_path, tmp_path, capsys):
    assert main(["predict", str(peppers_path), "--out", str(tmp_path / "r"), "--seed", "7", "--quiet"]) == 0
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert env["seed"] == 7 and env["device"] == "cpu" and env["packages"]["torch"]
    assert cfg["top_k"] == 3 and cfg["model"] == "mobilenet_v2"
    assert "bell pepper" in capsys.readouterr().out


def test_default_run_folder_is_under_runs(peppers_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "myruns"))
    assert main(["predict", str(peppers_path), "--quiet"]) == 0
    (run,) = (tmp_path / "myruns" / "predict").iterdir()
    assert (run / "predictions.json").exists()


def test_python_api_exports_every_verb():
    import cnnlab

    for verb in VERBS:
        assert f"run_{verb}" in cnnlab.__all__
    assert cnnlab.run_predict.__module__ == "cnnlab.predict"
    assert cnnlab.PredictConfig.__name__ == "Config"
