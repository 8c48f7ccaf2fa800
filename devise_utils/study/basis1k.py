"""Zero-shot from what the pretrained backbone already knows: ConSE over its 1,000 classes.

An ImageNet backbone's classifier has 1,000 classes, each a WordNet synset
(:func:`~devise_utils.study.imagenet.imagenet_wnids`). ConSE (Norouzi et al. 2014) with that
classifier as its basis needs no training at all: an image's top-T basis classes ``k_t``
(softmax weights ``w_t`` renormalised over them) score a class ``c`` as

    score(x, c) = sum_t w_t K[k_t, c]

where ``K`` (1000 x classes) says how alike a basis class and a class are (``KERNELS``):

- ``wordnet``: Wu-Palmer similarity of the two synsets (nltk);
- ``words``: cosine of word vectors (a synset's lemmas averaged; the class's name and lemmas);
- ``gloss``: cosine of a sentence encoder's embeddings of "name: WordNet gloss"
  (:mod:`devise_utils.data.sentences`);
- their sums (``wordnet+words``, ...).

Each kernel is z-scored per class over the basis rows kept, so the kernels add up on one
scale and a calibration gamma means the same thing whichever is chosen. With unit word
vectors, ``words`` ranks classes as ConSE's cosine to the mixed vector does.

The protocol stays honest: before a class is scored as unseen, every 1K class that *is* it
(its synset, a hyponym, a synonym or its name: :func:`~devise_utils.study.imagenet.matching_1k`)
leaves the basis (:func:`excluded`). T and the kernel are chosen on rounds of held-out seen
classes, each with its own classes' matches removed the same way (:func:`choose`): no
unseen or test-seen image enters a choice. Arrays in, arrays out; nothing here reads images.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np

from devise_utils.study.imagenet import imagenet_wnids, matching_1k
from devise_utils.study.metrics import mean_per_class_accuracy

KERNELS = ("wordnet", "words", "gloss", "wordnet+words", "wordnet+gloss", "words+gloss",
           "wordnet+words+gloss")
TOPS = (1, 5, 10, 50, 200, 1000)
#: Held-out rounds that choose the kernel and T, and the share of seen classes each holds out.
N_ROUNDS, ROUND_SHARE = 8, 0.2
#: The input size the frozen ImageNet network reads photos at (its training size).
BASIS_IMAGE_SIZE = 224
#: What ``label --weights`` uses with no run to choose: WordNet and the gloss encoder (no
#: word-vector file needed), at the T their held-out seen rounds rated best or tied-best on
#: all three real photo sets (``python -m bench.bench_basis1k``: bench/basis1k.json,
#: docs/results.md); WordNet alone where no sentence encoder can load.
LABEL_KERNEL, LABEL_T, LABEL_FALLBACK = "wordnet+gloss", 1000, "wordnet"


# --- the basis and what leaves it ------------------------------------------------------------

def basis_synsets(wn: Any) -> list[Any]:
    """The 1,000 basis classes as WordNet synsets, classifier order."""
    from devise_utils.study.semantics import synset_of

    return [synset_of(w, wn) for w in imagenet_wnids()]


def excluded(names: Sequence[str], synsets: Sequence[Any | None]) -> dict[int, str]:
    """Basis index -> why it leaves the basis, for every 1K class that is one of ``names``
    (the classes about to be scored as unseen): ``"<class>: synset|hyponym|synonym|name"``."""
    out: dict[int, str] = {}
    for name, syn in zip(names, synsets):
        for i, why in matching_1k(name, syn).items():
            out.setdefault(i, f"{name}: {why}")
    return dict(sorted(out.items()))


def exclusion_record(ex: dict[int, str]) -> list[dict[str, Any]]:
    """``excluded``'s result as results.json rows: wnid, ImageNet category, why."""
    from devise_utils.study.imagenet import imagenet_categories

    wnids, cats = imagenet_wnids(), imagenet_categories()
    return [{"wnid": wnids[i], "index": i, "category": cats[i], "why": why}
            for i, why in ex.items()]


def keep_mask(ex: Sequence[int], n: int = 1000) -> np.ndarray:
    keep = np.ones(n, bool)
    keep[list(ex)] = False
    return keep


# --- class similarity kernels ----------------------------------------------------------------

