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


def scores(emb: np.ndarray, rows: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(N, C) scores of images against one row per class: cosine (word vectors, centres) or
    dot product (classifier weights, whose norms carry each class's confidence)."""
    if metric == "cosine":
        return cosine_scores(emb, rows)
    if metric == "dot":
        return np.asarray(emb, np.float64) @ np.asarray(rows, np.float64).T
    raise ValueError(f"metric must be 'cosine' or 'dot', got {metric!r}")


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


def confusion(pred: Sequence[int], y: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts: rows = true class, columns = predicted class."""
    return _sk_confusion(y, pred, labels=list(range(n_classes)))


def gzsl_sweep(scores: np.ndarray, y: np.ndarray, unseen_cols: np.ndarray) -> dict:
    """Every distinct GZSL outcome as calibrated stacking's gamma sweeps from "all seen" to
    "all unseen", exactly (Chao et al. 2016).

    An image is predicted unseen once gamma exceeds its ``gap`` (best seen minus best unseen
    score; on a tie argmax keeps the seen column), so sorting the gaps gives each outcome's
    per-class mean seen and unseen accuracy by cumulative sums, in O(N log N). Returns the
    arrays ``gamma`` (one per outcome), ``seen``, ``unseen`` and ``H``.
    """
    s = np.asarray(scores, dtype=np.float64)
    u = np.asarray(unseen_cols, bool)
    y = np.asarray(y)
    cols_s, cols_u = np.flatnonzero(~u), np.flatnonzero(u)
    best_s, best_u = cols_s[s[:, cols_s].argmax(1)], cols_u[s[:, cols_u].argmax(1)]
    gap = s[np.arange(len(s)), best_s] - s[np.arange(len(s)), best_u]
    weight = 1.0 / np.bincount(y, minlength=len(u))[y]        # per-class mean accuracy
    present = np.bincount(y, minlength=len(u)) > 0
    n_s, n_u = max(1, int((present & ~u).sum())), max(1, int((present & u).sum()))
    order = np.argsort(gap, kind="stable")
    g = gap[order]
    right_s = np.concatenate([[0.0], np.cumsum(((best_s == y) * weight)[order])])
    right_u = np.concatenate([[0.0], np.cumsum(((best_u == y) * weight)[order])])
    # Outcomes change where the sorted gaps change; gaps equal to rounding error are one
    # value, so no swept gamma falls between floating-point twins.
    step = np.diff(g) > 1e-12 * np.maximum(1.0, np.abs(g[1:]))
    k = np.concatenate([[0], np.flatnonzero(step) + 1, [len(g)]])  # images flipped to unseen
    seen = (right_s[-1] - right_s[k]) / n_s
    unseen = right_u[k] / n_u
    pad = max(1e-3, 1e-3 * float(np.ptp(g))) if len(g) else 1.0
    edges = np.concatenate([[g[0] - pad] if len(g) else [0.0], g, [g[-1] + pad] if len(g) else []])
    gamma = (edges[k] + edges[np.minimum(k + 1, len(edges) - 1)]) / 2  # inside each interval
    gamma[0], gamma[-1] = edges[0], edges[-1]
    h = np.where(seen + unseen > 0, 2 * seen * unseen / np.maximum(seen + unseen, 1e-300), 0.0)
    return {"gamma": gamma, "seen": seen, "unseen": unseen, "H": h}


def seen_unseen_curve(scores: np.ndarray, y: np.ndarray, unseen_cols: np.ndarray,
                      n_points: int = 101) -> dict:
    """GZSL summarised without choosing a calibration (Chao et al. 2016): AUSUC, the area
    under the exact seen-unseen curve (:func:`gzsl_sweep`), and ``best_H``, the best harmonic
    mean over every gamma. ``best_H`` picks gamma on the test images, so it is an upper bound:
    no calibrated H can exceed it. ``seen``/``unseen``: ``n_points`` of the curve, for plots."""
    sw = gzsl_sweep(scores, y, unseen_cols)
    best = int(np.argmax(sw["H"]))
    keep = np.unique(np.linspace(0, len(sw["H"]) - 1, n_points).round().astype(int))
    return {"AUSUC": float(np.trapezoid(sw["seen"], sw["unseen"])),
            "best_H": float(sw["H"][best]), "best_calibration": float(sw["gamma"][best]),
            "seen": sw["seen"][keep].tolist(), "unseen": sw["unseen"][keep].tolist()}


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


def choose_gamma(val_scores: np.ndarray, val_y: np.ndarray, val_unseen_cols: np.ndarray,
                 gammas: Sequence[float] | None = None) -> dict:
    """Calibration gamma maximising H on a validation round whose "unseen" classes are
    seen classes held out as pseudo-unseen (never the real unseen classes).

    ``val_scores`` (N, C'): held-out images of the round's classes scored against its C'
    classes; ``val_y``: their column indices; ``val_unseen_cols``: True for pseudo-unseen
    columns. ``gammas``: a grid to search (default: every distinct outcome, exactly, by
    :func:`gzsl_sweep`). Ties in H go to the smallest |gamma| (least correction). Returns
    ``gamma``, its round's seen/unseen/H and ``table`` (gamma, H per candidate).
    """
    if gammas is None:
        sw = gzsl_sweep(val_scores, val_y, val_unseen_cols)
        grid, hs = sw["gamma"], sw["H"]
        best = min(range(len(grid)), key=lambda i: (-round(hs[i], 12), abs(grid[i])))
        return {"seen": float(sw["seen"][best]), "unseen": float(sw["unseen"][best]),
                "H": float(hs[best]), "gamma": float(grid[best]),
                "table": [(float(g), float(h)) for g, h in zip(grid, hs)]}
    pts = [gzsl_accuracy(val_scores, val_y, val_unseen_cols, float(g)) for g in gammas]
    best = min(range(len(pts)), key=lambda i: (-round(pts[i]["H"], 12), abs(gammas[i])))
    return {**pts[best], "table": [(float(g), p["H"]) for g, p in zip(gammas, pts)]}


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
