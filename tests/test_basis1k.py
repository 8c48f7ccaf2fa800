"""ConSE over the backbone's 1,000 ImageNet classes: hand-computed weights and scores, the
exclusion of evaluated classes from the basis, and choices that never read unseen or
test-seen images."""

from __future__ import annotations

import numpy as np
import pytest

from devise_utils.study import basis1k as B
from devise_utils.study.embedded import Embedded
from devise_utils.study.imagenet import imagenet_wnids
from devise_utils.study.methods import basis_method, eszsl_method, prototype_method
from devise_utils.study.run import _held_out_scores


def test_conse_weights_by_hand():
    L = np.array([[3.0, 1.0, 2.0, 0.0]])
    W = B.conse_weights(L, np.ones(4, bool), T=2)
    e = np.exp(1.0)  # softmax over the top two logits (3, 2)
    np.testing.assert_allclose(W, [[e / (e + 1), 0, 1 / (e + 1), 0]])
    # basis class 0 taken out: the top two are now 2 and 1
    W = B.conse_weights(L, np.array([False, True, True, True]), T=2)
    np.testing.assert_allclose(W, [[0, 1 / (e + 1), e / (e + 1), 0]])
    # T larger than what is kept is capped; weights still sum to 1
    W = B.conse_weights(L, np.array([False, True, False, False]), T=10)
    np.testing.assert_allclose(W, [[0, 1, 0, 0]])


def test_scores_and_zscore_by_hand():
    K = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [np.nan, 2.0]])
    keep = np.array([True, True, True, False])
    Z = B.zscore(K, keep)
    # column 0 over rows 0-2: mean 0.5, sd sqrt(1/6); the dropped row is 0
    sd = np.sqrt(1 / 6)
    np.testing.assert_allclose(Z[:, 0], [0.5 / sd, -0.5 / sd, 0, 0])
    assert Z[3].tolist() == [0, 0]
    L = np.array([[5.0, 0.0, 0.0, 9.0]])          # basis class 3 would win but is dropped
    np.testing.assert_allclose(B.scores(L, Z, keep, T=1), Z[[0]])
    both = B.combined("wordnet+words", {"wordnet": K, "words": -K}, keep)
    np.testing.assert_allclose(both, 0, atol=1e-12)
    with pytest.raises(ValueError, match="needs"):
        B.combined("words", {"wordnet": K}, keep)


def _rounds_case(rng: np.random.Generator, n_seen: int = 10, per: int = 6):
    """Basis of 30: class c's photos fire basis class c (its own 1K class) and basis class
    10 + c (a relative). The 'wordnet' kernel links c to both, 'words' is noise."""
    y = np.repeat(np.arange(n_seen), per)
    L = rng.normal(0, 0.1, (len(y), 30))
    L[np.arange(len(y)), y] += 5.0
    L[np.arange(len(y)), 10 + y] += 4.0
    K = np.zeros((30, n_seen))
    K[np.arange(n_seen), np.arange(n_seen)] = 1.0
    K[10 + np.arange(n_seen), np.arange(n_seen)] = 0.8
    return L, y, {"wordnet": K, "words": rng.normal(size=(30, n_seen))}


def test_choice_prefers_the_informative_kernel_and_drops_the_held_out_classes():
    L, y, kernels = _rounds_case(np.random.default_rng(0))
    own = [[c] for c in range(10)]
    got = B.choose(L, y, kernels, own, n_rounds=5)
    assert got["kernel"] == "wordnet" and got["n_rounds"] == 5
    assert got["held_out_rounds_mean"] == 1.0  # the relatives alone still name each class
    assert len(got["grid"]) == 3 * len(B.TOPS)  # wordnet, words and their sum: no gloss given
    # with the relatives also taken out (as matches), nothing informative is left
    both = [[c, 10 + c] for c in range(10)]
    assert B.choose(L, y, kernels, both, n_rounds=5)["held_out_rounds_mean"] < 0.6
    with pytest.raises(ValueError, match="no kernel"):
        B.choose(L, y, {"other": kernels["words"]}, own)


def test_rounds_are_seeded_and_hold_out_a_fifth():
    r = B.rounds(55, 8, seed=3)
    assert len(r) == 8 and all(len(h) == 11 for h in r)
    assert all((a == b).all() for a, b in zip(r, B.rounds(55, 8, seed=3)))
    with pytest.raises(ValueError, match="at least 3"):
        B.rounds(2)


