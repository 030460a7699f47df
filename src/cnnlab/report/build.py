"""Run every experiment (or reuse finished runs) and write the report: index.html and report.pdf.

Sections, in order: BatchNorm; a pretrained network's prediction; feature maps; transfer
learning; the three CIFAR-10 networks; adversarial examples; a code appendix. Each experiment
runs in ``OUT/runs/<name>-<hash of its config>/`` and is reused when it finished with the same
config, so an interrupted report resumes where it stopped. The HTML folder is self-contained
(figures copied next to it, math as MathML, no network needed); the PDF is printed from the
same HTML by headless Chromium.

Profiles: tiny (CI smoke test: synthetic data, seconds), quick (the demo: minutes), full (the
real training schedules).

Example: cnnlab report --profile quick --data-root ../shared/data --out report/
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab import __version__
from cnnlab.options import RunOptions, arg
from cnnlab.report.profiles import PROFILES, check_profile, get_profile
from cnnlab.report.section import TEMPLATES, ReportContext, Section, SectionContext, SectionData, templates
from cnnlab.runs import git_commit, runs_root, seed_everything, write_json, write_run_metadata, write_text

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config(RunOptions):
    profile: str = arg("quick", "how much to run: tiny (smoke test), quick (the demo), full (full training)",
                       choices=tuple(PROFILES))
    data_root: Path | None = arg(None, "folder holding the data sets and peppers.png (default: $CNNLAB_DATA_ROOT, "
                                       "../shared/data when present, else ~/.cache/cnnlab/data)")
    image: Path | None = arg(None, "the photo for the prediction and feature-map sections, and the tiny profile's "
                                   "attack (default: peppers.png under the data root, else a built-in photo)")
    sections: list[str] = arg(help="only these sections (default: all)", default_factory=list, metavar="SECTION")
    pdf: bool = arg(True, "print report.pdf with headless Chromium")
    force: bool = arg(False, "rerun every experiment even when a finished run with the same config exists")
    seeds: int = arg(1, "train each CIFAR-10 network this many times (seeds --seed, --seed + 1, ...); its table "
                        "shows mean ± standard deviation")

    def __post_init__(self) -> None:
        check_profile(get_profile(self.profile))  # an option its verb does not have fails here
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
        if self.image is not None:
            from cnnlab.images import load_image

            load_image(self.image)  # an unusable photo fails here, in one line, before any experiment runs
        from cnnlab.report.sections import ORDER

        unknown = [s for s in self.sections if s not in ORDER]
        if unknown:
            raise ValueError(f"unknown section(s) {unknown}; valid: {', '.join(ORDER)}")


@dataclass
class Result:
    out: Path
    html: Path
    pdf: Path | None
    sections: list[Section] = field(default_factory=list)
    seconds: float = 0.0
    pdf_error: str | None = None

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if s.status == "failed"]


def default_out(profile: str) -> Path:
    """A fixed folder per profile, so a second ``cnnlab report`` reuses the finished runs."""
    return runs_root() / "report" / profile


def fill_section(module, ctx: SectionContext) -> Section:
    """Run ``module``'s experiments (its ``collect``) and write its template's HTML into ``ctx.section``."""
    ctx.section.html = ctx.render(module.collect(ctx))
    return ctx.section


def make_section(module, report: ReportContext) -> Section:
    """One section, built; a failure propagates."""
    return fill_section(module, SectionContext.of(report, module))


def build_section(module, report: ReportContext) -> Section:
    """Run one section; a missing experiment module or a failure becomes a visible notice."""
    t0 = time.perf_counter()
    ctx = SectionContext.of(report, module)
    sec = ctx.section
    try:
        fill_section(module, ctx)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("cnnlab"):
            raise
        sec = Section(module.ID, module.TITLE, "", status="unavailable",
                      note=f"This experiment is not available in this version of cnnlab ({exc.name} is missing).")
    except Exception as exc:  # noqa: BLE001 - one failed experiment must not lose the others
        log.error("section %s failed: %s", module.ID, exc)
        sec.status, sec.note = "failed", f"This section failed: {type(exc).__name__}: {exc}"
        sec.html = ctx.render(SectionData(trace=traceback.format_exc(limit=4)), "sections/_failed.html.j2")
    sec.seconds = time.perf_counter() - t0
    return sec


def render(report: ReportContext, sections: list[Section], modules: list) -> Path:
    from cnnlab.report.appendix import appendix_html

    appendix, code_css = appendix_html([(m.TITLE, list(m.SOURCES)) for m in modules]
                                       + [("The report itself", ["cnnlab.report.build", "cnnlab.report.section"])])
    html = templates().get_template("index.html.j2").render(
        sections=sections, profile=report.profile, version=__version__, commit=git_commit(),
        built=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), appendix=appendix)
    write_text(report.out / "report.css", (TEMPLATES / "report.css").read_text(encoding="utf-8"))
    write_text(report.out / "code.css", code_css + "\n")
    return write_text(report.out / "index.html", html)


def run(config: Config) -> Result:
    from cnnlab.report.sections import modules as section_modules

    t0 = time.perf_counter()
    seed_everything(config.seed, config.deterministic)
    profile = get_profile(config.profile)
    out = Path(config.out) if config.out is not None else default_out(profile.name)
    out.mkdir(parents=True, exist_ok=True)
    write_run_metadata(out, config, config.device, config.seed)
    common = {"seed": config.seed, "deterministic": config.deterministic, "device": config.device, "quiet": True}
    report = ReportContext(profile, out, config.data_root, force=config.force, common=common, photo=config.image,
                            seeds=config.seeds)
    modules = [m for m in section_modules() if not config.sections or m.ID in config.sections]
    sections = []
    for module in modules:
        log.info("section %s", module.ID)
        sections.append(build_section(module, report))
    html = render(report, sections, modules)
    write_json(out / "results.json", {
        "profile": profile.name, "version": __version__, "commit": git_commit(),
        "sections": {s.id: {"title": s.title, "status": s.status, "note": s.note, "seconds": s.seconds,
                            "runs": s.runs, "figures": s.figures, "numbers": s.numbers} for s in sections}})
    result = Result(out, html, None, sections)
    if config.pdf:
        from cnnlab.report.browser import BrowserError, print_pdf

        try:
            result.pdf = print_pdf(html, out / "report.pdf")
        except (BrowserError, OSError) as exc:
            result.pdf_error = str(exc)
            log.error("%s", exc)
    result.seconds = time.perf_counter() - t0
    return result


def present(result: Result) -> int:
    for s in result.sections:
        mark = {"ok": "ok", "unavailable": "--", "failed": "FAILED"}[s.status]
        print(f"  {mark:<6s} {s.title}  ({s.seconds:.1f} s){'  ' + s.note if s.note else ''}")
    print(f"report: {result.html}")
    if result.pdf:
        print(f"pdf:    {result.pdf}")
    elif result.pdf_error:
        print(f"pdf:    not written ({result.pdf_error})")
    print(f"({result.seconds:.0f} s)")
    return 1 if result.failed or result.pdf_error else 0
