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
from conftest import PEPPERS

from cnnlab.report import build
from cnnlab.report.browser import find_chromium
from cnnlab.report.section import ReportContext, SectionContext, esc, format_number, json_get
from cnnlab.report.sections import ORDER
from cnnlab.runs import read_json

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CNNLAB_TEST_ARTIFACTS", ROOT / "runs" / "test-artifacts"))
CORE = ("batchnorm", "prediction", "featuremaps")  # sections that need only cnnlab's foundation
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="chromium is not installed (`make setup` installs it with apt-get)")
needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                     reason="pdftotext (poppler-utils) is not installed")
HOSTILE = "<img src=x onerror=alert(1)>.png"  # the photo's file name is HTML: the report must show it as text


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """The tiny report's photo, named :data:`HOSTILE`: a copy of the shared peppers photo, or
    scikit-image's built-in coffee photo where the shared data is missing (the report still runs)."""
    dest = tmp_path_factory.mktemp("photo") / HOSTILE
    if PEPPERS.is_file():
        shutil.copyfile(PEPPERS, dest)
    else:
        from PIL import Image
        from skimage import data as skdata

        Image.fromarray(skdata.coffee()).save(dest, format="PNG")
    return dest


def test_the_photo_works_without_the_shared_data(photo):
    from cnnlab.images import load_image

    assert load_image(photo).size == ((512, 384) if PEPPERS.is_file() else (600, 400))  # peppers, else coffee


@pytest.fixture(scope="module")
def report(tmp_path_factory, photo):
    out = tmp_path_factory.mktemp("report")
    result = build.run(build.Config(profile="tiny", out=out, image=photo, pdf=find_chromium() is not None,
                                    quiet=True))
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
    pred_run = next(r for r in results["sections"]["prediction"]["runs"] if r["name"] == "predict")
    top1 = read_json(report.out / pred_run["run_dir"] / "predictions.json")["predictions"][0]["classes"][0]
    assert "mobilenet_v2" in pred and f"<b>{esc(top1)}</b>" in pred  # model named, top-1 class
    assert top1 == "bell pepper" or not PEPPERS.is_file()  # the photo is a copy of peppers when present
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
    report = ReportContext(get_profile("tiny"), tmp_path)
    for _ in range(2):
        ctx = SectionContext(report, "x")
        d = ctx.cached("exp", {"a": 1}, lambda d: calls.append(d))
    assert len(calls) == 1 and d == calls[0]
    assert [r["run_dir"] for r in ctx.section.runs] == [report.rel(d)]  # each section records its own runs
    assert SectionContext(report, "x").cached("exp", {"a": 2}, lambda d: calls.append(d)) != d  # another config

    def crash(d):
        raise KeyboardInterrupt

    # an interrupted run (no completion marker) runs again, into the same folder
    with pytest.raises(KeyboardInterrupt):
        SectionContext(report, "x").cached("exp", {"a": 3}, crash)
    SectionContext(report, "x").cached("exp", {"a": 3}, lambda d: calls.append(d))
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
@needs_pdftotext
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
    assert "𝜇𝐵" in flat  # MathML rendered by the browser (JavaScript is off while printing): italic μ_B
    css = (report.out / "report.css").read_text()
    assert re.search(r"figure[^{]*\{[^}]*break-inside: avoid", css)  # figures are never cut across pages
    shutil.copyfile(report.pdf, ARTIFACTS / "report.pdf") if ARTIFACTS.is_dir() else None


