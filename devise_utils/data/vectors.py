"""Word vectors: the text side of the visual-semantic embedding.

fastText ``.vec``/``.txt`` files are streamed line by line and only the words
that are needed are kept (a 1M-word file never sits in memory whole); ``.bin``
models go through the ``fasttext`` package so out-of-vocabulary words get
subword vectors. A multi-word AwA2 class such as ``grizzly+bear`` uses its exact
key if the file has it, else the mean of its parts. Every vector is unit-norm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class MissingVectorsError(KeyError):
    """Some words have no vector in the file."""

    def __init__(self, path: str | Path, missing: Sequence[str]):
        self.path, self.missing = str(path), list(missing)
        super().__init__(
            f"{len(self.missing)} word(s) have no vector in {self.path}: "
            f"{', '.join(self.missing)}. Use a larger vector file, the fastText .bin "
            "(subword vectors for any word), or rename the classes."
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def parts(word: str) -> list[str]:
    """The words a class name is made of: ``grizzly+bear`` -> ``[grizzly, bear]``."""
    return [p for p in word.replace("_", "+").replace(" ", "+").split("+") if p]


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit-normalise rows (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class WordVectors:
    """Unit-norm vectors for a set of words, looked up by word."""

    words: list[str]
    vectors: np.ndarray                     # (len(words), dim), float32, unit rows
    source: str = ""
    source_sha256: str = ""
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _model: object = field(default=None, repr=False)  # fasttext model for .bin (subwords)

    def __post_init__(self) -> None:
        self.vectors = normalize(self.vectors)
        self._index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __contains__(self, word: str) -> bool:
        return word in self._index or self._model is not None or all(
            p in self._index for p in parts(word)
        )

    def __len__(self) -> int:
        return len(self.words)

    def _one(self, word: str) -> np.ndarray | None:
        if word in self._index:
            return self.vectors[self._index[word]]
        if self._model is not None:
            if "+" not in word:
                return normalize(self._model.get_word_vector(word))
        ps = parts(word)
        if len(ps) > 1 and all(p in self._index or self._model is not None for p in ps):
            return normalize(np.mean([self._one(p) for p in ps], axis=0))
        return None

    def lookup(self, words: Iterable[str]) -> np.ndarray:
        """Vectors for ``words`` (rows in order); raise listing every missing word."""
        words = list(words)
        rows, missing = [], []
        for w in words:
            v = self._one(w)
            if v is None:
                missing.append(w)
            rows.append(v)
        if missing:
            raise MissingVectorsError(self.source, missing)
        return normalize(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def subset(self, words: Sequence[str]) -> WordVectors:
        """A new WordVectors holding exactly ``words`` (resolved as in :meth:`lookup`)."""
        return WordVectors(list(words), self.lookup(words), self.source, self.source_sha256)


def _needed(words: Iterable[str]) -> set[str]:
    need: set[str] = set()
    for w in words:
        need.add(w)
        need.update(parts(w))
    return need


def load_vectors(
    path: str | Path,
    words: Iterable[str] | None = None,
    *,
    top_n: int | None = None,
    hash_file: bool = True,
    optional: Iterable[str] = (),
) -> WordVectors:
    """Load word vectors from a fastText ``.vec``/``.txt`` or ``.bin`` file.

    ``words``: keep only these (and the parts of multi-word classes); missing
    ones raise :class:`MissingVectorsError` naming all of them. ``top_n``: also
    keep the first N words of the file (fastText files are frequency-sorted),
    which is the vocabulary for tag generation and text search. ``optional``: also keep
    these where the file has them (the words of WordNet glosses, synonyms and hypernyms).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"word-vector file {path} does not exist; run "
            "`python -m devise_utils download fasttext` or pass --vectors FILE"
        )
    wanted = list(words) if words is not None else []
    extra = [w for w in optional if w not in set(wanted)]
    sha = file_sha256(path) if hash_file else ""
    if path.suffix == ".bin":
        wv = _load_bin(path, wanted + extra, top_n, sha)
    else:
        wv = _load_text(path, wanted + extra, top_n, sha,
                        keep_all=words is None and top_n is None and not extra)
    if wanted:
        wv.lookup(wanted)  # raises listing every missing word
    return wv


def _load_text(path: Path, wanted: list[str], top_n: int | None, sha: str,
               keep_all: bool) -> WordVectors:
    need = _needed(wanted)
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().split()
        if len(first) == 2 and all(t.isdigit() for t in first):
            dim, start = int(first[1]), 2
        else:  # headerless .txt: the first line is already a vector
            f.seek(0)
            start = 1
        for lineno, line in enumerate(f):
            word, _, rest = line.rstrip("\n").rstrip().partition(" ")
            if not word:
                continue
            keep = keep_all or word in need or (top_n is not None and lineno < top_n)
            if not keep:
                continue
            vec = np.array(rest.split(), dtype=np.float32)
            if dim is None:
                dim = vec.size
            if vec.size != dim:
                raise ValueError(
                    f"{path}: line {lineno + start} has {vec.size} numbers for '{word}', "
                    f"expected {dim}; the file is truncated or not a .vec file"
                )
            words.append(word)
            rows.append(vec)
            if not keep_all and top_n is None and len(words) >= len(need) and need <= set(words):
                break
    if dim is None:
        raise ValueError(f"{path} holds no vectors; is it a fastText .vec/.txt file?")
    mat = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return WordVectors(words, mat, str(path), sha)


def _load_bin(path: Path, wanted: list[str], top_n: int | None, sha: str) -> WordVectors:
    try:
        import fasttext
    except ImportError as e:  # pragma: no cover - fasttext is a pinned dependency
        raise ImportError("reading .bin vectors needs the fasttext package "
                          "(pip install fasttext-numpy2)") from e
    model = fasttext.load_model(str(path))
    vocab = list(model.get_words())[: top_n or 0]
    base = sorted(_needed(wanted) - {w for w in wanted if "+" in w}) + vocab
    base = list(dict.fromkeys(base))
    mat = (np.stack([model.get_word_vector(w) for w in base]) if base
           else np.zeros((0, model.get_dimension()), np.float32))
    wv = WordVectors(base, mat, str(path), sha)
    wv._model = model
    return wv
