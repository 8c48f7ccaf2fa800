"""nmslib HNSW vs brute-force NumPy: recall@10, build time and query latency.

    python bench/bench_search.py                     # N = 40k (AwA2 images) and 1M (vocabulary)
    python bench/bench_search.py --n 40000 200000 --data random clustered

``random``: isotropic unit vectors, HNSW's worst case (no structure to exploit).
``clustered``: points around 50 class centres, like trained image embeddings.
HNSW uses the library defaults (index.HNSW_PARAMS, EF_SEARCH) unless overridden.
``--hnsw-max-n``: above it only the exact search is timed (a 1M-point HNSW
build takes hours on 2 cores with this nmslib wheel, which was compiled without
SSE/AVX). Latency is per query, one query at a time: HNSW on 1 thread, NumPy (one
matrix-vector product) on whatever BLAS threads it has. Writes bench_search.json
beside this file. If the largest N run is below --project, the HNSW build time
for --project is extrapolated as N log N from the largest run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devise_utils.apps.index import EF_SEARCH, HNSW_PARAMS, EmbeddingIndex, recall_at_k  # noqa: E402


def make_data(kind: str, n: int, dim: int, n_queries: int, seed: int = 0):
    """(N, dim) points and (Q, dim) queries, unit-norm float32, generated in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        if kind == "clustered":
            x = centres[rng.integers(0, len(centres), m)] + 0.6 * x
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    data = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        data[s:s + 100_000] = draw(min(100_000, n - s))
    return data, draw(n_queries)


def per_query_ms(fn, queries: np.ndarray) -> float:
    t = time.perf_counter()
    for q in queries:
        fn(q)
    return (time.perf_counter() - t) / len(queries) * 1e3


def bench_one(kind: str, n: int, dim: int, n_queries: int, k: int, ef: int,
              params: dict[str, int], hnsw: bool = True) -> dict:
    data, queries = make_data(kind, n, dim, n_queries)
    labels = [str(i) for i in range(n)]
    exact = EmbeddingIndex(data, labels, method="exact")
    t = time.perf_counter()
    truth, _ = exact.knn(queries, k)
    exact_batch_ms = (time.perf_counter() - t) / n_queries * 1e3
    exact_ms = per_query_ms(lambda q: exact.knn(q, k), queries[:50])
    row = {"data": kind, "n": n, "dim": dim, "queries": n_queries, "k": k,
           "params": params, "ef_search": ef, "vectors_gb": data.nbytes / 1e9,
           "hnsw_build_s": None, f"recall@{k}": None, "hnsw_query_ms": None,
           "exact_query_ms": exact_ms, "exact_batched_query_ms": exact_batch_ms, "speedup": None}
    if not hnsw:
        return row
    t = time.perf_counter()
    hnsw = EmbeddingIndex(data, labels, method="hnsw", params=params, ef_search=ef, threads=1)
    build_s = time.perf_counter() - t  # build uses every core (threads only sets queries)
    found, _ = hnsw.knn(queries, k)
    hnsw_ms = per_query_ms(lambda q: hnsw.knn(q, k), queries)
    return {**row, "hnsw_build_s": build_s, f"recall@{k}": recall_at_k(found, truth),
            "hnsw_query_ms": hnsw_ms, "speedup": exact_ms / hnsw_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[40_000, 1_000_000])
    ap.add_argument("--data", nargs="+", choices=["random", "clustered"], default=["random"])
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--ef", type=int, nargs="+", default=[EF_SEARCH])
    ap.add_argument("--M", type=int, default=HNSW_PARAMS["M"])
    ap.add_argument("--ef-construction", type=int, default=HNSW_PARAMS["efConstruction"])
    ap.add_argument("--project", type=int, default=1_000_000,
                    help="extrapolate the build time to this N if not run")
    ap.add_argument("--hnsw-max-n", type=int, default=None,
                    help="above this N time only the exact search (HNSW build too slow)")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args()
    params = {**HNSW_PARAMS, "M": args.M, "efConstruction": args.ef_construction}
    rows = []
    cols = ("data", "n", "ef_search", "hnsw_build_s", f"recall@{args.k}", "hnsw_query_ms",
            "exact_query_ms", "exact_batched_query_ms", "speedup")
    print("  ".join(f"{c:>14s}" for c in cols))
    for kind in args.data:
        for n in args.n:
            for ef in args.ef:
                r = bench_one(kind, n, args.dim, args.queries, args.k, ef, params,
                              hnsw=args.hnsw_max_n is None or n <= args.hnsw_max_n)
                rows.append(r)
                print("  ".join(f"{r[c]:>14.4g}" if isinstance(r[c], float) else
                                f"{'-' if r[c] is None else r[c]:>14}" for c in cols), flush=True)
    projected = {}
    for kind in args.data:
        built = [r for r in rows if r["data"] == kind and r["hnsw_build_s"] is not None]
        big = max(built, key=lambda r: r["n"], default=None)
        if big and big["n"] < args.project:
            scale = args.project * math.log(args.project) / (big["n"] * math.log(big["n"]))
            projected[kind] = {"n": args.project, "from_n": big["n"],
                               "hnsw_build_s": big["hnsw_build_s"] * scale}
            print(f"projected HNSW build at N={args.project:,} ({kind}): "
                  f"{projected[kind]['hnsw_build_s'] / 60:.0f} min (N log N from N={big['n']:,})")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version()}
    Path(args.out).write_text(json.dumps({"machine": machine, "results": rows,
                                          "projected": projected}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