class _Tags(HTMLParser):
    """Every element (tag, attributes) and the text of a page, as a browser's parser sees them."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _tags(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def test_a_hostile_file_name_is_text_in_the_html(report):
    page = _tags(report.html.read_text(encoding="utf-8"))
    assert not [a for t, a in page.tags if t == "img" and a.get("src") == "x"]
    assert not [(t, a) for t, a in page.tags if "onerror" in a]
    assert HOSTILE in "".join(page.text)  # shown, as text, where the photo is named
    alts = [a["alt"] for t, a in page.tags if t == "img" and "input.png" in a.get("src", "")]
    assert alts == [f"The input photo, {HOSTILE}."]  # the caption's text, not its markup


@needs_chromium
def test_a_hostile_file_name_runs_nothing_in_a_browser(report, tmp_path):
    """Loaded with JavaScript on, the page has no injected element and runs no injected script.

    The copy loaded here records every ``alert()`` in the DOM; a control image of our own, with
    an ``onerror`` that alerts, proves that such a script would run and be seen."""
    import subprocess

    from cnnlab.report.browser import chromium_flags

    probe = ('<base href="{base}/"><script>window.alert = m => {{ const d = document.documentElement.dataset; '
             'd.alerts = (d.alerts || "") + m + ";"; }};</script>').format(base=report.out.resolve().as_uri())
    control = '<img src="missing-control.png" onerror="alert(\'control\')" hidden>'
    html = report.html.read_text(encoding="utf-8").replace("<head>", "<head>" + probe, 1)
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", control + "</body>", 1), encoding="utf-8")
    dom = subprocess.run([find_chromium(), *chromium_flags(), f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    tags = _tags(dom)
    root = next(a for t, a in tags.tags if t == "html")
    assert root.get("data-alerts") == "control;"  # our own script ran; the file name's did not
    assert not [a for t, a in tags.tags if t == "img" and a.get("src") == "x"]
    assert HOSTILE in "".join(tags.text)


@needs_chromium
@needs_pdftotext
def test_pdf_is_printed_with_javascript_off(tmp_path):
    import subprocess

    from cnnlab.report.browser import print_pdf

    page = tmp_path / "page.html"
    page.write_text('<!DOCTYPE html><html><body><p>static text</p>'
                    '<script>document.body.insertAdjacentHTML("beforeend", "<p>script ran</p>")</script>'
                    "</body></html>", encoding="utf-8")
    pdf = print_pdf(page, tmp_path / "page.pdf")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "static text" in text and "script ran" not in text


def _fake_chromium(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A stand-in ``chromium`` that records its arguments and its profile's preferences, and
    writes the PDF it is asked for."""
    args, prefs = tmp_path / "args.txt", tmp_path / "prefs.json"
    exe = tmp_path / "chromium"
    exe.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > '{args}'
for a in "$@"; do
  case "$a" in
    --user-data-dir=*) cp "${{a#--user-data-dir=}}/Default/Preferences" '{prefs}' ;;
    --print-to-pdf=*) printf '%%PDF-1.4 fake' > "${{a#--print-to-pdf=}}" ;;
  esac
done
""")
    exe.chmod(0o755)
    monkeypatch.setenv("CNNLAB_CHROMIUM", str(exe))
    return args, prefs


@pytest.mark.parametrize("uid", [1000, 0])
def test_chromium_keeps_its_sandbox_unless_root(tmp_path, monkeypatch, uid):
    from cnnlab.report import browser

    args, prefs = _fake_chromium(tmp_path, monkeypatch)
    monkeypatch.setattr(browser.os, "geteuid", lambda: uid)
    page = tmp_path / "page.html"
    page.write_text("<p>x</p>")
    assert browser.print_pdf(page, tmp_path / "page.pdf").read_bytes().startswith(b"%PDF")
    assert ("--no-sandbox" in args.read_text().splitlines()) == (uid == 0)
    assert json.loads(prefs.read_text())["profile"]["default_content_setting_values"]["javascript"] == 2  # blocked


def test_a_changed_experiment_module_runs_again(tmp_path, monkeypatch):
    """A cached run is reused only while the code of its section's SOURCES is unchanged."""
    from cnnlab.report import section
    from cnnlab.report.profiles import get_profile

    calls = []
    report = ReportContext(get_profile("tiny"), tmp_path)
    for _ in range(2):
        first = SectionContext(report, "x", sources=["cnnlab.batchnorm"]).cached("exp", {"a": 1},
                                                                                 lambda d: calls.append(d))
    assert len(calls) == 1
    real = section.code_version
    monkeypatch.setattr(section, "code_version", lambda modules: real(modules) + "-edited")
    ctx = SectionContext(report, "x", sources=["cnnlab.batchnorm"])
    assert ctx.cached("exp", {"a": 1}, lambda d: calls.append(d)) != first and len(calls) == 2