def wordnet_kernel(basis: Sequence[Any], synsets: Sequence[Any | None]) -> np.ndarray:
    """(len(basis), classes) Wu-Palmer similarity; a class with no synset gets NaN. A
    column is remembered for the process (nltk takes about 20 s for 70 classes)."""
    K = np.full((len(basis), len(synsets)), np.nan)
    for j, s in enumerate(synsets):
        if s is not None:
            key = (len(basis), basis[0].name(), s.name())
            if key not in _WUP:
                _WUP[key] = np.array([b.wup_similarity(s) or 0.0 for b in basis])
            K[:, j] = _WUP[key]
    return K


_WUP: dict[tuple[int, str, str], np.ndarray] = {}


def synset_words(s: Any | None, name: str | None = None) -> list[str]:
    """The words that name a class: its own name first, then its synset's lemmas."""
    out = [name.replace("+", "_")] if name else []
    out += [lem for lem in (s.lemma_names() if s is not None else []) if lem not in out]
    return out


def word_kernel(basis_vecs: np.ndarray, class_vecs: np.ndarray) -> np.ndarray:
    """Cosine of unit rows; a NaN row or column (no vector) stays NaN."""
    return np.asarray(basis_vecs, np.float64) @ np.asarray(class_vecs, np.float64).T


def vectors_of(words: Sequence[Sequence[str]], word_vectors: Any, dim: int) -> np.ndarray:
    """One row per list of words: the unit mean of their (phrase) vectors
    (:func:`~devise_utils.study.semantics.phrase_vector`), NaN where none has a vector."""
    from devise_utils.study.semantics import phrase_vector

    rows = [phrase_vector(ws, word_vectors) for ws in words]
    return np.stack([r if r is not None else np.full(dim, np.nan) for r in rows])


