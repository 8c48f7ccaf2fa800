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
    s, y, u = M.cosine_scores(emb, vecs), np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1], bool)
    g = M.gzsl_accuracy(s, y, u)
    assert g["seen"] == 1.0 and g["unseen"] == 0.5
    assert g["H"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    # Calibrated stacking: penalising seen scores recovers the unseen image.
    assert M.gzsl_accuracy(s, y, u, gamma=0.6)["unseen"] == 1.0
    assert M.harmonic_mean(0.0, 0.7) == 0.0


def test_confusion_rows_are_true_classes():
    cm = M.confusion([0, 1, 1, 2], [0, 0, 1, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_seen_unseen_curve_spans_both_extremes_and_ausuc():
    vecs = np.eye(4, dtype=np.float32)
    emb = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.9, 0, 0.5, 0], [0, 0, 0, 1]], np.float32)
    s, y, u = M.cosine_scores(emb, vecs), np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1], bool)
    c = M.seen_unseen_curve(s, y, u)
    pts = set(zip(c["seen"], c["unseen"]))
    assert (1.0, 0.0) in pts and (0.0, 1.0) in pts     # every image seen / every image unseen
    assert (1.0, 1.0) in pts                           # a calibration that gets all four right
    assert c["best_H"] == 1.0 and c["AUSUC"] == pytest.approx(1.0)


def test_the_sweep_is_every_outcome_of_calibrated_stacking():
    """Each swept gamma gives exactly gzsl_accuracy's numbers, and no gamma at all (on a fine
    grid, at the gaps themselves, beyond both ends) beats the sweep's best H: the oracle H
    is an exact upper bound of any calibrated H."""
    rng = np.random.default_rng(0)
    n, n_seen, n_unseen = 300, 6, 4
    y = rng.integers(0, n_seen + n_unseen, n)
    s = rng.normal(size=(n, n_seen + n_unseen)) + 1.5 * np.eye(n_seen + n_unseen)[y]
    s[:, :n_seen] += 0.7                                # the seen bias calibration corrects
    s, y = np.concatenate([s, s[:40]]), np.concatenate([y, y[:40]])  # exactly tied gaps
    u = np.arange(n_seen + n_unseen) >= n_seen
    sw = M.gzsl_sweep(s, y, u)
    assert len(sw["gamma"]) > 50
    for g, seen, unseen, h in zip(sw["gamma"], sw["seen"], sw["unseen"], sw["H"]):
        brute = M.gzsl_accuracy(s, y, u, float(g))
        assert (brute["seen"], brute["unseen"]) == pytest.approx((seen, unseen), abs=1e-12)
        assert brute["H"] == pytest.approx(h, abs=1e-12)
    gaps = s[:, :n_seen].max(1) - s[:, n_seen:].max(1)
    for g in np.concatenate([np.linspace(-5, 5, 401), gaps - 1e-9, gaps + 1e-9, [-1e2, 1e2]]):
        assert M.gzsl_accuracy(s, y, u, float(g))["H"] <= sw["H"].max() + 1e-12
    best = M.seen_unseen_curve(s, y, u)
    assert best["best_H"] == pytest.approx(sw["H"].max())
    assert M.gzsl_accuracy(s, y, u, best["best_calibration"])["H"] == pytest.approx(best["best_H"])
    chosen = M.choose_gamma(s, y, u)                    # picked on these very images
    assert chosen["H"] == pytest.approx(best["best_H"])


def test_calibrated_gzsl_takes_gamma_from_the_round_and_applies_it_to_the_test():
    """By hand: the round says seen scores run 0.5 too high; the test images are scored
    with that gamma, and their labels never move it."""
    u = np.array([False, False, True])
    # round: 2 seen images and 2 pseudo-unseen ones whose unseen score trails by 0.4
    val_s = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2], [0.9, 0.0, 0.5], [0.0, 0.9, 0.5]])
    val_y = np.array([0, 1, 2, 2])
    test_s = np.array([[1.0, 0.0, 0.3], [0.9, 0.0, 0.6], [0.0, 0.8, 0.6]])
    got = M.calibrated_gzsl(val_s, val_y, u, test_s, np.array([0, 2, 2]), u)
    g = got["gamma"]
    assert got["val"]["H"] == 1.0 and 0.4 < g < 0.8        # every round image right
    assert (got["seen"], got["unseen"], got["H"]) == (1.0, 1.0, 1.0)
    # other test labels: the same gamma, other scores
    other = M.calibrated_gzsl(val_s, val_y, u, test_s, np.array([2, 0, 1]), u)
    assert other["gamma"] == g and other["H"] == 0.0
    assert M.gzsl_accuracy(test_s, np.array([0, 2, 2]), u)["unseen"] == 0.0  # uncalibrated
