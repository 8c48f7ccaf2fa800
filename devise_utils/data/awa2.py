"""AwA2 as it is distributed: read and validate the tree, choose a split, build DataLoaders.

The same code serves the real AwA2, the built-in synthetic dataset and any
folder in AwA2 layout::

    classes.txt            index<TAB>name
    trainclasses.txt       seen classes (one name a line)
    testclasses.txt        unseen classes
    predicates.txt         attribute names (optional)
    predicate-matrix-*.txt (optional)
    JPEGImages/<class>/<class>_<n>.jpg
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from devise_utils.core.config import PROPOSED_UNSEEN_AWA2, Config
from devise_utils.core.errors import DataError
from devise_utils.data.images import IMAGE_EXTS, image_files  # noqa: F401 - re-exported

#: A zero-shot split needs classes to learn from and classes to transfer to.
MIN_SEEN, MIN_UNSEEN = 2, 1


@dataclass
class AwA2:
    """A validated dataset in AwA2 layout."""

    root: Path
    classes: list[str]          # in classes.txt order
    class_ids: dict[str, int]   # AwA2's own 1-based indices
    train_classes: list[str]    # standard split, seen
    test_classes: list[str]     # standard split, unseen
    predicates: list[str]
    table: pd.DataFrame         # path, cls (one row an image)

    @property
    def n_images(self) -> int:
        return len(self.table)


def _lines(path: Path) -> list[str]:
    """The file's lines, or a DataError naming the line that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        n = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {n} is not UTF-8 text (byte {raw[e.start:e.start + 1]!r}); "
                        "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) and rename "
                        "the matching JPEGImages/ folder the same way") from None


def _check_name(path: Path, n: int, name: str) -> None:
    if name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise DataError(f"{path}: line {n}: class name {name!r} cannot be a folder name under "
                        "JPEGImages/; rename the class")


