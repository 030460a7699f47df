"""LaTeX to MathML, offline (latex2mathml); Chromium and Firefox render MathML natively."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=512)
def tex(src: str, display: bool = False) -> str:
    from latex2mathml.converter import convert

    return convert(src, display="block" if display else "inline")
