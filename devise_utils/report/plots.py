"""Figures of the study. Each takes plain results and returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from sklearn.decomposition import PCA


def lr_find_plot(res: dict) -> Figure:
    """The LR range test: loss against learning rate, with fastai's 'valley' suggestion."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(res["lrs"], res["losses"])
    ax.axvline(res["suggestion"], color="red", ls="--",
               label=f"suggestion (valley) = {res['suggestion']:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss",
           title=f"LR finder, stage {res['stage']}")
    ax.legend()
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[dict], metric: str, title: str = "") -> Figure:
    """Train/valid loss and the valid metric per epoch."""
    h = pd.DataFrame(history)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    ep = np.arange(1, len(h) + 1)
    a.plot(ep, h["train_loss"], "o-", label="train")
    a.plot(ep, h["valid_loss"], "o-", label="valid")
    a.set(xlabel="epoch", ylabel="loss", title=title or "loss")
    a.legend()
    b.plot(ep, h[metric], "o-", color="green")
    b.set(xlabel="epoch", ylabel=metric, ylim=(0, 1), title=f"valid {metric}")
    fig.tight_layout()
    return fig


def confusion_plot(cm: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> Figure:
    cm = np.asarray(cm)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.35 * n + 2.5, 0.35 * n + 2))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    if n <= 12:
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def per_class_bars(per_class: dict[str, float | None], title: str = "", chance: float | None = None
                   ) -> Figure:
    names = list(per_class)
    vals = [per_class[c] or 0.0 for c in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 1), 3))
    ax.bar(names, vals)
    if chance is not None:
        ax.axhline(chance, color="red", ls="--", label="chance")
        ax.legend()
    ax.set(ylim=(0, 1), ylabel="top-1", title=title)
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def sample_grid(table: pd.DataFrame, classes: Sequence[str], per_class: int = 4) -> Figure:
    """A few images of each class (rows) as the model sees the dataset."""
    fig, axes = plt.subplots(len(classes), per_class,
                             figsize=(per_class * 1.3, len(classes) * 1.3), squeeze=False)
    for r, c in enumerate(classes):
        paths = table[table["cls"] == c]["path"].head(per_class).tolist()
        for k, ax in enumerate(axes[r]):
            ax.axis("off")
            if k < len(paths):
                with Image.open(paths[k]) as im:
                    ax.imshow(im.convert("RGB"))
        axes[r][0].set_title(c, fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def similarity_heatmap(vecs: np.ndarray, words: Sequence[str], title: str = "") -> Figure:
    """Cosine similarity between word vectors (the structure zero-shot relies on)."""
    s = vecs @ vecs.T
    fig, ax = plt.subplots(figsize=(0.3 * len(words) + 2.5, 0.3 * len(words) + 2))
    im = ax.imshow(s, cmap="viridis", vmin=-0.2, vmax=1)
    ax.set_xticks(range(len(words)), words, rotation=90, fontsize=6)
    ax.set_yticks(range(len(words)), words, fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pca_convergence(snapshots: str | Path, class_vecs: dict[str, np.ndarray],
                    classes: Sequence[str], epochs: Sequence[int]) -> Figure:
    """Image vectors of ``classes`` against their word vectors, at chosen epochs (1-based).

    One PCA (scikit-learn) is fitted on the word vectors and every shown image vector
    together, so panels share axes and convergence is visible.
    """
    z = np.load(snapshots)
    emb, labels = z["emb"], z["labels"]
    epochs = [e if e > 0 else emb.shape[0] + e + 1 for e in epochs]
    mask = np.isin(labels, list(classes))
    words = np.stack([class_vecs[c] for c in classes])
    pts = [emb[e - 1][mask] for e in epochs]
    pca = PCA(2, random_state=0).fit(np.concatenate([words, *pts]))
    w2 = pca.transform(words)
    fig, axes = plt.subplots(1, len(epochs), figsize=(4.2 * len(epochs), 4), squeeze=False)
    colors = plt.cm.tab10(np.arange(len(classes)))
    for ax, e, p in zip(axes[0], epochs, pts):
        p2 = pca.transform(p)
        for c, col, w in zip(classes, colors, w2):
            m = labels[mask] == c
            ax.scatter(p2[m, 0], p2[m, 1], s=14, color=col, alpha=0.6, label=c)
            ax.scatter(*w, marker="*", s=300, color=col, edgecolor="black")
        ax.set(title=f"epoch {e}", xlabel="PC1", ylabel="PC2")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Image vectors (dots) converge to their class word vectors (stars)")
    fig.tight_layout()
    return fig


def seen_unseen_curve(curve: dict, title: str = "") -> Figure:
    """GZSL seen vs unseen accuracy as the calibration sweeps (area = AUSUC)."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    order = np.argsort(curve["unseen"])
    ax.plot(np.array(curve["unseen"])[order], np.array(curve["seen"])[order], "-o", ms=3)
    ax.set(xlabel="unseen accuracy", ylabel="seen accuracy", xlim=(0, 1), ylim=(0, 1),
           title=title or f"seen-unseen curve (AUSUC {curve['AUSUC']:.3f})")
    fig.tight_layout()
    return fig
