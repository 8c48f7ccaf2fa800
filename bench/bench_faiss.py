"""The faiss IVF-PQ gallery engine at 1M-10M vectors: build time, memory, disk, latency, recall.

    nice -n 10 python bench/bench_faiss.py --sets real --workdir /tmp/bf   # 1M real-derived
    nice -n 10 python bench/bench_faiss.py --sets synthetic --n 1000000 \\
        --params '{"nlist": 8192, "train_n": 327680}' --workdir /tmp/bf  # 10M's settings at 1M
    nice -n 10 python bench/bench_faiss.py --sets synthetic --n 10000000 --workdir /tmp/bf

Sets (see faiss_sets.py for exactly how they are made): ``real``, 1M vectors derived from
the 27,500 real tiny-objects-50 photos (frozen SqueezeNet features of augmented photos,
PCA to 300-d), queried with held-out photos; ``synthetic``, N clustered vectors made in
chunks. The base, queries and exact top-10 are made once per ``--workdir`` and reused.

Each build runs in its own process: wall and CPU time (all threads), peak resident memory
(``VmHWM``, which counts the pages of memory-mapped files it touched, pages the kernel can
drop at will), the peak of its anonymous memory (``RssAnon``, its own: what it needs free
RAM for) and of its file-backed pages, both sampled (memwatch.py), and the index folder's
size on disk. Queries run in another process that opens the saved index memory-mapped, as
``search`` does: recall@10 against exact search over the 1,000 held-out queries, and the
latency of single queries on one thread (warm page cache: a batch pass runs first), per
nprobe, at the nprobe the build tuned and across a sweep. ``--extrapolate N`` predicts a
build of N vectors from the run's phases (see :func:`extrapolate`): run it on a smaller set
with N's own ``--params`` (``auto_params(N, d)``'s nlist and train_n). Writes
bench/faiss.json (not committed) and prints a Markdown table. One run on one machine: the
machine is shared, so wall times carry others' load; CPU times are steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import faiss_sets  # noqa: E402
from memwatch import MemWatch  # noqa: E402

from devise_utils.apps import faiss_index as engine  # noqa: E402
from devise_utils.apps.index import recall_at_k  # noqa: E402

NPROBES = (4, 8, 16, 24, 32, 48, 64, 96, 128)


def _rss_mb(key: str = "VmHWM") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _du_mb(folder: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) / 2**20


# --- workers (own processes) -----------------------------------------------------------------

def build_worker(args) -> dict:
    data, out = Path(args.data), Path(args.index)
    info = json.loads((data / "info.json").read_text())
    base = faiss_sets.RawVectors(data / "base.f32", info["dim"])
    chunk = 131_072

    def chunks():
        for s in range(0, base.n, chunk):
            x = base.read(s, s + chunk)
            yield x, [str(i) for i in range(s, s + len(x))]

    phases = []

    def log(msg: str) -> None:  # times, and peak memory of the phase that just ended
        peaks = watch.phase()
        phases.append({"after": msg.strip()[:60], "wall_s": round(time.perf_counter() - t, 1),
                       "cpu_s": round(_cpu_s() - c, 1), "rss_mb": round(_rss_mb("VmRSS")),
                       "peak_mb": round(_rss_mb()), "phase_peak_anon_mb": peaks.get("RssAnon"),
                       "phase_peak_file_mb": peaks.get("RssFile")})
        print(f"{msg}  [anon peak {peaks.get('RssAnon', 0):.0f} MB, file-backed peak "
              f"{peaks.get('RssFile', 0):.0f} MB]", file=sys.stderr, flush=True)

    with MemWatch() as watch:
        t, c = time.perf_counter(), _cpu_s()
        index = engine.build_faiss_index(chunks(), out, {"kind": "bench", "set": info["set"]},
                                         params=json.loads(args.params or "{}"), log=log)
        build_s, build_cpu_s = time.perf_counter() - t, _cpu_s() - c
    peak = watch.peak
    # peak_rss_mb is the kernel's VmHWM (exact; counts touched pages of mapped files);
    # the anon / file-backed peaks are sampled every 50 ms.
    return {"build_s": build_s, "build_cpu_s": build_cpu_s, "phases": phases,
            "peak_rss_mb": _rss_mb(), "peak_anon_mb": peak.get("RssAnon"),
            "peak_file_mb": peak.get("RssFile"), "peak_shmem_mb": peak.get("RssShmem"),
            "disk_mb": _du_mb(out), "parts_s": index.info["build_s"],
            "params": index.params, "nprobe_tuned": index.nprobe,
            "tuning": index.info["tuning"], "files_mb": {
                p.name: p.stat().st_size / 2**20 for p in out.iterdir() if p.is_file()}}


def query_worker(args) -> dict:
    data = Path(args.data)
    queries, truth = np.load(data / "queries.npy"), np.load(data / "truth.npy")
    t, c = time.perf_counter(), _cpu_s()
    index = engine.FaissIndex.load(args.index)
    open_s, open_cpu_s, open_rss = time.perf_counter() - t, _cpu_s() - c, _rss_mb("VmRSS")
    tuned, default_rerank = index.nprobe, index.rerank
    rows = []
    for nprobe in sorted({tuned, *args.nprobe}):
        for rr in sorted({default_rerank, *args.rerank}):
            index.set_nprobe(nprobe)
            index.rerank = rr
            index.threads = os.cpu_count() or 1
            t = time.perf_counter()
            ids, _ = index.knn(queries, truth.shape[1])
            batch_s = time.perf_counter() - t
            index.threads = 1
            n1 = min(args.single, len(queries))
            t, c = time.perf_counter(), time.process_time()
            for i in range(n1):
                index.knn(queries[i:i + 1], truth.shape[1])
            rows.append({"nprobe": nprobe, "rerank": rr,
                         "tuned": nprobe == tuned and rr == default_rerank,
                         "recall@10": recall_at_k(ids, truth),
                         "single_ms": (time.perf_counter() - t) / n1 * 1e3,
                         "single_cpu_ms": (time.process_time() - c) / n1 * 1e3,
                         "batch_qps": len(queries) / batch_s})
            print(f"  nprobe {nprobe:4d} rerank {rr:4d}: recall {rows[-1]['recall@10']:.3f}, "
                  f"{rows[-1]['single_ms']:.2f} ms", file=sys.stderr, flush=True)
    return {"open_s": open_s, "open_cpu_s": open_cpu_s, "open_rss_mb": open_rss,
            "query_peak_rss_mb": _rss_mb(), "sweep": rows}


def run_worker(kind: str, data: Path, index: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--index",
           str(index), "--params", args.params or "{}", "--nprobe", *map(str, args.nprobe),
           "--rerank", *map(str, args.rerank), "--single", str(args.single)]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{kind} worker failed (exit {proc.returncode}); see its stderr above")
    return json.loads(lines[-1][len("RESULT "):])


# --- the table -------------------------------------------------------------------------------

def pick(sweep: list[dict], target: float | None) -> dict | None:
    """The tuned row (target None), else the fastest-nprobe row reaching ``target``."""
    if target is None:
        rows = [r for r in sweep if r["tuned"]]
    else:
        rows = [r for r in sweep if r["recall@10"] >= target]
    return min(rows, key=lambda r: (r["nprobe"], r["rerank"])) if rows else None


def table(results: list[dict]) -> str:
    lines = ["| set | N x d | nlist, m x nbits | build wall (CPU) | build peak RSS (anon) "
             "| disk | nprobe, rerank | recall@10 | 1-query ms wall (CPU) "
             "| query RSS after open |", "|" + "---|" * 10]
    for r in results:
        b, q = r["build"], r["query"]
        p = b["params"]
        anon = f"{b['peak_anon_mb'] / 1024:.2f}" if b.get("peak_anon_mb") else "?"
        for label, target in (("tuned", None), ("0.90", 0.90), ("0.95", 0.95)):
            s = pick(q["sweep"], target)
            if s is None:
                continue
            lines.append(
                f"| {r['set']} | {r['n'] / 1e6:g}M x {r['dim']} | {p['nlist']}, {p['m']}x"
                f"{p['nbits']} | {b['build_s'] / 60:.1f} min ({b['build_cpu_s'] / 60:.1f}) "
                f"| {b['peak_rss_mb'] / 1024:.2f} GB ({anon}) | {b['disk_mb'] / 1024:.2f} GB "
                f"| {s['nprobe']}, {s['rerank']} ({label}) | {s['recall@10']:.3f} "
                f"| {s['single_ms']:.2f} ({s['single_cpu_ms']:.2f}) "
                f"| {q['open_rss_mb']:.0f} MB |")
    return "\n".join(lines)


def extrapolate(result: dict, n: int) -> dict:
    """A build's time and peak memory at ``n`` vectors from a smaller one with n's params.

    Storing, adding (quantizer assignment + PQ encoding: per vector, nlist fixed) and
    merging scale with N; training (same sample, same nlist) and tuning (200 queries) do
    not. Peak memory: the smaller build's peak plus the extra on-disk lists that merging
    maps into memory (the one part of it that grows with N).
    """
    b, scale = result["build"], n / result["n"]
    marks = {p["after"].split()[0]: p for p in b["phases"]}
    stored, trained, merged = marks["stored"], marks["trained"], marks["merged"]
    last = b["phases"][-1]
    out = {}
    for key in ("wall_s", "cpu_s"):
        fixed = (trained[key] - stored[key]) + (last[key] - merged[key])
        linear = stored[key] + (merged[key] - trained[key])
        out[key] = fixed + scale * linear
    lists = b["files_mb"]["lists.ivfdata"]
    out["peak_rss_mb"] = b["peak_rss_mb"] + (scale - 1) * lists
    out["disk_mb"] = b["disk_mb"] * scale
    return {"n": n, "from_n": result["n"], **out}


def machine() -> dict:
    name = next((ln.split(":", 1)[1].strip() for ln in
                 Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
                platform.processor())
    return {"cpu": name, "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg": os.getloadavg()}


def ensure_set(name: str, args) -> Path:
    folder = Path(args.workdir) / ("real" if name == "real" else f"synthetic-{args.n}")
    if not (folder / "info.json").is_file():
        t = time.perf_counter()
        if name == "real":
            faiss_sets.make_real(folder, shared=Path(args.shared))
        else:
            faiss_sets.make_synthetic(folder, args.n)
        print(f"made {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", choices=["real", "synthetic"], default=["real"])
    ap.add_argument("--n", type=int, default=1_000_000, help="size of the synthetic set")
    ap.add_argument("--params", help='JSON overrides of auto_params, e.g. \'{"nlist": 8192}\'')
    ap.add_argument("--nprobe", type=int, nargs="+", default=list(NPROBES))
    ap.add_argument("--rerank", type=int, nargs="+", default=[100])
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--workdir", help="data sets and indexes (GBs) go here (required)")
    ap.add_argument("--shared", default=str(faiss_sets.SHARED), help="the shared data folder")
    ap.add_argument("--out", default=str(HERE / "faiss.json"))
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print earlier runs' table")
    ap.add_argument("--extrapolate", type=int, metavar="N", help="also predict the build at N "
                    "vectors from each run (give the run N's own --params: nlist, train_n)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = build_worker if args.worker == "build" else query_worker
        print("RESULT " + json.dumps(fn(args)), flush=True)
        return
    if args.table:
        results = [r for f in args.table for r in json.loads(Path(f).read_text())["results"]]
        print(table(results))
        for r in results if args.extrapolate else []:
            print(_predicted(r, args.extrapolate))
        return
    if not args.workdir:
        ap.error("--workdir DIR is required: the data sets and indexes (GBs) go there")
    results = []
    for name in args.sets:
        data = ensure_set(name, args)
        info = json.loads((data / "info.json").read_text())
        tag = "".join(c for c in (args.params or "auto") if c.isalnum() or c in "_-")
        index = Path(args.workdir) / f"index-{data.name}-{tag}"
        build = run_worker("build", data, index, args)
        print(f"{name}: built in {build['build_s'] / 60:.1f} min, peak RSS "
              f"{build['peak_rss_mb']:.0f} MB (anonymous {build['peak_anon_mb'] or 0:.0f} MB, "
              f"file-backed {build['peak_file_mb'] or 0:.0f} MB), {build['disk_mb']:.0f} MB "
              "on disk", flush=True)
        query = run_worker("query", data, index, args)
        results.append({"set": info["set"], "n": info["n"], "dim": info["dim"], "data": info,
                        "build": build, "query": query})
        Path(args.out).write_text(json.dumps({"machine": machine(), "command": sys.argv,
                                              "results": results}, indent=2) + "\n")
    print(table(results))
    for r in results if args.extrapolate else []:
        r["extrapolated"] = extrapolate(r, args.extrapolate)
        print(_predicted(r, args.extrapolate))
    Path(args.out).write_text(json.dumps({"machine": machine(), "command": sys.argv,
                                          "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def _predicted(result: dict, n: int) -> str:
    e = extrapolate(result, n)
    return (f"extrapolated to {n / 1e6:g}M from {e['from_n'] / 1e6:g}M ({result['set']}): build "
            f"{e['wall_s'] / 60:.0f} min wall ({e['cpu_s'] / 60:.0f} CPU-min), peak "
            f"{e['peak_rss_mb'] / 1024:.1f} GB, {e['disk_mb'] / 1024:.1f} GB on disk")


if __name__ == "__main__":
    main()
