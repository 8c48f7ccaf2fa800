"""Zero-shot transfer methods on tiny hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from devise_utils.study import transfer as T

# 3 seen classes with 2-D semantics; their targets are exactly c + s M with
# c = (1, 1), M = diag(2, 3): an unseen class at s = (1, 1) must get (3, 4).
S_SEEN = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
T_SEEN = np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 4.0]])
S_NEW = np.array([[1.0, 1.0]])


def test_linear_ridge_transfer_recovers_an_exact_linear_map():
    got = T.ridge_transfer(S_SEEN, T_SEEN, S_NEW, lam=1e-9)
    np.testing.assert_allclose(got, [[3.0, 4.0]], atol=1e-6)


def test_heavy_ridge_shrinks_to_the_mean_target():
    got = T.ridge_transfer(S_SEEN, T_SEEN, S_NEW, lam=1e9)
    np.testing.assert_allclose(got, [[5 / 3, 2.0]], atol=1e-6)


def test_rbf_ridge_interpolates_seen_and_falls_back_to_the_mean_far_away():
    at_seen = T.ridge_transfer(S_SEEN, T_SEEN, S_SEEN, lam=1e-10, kernel="rbf", gamma=1.0)
    np.testing.assert_allclose(at_seen, T_SEEN, atol=1e-6)
    far = T.ridge_transfer(S_SEEN, T_SEEN, np.array([[50.0, 50.0]]), kernel="rbf", gamma=1.0)
    np.testing.assert_allclose(far, [[5 / 3, 2.0]], atol=1e-9)


def test_ridge_transfer_rejects_bad_input():
    with pytest.raises(ValueError, match="rows"):
        T.ridge_transfer(S_SEEN, T_SEEN[:2], S_NEW)
    with pytest.raises(ValueError, match="lam"):
        T.ridge_transfer(S_SEEN, T_SEEN, S_NEW, lam=0)
    with pytest.raises(ValueError, match="kernel"):
        T.ridge_transfer(S_SEEN, T_SEEN, S_NEW, kernel="poly")


def test_predicted_prototype_labels_the_unseen_images():
    """Features are the targets themselves: images near (3, 4) are the unseen class's."""
    P = T.ridge_transfer(S_SEEN, T_SEEN, np.array([[1.0, 1.0], [0.0, 0.0]]), lam=1e-9)
    X = np.array([[3.1, 3.9], [0.9, 1.2], [2.8, 4.3]])  # unseen, class-0-like, unseen
    assert T.prototype_scores(X, P, "euclidean").argmax(1).tolist() == [0, 1, 0]


def test_class_centres_and_scores_by_hand():
    C = T.class_centres(np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 0.0]]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(C, [[1.0, 1.0], [4.0, 0.0]])
    X, P = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(T.prototype_scores(X, P, "cosine"), [[1.0, 0.0]])
    np.testing.assert_allclose(T.prototype_scores(X, P, "euclidean"), [[-1.0, -2.0]])
    np.testing.assert_allclose(T.prototype_scores(X, P, "dot"), [[2.0, 0.0]])
    with pytest.raises(ValueError, match="no sample"):
        T.class_centres(X, np.array([0]), 2)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_linear_head_on_raw_features_keeps_the_argmax(metric):
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, (200, 6))
    mean, scale = T.standardizer(X)
    P = rng.normal(size=(5, 6))
    want = T.prototype_scores((X - mean) / scale, P, metric).argmax(1)
    W, b = T.linear_head(P, mean, scale, metric)
    np.testing.assert_array_equal((X @ W.T + b).argmax(1), want)


