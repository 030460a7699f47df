"""The code appendix: each experiment's source, syntax-highlighted with pygments."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cnnlab.report.section import esc


def module_source(module: str) -> tuple[Path, str] | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    return path, path.read_text(encoding="utf-8")


def appendix_html(sources: list[tuple[str, list[str]]]) -> tuple[str, str]:
    """(HTML, CSS) for ``[(section title, [module, ...]), ...]``; each module's file once."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    formatter = HtmlFormatter(cssclass="highlight", linenos=False)
    seen: set[str] = set()
    parts = []
    for title, modules in sources:
        blocks = []
        for module in modules:
            found = module_source(module)
            if found is None or module in seen:
                continue
            seen.add(module)
            path, text = found
            rel = "/".join(path.parts[path.parts.index("cnnlab"):]) if "cnnlab" in path.parts else path.name
            blocks.append(f'<h4 id="src-{esc(module)}"><code>{esc(rel)}</code> '
                          f'<span class="muted">({len(text.splitlines())} lines)</span></h4>'
                          + highlight(text, PythonLexer(), formatter))
        if blocks:
            parts.append(f"<h3>{esc(title)}</h3>" + "".join(blocks))
    return "".join(parts), formatter.get_style_defs(".highlight")
