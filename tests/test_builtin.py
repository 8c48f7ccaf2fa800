"""The built-in dataset: AwA2 layout, deterministic, and zero-shot learnable by design."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devise_utils.core.config import Config
from devise_utils.data import builtin
from devise_utils.data.awa2 import DataError, dataset_root, predicate_matrix, read_awa2
from devise_utils.data.builtin import ATTRIBUTES, class_attributes, design, ensure_builtin, generate
from devise_utils.data.vectors import load_vectors, normalize

ATTR_WORDS = [v for vals in ATTRIBUTES.values() for v in vals]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The full dataset, generated once through the config path the notebooks use."""
    return dataset_root(Config(data_dir=str(tmp_path_factory.mktemp("data"))))


def test_full_dataset_is_awa2_layout(root):
    ds = read_awa2(root)
    d = design(0)
    assert root.name == "builtin"
    assert ds.classes == list(d.classes)
    assert (len(ds.train_classes), len(ds.test_classes)) == (18, 6)
    counts = ds.table["cls"].value_counts()
    assert counts.between(*builtin.PER_CLASS).all() and len(counts) == 24
    assert ds.predicates == ATTR_WORDS
    pm = predicate_matrix(ds, "binary")
    for c, row in zip(ds.classes, pm):
        assert {p for p, x in zip(ATTR_WORDS, row) if x} == set(class_attributes()[c].values())
    cont = predicate_matrix(ds, "continuous")
    assert cont.shape == pm.shape and (cont[pm == 1] > cont[pm == 0].max()).all()
    for path in ds.table["path"].iloc[::97]:
        assert Path(path).name.startswith(Path(path).parent.name + "_")
        with Image.open(path) as im:
            assert (im.mode, im.size, im.format) == ("RGB", (96, 96), "JPEG")
    marker = json.loads((root / builtin.MARKER).read_text())
    assert (marker["version"], marker["seed"]) == (builtin.GENERATOR_VERSION, 0)
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_generation_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", seed=3, per_class=(2, 3))
    b = generate(tmp_path / "b", seed=3, per_class=(2, 3))
    c = generate(tmp_path / "c", seed=4, per_class=(2, 3))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 24 * 2
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "classes.txt").read_text() != (c / "classes.txt").read_text()


def test_ensure_builtin_reuses_and_replaces(tmp_path, root):
    before = (root / "classes.txt").stat().st_mtime_ns
    assert ensure_builtin(root, seed=0) == root
    assert (root / "classes.txt").stat().st_mtime_ns == before  # not regenerated

    other = tmp_path / "builtin"
    generate(other, seed=0, per_class=(1, 1))
    (other / builtin.MARKER).write_text(json.dumps({"version": -1, "seed": 0}))
    ensure_builtin(other, seed=5)  # another version and seed: rebuilt in place
    assert json.loads((other / builtin.MARKER).read_text())["seed"] == 5
    assert read_awa2(other).classes == list(design(5).classes)
    assert [p.name for p in tmp_path.iterdir()] == ["builtin"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a built-in dataset"):
        ensure_builtin(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_unseen_classes_are_new_combinations_of_seen_values():
    for seed in range(5):
        d = design(seed)
        attrs = class_attributes(seed)
        combos = {c: tuple(attrs[c][f] for f in ATTRIBUTES) for c in d.classes}
        assert len(set(combos.values())) == len(d.classes)
        seen = [combos[c] for c in d.train]
        for c in d.test:
            assert combos[c] not in seen
            for value in combos[c]:
                assert sum(value in s for s in seen) >= 2, (seed, c, value)
        for f, g in itertools.combinations(range(len(ATTRIBUTES)), 2):  # no confounds
            want = {(x[f], x[g]) for x in combos.values()}
            assert {(x[f], x[g]) for x in seen} == want, (seed, f, g)
        for c in d.classes:
            assert c.isalpha() and c.islower() and c not in ATTR_WORDS


def test_vectors_cover_classes_and_attributes(root):
    first = (root / "vectors.vec").open().readline().split()
    wv = load_vectors(root / "vectors.vec")
    assert first == [str(len(wv)), "300"] and wv.dim == 300
    d = design(0)
    assert len(wv) >= len(ATTR_WORDS) + len(d.classes) + 200  # distractor vocabulary
    assert set(ATTR_WORDS) | set(d.classes) <= set(wv.words)
    cls, att = wv.lookup(d.classes), wv.lookup(ATTR_WORDS)
    sims = cls @ att.T
    for i, c in enumerate(d.classes):
        own = [ATTR_WORDS.index(v) for v in class_attributes()[c].values()]
        other = [j for j in range(len(ATTR_WORDS)) if j not in own]
        assert sims[i, own].min() > sims[i, other].max() + 0.2, c


def test_text_search_for_an_attribute_finds_its_classes(root):
    wv = load_vectors(root / "vectors.vec")
    d = design(0)
    cls = wv.lookup(d.classes)
    for word in ("striped", "red", "triangle"):
        fam = next(f for f, vals in ATTRIBUTES.items() if word in vals)
        having = {c for c in d.classes if class_attributes()[c][fam] == word}
        top = np.argsort(-(cls @ wv.lookup([word])[0]))[: len(having)]
        assert {d.classes[i] for i in top} == having


def test_attribute_only_linear_model_transfers_to_unseen_classes(root):
    """The text side is learnable: a map fitted on seen classes places unseen ones."""
    wv = load_vectors(root / "vectors.vec")
    d, attrs = design(0), class_attributes(0)

    def onehot(c: str) -> np.ndarray:
        return np.array([float(w in attrs[c].values()) for w in ATTR_WORDS])

    x_seen = np.stack([onehot(c) for c in d.train])
    w, *_ = np.linalg.lstsq(x_seen, wv.lookup(d.train), rcond=None)
    pred = normalize(np.stack([onehot(c) for c in d.test]) @ w)
    assert ((pred @ wv.lookup(d.test).T).argmax(1) == np.arange(len(d.test))).all()
    # The same with no fitting: the normalised sum of the attribute words.
    summed = normalize(np.stack([wv.lookup(list(attrs[c].values())).sum(0) for c in d.test]))
    assert ((summed @ wv.lookup(d.test).T).argmax(1) == np.arange(len(d.test))).all()


@pytest.mark.parametrize("colour", ATTRIBUTES["colour"])
def test_rendered_colour_is_the_attribute_colour(colour):
    for k in range(4):
        im = builtin.render(colour, "solid", "square", np.random.default_rng(k))
        hsv = np.asarray(im.convert("HSV"), dtype=float) / 255
        vivid = hsv[..., 1] > 0.5  # the background is desaturated
        assert vivid.mean() > 0.1
        angle = np.angle(np.exp(2j * np.pi * hsv[..., 0][vivid]).mean()) / (2 * np.pi)
        gap = abs(angle - builtin._HUES[colour]) % 1
        assert min(gap, 1 - gap) < 0.05, (colour, k, angle)
