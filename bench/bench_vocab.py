"""Nearest-word search over a whole vocabulary: nmslib vs faiss (exact, HNSW, IVF) vs hnswlib.

    python bench/bench_vocab.py                       # GloVe 400k x 50 and random 1M x 300
    python bench/bench_vocab.py --sets glove          # just the real GloVe vocabulary
    python bench/bench_vocab.py --libs faiss-hnsw faiss-exact --sets random --n 200000
    python bench/bench_vocab.py --sets glove1m --libs faiss-exact faiss-ivf-flat faiss-ivf-sq8 \
        faiss-hnsw --M 16 --ef-construction 40 --target 0.95   # fastText's 1M x 300 scale

Data sets: ``glove`` (the real GloVe 6B 50-d vocabulary), ``glove1m`` (it in 300-d
plus synthetic words, fastText's size) and ``random``; vocab_sets.py says exactly
how each is made.

Each library runs in its own subprocess (one at a time) so its peak memory is
its own: the data it loads, plus its index (``VmHWM``; ``ru_maxrss`` would carry
the parent's peak over fork + exec). Build uses every core; its wall time and
CPU time (all threads) are both recorded, as the machine may be shared.
"1-query" is a loop of single queries on one thread (what ``tag`` does per
image), timed as process CPU time (robust on a shared machine; wall time is in
the JSON); "batch" is all queries in one call on every core, wall time.
recall@10 is against exact NumPy search. For HNSW libraries efSearch is swept and the
smallest value reaching ``--target`` recall is reported (the whole sweep goes to
the JSON). ``nmslib`` is the project's own EmbeddingIndex (search.HNSW_PARAMS,
EF_SEARCH); ``--nmslib-path DIR`` adds a row for another nmslib build (e.g. one
compiled from source with SIMD) put first on ``sys.path``.

Writes bench/vocab.json (not committed) and prints a Markdown table. One run
on one machine: compare rows with each other, not with other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from vocab_libs import Runner  # noqa: E402
from vocab_sets import exact_topk, make_set  # noqa: E402

LIBS = ("faiss-exact", "nmslib", "faiss-hnsw", "hnswlib", "faiss-ivf-flat", "faiss-ivf-sq8",
        "vocab-index")
#: efSearch values swept for the HNSW libraries, nprobe values for the IVF ones.
EF_SWEEP = (16, 32, 64, 100, 150, 200, 300, 400, 600, 800)
NPROBE_SWEEP = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


# --- one library, in its own process ---------------------------------------------------------

def _rss_mb() -> float:
    """Peak resident memory of this process so far, MB.

    VmHWM, not ``ru_maxrss``: on Linux ``ru_maxrss`` survives fork + exec, so a
    worker would report at least the parent's (which holds the data) as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def worker(args) -> None:
    from devise_utils.apps.index import recall_at_k

    d = Path(args.data)
    base = np.load(d / "base.npy")
    queries = np.load(d / "queries.npy")
    truth = np.load(d / "truth.npy")
    k = truth.shape[1]
    data_mb = _rss_mb()
    params = json.loads(args.params)
    r = Runner(args.worker, base, params)
    t, c = time.perf_counter(), _cpu_s()
    r.build()
    build_s, build_cpu_s = time.perf_counter() - t, _cpu_s() - c
    built_mb = _rss_mb()
    efs = ([None] if args.worker == "faiss-exact" else
           args.nprobe if args.worker.startswith("faiss-ivf") else args.ef)
    if args.worker == "vocab-index":  # as built (tuned), then the sweep
        efs = [r.index.nprobe, *args.nprobe]
    sweep = []
    n1 = min(len(queries), args.single)
    for ef in efs:
        if ef is not None:
            r.set_ef(ef)
        t = time.perf_counter()
        found = r.query(queries, k, r.threads)
        batch_s = time.perf_counter() - t
        rec = recall_at_k(found, truth)
        t, c = time.perf_counter(), time.process_time()
        for i in range(n1):
            r.query(queries[i:i + 1], k, 1)
        single_ms = (time.perf_counter() - t) / n1 * 1e3
        single_cpu_ms = (time.process_time() - c) / n1 * 1e3
        sweep.append({"ef_search": ef, f"recall@{k}": rec, "single_ms": single_ms,
                      "single_cpu_ms": single_cpu_ms, "batch_qps": len(queries) / batch_s})
        if ef is not None and rec >= args.target and not args.full_sweep:
            break
    out = {"lib": args.worker, "params": params, "build_s": build_s, "build_cpu_s": build_cpu_s,
           "data_rss_mb": data_mb,
           "built_rss_mb": built_mb, "peak_rss_mb": _rss_mb(), "sweep": sweep,
           "threads": r.threads, "version": _version(args.worker)}
    print("RESULT " + json.dumps(out), flush=True)


