"""The zero-shot head label, tag and the export use, on hand-made cases with answers worked
out by hand (the run-level check, that a head scores what the metrics report, is in
test_train.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes import make_images

from devise_utils.apps.infer import Embedder
from devise_utils.apps.search import tag_with_head
from devise_utils.study.head import ZeroShotHead


def _ridge_head() -> ZeroShotHead:
    # two seen classes: semantics e1, e2 -> prototypes 2*e1, 2*e2 (3-d features)
    return ZeroShotHead(method="prototypes", features="stage1_penultimate", rows_from="ridge",
                        seen=["cat", "dog"], S_seen=np.eye(2), T_seen=2 * np.eye(2, 3),
                        ridge={"lam": 1e-3, "kernel": "linear", "gamma": 1.0})


def test_ridge_rows_by_hand_and_seen_classes_keep_their_own():
    head = _ridge_head()
    # centred linear ridge: semantics mean (.5, .5), targets mean (1, 1, 0); the new class
    # (1, 1) sits on the mean, so K(new, seen) = 0 and its prototype is the targets' mean
    rows = head.class_rows(["fox", "dog"], np.array([[1.0, 1.0], [0.3, 0.1]]))
    np.testing.assert_allclose(rows[0], [1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(rows[1], [0, 2, 0])          # dog: its own prototype
    assert head.semantic_dim == 2
    with pytest.raises(ValueError, match="one semantics row per name"):
        head.class_rows(["fox"])


def test_affine_and_conse_image_vectors_by_hand():
    head = ZeroShotHead(method="eszsl", features="backbone", mean=np.array([1.0, 0.0]),
                        scale=np.array([2.0, 1.0]), M=np.array([[1.0, 0.0], [1.0, 1.0]]),
                        c=np.array([0.0, 1.0]))
    # ((3, 2) - (1, 0)) / (2, 1) = (1, 2); @ M = (3, 2); + c = (3, 3)
    np.testing.assert_allclose(head.image_vectors(np.array([[3.0, 2.0]])), [[3, 3]])
    conse = ZeroShotHead(method="conse", features="stage1_logits", conse_top=2,
                         seen=["a", "b", "c"], seen_vecs=np.eye(3))
    # softmax(0, log 3, -inf-ish) ~ (.25, .75, 0): top 2 = .25 e1 + .75 e2
    v = conse.image_vectors(np.array([[0.0, np.log(3.0), -50.0]]))
    np.testing.assert_allclose(v, [[0.25, 0.75, 0.0]], atol=1e-6)


def test_fixed_rows_refuse_a_new_name_and_the_file_round_trips(tmp_path):
    head = ZeroShotHead(method="gcn", features="stage1_penultimate", rows_from="fixed",
                        classes=["cat", "dog"], rows=np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_array_equal(head.class_rows(["dog"]), [[0, 1]])
    with pytest.raises(ValueError, match="new WordNet graph"):
        head.class_rows(["fox"])
    again = ZeroShotHead.load(head.save(tmp_path / "head.npz"))
    assert again.classes == head.classes and again.rows_from == "fixed"
    np.testing.assert_array_equal(again.rows, head.rows)
    (tmp_path / "bad.npz").write_bytes(b"not a head")
    with pytest.raises(ValueError, match="not a zero-shot head"):
        ZeroShotHead.load(tmp_path / "bad.npz")


def test_tag_with_head_merges_chunks_into_the_exact_top_k(tmp_path):
    paths = [str(p) for p in make_images(tmp_path / "img", n=4, size=16)]
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    rng = np.random.default_rng(0)
    V = rng.standard_normal((len(words), 2))
    vec = tmp_path / "w.vec"
    vec.write_text(f"{len(words)} 2\n" + "".join(
        f"{w} {a:.6f} {b:.6f}\n" for w, (a, b) in zip(words, V)))
    # the features of an image: its mean colour (3-d), as a fake feature model
    model = Embedder(path=Path("fake.onnx"), image_size=16, dim=3, lineage="x", format="fake",
                     run=lambda x: x.mean((2, 3)), head=_ridge_head())
    got = tag_with_head(model, paths, vec, k=3, chunk=2)
    F, _ = model.embed_paths(paths, normalized=False)
    Vr = np.array([[float(t) for t in line.split()[1:]]
                   for line in vec.read_text().splitlines()[1:]])
    Vr /= np.linalg.norm(Vr, axis=1, keepdims=True)       # a word's semantics: unit
    S = model.head.scores(model.head.image_vectors(F), model.head.class_rows(words, Vr))
    for (_, tags), s in zip(got, S):
        assert [w for w, _ in tags] == [words[j] for j in np.argsort(-s)[:3]]
        np.testing.assert_allclose([v for _, v in tags], np.sort(s)[::-1][:3], rtol=1e-6)


def test_label_transductive_refines_the_rows_on_the_folder(tmp_path):
    from devise_utils.apps.search import label_folder
    from devise_utils.data.vectors import WordVectors
    from devise_utils.study.transfer import kmeans_refine

    paths = make_images(tmp_path / "img", n=6, size=16)
    wv = WordVectors(["fox", "owl"], np.array([[1.0, 0.2], [0.1, 1.0]], np.float32))
    model = Embedder(path=Path("fake.onnx"), image_size=16, dim=3, lineage="x", format="fake",
                     run=lambda x: x.mean((2, 3)), head=_ridge_head())
    got = label_folder(model, tmp_path / "img", ["fox", "owl"], wv, transductive=True)
    F, kept = model.embed_paths([str(p) for p in sorted(paths)], normalized=False)
    G = model.head.image_vectors(F)
    R = model.head.class_rows(["fox", "owl"], wv.vectors / np.linalg.norm(
        wv.vectors, axis=1, keepdims=True))
    P = kmeans_refine(G, R, metric="cosine")
    S = (G / np.linalg.norm(G, axis=1, keepdims=True)) @ (
        P / np.linalg.norm(P, axis=1, keepdims=True)).T
    for p, s in zip(kept, S):
        assert [c for c, _ in got[p]] == [["fox", "owl"][j] for j in np.argsort(-s)]
        np.testing.assert_allclose(sorted(v for _, v in got[p])[::-1], np.sort(s)[::-1],
                                   rtol=1e-5)
    model.head.metric = "dot"
    with pytest.raises(ValueError, match="refines rows scored by cosine"):
        label_folder(model, tmp_path / "img", ["fox", "owl"], wv, transductive=True)
