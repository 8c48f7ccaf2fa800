"""The image side of search: photos embedded by a Stage II model, indexed and queried.

Text -> image, image -> image and zero-shot labels for a folder are nearest-neighbour
lookups in the word-vector space the model maps images into (:mod:`devise_utils.apps.index`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from devise_utils.apps.index import ENGINES, EmbeddingIndex
from devise_utils.apps.text import rank_labels, text_vector
from devise_utils.core.files import existing_file
from devise_utils.data.awa2 import image_files
from devise_utils.data.vectors import WordVectors, file_sha256
from devise_utils.model.backbones import load_embedder
from devise_utils.model.predict import embed_paths

if TYPE_CHECKING:
    from devise_utils.apps.faiss_index import FaissIndex


def text_to_image(index: EmbeddingIndex | FaissIndex, text: str, wv: WordVectors, k: int = 10
                  ) -> list[tuple[str, float]]:
    """Images whose embeddings are nearest the query words ("a striped animal")."""
    return index.search(text_vector(text, wv), k)[0]




def load_model(ckpt: str | Path):
    """(Stage II model, checkpoint meta) from a checkpoint file."""
    return load_embedder(existing_file(ckpt, "checkpoint"))


def embed_images(model, paths: Sequence[str], batch_size: int = 64
                 ) -> tuple[np.ndarray, list[str]]:
    """Unit embeddings of the readable images at the model's input size; raise if none
    could be read."""
    emb, kept = embed_paths(model, list(paths), batch_size=batch_size)
    if not kept:
        raise ValueError(f"none of {len(paths)} image(s) could be read "
                         f"(first: {paths[0] if paths else '-'})")
    return emb, kept


def build_image_index(ckpt: str | Path, photos: str | Path, vectors: str | Path | None = None,
                      *, method: str = "hnsw", engine: str = "nmslib",
                      out: str | Path | None = None, batch_size: int = 64, chunk: int = 4096,
                      **kwargs: Any) -> EmbeddingIndex | FaissIndex:
    """Embed every image under ``photos`` with a Stage II checkpoint and index them.

    ``vectors`` (default: the checkpoint's own) is recorded so text queries use the
    same word space the model was trained to regress onto. ``engine="faiss"`` embeds
    ``chunk`` photos at a time straight into an on-disk IVF-PQ index in ``out`` (memory
    stays bounded for millions of photos; ``kwargs`` go to
    :func:`~devise_utils.apps.faiss_index.build_faiss_index`) and returns it opened.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "faiss" and out is None:
        raise ValueError("the faiss engine writes its index to disk as it builds: pass "
                         "out=FOLDER (--out)")
    model, meta = load_model(ckpt)
    vectors = existing_file(vectors or meta["vectors"], "word-vector")
    vec_sha = file_sha256(vectors)
    if meta.get("vectors_sha256") and vec_sha != meta["vectors_sha256"]:
        warnings.warn(f"{vectors} is not the vector file {ckpt} was trained with "
                      f"({meta['vectors']}); fine if it comes from the same fastText model",
                      stacklevel=2)
    paths = image_files(photos)
    info = {"kind": "images", "photos": str(Path(photos).resolve()),
            "model": str(Path(ckpt).resolve()), "model_sha256": file_sha256(ckpt),
            "vectors": str(Path(vectors).resolve()), "vectors_sha256": vec_sha,
            "backbone": meta["backbone"], "image_size": model.image_size}
    if engine == "faiss":
        from devise_utils.apps.faiss_index import build_faiss_index

        chunks = _embedded_chunks(model, paths, info, batch_size, chunk)
        return build_faiss_index(chunks, out, info, **kwargs)
    emb, kept = embed_images(model, paths, batch_size)
    info["dim"] = emb.shape[1]
    return EmbeddingIndex(emb, kept, info, method=method, **kwargs)


def _embedded_chunks(model, paths: Sequence[str], info: dict[str, Any], batch_size: int,
                     chunk: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(unit embeddings, readable paths) of ``chunk`` photos at a time; sets ``info["dim"]``."""
    kept_any = False
    for s in range(0, len(paths), chunk):
        emb, kept = embed_paths(model, list(paths[s:s + chunk]), batch_size=batch_size)
        if kept:
            info["dim"], kept_any = int(emb.shape[1]), True
            yield emb, kept
    if not kept_any:
        raise ValueError(f"none of {len(paths)} image(s) could be read "
                         f"(first: {paths[0] if paths else '-'})")


def image_to_image(index: EmbeddingIndex | FaissIndex, model, path: str | Path, k: int = 10,
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


