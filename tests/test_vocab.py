"""The vocabulary index behind `tag`: built once per vector file, reused, refused for another."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fakes import make_checkpoint, make_images, write_vec

from devise_utils.apps import vocab
from devise_utils.apps.index import IndexMismatchError, _exact_knn, recall_at_k
from devise_utils.apps.text import vocabulary
from devise_utils.cli import main
from devise_utils.data.vectors import file_sha256, load_vectors, normalize

WORDS = ["zebra", "horse", "tiger", "striped", "animal", "stripes", "grass", "water", "the",
         "Paris", "1999", "spotted", "cat", "dog", "lion", "mane", "savanna", "river", "tree"]
TAGS = [w for w in WORDS if w not in ("the", "Paris", "1999")]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """Default index location (runs/vocab) moved into the test's temporary folder."""
    r = tmp_path / "runs-vocab"
    monkeypatch.setattr(vocab, "VOCAB_DIR", r)
    return r


@pytest.fixture
def vec(tmp_path):
    return write_vec(tmp_path / "words.vec", WORDS, seed=1)


def test_build_saves_under_the_sha_then_reuses_without_rebuilding(vec, root, monkeypatch):
    sha = file_sha256(vec)
    built = vocab.open_index(vec)
    assert built.built and built.source == root / f"{sha[:16]}-all"
    assert sorted(built.words) == sorted(TAGS)  # search.vocabulary's cleaning: no the/Paris/1999
    side = (built.source / "vocab.json").read_text()
    assert sha in side and str(vec.resolve()) in side
    graph = built.source / "ivf.faiss"
    stamp = graph.stat().st_mtime_ns

    def no_rebuild(*a, **k):
        raise AssertionError("the index was rebuilt instead of loaded")

    monkeypatch.setattr(vocab.VocabIndex, "build", classmethod(no_rebuild))
    loaded = vocab.open_index(vec)
    assert not loaded.built and loaded.words == built.words
    assert graph.stat().st_mtime_ns == stamp
    q = np.random.default_rng(0).standard_normal((4, 300))
    for (a_ids, a_s), (b_ids, b_s) in [(built.knn(q, 5), loaded.knn(q, 5))]:
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_allclose(a_s, b_s, atol=1e-6)
    # options are part of the key: the top-5 vocabulary is another index
    with pytest.raises(AssertionError, match="rebuilt"):
        vocab.open_index(vec, top_n=5)


def test_search_is_cosine_ranking_best_first(vec, root):
    v = vocab.open_index(vec)
    wv = load_vectors(vec)
    words, vecs = vocabulary(wv)
    q = normalize(wv.lookup(["zebra"]) + 0.3 * wv.lookup(["grass"]))
    hits = vocab.tag_images(q, v, k=4)[0]
    sims = normalize(vecs) @ q[0]
    order = np.argsort(-sims)[:4]
    assert [w for w, _ in hits] == [words[i] for i in order]
    np.testing.assert_allclose([s for _, s in hits], sims[order], atol=1e-5)
    assert [w for w, _ in vocab.tag_images(q, v, k=4, exact=True)[0]] == [w for w, _ in hits]
    assert len(v.search(q, k=100)[0]) == len(TAGS)  # k is capped at the vocabulary
    with pytest.raises(ValueError, match="50-d but the vocabulary"):
        v.knn(np.ones((1, 50)), 3)


def test_another_vector_file_is_refused(tmp_path, vec, root):
    other = write_vec(tmp_path / "other.vec", WORDS, seed=2)
    folder = tmp_path / "my-vocab"
    vocab.open_index(vec, folder=folder)
    with pytest.raises(IndexMismatchError) as e:
        vocab.open_index(other, folder=folder)
    msg = str(e.value)
    assert str(vec.resolve()) in msg and str(other) in msg and "--rebuild-vocab" in msg
    with pytest.raises(IndexMismatchError):
        vocab.VocabIndex.load(folder, vectors=other)
    # by default each file has its own folder, so there is no clash ...
    assert vocab.open_index(other).source.parent == root
    # ... and rebuild replaces a folder's index with the new file's
    v = vocab.open_index(other, folder=folder, rebuild=True)
    assert v.built and v.meta["vectors_sha256"] == file_sha256(other)
    assert not vocab.open_index(other, folder=folder).built


