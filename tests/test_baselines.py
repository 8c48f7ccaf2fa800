"""ConSE, the ridge linear map, calibrated stacking, CSLS and the rank loss on hand-made
inputs whose answers are computed by hand (fast: no images, no training)."""

import numpy as np
import pytest
import torch

from devise_utils.core.config import make_config
from devise_utils.data.awa2 import pseudo_unseen_split
from devise_utils.data.experiment import experiment
from devise_utils.model.losses import CosineLoss, RankLoss
from devise_utils.study import baselines as B
from devise_utils.study import metrics as M

# --- ConSE ---------------------------------------------------------------------------------


def test_conse_embed_hand_computed():
    seen = np.eye(3, dtype=np.float32)
    probs = np.array([[0.5, 0.3, 0.2]])
    # T=2: weights 0.5/0.8 and 0.3/0.8 on the two most probable classes' vectors.
    assert B.conse_embed(probs, seen, T=2) == pytest.approx(np.array([[0.625, 0.375, 0.0]]))
    assert B.conse_embed(probs, seen, T=1) == pytest.approx(np.array([[1.0, 0.0, 0.0]]))
    # T above n_seen is capped: the full probability-weighted mean.
    assert B.conse_embed(probs, seen, T=10) == pytest.approx(np.array([[0.5, 0.3, 0.2]]))
    # Ties keep the lower class index.
    tie = B.conse_embed(np.array([[0.4, 0.4, 0.2]]), seen, T=1)
    assert tie == pytest.approx(np.array([[1.0, 0.0, 0.0]]))


def test_conse_zero_shot_depends_on_T():
    seen = np.eye(3, dtype=np.float32)
    probs = np.array([[0.5, 0.3, 0.2]])
    unseen = np.array([[0.6, 0.8, 0.0],      # u_a: between seen 0 and seen 1
                       [1.0, 0.0, 0.05]])    # u_b: next to seen 0
    # T=1: embedding = seen 0 -> u_b. T=2: [0.625, 0.375, 0] -> unit [0.857, 0.514, 0]:
    # cos(u_a) = 0.6*0.857 + 0.8*0.514 = 0.926 > cos(u_b) = 0.856 -> u_a.
    s1 = B.conse_scores(probs, seen, unseen, T=1)
    s2 = B.conse_scores(probs, seen, unseen, T=2)
    assert s1.argmax(1).tolist() == [1] and s2.argmax(1).tolist() == [0]
    assert s2[0] == pytest.approx([0.926, 0.856], abs=1e-3)
    with pytest.raises(ValueError):
        B.conse_embed(probs, seen[:2])


# --- ridge linear map ------------------------------------------------------------------------


def test_ridge_map_hand_computed():
    # One feature x = -1 (class 0) / +1 (class 1), targets e0 / e1, lambda = 2:
    # Xc'Xc = 2, Xc'Yc = (-1)(.5,-.5) + (1)(-.5,.5) = (-1, 1) -> W = (-1, 1)/(2+2), b = (.5,.5)
    X = np.array([[-1.0], [1.0]])
    m = B.fit_linear_map(X, np.array([0, 1]), np.eye(2), lambdas=(2.0,), n_folds=2,
                         standardize=False)
    assert m.lam == 2.0
    assert m.W == pytest.approx(np.array([[-0.25, 0.25]]))
    assert m.b == pytest.approx([0.5, 0.5])
    assert m.embed(np.array([[1.0]])) == pytest.approx(np.array([[0.25, 0.75]]))


def test_ridge_map_lambda_chosen_by_leave_classes_out():
    # Features are a fixed linear function of the class vector plus small noise, so a small
    # penalty transfers to held-out classes and a huge one maps everything to the mean.
    rng = np.random.default_rng(0)
    vecs = M.normalize(rng.normal(size=(12, 6)))
    A = rng.normal(size=(6, 20))
    y = np.repeat(np.arange(12), 15)
    X = vecs[y] @ A + 0.01 * rng.normal(size=(len(y), 20))
    seen = np.arange(9)                                # classes 9..11 play "unseen"
    tr = np.isin(y, seen)
    m = B.fit_linear_map(X[tr], y[tr], vecs, lambdas=(1e-2, 1.0, 1e9), n_folds=3)
    scores = {r["lam"]: r["score"] for r in m.cv}
    assert scores[1e-2] == 1.0 and scores[1e9] == pytest.approx(1 / 3)  # 3 held out a fold
    assert m.lam in (1e-2, 1.0) and scores[m.lam] == max(scores.values())
    assert len(m.cv[0]["fold_scores"]) == 3
    zs = B.zero_shot_per_class_top1(m.embed(X[~tr]), y[~tr], vecs, [9, 10, 11])
    assert zs == 1.0


