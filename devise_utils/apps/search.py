"""Search the joint space: text -> image, image -> image, image -> tags, zero-shot labels.

DeViSE maps images into the word-vector space, so every application on the poster
is a nearest-neighbour lookup by cosine similarity. :class:`EmbeddingIndex` wraps
nmslib's HNSW graph (sub-linear queries; what a 1M-word vocabulary needs) and an
exact NumPy path with the same interface, which is the ground truth HNSW is tested
and benchmarked against (and is as fast for a few thousand items).

An index on disk records the checkpoint and word-vector file (path and sha256)
it was built with, so a query made with another model or vector file fails with
an error naming both files instead of returning nonsense neighbours.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devise_utils.core.config import ROOT
from devise_utils.core.files import atomic_write, read_json, write_json
from devise_utils.data.vectors import WordVectors, file_sha256, load_vectors, normalize

#: HNSW build parameters. Random 300-d vectors (no structure: HNSW's worst case)
#: need M=32 to keep recall@10 >= 0.99 at a few thousand items; real embeddings
#: cluster by class and reach it at lower settings (see bench/bench_search.py).
HNSW_PARAMS: dict[str, int] = {"M": 32, "efConstruction": 200, "post": 0}
#: Query-time beam width; nmslib does not store it in the index file.
EF_SEARCH = 400
METHODS = ("hnsw", "exact")
DEFAULT_INDEX_DIR = ROOT / "runs" / "index"
INDEX_FORMAT = 1

#: Function words dropped from text queries ("a striped animal" -> striped, animal).
STOP_WORDS = frozenset("""
a an the and or of in on at to for with without from by as is are was were be been
this that these those it its my your our their his her some any very which who what
""".split())


class IndexMismatchError(ValueError):
    """The index was built with another checkpoint or word-vector file."""


# --- the index -------------------------------------------------------------------------------

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
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"queries are {q.shape[1]}-d but the index holds {self.dim}-d "
                             "vectors: the query comes from another model or vector file")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q, k = normalize(q), min(k, len(self))
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
            "format": INDEX_FORMAT, "method": self.method, "params": self.params,
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
        index.check_file("model", model)
        index.check_file("vectors", vectors)
        return index

    def check_file(self, key: str, path: str | Path | None, sha256: str | None = None) -> None:
        """Raise :class:`IndexMismatchError` if ``path`` is not the ``key`` file of the index.

        ``sha256`` saves re-hashing a file the caller already hashed.
        """
        if path is None or f"{key}_sha256" not in self.meta:
            return
        want = self.meta[f"{key}_sha256"]
        have = sha256 or file_sha256(_existing(path, key))
        if have != want:
            where = self.source or "this index"
            raise IndexMismatchError(
                f"{where} was built with {key} file {self.meta.get(key)} (sha256 {want[:12]}) "
                f"but {path} (sha256 {have[:12]}) was given: use the same {key} file, or "
                f"rebuild the index with `python -m devise_utils index PHOTOS_DIR --model CKPT "
                f"--vectors FILE`")


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
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {p} does not exist; check the path")
    return p


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


# --- text side ---------------------------------------------------------------------------------

def content_words(text: str) -> list[str]:
    """Lower-cased words of a query without stop words ("A striped animal" -> [striped, animal]).

    ``+`` joins multi-word class names (``grizzly+bear``) as in AwA2.
    """
    if not text or not text.strip():
        raise ValueError("empty query: give some words, e.g. \"a striped animal\"")
    words = [w.strip(".,;:!?\"'()[]") for w in text.lower().split()]
    words = [w for w in words if w]
    content = [w for w in words if w not in STOP_WORDS]
    if not content:
        raise ValueError(f"query {text!r} has only stop words ({', '.join(words)}); "
                         "add a content word such as an animal or an attribute")
    return content


def text_vector(text: str, wv: WordVectors) -> np.ndarray:
    """The query's point in word space: the unit mean of its content words' vectors.

    A word with no vector raises :class:`~devise_utils.data.vectors.MissingVectorsError`
    naming every such word (vectors from a fastText ``.bin`` have one for any word).
    """
    return normalize(wv.lookup(content_words(text)).mean(axis=0))


def query_vectors(path: str | Path, text: str) -> WordVectors:
    """Load just the query's words from a vector file (streams big ``.vec`` files)."""
    return load_vectors(path, words=content_words(text))


def text_to_image(index: EmbeddingIndex, text: str, wv: WordVectors, k: int = 10
                  ) -> list[tuple[str, float]]:
    """Images whose embeddings are nearest the query words ("a striped animal")."""
    return index.search(text_vector(text, wv), k)[0]