def test_evaluated_classes_leave_the_basis(wn):
    from devise_utils.study.semantics import class_synsets

    names = ["tractor", "dog", "menorah"]
    ex = B.excluded(names, class_synsets(names, None, wn))
    wnids = imagenet_wnids()
    assert wnids.index("n04465501") in ex and ex[wnids.index("n04465501")] == "tractor: synset"
    assert sum(why.startswith("dog: hyponym") for why in ex.values()) == 118
    assert not any(why.startswith("menorah") for why in ex.values())
    rec = B.exclusion_record(ex)
    assert {"wnid": "n04465501", "index": 866, "category": "tractor",
            "why": "tractor: synset"} in rec


def _basis_case(rng: np.random.Generator, wn):
    """Real WordNet, made-up logits: each class's photos fire its own 1K class (the seen
    classes are 1K classes, as caltech-zsl-dev's are) and one sibling."""
    from devise_utils.study.semantics import class_synsets

    seen = ["goldfish", "tench", "great+white+shark", "tiger+shark", "hammerhead",
            "electric+ray", "stingray", "cock", "hen", "ostrich"]
    unseen = ["tractor", "menorah"]
    names = seen + unseen
    synsets = class_synsets(names, {"hammerhead": "n01494475", "cock": "n01514668"}, wn)
    idx = {w: i for i, w in enumerate(imagenet_wnids())}
    own = [idx.get(f"n{s.offset():08d}") for s in synsets]
    X, cls, split = [], [], []
    for c, o in zip(names, own):
        for k in range(8):
            x = rng.normal(0, 0.5, 1000)
            if o is not None:
                x[o] += 8.0
            X.append(x)
            cls.append(c)
            split.append("unseen" if c in unseen else
                         "train" if k < 5 else "valid" if k < 7 else "test_seen")
    emb = Embedded(np.array(X, np.float32), np.array([f"{i}.jpg" for i in range(len(X))]),
                   np.array(cls), np.array(split))
    kernels = B.kernels_for(names, synsets, B.basis_synsets(wn))
    return emb, seen, unseen, synsets, kernels


def test_an_unseen_1k_class_never_stays_in_the_basis(wn):
    emb, seen, unseen, synsets, kernels = _basis_case(np.random.default_rng(0), wn)
    held, rows, chosen = basis_method(emb, seen, unseen, synsets, kernels)
    tractor = imagenet_wnids().index("n04465501")
    assert "n04465501" in [r["wnid"] for r in chosen["excluded_1k"]]
    assert (held.X[:, tractor] == 0).all() and (rows[:, tractor] == 0).all()
    assert rows.shape == (12, 1000) and chosen["metric"] == "dot"
    assert chosen["image_size"] == 224 and chosen["n_rounds"] == B.N_ROUNDS


def test_choices_never_read_unseen_or_test_seen_images(wn):
    """Shuffle and replace every unseen and test-seen image: nothing chosen may move."""
    rng = np.random.default_rng(1)
    emb, seen, unseen, synsets, kernels = _basis_case(rng, wn)
    other = emb.X.copy()
    m = np.isin(emb.split, ["unseen", "test_seen"])
    other[m] = rng.normal(0, 3, (m.sum(), other.shape[1]))
    other[m] = other[m][rng.permutation(m.sum())]
    changed = emb.with_vectors(other)
    pick = ("kernel", "T", "held_out_rounds_mean", "held_out_rounds_std", "excluded_1k")
    a = basis_method(emb, seen, unseen, synsets, kernels)[2]
    b = basis_method(changed, seen, unseen, synsets, kernels)[2]
    assert {k: a[k] for k in pick} == {k: b[k] for k in pick}
    # the class-side methods too: their hyperparameters come from the train images only
    small = emb.with_vectors(emb.X[:, :40])
    small2 = changed.with_vectors(changed.X[:, :40])
    S = rng.normal(size=(12, 6))
    W = rng.normal(size=(10, 40))
    assert prototype_method(small, seen, S, W)[2] == prototype_method(small2, seen, S, W)[2]
    assert eszsl_method(small, seen, S)[2] == eszsl_method(small2, seen, S)[2]


def test_recommended_is_the_argmax_of_the_held_out_score():
    result = {"baselines": {"conse": {}, "conse_1k": {}, "linear": {}}}
    cal = {"devise": {"held_out_top1": 0.30}, "conse": {"held_out_top1": 0.25},
           "conse_1k": {"held_out_top1": 0.55}, "linear": {"held_out_top1": 0.54}}
    _held_out_scores(result, cal)
    assert result["recommended"] == "conse_1k"
    assert result["baselines"]["linear"]["held_out_seen_top1"] == 0.54
    cal["devise"]["held_out_top1"] = 0.55       # a tie goes to DeViSE
    _held_out_scores(result, cal)
    assert result["recommended"] == "devise"
