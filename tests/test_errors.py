"""Clear one-line errors that lose nothing: failed writes, a hung Chromium, a corrupt download."""

from __future__ import annotations

import errno
import os
import stat

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


# ----------------------------------------------------------------------------- a hung Chromium
def _hanging_chromium(tmp_path, monkeypatch):
    """A stand-in ``chromium`` that starts a helper, writes half a PDF and never finishes.

    Returns the file where it records its own pid and its helper's."""
    pids = tmp_path / "pids.txt"
    exe = tmp_path / "chromium"
    exe.write_text(f"""#!/bin/sh
for a in "$@"; do
  case "$a" in --print-to-pdf=*) printf '%%PDF-1.4 half' > "${{a#--print-to-pdf=}}" ;; esac
done
sleep 300 &
echo $! $$ > '{pids}'
wait
""")
    exe.chmod(0o755)
    monkeypatch.setenv("CNNLAB_CHROMIUM", str(exe))
    return pids


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (killed but not yet reaped by its new parent)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _assert_all_stopped(pids_file) -> None:
    import time

    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, pids)), "chromium or its helper still runs"


def test_chromium_time_out_is_a_clear_error_that_kills_its_process_group(tmp_path, monkeypatch):
    from cnnlab.errors import CnnlabError
    from cnnlab.report import browser

    pids = _hanging_chromium(tmp_path, monkeypatch)
    page = tmp_path / "index.html"
    page.write_text("<p>the report</p>")
    with pytest.raises(CnnlabError, match=r"did not finish printing .*index.html within 1 s") as info:
        browser.print_pdf(page, tmp_path / "report.pdf", timeout=1)
    assert isinstance(info.value, browser.BrowserTimeout) and "\n" not in str(info.value)
    _assert_all_stopped(pids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chromium", "index.html", "pids.txt"]  # no PDF, temp or final
    assert page.read_text() == "<p>the report</p>"


def test_report_with_a_hung_chromium_keeps_the_html_and_says_why_there_is_no_pdf(tmp_path, monkeypatch, capsys):
    from cnnlab.report import browser

    pids = _hanging_chromium(tmp_path, monkeypatch)
    monkeypatch.setattr(browser, "PDF_TIMEOUT_S", 1.0)
    out = tmp_path / "report"
    assert main(["report", "--profile", "tiny", "--sections", "batchnorm", "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "pdf:    not written (chromium did not finish printing" in captured.out
    _assert_all_stopped(pids)
    assert (out / "index.html").stat().st_size > 0
    assert not (out / "report.pdf").exists() and not list(out.glob(".report.pdf*"))


def test_a_checkpoint_on_a_full_disk_is_an_oserror_naming_it(tmp_path, monkeypatch):
    import tempfile

    import torch

    from cnnlab.train import checkpoint

    if not (os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)):
        pytest.skip("no /dev/full device on this system")
    real_mkstemp = tempfile.mkstemp

    def temp_file_on_a_full_disk(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)  # every write to it fails with ENOSPC, as on a full disk
        return os.open(name, os.O_WRONLY), name

    monkeypatch.setattr(runs.tempfile, "mkstemp", temp_file_on_a_full_disk)
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as info:
        checkpoint.save(target, {"weights": torch.zeros(100_000)})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary file
