"""How a report section is written: ``collect`` gathers the results, a template shows them.

A section module defines ``ID``, ``TITLE``, ``SOURCES`` (the modules quoted in the code
appendix; their source also versions the section's cached runs) and
``collect(ctx: SectionContext) -> SectionData``. ``collect`` runs its experiments through
:meth:`SectionContext.cached` (or reuses finished runs) and returns the values that its template,
``templates/sections/<ID>.html.j2``, shows. Every number goes through :meth:`SectionContext.num`,
:meth:`~SectionContext.jnum` or :meth:`~SectionContext.derived`, which record the value, the
text shown and the results file and JSON path it came from, and return a :class:`Num` that the
template shows with the ``num`` filter; a test checks the text against the results. Figures are
:class:`Figure` records shown with the ``figure`` filter, formulas go through the ``tex`` filter,
and the run folders through ``provenance``. Templates autoescape every other value, so a file
or class name from outside the code is always shown as text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from markupsafe import Markup, escape

from cnnlab.report.mathml import tex
from cnnlab.report.profiles import Profile
from cnnlab.runs import read_json, write_json

log = logging.getLogger(__name__)

COMPLETE = ".complete.json"  # written last into a cached run folder: its presence means "finished"
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Section:
    """What a section hands to the report."""

    id: str
    title: str
    html: str
    figures: list[str] = field(default_factory=list)  # paths relative to the report folder
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "run_dir", "config", "code", "seconds"}
    status: str = "ok"  # "ok", "unavailable" (the experiment's module is missing) or "failed"
    note: str = ""
    seconds: float = 0.0


class SectionData(SimpleNamespace):
    """The values a section's template shows, by name: :class:`Num`, :class:`Figure`, text, lists, flags."""


@dataclass(frozen=True)
class Num:
    """A recorded number as shown: its key in ``results.json``, its text and its unit."""

    key: str
    text: str
    unit: str = ""


@dataclass(frozen=True)
class Figure:
    """A figure copied into the report folder; its template writes the caption."""

    src: str  # relative to the report folder
    wide: bool = False


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_number(value: Any, spec: str) -> str:
    """The text shown for a number: Python's format spec, with a typographic minus and exponent."""
    if spec == "int":
        return f"{int(value):,}"
    text = format(value, spec)
    if "e" in spec and "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}×10{str(int(exp)).translate(_SUPERSCRIPT)}"
    return text.replace("-", "−")


def esc(value: Any) -> str:
    """``value`` as HTML text or attribute value (``& < > " '`` escaped), as the templates' autoescape does."""
    return str(escape(value))


def json_get(data: Any, path: Sequence[Any]) -> Any:
    """The value at ``path`` (keys and list indices) in parsed JSON ``data``."""
    for key in path:
        data = data[key]
    return data


def code_version(modules: Sequence[str]) -> str:
    """A hash of the source files of ``modules`` (a module that is not there hashes as missing).

    Part of a cached run's key: a run is reused only while the code that produced it is unchanged.
    """
    digest = hashlib.sha256()
    for module in sorted(set(modules)):
        spec = importlib.util.find_spec(module)
        origin = Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None
        digest.update(module.encode() + b"\0" + (origin.read_bytes() if origin else b"<missing>") + b"\0")
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------------- HTML of the records
def num_html(n: Num) -> Markup:
    """The ``num`` filter: a recorded number as a ``<span class="num">`` tagged with its key."""
    return Markup('<span class="num" data-key="{}">{}</span>{}').format(n.key, n.text, n.unit)


def figure_html(f: Figure, caption: str = "", alt: str | None = None) -> Markup:
    """The ``figure`` filter: ``{{ fig | figure(caption) }}`` with ``caption`` HTML (a ``{% set %}``
    block); the image's alt text is the caption's text unless ``alt`` is given."""
    caption = Markup(caption)
    return Markup('<figure{}><img src="{}" alt="{}" loading="eager"><figcaption>{}</figcaption></figure>').format(
        Markup(' class="wide"') if f.wide else "", f.src, caption.striptags() if alt is None else alt, caption)


def tex_html(src: str, display: bool = False) -> Markup:
    """The ``tex`` filter: LaTeX as MathML."""
    return Markup(tex(src, display))


def provenance_html(runs: Sequence[dict[str, Any]]) -> Markup:
    """The ``provenance`` filter: the run folders and configs a section came from."""
    if not runs:
        return Markup("")
    item = Markup('<li><code>{}</code> <details><summary>config</summary><pre class="config">{}</pre></details></li>')
    items = Markup("").join(item.format(r["run_dir"], json.dumps(r["config"], sort_keys=True, default=str))
                            for r in runs)
    return Markup('<div class="provenance"><p>Run folders:</p><ul>{}</ul></div>').format(items)


