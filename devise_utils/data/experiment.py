"""What one configuration sees: the split table, seen/unseen classes and class vectors.

Built once per config (validate the dataset, split it, prepare the image cache, load the
class vectors) and handed forward to training, evaluation, search and the notebooks, so
every one of them agrees on which images are train/valid/unseen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from devise_utils.core.config import Config
from devise_utils.core.errors import DataError
from devise_utils.data.awa2 import (
    SPLITS,
    AwA2,
    dataset_root,
    default_vectors,
    pseudo_unseen_split,
    read_awa2,
    seen_unseen,
    spread_sample,
)
from devise_utils.data.prepare import prepared_table
from devise_utils.data.vectors import WordVectors, check_class_vectors, load_vectors

#: Config fields that decide what data a run sees (its images, split and class vectors).
DATA_FIELDS = ("dataset", "data_dir", "vectors", "split", "valid_pct", "test_seen_pct", "seed",
               "max_per_class", "cache_size", "holdout_round")
#: Share of the seen classes a calibration round holds out as pseudo-unseen.
HOLDOUT_FRACTION = 0.2


@dataclass
class Experiment:
    cfg: Config
    dataset: AwA2
    table: pd.DataFrame        # path (prepared cache), cls, split in {train, valid, unseen}
    seen: list[str]
    unseen: list[str]
    vectors: WordVectors       # exactly seen + unseen, in that order
    vectors_path: Path
    fingerprint: str           # hash of images, classes, split and vectors: a cached model
    #                            is reused only if the data it was trained on is the same

    @property
    def classes(self) -> list[str]:
        return self.seen + self.unseen

    def class_vectors(self, classes: list[str] | None = None) -> np.ndarray:
        return self.vectors.lookup(classes if classes is not None else self.classes)

    @property
    def counts(self) -> dict[str, int]:
        """Images per split: train, valid, test_seen, unseen."""
        return {s: int((self.table["split"] == s).sum()) for s in SPLITS}

    def images(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split].reset_index(drop=True)

    def sample_paths(self, n: int = 32, split: str | None = None) -> list[str]:
        """``n`` image paths spread evenly over the classes (calibration, parity samples)."""
        t = self.table if split is None else self.table[self.table["split"] == split]
        t = t.sort_values(["cls", "path"])
        return spread_sample(t["path"].tolist(), n)


def image_size_for(cfg: Config, n_sample: int = 200) -> tuple[int, str]:
    """The input size a dataset's photos call for, and why: their median short side (read
    from ``n_sample`` file headers), at most ``cfg.max_image_size``, and small enough that one
    training epoch costs at most ``cfg.epoch_pixels`` pixels (the CPU time budget); a
    multiple of 16, at least 32."""
    ds = read_awa2(dataset_root(cfg))
    paths = spread_sample(sorted(ds.table["path"]), n_sample)
    sizes = [s for s in map(_short_side, paths) if s]
    if not sizes:
        raise DataError(f"none of {len(paths)} sampled photos of {ds.root} could be read; "
                        "set image_size explicitly or check the dataset (prepare lists them)")
    short = float(np.median(sizes))
    seen = ds.table["cls"].isin(seen_unseen(ds, cfg.split)[0]).sum()
    n_train = max(1, round(seen * (1 - cfg.valid_pct - cfg.test_seen_pct)))
    budget = (cfg.epoch_pixels / n_train) ** 0.5
    size = max(32, int(min(short, cfg.max_image_size, budget)) // 16 * 16)
    why = min((short, "the photos' median short side"),
              (cfg.max_image_size, "max_image_size"),
              (budget, f"the CPU budget ({cfg.epoch_pixels:.2g} pixels per epoch over "
                       f"{n_train} training photos)"))[1]
    return size, f"{size} px: {why} (median short side {short:.0f} px)"


def _short_side(path: str) -> int | None:
    try:
        with Image.open(path) as img:
            return min(img.size)
    except OSError:  # unreadable: prepare reports it and skips it
        return None


def experiment(cfg: Config) -> Experiment:
    """The Experiment for ``cfg``: validated data, prepared cache, class vectors. The data
    is read once per distinct :data:`DATA_FIELDS` (sweeps over model settings share it)."""
    key = json.dumps({k: getattr(cfg, k) for k in DATA_FIELDS}, sort_keys=True)
    return Experiment(cfg, *_load(key))


@lru_cache(maxsize=4)
def _load(key: str) -> tuple:

    cfg = Config(**json.loads(key))
    ds = read_awa2(dataset_root(cfg))
    seen, unseen = seen_unseen(ds, cfg.split)
    table = prepared_table(cfg)
    if cfg.holdout_round:
        seen, unseen, table = _holdout(seen, table, cfg.seed)
    vpath = default_vectors(cfg)
    wv = load_vectors(vpath, words=seen + unseen)
    check_class_vectors(wv, seen + unseen)  # no zero vector, no two classes on one vector
    wv = wv.subset(seen + unseen)
    h = hashlib.sha256(wv.source_sha256.encode())
    for path, cls, split in table[["path", "cls", "split"]].itertuples(index=False):
        h.update(f"{Path(path).name}\t{cls}\t{split}\n".encode())
    return ds, table, seen, unseen, wv, vpath, h.hexdigest()[:16]


def _holdout(seen: list[str], table: pd.DataFrame, seed: int
             ) -> tuple[list[str], list[str], pd.DataFrame]:
    """A calibration round's data, drawn from the seen classes' train and valid images only:
    the real unseen classes and every test-seen image dropped, a seeded 20 % of the seen
    classes relabelled unseen (their train and valid images), the rest kept with their
    train/valid split. So the gamma it picks never saw a test image."""
    kept, pseudo = pseudo_unseen_split(seen, HOLDOUT_FRACTION, seed)
    t = table[table["cls"].isin(seen) & table["split"].isin(["train", "valid"])].copy()
    t.loc[t["cls"].isin(pseudo), "split"] = "unseen"
    t["seen"] = t["cls"].isin(kept)
    return kept, pseudo, t.reset_index(drop=True)
