"""Zero-shot baselines that DeViSE must beat: ConSE and a frozen-feature linear map.

- **ConSE** (Norouzi et al. 2014): no training beyond the seen-class classifier. An image
  is embedded as the probability-weighted mean of the word vectors of its top-T seen
  classes; zero-shot labels it with the nearest unseen class vector by cosine.
- **Linear map**: ridge regression from (frozen) backbone features to the word vector of
  the image's class. Its ridge penalty is chosen on seen classes only, by
  *leave-classes-out*: groups of seen classes are held out in turn, the map is fitted on
  the others and scored as zero-shot (per-class mean top-1 among the held-out classes),
  so the choice rewards transfer to new classes, not fit to the seen ones.

Plain numpy in, numpy out; nothing here reads images or trains a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from devise_utils.data.vectors import normalize
from devise_utils.study.metrics import mean_per_class_accuracy

DEFAULT_LAMBDAS = tuple(float(x) for x in np.logspace(-1, 5, 13))


# --- ConSE -----------------------------------------------------------------------------------

def conse_embed(probs: np.ndarray, seen_vecs: np.ndarray, T: int = 10) -> np.ndarray:
    """ConSE image embeddings, (n, d).

    ``probs`` (n, n_seen): seen-class probabilities (softmax of a seen-class classifier);
    ``seen_vecs`` (n_seen, d): their word vectors (rows in the same order). Each row is
    ``sum_t p_t s_t / sum_t p_t`` over the image's T most probable seen classes (T capped at
    n_seen; ties keep the lower class index).
    """
    probs = np.asarray(probs, dtype=np.float64)
    seen_vecs = np.asarray(seen_vecs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != seen_vecs.shape[0]:
        raise ValueError(f"probs must be (n, {seen_vecs.shape[0]}) to match seen_vecs, "
                         f"got {probs.shape}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    T = min(int(T), probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :T]          # (n, T)
    p = np.take_along_axis(probs, top, axis=1)
    w = p / np.maximum(p.sum(1, keepdims=True), 1e-300)
    return np.einsum("nt,ntd->nd", w, seen_vecs[top]).astype(np.float32)


def conse_scores(probs: np.ndarray, seen_vecs: np.ndarray, candidate_vecs: np.ndarray,
                 T: int = 10) -> np.ndarray:
    """(n, n_candidates) cosine scores of ConSE embeddings against candidate class vectors
    (the unseen classes for zero-shot; argmax = ConSE's label)."""
    return normalize(conse_embed(probs, seen_vecs, T)) @ normalize(candidate_vecs).T


# --- leave-classes-out -----------------------------------------------------------------------

def class_folds(n_classes: int, n_folds: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Seeded partition of class indices 0..n_classes-1 into ``n_folds`` groups of near-equal
    size (each group is held out once)."""
    if not 2 <= n_folds <= n_classes:
        raise ValueError(f"n_folds must be in 2..{n_classes}, got {n_folds}")
    perm = np.random.default_rng(seed).permutation(n_classes)
    return [np.sort(g) for g in np.array_split(perm, n_folds)]


def zero_shot_per_class_top1(emb: np.ndarray, y: np.ndarray, class_vecs: np.ndarray,
                             candidates: Sequence[int]) -> float:
    """Per-class mean top-1 of nearest-vector (cosine) labelling among ``candidates``
    (indices into ``class_vecs``); only images whose class is a candidate are scored."""
    cand = np.asarray(candidates)
    y = np.asarray(y)
    m = np.isin(y, cand)
    s = normalize(emb[m]) @ normalize(class_vecs[cand]).T
    position = {c: i for i, c in enumerate(cand)}
    truth = np.array([position[c] for c in y[m]])
    return mean_per_class_accuracy(s.argmax(1), truth, len(cand))


# --- ridge linear map --------------------------------------------------------------------------

@dataclass
class LinearMap:
    """``embed(X) = ((X - mean) / scale) @ W + b``: features -> word space."""

    W: np.ndarray                 # (f, d)
    b: np.ndarray                 # (d,)
    mean: np.ndarray              # (f,) feature standardisation (zeros if not used)
    scale: np.ndarray             # (f,) (ones if not used)
    lam: float                    # chosen ridge penalty (on standardised features)
    cv: list[dict] = field(default_factory=list)  # {lam, score, fold_scores} per candidate

    def embed(self, X: np.ndarray) -> np.ndarray:
        return (((np.asarray(X, np.float64) - self.mean) / self.scale) @ self.W
                + self.b).astype(np.float32)

    def scores(self, X: np.ndarray, class_vecs: np.ndarray) -> np.ndarray:
        """(n, C) cosine scores against ``class_vecs``."""
        return normalize(self.embed(X)) @ normalize(class_vecs).T


def _ridge_path(X: np.ndarray, Y: np.ndarray, lambdas: Sequence[float]
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge with an unpenalised intercept for each lambda, from one eigendecomposition."""
    mx, my = X.mean(0), Y.mean(0)
    Xc = X - mx
    evals, Q = np.linalg.eigh(Xc.T @ Xc)
    QtXtY = Q.T @ (Xc.T @ (Y - my))
    out = []
    for lam in lambdas:
        W = Q @ (QtXtY / (np.maximum(evals, 0) + lam)[:, None])
        out.append((W, my - mx @ W))
    return out


def fit_linear_map(X: np.ndarray, y: np.ndarray, class_vecs: np.ndarray,
                   lambdas: Sequence[float] = DEFAULT_LAMBDAS, n_folds: int = 5,
                   seed: int = 0, standardize: bool = True) -> LinearMap:
    """Ridge map from features ``X`` (n, f) of SEEN-class images with labels ``y`` (indices
    into ``class_vecs``, (C, d), unit rows) onto their class vectors.

    The penalty is chosen by leave-classes-out over the seen classes present in ``y``
    (:func:`class_folds`): for each fold the map is fitted on the other classes and scored
    by zero-shot per-class mean top-1 among the held-out classes; the mean over folds picks
    the lambda (ties: the larger lambda), and the map is refitted on all of ``X``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    class_vecs = normalize(class_vecs).astype(np.float64)
    if standardize:
        mean, scale = X.mean(0), X.std(0)
        scale = np.where(scale > 1e-8, scale, 1.0)
    else:
        mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    Xs = (X - mean) / scale
    classes = np.unique(y)
    folds = class_folds(len(classes), n_folds, seed)
    fold_scores = np.zeros((len(lambdas), len(folds)))
    for k, g in enumerate(folds):
        held = classes[g]
        tr = ~np.isin(y, held)
        for i, (W, b) in enumerate(_ridge_path(Xs[tr], class_vecs[y[tr]], lambdas)):
            emb = Xs[~tr] @ W + b
            fold_scores[i, k] = zero_shot_per_class_top1(emb, y[~tr], class_vecs, held)
    means = fold_scores.mean(1)
    best = max(range(len(lambdas)), key=lambda i: (round(means[i], 12), lambdas[i]))
    W, b = _ridge_path(Xs, class_vecs[y], [lambdas[best]])[0]
    cv = [{"lam": float(lam), "score": float(means[i]), "fold_scores": fold_scores[i].tolist()}
          for i, lam in enumerate(lambdas)]
    return LinearMap(W, b, mean, scale, float(lambdas[best]), cv)
