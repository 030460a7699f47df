"""The section interface: a section runs (or reuses) its experiment and returns its HTML.

A section module defines ``ID``, ``TITLE``, ``SOURCES`` (the modules quoted in the code
appendix, whose source also versions the section's cached runs: ``ctx.begin(sec, SOURCES)``)
and ``build(ctx: Context) -> Section``. Every number it writes goes through
:meth:`Context.num`, which records the value, the text shown and where in which results JSON
it came from, so a test can check the text against the results. Strings from outside the code
(file names, paths, class names) go into the HTML only through :func:`esc`.
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
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from cnnlab.report.mathml import tex
from cnnlab.report.profiles import Profile
from cnnlab.runs import read_json, write_json

log = logging.getLogger(__name__)

COMPLETE = ".complete.json"  # written last into a cached run folder: its presence means "finished"


@dataclass
class Section:
    """What a section hands to the report."""

    id: str
    title: str
    html: str
    figures: list[str] = field(default_factory=list)  # paths relative to the report folder
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"name", "run_dir", "config"}
    status: str = "ok"  # "ok", "unavailable" (the experiment's module is missing) or "failed"
    note: str = ""
    seconds: float = 0.0


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
    """``value`` as HTML text or attribute value (``& < > " '`` escaped), as Jinja's autoescape does.

    Every string that comes from outside the code (file names, paths, class names, messages)
    goes through this before it is put into a section's HTML.
    """
    return str(escape(value))


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


def json_get(data: Any, path: Sequence[Any]) -> Any:
    for key in path:
        data = data[key]
    return data


class Context:
    """What a section may use: the profile, data root, the report folder, caching and numbers."""

    def __init__(self, profile: Profile, out: Path, data_root: Path | None, force: bool = False,
                 common: dict[str, Any] | None = None, photo: Path | None = None) -> None:
        self.profile = profile
        self.out = out
        self.work = out / "runs"
        self.data_root = data_root
        self.photo = photo  # the user's photo for the photo sections (None: see report.inputs.report_photo)
        self.force = force
        self.common = common or {}  # seed/deterministic/device/quiet passed to every experiment
        self._section: Section | None = None
        self.code = code_version(())  # code_version of the current section's SOURCES (set by begin)

    # ------------------------------------------------------------------ sections
    def begin(self, sec: Section, sources: Sequence[str] = ()) -> Section:
        """Start ``sec``; ``sources`` (the section's ``SOURCES``) version the runs it caches."""
        self._section = sec
        self.code = code_version(sources)  # hashed once per section, not per cached run
        return sec

    @property
    def section(self) -> Section:
        assert self._section is not None, "call ctx.begin(Section(...)) first"
        return self._section

    # ------------------------------------------------------------------ caching
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
        if marker.exists() and not self.force:
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

    # ------------------------------------------------------------------ output helpers
    def rel(self, path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(self.out.resolve()).as_posix()
        except ValueError:
            return str(path)

    def figure(self, src: Path, caption: str, alt: str | None = None, wide: bool = False) -> str:
        """Copy a figure into ``figures/`` and return its ``<figure>`` HTML."""
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"figure {src} was not written by its experiment")
        dest = self.out / "figures" / f"{self.section.id}-{src.parent.name}-{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        rel = self.rel(dest)
        self.section.figures.append(rel)
        cls = ' class="wide"' if wide else ""
        alt = alt if alt is not None else Markup(caption).striptags()  # the caption's text, without its markup
        return (f'<figure{cls}><img src="{esc(rel)}" alt="{esc(alt)}" loading="eager">'
                f"<figcaption>{caption}</figcaption></figure>")

    def _key(self, key: str, value: Any) -> str:
        full = f"{self.section.id}.{key}"
        if full in self.section.numbers and self.section.numbers[full]["value"] != value:
            raise ValueError(f"number key {full!r} used twice for different values")
        return full

    def num(self, key: str, value: Any, spec: str, source: Path, path: Sequence[Any], unit: str = "") -> str:
        """Show ``value`` (which must be ``source``'s JSON at ``path``) and record it."""
        full = self._key(key, value)
        text = format_number(value, spec)
        self.section.numbers[full] = {"value": value, "text": text, "spec": spec,
                                      "source": {"file": self.rel(source), "path": list(path)}}
        return f'<span class="num" data-key="{esc(full)}">{esc(text)}</span>{esc(unit)}'

    def derived(self, key: str, value: Any, spec: str, formula: str, unit: str = "") -> str:
        """Show a number computed from results (``formula`` says how) and record it."""
        full = self._key(key, value)
        text = format_number(value, spec)
        self.section.numbers[full] = {"value": value, "text": text, "spec": spec, "derived": formula}
        return f'<span class="num" data-key="{esc(full)}">{esc(text)}</span>{esc(unit)}'

    def jnum(self, key: str, source: Path, path: Sequence[Any], spec: str, unit: str = "") -> str:
        """:meth:`num` for the value read from ``source`` at ``path``."""
        return self.num(key, json_get(read_json(source), path), spec, source, path, unit)

    @staticmethod
    def tex(src: str, display: bool = False) -> str:
        return tex(src, display)

    def provenance(self) -> str:
        """The run folders and configs this section came from, as HTML."""
        items = []
        for r in self.section.runs:
            cfg = json.dumps(r["config"], sort_keys=True, default=str)
            items.append(f'<li><code>{esc(r["run_dir"])}</code> <details><summary>config</summary>'
                         f'<pre class="config">{esc(cfg)}</pre></details></li>')
        return f'<div class="provenance"><p>Run folders:</p><ul>{"".join(items)}</ul></div>' if items else ""