def test_code_version_follows_the_source(tmp_path, monkeypatch):
    from cnnlab.report.section import code_version

    module = tmp_path / "cnnlab_probe_module.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_version(["cnnlab_probe_module", "cnnlab.batchnorm"])
    assert code_version(["cnnlab.batchnorm", "cnnlab_probe_module"]) == before  # order does not matter
    module.write_text("X = 2\n")
    assert code_version(["cnnlab_probe_module", "cnnlab.batchnorm"]) != before
    assert code_version(["cnnlab_probe_module"]) != code_version(["cnnlab_no_such_module"])


def test_an_unusable_photo_is_rejected_in_one_line(tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.errors import ImageError

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png"):
        build.Config(profile="tiny", image=bad)
    assert main(["report", "--profile", "tiny", "--image", str(tmp_path / "nope.png"), "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    captured = capsys.readouterr()
    err = re.sub(r"\s+", " ", captured.out + captured.err)
    assert "error:" in err and "nope.png: no such file" in err
    assert not (tmp_path / "out").exists()  # nothing ran


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path)


def _fake_cifar_training(monkeypatch, losses, accs) -> list[str]:
    """Replace ``train.run``/``compare.run`` by fakes writing the files the section reads (the test
    accuracy is ``accs[model]`` plus 0.01 per seed); returns the models trained (one entry per call)."""
    import cnnlab.train as train
    import cnnlab.train.compare as compare
    from cnnlab.runs import write_json

    trained = []

    def fake_train(config):
        m, acc = config.model, accs[config.model] + 0.01 * config.seed
        trained.append(m)
        hist = [{"epoch": i + 1, "train_loss": v, "train_accuracy": 0.1, "test_loss": v, "test_accuracy": acc,
                 "lr": 0.1, "seconds": 1.0} for i, v in enumerate(losses[m])]
        write_json(config.out / "result.json", {
            "model": m, "epochs": 2, "test_accuracy": acc, "test_accuracy_plain": acc, "test_loss": 1.0,
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
    """'lower at every epoch' appears only when the losses say so (fake training runs)."""
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import cifar10

    losses = {"hw-mish": [2.0, 1.5], "hw-mish-bn": [1.8, 1.2] if bn_better else [2.1, 1.7], "improved": [1.9, 1.0]}
    accs = {"hw-mish": 0.5, "hw-mish-bn": 0.6, "improved": 0.4 if bn_better else 0.7}
    _fake_cifar_training(monkeypatch, losses, accs)
    html = build.make_section(cifar10, ReportContext(Profile("t", "t", train={m: {} for m in losses}), tmp_path)).html
    assert ("lower at every epoch" in html) == bn_better
    assert ("<b>not</b> lower at the last epoch" in html) == (not bn_better)
    assert "each with its own recipe (not a controlled comparison)" in html.lower()
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
    build.make_section(cifar10, ReportContext(profile, tmp_path))
    build.make_section(cifar10, ReportContext(profile, tmp_path))
    assert sorted(trained) == sorted(models)  # the second build reused all three
    recipes = dict(train_config.RECIPES)
    recipes["hw-mish"] = dataclasses.replace(recipes["hw-mish"], epochs=recipes["hw-mish"].epochs + 1)
    monkeypatch.setattr(train_config, "RECIPES", recipes)
    build.make_section(cifar10, ReportContext(profile, tmp_path))
    assert sorted(trained) == sorted(models + ("hw-mish",))  # only the changed one ran again


@pytest.mark.parametrize("seeds", [1, 2])
def test_cifar_tables_show_mean_and_std_over_seeds(tmp_path, monkeypatch, seeds):
    """--seeds K trains every net with seeds 0..K-1; the table shows mean ± sample std (one seed: the value)."""
    import statistics

    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import cifar10

    models = ("hw-mish", "hw-mish-bn", "improved")
    trained = _fake_cifar_training(monkeypatch, {m: [2.0, 1.0] for m in models}, {m: 0.5 for m in models})
    report = ReportContext(Profile("t", "t", train={m: {} for m in models}), tmp_path, seeds=seeds)
    sec = build.make_section(cifar10, report)
    assert sorted(trained) == sorted(models * seeds)
    accs = [0.5 + 0.01 * s for s in range(seeds)]
    acc, cell = sec.numbers["cifar10.improved.acc"], _tags(sec.html)
    assert acc["value"] == pytest.approx(statistics.fmean(accs))
    if seeds == 1:
        assert "cifar10.improved.acc_std" not in sec.numbers and "±" not in sec.html
        assert acc["source"]["path"] == ["test_accuracy"]
    else:
        std = sec.numbers["cifar10.improved.acc_std"]
        assert std["value"] == pytest.approx(statistics.stdev(accs)) and "standard deviation" in std["derived"]
        assert (acc["text"], std["text"]) == ("50.50%", "0.71%")
        assert f'{acc["text"]} ± {std["text"]}' in "".join(cell.text)
        assert sec.numbers["cifar10.seeds"]["value"] == 2


def _study_json(plain_loss, bn_loss, diverged_at):
    """A study.json: the shared-recipe losses per epoch, and a sweep at lr 0.1 and 0.4 where the
    (model, lr) pairs in ``diverged_at`` diverged."""
    def run(m, loss, val):
        return {"history": [{"epoch": i + 1, "train_loss": v, "val_accuracy": val} for i, v in enumerate(loss)],
                "val_accuracy": val, "train_loss": loss[-1]}

    sweep = [{"model": m, "lr": lr, "diverged": (m, lr) in diverged_at, "reason": "loss became NaN/inf",
              "val_accuracy": None if (m, lr) in diverged_at else 0.3 + lr / 10 + (m == "hw-mish-bn") / 100}
             for lr in (0.1, 0.4) for m in ("hw-mish", "hw-mish-bn")]
    return {"recipe_of": "hw-mish", "val_split": 20, "sweep_epochs": 1, "sweep": sweep,
            "recipe": {"epochs": len(plain_loss), "batch_size": 256, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                       "label_smoothing": 0.1, "warmup": 0.1, "translate": 2, "flip": True, "tta": False},
            "same_recipe": {"hw-mish": run("hw-mish", plain_loss, 0.4), "hw-mish-bn": run("hw-mish-bn", bn_loss, 0.5)},
            "pair_accuracy": {"on": "validation", "history_key": "val_accuracy", "hw-mish": 0.4, "hw-mish-bn": 0.5}}


def test_study_facts_flip_when_the_numbers_flip():
    from cnnlab.report.sections.cifar10 import study_facts

    f = study_facts(_study_json([2.0, 1.5], [1.8, 1.2], {("hw-mish", 0.4)}))
    assert f["lower_always"] and f["lower_at_end"] and f["lower"] == 2 and f["loss_gap"] == pytest.approx(0.3)
    assert f["bn_larger_lr"] and not f["plain_larger_lr"] and not f["none_stable"]
    assert f["max_stable"] == {"hw-mish": 0, "hw-mish-bn": 3} and f["best"] == {"hw-mish": 0, "hw-mish-bn": 3}
    assert f["acc_higher"]
    f = study_facts({**_study_json([2.0, 1.5], [1.8, 1.2], set()), "pair_accuracy": {"hw-mish": 0.5, "hw-mish-bn": 0.4}})
    assert not f["acc_higher"]
    f = study_facts(_study_json([2.0, 1.5], [1.9, 1.7], {("hw-mish-bn", 0.4)}))
    assert not f["lower_always"] and not f["lower_at_end"] and f["lower"] == 1
    assert f["plain_larger_lr"] and not f["bn_larger_lr"] and f["max_stable"]["hw-mish"] == 2
    f = study_facts(_study_json([2.0, 1.5], [2.1, 1.4], set()))
    assert f["lower_at_end"] and not f["lower_always"]
    assert not f["bn_larger_lr"] and not f["plain_larger_lr"] and not f["none_stable"]  # both up to 0.4
    f = study_facts(_study_json([2.0], [1.0], {(m, lr) for m in ("hw-mish", "hw-mish-bn") for lr in (0.1, 0.4)}))
    assert f["none_stable"] and f["max_stable"] == {"hw-mish": None, "hw-mish-bn": None}


@pytest.mark.parametrize("bn_tolerates", [True, False])
def test_study_sentences_follow_the_sweep(tmp_path, monkeypatch, bn_tolerates):
    """The study's statements are chosen by its numbers (a fake bn-study run)."""
    import cnnlab.train.study as study
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import cifar10
    from cnnlab.runs import write_json

    models = ("hw-mish", "hw-mish-bn", "improved")
    _fake_cifar_training(monkeypatch, {m: [2.0, 1.0] for m in models}, {m: 0.5 for m in models})
    data = _study_json([2.0, 1.5], [1.8, 1.2] if bn_tolerates else [2.2, 1.9],
                       {("hw-mish", 0.4)} if bn_tolerates else {("hw-mish-bn", 0.4)})

    def fake_study(config):
        assert config.pair_from == seen["hw-mish"]  # the pair's plain side is the report's own hw-mish run
        write_json(config.out / "study.json", data)
        for name in ("curves.png", "curves_val.png", "sweep.png"):
            _png(config.out / name)

    monkeypatch.setattr(study, "run", fake_study)
    seen = {}
    train_run = cifar10._train

    def remember(ctx, model, data_opts, seeds):
        seen[model] = (t := train_run(ctx, model, data_opts, seeds)).dirs[0]
        return t

    monkeypatch.setattr(cifar10, "_train", remember)
    profile = Profile("t", "t", train={m: {} for m in models}, bn_study={"sweep_epochs": 1})
    html = build.make_section(cifar10, ReportContext(profile, tmp_path)).html
    study_html = html[html.index("one change at a time"):html.index("Architectures")]
    assert ("BatchNorm tolerated a larger learning rate" in study_html) == bn_tolerates
    assert ("does <b>not</b> show that BatchNorm tolerates larger steps" in study_html) == (not bn_tolerates)
    assert ("lower at every epoch" in study_html) == bn_tolerates
    assert ("<b>not</b> lower at the last epoch" in study_html) == (not bn_tolerates)
    assert "diverged (loss became NaN/inf)" in study_html


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
            "method": config.method, "model": "mobilenet_v2", "eps_grey": round(config.eps * 255, 6), "steps_budget": 10,
            "threshold": 0.9,
            "amplify": 64.0, "figure": "attack.png", "warnings": [], "images": [im]})
        _png(config.out / "attack.png")

    def fake_robustness(config):
        rows, summary, curve, min_eps = [], {}, {}, {}
        for run_dir in config.inputs:
            method, eps = (read_json(run_dir / attack.RESULTS_FILE)[k] for k in ("method", "eps_grey"))
            label = f"{method} {eps:g}/255: peppers"
            good = (method == "eot") == eot_better
            curve.setdefault(method, {})[f"{eps:g}"] = float(good)
            min_eps.setdefault(method, {}).setdefault("peppers", eps if good else None)
            for t in transforms:
                rows.append({"label": label, "transform": t, "target_survives": good or t == "identity",
                             "p_target": 0.9 if good else 0.1, "target_name": "space shuttle"})
            summary[label] = {**{t: good for t in transforms}, "all_four": good}
        write_json(config.out / "robustness.json", {"transforms": transforms, "summary": summary, "rows": rows,
                                                    "survival_by_eps": curve, "min_eps": min_eps,
                                                    "survival_figure": "survival_eps.png"})
        _png(config.out / "robustness.png")
        _png(config.out / "survival_eps.png")

    monkeypatch.setattr(attack, "run", fake_attack)
    monkeypatch.setattr(robustness, "run", fake_robustness)
    return attacked


@pytest.mark.parametrize("eot_better", [True, False])
def test_adversarial_sentences_follow_the_robustness_table(tmp_path, monkeypatch, eot_better):
    """'EOT survives more often' appears only when the robustness rows say so (fake attack runs)."""
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import adversarial

    _fake_attacks(monkeypatch, eot_better)
    html = build.make_section(adversarial, ReportContext(Profile("t", "t", attack={"methods": ("pgd", "eot")}),
                                                         tmp_path)).html
    assert ("EOT adversarials survive the transforms more often" in html) == eot_better
    assert ("Here EOT did <b>not</b> survive" in html) == (not eot_better)


def test_adversarial_price_of_robustness_sweeps_eps(tmp_path, monkeypatch):
    """The ε sweep attacks pgd and eot once per extra ε and reports the smallest ε per photo."""
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import adversarial

    attacked = _fake_attacks(monkeypatch, eot_better=True)
    profile = Profile("t", "t", attack={"methods": ("pgd", "eot"), "sweep_eps": (2, 8)})
    html = build.make_section(adversarial, ReportContext(profile, tmp_path)).html
    assert sorted(attacked) == sorted(["pgd", "eot"] * 3)  # chosen targets at 2/255, 8/255, random targets
    assert "The price of robustness" in html and "survival_eps.png" in html
    assert "&gt; 8/255" in html  # pgd never survives: beyond the largest ε tried
    assert "PGD's noise is tuned to one exact view" in html and "Chosen and random targets" in html


def test_a_changed_attack_default_attacks_again(tmp_path, monkeypatch):
    """The report's cache must not reuse attacks made under older default targets or settings."""
    from dataclasses import replace

    from cnnlab.attacks import targets
    from cnnlab.attacks.eot import EOT
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import adversarial

    attacked = _fake_attacks(monkeypatch)
    profile = Profile("t", "t", attack={"methods": ("pgd", "eot")})
    build.make_section(adversarial, ReportContext(profile, tmp_path))
    build.make_section(adversarial, ReportContext(profile, tmp_path))
    assert attacked == ["pgd", "eot"] * 2  # chosen, then random targets; the second build reused all four
    source, truth, target = targets.BUILTINS["camera"]
    monkeypatch.setitem(targets.BUILTINS, "camera", (source, truth, target + 1))
    build.make_section(adversarial, ReportContext(profile, tmp_path))
    assert attacked == ["pgd", "eot"] * 4  # a default photo's target changed: all attack again
    monkeypatch.setattr(EOT, "default_options", replace(EOT.default_options, robust_threshold=0.95))
    build.make_section(adversarial, ReportContext(profile, tmp_path))
    assert attacked == ["pgd", "eot"] * 4 + ["eot"] * 2  # only EOT's own setting changed


def test_a_hostile_class_name_is_text(tmp_path, monkeypatch):
    """Class names (an image folder's sub-folders) reach the transfer section's table as text."""
    import cnnlab.probe.run as probe
    from cnnlab.report.profiles import Profile
    from cnnlab.report.sections import transfer
    from cnnlab.runs import write_json

    hostile = '<script>document.title="pwned"</script>'

    def fake_probe(config, **_):
        write_json(config.out / "results.json", {
            "model": "mobilenet_v2", "weights": "IMAGENET1K_V1", "dataset": f"imagefolder:/data/{hostile}",
            "classifier": "logistic", "feature_dim": 1280, "n_train": 4, "n_test": 2, "grid": [1.0, 10.0], "C": 1.0,
            "mean_per_class_accuracy": 0.5, "overall_accuracy": 0.5, "extraction": {}, "notes": [hostile],
            "per_class": [{"class": c, "n_train": 2, "n_test": 1, "accuracy": 0.5} for c in (hostile, "cat")]})
        _png(config.out / "confusion.png")

    monkeypatch.setattr(probe, "run", fake_probe)
    html = build.make_section(transfer, ReportContext(Profile("t", "t"), tmp_path)).html
    page = _tags(html)
    assert not [t for t, _ in page.tags if t == "script"]
    assert "".join(page.text).count(hostile) == 3  # the dataset, the note and the class, each shown as text


def test_a_template_shows_recorded_numbers_and_escapes_text(tmp_path):
    """The ``num`` filter shows the recorded text tagged with its key; other values are escaped."""
    from cnnlab.report.profiles import get_profile
    from cnnlab.report.section import templates
    from cnnlab.runs import write_json

    ctx = SectionContext(ReportContext(get_profile("tiny"), tmp_path), "x")
    src = write_json(tmp_path / "runs" / "r.json", {"a": [0.25, -3e-7]})
    N = ctx.reader(src, base=["a"])
    html = templates().from_string("{{ q | num }} and {{ t | num }}: {{ name }}").render(
        q=N("quarter", [0], ".0%", unit=" of it"), t=N("tiny", [1], ".1e"), name=HOSTILE)
    assert html == ('<span class="num" data-key="x.quarter">25%</span> of it and '
                    f'<span class="num" data-key="x.tiny">−3.0×10⁻⁷</span>: {esc(HOSTILE)}')
    assert ctx.section.numbers["x.tiny"]["source"] == {"file": "runs/r.json", "path": ["a", 1]}
    assert ctx.jnum("quarter", src, ["a", 0], ".0%").text == "25%"  # the same key again, the same value: fine
    with pytest.raises(ValueError, match="x.quarter"):
        ctx.derived("quarter", 0.5, ".0%", "not the recorded value")


def test_a_figure_caption_is_markup_and_its_alt_is_text(tmp_path):
    from cnnlab.report.profiles import get_profile
    from cnnlab.report.section import templates

    ctx = SectionContext(ReportContext(get_profile("tiny"), tmp_path), "x")
    _png(tmp_path / "run" / "plot.png")
    fig = ctx.figure(tmp_path / "run" / "plot.png", wide=True)
    html = templates().from_string('{% set c %}Made from <code>{{ name }}</code>.{% endset %}{{ fig | figure(c) }}'
                                   ).render(fig=fig, name=HOSTILE)
    page = _tags(html)
    assert [t for t, _ in page.tags] == ["figure", "img", "figcaption", "code"]
    assert page.tags[0][1] == {"class": "wide"} and page.tags[1][1]["alt"] == f"Made from {HOSTILE}."
    assert (tmp_path / page.tags[1][1]["src"]).is_file() and ctx.section.figures == [page.tags[1][1]["src"]]


def test_profiles_name_only_options_their_verbs_have():
    """Every option of every profile is a field of its verb's Config (or read by its section)."""
    from cnnlab.report.profiles import PROFILES, Profile, check_profile, unknown_options

    for profile in PROFILES.values():
        assert unknown_options(profile) == [], profile.name
    bad = Profile("bad", "t", probe={"classes": 3, "c_stepz": 2}, attack={"methods": ("pgd",), "stepz": 1},
                  train={"improved": {"limit_train": 8, "limit_tset": 8}})
    assert unknown_options(bad) == ["probe.c_stepz", "train[improved].limit_tset", "attack.stepz"]
    with pytest.raises(ValueError, match="c_stepz"):
        check_profile(bad)


def test_a_failing_section_shows_its_error_and_the_runs_it_made(tmp_path):
    import types

    from cnnlab.report.profiles import get_profile

    def collect(ctx):
        ctx.cached("exp", {"a": 1}, lambda d: None)
        raise RuntimeError(HOSTILE)

    module = types.SimpleNamespace(ID="x", TITLE="X", SOURCES=(), collect=collect)
    sec = build.build_section(module, ReportContext(get_profile("tiny"), tmp_path))
    assert sec.status == "failed" and sec.note == f"This section failed: RuntimeError: {HOSTILE}"
    page = _tags(sec.html)
    assert [t for t, _ in page.tags][:1] == ["pre"] and not [a for t, a in page.tags if t == "img"]
    assert HOSTILE in "".join(page.text) and sec.runs[0]["run_dir"] in sec.html
