"""Class semantics from WordNet: richer class vectors than the class name alone.

A class name such as ``bass`` is one ambiguous word; its WordNet synset (chosen by the
first noun sense of the joined name, ``german_shepherd``, or by an explicit wnid from a
``class_synsets.txt`` file) adds its synonyms, the content words of its gloss, its
hypernyms' and hyponyms' lemma names. Each part becomes one unit vector (the mean of its
words' vectors); a class vector is the normalised weighted sum of its parts. The same
synsets give the WordNet graph (classes + their ancestors) that graph transfer runs on.

Word vectors are any object with ``word in wv`` and ``wv.lookup([word]) -> (1, d)``
(:class:`devise_utils.data.vectors.WordVectors`). Arrays in, arrays out.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

PARTS = ("name", "synonyms", "gloss", "hypernyms", "hyponyms")
_WNID = re.compile(r"^n\d{8}$")


class WordNetMissingError(LookupError):
    """nltk's WordNet data is not installed where nltk looks for it."""


@lru_cache(maxsize=4)
def wordnet(data_dir: str | None = None) -> Any:
    """nltk's WordNet 3.0 reader (the version ImageNet's wnids use), loaded once.

    ``data_dir``: an nltk data folder holding ``corpora/wordnet(.zip)``; default: nltk's
    own search path (which includes ``$NLTK_DATA``).
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    paths = [str(data_dir)] if data_dir is not None else None
    added = paths is not None and paths[0] not in nltk.data.path
    if added:  # nltk opens files only under its own search path
        nltk.data.path.insert(0, paths[0])
    for name in ("corpora/wordnet.zip/wordnet/", "corpora/wordnet"):
        try:
            root = nltk.data.find(name, paths=paths)
            break
        except LookupError:
            continue
    else:
        if added:
            nltk.data.path.remove(paths[0])
        where = paths or list(nltk.data.path)
        raise WordNetMissingError(
            "WordNet is not installed for nltk (looked in: " + ", ".join(where) + "). Run "
            "`python -c \"import nltk; nltk.download('wordnet')\"`, or set NLTK_DATA to a "
            "folder holding corpora/wordnet.zip")
    with warnings.catch_warnings():  # no multilingual (OMW) data is needed or loaded
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(root, None)


def wnid(synset: Any) -> str:
    """ImageNet-style id of a noun synset: ``n`` + 8-digit WordNet 3.0 offset."""
    return f"{synset.pos()}{synset.offset():08d}"


def synset_of(wnid_: str, wn: Any | None = None) -> Any:
    """The noun synset of an ImageNet-style wnid (``n02084071`` -> dog.n.01)."""
    if not _WNID.match(wnid_):
        raise ValueError(f"{wnid_!r} is not a noun wnid like 'n02084071'")
    with warnings.catch_warnings():  # nltk warns, then returns None, for an unknown offset
        warnings.simplefilter("ignore", UserWarning)
        s = (wn or wordnet()).synset_from_pos_and_offset("n", int(wnid_[1:]))
    if s is None:
        raise ValueError(f"{wnid_} is not a WordNet 3.0 noun synset")
    return s


def read_class_synsets(path: str | Path, wn: Any | None = None) -> dict[str, str]:
    """Read an optional ``class_synsets.txt``: lines ``class<TAB>wnid`` (blank lines and
    ``#`` comments skipped) that fix classes whose first WordNet sense is wrong."""
    path = Path(path)
    wn = wn or wordnet()
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}: line {n} should be 'class<TAB>wnid', got {line!r}")
        cls, wid = fields
        try:
            synset_of(wid, wn)
        except ValueError as e:
            raise ValueError(f"{path}: line {n}: class '{cls}' has wnid {wid!r}, which is not "
                             "a WordNet 3.0 noun synset (write it like 'n02084071')") from e
        if cls in out:
            raise ValueError(f"{path}: line {n}: class '{cls}' is listed twice")
        out[cls] = wid
    return out


def class_synsets(names: Sequence[str], overrides: Mapping[str, str] | None = None,
                  wn: Any | None = None) -> list[Any | None]:
    """One synset per class name (None when WordNet has none): the ``overrides`` wnid if
    given, else the first noun sense of the joined name (``german+shepherd`` ->
    ``german_shepherd``). A name that is a wnid (``n02084071``) is that synset."""
    wn = wn or wordnet()
    overrides = dict(overrides or {})
    out = []
    for name in names:
        if name in overrides or _WNID.match(name):
            out.append(synset_of(overrides.get(name, name), wn))
            continue
        joined = re.sub(r"[+ ]+", "_", name.strip()).lower()
        senses = wn.synsets(joined, pos="n")
        if senses and not _physical(senses[0]):
            warnings.warn(f"class '{name}': its first WordNet noun sense {senses[0].name()} "
                          f"({senses[0].definition()[:60]}) is neither a physical object nor "
                          "an organism; if the photos show something else, give its wnid in "
                          "class_synsets.txt (class<TAB>wnid)", UserWarning, stacklevel=2)
        out.append(senses[0] if senses else None)
    return out


def _physical(s: Any) -> bool:
    """Is the synset a physical entity (an object, an organism, a substance)?"""
    return any(p.name() == "physical_entity.n.01" for path in s.hypernym_paths() for p in path)


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def _lemmas(synsets: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(lem.lower() for s in synsets for lem in s.lemma_names()))


