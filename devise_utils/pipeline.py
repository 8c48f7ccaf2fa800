"""Run the whole study: every notebook in order through papermill, into one report.

``python -m devise_utils.pipeline`` (README's first command) writes
``reports/<run>/``: the executed notebooks, their HTML, ``index.html`` (the study at a
glance), ``results.json`` (every notebook's recorded results) and ``results.md`` (the
poster's tables with this run's numbers beside them).

The parameters (``--dataset``, ``--set KEY=VALUE``, ...) are checked as one
:class:`~devise_utils.core.config.Config` before the first notebook starts, and each notebook
receives them as its single ``params`` dict. While a notebook runs, what it prints (one line
per training epoch, among others) is streamed here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from devise_utils.core.config import ROOT, Config, ConfigError, make_config
from devise_utils.core.files import read_json, write_json
from devise_utils.data.awa2 import dataset_root
from devise_utils.report.build import NOTEBOOK_DIR, notebooks, write_reports
from devise_utils.report.html import notebook_html
from devise_utils.study.preflight import INPUT_ERRORS, preflight

#: The kernel's own log says nothing a reader needs: a cell's error reaches papermill as an
#: exception. Quieted are its "running over TCP" warning and the "KeyboardInterrupt caught in
#: kernel" race jupyter_client provokes by interrupting every kernel before shutting it down.
KERNEL_QUIET = "--IPKernelApp.log_level=CRITICAL"




class _Progress:
    """A file-like sink for a notebook's stdout: each line goes to ``log``, indented."""

    def __init__(self, log):
        self.log, self.buf = log, ""

    def write(self, text: str) -> None:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                self.log(f"    {line.rstrip()}", flush=True)

    def flush(self) -> None:
        pass


def check(cfg: Config) -> None:
    """What can be checked before any notebook runs: the files the parameters name, then
    their contents (:func:`~devise_utils.study.preflight.preflight`: weights, dataset, word
    vectors), so bad input stops the study before anything is trained or written."""
    for name, value in (("vectors", cfg.vectors), ("weights", cfg.weights)):
        if value and value not in ("none", "imagenet") and not Path(value).is_file():
            raise ConfigError(f"parameter {name!r}: {value} is not a file; give the path of "
                              f"an existing file" + (" or none/imagenet" if name == "weights"
                                                     else ""))
    if cfg.dataset != "builtin" and not dataset_root(cfg).is_dir():
        hint = ("download it: python -m devise_utils download awa2" if cfg.dataset == "awa2"
                else "give a folder in AwA2 layout")
        raise ConfigError(f"parameter 'dataset': {dataset_root(cfg)} is not a folder; {hint}")
    preflight(cfg, study=True)


def run(params: dict[str, Any], report_dir: str | Path, *, start: int = 0,
        kernel: str = "python3", log=print) -> dict[str, Any]:
    """Execute the notebooks from number ``start`` on; stop at the first failure.

    ``params`` and the files they name are checked first (:func:`check`: a ConfigError,
    DataError or WeightsUnavailableError names the bad key, value or file before anything
    runs or is written). Earlier notebooks' outputs in ``report_dir`` are kept (resume
    with ``start``).
    Returns the status written into results.json.
    """
    import papermill as pm


    report_dir = Path(report_dir).resolve()
    params = {**params, "report_dir": str(report_dir)}
    check(make_config(params))
    report_dir.mkdir(parents=True, exist_ok=True)
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
            pm.execute_notebook(str(nb), str(out), parameters={"params": params},
                                kernel_name=kernel, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                                stdout_file=_Progress(log),
                                extra_arguments=[KERNEL_QUIET])
        except pm.PapermillExecutionError as e:
            error = f"{e.ename}: {e.evalue}"
        secs = time.perf_counter() - t0
        if out.is_file():
            try:
                notebook_html(out)
            except Exception as e:  # noqa: BLE001 (a page that fails to render loses no results)
                log(f"    (no HTML page for {nb.name}: {e})", flush=True)
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
    write_reports(report_dir, status, [nb.name for nb in nbs])
    return status


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devise_utils.pipeline",
                                description="Run every notebook of the study into reports/<run>/.")
    p.add_argument("--dataset", default="builtin",
                   help="builtin (default, generated here), awa2, or a folder in AwA2 layout")
    p.add_argument("--vectors", help="word vectors (.vec/.txt/.bin); default: the dataset's")
    p.add_argument("--weights", help="backbone weights: none, imagenet, or a local file; "
                                     "pretrained weights switch the defaults to the real-photo "
                                     "recipe (devise_utils/core/config.py PRETRAINED_RECIPE)")
    p.add_argument("--data-dir", help="where datasets and caches live (default: data/)")
    p.add_argument("--runs-dir", help="model/artifact cache (default: runs/)")
    p.add_argument("--out", help="report folder (default: reports/<dataset name>)")
    p.add_argument("--from", dest="start", type=int, default=0,
                   help="resume: start at notebook NN, keep earlier outputs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other parameter of devise_utils/core/config.py, e.g. --set "
                        "stage1_epochs=10 (values are read as JSON, else as text)")
    return p.parse_args(argv)


def params_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The parameters the command line names (paths made absolute), unchecked."""
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
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    name = a.dataset if a.dataset in ("builtin", "awa2") else Path(a.dataset).name
    out = Path(a.out) if a.out else ROOT / "reports" / name
    try:
        params = params_from_args(a)
        print(f"DeViSE-Mobile study: {len(notebooks())} notebooks -> {out}", flush=True)
        status = run(params, out, start=a.start)
    except INPUT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if status["failed"]:
        print(f"stopped at {status['failed']}; see {out / status['failed']}", file=sys.stderr)
        return 1
    print(f"done in {status['seconds']:.0f} s: {out / 'index.html'}")
    return 0


def command(args) -> int:
    """``python -m devise_utils run ...``: the same as ``python -m devise_utils.pipeline ...``."""
    return main(args.args)


if __name__ == "__main__":
    raise SystemExit(main())

