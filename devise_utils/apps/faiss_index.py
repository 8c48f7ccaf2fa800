"""Gallery search for millions of photos: faiss IVF-PQ with its inverted lists on disk.

nmslib's HNSW (:class:`devise_utils.apps.index.EmbeddingIndex`) holds every vector and its
graph in RAM, which is right for a few hundred thousand photos and wrong for tens of
millions. :class:`FaissIndex` keeps in RAM only the coarse quantizer (``nlist`` centroids
under a small HNSW graph) and the PQ codebooks; the inverted lists of PQ codes
(``lists.ivfdata``, faiss ``OnDiskInvertedLists``), the float16 unit vectors used to
re-rank the PQ candidates exactly (``vectors.f16``) and the labels stay on disk,
memory-mapped. Building never holds the gallery in memory either: vectors are streamed
to disk, the quantizer and PQ are trained on a sample, codes are added in chunks to
block files that ``faiss.contrib.ondisk.merge_ondisk`` merges into the on-disk lists.

After building, ``nprobe`` (lists scanned per query) is tuned: the smallest value whose
recall@k, over gallery vectors used as queries (each left out of its own answer), reaches
``target_recall`` against exact search; if the PQ candidates cap recall below it, the
re-rank depth is doubled too. Gallery queries flatter a gallery of near-duplicates: on the
real-derived 1M set the tuned index scored 0.967 on them, 0.964 on held-out photos. The
sidecar ``index.json`` records both with the model's and word vectors' sha256, like the
nmslib index; a query with another file fails.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from devise_utils.apps.disk_store import (
    ITEMS,
    OFFSETS,
    VECTORS,
    Labels,
    VectorStore,
    write_gallery,
)
from devise_utils.apps.index import check_provenance, checked_queries, recall_at_k
from devise_utils.core.files import read_json, write_json

ENGINE = "faiss"
FORMAT = 1
SIDECAR = "index.json"
INDEX_FILE = "ivfpq.faiss"
LISTS_FILE = "lists.ivfdata"
#: k-means cost grows with nlist squared (sample ~ nlist); 8192 lists keep a 10M x 300
#: build inside an hour on 2 cores (bench/bench_faiss.py).
MAX_NLIST = 8192
#: PQ candidates re-ranked exactly against the float16 vectors; doubled at build, up to
#: MAX_RERANK, while the candidates cap recall below the target.
RERANK = 100
MAX_RERANK = 800
#: Recall gained over two nprobe steps below which more lists are not worth scanning.
PLATEAU = 0.002
TARGET_RECALL = 0.95
NPROBE_SWEEP = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: Rows read between unmappings of the vector file during a build: a row maps up to a
#: 2 MB page-cache folio (disk_store.py), so <= 0.5 GB of it is mapped at a time, not the
#: 6 GB of a 10M gallery (its peak RSS was 7.66 GB without this).
BUILD_RELEASE_ROWS = 256


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send C-level stdout to /dev/null: faiss's on-disk lists ``printf`` on every open.

    ``IO_FLAG_ONDISK_SAME_DIR`` and list resizing print unconditionally, which would mix
    into ``search``'s results on stdout. C stdio is flushed on both sides of the swap.
    """
    sys.stdout.flush()
    try:
        fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError):  # no C runtime by that name (Windows): print through
        yield
        return
    fflush(None)
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def auto_params(n: int, dim: int) -> dict[str, int]:
    """nlist ~ 4 sqrt(n) (a power of 2, <= n/39 and MAX_NLIST), PQ with ~4-d sub-vectors.

    4-d sub-vectors (m = 75 bytes a 300-d vector), not 6-d: on the 1M real-derived set
    they raise recall@10 at nprobe 48 from 0.93 to 0.96 (bench/bench_faiss.py) for 25
    bytes more a vector, against the 600 of its float16 copy.
    """
    nlist = 2 ** round(np.log2(4 * np.sqrt(n)))
    nlist = int(max(1, min(nlist, MAX_NLIST, n // 39)))
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    m = min(divisors, key=lambda m: abs(dim / m - 4))
    nbits = int(min(8, max(1, np.floor(np.log2(max(n, 2))))))
    train_n = int(min(n, max(40 * nlist, 50_000)))
    return {"nlist": nlist, "m": m, "nbits": nbits, "train_n": train_n, "niter": 10,
            "hnsw_m": 32, "by_residual": 0}


class FaissIndex:
    """A saved IVF-PQ gallery index, opened memory-mapped; :meth:`knn` by cosine."""

    engine = ENGINE
    method = "ivfpq"

    def __init__(self, folder: str | Path, *, nprobe: int | None = None,
                 rerank: int | None = None, threads: int = 0):
        self.source = Path(folder)
        info = read_json(self.source / SIDECAR)
        self.info = info
        self.meta: dict[str, Any] = dict(info.get("meta") or {})
        self.params = dict(info["params"])
        n, dim = int(info["n"]), int(info["dim"])
        for name in info["files"]:
            if not (self.source / name).is_file():
                raise FileNotFoundError(f"{self.source / name} is missing: the index folder "
                                        "is damaged, rebuild it")
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE
        with quiet_stdout():
            self.index = faiss.read_index(str(self.source / INDEX_FILE), flags)
        if self.index.ntotal != n:
            raise ValueError(f"{self.source}: {INDEX_FILE} holds {self.index.ntotal} vectors "
                             f"but {SIDECAR} says {n}: the folder is damaged, rebuild it")
        self.ivf = faiss.extract_index_ivf(self.index)
        self.quantizer = faiss.downcast_index(self.ivf.quantizer)
        self.store = VectorStore(self.source / VECTORS, n, dim)
        self.labels = Labels(self.source, n)
        self.threads = threads
        self.rerank = int(rerank or info.get("rerank", RERANK))
        self.set_nprobe(nprobe or info["nprobe"])

    def __len__(self) -> int:
        return self.store.n

    @property
    def dim(self) -> int:
        return self.store.dim

    def set_nprobe(self, nprobe: int) -> None:
        """Inverted lists scanned per query: larger is more exact and slower."""
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.nprobe = int(min(nprobe, self.ivf.nlist))
        self.ivf.nprobe = self.nprobe
        if hasattr(self.quantizer, "hnsw"):  # it must find the nprobe nearest centroids
            self.quantizer.hnsw.efSearch = max(64, 2 * self.nprobe)

    def knn(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Ids (Q, k) and cosines (Q, k), best first; missing slots hold id -1, score NaN.

        PQ finds ``rerank`` candidates in the ``nprobe`` nearest lists; their float16
        vectors (memory-mapped) give the exact cosines that rank them.
        """
        q, k = checked_queries(queries, self.dim, k, len(self))
        if self.threads:
            faiss.omp_set_num_threads(self.threads)
        _, cand = self.index.search(q, min(len(self), max(k, self.rerank)))
        return rerank_exact(self.store, q, cand, k)

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """:meth:`knn` with labels: one ``[(label, cosine), ...]`` list per query."""
        ids, scores = self.knn(queries, k)
        return [[(self.labels[i], float(s)) for i, s in zip(ri, rs) if i >= 0]
                for ri, rs in zip(ids, scores)]

    def check_file(self, key: str, path: str | Path | None, sha256: str | None = None) -> None:
        """Raise ``IndexMismatchError`` if ``path`` is not the ``key`` file of the index."""
        check_provenance(self.meta, key, path, sha256, where=self.source)

    @classmethod
    def load(cls, folder: str | Path, *, model: str | Path | None = None,
             vectors: str | Path | None = None, nprobe: int | None = None,
             rerank: int | None = None, threads: int = 0) -> FaissIndex:
        """Open a saved index; ``model``/``vectors`` files, if given, must be the ones it used."""
        folder = Path(folder)
        side = folder / SIDECAR
        if not side.is_file():
            raise FileNotFoundError(
                f"no index at {folder} ({SIDECAR} missing); build one with `python -m "
                f"devise_utils index PHOTOS_DIR --model CKPT --engine faiss --out {folder}`")
        info = read_json(side)
        if info.get("engine") != ENGINE or info.get("format") != FORMAT:
            raise ValueError(f"{side} is not a faiss index of format {FORMAT} (engine "
                             f"{info.get('engine', 'nmslib')}, format {info.get('format')}): "
                             "open it with its own engine or rebuild it")
        index = cls(folder, nprobe=nprobe, rerank=rerank, threads=threads)
        index.check_file("model", model)
        index.check_file("vectors", vectors)
        return index


def rerank_exact(store: VectorStore, q: np.ndarray, cand: np.ndarray, k: int, chunk: int = 64
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query among its candidate ids (-1 = none), from stored vectors."""
    ids = np.full((len(q), k), -1, np.int64)
    scores = np.full((len(q), k), np.nan, np.float32)
    for s in range(0, len(q), chunk):
        c = cand[s:s + chunk]
        sim = np.einsum("qcd,qd->qc", store.rows(np.maximum(c, 0)), q[s:s + chunk])
        sim[c < 0] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        top_s = np.take_along_axis(sim, order, 1)
        top_i = np.where(np.isfinite(top_s), np.take_along_axis(c, order, 1), -1)
        ids[s:s + chunk, : top_i.shape[1]] = top_i
        scores[s:s + chunk, : top_s.shape[1]] = np.where(np.isfinite(top_s), top_s, np.nan)
    return ids, scores


# --- building --------------------------------------------------------------------------------

def build_faiss_index(chunks: Iterable[tuple[np.ndarray, Sequence[str]]], folder: str | Path,
                      meta: dict[str, Any] | None = None, *, params: dict[str, int] | None
                      = None, target_recall: float = TARGET_RECALL, k: int = 10,
                      rerank: int = RERANK, add_chunk: int = 131_072, tune_queries: int = 200,
                      threads: int = 0, seed: int = 0, log=None) -> FaissIndex:
    """Stream (vectors, labels) chunks into an on-disk IVF-PQ index in ``folder``.

    Memory stays bounded by the chunk sizes and the training sample, whatever the
    gallery's size. ``params`` override :func:`auto_params`. The sidecar is written
    last, so a folder with one is complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIDECAR).unlink(missing_ok=True)
    for stale in ("vectors.npy", "hnsw.bin"):  # an nmslib index this one replaces
        (folder / stale).unlink(missing_ok=True)
    if threads:
        faiss.omp_set_num_threads(threads)
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    n, dim = write_gallery(chunks, folder)
    store = VectorStore(folder / VECTORS, n, dim, release_every=BUILD_RELEASE_ROWS)
    p = {**auto_params(n, dim), **(params or {})}
    rng = np.random.default_rng(seed)
    sample_ids = np.sort(rng.choice(n, min(p["train_n"], n), replace=False))
    sample = _take(store, sample_ids, add_chunk)
    tune_ids = np.sort(rng.choice(n, min(tune_queries, n), replace=False))
    say(f"  stored {n:,} x {dim} in {time.perf_counter() - t0:.0f} s; training {p}")
    t1 = time.perf_counter()
    index = _trained(faiss, sample, dim, p)
    del sample
    train_s = time.perf_counter() - t1
    say(f"  trained in {train_s:.0f} s")
    t2 = time.perf_counter()
    truth = _add_blocks(faiss, index, store, folder / ".build", add_chunk, tune_ids, k, say)
    add_s = time.perf_counter() - t2
    faiss.write_index(index, str(folder / INDEX_FILE))
    del index
    shutil.rmtree(folder / ".build", ignore_errors=True)
    info = {"format": FORMAT, "engine": ENGINE, "method": "ivfpq", "n": n, "dim": dim,
            "params": p, "rerank": int(rerank), "nprobe": p["nlist"], "faiss":
            faiss.__version__, "files": [INDEX_FILE, LISTS_FILE, VECTORS, ITEMS, OFFSETS],
            "meta": dict(meta or {})}
    write_json(folder / SIDECAR, info)  # provisional; nprobe is tuned on the saved index
    index = FaissIndex(folder, threads=threads)
    index.store.release_every = BUILD_RELEASE_ROWS
    tuning = tune(index, store.rows(tune_ids), tune_ids, truth, target_recall, k)
    info.update(nprobe=tuning["nprobe"], rerank=tuning["rerank"], tuning=tuning, build_s={
        "store": round(t1 - t0, 1), "train": round(train_s, 1), "add": round(add_s, 1),
        "total": round(time.perf_counter() - t0, 1)})
    write_json(folder / SIDECAR, info)
    say(f"  nprobe {tuning['nprobe']}, rerank {tuning['rerank']}: recall@{k} "
        f"{tuning['recall']:.3f} on {len(tune_ids)} gallery vectors")
    return FaissIndex(folder, threads=threads)


def _take(store: VectorStore, ids: np.ndarray, chunk: int) -> np.ndarray:
    """Rows ``ids`` (sorted) read in one sequential pass."""
    out = np.empty((len(ids), store.dim), np.float32)
    at = 0
    for s, block in store.chunks(chunk):
        sel = ids[(ids >= s) & (ids < s + len(block))] - s
        out[at:at + len(sel)] = block[sel]
        at += len(sel)
    return out


def _trained(faiss, sample: np.ndarray, dim: int, p: dict[str, int]):
    """An empty IVF-PQ (L2 on unit vectors ranks as cosine) trained on ``sample``."""
    quantizer = faiss.IndexHNSWFlat(dim, p["hnsw_m"])
    index = faiss.IndexIVFPQ(quantizer, dim, p["nlist"], p["m"], p["nbits"])
    index.cp.niter = p["niter"]
    index.cp.min_points_per_centroid = 1  # small galleries: trained without warnings
    index.pq.cp.min_points_per_centroid = 1
    index.clustering_index = faiss.IndexFlatL2(dim)  # exact k-means assignment
    # PQ of the vectors, not of their residuals: the candidates are re-ranked exactly
    # anyway, one distance table per query (not per list) is 2-3x faster at equal recall,
    # and no nlist x m x 256 precomputed table sits in RAM.
    index.by_residual = bool(p["by_residual"])
    index.use_precomputed_table = -1
    if len(sample) < 2:  # a one-photo gallery: PQ needs two points for its two centroids
        sample = np.repeat(sample, 2, axis=0)
    index.train(sample)
    index.clustering_index = None
    quantizer.hnsw.efSearch = 64  # assignment of added vectors to their nearest list
    return index


def _add_blocks(faiss, index, store: VectorStore, tmp: Path, chunk: int, tune_ids: np.ndarray,
                k: int, say) -> np.ndarray:
    """Add every stored vector, a chunk per block file, merged into the on-disk lists.

    Returns the exact top-k of the tuning vectors (themselves left out), computed on the way.
    """
    from faiss.contrib.ondisk import merge_ondisk

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tq = store.rows(tune_ids)
    best_s = np.full((len(tq), k), -np.inf, np.float32)
    best_i = np.full((len(tq), k), -1, np.int64)
    blocks = []
    for s, x in store.chunks(chunk):
        block = faiss.clone_index(index)
        block.add_with_ids(x, np.arange(s, s + len(x), dtype=np.int64))
        blocks.append(str(tmp / f"block{len(blocks):05d}.faiss"))
        faiss.write_index(block, blocks[-1])
        del block
        best_s, best_i = _merge_top(best_s, best_i, tq @ x.T, s, tune_ids, k)
        say(f"  added {s + len(x):,} / {store.n:,}")
    with quiet_stdout():
        merge_ondisk(index, blocks, str(tmp.parent / LISTS_FILE))
    say(f"  merged {len(blocks)} blocks into {LISTS_FILE}")
    return best_i


def _merge_top(best_s, best_i, sim, start, self_ids, k):
    """Fold one chunk's similarities into a running top-k, skipping each query itself."""
    rows = np.flatnonzero((self_ids >= start) & (self_ids < start + sim.shape[1]))
    sim[rows, self_ids[rows] - start] = -np.inf
    kk = min(k, sim.shape[1])
    top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
    cand_s = np.concatenate([best_s, np.take_along_axis(sim, top, 1)], 1)
    cand_i = np.concatenate([best_i, top + start], 1)
    order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)


def tune_nprobe(index, queries: np.ndarray, self_ids: np.ndarray, truth: np.ndarray,
                target: float, k: int, plateau: float | None = PLATEAU) -> dict[str, Any]:
    """The smallest nprobe of :data:`NPROBE_SWEEP` whose recall@k reaches ``target``.

    If recall stops rising first (it gains < ``plateau`` over two steps: the candidates,
    not the lists scanned, limit it), the smallest nprobe within ``plateau`` of the best
    seen: scanning more lists would only cost time (``None``: sweep on, for exact lists).
    ``self_ids[i]`` (or -1) is left out of query i's answer. Works on any index with
    ``set_nprobe``, ``knn`` and ``ivf``.
    """
    kk = min(k, len(index) - 1)
    truth = truth[:, :max(kk, 0)]
    sweep = []
    for nprobe in [p for p in NPROBE_SWEEP if p < index.ivf.nlist] + [index.ivf.nlist]:
        index.set_nprobe(nprobe)
        ids, _ = index.knn(queries, kk + 1)
        found = [[i for i in row if i != me][:kk] for row, me in zip(ids, self_ids)]
        rec = recall_at_k(found, truth) if kk else 1.0
        sweep.append({"nprobe": nprobe, "recall": round(rec, 4)})
        if rec >= target or (plateau and len(sweep) > 2 and rec - sweep[-3]["recall"] < plateau):
            break
    top = max(r["recall"] for r in sweep)
    best = sweep[-1] if sweep[-1]["recall"] >= target else next(
        r for r in sweep if r["recall"] >= top - (plateau or 0))
    index.set_nprobe(best["nprobe"])
    return {"nprobe": best["nprobe"], "recall": best["recall"], "target": target, "k": kk,
            "queries": len(queries), "sweep": sweep}


def tune(index: FaissIndex, queries: np.ndarray, self_ids: np.ndarray, truth: np.ndarray,
         target: float, k: int) -> dict[str, Any]:
    """nprobe, then the re-rank depth if the PQ candidates cap recall below ``target``."""
    tried = []
    while True:
        t = tune_nprobe(index, queries, self_ids, truth, target, k)
        tried.append({"rerank": index.rerank, **t})
        if t["recall"] >= target or index.rerank >= MAX_RERANK:
            break
        index.rerank *= 2
    reached = [t for t in tried if t["recall"] >= target]
    best = reached[0] if reached else max(tried, key=lambda t: t["recall"])
    index.rerank = best["rerank"]
    index.set_nprobe(best["nprobe"])
    return {**best, "tried": [{x: t[x] for x in ("rerank", "nprobe", "recall")} for t in tried],
            "how": "gallery vectors as queries, each left out of its own answer"}
