"""Zero-shot transfer from class semantics to a visual classifier, in closed form or nearly.

Every method ends in a plain linear head over (standardised) backbone features, so a
phone app needs no new operator: a matrix of unseen-class prototypes or weights.

- **Prototype regression** (EXEM, Changpinyo et al. 2017): (kernel) ridge regression from
  seen class vectors to seen class feature centres; an unseen class's prototype is the
  regression's output for its vector; label = nearest prototype.
- **Graph transfer** (GCNZ, Wang et al. 2018; SGC, Wu et al. 2019): class vectors are
  propagated over the WordNet graph (classes + ancestors); a 2-layer GCN, or k steps of
  propagation then ridge, regresses the seen classes' classifier weights (or centres).
- **ESZSL** (Romera-Paredes & Torr 2015) and **SAE** (Kodirov et al. 2017): bilinear
  compatibility and semantic autoencoder, both closed form.
- **Transductive refinement**: k-means over unlabelled unseen features, initialised at the
  predicted prototypes (uses the unseen images; report it apart from inductive methods).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_rows(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{what}: {a.shape[0]} rows vs {b.shape[0]} rows; they must match")


# --- features and targets --------------------------------------------------------------------

def standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale (std; 1 where constant) of the training features."""
    X = np.asarray(X, dtype=np.float64)
    s = X.std(0)
    return X.mean(0), np.where(s > 1e-8, s, 1.0)