def vocabulary(wv: WordVectors, clean: bool = True) -> tuple[list[str], np.ndarray]:
    """Words and vectors usable as tags; ``clean`` keeps lower-case alphabetic non-stop words.

    fastText's top words include punctuation, numbers, names and stop words,
    none of which make useful image tags.
    """
    if not clean:
        return list(wv.words), wv.vectors
    keep = [i for i, w in enumerate(wv.words)
            if re.fullmatch(r"[a-z][a-z-]*[a-z]", w) and w not in STOP_WORDS]
    if not keep:
        raise ValueError(f"{wv.source or 'the word vectors'} has no lower-case alphabetic words "
                         "to use as tags; pass a larger --top-n or another vector file")
    return [wv.words[i] for i in keep], wv.vectors[keep]


def word_index(wv: WordVectors, *, method: str = "exact", clean: bool = True,
               **kwargs: Any) -> EmbeddingIndex:
    """An in-memory index over a small vocabulary (words already loaded) for tagging.

    For a whole vector file (fastText's 1M words, GloVe's 400k) use
    :func:`devise_utils.apps.vocab.open_index`: built once per file, saved, reused.
    """
    words, vecs = vocabulary(wv, clean)
    meta = {"kind": "words", "vectors": wv.source, "vectors_sha256": wv.source_sha256}
    return EmbeddingIndex(vecs, words, meta, method=method, **kwargs)


def image_to_tags(embeddings: np.ndarray, words: EmbeddingIndex, k: int = 10
                  ) -> list[list[tuple[str, float]]]:
    """The k nearest vocabulary words of each image embedding (its tags)."""
    return words.search(embeddings, k)


def rank_labels(embeddings: np.ndarray, classes: Sequence[str], wv: WordVectors,
                k: int | None = None) -> list[list[tuple[str, float]]]:
    """Zero-shot: every class name ranked by cosine to each embedding (best first)."""
    if not classes:
        raise ValueError("no class names given; pass e.g. --classes \"zebra,horse\"")
    index = EmbeddingIndex(wv.lookup(classes), list(classes), method="exact")
    return index.search(embeddings, k or len(classes))


# --- image side ----------------------------------------------------------------------------

def image_files(folder: str | Path) -> list[str]:
    """Every image under ``folder`` (recursive, sorted) or ``folder`` itself if a file."""
    from devise_utils.data.awa2 import IMAGE_EXTS

    folder = Path(folder)
    if folder.is_file():
        return [str(folder)]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; give a folder of images")
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {folder}")
    return files


def load_model(ckpt: str | Path):
    """(Stage II model, checkpoint meta) from a checkpoint file."""
    from devise_utils.model.backbones import load_embedder

    return load_embedder(_existing(ckpt, "checkpoint"))


def embed_images(model, paths: Sequence[str], batch_size: int = 64
                 ) -> tuple[np.ndarray, list[str]]:
    """Unit embeddings of the readable images at the model's input size; raise if none
    could be read."""
    from devise_utils.model.predict import embed_paths

    emb, kept = embed_paths(model, list(paths), batch_size=batch_size)
    if not kept:
        raise ValueError(f"none of {len(paths)} image(s) could be read "
                         f"(first: {paths[0] if paths else '-'})")
    return emb, kept


def build_image_index(ckpt: str | Path, photos: str | Path, vectors: str | Path | None = None,
                      *, method: str = "hnsw", batch_size: int = 64, **kwargs: Any
                      ) -> EmbeddingIndex:
    """Embed every image under ``photos`` with a Stage II checkpoint and index them.

    ``vectors`` (default: the checkpoint's own) is recorded so text queries use the
    same word space the model was trained to regress onto.
    """
    model, meta = load_model(ckpt)
    vectors = _existing(vectors or meta["vectors"], "word-vector")
    vec_sha = file_sha256(vectors)
    if meta.get("vectors_sha256") and vec_sha != meta["vectors_sha256"]:
        warnings.warn(f"{vectors} is not the vector file {ckpt} was trained with "
                      f"({meta['vectors']}); fine if it comes from the same fastText model",
                      stacklevel=2)
    emb, kept = embed_images(model, image_files(photos), batch_size)
    info = {"kind": "images", "photos": str(Path(photos).resolve()),
            "model": str(Path(ckpt).resolve()), "model_sha256": file_sha256(ckpt),
            "vectors": str(Path(vectors).resolve()), "vectors_sha256": vec_sha,
            "backbone": meta["backbone"], "image_size": model.image_size, "dim": emb.shape[1]}
    return EmbeddingIndex(emb, kept, info, method=method, **kwargs)


def image_to_image(index: EmbeddingIndex, model, path: str | Path, k: int = 10,
                   exclude_self: bool = True) -> list[tuple[str, float]]:
    """Images nearest a query image; the query itself is left out if it is indexed."""
    emb, _ = embed_images(model, [str(path)])
    hits = index.search(emb, k + 1)[0]
    me = str(Path(path).resolve())
    if exclude_self:
        hits = [h for h in hits if str(Path(h[0]).resolve()) != me]
    return hits[:k]


