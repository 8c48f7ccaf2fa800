"""Reading and validating AwA2-layout folders, and choosing splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from devise_utils.core.config import PROPOSED_UNSEEN_AWA2, Config
from devise_utils.data.awa2 import (
    DataError,
    dataset_root,
    default_vectors,
    predicate_matrix,
    read_awa2,
    seen_unseen,
    split_table,
)

SEEN = {"zebra": 20, "lion": 20, "grizzly+bear": 20, "otter": 20, "mole": 7}
UNSEEN = {"sheep": 5, "pig": 5}


def make_tree(root: Path, seen: dict[str, int] = SEEN, unseen: dict[str, int] = UNSEEN) -> Path:
    """A tiny AwA2-layout folder; read_awa2 never decodes, so empty .jpg files suffice."""
    counts = {**seen, **unseen}
    root.mkdir(parents=True)
    (root / "classes.txt").write_text(
        "".join(f"{i}\t{c}\n" for i, c in enumerate(counts, 1)))
    (root / "trainclasses.txt").write_text("".join(f"{c}\n" for c in seen))
    (root / "testclasses.txt").write_text("".join(f"{c}\n" for c in unseen))
    for c, n in counts.items():
        d = root / "JPEGImages" / c
        d.mkdir(parents=True)
        for k in range(n):
            (d / f"{c}_{10001 + k}.jpg").write_bytes(b"")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "awa")


def test_reads_a_valid_tree(tree):
    ds = read_awa2(tree)
    assert ds.classes == [*SEEN, *UNSEEN]
    assert ds.class_ids["grizzly+bear"] == 3
    assert ds.train_classes == list(SEEN) and ds.test_classes == list(UNSEEN)
    assert ds.n_images == sum(SEEN.values()) + sum(UNSEEN.values())
    assert ds.table["cls"].value_counts().to_dict() == {**SEEN, **UNSEEN}
    assert ds.predicates == [] and predicate_matrix(ds) is None


def _check(root: Path, file: str, *words: str) -> None:
    with pytest.raises(DataError) as e:
        read_awa2(root)
    msg = str(e.value)
    assert str(root / file) in msg, msg
    for w in words:
        assert w in msg, msg


def test_missing_dataset_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="does not exist.*download awa2"):
        read_awa2(tmp_path / "nope")


def test_missing_classes_txt(tree):
    (tree / "classes.txt").unlink()
    _check(tree, "classes.txt", "missing")


def test_class_listed_without_folder(tree):
    (tree / "JPEGImages" / "otter").rename(tree / "otter-elsewhere")
    _check(tree, "classes.txt", "otter", "no folder")


def test_unknown_class_in_split_file(tree):
    (tree / "testclasses.txt").write_text("sheep\npig\nunicorn\n")
    _check(tree, "testclasses.txt", "unicorn")
    (tree / "testclasses.txt").write_text("sheep\npig\n")
    (tree / "trainclasses.txt").write_text("zebra\nlion\ngrizzly_bear\notter\nmole\n")
    _check(tree, "trainclasses.txt", "grizzly_bear")


def test_empty_class_folder(tree):
    for p in (tree / "JPEGImages" / "mole").iterdir():
        p.unlink()
    (tree / "JPEGImages" / "mole" / "notes.txt").write_text("not an image")
    _check(tree, "JPEGImages", "empty", "mole")


def test_class_in_neither_split(tree):
    (tree / "testclasses.txt").write_text("sheep\n")
    _check(tree, "classes.txt", "pig", "neither")


def test_class_in_both_splits(tree):
    (tree / "testclasses.txt").write_text("sheep\npig\nlion\n")
    _check(tree, "testclasses.txt", "lion")


def test_extra_folder(tree):
    (tree / "JPEGImages" / "dodo").mkdir()
    _check(tree, "JPEGImages", "dodo", "classes.txt")


def test_malformed_classes_line(tree):
    (tree / "classes.txt").write_text("1\tzebra\nlion\n")
    _check(tree, "classes.txt", "line 2")


def test_split_is_stratified_and_about_ten_percent(tree):
    t = split_table(read_awa2(tree), valid_pct=0.1, seed=1)
    assert set(t.columns) >= {"path", "cls", "split", "seen"}
    assert set(t.loc[t["split"] == "unseen", "cls"]) == set(UNSEEN)
    assert not t.loc[t["split"] == "unseen", "seen"].any()
    for c, n in SEEN.items():
        s = t.loc[t["cls"] == c, "split"].value_counts()
        assert s["valid"] == max(1, round(0.1 * n)) and s["train"] == n - s["valid"], c
    assert t.loc[t["seen"], "split"].isin(["train", "valid"]).all()
    frac = (t["split"] == "valid").sum() / t["seen"].sum()
    assert 0.08 <= frac <= 0.15


def test_split_is_seeded(tree):
    ds = read_awa2(tree)
    a, b = split_table(ds, seed=7), split_table(ds, seed=7)
    assert a.equals(b)
    assert not a["split"].equals(split_table(ds, seed=8)["split"])


def test_max_per_class_subsamples_deterministically(tree):
    ds = read_awa2(tree)
    t = split_table(ds, max_per_class=6, seed=3)
    want = {c: min(n, 6) for c, n in {**SEEN, **UNSEEN}.items()}
    assert t["cls"].value_counts().to_dict() == want
    assert t.equals(split_table(ds, max_per_class=6, seed=3))
    assert not t["path"].equals(split_table(ds, max_per_class=6, seed=4)["path"])
    assert set(t.loc[t["split"] == "valid", "cls"]) == set(SEEN)  # still in every class


def test_proposed_split(tmp_path):
    ds = read_awa2(make_tree(tmp_path / "p"))
    seen, unseen = seen_unseen(ds, "proposed")
    assert unseen == ["sheep"] and "pig" in seen and len(seen) == len(ds.classes) - 1
    t = split_table(ds, "proposed")
    assert set(t.loc[t["split"] == "unseen", "cls"]) == {"sheep"}
    ds2 = read_awa2(make_tree(tmp_path / "q", unseen={"pig": 3}))
    with pytest.raises(DataError, match="proposed"):
        seen_unseen(ds2, "proposed")
    with pytest.raises(ValueError, match="standard"):
        seen_unseen(ds2, "zero-shot")


def test_config_paths(tmp_path):
    cfg = Config(dataset="awa2", data_dir=str(tmp_path))
    assert dataset_root(cfg) == tmp_path / "Animals_with_Attributes2"
    assert default_vectors(cfg) == tmp_path / "wiki-news-300d-1M.vec"
    cfg = Config(dataset=str(tmp_path / "x"), vectors="v.bin")
    assert dataset_root(cfg) == tmp_path / "x" and default_vectors(cfg) == Path("v.bin")


@pytest.mark.shared
def test_real_mini_standard_split(shared):
    ds = read_awa2(shared / "data" / "awa2-real-mini")
    assert (len(ds.classes), ds.n_images) == (19, 1077)
    assert (len(ds.train_classes), len(ds.test_classes)) == (14, 5)
    assert set(ds.test_classes) == {"chimpanzee", "giant+panda", "leopard", "persian+cat", "pig"}
    assert len(ds.predicates) == 85
    t = split_table(ds)
    counts = t["split"].value_counts()
    assert counts["unseen"] == ds.table["cls"].isin(ds.test_classes).sum()
    assert counts["train"] + counts["valid"] + counts["unseen"] == 1077
    assert set(t.loc[t["split"] == "valid", "cls"]) == set(ds.train_classes)


@pytest.mark.shared
def test_real_mini_proposed_split(shared):
    ds = read_awa2(shared / "data" / "awa2-real-mini")
    seen, unseen = seen_unseen(ds, "proposed")
    assert set(unseen) == {"bobcat", "sheep", "dolphin"} <= set(PROPOSED_UNSEEN_AWA2)
    assert len(seen) == 16 and "pig" in seen
    t = split_table(ds, "proposed")
    assert set(t.loc[t["split"] == "unseen", "cls"]) == set(unseen)
