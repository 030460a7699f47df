"""Every function in ``src/cnnlab`` fits on one screen: at most 60 lines, decorators excluded."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnlab

MAX_LINES = 60
SOURCE = Path(cnnlab.__file__).resolve().parent


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function and method in one file, nested ones included.

    The length counts from the ``def`` line to the function's last line, so a docstring counts
    and the decorators above the ``def`` do not.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None]


def test_the_counter_measures_from_def_to_last_line(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("@decorator\ndef f():\n    x = 1\n\n    return x\n\n\nclass C:\n    def g(self):\n        pass\n")
    assert sorted(function_lengths(source)) == [("f", 2, 4), ("g", 9, 2)]


def test_no_function_is_longer_than_sixty_lines():
    too_long = [f"{path.relative_to(SOURCE.parent)}:{line} {name} ({length} lines)"
                for path in sorted(SOURCE.rglob("*.py"))
                for name, line, length in function_lengths(path)
                if length > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines:\n" + "\n".join(too_long)