def label_folder(model, folder: str | Path, classes: Sequence[str], wv: WordVectors,
                 k: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """Zero-shot labels for every image under ``folder``: path -> ranked (class, cosine)."""
    emb, kept = embed_images(model, image_files(folder))
    return dict(zip(kept, rank_labels(emb, classes, wv, k)))


# --- command line ------------------------------------------------------------------------------

def _print_hits(hits: list[tuple[str, float]]) -> None:
    for label, score in hits:
        print(f"{score:7.4f}  {label}")


def _cmd_index(args) -> int:
    index = build_image_index(args.model, args.photos, args.vectors, method=args.method,
                              batch_size=args.batch_size)
    index.save(args.out)
    print(f"indexed {len(index)} images ({index.method}, {index.dim}-d) -> {args.out}")
    return 0


def _cmd_search(args) -> int:
    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH (not both, not neither)")
    index = EmbeddingIndex.load(args.index, model=args.model, ef_search=args.ef_search)
    if args.query is not None:
        vec_path = args.vectors or index.meta["vectors"]
        wv = query_vectors(_existing(vec_path, "word-vector"), args.query)
        index.check_file("vectors", vec_path, wv.source_sha256)
        hits = text_to_image(index, args.query, wv, args.k)
    else:
        model_path = args.model or index.meta["model"]
        index.check_file("model", model_path)  # it may have been retrained since indexing
        model, meta = load_model(model_path)
        hits = image_to_image(index, model, args.image, args.k)
    _print_hits(hits)
    return 0


def _cmd_tag(args) -> int:
    from devise_utils.apps import vocab

    paths = [p for img in args.images for p in image_files(img)]
    model, meta = load_model(args.model)
    words = vocab.open_index(args.vectors or meta["vectors"], folder=args.vocab_index,
                             top_n=args.top_n, rebuild=args.rebuild_vocab,
                             ef_search=args.ef_search, log=_info)
    emb, kept = embed_images(model, paths)
    for path, tags in zip(kept, vocab.tag_images(emb, words, args.k,
                                                 exact=args.method == "exact")):
        print(path)
        _print_hits(tags)
    return 0


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_label(args) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    model, meta = load_model(args.model)
    wv = load_vectors(args.vectors or meta["vectors"], words=classes)
    for path, ranked in label_folder(model, args.folder, classes, wv,
                                     args.k).items():
        print(path + "  " + "  ".join(f"{c} {s:.4f}" for c, s in ranked))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="embed a folder of photos and build a search index")
    p.add_argument("photos", help="folder of images (searched recursively)")
    p.add_argument("--model", required=True, help="Stage II checkpoint (stage2.pth)")
    p.add_argument("--out", default=str(DEFAULT_INDEX_DIR), help="index folder to write")
    p.add_argument("--vectors", help="word-vector file for text queries "
                   "(default: the checkpoint's)")
    p.add_argument("--method", choices=METHODS, default="hnsw")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_cmd_index)

    p = subparsers.add_parser("search", help="text -> image or image -> image search")
    p.add_argument("query", nargs="?", help='words, e.g. "a striped animal"')
    p.add_argument("--image", help="find images like this one instead")
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR), help="index folder")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--model", help="checkpoint (default: the index's; must match it)")
    p.add_argument("--vectors", help="word vectors (default: the index's; must match it)")
    p.add_argument("--ef-search", type=int, help=f"HNSW beam width (default {EF_SEARCH})")
    p.set_defaults(func=_cmd_search)

    p = subparsers.add_parser("tag", help="nearest vocabulary words of images (tags)",
                              description="Tags: the nearest words of the whole vocabulary. "
                              "The vocabulary index is built on first use of a vector file "
                              "and reused (runs/vocab/<sha256>-...).")
    p.add_argument("images", nargs="+", help="image file(s) or folder(s)")
    p.add_argument("--model", required=True, help="Stage II checkpoint")
    p.add_argument("--vectors", help="vocabulary vectors (default: the checkpoint's)")
    p.add_argument("--top-n", type=int, default=None,
                   help="only the N most frequent words (default: every word of the file)")
    p.add_argument("-k", type=int, default=10, help="tags per image")
    p.add_argument("--method", choices=METHODS, default="hnsw",
                   help="hnsw (default) or exact: scan every word")
    p.add_argument("--vocab-index", help="vocabulary index folder (default: runs/vocab/"
                   "<sha256 of --vectors>-...); built there if absent")
    p.add_argument("--rebuild-vocab", action="store_true", help="rebuild the vocabulary index")
    p.add_argument("--ef-search", type=int, help="HNSW beam width (default vocab.EF_SEARCH)")
    p.set_defaults(func=_cmd_tag)

    p = subparsers.add_parser("label", help="zero-shot labels for a folder of new images")
    p.add_argument("folder", help="image folder (or one image)")
    p.add_argument("--model", required=True, help="Stage II checkpoint")
    p.add_argument("--classes", required=True, help='comma-separated names, e.g. "zebra,horse"')
    p.add_argument("--vectors", help="word vectors (default: the checkpoint's)")
    p.add_argument("-k", type=int, default=3, help="labels shown per image")
    p.set_defaults(func=_cmd_label)