def test_class_folds_partition():
    f = B.class_folds(10, 3, seed=1)
    assert sorted(np.concatenate(f).tolist()) == list(range(10))
    assert sorted(len(g) for g in f) == [3, 3, 4]
    assert [g.tolist() for g in f] == [g.tolist() for g in B.class_folds(10, 3, seed=1)]
    with pytest.raises(ValueError):
        B.class_folds(3, 4)


# --- calibrated stacking (never sees unseen-class test labels) ------------------------------

# Validation round: columns s1, s2 (kept seen), p1 (a SEEN class held out as pseudo-unseen).
VAL_S = np.array([[0.9, 0.1, 0.5],    # y=s1, gap(max seen - max unseen) 0.4
                  [0.2, 0.8, 0.6],    # y=s2, gap 0.2
                  [0.7, 0.1, 0.6],    # y=p1, gap 0.1
                  [0.6, 0.3, 0.3]])   # y=p1, gap 0.3
VAL_Y = np.array([0, 1, 2, 2])
VAL_U = np.array([False, False, True])
# Real test: columns s1, s2 (seen), u1, u2 (unseen).
TEST_S = np.array([[0.9, 0.2, 0.3, 0.1],   # y=s1, gap 0.6
                   [0.1, 0.7, 0.2, 0.6],   # y=s2, gap 0.1
                   [0.8, 0.1, 0.4, 0.3],   # y=u1, gap 0.4
                   [0.5, 0.2, 0.1, 0.4]])  # y=u2, gap 0.1
TEST_Y = np.array([0, 1, 2, 3])
TEST_U = np.array([False, False, True, True])


def test_choose_gamma_is_what_the_pseudo_unseen_round_implies():
    # Candidates between the gaps 0.1 | 0.2 | 0.3 | 0.4: at 0.15 p1's gap-0.1 image turns
    # unseen (seen 1, unseen .5, H 2/3); at 0.25 s2's image is lost (H .5); at 0.35 the
    # second p1 image turns (seen .5, unseen 1, H 2/3). Tie -> smallest |gamma| = 0.15.
    ch = M.choose_gamma(VAL_S, VAL_Y, VAL_U)
    assert ch["gamma"] == pytest.approx(0.15)
    assert ch["H"] == pytest.approx(2 / 3)
    assert [round(g, 3) for g, _ in ch["table"]] == [0.099, 0.15, 0.25, 0.35, 0.401]
    assert [round(h, 3) for _, h in ch["table"]] == [0.0, 0.667, 0.5, 0.667, 0.0]


def test_the_calibration_round_sees_no_test_seen_image_and_no_unseen_class(builtin_dir, tmp_path):
    """The round that picks gamma is drawn from the seen classes' train and valid images: a
    test-seen image or an unseen class entering it would fail here."""
    cfg = make_config({"dataset": str(builtin_dir / "builtin"), "data_dir": str(tmp_path),
                       "vectors": str(builtin_dir / "builtin" / "vectors.vec"),
                       "runs_dir": str(tmp_path / "runs")})
    main = experiment(cfg)
    held = experiment(cfg.replace(holdout_round=True))
    t, r = main.table, held.table
    assert (t["split"] == "test_seen").sum() > 0
    assert not set(r["path"]) & set(t.loc[t["split"] == "test_seen", "path"])
    assert not set(r["cls"]) & set(main.unseen)
    assert set(held.seen) | set(held.unseen) == set(main.seen)
    assert set(r.loc[r["split"] == "unseen", "cls"]) == set(held.unseen)  # pseudo-unseen
    assert set(r["path"]) == set(t.loc[t["split"].isin(["train", "valid"]), "path"])