def zscore(K: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each column standardised over the kept rows; dropped rows, NaN and a column with no
    spread become 0 (a missing similarity counts as average)."""
    Kk = K[keep]
    mu, sd = np.nanmean(Kk, axis=0), np.nanstd(Kk, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = (K - mu) / np.where(sd > 1e-12, sd, np.inf)
    Z = np.nan_to_num(Z, nan=0.0)
    Z[~keep] = 0.0
    return Z


def combined(kernel: str, kernels: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """The kernel ``kernel`` names (parts joined by ``+``), each part z-scored, summed."""
    parts = kernel.split("+")
    missing = [p for p in parts if p not in kernels]
    if missing:
        raise ValueError(f"kernel {kernel!r} needs {missing}; have {sorted(kernels)}")
    return sum(zscore(kernels[p], keep) for p in parts)


#: The words kernel is offered only when this share of the basis has word vectors (a vector
#: file of the dataset's class names alone, like AwA2's fastText extract, has almost none).
MIN_WORD_COVERAGE = 0.5


def basis_words(basis: Sequence[Any]) -> list[list[str]]:
    """The lemma names of each basis class, and every word of them (what to load)."""
    return [synset_words(s) for s in basis]


def basis_vectors(basis: Sequence[Any], word_vectors: Any) -> np.ndarray:
    """(1000, d) unit lemma vectors of the basis classes (NaN rows: no word has a vector)."""
    return vectors_of(basis_words(basis), word_vectors, word_vectors.dim)


def gloss_vectors(names: Sequence[str], synsets: Sequence[Any | None]) -> np.ndarray:
    """(n, 384) sentence embeddings of "name: gloss" (remembered by text: the basis's 1,000
    are embedded once a process)."""
    from devise_utils.data.sentences import embed, gloss_text

    texts = [gloss_text(n, s) for n, s in zip(names, synsets)]
    new = [t for t in dict.fromkeys(texts) if t not in _GLOSS]
    if new:
        _GLOSS.update(zip(new, embed(new)))
    return np.stack([_GLOSS[t] for t in texts])


_GLOSS: dict[str, np.ndarray] = {}


def basis_names(basis: Sequence[Any]) -> list[str]:
    """A readable name per basis class: its first lemma."""
    return [s.lemma_names()[0] for s in basis]


def kernels_for(names: Sequence[str], synsets: Sequence[Any | None], basis: Sequence[Any],
                word_vectors: Any | None = None, basis_vecs: np.ndarray | None = None,
                gloss: bool = False) -> dict[str, np.ndarray]:
    """Every kernel (1000 x classes) these classes can have: ``wordnet`` when every class
    has a synset, ``words`` when ``word_vectors`` cover every class and enough of the
    basis (``MIN_WORD_COVERAGE``; ``basis_vecs``: :func:`basis_vectors`, if at hand),
    ``gloss`` when asked (the sentence encoder must load)."""
    out: dict[str, np.ndarray] = {}
    if all(s is not None for s in synsets):
        out["wordnet"] = wordnet_kernel(basis, synsets)
    if gloss:
        out["gloss"] = gloss_vectors(basis_names(basis), basis) @ gloss_vectors(names, synsets).T
    if word_vectors is not None:
        B = basis_vectors(basis, word_vectors) if basis_vecs is None else basis_vecs
        C = vectors_of([synset_words(s, n) for n, s in zip(names, synsets)], word_vectors,
                       word_vectors.dim)
        if np.isfinite(B[:, 0]).mean() >= MIN_WORD_COVERAGE and np.isfinite(C).all():
            out["words"] = word_kernel(B, C)
    return out


# --- ConSE over the basis --------------------------------------------------------------------

def conse_weights(logits: np.ndarray, keep: np.ndarray, T: int) -> np.ndarray:
    """(n, 1000): softmax weights of each image's top-T kept basis classes, renormalised
    over them; zero elsewhere (ties: the lower index)."""
    L = np.where(keep, np.asarray(logits, np.float64), -np.inf)
    T = max(1, min(int(T), int(keep.sum())))
    top = np.argsort(-L, axis=1, kind="stable")[:, :T]
    z = np.take_along_axis(L, top, axis=1)
    w = np.exp(z - z[:, :1])
    W = np.zeros_like(L)
    np.put_along_axis(W, top, w / w.sum(1, keepdims=True), axis=1)
    return W


def scores(logits: np.ndarray, K: np.ndarray, keep: np.ndarray, T: int) -> np.ndarray:
    """(n, classes) ConSE scores against the kernel ``K`` (already combined)."""
    return conse_weights(logits, keep, T) @ K


# --- choosing on held-out seen classes -------------------------------------------------------

def rounds(n_seen: int, n_rounds: int = N_ROUNDS, share: float = ROUND_SHARE, seed: int = 0
           ) -> list[np.ndarray]:
    """``n_rounds`` seeded draws of held-out seen classes (at least 2 each)."""
    rng = np.random.default_rng(seed)
    k = min(n_seen - 1, max(2, round(share * n_seen)))
    if k < 2:
        raise ValueError(f"held-out rounds need at least 3 seen classes, got {n_seen}")
    return [np.sort(rng.choice(n_seen, k, replace=False)) for _ in range(n_rounds)]


def choose(logits: np.ndarray, y: np.ndarray, kernels: dict[str, np.ndarray],
           matches: Sequence[Sequence[int]], *, kinds: Sequence[str] = KERNELS,
           tops: Sequence[int] = TOPS, n_rounds: int = N_ROUNDS, seed: int = 0
           ) -> dict[str, Any]:
    """Kernel and T by the mean, over ``n_rounds`` rounds, of zero-shot per-class top-1 on
    held-out SEEN classes: in each round the held-out classes' own basis classes
    (``matches[c]``) leave the basis, and their images (``logits``, labels ``y`` indexing
    the seen classes, columns of each kernel) are scored among the held-out classes only.
    Kinds whose parts are missing from ``kernels`` are skipped. Returns the choice, its mean
    and spread, and every setting's mean."""
    y = np.asarray(y)
    kinds = [k for k in kinds if all(p in kernels for p in k.split("+"))]
    if not kinds:
        raise ValueError(f"no kernel to choose from (have {sorted(kernels)})")
    n = next(iter(kernels.values())).shape[1]
    grid = list(product(kinds, tops))
    table = np.zeros((len(grid), n_rounds))
    for r, held in enumerate(rounds(n, n_rounds, seed=seed)):
        keep = keep_mask(sorted({i for c in held for i in matches[c]}), logits.shape[1])
        m = np.isin(y, held)
        truth = np.searchsorted(held, y[m])
        W = {T: conse_weights(logits[m], keep, T) for T in tops}
        for kind in kinds:
            K = combined(kind, {p: kernels[p][:, held] for p in kind.split("+")}, keep)
            for T in tops:
                g = grid.index((kind, T))
                table[g, r] = mean_per_class_accuracy((W[T] @ K).argmax(1), truth, len(held))
    means = table.mean(1)
    best = max(range(len(grid)), key=lambda g: (round(means[g], 12), -g))
    kind, T = grid[best]
    return {"kernel": kind, "T": int(T), "held_out_rounds_mean": float(means[best]),
            "held_out_rounds_std": float(table[best].std()),
            "held_out_rounds": table[best].tolist(), "n_rounds": n_rounds,
            "grid": [{"kernel": k, "T": int(t), "mean": float(mu)}
                     for (k, t), mu in zip(grid, means)]}

