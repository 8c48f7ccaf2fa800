"""Image grids for search results: what a text or image query finds, and an image's tags.

Figures come from pyplot so that a notebook's inline backend shows them at the end of
the cell (plain ``Figure`` objects only show as text there); scripts can save them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def _thumb(ax, path: str | Path, size: int) -> None:

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            ax.imshow(np.asarray(im))
    except Exception as e:  # show the gap rather than fail the whole grid
        ax.text(0.5, 0.5, f"unreadable\n{type(e).__name__}", ha="center", va="center",
                fontsize=8, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _caption(path: str | Path) -> str:
    """AwA2 photos live in JPEGImages/<class>/, so the parent folder names the class."""
    p = Path(path)
    return p.parent.name or p.name


def show_knn(query_label: str, result_paths: Sequence[str | Path], scores: Sequence[float], *,
             query_image: str | Path | None = None, ncols: int = 5, thumb: float = 2.0,
             size: int = 256, captions: Sequence[str] | None = None) -> Figure:
    """A grid of the nearest images to a query, each captioned with its cosine similarity.

    ``query_label`` titles the figure (the text query, or a name for an image
    query); ``query_image`` (image queries) is drawn first with a red frame.
    ``captions`` default to each result's parent folder (its AwA2 class).
    """
    if len(result_paths) != len(scores):
        raise ValueError(f"{len(result_paths)} result paths but {len(scores)} scores")
    if captions is not None and len(captions) != len(result_paths):
        raise ValueError(f"{len(captions)} captions for {len(result_paths)} results")
    captions = list(captions) if captions is not None else [_caption(p) for p in result_paths]
    n = len(result_paths) + (query_image is not None)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig = plt.figure(figsize=(thumb * ncols, thumb * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    slots = iter(axes)
    if query_image is not None:
        ax = next(slots)
        _thumb(ax, query_image, size)
        ax.set_title("query", fontsize=9, color="tab:red")
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:red")
            spine.set_linewidth(3)
    for ax, path, score, cap in zip(slots, result_paths, scores, captions):
        _thumb(ax, path, size)
        ax.set_title(f"{cap}\n{score:.3f}", fontsize=9)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(f"nearest images to {query_label!r}" if query_image is None
                 else f"images like {query_label}", fontsize=11)
    return fig


def show_tags(image: str | Path, tags: Sequence[tuple[str, float]], *,
              thumb: float = 3.0) -> Figure:
    """One image beside a bar chart of its nearest words (image -> tags)."""
    fig = plt.figure(figsize=(thumb * 2.2, thumb), layout="constrained")
    ax_img, ax_bar = fig.subplots(1, 2, width_ratios=[1, 1.2])
    _thumb(ax_img, image, 256)
    ax_img.set_title(_caption(image), fontsize=9)
    words = [w for w, _ in tags][::-1]
    ax_bar.barh(words, [s for _, s in tags][::-1], color="tab:blue")
    ax_bar.set_xlabel("cosine similarity")
    ax_bar.tick_params(labelsize=8)
    return fig