def _version(lib: str) -> str:
    try:
        if lib.startswith("faiss"):
            import faiss

            return faiss.__version__
        if lib == "hnswlib":
            from importlib.metadata import version

            return version("hnswlib")
        from devise_utils.apps.index import import_nmslib

        nmslib = import_nmslib()
        return f"{getattr(nmslib, '__version__', '?')} ({Path(nmslib.__file__).parent})"
    except Exception as e:  # noqa: BLE001 - informational only
        return f"? ({e})"


def run_worker(lib: str, folder: Path, params: dict, args, extra_path: str | None = None
               ) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    worker_lib = "nmslib" if lib.startswith("nmslib") else lib
    cmd = [sys.executable, __file__, "--worker", worker_lib, "--data", str(folder),
           "--params", json.dumps(params), "--ef", *map(str, args.ef),
           "--nprobe", *map(str, args.nprobe),
           "--target", str(args.target), "--single", str(args.single)]
    if args.full_sweep:
        cmd.append("--full-sweep")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"lib": lib, "params": params, "wall_s": time.perf_counter() - t,
                "error": f"not finished in {args.timeout / 60:.0f} min (wall)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"lib": lib, "params": params, "error": (proc.stderr or proc.stdout)[-800:],
                "wall_s": time.perf_counter() - t}
    res = json.loads(lines[-1][len("RESULT "):])
    res["lib"] = lib
    return res


# --- the table -------------------------------------------------------------------------------

def best(res: dict, target: float, k: int) -> dict | None:
    """The sweep point reported: the first reaching ``target``, else the highest recall."""
    sweep = res.get("sweep") or []
    if not sweep:
        return None
    hit = [s for s in sweep if s[f"recall@{k}"] >= target]
    return hit[0] if hit else max(sweep, key=lambda s: s[f"recall@{k}"])


def table(results: list[dict], target: float, k: int) -> str:
    head = ("| data | library | params | build wall (CPU) | peak RSS | recall@10 "
            "| 1-query CPU ms (wall) | batch QPS, wall | vs exact 1-query |")
    lines = [head, "|" + "---|" * 9]
    for s in results:
        exact = next((r for r in s["rows"] if r["lib"] == "faiss-exact" and "sweep" in r), None)
        ex_ms = exact["sweep"][0]["single_cpu_ms"] if exact else None
        label = f"{s['set']} {s['n'] / 1e3:,.0f}k x {s['dim']}"
        for r in s["rows"]:
            if "error" in r:
                lines.append(f"| {label} | {r['lib']} | {_p(r['params'])} | failed: "
                             f"{r['error'].strip().splitlines()[-1][:60]} | | | | | |")
                continue
            b = best(r, target, k)
            knob = "nprobe" if r["lib"].startswith(("faiss-ivf", "vocab")) else "ef"
            ef = "" if b["ef_search"] is None else f", {knob}={b['ef_search']}"
            x = ex_ms / b["single_cpu_ms"] if ex_ms else None
            speed = "-" if x is None else f"{x:.0f}x" if x >= 10 else f"{x:.1f}x"
            lines.append(
                f"| {label} | {r['lib']} | {_p(r['params'])}{ef} | {_dur(r['build_s'])} "
                f"({_dur(r['build_cpu_s'])}) "
                f"| {r['peak_rss_mb'] / 1024:.2f} GB | {b[f'recall@{k}']:.3f} "
                f"| {b['single_cpu_ms']:.2f} ({b['single_ms']:.2f}) "
                f"| {b['batch_qps']:,.0f} | {speed} |")
    return "\n".join(lines)


def _p(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "post") or "-"