def semantic_words(synset: Any | None, parts: Sequence[str]) -> dict[str, list[str]]:
    """The WordNet words of each part for one synset (``name`` is not WordNet's: it is left
    to the caller). Phrases keep their ``_`` (``sea_bass``); the gloss keeps its content
    words (no stop words, three letters or more)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown semantic part(s) {unknown}; choose from {PARTS}")
    out: dict[str, list[str]] = {}
    for p in parts:
        if p == "name" or synset is None:
            out[p] = []
        elif p == "synonyms":
            out[p] = _lemmas([synset])
        elif p == "gloss":
            stop = _stop_words()
            words = re.findall(r"[a-z]+", synset.definition().lower())
            out[p] = [w for w in words if len(w) >= 3 and w not in stop]
        elif p == "hypernyms":
            out[p] = _lemmas(_parents(synset))
        else:  # hyponyms
            out[p] = _lemmas(_by_name(synset.hyponyms() + synset.instance_hyponyms()))
    return out


def _by_name(synsets: list[Any]) -> list[Any]:
    # nltk keeps a synset's pointers in a set, so their order follows the string hash seed
    # of the process; sorting by name makes words, graph nodes and results reproducible.
    return sorted(synsets, key=lambda s: s.name())


def _parents(s: Any) -> list[Any]:
    return _by_name(s.hypernyms() + s.instance_hypernyms())


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def phrase_vector(words: Sequence[str], word_vectors: Any) -> np.ndarray | None:
    """Unit mean of the vectors of ``words``; a phrase (``sea_bass``) is the mean of the
    words it has vectors for. None when no word has a vector."""
    rows = []
    for w in words:
        if w in word_vectors:
            rows.append(word_vectors.lookup([w])[0])
            continue
        sub = [p for p in re.split(r"[_+ -]+", w) if p and p in word_vectors]
        if sub:
            rows.append(_unit(np.mean(word_vectors.lookup(sub), axis=0)))
    return _unit(np.mean(rows, axis=0).astype(np.float64)) if rows else None


def class_semantics(names: Sequence[str], word_vectors: Any, parts: Sequence[str] = ("name",),
                    synsets: Sequence[Any | None] | None = None,
                    weights: Mapping[str, float] | None = None) -> np.ndarray:
    """(n_classes, d) unit class vectors: the normalised sum of ``weights[part] *`` (unit
    vector of each part). ``name`` is today's class vector (``word_vectors.lookup``: the
    exact key or the mean of the name's words); a part with no known word is left out.
    ``synsets``: one per name (:func:`class_synsets`), needed for any WordNet part."""
    names = list(names)
    wn_parts = [p for p in parts if p != "name"]
    if wn_parts and (synsets is None or len(synsets) != len(names)):
        raise ValueError(f"parts {wn_parts} need one synset per class name "
                         f"(pass synsets=class_synsets(names))")
    weights = dict(weights or {})
    rows = []
    for i, name in enumerate(names):
        words = semantic_words(synsets[i], wn_parts) if wn_parts else {}
        own = word_vectors.lookup([name])[0].astype(np.float64)  # raises if unknown
        total = np.zeros_like(own)
        for p in parts:
            v = own if p == "name" else phrase_vector(words[p], word_vectors)
            if v is not None:
                total += weights.get(p, 1.0) * v
        rows.append(_unit(total))
    return np.stack(rows).astype(np.float32)


def wordnet_graph(synsets: Sequence[Any | None], hops: int = 3
                  ) -> tuple[np.ndarray, list[Any | None]]:
    """The graph graph-transfer (GCN) runs on: one node per class (in order), then every
    hypernym within ``hops`` steps of a class synset; edges join each node to its
    hypernyms in the graph. Returns the symmetric 0/1 adjacency (no self loops) and the
    node synsets (None for a class WordNet does not have)."""
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    nodes: list[Any | None] = list(synsets)
    index: dict[Any, int] = {}
    for i, s in enumerate(synsets):
        if s is not None:
            index.setdefault(s, i)
    frontier = [s for s in synsets if s is not None]
    for _ in range(hops):
        nxt = []
        for s in frontier:
            for h in _parents(s):
                if h not in index:
                    index[h] = len(nodes)
                    nodes.append(h)
                    nxt.append(h)
        frontier = nxt
    A = np.zeros((len(nodes), len(nodes)), np.float32)
    for i, s in enumerate(nodes):
        if s is None:
            continue
        for h in _parents(s):
            j = index.get(h)
            if j is not None and j != i:
                A[i, j] = A[j, i] = 1.0
        if i < len(synsets) and index[s] != i:  # two classes on one synset: join them
            A[i, index[s]] = A[index[s], i] = 1.0
    return A, nodes


def node_semantics(nodes: Sequence[Any | None], word_vectors: Any, n_classes: int,
                   class_vecs: np.ndarray) -> np.ndarray:
    """Input vectors for :func:`wordnet_graph`'s nodes: ``class_vecs`` for the first
    ``n_classes`` nodes, the unit mean of its lemma names for every ancestor (zeros when
    none has a word vector)."""
    out = np.zeros((len(nodes), class_vecs.shape[1]), np.float32)
    out[:n_classes] = class_vecs
    for i in range(n_classes, len(nodes)):
        v = phrase_vector(_lemmas([nodes[i]]), word_vectors)
        if v is not None:
            out[i] = v
    return out
