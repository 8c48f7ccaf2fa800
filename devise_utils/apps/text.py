"""The text side of search: query words, tag vocabularies and class names in word space."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from devise_utils.apps.index import EmbeddingIndex
from devise_utils.data.vectors import WordVectors, load_vectors, normalize

#: Function words dropped from text queries ("a striped animal" -> striped, animal).
STOP_WORDS = frozenset("""
a an the and or of in on at to for with without from by as is are was were be been
this that these those it its my your our their his her some any very which who what
""".split())


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


def rank_labels(embeddings: np.ndarray, classes: Sequence[str], wv: WordVectors,
                k: int | None = None) -> list[list[tuple[str, float]]]:
    """Zero-shot: every class name ranked by cosine to each embedding (best first)."""
    if not classes:
        raise ValueError("no class names given; pass e.g. --classes \"zebra,horse\"")
    index = EmbeddingIndex(wv.lookup(classes), list(classes), method="exact")
    return index.search(embeddings, k or len(classes))