def _dur(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


# --- main ------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=["glove", "glove1m", "random"],
                    default=["glove", "random"])
    ap.add_argument("--n", type=int, default=1_000_000, help="size of the random set")
    ap.add_argument("--dim", type=int, default=300, help="dimension of the random set")
    ap.add_argument("--libs", nargs="+", choices=LIBS, default=list(LIBS))
    ap.add_argument("--nmslib-path", help="folder holding another nmslib build (adds a row)")
    ap.add_argument("--M", type=int, default=16, help="HNSW M for faiss and hnswlib")
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--nmslib-params", default=None,
                    help='JSON, default search.HNSW_PARAMS, e.g. \'{"M": 16, '
                    '"efConstruction": 100}\'')
    ap.add_argument("--ef", type=int, nargs="+", default=list(EF_SWEEP))
    ap.add_argument("--nprobe", type=int, nargs="+", default=list(NPROBE_SWEEP),
                    help="nprobe values swept for the IVF libraries")
    ap.add_argument("--nlist", type=int, default=4096, help="IVF lists")
    ap.add_argument("--ivf-train", type=int, default=40, help="IVF k-means sample per list")
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--full-sweep", action="store_true", help="do not stop at the target")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per library run")
    ap.add_argument("--out", default=str(HERE / "vocab.json"))
    ap.add_argument("--workdir", help="keep the data sets and exact answers here and reuse "
                    "them on the next run (default: a temporary folder)")
    ap.add_argument("--table", metavar="JSON", nargs="+",
                    help="only print the table of earlier run(s)' JSON (merged in order)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.table:
        runs = [json.loads(Path(f).read_text()) for f in args.table]
        print(table([r for run in runs for r in run["results"]], runs[0]["target"],
                    runs[0]["k"]))
        return

    from devise_utils.apps.index import HNSW_PARAMS

    nms = json.loads(args.nmslib_params) if args.nmslib_params else dict(HNSW_PARAMS)
    nms.setdefault("post", 0)
    peer = {"M": args.M, "efConstruction": args.ef_construction}
    ivf = {"nlist": args.nlist, "train": args.ivf_train}
    runs = [(lib, nms if lib == "nmslib" else {} if lib in ("faiss-exact", "vocab-index") else
             ivf if lib.startswith("faiss-ivf") else peer, None) for lib in args.libs]
    if args.nmslib_path:  # just before the wheel's row, or last
        at = next((i for i, r in enumerate(runs) if r[0] == "nmslib"), len(runs))
        runs.insert(at, ("nmslib-simd", nms, args.nmslib_path))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_vocab.") as tmp:
        for name in args.sets:
            folder = Path(args.workdir or tmp) / f"{name}-{args.n}x{args.dim}-q{args.queries}"
            folder.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            if (folder / "info.json").is_file():  # --workdir: data and truth made before
                info = json.loads((folder / "info.json").read_text())
            else:
                info = make_set(name, args.n, args.dim, args.queries, folder)
                truth = exact_topk(np.load(folder / "base.npy"),
                                   np.load(folder / "queries.npy"), args.k)
                np.save(folder / "truth.npy", truth)
                (folder / "info.json").write_text(json.dumps(info))
            print(f"{name}: {info['n']:,} x {info['dim']} ({info['gb']:.2f} GB), "
                  f"{info['queries']} queries, truth in {time.perf_counter() - t:.0f} s",
                  flush=True)
            rows = []
            for lib, params, extra in runs:
                r = run_worker(lib, folder, params, args, extra)
                rows.append(r)
                b = best(r, args.target, args.k) if "sweep" in r else None
                print(f"  {lib:12s} " + (f"build {r['build_s']:.1f} s, peak "
                      f"{r['peak_rss_mb']:.0f} MB, recall {b[f'recall@{args.k}']:.3f} at ef "
                      f"{b['ef_search']}, {b['single_cpu_ms']:.2f} CPU ms/query "
                      f"({b['single_ms']:.2f} wall), "
                      f"{b['batch_qps']:.0f} QPS batch" if b else f"FAILED {r.get('error')}"),
                      flush=True)
                save(args, [*results, {**info, "rows": rows}])  # after every row
            results.append({**info, "rows": rows})
    print()
    print(table(results, args.target, args.k))
    print(f"\nwrote {args.out}")


def save(args, results: list[dict]) -> None:
    from devise_utils.apps.index import EF_SEARCH

    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "processor": _cpu_name(), "python": platform.python_version(),
               "load_avg": os.getloadavg()}
    Path(args.out).write_text(json.dumps(
        {"machine": machine, "k": args.k, "target": args.target, "nmslib_ef_search": EF_SEARCH,
         "results": results}, indent=2) + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
