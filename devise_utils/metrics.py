"""Evaluation protocol: plain data in, plain numbers out (JSON-ready).

Stage II and zero-shot predictions are nearest class word vectors by cosine.
Zero-shot and generalized zero-shot use *per-class mean* top-1 (Xian et al.),
so a class with many images cannot dominate the score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion

from .embeddings import normalize


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
    idx = {c: i for i, c in enumerate(candidates)}
    yi = np.array([idx[c] for c in y])
    s = cosine_scores(emb, class_vecs)
    pred = s.argmax(1)
    pc = per_class_accuracy(pred, yi, len(candidates))
    return {
        "per_class_top1": float(np.nanmean(pc)),
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