def _read_names(path: Path) -> list[str]:
    """Class names, one a line (the last field of each line); each name once."""
    names: list[str] = []
    where: dict[str, int] = {}
    for n, line in enumerate(_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        name = fields[-1]
        _check_name(path, n, name)
        if name in where:
            raise DataError(f"{path}: class '{name}' is listed twice (lines {where[name]} and "
                            f"{n}); delete one")
        where[name] = n
        names.append(name)
    return names


def _read_classes(path: Path) -> tuple[list[str], dict[str, int]]:
    classes, ids, folded = [], {}, {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not (fields[0].isascii() and fields[0].isdigit()):
            raise DataError(f"{path}: line {n} should be 'index<TAB>name', got {line!r}")
        idx, name = int(fields[0]), fields[1]
        _check_name(path, n, name)
        if name in ids:
            raise DataError(f"{path}: class '{name}' is listed twice (line {n})")
        if name.casefold() in folded:
            other, m = folded[name.casefold()]
            raise DataError(f"{path}: classes '{other}' (line {m}) and '{name}' (line {n}) differ "
                            "only in case: their folders clash on macOS and Windows and their "
                            "word vectors may be the same; rename one")
        folded[name.casefold()] = (name, n)
        classes.append(name)
        ids[name] = idx
    if not classes:
        raise DataError(f"{path} lists no classes")
    return classes, ids


def check_split(root: Path, seen: Sequence[str], unseen: Sequence[str],
                split: str = "standard") -> None:
    """Enough classes on each side of the split, and none on both."""
    std = split == "standard"
    both = sorted(set(seen) & set(unseen))
    if both:
        raise DataError(f"{root / 'testclasses.txt'} repeats seen class(es) from "
                        f"trainclasses.txt: {', '.join(both)}; a class is either seen or unseen")
    if len(seen) < MIN_SEEN:
        where = root / "trainclasses.txt" if std else f"the {split} split of {root}"
        raise DataError(f"{where}: {len(seen)} seen class(es), need at least {MIN_SEEN} (a "
                        "classifier needs two classes to tell apart); list more classes in "
                        "trainclasses.txt" + ("" if std else " or use split='standard'"))
    if len(unseen) < MIN_UNSEEN:
        where = root / "testclasses.txt" if std else f"the {split} split of {root}"
        raise DataError(f"{where}: no unseen class, need at least {MIN_UNSEEN} for zero-shot "
                        "evaluation; move a class from trainclasses.txt into testclasses.txt")


def _read_splits(root: Path, known: set[str]) -> tuple[list[str], list[str]]:
    splits = {}
    for name in ("trainclasses.txt", "testclasses.txt"):
        names = _read_names(root / name)
        unknown = [c for c in names if c not in known]
        if unknown:
            raise DataError(f"{root / name} names class(es) not in classes.txt: "
                            f"{', '.join(unknown)}; fix the spelling or add them to classes.txt")
        splits[name] = names
    seen, unseen = splits["trainclasses.txt"], splits["testclasses.txt"]
    check_split(root, seen, unseen)
    unsplit = known - set(seen) - set(unseen)
    if unsplit:
        raise DataError(f"class(es) {', '.join(sorted(unsplit))} in {root / 'classes.txt'} are "
                        "in neither trainclasses.txt nor testclasses.txt")
    return seen, unseen


def _shown(name: str) -> str:
    """A folder name as text (bytes that are not UTF-8 shown as escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_awa2(root: str | Path) -> AwA2:
    """Read and validate an AwA2-layout folder; every inconsistency is a DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset folder {root} does not exist; run `python -m devise_utils download awa2` "
            "(AwA2) or `python -m devise_utils prepare --dataset builtin` (built-in dataset)")
    for name in ("classes.txt", "trainclasses.txt", "testclasses.txt"):
        if not (root / name).is_file():
            raise DataError(f"{root / name} is missing: is {root} an AwA2-layout folder "
                            "(Animals_with_Attributes2/)?")
    classes, ids = _read_classes(root / "classes.txt")
    known = set(classes)
    seen, unseen = _read_splits(root, known)
    img_root = root / "JPEGImages"
    if not img_root.is_dir():
        raise DataError(f"{img_root} is missing: the images should be in JPEGImages/<class>/")
    rows, missing, empty = [], [], []
    for c in classes:
        d = img_root / c
        if not d.is_dir():
            missing.append(c)
            continue
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            empty.append(c)
        rows.extend((str(p), c) for p in files)
    if missing:
        raise DataError(f"class(es) listed in {root / 'classes.txt'} have no folder under "
                        f"{img_root}: {', '.join(missing)}; re-extract the archive or remove "
                        "them from classes.txt and the split files")
    if empty:
        raise DataError(f"image folder(s) under {img_root} are empty: {', '.join(empty)}")
    extra = sorted(_shown(p.name) for p in img_root.iterdir()
                   if p.is_dir() and p.name not in known)
    if extra:
        raise DataError(f"{img_root} has folder(s) for class(es) not in "
                        f"{root / 'classes.txt'}: {', '.join(extra)}")
    preds = _read_names(root / "predicates.txt") if (root / "predicates.txt").is_file() else []
    return AwA2(root, classes, ids, seen, unseen, preds,
                pd.DataFrame(rows, columns=["path", "cls"]))


def first_readable(files: Sequence[str | Path]) -> str | None:
    """The first file PIL can fully decode (None if none can): one decode for a good class,
    one failed open per file for a class of broken files."""
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
            return str(f)
        except Exception:  # noqa: BLE001, S112 (any decoder error means "unreadable")
            continue
    return None


def check_readable(ds: AwA2, classes: Sequence[str] | None = None) -> None:
    """Every class has a photo that decodes; else the image cache would drop the class."""
    t = ds.table
    dead = [c for c in (classes or ds.classes)
            if first_readable(t.loc[t["cls"] == c, "path"].tolist()) is None]
    if dead:
        raise DataError(f"no photo of class(es) {', '.join(dead)} under {ds.root / 'JPEGImages'} "
                        "can be decoded (truncated files or not images); replace the files or "
                        "remove the class(es) from classes.txt and the split files")


def predicate_matrix(ds: AwA2, kind: str = "binary") -> np.ndarray | None:
    """AwA2's class x attribute matrix (classes.txt order), or None when not shipped."""
    path = ds.root / f"predicate-matrix-{kind}.txt"
    if not path.is_file():
        return None
    m = np.loadtxt(path, dtype=np.float32, ndmin=2)
    if m.shape[0] != len(ds.classes):
        raise DataError(f"{path} has {m.shape[0]} rows but classes.txt lists "
                        f"{len(ds.classes)} classes")
    return m


def seen_unseen(ds: AwA2, split: str = "standard") -> tuple[list[str], list[str]]:
    """Seen and unseen classes for the ``standard`` split or Xian et al.'s ``proposed`` split."""
    if split == "standard":
        return list(ds.train_classes), list(ds.test_classes)
    if split == "proposed":
        unseen = [c for c in PROPOSED_UNSEEN_AWA2 if c in ds.class_ids]
        if not unseen:
            raise DataError(f"{ds.root} holds none of the proposed-split unseen classes "
                            f"({', '.join(PROPOSED_UNSEEN_AWA2)}); use split='standard'")
        seen = [c for c in ds.classes if c not in unseen]
        check_split(ds.root, seen, unseen, split)
        return seen, unseen
    raise ValueError(f"split must be 'standard' or 'proposed', got {split!r}")


#: The splits of a table, in order: seen images train / valid / test_seen, then unseen.
SPLITS = ("train", "valid", "test_seen", "unseen")


def split_table(ds: AwA2, split: str = "standard", valid_pct: float = 0.1, seed: int = 42,
                max_per_class: int | None = None, test_seen_pct: float = 0.0) -> pd.DataFrame:
    """Table of every image with ``split`` in :data:`SPLITS`.

    Seen images are split per class and seeded (Xian et al.'s protocol): ``train``;
    ``valid``, on which every choice is made (recipe, epochs, calibration, method);
    ``test_seen``, used only to report GZSL's seen accuracy. Every seen class keeps at least
    one training image, and the same arguments give the same split on any machine (file
    order is sorted, numpy's PCG64 is stable).
    """
    seen, unseen = seen_unseen(ds, split)
    rng = np.random.default_rng(seed)
    t = ds.table.sort_values(["cls", "path"]).reset_index(drop=True)
    if max_per_class:  # shuffle, keep the first N of each class
        t = (t.iloc[rng.permutation(len(t))].groupby("cls", sort=False).head(max_per_class)
              .sort_values(["cls", "path"]).reset_index(drop=True))
    t["split"] = np.where(t["cls"].isin(unseen), "unseen", "train")
    for _, idx in t[t["split"] == "train"].groupby("cls", sort=True).groups.items():
        idx = rng.permutation(np.asarray(idx))
        n_valid = _held(valid_pct, len(idx), len(idx) - 1)
        n_test = _held(test_seen_pct, len(idx), len(idx) - 1 - n_valid)
        t.loc[idx[:n_valid], "split"] = "valid"
        t.loc[idx[n_valid:n_valid + n_test], "split"] = "test_seen"
    t["seen"] = t["cls"].isin(seen)
    return t


def _held(frac: float, n: int, room: int) -> int:
    """Images of a class to hold out at ``frac``: at least one when ``frac`` > 0, at most
    ``room`` (so training keeps one)."""
    return max(0, min(room, max(1, round(frac * n)) if frac > 0 else 0))


def dataset_root(cfg: Config) -> Path:
    """The AwA2-layout folder a config names, generating the built-in dataset on first use."""
    if cfg.dataset == "builtin":
        from devise_utils.data.builtin import ensure_builtin

        return ensure_builtin(Path(cfg.data_dir) / "builtin", seed=0)
    if cfg.dataset == "awa2":
        return Path(cfg.data_dir) / "Animals_with_Attributes2"
    return Path(cfg.dataset)


def default_vectors(cfg: Config) -> Path:
    """The word-vector file a config uses: ``cfg.vectors``, else the dataset's default."""
    if cfg.vectors:
        return Path(cfg.vectors)
    if cfg.dataset == "builtin":
        return dataset_root(cfg) / "vectors.vec"
    return Path(cfg.data_dir) / "wiki-news-300d-1M.vec"


def pseudo_unseen_split(seen: Sequence[str], frac: float = 0.2, seed: int = 0
                        ) -> tuple[list[str], list[str]]:
    """Seeded split of the seen classes into (kept, pseudo-unseen) for a validation round;
    at least one class on each side."""
    seen = list(seen)
    if len(seen) < 2:
        raise ValueError("need at least 2 seen classes to hold some out")
    k = min(len(seen) - 1, max(1, round(frac * len(seen))))
    pick = set(np.random.default_rng(seed).choice(len(seen), k, replace=False).tolist())
    return ([c for i, c in enumerate(seen) if i not in pick],
            [c for i, c in enumerate(seen) if i in pick])


def spread_sample(items: Sequence[str], n: int) -> list[str]:
    """``n`` items spread evenly over ``items`` (every k-th of a sorted list covers each class):
    the calibration and parity samples of export and of notebook 08."""
    return list(items[::max(1, len(items) // n)][:n])


def has_proposed_split(cfg: Config) -> bool:
    """Whether the dataset holds any of Xian et al.'s proposed-split unseen classes."""
    ds = read_awa2(dataset_root(cfg))
    return any(c in ds.class_ids for c in PROPOSED_UNSEEN_AWA2)
