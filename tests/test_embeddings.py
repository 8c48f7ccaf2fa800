"""Word vectors: streaming .vec/.txt, multi-word classes, missing words, .bin subwords."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devise_utils.data.vectors import (
    MissingVectorsError,
    WordVectors,
    file_sha256,
    load_vectors,
    normalize,
    parts,
)

RNG = np.random.default_rng(0)
WORDS = ["the", "zebra", "grizzly", "bear", "horse", "striped", "cat", "dog"]


def write_vec(path: Path, vecs: dict[str, np.ndarray], header: bool = True) -> Path:
    dim = len(next(iter(vecs.values())))
    lines = [f"{len(vecs)} {dim}\n"] if header else []
    lines += [w + " " + " ".join(f"{x:.6f}" for x in v) + " \n" for w, v in vecs.items()]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def vecs() -> dict[str, np.ndarray]:
    return {w: RNG.standard_normal(6).astype(np.float32) for w in WORDS}


def test_streaming_keeps_only_the_needed_words(tmp_path, vecs):
    wv = load_vectors(write_vec(tmp_path / "v.vec", vecs), ["zebra", "grizzly+bear"])
    assert set(wv.words) == {"zebra", "grizzly", "bear"}
    assert wv.dim == 6 and wv.source_sha256 == file_sha256(tmp_path / "v.vec")
    np.testing.assert_allclose(wv.lookup(["zebra"])[0], normalize(vecs["zebra"]), atol=1e-5)
    everything = load_vectors(tmp_path / "v.vec")
    assert everything.words == WORDS
    top = load_vectors(tmp_path / "v.vec", ["dog"], top_n=2)
    assert set(top.words) == {"the", "zebra", "dog"}


def test_multiword_class_uses_exact_key_else_mean_of_parts(tmp_path, vecs):
    mean = normalize(normalize(vecs["grizzly"]) + normalize(vecs["bear"]))
    wv = load_vectors(write_vec(tmp_path / "a.vec", vecs), ["grizzly+bear"])
    np.testing.assert_allclose(wv.lookup(["grizzly+bear"])[0], mean, atol=1e-5)
    exact = RNG.standard_normal(6).astype(np.float32)
    wv = load_vectors(write_vec(tmp_path / "b.vec", {**vecs, "grizzly+bear": exact}),
                      ["grizzly+bear"])
    np.testing.assert_allclose(wv.lookup(["grizzly+bear"])[0], normalize(exact), atol=1e-5)
    assert parts("polar_bear") == parts("polar bear") == parts("polar+bear") == ["polar", "bear"]


def test_missing_words_are_all_listed_with_the_file(tmp_path, vecs):
    path = write_vec(tmp_path / "v.vec", vecs)
    with pytest.raises(MissingVectorsError) as e:
        load_vectors(path, ["zebra", "okapi", "blue+whale", "cat"])
    assert isinstance(e.value, KeyError)
    assert e.value.missing == ["okapi", "blue+whale"]
    msg = str(e.value)
    assert str(path) in msg and "okapi" in msg and "blue+whale" in msg and "zebra" not in msg
    with pytest.raises(MissingVectorsError, match="okapi"):
        load_vectors(path).lookup(["okapi"])


def test_headerless_txt_of_any_dimension(tmp_path):
    v = {w: RNG.standard_normal(3) for w in ["a", "b", "c"]}
    wv = load_vectors(write_vec(tmp_path / "glove.txt", v, header=False), ["c", "a"])
    assert wv.dim == 3 and set(wv.words) == {"a", "c"}
    out = wv.lookup(["c", "a"])
    np.testing.assert_allclose(out, normalize(np.stack([v["c"], v["a"]])), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)


def test_bad_files_name_the_file(tmp_path, vecs):
    path = write_vec(tmp_path / "v.vec", vecs)
    lines = path.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:4])  # "grizzly" cut short, physical line 4
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"v\.vec: line 4 has 3 numbers for 'grizzly'"):
        load_vectors(path, ["grizzly"])
    with pytest.raises(FileNotFoundError, match="nope.vec"):
        load_vectors(tmp_path / "nope.vec")
    (tmp_path / "empty.vec").write_text("")
    with pytest.raises(ValueError, match="empty.vec"):
        load_vectors(tmp_path / "empty.vec")


def test_wordvectors_subset_and_contains(vecs):
    wv = WordVectors(list(vecs), np.stack(list(vecs.values())))
    assert "grizzly+bear" in wv and "okapi" not in wv
    sub = wv.subset(["zebra", "grizzly+bear"])
    assert sub.words == ["zebra", "grizzly+bear"] and len(sub) == 2
    np.testing.assert_allclose(sub.vectors, wv.lookup(["zebra", "grizzly+bear"]))


def test_bin_model_gives_subword_vectors(tmp_path):
    fasttext = pytest.importorskip("fasttext")
    corpus = tmp_path / "corpus.txt"
    sentences = ["the striped zebra runs with the horse", "the grizzly bear eats fish",
                 "a cat and a dog sleep", "the zebra and the horse graze"]
    corpus.write_text("\n".join(sentences * 40) + "\n")
    model = fasttext.train_unsupervised(str(corpus), dim=10, minCount=1, epoch=2, thread=1,
                                        minn=2, maxn=4, verbose=0)
    model.save_model(str(tmp_path / "tiny.bin"))
    wv = load_vectors(tmp_path / "tiny.bin", ["zebra", "zebras", "grizzly+bear"], top_n=5)
    assert wv.dim == 10 and len(wv.words) >= 5
    oov = wv.lookup(["zebras"])[0]  # not in the corpus: built from character n-grams
    assert "zebras" not in model.words and np.isclose(np.linalg.norm(oov), 1, atol=1e-5)
    np.testing.assert_allclose(oov, normalize(model.get_word_vector("zebras")), atol=1e-5)
    gb = wv.lookup(["grizzly+bear"])[0]
    want = normalize(normalize(model.get_word_vector("grizzly"))
                     + normalize(model.get_word_vector("bear")))
    np.testing.assert_allclose(gb, want, atol=1e-5)


@pytest.mark.shared
def test_real_fasttext_vectors(shared):
    from devise_utils.data.awa2 import read_awa2

    path = shared / "vectors" / "fasttext-wiki-news-subwords-300.awa2-classes.vec"
    wv = load_vectors(path, ["tiger", "lion", "mouse"])
    assert wv.dim == 300 and set(wv.words) == {"tiger", "lion", "mouse"}
    t, lion, mouse = wv.lookup(["tiger", "lion", "mouse"])
    assert t @ lion > t @ mouse + 0.1
    classes = read_awa2(shared / "data" / "awa2-real-mini").classes
    vecs = load_vectors(path, classes).lookup(classes)
    assert vecs.shape == (19, 300)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
