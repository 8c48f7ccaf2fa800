"""Image vectors with their labels: what every method of the study produces and is scored on.

One array of vectors and, row for row, each image's path, class and split, so selecting the
unseen images or handing the valid ones to a metric never re-stacks a column of objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from devise_utils.core.files import atomic_write


@dataclass(frozen=True)
class Embedded:
    """``X`` (N, D) float32 and the path, class and split (N,) of each row."""

    X: np.ndarray
    path: np.ndarray
    cls: np.ndarray
    split: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.X)
        if not len(self.path) == len(self.cls) == len(self.split) == n:
            raise ValueError(f"{n} vectors but {len(self.path)} paths, {len(self.cls)} "
                             f"classes and {len(self.split)} splits")

    def __len__(self) -> int:
        return len(self.X)

    def where(self, mask: np.ndarray) -> Embedded:
        return Embedded(self.X[mask], self.path[mask], self.cls[mask], self.split[mask])

    def of(self, *splits: str) -> Embedded:
        """The rows of the given splits (``"train"``, ``"valid"``, ``"unseen"``), in order."""
        return self.where(np.isin(self.split, splits))

    def with_vectors(self, X: np.ndarray) -> Embedded:
        """The same images with other vectors (e.g. ConSE's word-space vectors of logits)."""
        return Embedded(np.asarray(X, np.float32), self.path, self.cls, self.split)

    def labels(self, classes: Sequence[str]) -> np.ndarray:
        """Each row's class as its index in ``classes``."""
        idx = {c: i for i, c in enumerate(classes)}
        return np.array([idx[c] for c in self.cls], dtype=np.int64)

    def frame(self) -> pd.DataFrame:
        """path, cls, split as a table (for display; the vectors stay in ``X``)."""
        return pd.DataFrame({"path": self.path, "cls": self.cls, "split": self.split})

    @classmethod
    def of_table(cls, table: pd.DataFrame, X: np.ndarray) -> Embedded:
        return cls(np.asarray(X, np.float32), table["path"].to_numpy(str),
                   table["cls"].to_numpy(str), table["split"].to_numpy(str))

    def save(self, path: str | Path) -> Path:
        return atomic_write(path, lambda p: np.savez_compressed(
            p.open("wb"), emb=self.X, paths=self.path.astype(str), cls=self.cls.astype(str),
            split=self.split.astype(str)))

    @classmethod
    def load(cls, path: str | Path) -> Embedded:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["emb"], z["paths"], z["cls"], z["split"])