def test_damaged_or_missing_folders(tmp_path, vec, root):
    with pytest.raises(FileNotFoundError, match="no vocabulary index"):
        vocab.VocabIndex.load(tmp_path / "nothing")
    v = vocab.open_index(vec)
    (v.source / "words.txt").write_text("zebra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="damaged"):
        vocab.VocabIndex.load(v.source)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vocab.open_index(tmp_path / "missing.vec")


def test_nprobe_is_tuned_stored_and_overridable(vec, root):
    v = vocab.open_index(vec)
    tuning = v.meta["tuning"]
    assert v.nprobe == tuning["nprobe"] and tuning["recall"] >= vocab.TARGET_RECALL
    loaded = vocab.VocabIndex.load(v.source)
    assert loaded.nprobe == v.nprobe
    assert vocab.open_index(vec, nprobe=1).nprobe == 1
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        loaded.set_nprobe(0)


def test_an_older_format_is_rebuilt_in_its_default_folder_only(vec, root, tmp_path):
    def make_old(folder):
        side = folder / "vocab.json"
        side.write_text(json.dumps({**json.loads(side.read_text()), "format": 1}))

    v = vocab.open_index(vec)
    make_old(v.source)
    with pytest.raises(ValueError, match="format 2"):
        vocab.VocabIndex.load(v.source)
    heard = []
    again = vocab.open_index(vec, log=heard.append)
    assert again.built and again.source == v.source and "older format" in heard[0]
    mine = tmp_path / "mine"
    vocab.open_index(vec, folder=mine)
    make_old(mine)  # a folder the user named is not replaced behind their back
    with pytest.raises(ValueError, match="--rebuild-vocab"):
        vocab.open_index(vec, folder=mine)
    assert vocab.open_index(vec, folder=mine, rebuild=True).built


def test_sha256_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "big.vec"
    f.write_bytes(b"a" * (2 << 20))
    sha = vocab.cached_sha256(f, root=tmp_path)
    assert sha == file_sha256(f) and (tmp_path / "sha256-cache.json").is_file()
    real = vocab.file_sha256
    monkeypatch.setattr(vocab, "file_sha256", lambda p: pytest.fail("hashed again"))
    assert vocab.cached_sha256(f, root=tmp_path) == sha  # served from the cache
    monkeypatch.setattr(vocab, "file_sha256", real)
    f.write_bytes(b"b" * (2 << 20))  # same size, new content and mtime
    assert vocab.cached_sha256(f, root=tmp_path) == file_sha256(f) != sha


@pytest.mark.shared
def test_recall_at_10_on_real_glove(shared, tmp_path):
    path = shared / "vectors" / "glove-6b-50d.top20k.vec"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    v = vocab.open_index(path, root=tmp_path)
    words, vecs = vocabulary(load_vectors(path))
    assert v.words == words and len(v) > 15_000
    # image-embedding-like queries: a blend of two real words plus noise, not a word itself
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(words), (2, 500))
    q = normalize(normalize(vecs[a] + vecs[b]) + 0.3 * normalize(rng.standard_normal((500, 50))))
    truth, _ = _exact_knn(normalize(vecs), q, 10)
    found, _ = v.knn(q, 10)
    assert recall_at_k(found, truth) >= 0.99
    np.testing.assert_array_equal(v.knn(q, 10, exact=True)[0][:, 0], truth[:, 0])


def test_importing_nmslib_prints_nothing():
    code = ("import sys; from devise_utils.apps.index import import_nmslib; m = import_nmslib(); "
            "print('after', file=sys.stderr); print(m.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stderr == "after\n" and r.stdout == "nmslib\n"


# --- the command line ------------------------------------------------------------------------

def test_cli_tag_builds_once_then_reuses(tmp_path, vec, root, capsys):
    images = make_images(tmp_path / "photos", n=2)
    ckpt = make_checkpoint(tmp_path / "stage2.pth", vec)
    folder = tmp_path / "vocab-index"
    argv = ["tag", str(images[0]), str(images[1]), "--model", str(ckpt), "-k", "3",
            "--vocab-index", str(folder)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "building the vocabulary index" in err and (folder / "vocab.json").is_file()
    lines = out.splitlines()
    assert lines[0] == str(images[0]) and lines[4] == str(images[1]) and len(lines) == 8
    tags = [line.split() for line in lines[1:4]]
    assert all(w in TAGS for _, w in tags) and float(tags[0][0]) >= float(tags[2][0])

    assert main(argv) == 0
    out2, err2 = capsys.readouterr()
    assert out2 == out and "building" not in err2 and f"vocabulary index {folder}" in err2
    assert main([*argv, "--method", "exact"]) == 0
    assert capsys.readouterr()[0] == out

    other = write_vec(tmp_path / "other.vec", WORDS, seed=7)
    assert main([*argv, "--vectors", str(other)]) == 2
    err = capsys.readouterr()[1]
    assert str(other) in err and str(vec.resolve()) in err and "--rebuild-vocab" in err
