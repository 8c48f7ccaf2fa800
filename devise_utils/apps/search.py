"""The image side of search: photos embedded by a model, indexed and queried.

Text -> image, image -> image, tags and zero-shot labels for a folder are nearest-neighbour
lookups in the word-vector space the model maps images into (:mod:`devise_utils.apps.index`).
The model is an :class:`~devise_utils.apps.infer.Embedder`: an exported ``.onnx`` file
(onnxruntime, no torch) or a Stage II checkpoint, opened by
:func:`~devise_utils.apps.infer.open_model`; a model that does not fit the index or vector
file is refused before any image is read.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devise_utils.apps.faiss_index import FaissIndex, build_faiss_index
from devise_utils.apps.index import ENGINES, EmbeddingIndex
from devise_utils.apps.infer import (
    Embedder,
    ModelMismatchError,
    check_dim,
    check_index,
    open_model,
    vector_file_dim,
)
from devise_utils.apps.text import rank_labels, text_vector
from devise_utils.apps.vocab import VocabIndex, tag_images
from devise_utils.core.files import existing_file, read_json
from devise_utils.data.images import image_files
from devise_utils.data.vectors import WordVectors, file_sha256, normalize
from devise_utils.study.transfer import kmeans_refine, prototype_scores


def text_to_image(index: EmbeddingIndex | FaissIndex, text: str, wv: WordVectors, k: int = 10
                  ) -> list[tuple[str, float]]:
    """Images whose embeddings are nearest the query words ("a striped animal")."""
    return index.search(text_vector(text, wv), k)[0]


def model_vectors(model: Embedder, vectors: str | Path | None) -> Path:
    """The word-vector file to use with ``model`` (default: the one it was trained on),
    checked to exist and to have the model's dimension."""
    if vectors is None and model.vectors is None:
        raise ValueError(f"{model.path} names no word-vector file; pass --vectors FILE")
    path = existing_file(vectors or model.vectors, "word-vector")
    check_dim(model, vector_file_dim(path), f"vector file {path}")
    return path


def embed_images(model: Embedder, paths: Sequence[str], batch_size: int = 64
                 ) -> tuple[np.ndarray, list[str]]:
    """Unit embeddings of the readable images at the model's input size; raise if none
    could be read."""
    return model.embed_paths(list(paths), batch_size)


def build_image_index(model: Embedder | str | Path, photos: str | Path,
                      vectors: str | Path | None = None, *, method: str = "hnsw",
                      engine: str = "nmslib", out: str | Path | None = None,
                      batch_size: int = 64, chunk: int = 4096, **kwargs: Any
                      ) -> EmbeddingIndex | FaissIndex:
    """Embed every image under ``photos`` with ``model`` (an Embedder or a model file) and
    index them.

    ``vectors`` (default: the model's own) is recorded so text queries use the same word
    space the model was trained to regress onto; a file of another dimension is refused.
    ``engine="faiss"`` embeds ``chunk`` photos at a time straight into an on-disk IVF-PQ
    index in ``out`` (memory stays bounded for millions of photos; ``kwargs`` go to
    :func:`~devise_utils.apps.faiss_index.build_faiss_index`) and returns it opened.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "faiss" and out is None:
        raise ValueError("the faiss engine writes its index to disk as it builds: pass "
                         "out=FOLDER (--out)")
    model = model if isinstance(model, Embedder) else open_model(model)
    vectors = model_vectors(model, vectors)
    vec_sha = file_sha256(vectors)
    if model.vectors_sha256 and vec_sha != model.vectors_sha256:
        warnings.warn(f"{vectors} is not the vector file {model.path} was trained with "
                      f"({model.vectors}); fine if it comes from the same word model",
                      stacklevel=2)
    paths = image_files(photos)
    info = {"kind": "images", "photos": str(Path(photos).resolve()),
            "model": str(model.path.resolve()), "model_sha256": file_sha256(model.path),
            "checkpoint_sha256": model.lineage, "model_format": model.format,
            "vectors": str(Path(vectors).resolve()), "vectors_sha256": vec_sha,
            "backbone": model.backbone, "image_size": model.image_size}
    if engine == "faiss":
        chunks = _embedded_chunks(model, paths, info, batch_size, chunk)
        return build_faiss_index(chunks, out, info, **kwargs)
    emb, kept = embed_images(model, paths, batch_size)
    info["dim"] = emb.shape[1]
    return EmbeddingIndex(emb, kept, info, method=method, **kwargs)


def _embedded_chunks(model: Embedder, paths: Sequence[str], info: dict[str, Any],
                     batch_size: int, chunk: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(unit embeddings, readable paths) of ``chunk`` photos at a time; sets ``info["dim"]``."""
    kept_any = False
    for s in range(0, len(paths), chunk):
        try:
            emb, kept = model.embed_paths(list(paths[s:s + chunk]), batch_size)
        except ValueError:  # no readable photo in this chunk
            continue
        info["dim"], kept_any = int(emb.shape[1]), True
        yield emb, kept
    if not kept_any:
        raise ValueError(f"none of {len(paths)} image(s) could be read "
                         f"(first: {paths[0] if paths else '-'})")


def image_to_image(index: EmbeddingIndex | FaissIndex, model: Embedder, path: str | Path,
                   k: int = 10,
                   exclude_self: bool = True) -> list[tuple[str, float]]:
    """Images nearest a query image; the query itself is left out if it is indexed."""
    check_index(model, index)
    emb, _ = embed_images(model, [str(path)])
    hits = index.search(emb, k + 1)[0]
    me = str(Path(path).resolve())
    if exclude_self:
        hits = [h for h in hits if str(Path(h[0]).resolve()) != me]
    return hits[:k]


