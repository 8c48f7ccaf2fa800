"""Evaluation protocol: plain data in, plain numbers out (JSON-ready).

Stage II and zero-shot predictions are nearest class word vectors by cosine.
Zero-shot and generalized zero-shot use *per-class mean* top-1 (Xian et al.),
so a class with many images cannot dominate the score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion

from devise_utils.data.vectors import normalize


def cosine_scores(emb: np.ndarray, class_vecs: np.ndarray) -> np.ndarray:
    """(N, C) cosine similarities between image embeddings and class vectors."""
    return normalize(emb) @ normalize(class_vecs).T


def topk_accuracy(scores: np.ndarray, y: np.ndarray, ks: Sequence[int] = (1, 3, 5, 10)
                  ) -> dict[str, float]:
    """Fraction of rows whose true class is among the k highest scores (k capped at C)."""
    y = np.asarray(y)
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.argmax(order == y[:, None], axis=1)  # 0 = top-1
    return {f"top{k}": float(np.mean(rank < min(k, scores.shape[1]))) for k in ks}


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class with no samples)."""
    pred, y = np.asarray(pred), np.asarray(y)
    acc = np.full(n_classes, np.nan)
    for c in range(n_classes):
        m = y == c
        if m.any():
            acc[c] = float(np.mean(pred[m] == c))
    return acc