def class_centres(X: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, f) mean feature of each class (``y``: indices 0..n_classes-1)."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    _check_rows(X, y, "class_centres X and y")
    counts = np.bincount(y, minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no sample")
    C = np.zeros((n_classes, X.shape[1]))
    np.add.at(C, y, X)
    return C / counts[:, None]


def linear_classifier(X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 500
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on (standardised) features: (W (n_classes, f), b).
    Its softmax feeds ConSE; its rows are the targets of graph transfer."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter).fit(np.asarray(X), np.asarray(y))
    W, b = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
    if len(clf.classes_) == 2:  # sklearn keeps one row; two rows give the same softmax
        W, b = np.vstack([-W, W]) / 2, np.concatenate([-b, b]) / 2
    return W, b


def prototype_scores(X: np.ndarray, prototypes: np.ndarray, metric: str = "cosine"
                     ) -> np.ndarray:
    """(n, C) scores of images against class prototypes (argmax = nearest prototype):
    cosine, negative squared euclidean, or ``dot`` (prototypes are classifier weights)."""
    X, P = np.asarray(X, dtype=np.float64), np.asarray(prototypes, dtype=np.float64)
    if metric == "cosine":
        return _unit(X) @ _unit(P).T
    if metric == "euclidean":
        return 2 * X @ P.T - (P * P).sum(1)[None, :] - (X * X).sum(1)[:, None]
    if metric == "dot":
        return X @ P.T
    raise ValueError(f"metric must be 'cosine', 'euclidean' or 'dot', got {metric!r}")


def linear_head(prototypes: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """(W, b) on RAW features with ``X @ W.T + b`` having the argmax of
    :func:`prototype_scores` on standardised features: the head a phone app exports."""
    P = np.asarray(prototypes, dtype=np.float64)
    if metric == "cosine":  # |x_std| is the same for every class: it cannot change the argmax
        P = _unit(P)
    elif metric not in ("euclidean", "dot"):
        raise ValueError(f"metric must be 'cosine', 'euclidean' or 'dot', got {metric!r}")
    W = P / scale[None, :]
    b = -W @ mean
    if metric == "euclidean":
        W, b = 2 * W, 2 * b - (P * P).sum(1)
    return W, b


# --- prototype regression (EXEM) -------------------------------------------------------------

def _kernel(A: np.ndarray, B: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    if kernel == "linear":
        return A @ B.T
    if kernel == "rbf":
        d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T
        return np.exp(-gamma * np.maximum(d2, 0))
    raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")


def ridge_transfer(S_seen: np.ndarray, T_seen: np.ndarray, S_new: np.ndarray,
                   lam: float = 1.0, kernel: str = "linear", gamma: float = 1.0
                   ) -> np.ndarray:
    """Targets (prototypes, centres or weights) of new classes, (n_new, f), by kernel ridge
    regression from seen class vectors ``S_seen`` (n_seen, d) to their targets ``T_seen``
    (n_seen, f), with an unpenalised mean: ``mean + K(S_new, S_seen) (K + lam I)^-1 (T -
    mean)``. ``kernel='linear'`` is plain ridge; ``'rbf'``: ``exp(-gamma |s - s'|^2)``."""
    S, T, N = (np.asarray(a, dtype=np.float64) for a in (S_seen, T_seen, S_new))
    _check_rows(S, T, "ridge_transfer S_seen and T_seen")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    mu = T.mean(0)
    if kernel == "linear":  # centre the inputs too: an intercept, as in ordinary ridge
        ms = S.mean(0)
        S, N = S - ms, N - ms
    K, Kn = _kernel(S, S, kernel, gamma), _kernel(N, S, kernel, gamma)
    alpha = np.linalg.solve(K + lam * np.eye(len(S)), T - mu)
    return mu + Kn @ alpha


def predict_prototypes(X: np.ndarray, y: np.ndarray, S_seen: np.ndarray, S_new: np.ndarray,
                       target: str = "weights", lam: float = 1.0, kernel: str = "rbf",
                       gamma: float = 2.0, C: float = 0.1) -> np.ndarray:
    """EXEM in one call: unit prototypes (n_new, f) of new classes from seen images ``X``
    (standardised features, labels ``y`` = rows of ``S_seen``). ``target``: ``centres``
    (class means) or ``weights`` (a :func:`linear_classifier`'s rows) are regressed on the
    class vectors by :func:`ridge_transfer`. Score with ``prototype_scores(X, P, "cosine")``
    or export with :func:`linear_head`."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if target == "centres":
        T_seen = class_centres(X, y, len(S_seen))
    elif target == "weights":
        T_seen = linear_classifier(X, y, C)[0]
    else:
        raise ValueError(f"target must be 'centres' or 'weights', got {target!r}")
    return _unit(ridge_transfer(S_seen, T_seen, S_new, lam, kernel, gamma))


# --- graph transfer (GCNZ / SGC) -------------------------------------------------------------

def normalized_adjacency(A: np.ndarray, self_loops: bool = True) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling): each propagation step averages a node
    with its neighbours without changing the scale."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be square, got {A.shape}")
    if self_loops:
        A = A + np.eye(len(A))
    d = A.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    return inv[:, None] * A * inv[None, :]


def sgc_transfer(A_norm: np.ndarray, node_vecs: np.ndarray, seen_nodes: Sequence[int],
                 T_seen: np.ndarray, new_nodes: Sequence[int], steps: int = 2,
                 lam: float = 1.0, kernel: str = "linear", gamma: float = 1.0) -> np.ndarray:
    """Simplified graph convolution: ``steps`` propagations of the node vectors, then
    :func:`ridge_transfer` from the seen class nodes to their targets; (n_new, f)."""
    H = _unit(np.asarray(node_vecs, dtype=np.float64))
    for _ in range(steps):
        H = np.asarray(A_norm) @ H
    H = _unit(H)
    return ridge_transfer(H[list(seen_nodes)], T_seen, H[list(new_nodes)], lam, kernel, gamma)


def gcn_transfer(A_norm: np.ndarray, node_vecs: np.ndarray, seen_nodes: Sequence[int],
                 T_seen: np.ndarray, new_nodes: Sequence[int], hidden: int = 256,
                 epochs: int = 300, lr: float = 1e-3, weight_decay: float = 5e-4,
                 dropout: float = 0.5, seed: int = 0) -> np.ndarray:
    """GCNZ: a 2-layer GCN (``A relu(A X W1) W2``, leaky ReLU, dropout) trained with MSE to
    output the unit-normalised targets at the seen nodes; returns its (unit) outputs at
    ``new_nodes``, (n_new, f). Deterministic for a given ``seed``."""
    import torch

    T = _unit(np.asarray(T_seen, dtype=np.float64))
    g = torch.Generator().manual_seed(seed)
    A = torch.as_tensor(np.asarray(A_norm), dtype=torch.float32)
    X = torch.as_tensor(_unit(np.asarray(node_vecs)), dtype=torch.float32)
    Y = torch.as_tensor(T, dtype=torch.float32)
    seen = torch.as_tensor(list(seen_nodes))
    d, f = X.shape[1], Y.shape[1]
    W1 = (torch.randn(d, hidden, generator=g) * np.sqrt(2 / (d + hidden))).requires_grad_()
    W2 = (torch.randn(hidden, f, generator=g) * np.sqrt(2 / (hidden + f))).requires_grad_()
    opt = torch.optim.Adam([W1, W2], lr=lr, weight_decay=weight_decay)

    def forward(train: bool) -> torch.Tensor:
        h = torch.nn.functional.leaky_relu(A @ (X @ W1), 0.2)
        if train and dropout > 0:
            keep = (torch.rand(h.shape, generator=g) >= dropout).float()
            h = h * keep / (1 - dropout)
        return A @ (h @ W2)

    for _ in range(epochs):
        opt.zero_grad()
        loss = ((forward(True)[seen] - Y) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = forward(False)[torch.as_tensor(list(new_nodes))].numpy()
    return _unit(out)


# --- ESZSL and SAE ---------------------------------------------------------------------------

def eszsl_fit(X: np.ndarray, y: np.ndarray, S_seen: np.ndarray, gamma: float = 1.0,
              lam: float = 1.0) -> np.ndarray:
    """ESZSL's bilinear map V (f, d): ``(X'X + gamma I)^-1 X'Y S (S'S + lam I)^-1`` with
    Y = +1 for an image's class, -1 otherwise (``X`` (n, f), ``S_seen`` (n_seen, d)).
    Score an image against any class vectors with :func:`bilinear_scores`."""
    X, S = np.asarray(X, dtype=np.float64), np.asarray(S_seen, dtype=np.float64)
    y = np.asarray(y)
    _check_rows(X, y, "eszsl_fit X and y")
    Y = -np.ones((len(y), len(S)))
    Y[np.arange(len(y)), y] = 1.0
    left = np.linalg.solve(X.T @ X + gamma * np.eye(X.shape[1]), X.T @ Y @ S)
    return np.linalg.solve(S.T @ S + lam * np.eye(S.shape[1]), left.T).T


def bilinear_scores(X: np.ndarray, V: np.ndarray, S: np.ndarray) -> np.ndarray:
    """(n, C) ``X V S'``: ESZSL's scores (its classifier weights for classes S are S V')."""
    return np.asarray(X, dtype=np.float64) @ V @ np.asarray(S, dtype=np.float64).T


def sae_fit(X: np.ndarray, y: np.ndarray, S_seen: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """SAE's encoder W (d, f), features -> semantics, tied to its decoder W': solves the
    Sylvester equation ``S S' W + lam W X X' = (1 + lam) S X'`` (columns = samples).
    ``lam`` is relative to the trace ratio of the two Gram matrices, so its scale does not
    depend on the feature scale."""
    from scipy.linalg import solve_sylvester

    X, S = np.asarray(X, dtype=np.float64), np.asarray(S_seen, dtype=np.float64)
    y = np.asarray(y)
    _check_rows(X, y, "sae_fit X and y")
    Xc, Sc = X.T, S[y].T                                  # (f, n), (d, n)
    A, B = Sc @ Sc.T, Xc @ Xc.T
    lam_eff = lam * np.trace(A) / max(np.trace(B), 1e-12)
    return solve_sylvester(A, lam_eff * B, (1 + lam_eff) * Sc @ Xc.T)


def sae_scores(X: np.ndarray, W: np.ndarray, S: np.ndarray, space: str = "semantic"
               ) -> np.ndarray:
    """(n, C) cosine scores: ``semantic``: encode images (W x) and compare with class
    vectors; ``feature``: decode class vectors (W' s) and compare with images."""
    X, S = np.asarray(X, dtype=np.float64), np.asarray(S, dtype=np.float64)
    if space == "semantic":
        return _unit(X @ W.T) @ _unit(S).T
    if space == "feature":
        return _unit(X) @ _unit(S @ W).T
    raise ValueError(f"space must be 'semantic' or 'feature', got {space!r}")


# --- transductive refinement -----------------------------------------------------------------

def kmeans_refine(X: np.ndarray, prototypes: np.ndarray, n_iter: int = 10,
                  metric: str = "euclidean") -> np.ndarray:
    """Prototypes moved to the centres of the unlabelled images nearest to them (k-means
    started at the predicted prototypes, so cluster k keeps class k). A prototype that
    wins no image stays where it is. Transductive: it uses the unseen images."""
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":  # directions: a centre is the mean of unit vectors
        X = _unit(X)
    P = np.array(prototypes, dtype=np.float64, copy=True)
    for _ in range(n_iter):
        lab = prototype_scores(X, P, metric).argmax(1)
        newP = P.copy()
        for k in range(len(P)):
            m = lab == k
            if m.any():
                newP[k] = X[m].mean(0)
        if np.allclose(newP, P):
            break
        P = newP
    return P
