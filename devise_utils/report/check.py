"""The report seen as a reader sees it: index.html rendered in headless Chromium.

``python -m devise_utils.report check reports/builtin`` (``make check-report``) fails unless
every figure loads from the page itself, so a report that looks fine in a notebook but
breaks in a browser is caught.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Flags that work for headless Chromium in a container, as root, offline.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio")


#: Run in the page after load: what the images did, written into the DOM for --dump-dom.
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var r = {
    title: document.title,
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt || i.src.slice(0, 80); }),
    external: imgs.filter(function (i) { return i.src.slice(0, 5) !== 'data:'; })
                  .map(function (i) { return i.src.slice(0, 120); }),
    sizes: imgs.map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
    figures: imgs.map(function (i) { return i.getAttribute('data-figure'); }),
    missing_figures: Array.prototype.map.call(
      document.querySelectorAll('.missing-figure'),
      function (e) { return e.getAttribute('data-figure'); }),
    tables: document.querySelectorAll('table').length,
    height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)
  };
  var pre = document.createElement('pre');
  pre.id = 'devise-report-check';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


class ReportCheckError(AssertionError):
    """The rendered report failed the browser check."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if exe := shutil.which(name):
            return exe
    return None


def _chromium(exe: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="devise-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def browser_check(index: str | Path, *, screenshot: str | Path | None = None,
                  chromium: str | None = None, timeout: float = 120,
                  width: int = 1280) -> dict[str, Any]:
    """Render ``index`` (an index.html) in headless Chromium; return what the page did:
    ``images``, ``loaded``, ``broken``, ``external`` (img srcs that are not data: URIs),
    ``missing_figures``, ``tables``, ``height``. ``screenshot``: also save a full-page PNG.

    The page is loaded from a temporary copy with a probe script added (and a ``<base>``
    pointing at the report folder), so the report itself is not changed.
    """
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("headless Chromium not found; on Debian/Ubuntu: "
                                "apt-get install -y chromium")
    index = Path(index).resolve()
    page = index.read_text(encoding="utf-8")
    inject = f'<base href="{index.parent.as_uri()}/">{_PROBE}'
    m = re.search(r"<head[^>]*>", page, re.I)
    page = page[:m.end()] + inject + page[m.end():] if m else inject + page
    with tempfile.TemporaryDirectory(prefix="devise-check-") as tmp:
        probe_page = Path(tmp) / "index.html"
        probe_page.write_text(page, encoding="utf-8")
        p = _chromium(exe, ["--virtual-time-budget=10000", f"--window-size={width},900",
                            "--dump-dom", probe_page.as_uri()], timeout)
    m = re.search(r'<pre id="devise-report-check">(.*?)</pre>', p.stdout, re.S)
    if p.returncode != 0 or not m:
        raise ReportCheckError(f"Chromium did not render {index} (exit {p.returncode}):\n"
                               + p.stderr[-2000:])
    result = json.loads(html.unescape(m.group(1)))
    if screenshot:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        height = min(max(int(result.get("height") or 900), 600), 16000)
        s = _chromium(exe, ["--virtual-time-budget=10000", f"--window-size={width},{height}",
                            f"--screenshot={screenshot}", index.as_uri()], timeout)
        if s.returncode != 0 or not screenshot.is_file():
            raise ReportCheckError(f"Chromium could not screenshot {index}:\n"
                                   + s.stderr[-2000:])
        result["screenshot"] = str(screenshot)
    return result


def check_report(report: str | Path, *, screenshot: str | Path | None = None,
                 allow_missing: bool = False, chromium: str | None = None) -> dict[str, Any]:
    """:func:`browser_check` a report (its folder or its index.html) and raise
    :class:`ReportCheckError` unless every image loads from a ``data:`` URI, tables render,
    and (unless ``allow_missing``) every figure of :data:`FIGURES` is there."""
    report = Path(report)
    index = report if report.suffix in (".html", ".htm") else report / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found (make reports writes it)")
    r = browser_check(index, screenshot=screenshot, chromium=chromium)
    problems = []
    if r["broken"]:
        problems.append(f"{len(r['broken'])} of {r['images']} images did not load: "
                        f"{r['broken']}")
    if r["external"]:
        problems.append(f"images not embedded (the page breaks when moved): {r['external']}")
    if r["missing_figures"] and not allow_missing:
        problems.append(f"figures missing from the report: {r['missing_figures']}")
    if not r["images"] and not allow_missing:
        problems.append("no figures at all")
    if not r["tables"]:
        problems.append("no tables rendered")
    if problems:
        raise ReportCheckError(f"{index}: " + "; ".join(problems))
    return r
