"""Tags over a whole vocabulary: a persistent nearest-word index, built once per vector file.

``tag`` maps an image embedding to its nearest words. Over a real vocabulary
(fastText's 1M words, GloVe's 400k) two things are slow if done per call:
parsing the text ``.vec`` file (minutes) and brute-force search (40-120 ms a
query at 1M x 300). :func:`open_index` therefore builds a :class:`VocabIndex`
once: the tag-clean vocabulary (:func:`devise_utils.apps.text.vocabulary`), unit
vectors and a faiss IVF-Flat index (inner product = cosine; ``nprobe`` tuned at build),
saved atomically under ``runs/vocab/<sha256 of the vector file>-...``. Later calls find
it there and only load it (its lists memory-mapped). faiss, not the project's nmslib,
does the vocabulary: its PyPI wheel ships AVX2 code (chosen at run time, no compiler
needed), while nmslib's wheel is SSE2-only and compiling nmslib takes minutes of CPU
per install (bench/bench_vocab.py, docs/benchmarks.md).

The vector file's sha256 keys the folder and is recorded in ``vocab.json``; an
index opened with another file raises
:class:`~devise_utils.apps.index.IndexMismatchError` naming both files. Hashing a
2 GB ``.vec`` takes seconds, so the digest is cached per (path, size, mtime)
in ``runs/vocab/sha256-cache.json``; a changed file is hashed again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from devise_utils.apps.index import IndexMismatchError
from devise_utils.apps.text import vocabulary
from devise_utils.core.config import ROOT
from devise_utils.core.files import atomic_write, existing_file, read_json, write_json
from devise_utils.data.vectors import file_sha256, load_vectors, normalize

#: Where indexes go unless a folder is given: one sub-folder per vector file and options.
VOCAB_DIR = ROOT / "runs" / "vocab"
#: 1: an HNSW graph (hnsw.faiss); 2: IVF-Flat inverted lists (ivf.faiss), nprobe tuned.
VOCAB_FORMAT = 2
#: nprobe is tuned at build time to the smallest reaching this recall@10 against exact
#: search on word-like queries (see :func:`tune`).
TARGET_RECALL = 0.99
#: k-means on this many words per list, this many rounds: the 1M-word build's main cost.
TRAIN_PER_LIST = 40
KMEANS_ITER = 10

SIDECAR = "vocab.json"
WORDS = "words.txt"
INDEX = "ivf.faiss"



def default_nlist(n: int) -> int:
    """About 4 sqrt(n) lists (a power of 2), at most n / TRAIN_PER_LIST, at least 1."""
    return int(max(1, min(2 ** round(np.log2(4 * np.sqrt(max(n, 1)))), n // TRAIN_PER_LIST)))


class VocabIndex:
    """Words and a faiss IVF-Flat index over their unit vectors; :meth:`search` by cosine.

    IVF-Flat, not HNSW: at fastText's size (bench/bench_vocab.py, set glove1m: 1M x 300)
    it builds, nprobe tuning included, in 68 CPU-seconds, against 118 for an HNSW graph
    with a cheap efConstruction=40 (M=16) and 270 for the previous one (efConstruction=100;
    17.4 CPU-minutes on unstructured vectors), at recall@10 0.993 vs exact search and 4.3 ms
    a query on one core (HNSW answers faster: 0.9 ms at 0.991). k-means and one pass of
    assignments cost the same whatever the vectors look like. Its lists hold the exact
    vectors, so ``exact=True`` is the same index scanning every list. ``built`` is True if
    this object was built in this process, False if loaded.
    """

    def __init__(self, words: Sequence[str], index, meta: dict[str, Any], *,
                 nprobe: int | None = None, source: Path | None = None, built: bool = False):
        if len(words) != index.ntotal:
            raise ValueError(f"{len(words)} words for {index.ntotal} vectors")
        self.words = list(words)
        self.index = self.ivf = index
        self.meta = dict(meta)
        self.source = source
        self.built = built
        self.set_nprobe(nprobe or meta.get("nprobe") or index.nlist)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_nprobe(self, nprobe: int) -> None:
        """Lists scanned per query: larger is more exact and slower (tuned at build)."""
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.nprobe = int(min(nprobe, self.index.nlist))
        self.index.nprobe = self.nprobe

    # --- building, saving, loading -----------------------------------------------------------

    @classmethod
    def build(cls, vectors: str | Path, *, clean: bool = True, top_n: int | None = None,
              sha256: str | None = None, nlist: int | None = None,
              target_recall: float = TARGET_RECALL) -> VocabIndex:
        """Read every word of a ``.vec``/``.txt``/``.bin`` file and build the IVF-Flat index.

        ``clean`` keeps only usable tags (see :func:`devise_utils.apps.text.vocabulary`);
        ``top_n`` keeps the file's N most frequent words (default: all of them).
        """
        path = existing_file(vectors, "word-vector", "check --vectors")
        sha = sha256 or cached_sha256(path)
        if path.suffix == ".bin":  # fastText models: the whole vocabulary unless top_n
            wv = load_vectors(path, top_n=top_n or 10**9, hash_file=False)
        else:
            wv = load_vectors(path, top_n=top_n, hash_file=False)
        wv.source_sha256 = sha
        words, vecs = vocabulary(wv, clean)
        del wv
        vecs = np.ascontiguousarray(normalize(vecs))
        t = time.perf_counter()
        index, params = ivf_flat(faiss, vecs, nlist or default_nlist(len(vecs)))
        meta = {"vectors": str(path.resolve()), "vectors_sha256": sha, "clean": clean,
                "top_n": top_n, "n": len(words), "dim": int(vecs.shape[1]),
                "backend": "faiss.IndexIVFFlat", "faiss": faiss.__version__, "params": params}
        vocab = cls(words, index, meta, built=True)
        vocab.meta["tuning"] = tune(vocab, vecs, target_recall)
        vocab.set_nprobe(vocab.meta["tuning"]["nprobe"])
        vocab.meta.update(nprobe=vocab.nprobe, build_s=round(time.perf_counter() - t, 2))
        return vocab

    def save(self, folder: str | Path) -> Path:
        """Write ``words.txt``, ``ivf.faiss`` and, last, the ``vocab.json`` sidecar.

        Each file is written atomically and the sidecar is removed first, so a
        folder with a sidecar is always complete.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SIDECAR).unlink(missing_ok=True)
        (folder / "hnsw.faiss").unlink(missing_ok=True)  # a format-1 index this replaces
        text = "\n".join(self.words) + "\n"
        atomic_write(folder / WORDS, lambda p: p.write_text(text, encoding="utf-8"))
        atomic_write(folder / INDEX, lambda p: faiss.write_index(self.index, str(p)))
        write_json(folder / SIDECAR, {"format": VOCAB_FORMAT, **self.meta})
        self.source = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, vectors: str | Path | None = None,
             sha256: str | None = None, nprobe: int | None = None) -> VocabIndex:
        """Load a saved index (lists memory-mapped); ``vectors``, if given, must be its file.

        nprobe is the one tuned at build unless ``nprobe`` is given.
        """
        folder = Path(folder)
        side = folder / SIDECAR
        if not side.is_file():
            raise FileNotFoundError(
                f"no vocabulary index at {folder} ({SIDECAR} missing); build one with "
                "`python -m devise_utils tag IMAGE --model CKPT --vectors FILE` "
                "(it is built on first use)")
        meta = read_json(side)
        if meta.pop("format", None) != VOCAB_FORMAT:
            raise ValueError(f"{side} is not a vocabulary index of format {VOCAB_FORMAT}: "
                             f"delete {folder} (or pass --rebuild-vocab) and it will be rebuilt")
        if vectors is not None:
            check_vectors(meta, vectors, sha256, folder)
        words = (folder / WORDS).read_text(encoding="utf-8").split("\n")[:-1]
        index = faiss.read_index(str(folder / INDEX), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        if len(words) != meta["n"] or index.ntotal != meta["n"]:
            raise ValueError(f"{folder}: {len(words)} words and {index.ntotal} vectors but "
                             f"{SIDECAR} says {meta['n']}: the folder is damaged; delete it "
                             "and it will be rebuilt")
        return cls(words, index, meta, nprobe=nprobe, source=folder)

    # --- queries -----------------------------------------------------------------------------

    def knn(self, queries: np.ndarray, k: int = 10, *, exact: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and cosines (Q, k), best first; ``exact`` scans every list, not ``nprobe``.

        If the lists scanned hold fewer than k words the missing slots hold id -1.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"embeddings are {q.shape[1]}-d but the vocabulary "
                             f"{self.meta.get('vectors', '')} is {self.dim}-d: the model was "
                             "trained on another vector file; pass the one it used (--vectors)")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(normalize(q))
        k = min(k, len(self))
        params = faiss.SearchParametersIVF(nprobe=self.index.nlist if exact else self.nprobe)
        scores, ids = self.index.search(q, k, params=params)
        return ids, scores

    def search(self, queries: np.ndarray, k: int = 10, *, exact: bool = False
               ) -> list[list[tuple[str, float]]]:
        """:meth:`knn` with words: one ``[(word, cosine), ...]`` list per query."""
        ids, scores = self.knn(queries, k, exact=exact)
        return [[(self.words[i], float(s)) for i, s in zip(ri, rs) if i >= 0]
                for ri, rs in zip(ids, scores)]


def ivf_flat(faiss, vecs: np.ndarray, nlist: int) -> tuple[Any, dict[str, int]]:
    """An inner-product IVF-Flat over unit rows: spherical k-means on a sample, then all added."""
    d = vecs.shape[1]
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITER
    index.cp.min_points_per_centroid = 1  # small vocabularies: trained without warnings
    train_n = min(len(vecs), TRAIN_PER_LIST * nlist)
    rng = np.random.default_rng(0)
    index.train(vecs[np.sort(rng.choice(len(vecs), train_n, replace=False))])
    index.add(vecs)
    return index, {"nlist": nlist, "train_n": train_n, "niter": KMEANS_ITER}


def tune(vocab: VocabIndex, vecs: np.ndarray, target: float, n_queries: int = 200,
         k: int = 10) -> dict[str, Any]:
    """The smallest nprobe reaching ``target`` recall@k on word-like queries.

    Half the queries are vocabulary words (each left out of its own answer), half the unit
    mid-points of two random words: an image embedding is seldom a word itself, and
    mid-points fall between lists, where IVF needs more of them.
    """
    from devise_utils.apps.faiss_index import tune_nprobe

    rng = np.random.default_rng(1)
    m = min(n_queries // 2, len(vecs))
    own = rng.choice(len(vecs), m, replace=False)
    pairs = rng.integers(0, len(vecs), (2, n_queries - m))
    queries = np.concatenate([vecs[own], normalize(vecs[pairs[0]] + vecs[pairs[1]])])
    self_ids = np.concatenate([own, np.full(n_queries - m, -1)])
    kk = min(k, len(vecs) - 1)
    exact, _ = vocab.knn(queries, kk + 1, exact=True)
    truth = np.array([[i for i in row if i != me][:kk] for row, me in zip(exact, self_ids)])
    return tune_nprobe(vocab, queries, self_ids, truth.reshape(len(queries), kk), target, k,
                       plateau=None)  # exact lists: recall rises to 1 at nprobe = nlist


def tag_images(embeddings: np.ndarray, vocab: VocabIndex, k: int = 10, *, exact: bool = False
               ) -> list[list[tuple[str, float]]]:
    """The k nearest vocabulary words (tags) of each image embedding, best first."""
    return vocab.search(embeddings, k, exact=exact)


# --- where indexes live, and which file made them ----------------------------------------------

def index_dir(sha256: str, *, clean: bool = True, top_n: int | None = None,
              root: str | Path | None = None) -> Path:
    """The default folder of the index of a vector file: ``runs/vocab/<sha16>-<options>``."""
    opts = ("all" if top_n is None else f"top{top_n}") + ("" if clean else "-raw")
    return Path(root or VOCAB_DIR) / f"{sha256[:16]}-{opts}"


def open_index(vectors: str | Path, *, folder: str | Path | None = None, clean: bool = True,
               top_n: int | None = None, rebuild: bool = False, nprobe: int | None = None,
               root: str | Path | None = None, log=None) -> VocabIndex:
    """The vocabulary index of ``vectors``: loaded if it was built before, else built and saved.

    ``folder`` defaults to :func:`index_dir` (keyed by the file's sha256). A folder
    holding an index of another vector file raises ``IndexMismatchError``;
    ``rebuild=True`` replaces it, as it does an index of an older format found in the
    default folder. ``log`` (e.g. ``print``) hears what happened.
    """
    path = existing_file(vectors, "word-vector", "check --vectors")
    sha = cached_sha256(path, root=root)
    default = index_dir(sha, clean=clean, top_n=top_n, root=root)
    folder = Path(folder) if folder else default
    if folder == default and _stale(folder):
        if log:
            log(f"{folder} holds a vocabulary index of an older format; rebuilding it")
        rebuild = True
    if not rebuild and (folder / SIDECAR).is_file():
        try:
            vocab = VocabIndex.load(folder, vectors=path, sha256=sha, nprobe=nprobe)
        except IndexMismatchError:
            raise
        except Exception as e:  # a damaged cache is rebuilt, never trusted; a folder the
            if folder != default:  # user named is not replaced behind their back
                raise
            if log:
                log(f"vocabulary index {folder} is damaged ({e}); rebuilding it")
            return open_index(path, folder=folder, clean=clean, top_n=top_n, rebuild=True,
                              nprobe=nprobe, root=root, log=log)
        if vocab.meta.get("clean") != clean or vocab.meta.get("top_n") != top_n:
            raise ValueError(
                f"{folder} holds the vocabulary with clean={vocab.meta.get('clean')}, "
                f"top_n={vocab.meta.get('top_n')}, not clean={clean}, top_n={top_n}: use "
                "another folder or rebuild it (--rebuild-vocab)")
        if log:
            log(f"vocabulary index {folder} ({len(vocab):,} words)")
        return vocab
    if log:
        log(f"building the vocabulary index of {path} (once; it is reused) ...")
    t = time.perf_counter()
    vocab = VocabIndex.build(path, clean=clean, top_n=top_n, sha256=sha)
    if nprobe:
        vocab.set_nprobe(nprobe)
    vocab.save(folder)
    if log:
        log(f"built {len(vocab):,} words, {vocab.dim}-d in {time.perf_counter() - t:.0f} s "
            f"-> {folder}")
    return vocab


def _stale(folder: Path) -> bool:
    """True if ``folder`` holds a complete vocabulary index of another format."""
    try:
        return read_json(folder / SIDECAR).get("format") != VOCAB_FORMAT
    except (OSError, ValueError):
        return False


def check_vectors(meta: dict[str, Any], vectors: str | Path, sha256: str | None = None,
                  folder: str | Path | None = None) -> None:
    """Raise ``IndexMismatchError`` unless ``vectors`` is the file the index was built from."""
    want = meta.get("vectors_sha256")
    have = sha256 or cached_sha256(existing_file(vectors, "word-vector", "check --vectors"))
    if want and have != want:
        where = folder or "the vocabulary index"
        raise IndexMismatchError(
            f"{where} was built from vector file {meta.get('vectors')} (sha256 {want[:12]}) "
            f"but {vectors} (sha256 {have[:12]}) was given: pass the same --vectors file, or "
            f"leave out --vocab-index (folder=) to use the index of {vectors} (built once), "
            "or rebuild this folder from it with --rebuild-vocab (rebuild=True)")


def cached_sha256(path: str | Path, *, root: str | Path | None = None) -> str:
    """sha256 of a file, remembered per (path, size, mtime) in ``<root>/sha256-cache.json``.

    A 2 GB ``.vec`` takes seconds to hash; a file that changes gets a new size or
    mtime and is hashed again.
    """
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    cache_file = Path(root or VOCAB_DIR) / "sha256-cache.json"
    try:
        cache = read_json(cache_file)
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(str(path))
    if hit and hit.get("stamp") == stamp:
        return hit["sha256"]
    sha = file_sha256(path)
    if st.st_size >= 1 << 20:  # small files hash faster than the cache is read
        cache[str(path)] = {"stamp": stamp, "sha256": sha}
        try:
            write_json(cache_file, cache)
        except OSError:  # a read-only runs/ only costs the re-hash
            pass
    return sha


__all__ = ["VocabIndex", "open_index", "tag_images", "index_dir", "cached_sha256",
           "check_vectors", "VOCAB_DIR", "TARGET_RECALL"]
