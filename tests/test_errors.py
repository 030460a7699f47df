"""Clear one-line errors that lose nothing: failed writes, a hung Chromium, a corrupt download."""

from __future__ import annotations

import errno
import os

import pytest

from cnnlab import runs
from cnnlab.cli import main


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- writes
def test_atomic_write_failure_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("the previous, complete file")

    def half_then_disk_full(tmp):
        tmp.write_text('{"half": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        runs.atomic_write(target, half_then_disk_full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "the previous, complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary file left


def test_cli_write_into_a_file_instead_of_a_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    out = blocker / "run"
    assert main(["batchnorm", "--out", str(out), "--quiet"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0], lines
    assert blocker.read_text() == "a regular file"


def test_cli_disk_full_is_one_line_naming_the_file_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)  # the bytes could not be made durable: disk full
    out = tmp_path / "run"
    assert main(["batchnorm", "--out", str(out), "--quiet"]) == 2
    lines = _error_lines(capsys)
    assert lines == [f"error: {out / 'config.json'}: {os.strerror(errno.ENOSPC)}"]
    assert list(out.iterdir()) == []  # neither config.json nor a temporary file
