"""The study's report: results.json, results.md, index.html and each notebook's HTML.

results.md puts the poster's numbers beside this run's, table by table
(:mod:`devise_utils.report.tables`), and names the dataset and split so nobody mistakes a
built-in run for AwA2; index.html is the same at a glance (:mod:`devise_utils.report.html`).

``python -m devise_utils.report check reports/builtin`` renders index.html in headless
Chromium and fails unless every figure loads (``make check-report``);
``python -m devise_utils.report build reports/builtin`` re-writes a report's HTML,
results.md and index.html from what its notebooks recorded, without re-running them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devise_utils.core.config import ROOT
from devise_utils.core.files import atomic_write, read_json, write_json
from devise_utils.report.check import ReportCheckError, check_report
from devise_utils.report.html import find_figures, index_html, notebook_html
from devise_utils.report.tables import results_markdown


def environment() -> dict[str, Any]:
    """Where the run ran: python, torch, device, platform (torch is imported here only)."""
    env: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch
    except ImportError:
        env.update(torch="not installed", device=f"cpu ({_cpu()})")
    else:
        env.update(torch=torch.__version__,
                   device=(torch.cuda.get_device_name(0) if torch.cuda.is_available()
                           else f"cpu ({_cpu()})"))
    env.update(cpus=os.cpu_count(), platform=platform.platform(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return env


def _cpu() -> str:
    return platform.processor() or platform.machine()


def collect(report_dir: str | Path) -> dict[str, Any]:
    """Every notebook's recorded results (``report_dir/results/*.json``) in one dict."""
    return {p.stem: read_json(p) for p in sorted((Path(report_dir) / "results").glob("*.json"))}


def write_reports(report_dir: str | Path, status: dict[str, Any],
                  notebook_names: Sequence[str], *,
                  env: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write results.json, results.md and index.html into ``report_dir``.

    ``status``: the pipeline's run status (params, per-notebook ok/seconds/error, failed);
    ``notebook_names``: every notebook of the study in order (``"00_data_prep.ipynb"``, ...),
    run or not; ``env``: the environment entry, default :func:`environment` (imports torch,
    so tests pass their own). Figures come from the executed notebooks in ``report_dir``.
    Returns the results dict written to results.json.
    """
    report_dir = Path(report_dir)
    env = environment() if env is None else env
    results = {"status": status, "environment": env, **collect(report_dir)}
    write_json(report_dir / "results.json", results)
    md = results_markdown(results)
    atomic_write(report_dir / "results.md", lambda p: p.write_text(md, encoding="utf-8"))
    page = index_html(results, notebook_names, find_figures(report_dir, notebook_names))
    atomic_write(report_dir / "index.html", lambda p: p.write_text(page, encoding="utf-8"))
    return results


# --------------------------------------------------------------------------- notebook HTML


# --------------------------------------------------------------------------- command line

def rebuild(report_dir: str | Path, notebook_names: Sequence[str] | None = None
            ) -> dict[str, Any]:
    """Re-write every executed notebook's HTML and the report files of ``report_dir`` from
    its status.json and recorded results (no notebook is re-run; the environment recorded
    in results.json is kept)."""
    report_dir = Path(report_dir)
    status = read_json(report_dir / "status.json")
    if notebook_names is None:
        notebook_names = sorted({nb.name for nb in notebooks()} | set(status.get("notebooks", {})))
    for name in notebook_names:
        if (report_dir / name).is_file():
            notebook_html(report_dir / name)
    old = report_dir / "results.json"
    env = read_json(old).get("environment") if old.is_file() else None
    return write_reports(report_dir, status, notebook_names, env=env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devise_utils.report",
                                description="Check or rebuild a study report.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="render index.html in headless Chromium; fail unless "
                                     "every figure loads")
    c.add_argument("report", help="a report folder (reports/<run>) or its index.html")
    c.add_argument("--screenshot", help="also save a full-page PNG screenshot here")
    c.add_argument("--allow-missing", action="store_true",
                   help="do not fail when a figure of the study is absent")
    b = sub.add_parser("build", help="re-write a report's HTML, results.md and index.html "
                                     "from its recorded results (no notebook is re-run)")
    b.add_argument("report", help="a report folder (reports/<run>)")
    a = p.parse_args(argv)
    if a.cmd == "build":
        rebuild(a.report)
        print(f"written: {Path(a.report) / 'index.html'}")
        return 0
    try:
        r = check_report(a.report, screenshot=a.screenshot, allow_missing=a.allow_missing)
    except (ReportCheckError, FileNotFoundError) as e:
        print(f"report check FAILED: {e}", file=sys.stderr)
        return 1
    print(f"report check ok: {r['loaded']}/{r['images']} figures loaded "
          f"({', '.join(str(f) for f in r['figures'])}), {r['tables']} tables"
          + (f"; {len(r['missing_figures'])} figures absent: {r['missing_figures']}"
             if r["missing_figures"] else "")
          + (f"; screenshot {r['screenshot']}" if r.get("screenshot") else ""))
    return 0



def notebooks() -> list[Path]:
    """The study's notebooks in run order (``NN_name.ipynb``)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


NOTEBOOK_DIR = ROOT / "notebooks"
