"""The report on the tiny profile: every section, every image, every number traced to its source,
then the same HTML in a real browser (headless Chromium) and printed to PDF."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cnnlab.report import build
from cnnlab.report.browser import find_chromium
from cnnlab.report.section import Context, Section, format_number, json_get
from cnnlab.report.sections import ORDER
from cnnlab.runs import read_json

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CNNLAB_TEST_ARTIFACTS", ROOT / "runs" / "test-artifacts"))
CORE = ("batchnorm", "prediction", "featuremaps")  # sections that need only cnnlab's foundation
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="chromium is not installed (`make setup` installs it with apt-get)")


@pytest.fixture(scope="module")
def report(tmp_path_factory, peppers_path):
    out = tmp_path_factory.mktemp("report")
    result = build.run(build.Config(profile="tiny", out=out, data_root=peppers_path.parent,
                                    pdf=find_chromium() is not None, quiet=True))
    return result


class _Text(HTMLParser):
    """Collects (ids, imgs, spans, prose): prose is the text outside numbers, math, code and the appendix."""

    SKIP = {"math", "pre", "code", "script", "style", "details", "footer", "header"}

    def __init__(self):
        super().__init__()
        self.stack: list[bool] = []
        self.ids, self.imgs, self.spans, self.prose = set(), [], {}, []
        self._span_key = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src"))
            return
        skip = tag in self.SKIP or a.get("id") == "appendix" or "num" in (a.get("class") or "").split()
        if "num" in (a.get("class") or "").split():
            self._span_key = a["data-key"]
            self.spans[self._span_key] = ""
        self.stack.append(skip or (bool(self.stack) and self.stack[-1]))

    def handle_endtag(self, tag):
        if tag != "img" and self.stack:
            self.stack.pop()
        if tag == "span":
            self._span_key = None

    def handle_data(self, data):
        if self._span_key is not None:
            self.spans[self._span_key] += data
        elif not (self.stack and self.stack[-1]):
            self.prose.append(data)


@pytest.fixture(scope="module")
def parsed(report):
    p = _Text()
    p.feed(report.html.read_text(encoding="utf-8"))
    return p


def test_every_section_is_there_in_order(report, parsed):
    assert [s.id for s in report.sections] == list(ORDER)
    assert set(ORDER) | {"appendix"} <= parsed.ids
    html = report.html.read_text(encoding="utf-8")
    positions = [html.index(f'<section id="{sid}"') for sid in (*ORDER, "appendix")]
    assert positions == sorted(positions)
    statuses = {s.id: s.status for s in report.sections}
    assert not [s for s in report.sections if s.status == "failed"], [(s.id, s.note) for s in report.failed]
    assert all(statuses[c] == "ok" for c in CORE), statuses


def test_every_image_exists_and_nothing_is_remote(report, parsed):
    assert len(parsed.imgs) >= 5
    for src in parsed.imgs:
        assert not re.match(r"^[a-z]+://", src), src
        path = report.out / src
        assert path.is_file() and path.stat().st_size > 1000, src
    html = report.html.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no CDN: opens offline
    assert "<math" in html  # the formulas are MathML, rendered by the browser itself


def test_every_number_in_the_text_is_the_one_in_the_results(report, parsed):
    results = read_json(report.out / "results.json")
    numbers = {k: v for s in results["sections"].values() for k, v in s["numbers"].items()}
    assert len(numbers) >= 30
    assert set(parsed.spans) == set(numbers)  # every number shown is recorded, and vice versa
    for key, rec in numbers.items():
        assert parsed.spans[key] == rec["text"] == format_number(rec["value"], rec["spec"]), key
        if "source" in rec:  # the value really is the one in the experiment's own results file
            source = json_get(read_json(report.out / rec["source"]["file"]), rec["source"]["path"])
            assert source == rec["value"], key
        else:
            assert rec["derived"]
    # and no other decimal number or percentage slipped into the prose unrecorded
    prose = " ".join(parsed.prose)
    stray = re.findall(r"\d+\.\d+|\d+(?:\.\d+)?\s?%|\d[.\d]*×10", prose)
    assert not stray, stray


def test_claims_follow_the_numbers(report):
    results = read_json(report.out / "results.json")
    bn_run = next(r for r in results["sections"]["batchnorm"]["runs"] if r["name"] == "batchnorm")
    data = read_json(report.out / bn_run["run_dir"] / "batchnorm.json")
    html = report.html.read_text(encoding="utf-8")
    section = html[html.index('<section id="batchnorm"'):html.index('<section id="prediction"')]
    assert ("identical up to rounding" in section) == (data["neuron"]["max_abs_diff_over_biases"] < 1e-9)
    assert "bias=False" in section and "effective learning rate" in section
    pred = html[html.index('<section id="prediction"'):html.index('<section id="featuremaps"')]
    assert "mobilenet_v2" in pred and "bell pepper" in pred  # peppers, model named, top-1 class
    for sid in CORE:  # each section names the run folder and config it came from
        runs = results["sections"][sid]["runs"]
        assert runs and all((report.out / r["run_dir"]).is_dir() for r in runs)
        assert all(r["run_dir"] in html for r in runs)


def test_appendix_has_each_experiments_source(report):
    html = report.html.read_text(encoding="utf-8")
    appendix = html[html.index('<section id="appendix"'):]
    for rel in ("cnnlab/batchnorm.py", "cnnlab/predict.py", "cnnlab/featuremaps/select.py"):
        assert rel in appendix
    assert 'class="highlight"' in appendix and '<span class="k">def</span>' in appendix  # pygments


def test_second_run_reuses_finished_experiments(tmp_path):
    from cnnlab.report.profiles import get_profile

    calls = []
    ctx = Context(get_profile("tiny"), tmp_path, None)
    for _ in range(2):
        ctx.begin(Section("x", "X", ""))
        d = ctx.cached("exp", {"a": 1}, lambda d: calls.append(d))
    assert len(calls) == 1 and d == calls[0]
    ctx.begin(Section("x", "X", ""))
    assert ctx.cached("exp", {"a": 2}, lambda d: calls.append(d)) != d  # another config: another run
    # an interrupted run (no completion marker) runs again, into the same folder
    ctx.begin(Section("x", "X", ""))

    def crash(d):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ctx.cached("exp", {"a": 3}, crash)
    ctx.begin(Section("x", "X", ""))
    ctx.cached("exp", {"a": 3}, lambda d: calls.append(d))
    assert len(calls) == 3


def test_unknown_profile_and_section_are_rejected():
    with pytest.raises(ValueError, match="tiny"):
        build.Config(profile="huge")
    with pytest.raises(ValueError, match="batchnorm"):
        build.Config(sections=["nope"])


@needs_chromium
def test_real_browser_loads_it_cleanly(report):
    from cnnlab.report.browser import check_page

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, kwargs in (("laptop", {}), ("phone", {"width": 390, "height": 844, "mobile": True})):
        page = check_page(report.html, screenshot=ARTIFACTS / f"report-{name}.png", **kwargs)
        assert page.console_errors == []
        assert page.failed_requests == []
        assert len(page.images) >= 5 and not page.broken_images, page.broken_images
        assert page.screenshot.stat().st_size > 10_000
        assert page.title.startswith("cnnlab report")


@needs_chromium
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")
def test_pdf_has_the_sections(report):
    import subprocess

    assert report.pdf is not None and report.pdf.stat().st_size > 50_000
    text = subprocess.run(["pdftotext", "-layout", str(report.pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    flat = re.sub(r"\s+", " ", text)
    for title in [s.title for s in report.sections] + ["Code appendix"]:
        assert title in flat, title
    results = read_json(report.out / "results.json")
    assert results["sections"]["prediction"]["numbers"]["prediction.p1"]["text"] in flat
    css = (report.out / "report.css").read_text()
    assert re.search(r"figure[^{]*\{[^}]*break-inside: avoid", css)  # figures are never cut across pages
    shutil.copyfile(report.pdf, ARTIFACTS / "report.pdf") if ARTIFACTS.is_dir() else None


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path)


def _fake_cifar_training(monkeypatch, losses, accs) -> list[str]:
    """Replace ``train.run``/``compare.run`` by fakes writing the files the section reads; returns
    the list of models trained (one entry per call)."""
    import cnnlab.train as train
    import cnnlab.train.compare as compare
    from cnnlab.runs import write_json

    trained = []

    def fake_train(config):
        m = config.model
        trained.append(m)
        hist = [{"epoch": i + 1, "train_loss": v, "train_accuracy": 0.1, "test_loss": v, "test_accuracy": accs[m],
                 "lr": 0.1, "seconds": 1.0} for i, v in enumerate(losses[m])]
        write_json(config.out / "result.json", {
            "model": m, "epochs": 2, "test_accuracy": accs[m], "test_accuracy_plain": accs[m], "test_loss": 1.0,
            "train_seconds": 2.0, "wall_seconds": 3.0, "parameters": 1000, "init_scheme": "Kaiming",
            "optimizer": "SGD", "precision": {}, "world_size": 1, "history": hist,
            "recipe": {"batch_size": 8, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.1,
                       "translate": 2, "flip": True, "note": "n"}})
        for f in ("loss.png", "filters.png"):
            _png(config.out / f)

    monkeypatch.setattr(train, "run", fake_train)
    monkeypatch.setattr(compare, "run", lambda config: _png(config.out / "compare.png"))
    return trained


@pytest.mark.parametrize("bn_better", [True, False])
def test_cifar_sentences_follow_the_histories(tmp_path, monkeypatch, bn_better):
    """'BatchNorm trained faster' appears only when its losses say so (fake training runs)."""
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import cifar10

    losses = {"hw-mish": [2.0, 1.5], "hw-mish-bn": [1.8, 1.2] if bn_better else [2.1, 1.7], "improved": [1.9, 1.0]}
    accs = {"hw-mish": 0.5, "hw-mish-bn": 0.6, "improved": 0.4 if bn_better else 0.7}
    _fake_cifar_training(monkeypatch, losses, accs)
    ctx = Context(Profile("t", "t", train={m: {} for m in losses}, synthetic=False), tmp_path, None)
    html = cifar10.build(ctx).html
    assert ("lower at every epoch" in html) == bn_better
    assert ("did <b>not</b> train faster" in html) == (not bn_better)
    assert ("<code>improved</code> beats both" in html) == (not bn_better)
    assert ("does <b>not</b> beat both" in html) == bn_better


def test_a_changed_recipe_default_is_trained_again(tmp_path, monkeypatch):
    """The report's cache must not reuse a run made under an older default recipe."""
    import dataclasses

    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import cifar10
    from cnnlab.train import config as train_config

    models = ("hw-mish", "hw-mish-bn", "improved")
    trained = _fake_cifar_training(monkeypatch, {m: [2.0, 1.0] for m in models}, {m: 0.5 for m in models})
    profile = Profile("t", "t", train={m: {} for m in models}, synthetic=False)
    cifar10.build(Context(profile, tmp_path, None))
    cifar10.build(Context(profile, tmp_path, None))
    assert sorted(trained) == sorted(models)  # the second build reused all three
    recipes = dict(train_config.RECIPES)
    recipes["hw-mish"] = dataclasses.replace(recipes["hw-mish"], epochs=recipes["hw-mish"].epochs + 1)
    monkeypatch.setattr(train_config, "RECIPES", recipes)
    cifar10.build(Context(profile, tmp_path, None))
    assert sorted(trained) == sorted(models + ("hw-mish",))  # only the changed one ran again