@lru_cache(maxsize=1)
def templates():
    """The report's Jinja environment: autoescaped, with the filters above."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    env.filters.update(num=num_html, figure=figure_html, tex=tex_html, provenance=provenance_html)
    return env


# ---------------------------------------------------------------------- contexts
@dataclass(frozen=True)
class ReportContext:
    """What the whole report shares: the profile, the report folder, the data and the options
    every experiment gets."""

    profile: Profile
    out: Path
    data_root: Path | None = None
    force: bool = False  # rerun finished experiments
    common: dict[str, Any] = field(default_factory=dict)  # seed/deterministic/device/quiet for every experiment
    photo: Path | None = None  # the user's photo for the photo sections (None: see report.inputs.report_photo)
    seeds: int = 1  # seeds per CIFAR-10 network: common["seed"], common["seed"] + 1, ...

    @property
    def work(self) -> Path:
        """Where the experiments' run folders and shared inputs live."""
        return self.out / "runs"

    def rel(self, path: Path) -> str:
        """``path`` relative to the report folder (as written into the HTML), else as it is."""
        try:
            return Path(path).resolve().relative_to(self.out.resolve()).as_posix()
        except ValueError:
            return str(path)


class SectionContext:
    """One section's view of the report: its cached runs, figures and recorded numbers.

    ``self.section`` collects what the report keeps of it (runs, figures, numbers); the
    report's shared settings are read through ``self.report`` or the properties below.
    """

    def __init__(self, report: ReportContext, id: str, title: str = "", sources: Sequence[str] = ()) -> None:
        self.report = report
        self.section = Section(id, title, "")
        self.code = code_version(sources)  # versions every run this section caches

    @classmethod
    def of(cls, report: ReportContext, module: Any) -> SectionContext:
        """The context for a section module (its ``ID``, ``TITLE`` and ``SOURCES``)."""
        return cls(report, module.ID, module.TITLE, module.SOURCES)

    profile = property(lambda self: self.report.profile)
    out = property(lambda self: self.report.out)
    work = property(lambda self: self.report.work)
    data_root = property(lambda self: self.report.data_root)
    photo = property(lambda self: self.report.photo)
    common = property(lambda self: self.report.common)

    def rel(self, path: Path) -> str:
        return self.report.rel(path)

    def cached(self, name: str, config: dict[str, Any], runner: Callable[[Path], Any]) -> Path:
        """The run folder for ``(name, config)``: reused when finished, else (re)run by ``runner``.

        The folder name hashes the config and :func:`code_version` of the section's sources, so a
        changed config or a changed experiment module never reuses an old result; a run
        interrupted before it finished has no completion marker and is run again (into the same
        folder, so experiments that resume from checkpoints continue where they stopped).
        """
        code = self.code
        key = hashlib.sha256(json.dumps({"name": name, "config": config, "code": code}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:10]
        run_dir = self.work / f"{name}-{key}"
        marker = run_dir / COMPLETE
        if marker.exists() and not self.report.force:
            log.info("reusing %s (finished %s)", run_dir, read_json(marker).get("finished"))
        else:
            log.info("running %s -> %s", name, run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            runner(run_dir)
            write_json(marker, {"name": name, "config": config, "code": code, "seconds": time.perf_counter() - t0,
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.section.runs.append({"name": name, "run_dir": self.rel(run_dir), "config": config, "code": code,
                                  "seconds": read_json(marker).get("seconds")})
        return run_dir

    def figure(self, src: Path, wide: bool = False) -> Figure:
        """Copy the figure ``src`` written by an experiment into the report's ``figures/``."""
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"figure {src} was not written by its experiment")
        dest = self.out / "figures" / f"{self.section.id}-{src.parent.name}-{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        rel = self.rel(dest)
        self.section.figures.append(rel)
        return Figure(rel, wide)

    def _record(self, key: str, value: Any, spec: str, unit: str, **origin: Any) -> Num:
        full = f"{self.section.id}.{key}"
        numbers = self.section.numbers
        if full in numbers and numbers[full]["value"] != value:
            raise ValueError(f"number key {full!r} used twice for different values")
        text = format_number(value, spec)
        numbers[full] = {"value": value, "text": text, "spec": spec, **origin}
        return Num(full, text, unit)

    def num(self, key: str, value: Any, spec: str, source: Path, path: Sequence[Any], unit: str = "") -> Num:
        """Record ``value`` (which must be ``source``'s JSON at ``path``) under ``<section>.<key>``."""
        return self._record(key, value, spec, unit, source={"file": self.rel(source), "path": list(path)})

    def jnum(self, key: str, source: Path, path: Sequence[Any], spec: str, unit: str = "") -> Num:
        """:meth:`num` for the value read from ``source`` at ``path``."""
        return self.num(key, json_get(read_json(source), path), spec, source, path, unit)

    def reader(self, source: Path, data: Any = None, prefix: str = "", base: Sequence[Any] = ()):
        """``N(key, path, spec, unit="")``: :meth:`num` for ``source``'s JSON (``data``, read once)
        at ``[*base, *path]``, recorded as ``prefix + key``."""
        data = read_json(source) if data is None else data

        def N(key: str, path: Sequence[Any], spec: str, unit: str = "") -> Num:
            full = [*base, *path]
            return self.num(prefix + key, json_get(data, full), spec, source, full, unit)

        return N

    def derived(self, key: str, value: Any, spec: str, formula: str, unit: str = "") -> Num:
        """Record a number computed from results (``formula`` says how)."""
        return self._record(key, value, spec, unit, derived=formula)

    def render(self, data: SectionData, template: str | None = None) -> str:
        """``data`` through the section's template (default ``sections/<id>.html.j2``)."""
        name = template or f"sections/{self.section.id}.html.j2"
        return templates().get_template(name).render(vars(data), section=self.section)