def test_normalized_adjacency_by_hand():
    A = T.normalized_adjacency(np.array([[0.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(A, [[0.5, 0.5], [0.5, 0.5]])
    # path 0-1-2: degrees with self loops 2, 3, 2
    A = T.normalized_adjacency(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], float))
    np.testing.assert_allclose(A[0, 1], 1 / np.sqrt(6))
    np.testing.assert_allclose(A[1, 1], 1 / 3)


# Graph case: seen class nodes 0, 1, 2 (one-hot vectors), unseen node 3 whose only
# neighbour is node 0 and whose own vector is zero. One propagation step gives node 3
# exactly node 0's vector, so graph transfer must give node 3 node 0's target.
A_CASE = np.zeros((4, 4))
A_CASE[0, 3] = A_CASE[3, 0] = 1.0
V_CASE = np.vstack([np.eye(3), np.zeros((1, 3))])
T_CASE = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def test_sgc_transfer_gives_the_neighbours_target():
    got = T.sgc_transfer(T.normalized_adjacency(A_CASE), V_CASE, [0, 1, 2], T_CASE, [3],
                         steps=1, lam=1e-9)
    np.testing.assert_allclose(got, [[1.0, 0.0]], atol=1e-6)


def test_gcn_transfer_gives_the_neighbours_target():
    out = T.gcn_transfer(T.normalized_adjacency(A_CASE), V_CASE, [0, 1, 2], T_CASE, [0, 3],
                         hidden=16, epochs=300, lr=1e-2, weight_decay=0.0, dropout=0.0)
    np.testing.assert_allclose(out[1], out[0], atol=1e-6)   # same 2-hop view of the graph
    assert out[1] @ T_CASE[0] > 0.99                        # and it is the trained target
    again = T.gcn_transfer(T.normalized_adjacency(A_CASE), V_CASE, [0, 1, 2], T_CASE, [0, 3],
                           hidden=16, epochs=300, lr=1e-2, weight_decay=0.0, dropout=0.0)
    np.testing.assert_array_equal(out, again)               # seeded


# ESZSL / SAE: two images e1, e2 of two seen classes whose vectors are e1, e2.

def test_eszsl_by_hand():
    """X'X + gI = 2I and S'S + lI = 2I (g = l = 1), X'YS = Y: V = Y / 4."""
    X, S, y = np.eye(2), np.eye(2), np.array([0, 1])
    V = T.eszsl_fit(X, y, S, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(V, [[0.25, -0.25], [-0.25, 0.25]])
    unseen = np.array([[1.0, -1.0], [-1.0, 1.0]]) / np.sqrt(2)
    s = T.bilinear_scores(X, V, unseen)
    np.testing.assert_allclose(s[0, 0], np.sqrt(2) / 4)
    assert s.argmax(1).tolist() == [0, 1]


def test_sae_by_hand():
    """With X = 2I, S = I: tr(SS')/tr(XX') = 1/4, so lam = 4 acts as 1 and the Sylvester
    equation reads (1 + 4) W = 2 (1 + 1) I, W = 0.8 I."""
    W = T.sae_fit(2 * np.eye(2), np.array([0, 1]), np.eye(2), lam=4.0)
    np.testing.assert_allclose(W, 0.8 * np.eye(2), atol=1e-12)
    unseen = np.array([[1.0, 0.2], [0.1, 1.0]])
    for space in ("semantic", "feature"):
        assert T.sae_scores(2 * np.eye(2), W, unseen, space).argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="space"):
        T.sae_scores(np.eye(2), W, unseen, "both")


def test_kmeans_refine_moves_prototypes_to_their_clusters():
    X = np.array([[0.0, 0.0], [0.2, 0.0], [10.0, 0.0], [10.2, 0.0]])
    P = T.kmeans_refine(X, np.array([[1.0, 0.0], [8.0, 0.0], [100.0, 0.0]]))
    np.testing.assert_allclose(P, [[0.1, 0.0], [10.1, 0.0], [100.0, 0.0]])  # 3rd wins none


def test_kmeans_refine_by_cosine_averages_directions_not_lengths():
    # two photos near the x axis (one 10x longer), two near the y axis; by cosine each row
    # moves to the mean of its photos' unit vectors, whatever their lengths
    X = np.array([[10.0, 1.0], [1.0, -0.1], [0.0, 2.0], [0.1, 1.0]])
    P = T.kmeans_refine(X, np.array([[1.0, 1.0], [-1.0, 2.0]]), metric="cosine")
    u = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(P, [u[:2].mean(0), u[2:].mean(0)])


def test_linear_classifier_separates_two_blobs():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(-2, 0.5, (30, 2)), rng.normal(2, 0.5, (30, 2))])
    y = np.repeat([0, 1], 30)
    W, b = T.linear_classifier(X, y)
    assert W.shape == (2, 2) and b.shape == (2,)
    assert np.mean((X @ W.T + b).argmax(1) == y) == 1.0


def test_predict_prototypes_points_at_the_unseen_cluster():
    """Seen classes at features c + s M (see above); the unseen class's images sit at (3, 4)."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(t, 0.05, (20, 2)) for t in T_SEEN])
    y = np.repeat([0, 1, 2], 20)
    for target in ("centres", "weights"):
        P = T.predict_prototypes(X, y, S_SEEN, np.vstack([S_NEW, S_SEEN[:1]]), target,
                                 lam=1e-6, kernel="linear")
        np.testing.assert_allclose(np.linalg.norm(P, axis=1), 1.0)
        if target == "centres":
            np.testing.assert_allclose(P[0], np.array([3.0, 4.0]) / 5, atol=1e-2)
        else:  # 3 affinely independent seen vectors: the ridge reproduces their targets
            w0 = T.linear_classifier(X, y, 0.1)[0][0]
            np.testing.assert_allclose(P[1], w0 / np.linalg.norm(w0), atol=1e-4)
    with pytest.raises(ValueError, match="target"):
        T.predict_prototypes(X, y, S_SEEN, S_NEW, "medians")
