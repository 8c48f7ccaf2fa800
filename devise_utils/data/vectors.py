"""Word vectors: the text side of the visual-semantic embedding.

fastText ``.vec``/``.txt`` files are streamed line by line and only the words
that are needed are kept (a 1M-word file never sits in memory whole); ``.bin``
models go through the ``fasttext`` package so out-of-vocabulary words get
subword vectors. A multi-word AwA2 class such as ``grizzly+bear`` uses its exact
key if the file has it, else the mean of its parts. Every vector is unit-norm.

A text file is read once, in one pass that hashes it and checks every line: non-UTF-8
bytes, a header that disagrees with the rows, a non-number, NaN or infinity, a word listed
twice with different rows and an all-zero vector of a needed word are each a
:class:`VectorsError` naming the file, the line and the fix, never a traceback from NumPy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devise_utils.core.errors import DataError

#: A .vec header line: word count and dimension.
_HEADER = re.compile(r"([0-9]+)[ \t]+([0-9]+)")
#: Two class vectors closer than this (cosine) cannot be told apart by nearest-neighbour search.
SAME_VECTOR_COS = 1 - 1e-6


class VectorsError(DataError):
    """A word-vector file that cannot be used; the message names the file, the line and the fix."""


class MissingVectorsError(KeyError, DataError):
    """Some words have no vector in the file (a KeyError, and bad input like any DataError)."""

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
    """Unit-normalise rows (zero rows stay zero). The norm is taken in float64, so a row of
    tiny float32 values is not left unnormalised by an underflowing sum of squares."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x.astype(np.float64), axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-300)).astype(np.float32)


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
    if path.suffix == ".bin":
        wv = _load_bin(path, wanted + extra, top_n, file_sha256(path) if hash_file else "")
    else:
        wv = _load_text(path, wanted, top_n, keep_all=words is None and top_n is None
                        and not extra, hash_file=hash_file, optional=extra)
    if wanted:
        wv.lookup(wanted)  # raises listing every missing word
    return wv


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start:e.start + 4]
        hint = (" (a fastText binary model must be named .bin)" if lineno == 1 else "")
        raise VectorsError(
            f"{path}: line {lineno} is not UTF-8 text (byte {e.start + 1} of the line is "
            f"{bad[:1]!r}){hint}; convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 "
            f"{path.name} > fixed.vec`, or use the original fastText .vec/.txt file") from None


def _parse_row(rest: str, word: str, path: Path, lineno: int, dim: int | None,
               count: int | None) -> np.ndarray:
    """One row's numbers (``count``: the header's word count, None without a header)."""
    tokens = rest.split()
    if dim is not None and len(tokens) != dim:
        if count is not None:
            raise VectorsError(
                f"{path}: line {lineno} has {len(tokens)} numbers for '{word}', expected {dim} "
                f"(the header on line 1 says {dim}-d); the file is truncated or the header is "
                f"wrong: fix the header to '{count} {len(tokens)}' or re-download the file")
        raise VectorsError(
            f"{path}: line {lineno} has {len(tokens)} numbers for '{word}', expected {dim}; "
            "the file is truncated or not a .vec file")
    try:
        with np.errstate(over="ignore"):
            vec = np.array(tokens, dtype=np.float32)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise VectorsError(f"{path}: line {lineno}: {bad[:40]!r} in the vector of '{word}' is "
                           "not a number; is this a fastText .vec/.txt file?") from None
    if vec.size == 0:
        raise VectorsError(f"{path}: line {lineno} holds the word '{word}' and no numbers; "
                           "every line must be 'word v1 v2 ... vD'")
    if not np.isfinite(vec).all():
        raise VectorsError(f"{path}: line {lineno}: the vector of '{word}' holds NaN or "
                           "infinity (or a number too large for float32); the file is damaged: "
                           "re-download it or drop that line")
    return vec


