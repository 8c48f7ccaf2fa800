"""The faiss IVF-PQ engine: chunked build, recall against exact search, on-disk reopening,
provenance refusal, tiny galleries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from devise_utils.apps.disk_store import Labels, VectorStore, write_gallery
from devise_utils.apps.faiss_index import (
    FaissIndex,
    auto_params,
    build_faiss_index,
    quiet_stdout,
)
from devise_utils.apps.index import EmbeddingIndex, IndexMismatchError, _exact_knn, recall_at_k
from devise_utils.apps.search import load_index
from devise_utils.data.vectors import normalize

DIM = 48


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * normalize(rng.standard_normal((n, DIM)))
    return normalize(x)


@pytest.fixture(scope="module")
def data():
    centres = normalize(np.random.default_rng(0).standard_normal((30, DIM)))
    return clustered(4000, 1, centres), clustered(100, 2, centres)


def chunks(x: np.ndarray, size: int):
    for s in range(0, len(x), size):
        yield x[s:s + size], [f"img{i}.jpg" for i in range(s, min(s + size, len(x)))]


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    x, _ = data
    folder = tmp_path_factory.mktemp("faiss") / "index"
    meta = {"model": "stage2.pth", "model_sha256": "a" * 64}
    # many small chunks and blocks: the streaming path, not one big add
    return build_faiss_index(chunks(x, 700), folder, meta, add_chunk=1500)


def test_recall_against_exact_search_at_the_tuned_nprobe(data, built):
    x, q = data
    assert len(built) == len(x) and built.dim == DIM
    tuning = built.info["tuning"]
    assert tuning["recall"] >= 0.95 and built.nprobe == tuning["nprobe"] < built.ivf.nlist
    ids, scores = built.knn(q, 10)
    true_ids, true_scores = _exact_knn(x, q, 10)
    assert recall_at_k(ids, true_ids) >= 0.9
    # exact cosines (float16 storage) of the neighbours found, best first
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", x[ids], q), atol=2e-3)
    same = ids == true_ids
    np.testing.assert_allclose(scores[same], true_scores[same], atol=2e-3)
    # a scan of one list finds fewer true neighbours than the tuned nprobe
    built.set_nprobe(1)
    assert recall_at_k(built.knn(q, 10)[0], true_ids) < recall_at_k(ids, true_ids)
    built.set_nprobe(tuning["nprobe"])


def test_labels_follow_ids_across_chunks(data, built):
    x, _ = data
    for i in (0, 699, 700, 2999, 3999):  # chunk and block boundaries
        label, score = built.search(x[i], 1)[0][0]
        assert label == f"img{i}.jpg" and score == pytest.approx(1.0, abs=2e-3)


def test_reopened_from_disk_memory_mapped(data, built, capfd):
    import faiss

    x, q = data
    capfd.readouterr()
    again = FaissIndex.load(built.source, nprobe=built.nprobe)
    assert capfd.readouterr().out == ""  # faiss's printf on opening on-disk lists is muted
    lists = faiss.downcast_InvertedLists(again.ivf.invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)
    # every code is in lists.ivfdata (m bytes + an 8-byte id each), mapped, not read
    assert sum(lists.list_size(i) for i in range(lists.nlist)) == len(x)
    codes = len(x) * (again.params["m"] + 8)
    assert (built.source / "lists.ivfdata").stat().st_size >= codes
    assert isinstance(again.labels, Labels) and again.labels[-1] == "img3999.jpg"
    a, b = built.knn(q, 10), again.knn(q, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    assert load_index(built.source).engine == "faiss"  # dispatched by the sidecar
    with pytest.raises(ValueError, match="faiss index, not an nmslib one"):
        EmbeddingIndex.load(built.source)


def test_another_model_file_is_refused(tmp_path, data):
    x, _ = data
    ckpt, other = tmp_path / "stage2.pth", tmp_path / "other.pth"
    ckpt.write_bytes(b"model one")
    other.write_bytes(b"model two")
    from devise_utils.data.vectors import file_sha256

    meta = {"model": str(ckpt), "model_sha256": file_sha256(ckpt)}
    build_faiss_index(chunks(x[:500], 500), tmp_path / "idx", meta)
    assert len(FaissIndex.load(tmp_path / "idx", model=ckpt)) == 500
    with pytest.raises(IndexMismatchError, match="other.pth") as e:
        load_index(tmp_path / "idx", model=other)
    assert "stage2.pth" in str(e.value)


def test_tiny_galleries(tmp_path):
    x = normalize(np.random.default_rng(3).standard_normal((5, DIM)))
    for n in (1, 5):
        index = build_faiss_index(chunks(x[:n], 2), tmp_path / f"n{n}")
        ids, scores = index.knn(x[:2], 10)
        assert ids.shape == (2, n)  # k is capped at the gallery
        np.testing.assert_array_equal(ids, _exact_knn(x[:n], x[:2], n)[0])
        assert index.info["params"]["nlist"] == 1


def test_bad_input(tmp_path, built):
    with pytest.raises(ValueError, match="32-d but the index holds 48-d"):
        built.knn(np.ones((1, 32)), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        built.knn(np.ones((1, DIM)), 0)
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        built.set_nprobe(0)
    with pytest.raises(FileNotFoundError, match="no index at .* --engine faiss"):
        FaissIndex.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="at least one vector"):
        build_faiss_index(iter([]), tmp_path / "empty")
    with pytest.raises(ValueError, match="newline"):
        write_gallery([(np.ones((1, 4)), ["a\nb"])], tmp_path)


def test_damaged_folder_is_named(tmp_path, data):
    x, _ = data
    folder = tmp_path / "idx"
    build_faiss_index(chunks(x[:300], 300), folder)
    side = json.loads((folder / "index.json").read_text())
    (folder / "lists.ivfdata").unlink()
    with pytest.raises(FileNotFoundError, match="lists.ivfdata is missing"):
        FaissIndex.load(folder)
    with pytest.raises(ValueError, match="damaged"):
        VectorStore(folder / "vectors.f16", side["n"] + 1, side["dim"])


def test_auto_params_scale_with_the_gallery():
    small, large = auto_params(4000, 300), auto_params(10_000_000, 300)
    assert small["nlist"] <= 4000 // 39 and large["nlist"] == 8192
    assert large["m"] == 75 and large["nbits"] == 8
    assert large["train_n"] >= 39 * large["nlist"]


def test_quiet_stdout_mutes_c_printf(capfd):
    import ctypes

    with quiet_stdout():
        ctypes.CDLL(None).printf(b"from C\n")
    print("from Python")
    assert capfd.readouterr().out == "from Python\n"


def test_tuning_deepens_the_rerank_when_pq_caps_recall(data, tmp_path):
    x, q = data
    # 2-bit, one-codebook PQ: its ranking is too coarse for 10 candidates to hold the top 10
    index = build_faiss_index(chunks(x, 4000), tmp_path / "coarse", params={"m": 1, "nbits": 2},
                              rerank=10)
    tried = index.info["tuning"]["tried"]
    assert len(tried) > 1 and tried[0]["rerank"] == 10 and index.rerank > 10
    assert index.info["rerank"] == index.rerank and tried[0]["recall"] < index.info["tuning"][
        "recall"]
    # a sweep whose recall the candidates cap stops there instead of scanning every list
    assert tried[0]["nprobe"] < index.ivf.nlist // 4
    true_ids = _exact_knn(x, q, 10)[0]
    assert recall_at_k(index.knn(q, 10)[0], true_ids) > recall_at_k(
        FaissIndex.load(index.source, rerank=10).knn(q, 10)[0], true_ids)


def _rss_file_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile line")


def test_vector_store_rows_in_released_batches(tmp_path):
    x = normalize(np.random.default_rng(4).standard_normal((20_000, DIM)))
    n, dim = write_gallery(chunks(x, 20_000), tmp_path)
    ids = np.random.default_rng(5).integers(0, n, (40, 250))
    whole = VectorStore(tmp_path / "vectors.f16", n, dim).rows(ids)
    assert whole.shape == (40, 250, DIM)
    np.testing.assert_allclose(whole, x[ids], atol=2e-3)
    batched = VectorStore(tmp_path / "vectors.f16", n, dim, release_every=999)
    np.testing.assert_array_equal(batched.rows(ids), whole)  # batch boundaries mid-row
    np.testing.assert_array_equal(batched.rows(ids[3]), whole[3])


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="Linux only")
def test_vector_store_release_unmaps_touched_pages(tmp_path):
    # 20k x 48 float16 = 1.9 MB, in the page cache once written: reading every row maps it
    x = normalize(np.random.default_rng(6).standard_normal((20_000, DIM)))
    n, dim = write_gallery(chunks(x, 20_000), tmp_path)
    store = VectorStore(tmp_path / "vectors.f16", n, dim)
    before = _rss_file_mb()
    store.rows(np.arange(n))
    assert _rss_file_mb() - before > 1.5
    store.release()
    assert _rss_file_mb() - before < 0.5
    np.testing.assert_allclose(store.rows(np.arange(3)), x[:3], atol=2e-3)  # still readable
    bounded = VectorStore(tmp_path / "vectors.f16", n, dim, release_every=512)
    before = _rss_file_mb()
    bounded.rows(np.arange(n))
    assert _rss_file_mb() - before < 0.5  # released after each batch