def tag_folder(model: Embedder, paths: Sequence[str], vocab: VocabIndex, k: int = 10, *,
               exact: bool = False) -> list[tuple[str, list[tuple[str, float]]]]:
    """(path, its k nearest vocabulary words) of every readable image."""
    check_dim(model, vocab.dim, f"the vocabulary index of {vocab.meta.get('vectors', '?')}")
    emb, kept = embed_images(model, paths)
    return list(zip(kept, tag_images(emb, vocab, k, exact=exact)))


def _check_head_vectors(model: Embedder, dim: int, source: Any) -> None:
    """Refuse word vectors of another dimension than the model's head was fitted on."""
    head = model.head
    if head.semantic_dim not in (None, dim):
        raise ModelMismatchError(f"the {head.method} head of {model.path} needs "
                                 f"{head.semantic_dim}-d word vectors but {source} is "
                                 f"{dim}-d: use the vector file its run was trained on")


def tag_with_head(model: Embedder, paths: Sequence[str], vectors: str | Path, k: int = 10, *,
                  top_n: int | None = None, chunk: int = 20000
                  ) -> list[tuple[str, list[tuple[str, float]]]]:
    """Tags by a zero-shot head: every vocabulary word scored as a class of the head's
    method (its row from the word's vector: a vocabulary word has no WordNet synset looked
    up, so only the name part of the semantics counts), ``chunk`` words at a time, exact."""
    from devise_utils.apps.text import vocabulary
    from devise_utils.data.vectors import load_vectors

    head = model.head
    if head.rows_from in ("fixed", "basis"):
        why = ("rows for its run's classes only" if head.rows_from == "fixed" else
               "rows from WordNet synsets, which vocabulary words are not given")
        raise ValueError(f"the {head.method} head has {why}, not a vocabulary: tag with "
                         "--zsl-method devise (or export another method)")
    wv = load_vectors(vectors, top_n=top_n, hash_file=False)
    _check_head_vectors(model, wv.dim, vectors)
    words, V = vocabulary(wv)
    V = normalize(V)  # a word's semantics, as a class name's (unit vector)
    F, kept = model.embed_paths(list(paths), normalized=False)
    G = head.image_vectors(F)
    best_s = np.full((len(G), 0), -np.inf)
    best_i = np.zeros((len(G), 0), int)
    for i in range(0, len(words), chunk):
        S = head.scores(G, head.class_rows(words[i:i + chunk], V[i:i + chunk]))
        s = np.concatenate([best_s, S], 1)
        idx = np.concatenate([best_i, np.arange(i, i + S.shape[1])[None].repeat(len(G), 0)], 1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(idx, top, 1)
    return [(p, [(words[j], float(v)) for j, v in zip(best_i[n], best_s[n])])
            for n, p in enumerate(kept)]


def label_folder(model: Embedder, folder: str | Path, classes: Sequence[str], wv: WordVectors,
                 k: int | None = None, class_synsets: str | Path | None = None,
                 transductive: bool = False) -> dict[str, list[tuple[str, float]]]:
    """Zero-shot labels for every image under ``folder``: path -> ranked (class, score),
    by DeViSE's cosine, or by the model's zero-shot head (its method's rows of the names).
    ``transductive``: the gallery mode, each class's row first moved by k-means onto the
    folder's own photos (it reads them all, so labels depend on the whole folder)."""
    head = model.head
    if not classes:
        raise ValueError("no class names given; pass e.g. --classes \"zebra,horse\"")
    if head is None:
        check_dim(model, wv.dim, f"vector file {wv.source}")
        emb, kept = embed_images(model, image_files(folder))
        if not transductive:
            return dict(zip(kept, rank_labels(emb, classes, wv, k)))
        G, R, metric = emb, wv.lookup(list(classes)), "cosine"
    else:
        from devise_utils.study.head import rows_for

        if wv is not None:  # a WordNet-only basis head reads no word vectors
            _check_head_vectors(model, wv.dim, wv.source)
        if transductive and head.metric != "cosine":
            raise ValueError(f"--transductive refines rows scored by cosine; the {head.method} "
                             f"head scores by {head.metric}: label without it, or with "
                             "--method devise")
        F, kept = model.embed_paths(image_files(folder), normalized=False)
        G, R = head.image_vectors(F), rows_for(head, classes, wv, class_synsets)
        metric = head.metric
    if transductive:
        R = kmeans_refine(G, R, metric="cosine")
    S = prototype_scores(G, R, metric)
    top = np.argsort(-S, axis=1, kind="stable")[:, :k or len(classes)]
    return {p: [(classes[j], float(S[i, j])) for j in top[i]] for i, p in enumerate(kept)}


def load_index(folder: str | Path, *, model: str | Path | None = None,
               vectors: str | Path | None = None, ef_search: int | None = None,
               nprobe: int | None = None, threads: int = 0):
    """Open a saved index with the engine its sidecar names (nmslib when it names none).

    ``ef_search`` tunes an nmslib HNSW index, ``nprobe`` a faiss one; the other is ignored.
    """
    side = Path(folder) / "index.json"
    engine = read_json(side).get("engine", "nmslib") if side.is_file() else "nmslib"
    if engine == "faiss":
        return FaissIndex.load(folder, model=model, vectors=vectors, nprobe=nprobe,
                               threads=threads)
    return EmbeddingIndex.load(folder, model=model, vectors=vectors, ef_search=ef_search,
                               threads=threads)