def _is_number(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


class _Rows:
    """The kept rows of a text vector file in file order, each word once."""

    def __init__(self, path: Path):
        self.path, self.words, self.rows, self.lines = path, [], [], []
        self.at: dict[str, int] = {}

    def add(self, word: str, vec: np.ndarray, lineno: int, needed: bool) -> None:
        if word in self.at:  # the same row twice is harmless; two different rows are not
            i = self.at[word]
            if not np.array_equal(self.rows[i], vec):
                raise VectorsError(
                    f"{self.path}: the word '{word}' is on line {self.lines[i]} and again on "
                    f"line {lineno} with a different vector; a .vec file holds one row per "
                    "word: delete one of them")
            return
        if needed and not vec.any():
            raise VectorsError(
                f"{self.path}: line {lineno}: '{word}' has an all-zero vector, which has no "
                "direction to compare; use a vector file with a real vector for it or rename "
                "the class")
        self.at[word] = len(self.words)
        self.words.append(word)
        self.rows.append(vec)
        self.lines.append(lineno)


def _load_text(path: Path, wanted: list[str], top_n: int | None, keep_all: bool,
               hash_file: bool, optional: Sequence[str] = ()) -> WordVectors:
    """One pass over the file: hash it, check every line, keep the needed rows (a zero
    vector is refused for the ``wanted`` words, not for the ``optional`` ones)."""
    required = _needed(wanted)
    need = required | _needed(optional)
    h = hashlib.sha256()
    kept = _Rows(path)
    count = dim = None
    n_rows = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if hash_file:
                h.update(raw)
            text = _decode(raw, path, lineno).rstrip()
            if lineno == 1 and (m := _HEADER.fullmatch(text.lstrip())):
                count, dim = int(m[1]), int(m[2])
                if dim == 0:
                    raise VectorsError(f"{path}: the header (line 1) says the vectors are 0-d; "
                                       "fix it to '<words> <dimension>'")
                continue
            if not text:
                continue
            n_rows += 1
            word, _, rest = text.partition(" ")
            if word and (word in kept.at or keep_all or word in need
                         or (top_n is not None and n_rows <= top_n)):
                vec = _parse_row(rest, word, path, lineno, dim, count)
                dim = vec.size if dim is None else dim
                kept.add(word, vec, lineno, word in required)
    _check_count(path, n_rows, count, dim)
    mat = np.stack(kept.rows) if kept.rows else np.zeros((0, dim or 0), np.float32)
    return WordVectors(kept.words, mat, str(path), h.hexdigest() if hash_file else "")


def _check_count(path: Path, n_rows: int, count: int | None, dim: int | None) -> None:
    if n_rows == 0:
        what = "is empty" if path.stat().st_size == 0 else "holds no vectors"
        raise VectorsError(f"{path} {what}; is it a fastText .vec/.txt file? Pass another "
                           "with --vectors FILE")
    if count is not None and n_rows != count:
        raise VectorsError(
            f"{path}: the header (line 1) says {count} words but the file holds {n_rows} rows; "
            "the file is truncated (re-download it) or the header is wrong (fix it to "
            f"'{n_rows} {dim}')")


def _load_bin(path: Path, wanted: list[str], top_n: int | None, sha: str) -> WordVectors:
    try:
        import fasttext
    except ImportError as e:  # pragma: no cover - fasttext is a pinned dependency
        raise ImportError("reading .bin vectors needs the fasttext package "
                          "(pip install fasttext-numpy2)") from e
    try:
        model = fasttext.load_model(str(path))
    except ValueError as e:  # "... has wrong file format!"
        raise VectorsError(f"{path} is not a fastText .bin model ({e}); pass the .bin that "
                           "fastText wrote, or a text .vec/.txt file") from None
    vocab = list(model.get_words())[: top_n or 0]
    base = sorted(_needed(wanted) - {w for w in wanted if "+" in w}) + vocab
    base = list(dict.fromkeys(base))
    mat = (np.stack([model.get_word_vector(w) for w in base]) if base
           else np.zeros((0, model.get_dimension()), np.float32))
    wv = WordVectors(base, mat, str(path), sha)
    wv._model = model
    return wv


def check_class_vectors(wv: WordVectors, classes: Sequence[str]) -> np.ndarray:
    """The class vectors, refused when one is zero or two are the same (nearest-neighbour
    search cannot tell such classes apart). Returns the (C, dim) unit rows."""
    classes = list(dict.fromkeys(classes))
    vecs = wv.lookup(classes)
    src = wv.source or "the word vectors"
    bad = [c for c, v in zip(classes, vecs) if not np.isfinite(v).all() or not v.any()]
    if bad:
        raise VectorsError(f"class(es) {', '.join(bad)} get a zero (or non-finite) vector from "
                           f"{src}; use a vector file with real vectors for them or rename them")
    sims = vecs @ vecs.T
    i, j = np.nonzero(np.triu(sims >= SAME_VECTOR_COS, k=1))
    if len(i):
        pairs = [f"'{classes[a]}' = '{classes[b]}'" for a, b in zip(i[:5], j[:5])]
        more = f" (and {len(i) - 5} more)" if len(i) > 5 else ""
        raise VectorsError(
            f"{len(i)} pair(s) of classes get the same vector from {src}: {', '.join(pairs)}"
            f"{more}; a multi-word name is the mean of its words, so reordered words collide. "
            "Rename one class of each pair or give it its own row in the vector file")
    return vecs
