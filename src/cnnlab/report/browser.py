"""Headless Chromium: print the report to PDF, and load a page to check it like a user would.

Debian's ``chromium`` (``make setup`` installs it). :func:`print_pdf` uses the command line's
``--print-to-pdf``; :func:`check_page` speaks the DevTools protocol over
``--remote-debugging-pipe`` (file descriptors 3 and 4, NUL-separated JSON) — no extra package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

CHROMIUM_ENV = "CNNLAB_CHROMIUM"
FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


def chromium_flags() -> list[str]:
    """:data:`FLAGS`, plus ``--no-sandbox`` only when running as root, where Chromium refuses to
    start with its sandbox; any other user keeps it."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return [*FLAGS, "--no-sandbox"] if as_root else list(FLAGS)


def block_javascript(profile: str | Path) -> None:
    """Block JavaScript in the Chromium profile folder ``profile`` (its default content setting).

    ``--blink-settings=scriptEnabled=false`` would also stop the DevTools calls that
    ``--print-to-pdf`` makes, so nothing is printed; the profile setting blocks the page's
    scripts only. MathML and CSS need no JavaScript.
    """
    prefs = Path(profile) / "Default" / "Preferences"
    prefs.parent.mkdir(parents=True, exist_ok=True)
    prefs.write_text(json.dumps({"profile": {"default_content_setting_values": {"javascript": 2}}}))


def find_chromium() -> str | None:
    """``$CNNLAB_CHROMIUM``, else the first of chromium, chromium-browser, google-chrome on PATH."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(CnnlabError, RuntimeError):
    """Chromium is missing, failed or hung; the CLI prints the message as one line."""


class BrowserTimeout(BrowserError):
    """Chromium did not finish in time (its whole process group has been killed)."""


PDF_TIMEOUT_S = 120.0  # the full report prints in seconds; past this Chromium is taken to hang


def run_in_own_group(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)`` in a new session.

    Chromium starts renderer, GPU and zygote helpers; killing only the process it was started as
    would leave them running. On a time-out (or Ctrl-C) the whole process group is killed with
    ``os.killpg`` before the exception goes on.
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the session leader's pid is the group id
        except ProcessLookupError:
            pass
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()  # a helper that escaped the group may still hold the pipes: do not read them
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def print_pdf(html: Path, pdf: Path, timeout: float | None = None) -> Path:
    """Print ``html`` to ``pdf`` with headless Chromium (A4, print CSS, no header/footer, no JavaScript)."""
    exe = find_chromium()
    if exe is None:
        raise BrowserError("chromium not found: run `make setup` (it installs Debian's chromium) "
                           f"or set ${CHROMIUM_ENV}")
    timeout = PDF_TIMEOUT_S if timeout is None else timeout
    pdf = Path(pdf).resolve()
    tmp_pdf = pdf.with_name(f".{pdf.name}.tmp")
    with tempfile.TemporaryDirectory(prefix="cnnlab-chromium-") as profile:
        block_javascript(profile)  # the report needs none; a script smuggled into it must not run
        cmd = [exe, *chromium_flags(), f"--user-data-dir={profile}", "--no-pdf-header-footer",
               "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000",
               f"--print-to-pdf={tmp_pdf}", Path(html).resolve().as_uri()]
        try:
            proc = run_in_own_group(cmd, timeout)
        except BaseException as exc:
            tmp_pdf.unlink(missing_ok=True)  # a half-printed PDF must not look like a finished one
            if isinstance(exc, subprocess.TimeoutExpired):
                raise BrowserTimeout(f"chromium did not finish printing {html} within {timeout:g} s and was "
                                     "stopped; the HTML report is complete, open it in a browser, or rerun "
                                     "with --no-pdf") from None
            raise
    if proc.returncode != 0 or not tmp_pdf.is_file() or tmp_pdf.stat().st_size == 0:
        tmp_pdf.unlink(missing_ok=True)
        raise BrowserError(f"chromium could not print {html} (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    os.replace(tmp_pdf, pdf)
    return pdf


@dataclass
class PageCheck:
    """What a real browser saw when it loaded the page."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)  # src, naturalWidth, naturalHeight, complete
    title: str = ""
    screenshot: Path | None = None

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [im for im in self.images if not im["naturalWidth"]]


class _Pipe:
    """A DevTools-protocol session over Chromium's --remote-debugging-pipe."""

    def __init__(self, exe: str, profile: str, width: int, height: int) -> None:
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()
        # the browser reads commands on fd 3 and writes replies on fd 4
        self.proc = subprocess.Popen(
            [exe, *chromium_flags(), f"--user-data-dir={profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=lambda: (os.dup2(to_browser_r, 3), os.dup2(from_browser_w, 4)),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._next(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def _next(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self._w, json.dumps({"id": self._id + 1, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            for fd in (self._r, self._w):
                try:
                    os.close(fd)
                except OSError:
                    pass


_IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
              "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, complete: i.complete})))")


def check_page(html: Path, screenshot: Path | None = None, width: int = 1280, height: int = 900,
               mobile: bool = False, timeout: float = 60.0) -> PageCheck:
    """Load ``html`` from disk in headless Chromium; collect console errors, failed requests, images."""
    exe = find_chromium()
    if exe is None:
        raise BrowserError(f"chromium not found: run `make setup` or set ${CHROMIUM_ENV}")
    url = Path(html).resolve().as_uri()
    result = PageCheck(url)
    with tempfile.TemporaryDirectory(prefix="cnnlab-chromium-") as profile:
        pipe = _Pipe(exe, profile, width, height)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            sid = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=sid)
            if mobile:
                pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                  "deviceScaleFactor": 2, "mobile": True}, session=sid)
            pipe.send("Page.navigate", {"url": url}, session=sid)
            pipe.wait_event("Page.loadEventFired", timeout=timeout)
            time.sleep(0.3)  # late console messages and image decodes
            images = pipe.send("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True}, session=sid)
            result.images = json.loads(images["result"]["value"])
            result.title = pipe.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                                     session=sid)["result"]["value"]
            if screenshot is not None:
                import base64

                shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                                 session=sid)
                screenshot = Path(screenshot)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                result.screenshot = screenshot
            pipe.send("Runtime.evaluate", {"expression": "1"}, session=sid)  # flush pending events
        finally:
            pipe.close()
    urls = {ev["params"]["requestId"]: ev["params"]["request"]["url"]
            for ev in pipe.events if ev.get("method") == "Network.requestWillBeSent"}
    for ev in pipe.events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            result.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            result.console_errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            result.console_errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} "
                                         f"{params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            result.failed_requests.append(f"{urls.get(params.get('requestId'), params.get('requestId'))}: "
                                          f"{params.get('errorText')}")
    return result