def test_cli_builds_a_partial_report(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["report", "--profile", "tiny", "--sections", "batchnorm", "--no-pdf", "--out", str(tmp_path),
                 "--quiet"]) == 0
    assert (tmp_path / "index.html").is_file() and (tmp_path / "results.json").is_file()
    assert "report:" in capsys.readouterr().out


def _fake_attacks(monkeypatch, eot_better: bool = True) -> list[str]:
    """Replace ``attack.run``/``robustness.run`` by fakes writing the files the section reads;
    returns the list of methods run (one entry per call)."""
    import cnnlab.attacks.robustness as robustness
    import cnnlab.attacks.run as attack
    from cnnlab.runs import write_json

    transforms = ["identity", "flip", "crop", "rotate", "gray"]
    attacked = []

    def fake_attack(config):
        attacked.append(config.method)
        im = {"name": "peppers", "clean_name": "bell pepper", "clean_prob": 0.9, "target_name": "space shuttle",
              "adv_name": "space shuttle", "adv_prob": 0.95, "p_target": 0.95, "linf_grey": 2, "psnr": 50.0,
              "ssim": 0.99, "steps": 10, "seconds": 1.0, "success": True}
        write_json(config.out / attack.RESULTS_FILE, {
            "method": config.method, "model": "mobilenet_v2", "eps_grey": 2.0, "steps_budget": 10, "threshold": 0.9,
            "amplify": 64.0, "figure": "attack.png", "warnings": [], "images": [im]})
        _png(config.out / "attack.png")

    def fake_robustness(config):
        rows, summary = [], {}
        for run_dir in config.inputs:
            method = read_json(run_dir / attack.RESULTS_FILE)["method"]
            label = f"{method}: peppers"
            good = (method == "eot") == eot_better
            for t in transforms:
                rows.append({"label": label, "transform": t, "target_survives": good or t == "identity",
                             "p_target": 0.9 if good else 0.1})
            summary[label] = {t: good for t in transforms}
        write_json(config.out / "robustness.json", {"transforms": transforms, "summary": summary, "rows": rows})
        _png(config.out / "robustness.png")

    monkeypatch.setattr(attack, "run", fake_attack)
    monkeypatch.setattr(robustness, "run", fake_robustness)
    return attacked