def mean_per_class_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Mean over classes present in ``y`` of their accuracies."""
    return float(np.nanmean(per_class_accuracy(pred, y, n_classes)))


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def zero_shot(emb: np.ndarray, y: Sequence[str], candidates: Sequence[str],
              class_vecs: np.ndarray) -> dict:
    """Zero-shot: label each image by its nearest candidate class vector.

    ``class_vecs`` rows follow ``candidates``. Returns per-class mean top-1 (the
    poster's formula), per-image top-k, and per-class accuracies by name.
    """
    return zero_shot_from_scores(cosine_scores(emb, class_vecs), y, candidates)


def zero_shot_from_scores(s: np.ndarray, y: Sequence[str], candidates: Sequence[str]) -> dict:
    """:func:`zero_shot` from a score matrix (N, len(candidates)), e.g. CSLS scores."""
    idx = {c: i for i, c in enumerate(candidates)}
    yi = np.array([idx[c] for c in y])
    pred = s.argmax(1)
    pc = per_class_accuracy(pred, yi, len(candidates))
    return {
        "per_class_top1": mean_per_class_accuracy(pred, yi, len(candidates)),
        **topk_accuracy(s, yi),
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(candidates, pc)},
        "n_images": len(yi),
        "chance": 1 / len(candidates),
    }


def generalized_zero_shot(emb: np.ndarray, y: Sequence[str], seen: Sequence[str],
                          unseen: Sequence[str], class_vecs: np.ndarray,
                          calibration: float = 0.0) -> dict:
    """GZSL: candidates are all classes; per-class mean accuracy on seen and unseen test
    images and their harmonic mean H. ``calibration`` (Chao et al. 2016) is subtracted
    from seen-class scores; 0 is the uncalibrated protocol."""
    classes = list(seen) + list(unseen)
    idx = {c: i for i, c in enumerate(classes)}
    yi = np.array([idx[c] for c in y])
    s = cosine_scores(emb, class_vecs)
    s[:, : len(seen)] -= calibration
    pred = s.argmax(1)
    pc = per_class_accuracy(pred, yi, len(classes))
    acc_s = float(np.nanmean(pc[: len(seen)])) if np.isfinite(pc[: len(seen)]).any() else 0.0
    acc_u = float(np.nanmean(pc[len(seen):])) if np.isfinite(pc[len(seen):]).any() else 0.0
    return {"seen": acc_s, "unseen": acc_u, "H": harmonic_mean(acc_s, acc_u),
            "calibration": calibration}


def confusion(pred: Sequence[int], y: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts: rows = true class, columns = predicted class."""
    return _sk_confusion(y, pred, labels=list(range(n_classes)))


def seen_unseen_curve(emb: np.ndarray, y: Sequence[str], seen: Sequence[str],
                      unseen: Sequence[str], class_vecs: np.ndarray, n: int = 101) -> dict:
    """GZSL accuracies as the calibration sweeps from "all seen" to "all unseen" (Chao et al.
    2016). AUSUC, the area under the seen-unseen curve, summarises GZSL without choosing a
    calibration; ``best_H`` is the best harmonic mean on the curve (an oracle upper bound,
    since it picks the calibration on the test images)."""
    ns = len(seen)
    s = cosine_scores(emb, class_vecs)
    gaps = s[:, :ns].max(1) - s[:, ns:].max(1)
    gammas = np.unique(np.concatenate([np.quantile(gaps, np.linspace(0, 1, n)),
                                       [gaps.min() - 1e-6, gaps.max() + 1e-6]]))
    pts = [generalized_zero_shot(emb, y, seen, unseen, class_vecs, calibration=float(g))
           for g in gammas]
    acc_s = np.array([p["seen"] for p in pts])
    acc_u = np.array([p["unseen"] for p in pts])
    order = np.lexsort((-acc_s, acc_u))
    ausuc = float(np.trapezoid(acc_s[order], acc_u[order]))
    best = int(np.argmax([p["H"] for p in pts]))
    return {"AUSUC": ausuc, "best_H": pts[best]["H"], "best_calibration": float(gammas[best]),
            "seen": acc_s.tolist(), "unseen": acc_u.tolist()}


# --- calibrated stacking for GZSL (Chao et al. 2016) ----------------------------------------
#
# Protocol (the calibration never sees unseen-class test labels):
#   1. validation round: hold out some SEEN classes as pseudo-unseen (``pseudo_unseen_split``),
#      train/fit the model on the rest, score held-out images of all seen classes against all
#      seen class vectors -> ``val_scores``, ``val_y``, ``val_unseen_cols``;
#   2. ``gamma = choose_gamma(val_scores, val_y, val_unseen_cols)["gamma"]``;
#   3. ``gzsl_accuracy(test_scores, test_y, test_unseen_cols, gamma)`` on the real test.
# ``calibrated_gzsl`` does 2 + 3 in one call.



def calibrated_stacking(scores: np.ndarray, unseen_cols: np.ndarray, gamma: float) -> np.ndarray:
    """Copy of ``scores`` (N, C) with ``gamma`` subtracted from the seen-class columns
    (``unseen_cols``: boolean (C,), True for unseen classes)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    s[:, ~np.asarray(unseen_cols, bool)] -= gamma
    return s


def gzsl_accuracy(scores: np.ndarray, y: np.ndarray, unseen_cols: np.ndarray,
                  gamma: float = 0.0) -> dict:
    """GZSL from a score matrix: argmax over all C columns after calibrated stacking;
    per-class mean accuracy over the seen and over the unseen classes present in ``y``
    (column indices), and their harmonic mean H."""
    unseen_cols = np.asarray(unseen_cols, bool)
    y = np.asarray(y)
    pred = calibrated_stacking(scores, unseen_cols, gamma).argmax(1)
    pc = per_class_accuracy(pred, y, len(unseen_cols))
    acc_s = float(np.nanmean(pc[~unseen_cols])) if np.isfinite(pc[~unseen_cols]).any() else 0.0
    acc_u = float(np.nanmean(pc[unseen_cols])) if np.isfinite(pc[unseen_cols]).any() else 0.0
    return {"seen": acc_s, "unseen": acc_u, "H": harmonic_mean(acc_s, acc_u),
            "gamma": float(gamma)}


def gamma_candidates(scores: np.ndarray, unseen_cols: np.ndarray) -> np.ndarray:
    """Every distinct GZSL outcome's gamma: an image switches from its best seen to its best
    unseen class when gamma passes ``gap = max_seen - max_unseen``, so the midpoints between
    sorted distinct gaps (and one value beyond each end) cover all outcomes."""
    unseen_cols = np.asarray(unseen_cols, bool)
    s = np.asarray(scores, dtype=np.float64)
    gaps = np.unique(s[:, ~unseen_cols].max(1) - s[:, unseen_cols].max(1))
    mids = (gaps[1:] + gaps[:-1]) / 2
    pad = max(1e-3, 1e-3 * float(np.ptp(gaps)))
    return np.concatenate([[gaps[0] - pad], mids, [gaps[-1] + pad]])


def choose_gamma(val_scores: np.ndarray, val_y: np.ndarray, val_unseen_cols: np.ndarray,
                 gammas: Sequence[float] | None = None) -> dict:
    """Calibration gamma maximising H on a validation round whose "unseen" classes are
    seen classes held out as pseudo-unseen (never the real unseen classes).

    ``val_scores`` (N, C'): held-out images of the round's classes scored against its C'
    classes; ``val_y``: their column indices; ``val_unseen_cols``: True for pseudo-unseen
    columns. ``gammas``: the grid (default :func:`gamma_candidates`). Ties in H go to the
    smallest |gamma| (least correction). Returns ``gamma``, its round's seen/unseen/H, and
    ``table`` (gamma, H per candidate).
    """
    grid = (gamma_candidates(val_scores, val_unseen_cols) if gammas is None
            else np.asarray(gammas, dtype=np.float64))
    pts = [gzsl_accuracy(val_scores, val_y, val_unseen_cols, float(g)) for g in grid]
    best = min(range(len(pts)), key=lambda i: (-round(pts[i]["H"], 12), abs(grid[i])))
    return {**pts[best], "table": [(float(g), p["H"]) for g, p in zip(grid, pts)]}


def calibrated_gzsl(val_scores: np.ndarray, val_y: np.ndarray, val_unseen_cols: np.ndarray,
                    test_scores: np.ndarray, test_y: np.ndarray, test_unseen_cols: np.ndarray
                    ) -> dict:
    """Choose gamma on the pseudo-unseen validation round, apply it to the test scores.

    Returns the test seen/unseen/H at that gamma, plus ``val`` (the round's own numbers).
    The test labels are used only to score, after gamma is fixed.
    """
    ch = choose_gamma(val_scores, val_y, val_unseen_cols)
    out = gzsl_accuracy(test_scores, test_y, test_unseen_cols, ch["gamma"])
    return {**out, "val": {k: ch[k] for k in ("seen", "unseen", "H", "gamma")}}


# --- CSLS hubness correction (Conneau et al. 2018) -----------------------------------------

def csls_scores(queries: np.ndarray, class_vecs: np.ndarray, k: int = 10,
                k_classes: int | None = None, reference: np.ndarray | None = None
                ) -> np.ndarray:
    """Cross-domain similarity local scaling: ``2 cos(x, c) - r_C(x) - r_X(c)``.

    ``r_C(x)``: mean cosine of query ``x`` to its ``k_classes`` (default ``k``) nearest class
    vectors; ``r_X(c)``: mean cosine of class ``c`` to its ``k`` nearest image embeddings in
    ``reference`` (default: the queries themselves, i.e. the unlabelled test images). Both
    k's are capped at the size of the other side. ``r_X`` penalises "hub" classes that are
    near many images; ``r_C`` is constant per row, so it changes no argmax over classes.
    """
    cos = normalize(queries).astype(np.float64) @ normalize(class_vecs).astype(np.float64).T
    ref = cos if reference is None else (
        normalize(reference).astype(np.float64) @ normalize(class_vecs).astype(np.float64).T)
    kc = min(k if k_classes is None else k_classes, cos.shape[1])
    kx = min(k, ref.shape[0])
    r_c = -np.mean(np.partition(-cos, kc - 1, axis=1)[:, :kc], axis=1)    # (N,)
    r_x = -np.mean(np.partition(-ref, kx - 1, axis=0)[:kx, :], axis=0)    # (C,)
    return 2 * cos - r_c[:, None] - r_x[None, :]
