"""Search: HNSW against exact search, persistence, provenance checks, text queries, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import DIM, make_checkpoint, make_images, write_vec

from devise_utils.apps.index import EmbeddingIndex, IndexMismatchError, recall_at_k
from devise_utils.apps.text import content_words, rank_labels, text_vector, vocabulary
from devise_utils.cli import main
from devise_utils.data.vectors import MissingVectorsError, WordVectors, normalize

WORDS = ["zebra", "horse", "tiger", "striped", "animal", "stripes", "grass", "water",
         "the", "Paris", "1999", "spotted", "cat"]


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    return normalize(rng.standard_normal((n, d)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return unit(rng, 3000), unit(rng, 200)


@pytest.fixture(scope="module")
def hnsw(data):
    x, _ = data
    return EmbeddingIndex(x, [f"item{i}" for i in range(len(x))])


# --- the index ---------------------------------------------------------------------------------

def test_hnsw_recall_at_default_parameters(data, hnsw):
    x, q = data
    exact = EmbeddingIndex(x, hnsw.labels, method="exact")
    ids, scores = hnsw.knn(q, 10)
    true_ids, true_scores = exact.knn(q, 10)
    assert recall_at_k(ids, true_ids) >= 0.99
    # scores are cosine similarities, best first, equal to the exact ones where ids agree
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    same = ids == true_ids
    np.testing.assert_allclose(scores[same], true_scores[same], atol=1e-5)
    np.testing.assert_allclose(true_scores[:, 0], (q @ x.T).max(axis=1), atol=1e-5)


def test_exact_knn_matches_argsort():
    rng = np.random.default_rng(1)
    x, q = rng.standard_normal((50, 8)), rng.standard_normal((7, 8))  # not unit: normalised
    ids, scores = EmbeddingIndex(x, list("x" * 50), method="exact").knn(q, 5)
    sim = normalize(q) @ normalize(x).T
    np.testing.assert_array_equal(ids, np.argsort(-sim, axis=1)[:, :5])
    np.testing.assert_allclose(scores, -np.sort(-sim, axis=1)[:, :5], atol=1e-6)
    # k larger than the index is capped
    assert EmbeddingIndex(x[:3], ["a", "b", "c"], method="exact").knn(q, 10)[0].shape == (7, 3)


def test_save_load_round_trip_reapplies_ef_search(data, hnsw, tmp_path):
    _, q = data
    ids, scores = hnsw.knn(q, 10)
    hnsw.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.ef_search == hnsw.ef_search and loaded.labels == hnsw.labels
    ids2, scores2 = loaded.knn(q, 10)
    # identical results need the stored efSearch: nmslib's default (10) finds other neighbours
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(scores2, scores)
    narrow = EmbeddingIndex.load(tmp_path / "idx", ef_search=10)
    assert narrow.ef_search == 10
    assert recall_at_k(narrow.knn(q, 10)[0], ids) < recall_at_k(ids2, ids)


def test_load_errors(tmp_path, hnsw):
    with pytest.raises(FileNotFoundError, match="index.json missing"):
        EmbeddingIndex.load(tmp_path / "nothing")
    hnsw.save(tmp_path / "idx")
    np.save(tmp_path / "idx" / "vectors.npy", hnsw.vectors[:10])
    with pytest.raises(ValueError, match="damaged"):
        EmbeddingIndex.load(tmp_path / "idx")


def test_bad_queries(hnsw):
    with pytest.raises(ValueError, match="64-d but the index holds 300-d"):
        hnsw.knn(np.ones((1, 64)), 3)
    with pytest.raises(ValueError, match="k must be"):
        hnsw.knn(np.ones((1, DIM)), 0)
    with pytest.raises(ValueError, match="labels"):
        EmbeddingIndex(np.ones((3, 4)), ["a"], method="exact")


def test_metadata_mismatch_names_both_files(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    from devise_utils.data.vectors import file_sha256

    idx = EmbeddingIndex(np.eye(4), list("abcd"), {"model": str(a),
                                                   "model_sha256": file_sha256(a)},
                         method="exact")
    idx.save(tmp_path / "idx")
    EmbeddingIndex.load(tmp_path / "idx", model=a)  # the right file passes
    with pytest.raises(IndexMismatchError) as e:
        EmbeddingIndex.load(tmp_path / "idx", model=b)
    assert str(a) in str(e.value) and str(b) in str(e.value)


# --- text side --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wv():
    return WordVectors(WORDS, unit(np.random.default_rng(2), len(WORDS)))


def test_content_words_and_empty_queries():
    assert content_words("A striped animal.") == ["striped", "animal"]
    assert content_words("grizzly+bear in the water") == ["grizzly+bear", "water"]
    with pytest.raises(ValueError, match="empty query"):
        content_words("   ")
    with pytest.raises(ValueError, match="only stop words"):
        content_words("the of a")


def test_text_vector_is_mean_of_content_words(wv):
    v = text_vector("a striped animal", wv)
    expected = normalize(wv.lookup(["striped"])[0] + wv.lookup(["animal"])[0])
    np.testing.assert_allclose(v, expected, atol=1e-6)
    with pytest.raises(MissingVectorsError, match="qwxz, zzyq"):
        text_vector("striped qwxz zzyq", wv)


def test_vocabulary_drops_non_tags(wv):
    words, vecs = vocabulary(wv)
    assert "the" not in words and "Paris" not in words and "1999" not in words
    assert "zebra" in words and len(vecs) == len(words)


def test_rank_labels(wv):
    emb = wv.lookup(["horse", "tiger"]) + 0.01
    ranked = rank_labels(emb, ["zebra", "horse", "tiger"], wv)
    assert [r[0][0] for r in ranked] == ["horse", "tiger"]
    assert all(len(r) == 3 and r[0][1] >= r[1][1] >= r[2][1] for r in ranked)
    with pytest.raises(ValueError, match="no class names"):
        rank_labels(emb, [], wv)


# --- the command line, end to end ----------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    vec = write_vec(d / "words.vec", WORDS, seed=4)
    images = make_images(d / "photos")
    ckpt = make_checkpoint(d / "stage2.pth", vec)
    return {"dir": d, "vec": vec, "images": images, "ckpt": ckpt}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def hits(out: str) -> list[tuple[float, str]]:
    return [(float(s), p) for s, p in (line.split(maxsplit=1) for line in out.splitlines())]


def test_cli_index_and_search(world, capsys):
    from devise_utils.data.vectors import load_vectors
    from devise_utils.model.backbones import load_embedder as load_model
    from devise_utils.model.predict import embed_paths

    d, idx = world["dir"], world["dir"] / "index"
    rc, out, _ = run_cli(capsys, "index", d / "photos", "--model", world["ckpt"], "--out", idx)
    assert rc == 0 and "indexed 6 images" in out
    side = json.loads((idx / "index.json").read_text())
    assert side["meta"]["backbone"] == "squeezenet1_1" and side["dim"] == DIM
    assert len(side["items"]) == 6 and side["meta"]["model_sha256"]

    # text -> image: the printed ranking is the exact cosine ranking
    rc, out, _ = run_cli(capsys, "search", "a striped animal", "--index", idx, "-k", "4")
    assert rc == 0
    got = hits(out)
    model, meta = load_model(world["ckpt"])
    emb, kept = embed_paths(model, [str(p) for p in world["images"]], image_size=64)
    q = text_vector("a striped animal", load_vectors(world["vec"]))
    order = np.argsort(-(emb @ q))[:4]
    assert [p for _, p in got] == [kept[i] for i in order]
    np.testing.assert_allclose([s for s, _ in got], (emb @ q)[order], atol=1e-3)

    # image -> image: the query is left out, the rest ranked by cosine
    query = str(world["images"][1])
    rc, out, _ = run_cli(capsys, "search", "--image", query, "--index", idx, "-k", "3")
    got = hits(out)
    assert rc == 0 and len(got) == 3 and query not in [p for _, p in got]
    sims = emb @ emb[kept.index(query)]
    assert got[0][1] == kept[int(np.argsort(-sims)[1])]


def test_cli_faiss_engine_index_and_search(world, capsys, tmp_path):
    from devise_utils.data.vectors import load_vectors
    from devise_utils.model.backbones import load_embedder as load_model
    from devise_utils.model.predict import embed_paths

    d, idx = world["dir"], tmp_path / "faiss-index"
    rc, out, _ = run_cli(capsys, "index", d / "photos", "--model", world["ckpt"], "--out", idx,
                         "--engine", "faiss")
    assert rc == 0 and "indexed 6 images (faiss ivfpq" in out
    side = json.loads((idx / "index.json").read_text())
    assert side["engine"] == "faiss" and side["meta"]["model_sha256"] and "items" not in side
    assert len((idx / "items.txt").read_text().splitlines()) == 6

    rc, out, _ = run_cli(capsys, "search", "a striped animal", "--index", idx, "-k", "4",
                         "--nprobe", "1")
    got = hits(out)
    model, _ = load_model(world["ckpt"])
    emb, kept = embed_paths(model, [str(p) for p in world["images"]], image_size=64)
    q = text_vector("a striped animal", load_vectors(world["vec"]))
    order = np.argsort(-(emb @ q))[:4]
    assert rc == 0 and [p for _, p in got] == [kept[i] for i in order]
    np.testing.assert_allclose([s for s, _ in got], (emb @ q)[order], atol=2e-3)  # float16

    query = str(world["images"][1])
    rc, out, _ = run_cli(capsys, "search", "--image", query, "--index", idx, "-k", "3")
    assert rc == 0 and len(hits(out)) == 3 and query not in out
    other = make_checkpoint(tmp_path / "other.pth", world["vec"], seed=1)
    rc, _, err = run_cli(capsys, "search", "--image", query, "--index", idx, "--model", other)
    assert rc == 2 and str(other) in err and "stage2.pth" in err
    rc, _, err = run_cli(capsys, "index", d / "photos", "--model", world["ckpt"], "--out",
                         tmp_path / "x", "--engine", "faiss", "--method", "exact")
    assert rc == 2 and "--engine nmslib" in err


def test_cli_search_errors(world, capsys, tmp_path):
    d, idx = world["dir"], tmp_path / "index"
    assert run_cli(capsys, "index", d / "photos", "--model", world["ckpt"], "--out", idx,
                   "--method", "exact")[0] == 0
    rc, _, err = run_cli(capsys, "search", "", "--index", idx)
    assert rc == 2 and "empty query" in err
    rc, _, err = run_cli(capsys, "search", "striped qwxz", "--index", idx)
    assert rc == 2 and "qwxz" in err and "words.vec" in err
    rc, _, err = run_cli(capsys, "search", "--index", idx)
    assert rc == 2 and "either a text query or --image" in err
    # another model or another vector file than the index was built with
    other = make_checkpoint(tmp_path / "other.pth", world["vec"], seed=1)
    rc, _, err = run_cli(capsys, "search", "--image", world["images"][0], "--index", idx,
                         "--model", other)
    assert rc == 2 and str(other) in err and "stage2.pth" in err
    other_vec = write_vec(tmp_path / "other.vec", WORDS, seed=5)
    rc, _, err = run_cli(capsys, "search", "zebra", "--index", idx, "--vectors", other_vec)
    assert rc == 2 and str(other_vec) in err and "words.vec" in err
    rc, _, err = run_cli(capsys, "search", "zebra", "--index", tmp_path / "none")
    assert rc == 2 and "no index" in err


def test_cli_tag_and_label(world, capsys, tmp_path, monkeypatch):
    from devise_utils.apps import vocab

    monkeypatch.setattr(vocab, "VOCAB_DIR", tmp_path / "vocab")  # not the repo's runs/
    img = world["images"][0]
    rc, out, _ = run_cli(capsys, "tag", img, "--model", world["ckpt"], "--top-n", "50",
                         "-k", "3")
    lines = out.splitlines()
    assert rc == 0 and lines[0] == str(img) and len(lines) == 4
    tags = hits("\n".join(lines[1:]))
    assert all(w in WORDS and w not in ("the", "Paris", "1999") for _, w in tags)
    assert tags[0][0] >= tags[1][0] >= tags[2][0]

    rc, out, _ = run_cli(capsys, "label", world["dir"] / "photos", "--model", world["ckpt"],
                         "--classes", "zebra, horse,tiger", "-k", "2")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 6
    assert all(line.split()[1] in ("zebra", "horse", "tiger") for line in lines)
    rc, _, err = run_cli(capsys, "label", world["dir"] / "photos", "--model", world["ckpt"],
                         "--classes", "zebra,unicornx")
    assert rc == 2 and "unicornx" in err


def test_gallery_figure(world):
    from devise_utils.apps.gallery import show_knn, show_tags

    paths = [str(p) for p in world["images"][:4]]
    fig = show_knn("a striped animal", paths, [0.9, 0.8, 0.7, 0.6], ncols=3)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled[0] == "plain\n0.900" and len(titled) == 4
    fig = show_knn("img0", paths[1:], [0.5, 0.4, 0.3], query_image=paths[0])
    assert [ax.get_title() for ax in fig.axes][0] == "query"
    with pytest.raises(ValueError, match="scores"):
        show_knn("x", paths, [0.1])
    assert len(show_tags(paths[0], [("zebra", 0.5), ("horse", 0.4)]).axes) == 2
