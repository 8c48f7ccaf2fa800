"""A searchable set of unit vectors: nmslib HNSW, or exact NumPy with the same interface.

DeViSE maps images into the word-vector space, so every application on the poster is a
nearest-neighbour lookup by cosine similarity. :class:`EmbeddingIndex` wraps nmslib's HNSW
graph (sub-linear queries) and an exact NumPy path, which is the ground truth HNSW is tested
and benchmarked against (and is as fast for a few thousand items).

An index on disk records the checkpoint and word-vector file (path and sha256) it was built
with, so a query made with another model or vector file fails with an error naming both
files instead of returning nonsense neighbours.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devise_utils.core.config import ROOT
from devise_utils.core.files import atomic_write, existing_file, read_json, write_json
from devise_utils.data.vectors import file_sha256, normalize

#: HNSW build parameters. Random 300-d vectors (no structure: HNSW's worst case)
#: need M=32 to keep recall@10 >= 0.99 at a few thousand items; real embeddings
#: cluster by class and reach it at lower settings (see bench/bench_search.py).
HNSW_PARAMS: dict[str, int] = {"M": 32, "efConstruction": 200, "post": 0}


#: Query-time beam width; nmslib does not store it in the index file.
EF_SEARCH = 400


METHODS = ("hnsw", "exact")
#: Index engines: nmslib (HNSW or exact, in RAM; galleries up to a few hundred thousand) and
#: faiss (IVF-PQ on disk, memory-mapped: millions; :mod:`devise_utils.apps.faiss_index`).
ENGINES = ("nmslib", "faiss")


DEFAULT_INDEX_DIR = ROOT / "runs" / "index"


INDEX_FORMAT = 1


class IndexMismatchError(ValueError):
    """The index was built with another checkpoint or word-vector file."""


class EmbeddingIndex:
    """Unit vectors with a label each (an image path or a word), searchable by cosine.

    ``method="hnsw"`` builds an nmslib HNSW graph (space ``cosinesimil``);
    ``method="exact"`` is brute-force NumPy. ``meta`` is free-form provenance
    (checkpoint and vector-file paths and sha256) written to the JSON sidecar.
    """

    def __init__(self, vectors: np.ndarray, labels: Sequence[str], meta: dict[str, Any] | None
                 = None, *, method: str = "hnsw", params: dict[str, int] | None = None,
                 ef_search: int = EF_SEARCH, threads: int = 0, _build: bool = True):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"an index needs a non-empty (N, D) array, got shape {vectors.shape}")
        if len(labels) != len(vectors):
            raise ValueError(f"{len(labels)} labels for {len(vectors)} vectors")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.vectors = normalize(vectors)
        self.labels = list(labels)
        self.meta = dict(meta or {})
        self.method = method
        self.params = {**HNSW_PARAMS, **(params or {})}
        self.ef_search = int(ef_search)
        self.threads = threads  # query threads, 0 = all cores (the build always uses all)
        self.source: Path | None = None  # the folder it was loaded from
        self._hnsw = None
        if method == "hnsw" and _build:
            self._hnsw = self._new_hnsw()
            self._hnsw.createIndex({**self.params, "indexThreadQty": _cores()},
                                   print_progress=False)
            self.set_ef_search(self.ef_search)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def _new_hnsw(self):
        nmslib = import_nmslib()
        index = nmslib.init(method="hnsw", space="cosinesimil")
        index.addDataPointBatch(self.vectors)
        return index

    def set_ef_search(self, ef_search: int) -> None:
        """Set HNSW's query beam width (larger: higher recall, slower queries)."""
        self.ef_search = int(ef_search)
        if self._hnsw is not None:
            self._hnsw.setQueryTimeParams({"efSearch": self.ef_search})

    def knn(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Ids (Q, k) and cosine similarities (Q, k), best first, of each query's neighbours.

        k is capped at the index size. If HNSW finds fewer than k neighbours (it
        can, with a tiny efSearch), the missing slots hold id -1 and score NaN.
        """
        q, k = checked_queries(queries, self.dim, k, len(self))
        if self._hnsw is None:
            return _exact_knn(self.vectors, q, k)
        ids = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), np.nan, np.float32)
        results = self._hnsw.knnQueryBatch(q, k=k, num_threads=self.threads or _cores())
        for row, (i, d) in enumerate(results):
            ids[row, : len(i)] = i
            scores[row, : len(i)] = 1.0 - d  # cosinesimil distance = 1 - cosine
        return ids, scores

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """:meth:`knn` with labels: one ``[(label, cosine), ...]`` list per query."""
        ids, scores = self.knn(queries, k)
        return [[(self.labels[i], float(s)) for i, s in zip(row_i, row_s) if i >= 0]
                for row_i, row_s in zip(ids, scores)]

    # --- persistence ---------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write ``vectors.npy``, ``hnsw.bin`` (HNSW only) and the ``index.json`` sidecar.

        The sidecar is written last, so a folder with one is complete.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.json").unlink(missing_ok=True)
        atomic_write(folder / "vectors.npy", lambda p: _save_npy(p, self.vectors))
        if self._hnsw is not None:  # graph only; the vectors are re-added on load
            atomic_write(folder / "hnsw.bin",
                         lambda p: self._hnsw.saveIndex(str(p), save_data=False))
        write_json(folder / "index.json", {
            "format": INDEX_FORMAT, "engine": "nmslib", "method": self.method,
            "params": self.params,
            "ef_search": self.ef_search, "n": len(self), "dim": self.dim,
            "meta": self.meta, "items": self.labels,
        })
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, model: str | Path | None = None,
             vectors: str | Path | None = None, ef_search: int | None = None,
             threads: int = 0) -> EmbeddingIndex:
        """Load a saved index; ``model``/``vectors`` files, if given, must be the ones it used.

        efSearch is re-applied (the stored one unless ``ef_search`` is given):
        nmslib's ``loadIndex`` forgets query-time parameters.
        """
        folder = Path(folder)
        side = folder / "index.json"
        if not side.is_file():
            raise FileNotFoundError(
                f"no index at {folder} ({side.name} missing); build one with "
                "`python -m devise_utils index PHOTOS_DIR --model CKPT --out "
                f"{folder}` or pass --index DIR")
        info = read_json(side)
        if info.get("engine", "nmslib") != "nmslib":
            raise ValueError(f"{side} is a {info['engine']} index, not an nmslib one: open it "
                             "with devise_utils.apps.index.load_index (as `search` does)")
        if info.get("format") != INDEX_FORMAT:
            raise ValueError(f"{side} has index format {info.get('format')}, this code reads "
                             f"{INDEX_FORMAT}: rebuild the index")
        vecs = np.load(folder / "vectors.npy", allow_pickle=False)
        if vecs.shape != (info["n"], info["dim"]) or len(info["items"]) != info["n"]:
            raise ValueError(f"{folder}: vectors.npy is {vecs.shape} but {side.name} says "
                             f"({info['n']}, {info['dim']}): the folder is damaged, rebuild it")
        index = cls(vecs, info["items"], info["meta"], method=info["method"],
                    params=info["params"], ef_search=info["ef_search"], threads=threads,
                    _build=False)
        index.source = folder
        if index.method == "hnsw":
            index._hnsw = index._new_hnsw()
            index._hnsw.loadIndex(str(folder / "hnsw.bin"), load_data=False)
        index.set_ef_search(ef_search or info["ef_search"])
        if model is not None and Path(model).suffix == ".onnx":
            index.check_embedder(model)  # an export has no checkpoint sha: compare its sizes
        else:
            index.check_file("model", model)
        index.check_file("vectors", vectors)
        return index

    def check_embedder(self, model: str | Path) -> None:
        """Refuse an exported .onnx embedder whose input size or output dimension is not the
        index's (an ExportMismatchError naming both)."""
        from devise_utils.apps.runtime import check_onnx

        check_onnx(model, image_size=self.meta.get("image_size"), dim=self.dim,
                   against=f"the index {self.source or 'in memory'}")

    def check_file(self, key: str, path: str | Path | None, sha256: str | None = None) -> None:
        """Raise :class:`IndexMismatchError` if ``path`` is not the ``key`` file of the index.

        ``sha256`` saves re-hashing a file the caller already hashed.
        """
        check_provenance(self.meta, key, path, sha256, where=self.source)


def check_provenance(meta: dict[str, Any], key: str, path: str | Path | None,
                     sha256: str | None = None, where: str | Path | None = None) -> None:
    """Raise :class:`IndexMismatchError` unless ``path`` hashes to ``meta[key + "_sha256"]``.

    The one rule every index engine applies to its model and word-vector files.
    """
    if path is None or f"{key}_sha256" not in meta:
        return
    want = meta[f"{key}_sha256"]
    have = sha256 or file_sha256(existing_file(path, key))
    if have != want:
        raise IndexMismatchError(
            f"{where or 'this index'} was built with {key} file {meta.get(key)} (sha256 "
            f"{want[:12]}) but {path} (sha256 {have[:12]}) was given: use the same {key} "
            "file, or rebuild the index with `python -m devise_utils index PHOTOS_DIR "
            "--model CKPT --vectors FILE`")


def checked_queries(queries: np.ndarray, dim: int, k: int, n: int) -> tuple[np.ndarray, int]:
    """Unit float32 query rows and k capped at the index size ``n``; a query of another
    dimension (another model or vector file) or k < 1 is a clear error."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if q.shape[1] != dim:
        raise ValueError(f"queries are {q.shape[1]}-d but the index holds {dim}-d vectors: "
                         "the query comes from another model or vector file")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return np.ascontiguousarray(normalize(q)), min(k, n)




def import_nmslib():
    """``import nmslib`` without the notice its PyPI wheel prints on import.

    The wheel is compiled for SSE2 only and its C++ start-up code writes a
    three-line "Your CPU supports instructions that this binary was not compiled
    to use ... install NMSLIB from sources" to file descriptor 2, which
    ``contextlib.redirect_stderr`` cannot catch; fd 2 points at /dev/null for
    the import. Real import errors still raise.
    """
    if "nmslib" in sys.modules:
        return sys.modules["nmslib"]
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                import nmslib
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    return nmslib


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(str) would append '.npy' to the temp name
        np.save(f, arr, allow_pickle=False)


def _cores() -> int:

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _exact_knn(vectors: np.ndarray, q: np.ndarray, k: int, chunk: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by cosine (rows are unit), in query chunks to bound memory."""
    ids = np.empty((len(q), k), np.int64)
    scores = np.empty((len(q), k), np.float32)
    for s in range(0, len(q), chunk):
        sim = q[s:s + chunk] @ vectors.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
            np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
        part = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        ids[s:s + chunk] = np.take_along_axis(top, order, axis=1)
        scores[s:s + chunk] = np.take_along_axis(part, order, axis=1)
    return ids, scores


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true k nearest neighbours that were found (rows = queries)."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
