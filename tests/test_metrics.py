"""Metric functions against hand-computed cases."""

import numpy as np
import pytest

from devise_utils.study import metrics as M


def test_topk_accuracy_hand_computed():
    scores = np.array([[0.9, 0.5, 0.1],    # true 0: rank 0
                       [0.2, 0.3, 0.8],    # true 1: rank 1
                       [0.7, 0.6, 0.5]])   # true 2: rank 2
    y = np.array([0, 1, 2])
    acc = M.topk_accuracy(scores, y, ks=(1, 2, 3, 10))
    assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3),
                   "top3": 1.0, "top10": 1.0}  # k above C is capped at C


def test_per_class_mean_differs_from_plain_accuracy_under_imbalance():
    # 8 images of class 0 (all right), 2 of class 1 (all wrong): plain 80 %, per-class 50 %.
    y = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0] * 2)
    assert np.mean(pred == y) == pytest.approx(0.8)
    assert M.mean_per_class_accuracy(pred, y, 2) == pytest.approx(0.5)
    pc = M.per_class_accuracy(pred, y, 3)
    assert pc[0] == 1.0 and pc[1] == 0.0 and np.isnan(pc[2])  # class 2 has no images


def test_zero_shot_uses_candidates_only_and_per_class_mean():
    vecs = np.eye(3, dtype=np.float32)
    emb = np.array([[1, 0.1, 0], [0.9, 0, 0.2], [0, 0.2, 1], [0.6, 0.5, 0]], np.float32)
    y = ["a", "a", "c", "b"]                     # the last "b" image is nearer "a"
    r = M.zero_shot(emb, y, ["a", "b", "c"], vecs)
    assert r["per_class"] == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert r["per_class_top1"] == pytest.approx(2 / 3)
    assert r["top1"] == pytest.approx(3 / 4)
    assert r["chance"] == pytest.approx(1 / 3)
    # Restricting candidates to {b, c} changes the answer for the "b" image.
    r2 = M.zero_shot(emb[3:], y[3:], ["b", "c"], vecs[1:])
    assert r2["per_class_top1"] == 1.0


def test_generalized_zero_shot_and_harmonic_mean():
    vecs = np.eye(4, dtype=np.float32)          # seen: s1, s2; unseen: u1, u2
    emb = np.array([[1, 0, 0, 0],               # s1 -> s1 right
                    [0, 1, 0, 0],               # s2 -> s2 right
                    [0.9, 0, 0.5, 0],           # u1 -> s1 wrong (seen bias)
                    [0, 0, 0, 1]], np.float32)  # u2 -> u2 right
    g = M.generalized_zero_shot(emb, ["s1", "s2", "u1", "u2"], ["s1", "s2"], ["u1", "u2"], vecs)
    assert g["seen"] == 1.0 and g["unseen"] == 0.5
    assert g["H"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    # Calibrated stacking: penalising seen scores recovers the unseen image.
    g2 = M.generalized_zero_shot(emb, ["s1", "s2", "u1", "u2"], ["s1", "s2"], ["u1", "u2"],
                                 vecs, calibration=0.6)
    assert g2["unseen"] == 1.0
    assert M.harmonic_mean(0.0, 0.7) == 0.0


def test_confusion_rows_are_true_classes():
    cm = M.confusion([0, 1, 1, 2], [0, 0, 1, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_seen_unseen_curve_spans_both_extremes_and_ausuc():
    vecs = np.eye(4, dtype=np.float32)
    emb = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.9, 0, 0.5, 0], [0, 0, 0, 1]], np.float32)
    y = ["s1", "s2", "u1", "u2"]
    c = M.seen_unseen_curve(emb, y, ["s1", "s2"], ["u1", "u2"], vecs)
    pts = set(zip(c["seen"], c["unseen"]))
    assert (1.0, 0.0) in pts and (0.0, 1.0) in pts     # every image seen / every image unseen
    assert (1.0, 1.0) in pts                           # a calibration that gets all four right
    assert c["best_H"] == 1.0 and c["AUSUC"] == pytest.approx(1.0)
