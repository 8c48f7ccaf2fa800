"""Run the whole study: every notebook in order through papermill, into one report.

``python -m devise_utils.pipeline`` (README's first command) writes
``reports/<run>/``: the executed notebooks, their HTML, ``index.html`` with the
headline numbers, ``results.json`` (every notebook's recorded results) and
``results.md`` (the poster's tables with this run's numbers beside them).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .config import ROOT
from .files import atomic_write, read_json, write_json

NOTEBOOK_DIR = ROOT / "notebooks"


def notebooks() -> list[Path]:
    """The study's notebooks in run order (``NN_name.ipynb``)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def to_html(nb_path: Path) -> Path:
    """nbconvert an executed notebook to a standalone HTML page beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(nb_path, as_version=4))
    out = nb_path.with_suffix(".html")
    atomic_write(out, lambda p: p.write_text(body, encoding="utf-8"))
    return out


def run(params: dict[str, Any], report_dir: str | Path, *, start: int = 0,
        kernel: str = "python3", log=print) -> dict[str, Any]:
    """Execute the notebooks from number ``start`` on; stop at the first failure.

    Earlier notebooks' outputs in ``report_dir`` are kept (resume with ``start``).
    Returns the status written into results.json.
    """
    import papermill as pm

    report_dir = Path(report_dir).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    params = {**params, "report_dir": str(report_dir)}
    nbs = notebooks()
    status_path = report_dir / "status.json"
    status = read_json(status_path) if status_path.is_file() and start else {"notebooks": {}}
    status.update(params=params, failed=None)
    t_all = time.perf_counter()
    for i, nb in enumerate(nbs, 1):
        if int(nb.name[:2]) < start:
            continue
        out = report_dir / nb.name
        log(f"[{i}/{len(nbs)}] {nb.name} ...", flush=True)
        t0 = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name=kernel,
                                cwd=str(NOTEBOOK_DIR), progress_bar=False)
        except pm.PapermillExecutionError as e:
            error = f"{e.ename}: {e.evalue}"
        secs = time.perf_counter() - t0
        if out.is_file():
            to_html(out)
        status["notebooks"][nb.name] = {"ok": error is None, "seconds": round(secs, 1),
                                        "error": error}
        write_json(status_path, status)
        if error:
            status["failed"] = nb.name
            log(f"    FAILED after {secs:.1f} s: {error}\n    executed copy kept: {out}",
                flush=True)
            break
        log(f"    ok ({secs:.1f} s)", flush=True)
    status["seconds"] = round(time.perf_counter() - t_all, 1)
    write_json(status_path, status)
    write_reports(report_dir, status)
    return status


def collect(report_dir: Path) -> dict[str, Any]:
    """Every notebook's recorded results (``report_dir/results/*.json``) in one dict."""
    rec = {}
    for p in sorted((report_dir / "results").glob("*.json")):
        rec[p.stem] = read_json(p)
    return rec


def environment() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                       else f"cpu ({platform.processor() or platform.machine()})"),
            "platform": platform.platform()}


def write_reports(report_dir: Path, status: dict[str, Any]) -> None:
    """results.json, results.md and index.html from the notebooks' records."""
    from .report import index_html, results_markdown

    results = {"status": status, "environment": environment(), **collect(report_dir)}
    write_json(report_dir / "results.json", results)
    md = results_markdown(results)
    atomic_write(report_dir / "results.md", lambda p: p.write_text(md, encoding="utf-8"))
    page = index_html(results, [nb.name for nb in notebooks()])
    atomic_write(report_dir / "index.html", lambda p: p.write_text(page, encoding="utf-8"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devise_utils.pipeline",
                                description="Run every notebook of the study into reports/<run>/.")
    p.add_argument("--dataset", default="builtin",
                   help="builtin (default, generated here), awa2, or a folder in AwA2 layout")
    p.add_argument("--vectors", help="word vectors (.vec/.txt/.bin); default: the dataset's")
    p.add_argument("--weights", help="backbone weights: none, imagenet, or a local file")
    p.add_argument("--data-dir", help="where datasets and caches live (default: data/)")
    p.add_argument("--runs-dir", help="model/artifact cache (default: runs/)")
    p.add_argument("--out", help="report folder (default: reports/<run name>)")
    p.add_argument("--name", help="run name (default: the dataset's name)")
    p.add_argument("--from", dest="start", type=int, default=0,
                   help="resume: start at notebook NN, keep earlier outputs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other notebook parameter, e.g. --set stage1_epochs=10 "
                        "(values are read as JSON, else as text)")
    return p.parse_args(argv)


def params_from_args(a: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"dataset": a.dataset}
    for k in ("vectors", "data_dir", "runs_dir"):
        if getattr(a, k):
            params[k] = str(Path(getattr(a, k)).resolve())
    if a.weights:
        params["weights"] = a.weights if a.weights in ("none", "imagenet") else str(
            Path(a.weights).resolve())
    if a.dataset not in ("builtin", "awa2"):
        params["dataset"] = str(Path(a.dataset).resolve())
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    params = params_from_args(a)
    name = a.name or (a.dataset if a.dataset in ("builtin", "awa2") else Path(a.dataset).name)
    out = Path(a.out) if a.out else ROOT / "reports" / name
    print(f"DeViSE-Mobile study: {len(notebooks())} notebooks -> {out}", flush=True)
    status = run(params, out, start=a.start)
    if status["failed"]:
        print(f"stopped at {status['failed']}; see {out / status['failed']}", file=sys.stderr)
        return 1
    print(f"done in {status['seconds']:.0f} s: {out / 'index.html'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run the whole study (all notebooks) into reports/",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: main(a.args))


if __name__ == "__main__":
    raise SystemExit(main())

