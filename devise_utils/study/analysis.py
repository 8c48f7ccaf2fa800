"""Analyses of one trained run: what it saw, how its vectors converged, how well it searches.

Each takes a :class:`~devise_utils.study.run.Run` whose stages are trained and reads only what
the run already produced (data, snapshots, embeddings).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from devise_utils.core.config import Config
from devise_utils.data.awa2 import DataError, dataset_root, read_awa2, seen_unseen
from devise_utils.study.imagenet import imagenet_overlap
from devise_utils.study.run import Run
from devise_utils.study.semantics import WordNetMissingError, class_synsets


def data_summary(run: Run) -> dict[str, Any]:
    """What the run trains and tests on (recorded by notebook 00)."""
    exp, cfg = run.data, run.cfg
    return {"dataset": cfg.dataset if cfg.dataset in ("builtin", "awa2") else str(exp.dataset.root),
            "split": cfg.split, "seen": exp.seen, "unseen": exp.unseen,
            "n_images": exp.counts,
            "vectors": str(exp.vectors_path), "dim": exp.vectors.dim,
            "weights": cfg.weights, "image_size": cfg.image_size,
            "image_size_reason": run.image_size_reason}


def split_caveat(cfg: Config) -> pd.DataFrame:
    """Unseen classes of each split the dataset holds, and which of them are ImageNet-1K
    classes (by name and WordNet: :func:`~devise_utils.study.imagenet.imagenet_overlap`), so
    an ImageNet backbone has seen them."""
    ds = read_awa2(dataset_root(cfg))
    rows = []
    for split in ("standard", "proposed"):
        try:
            _, unseen = seen_unseen(ds, split)
        except DataError:
            continue
        try:
            synsets = class_synsets(unseen)
        except WordNetMissingError:
            synsets = [None] * len(unseen)
        rows += [{"split": split, "unseen_class": r["class"], "imagenet_1k_class": r["imagenet"],
                  "why": "; ".join(r["reasons"])}
                 for r in imagenet_overlap(unseen, synsets)]
    return pd.DataFrame(rows)




def snapshot_convergence(run: Run) -> pd.DataFrame:
    """Per Stage II epoch: mean cosine of the snapshot images to their own class vector and
    to the nearest other class vector (the PCA figure's claim, as numbers)."""
    run.stage2  # noqa: B018  (the snapshots are written by the trained Stage II)
    z = np.load(run.cfg.run_dir / "snapshots.npz")
    exp = run.data
    vecs = exp.class_vectors(exp.seen)
    own = np.array([exp.seen.index(c) for c in z["labels"]])
    rows = []
    for e, emb in enumerate(z["emb"], 1):
        s = emb @ vecs.T
        own_cos = s[np.arange(len(own)), own]
        s[np.arange(len(own)), own] = -np.inf
        rows.append({"epoch": e, "mean_cos_own": float(own_cos.mean()),
                     "mean_cos_nearest_other": float(s.max(1).mean()),
                     "top1": float(np.mean(own_cos > s.max(1)))})
    return pd.DataFrame(rows)


def search_quality(run: Run, index: Any, k: int = 10) -> dict[str, Any]:
    """Precision@k of the poster's searches over every image of the run: text -> image with
    each class name as the query (unseen classes are zero-shot), and image -> image with
    each unseen image as the query (itself left out). ``index``: an EmbeddingIndex over
    ``run.embeddings`` labelled by path."""
    exp, emb = run.data, run.embeddings
    cls_of = dict(zip(emb.path, emb.cls))

    def precision(hits: list[list[tuple[str, float]]], truth: list[str]) -> float:
        return float(np.mean([np.mean([cls_of[p] == t for p, _ in h]) for h, t in
                              zip(hits, truth)]))

    out: dict[str, Any] = {"k": k, "n_images": len(index)}
    for group, classes in (("seen", exp.seen), ("unseen", exp.unseen)):
        hits = index.search(exp.class_vectors(classes), k)
        out[f"text_to_image_p@{k}_{group}"] = precision(hits, classes)
    unseen = emb.of("unseen")
    hits = index.search(unseen.X, k + 1)
    hits = [[h for h in hs if h[0] != p][:k] for hs, p in zip(hits, unseen.path)]
    out[f"image_to_image_p@{k}_unseen"] = precision(hits, unseen.cls.tolist())
    out["chance_unseen"] = float(pd.Series(unseen.cls).value_counts(normalize=True).pow(2).sum())
    return out


def attribute_table(attributes: dict[str, dict[str, str]], unseen: list[str]) -> pd.DataFrame:
    """The built-in dataset's classes by attribute, unseen ones last."""
    t = pd.DataFrame(attributes).T.assign(unseen=lambda d: d.index.isin(unseen))
    return t.sort_values("unseen")


