"""Time the study's real-photo command end to end: wall time and peak memory of the whole study.

Runs ``python -m devise_utils.pipeline`` exactly as docs/results.md gives it (caltech-zsl-dev
with its class -> WordNet id file, bass the fish; nothing else set),
in a fresh work folder (prepared-image cache, model cache and report all start empty, so data
prep and every training step are counted), and samples the resident memory of the whole
process tree (the pipeline and its notebook kernel) every half second. Not a test.

    python bench/bench_pipeline.py                          # tiny-objects-50, real weights
    python bench/bench_pipeline.py --dataset caltech-zsl-dev  # classes ImageNet never had
    python bench/bench_pipeline.py --dataset builtin        # README's first command

Writes ``bench/pipeline-<dataset>.json`` (per-notebook seconds, peak RSS, the machine and
its load, the run's headline results) and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))
REAL = {
    "tiny-objects-50": ["--dataset", str(SHARED / "data/tiny-objects-50"),
                        "--vectors", str(SHARED / "vectors/glove-6b-50d.top20k.vec"),
                        "--weights", str(SHARED / "weights/squeezenet1_1-imagenet-onnxzoo.pth")],
    "caltech-zsl-dev": ["--dataset", str(SHARED / "data/caltech-zsl-dev"),
                        "--vectors", str(SHARED / "vectors/caltech-zsl-dev.glove50.vec"),
                        "--weights", str(SHARED / "weights/squeezenet1_1-imagenet-onnxzoo.pth"),
                        "--set", "class_synsets=" + str(ROOT / "bench/class_synsets/"
                                                        "caltech-zsl-dev.txt")],
    "builtin": ["--dataset", "builtin"],
}


class TreeMemory(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, sampled."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every, self.peak, self.done = psutil.Process(pid), every, 0, False

    def run(self) -> None:
        while not self.done:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            time.sleep(self.every)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(
        psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version()}


def headline(report: Path) -> dict:
    """The numbers a reader looks for, from the run's results.json."""
    res = json.loads((report / "results.json").read_text())
    out = {"stage1_accuracy": res.get("02_stage1", {}).get("accuracy")}
    for m in res.get("06_zero_shot", {}).get("methods", []):
        out[m["method"]] = {k: m.get(k) for k in ("zsl_top1", "gzsl_H", "gzsl_H_calibrated")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(REAL), default="tiny-objects-50")
    p.add_argument("--work", help="work folder (default: a new temporary one, removed after)")
    p.add_argument("--out", help="JSON to write (default bench/pipeline-<dataset>.json)")
    a = p.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-pipeline-"))
    report = work / "report"
    cmd = [sys.executable, "-m", "devise_utils.pipeline", *REAL[a.dataset],
           "--data-dir", str(work / "data"), "--runs-dir", str(work / "runs"),
           "--out", str(report)]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if a.dataset != "builtin":  # WordNet, as a user's nltk.download('wordnet') gives it
        env.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
    print("$", " ".join(cmd), flush=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    mem = TreeMemory(proc.pid)
    mem.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    mem.done = True
    mem.join()
    if not (report / "status.json").is_file():
        print(f"the pipeline stopped before any notebook (exit {rc}); work folder: {work}",
              file=sys.stderr)
        return rc or 1
    status = json.loads((report / "status.json").read_text())
    result = {
        "command": "python -m devise_utils.pipeline " + " ".join(REAL[a.dataset]),
        "returncode": rc, "wall_s": round(wall, 1),
        "peak_rss_gb": round(mem.peak / 2**30, 2),
        "notebook_s": {k: v["seconds"] for k, v in status["notebooks"].items()},
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        # "-dirty": the code that ran had uncommitted changes
        "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "results": headline(report) if rc == 0 else None,
    }
    out = Path(a.out or ROOT / "bench" / f"pipeline-{a.dataset}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| dataset | wall (min) | peak RSS (GB) | exit |\n|---|---|---|---|\n"
          f"| {a.dataset} | {wall / 60:.1f} | {result['peak_rss_gb']:.2f} | {rc} |")
    for k, v in result["notebook_s"].items():
        print(f"  {k:32s} {v / 60:6.1f} min")
    print(f"wrote {out}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
