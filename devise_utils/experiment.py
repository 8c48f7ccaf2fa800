"""What one configuration sees: the split table, seen/unseen classes and class vectors.

Built once per config and shared by training, evaluation, search and the notebooks,
so every one of them agrees on which images are train/valid/unseen.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .data import AwA2, dataset_root, default_vectors, read_awa2, seen_unseen
from .embeddings import WordVectors, load_vectors


@dataclass
class Experiment:
    cfg: Config
    dataset: AwA2
    table: pd.DataFrame        # path (prepared cache), cls, split in {train, valid, unseen}
    seen: list[str]
    unseen: list[str]
    vectors: WordVectors       # exactly seen + unseen, in that order
    vectors_path: Path

    @property
    def classes(self) -> list[str]:
        return self.seen + self.unseen

    def class_vectors(self, classes: list[str] | None = None) -> np.ndarray:
        return self.vectors.lookup(classes if classes is not None else self.classes)

    @property
    def fingerprint(self) -> str:
        """Hash of the images, their classes and split, and the word vectors: a cached model
        is reused only if the data it was trained on is still the same."""
        import hashlib

        h = hashlib.sha256(self.vectors.source_sha256.encode())
        for path, cls, split in self.table[["path", "cls", "split"]].itertuples(index=False):
            h.update(f"{Path(path).name}\t{cls}\t{split}\n".encode())
        return h.hexdigest()[:16]

    def images(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split].reset_index(drop=True)


def experiment(cfg: Config) -> Experiment:
    """The (cached) Experiment for ``cfg``: validated data, prepared cache, class vectors."""
    return _experiment(_frozen(cfg))


def _frozen(cfg: Config) -> str:
    import json

    return json.dumps(cfg.to_dict(), sort_keys=True, default=str)


@lru_cache(maxsize=8)
def _experiment(cfg_json: str) -> Experiment:
    import json

    from .prepare import prepared_table

    cfg = Config.from_dict(json.loads(cfg_json))
    ds = read_awa2(dataset_root(cfg))
    seen, unseen = seen_unseen(ds, cfg.split)
    table = prepared_table(cfg)
    vpath = default_vectors(cfg)
    wv = load_vectors(vpath, words=seen + unseen).subset(seen + unseen)
    return Experiment(cfg, ds, table, seen, unseen, wv, vpath)