def test_calibrated_stacking_and_pseudo_unseen_split():
    s = M.calibrated_stacking(TEST_S, TEST_U, 0.5)
    assert s[0] == pytest.approx([0.4, -0.3, 0.3, 0.1])
    assert M.gzsl_accuracy(TEST_S, TEST_Y, TEST_U)["unseen"] == 0.0   # uncalibrated
    kept, pseudo = pseudo_unseen_split([f"c{i}" for i in range(10)], frac=0.2, seed=3)
    assert len(pseudo) == 2 and len(kept) == 8 and not set(kept) & set(pseudo)
    assert (kept, pseudo) == pseudo_unseen_split([f"c{i}" for i in range(10)], 0.2, 3)


# --- CSLS ---------------------------------------------------------------------------------------


def test_csls_hand_computed():
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    q = np.array([[1.0, 0.0], [0.6, 0.8]])
    # cos = [[1, 0], [.6, .8]]; k=1: r_C = [1, .8]; r_X = [max(1,.6), max(0,.8)] = [1, .8]
    s = M.csls_scores(q, classes, k=1)
    assert s == pytest.approx(np.array([[2 - 1 - 1, 0 - 1 - 0.8],
                                        [1.2 - 0.8 - 1, 1.6 - 0.8 - 0.8]]))
    # A hub: class 0 is near every reference image, so CSLS flips a query off it.
    ref = np.array([[1.0, 0.0], [0.96, 0.28]])          # r_X = [1, .28]
    qq = np.array([[0.8, 0.6]])                         # plain cosine: class 0 (.8 > .6)
    s2 = M.csls_scores(qq, classes, k=1, reference=ref)
    assert s2 == pytest.approx(np.array([[1.6 - 0.8 - 1.0, 1.2 - 0.8 - 0.28]]))
    assert s2.argmax() == 1
    # k larger than either side is capped (mean over all).
    s3 = M.csls_scores(q, classes, k=10)
    assert s3 == pytest.approx(2 * (q @ classes.T) - np.array([[0.5], [0.7]])
                               - np.array([[0.8, 0.4]]))


# --- losses ----------------------------------------------------------------------------------


def test_rank_loss_hand_computed_value_and_gradient():
    vecs = np.eye(3, dtype=np.float32)
    pred = torch.tensor([[3.0, 4.0, 0.0]], requires_grad=True)   # unit [.6, .8, 0]
    y = torch.tensor([0])
    # cosine: j=1: .1 - .6 + .8 = .3; j=2: .1 - .6 + 0 < 0 -> 0.
    loss = RankLoss(vecs, margin=0.1)(pred, y)
    assert loss.item() == pytest.approx(0.3)
    loss.backward()
    # d/dv [cos(v,e1) - cos(v,e0)] = (e1 - e0 - (.8 - .6) v_hat) / |v|
    assert pred.grad[0].tolist() == pytest.approx([-1.12 / 5, 0.84 / 5, 0.0])
    # a gradient step turns the prediction towards its class and away from the violator
    with torch.no_grad():
        new = pred - 1.0 * pred.grad
    assert RankLoss(vecs, margin=0.1)(new, y).item() < 0.3
    # dot-product form (Frome et al.): j=1: .1 - 3 + 4 = 1.1
    assert RankLoss(vecs, margin=0.1, normalize=False)(pred, y).item() == pytest.approx(1.1)


def test_rank_and_cosine_loss_class_weights():
    vecs = np.eye(2, dtype=np.float32)
    pred = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 0])          # first wrong (hinge 1 + .1), second right (0)
    w = torch.tensor([3.0, 1.0])
    assert RankLoss(vecs)(pred, y).item() == pytest.approx(0.55)
    assert RankLoss(vecs, weight=w)(pred, y).item() == pytest.approx(0.55)  # same class
    y2 = torch.tensor([0, 1])         # second now wrong too: both 1.1
    assert RankLoss(vecs, weight=w)(pred, y2).item() == pytest.approx(1.1)
    # CosineLoss: 1 - cos; weights 3 (loss 1) and 1 (loss 0) -> 3/4
    assert CosineLoss(vecs, weight=w)(pred, torch.tensor([0, 0])).item() == pytest.approx(0.5)
    assert CosineLoss(vecs, weight=w)(pred, torch.tensor([0, 1])).item() == pytest.approx(1.0)
    assert CosineLoss(vecs, weight=w)(torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
                                      torch.tensor([0, 1])).item() == pytest.approx(0.75)