@pytest.mark.parametrize("eot_better", [True, False])
def test_adversarial_sentences_follow_the_robustness_table(tmp_path, monkeypatch, eot_better):
    """'EOT survives more often' appears only when the robustness rows say so (fake attack runs)."""
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import adversarial

    _fake_attacks(monkeypatch, eot_better)
    ctx = Context(Profile("t", "t", attack={"methods": ("pgd", "eot")}), tmp_path, None)
    html = adversarial.build(ctx).html
    assert ("EOT adversarials survive the transforms more often" in html) == eot_better
    assert ("Here EOT did <b>not</b> survive" in html) == (not eot_better)


def test_a_changed_attack_default_attacks_again(tmp_path, monkeypatch):
    """The report's cache must not reuse attacks made under older default targets or settings."""
    from cnnlab.attacks import targets
    from cnnlab.attacks.eot import EOT
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import adversarial

    attacked = _fake_attacks(monkeypatch)
    profile = Profile("t", "t", attack={"methods": ("pgd", "eot")})
    adversarial.build(Context(profile, tmp_path, None))
    adversarial.build(Context(profile, tmp_path, None))
    assert attacked == ["pgd", "eot"]  # the second build reused both
    source, truth, target = targets.BUILTINS["camera"]
    monkeypatch.setitem(targets.BUILTINS, "camera", (source, truth, target + 1))
    adversarial.build(Context(profile, tmp_path, None))
    assert attacked == ["pgd", "eot"] * 2  # a default photo's target changed: both attack again
    monkeypatch.setattr(EOT, "default_robust_threshold", EOT.default_robust_threshold + 0.1)
    adversarial.build(Context(profile, tmp_path, None))
    assert attacked == ["pgd", "eot"] * 2 + ["eot"]  # only EOT's own setting changed
