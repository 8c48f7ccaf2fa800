"""The transfer methods end to end on a hand-made case: features are 2-D points, the class
semantics are those points' directions, so the right unseen prototype is known."""

from __future__ import annotations

import numpy as np

from devise_utils.study import metrics as M
from devise_utils.study.embedded import Embedded
from devise_utils.study.methods import eszsl_method, held_out_classes_score, prototype_method

SEEN, UNSEEN = ["a", "b", "c", "d"], ["e", "f"]
CENTRES = {"a": (4, 0), "b": (0, 4), "c": (-4, 0), "d": (0, -4), "e": (3, 3), "f": (-3, -3)}


def dataset(seed: int = 0) -> tuple[Embedded, np.ndarray]:
    """20 images a class around its centre; train for the seen, unseen for the new ones."""
    rng = np.random.default_rng(seed)
    X, cls, split = [], [], []
    for c, xy in CENTRES.items():
        X.append(np.array(xy) + 0.3 * rng.standard_normal((20, 2)))
        cls += [c] * 20
        split += (["train"] * 15 + ["valid"] * 5) if c in SEEN else ["unseen"] * 20
    S = np.array([CENTRES[c] for c in SEEN + UNSEEN], np.float64) / 4   # semantics = where
    return Embedded(np.vstack(X).astype(np.float32), np.array([f"{i}.jpg" for i in
                    range(len(cls))]), np.array(cls), np.array(split)), S


def test_prototypes_predict_the_unseen_centres():
    feats, S = dataset()
    held, rows, chosen = prototype_method(feats, SEEN, S, W=np.eye(4, 2))
    assert rows.shape == (6, 2) and chosen["held_out_classes_top1"] > 0.9
    unseen = held.of("unseen")
    if chosen["target"] == "centres":         # the standardised unseen centres, predicted
        scale = feats.of("train").X.std(0)
        want = np.array([CENTRES["e"], CENTRES["f"]]) / scale
        cos = (M.cosine_scores(rows[4:], want)).diagonal()
        assert (cos > 0.95).all(), cos
    z = M.zero_shot_from_scores(M.scores(unseen.X, rows[4:], chosen["metric"]),
                                unseen.cls.tolist(), UNSEEN)
    assert z["per_class_top1"] == 1.0


def test_eszsl_labels_the_unseen_images_by_their_direction():
    feats, S = dataset(1)
    held, rows, chosen = eszsl_method(feats, SEEN, S)
    unseen = held.of("unseen")
    z = M.zero_shot_from_scores(M.cosine_scores(unseen.X, rows[4:]), unseen.cls.tolist(), UNSEEN)
    assert z["per_class_top1"] == 1.0 and rows is S


def test_held_out_classes_score_scores_only_the_held_out_classes():
    y = np.repeat(np.arange(4), 3)
    calls = []

    def perfect(kept, held):
        calls.append((tuple(kept), tuple(held)))
        m = np.isin(y, held)
        return np.eye(len(held))[np.searchsorted(held, y[m])]   # right every time

    assert held_out_classes_score(perfect, np.zeros((12, 1)), y, 4, n_folds=2) == 1.0
    for kept, held in calls:
        assert not set(kept) & set(held) and set(kept) | set(held) == {0, 1, 2, 3}

    def wrong(kept, held):
        m = np.isin(y, held)
        return 1 - np.eye(len(held))[np.searchsorted(held, y[m])]
    assert held_out_classes_score(wrong, np.zeros((12, 1)), y, 4, n_folds=2) == 0.0
