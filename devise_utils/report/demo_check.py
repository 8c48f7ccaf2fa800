"""The demo page (:mod:`devise_utils.apps.demo`) as a phone sees it, in headless Chromium.

The folder is served on 127.0.0.1 (a free port, stopped on exit and after ``timeout``)
because module scripts and ``fetch`` do not work from ``file://``. Chromium is driven over
``--remote-debugging-pipe`` (the DevTools protocol on fds 3/4, no port, no extra package):
the page loads ``?photo=...``, and the driver waits for ``body[data-state]`` to turn
``done``/``error`` in real time, so WASM start-up and inference need no virtual-time guess.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devise_utils.report.check import CHROMIUM_FLAGS, find_chromium


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: str | Path, timeout: float = 300) -> Iterator[str]:
    """``http://127.0.0.1:PORT/`` serving ``folder`` until the block ends (or ``timeout``)."""
    handler = functools.partial(_Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(timeout, httpd.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        timer.cancel()
        httpd.shutdown()
        httpd.server_close()


class _Pipe:
    """The DevTools protocol over Chromium's pipe: NUL-terminated JSON messages."""

    def __init__(self, proc: subprocess.Popen, send_fd: int, recv_fd: int, deadline: float):
        self.proc, self.send_fd, self.recv_fd, self.deadline = proc, send_fd, recv_fd, deadline
        self.buf, self.next_id, self.events = b"", 0, []

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.recv_fd], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.recv_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.send_fd, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._message())


def _launch(exe: str, profile: str) -> tuple[subprocess.Popen, int, int]:
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def fds() -> None:  # the child's fd 3 reads commands, fd 4 writes replies
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, "--remote-debugging-pipe",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=fds,
                            start_new_session=True)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    return proc, to_chrome_w, from_chrome_r


def _stop(proc: subprocess.Popen) -> None:
    """End the browser and its child processes (its own process group)."""
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


_WAIT = """new Promise((resolve) => { const t0 = performance.now(); (function poll() {
  const s = document.body && document.body.dataset.state;
  if (s === 'done' || s === 'error' || performance.now() - t0 > %d) {
    const box = document.getElementById('tags').getBoundingClientRect();
    resolve(JSON.stringify({
      state: s, status: document.getElementById('status').textContent,
      tags: [...document.querySelectorAll('#tags li')].map((li) => li.dataset.word),
      label: document.getElementById('label').textContent,
      hits: [...document.querySelectorAll('#hits figure')].map((f) => +f.dataset.index),
      tags_box: [box.left + scrollX, box.top + scrollY, box.width, box.height],
      result: window.demoResult || null,
      input: window.demo && window.demo.lastInput ? Array.from(window.demo.lastInput) : null}));
  } else setTimeout(poll, 50); })(); })"""


def check_demo(folder: str | Path, photos: Sequence[str], *,
               screenshot: str | Path | None = None, query: str = "",
               classes: str | None = None, repeat: int = 0, width: int = 420,
               height: int = 900, timeout: float = 120, chromium: str | None = None
               ) -> list[dict[str, Any]]:
    """Open ``folder``'s page on each of ``photos`` (paths inside ``folder``) in one headless
    Chromium, one page load each; return what each page computed.

    ``query`` and ``classes`` (comma-separated) fill the page's search box and class list.
    Each result holds the page's ``state``, ``tags`` (as listed), ``label``, ``hits``
    (gallery indices found for ``query``), ``tags_box`` (the tag list's rectangle in the
    page, CSS px), ``result`` (embedding, class scores, timings of 1 + ``repeat`` runs) and
    ``input`` (the preprocessed tensor). ``screenshot``: a full-page PNG of the first
    photo's page, ``width`` CSS px wide (a phone's width by default).
    """
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("headless Chromium not found; on Debian/Ubuntu: "
                                "apt-get install -y chromium")
    deadline = time.monotonic() + timeout
    results = []
    with serve(folder, timeout + 10) as url, \
            tempfile.TemporaryDirectory(prefix="devise-chromium-",
                                        ignore_cleanup_errors=True) as profile:
        proc, send_fd, recv_fd = _launch(exe, profile)
        try:
            cdp = _Pipe(proc, send_fd, recv_fd, deadline)
            target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
            sid = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            cdp.call("Emulation.setDeviceMetricsOverride", sid, width=width, height=height,
                     deviceScaleFactor=1, mobile=True)
            cdp.call("Page.enable", sid)
            for photo in photos:
                page = (f"{url}index.html?photo={quote(photo)}&repeat={repeat}&q={quote(query)}"
                        + (f"&classes={quote(classes)}" if classes else ""))
                cdp.call("Page.navigate", sid, url=page)
                cdp.wait_event("Page.loadEventFired")
                ms = int(max(1.0, deadline - time.monotonic()) * 1000)
                out = cdp.call("Runtime.evaluate", sid, expression=_WAIT % ms,
                               awaitPromise=True, returnByValue=True)
                results.append({"photo": photo, **json.loads(out["result"]["value"])})
                if screenshot and len(results) == 1:
                    png = cdp.call("Page.captureScreenshot", sid, format="png",
                                   captureBeyondViewport=True)["data"]
                    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                    Path(screenshot).write_bytes(base64.b64decode(png))
            with contextlib.suppress(Exception):
                cdp.call("Browser.close")
        finally:
            for fd in (send_fd, recv_fd):
                os.close(fd)
            _stop(proc)
    return results
