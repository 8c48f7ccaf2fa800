"""The static web demo: the folder it writes, and the page in headless Chromium against
Python (same int8 model, same photo): the preprocessed tensor, the embedding, the top-5
tags and the zero-shot label; a screenshot that shows the tag list; time per photo."""

from __future__ import annotations

import itertools
import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
from fakes import make_checkpoint, make_images, write_vec
from PIL import Image

from devise_utils.apps.demo import folder_size, ort_dist, page_results, read_f16, write_demo
from devise_utils.cli import main
from devise_utils.data.vectors import load_vectors
from devise_utils.model.predict import load_image
from devise_utils.report.check import find_chromium
from devise_utils.report.demo_check import check_demo

SHARED = Path(os.environ.get("DEVISE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
#: A real photo larger than the model's input (both resize passes run), when ../shared is here.
REAL_PHOTO = SHARED / "data" / "caltech-zsl-dev" / "JPEGImages" / "anchor" / "anchor_10001.jpg"


def _ort_error() -> str | None:
    try:
        ort_dist()
    except FileNotFoundError as e:
        return str(e)
    return None


needs_browser = pytest.mark.skipif(
    find_chromium() is None, reason="headless Chromium not found (apt-get install -y chromium)")

#: Pronounceable lower-case words: the vocabulary filter keeps only such tags.
WORDS = ["zebra", "horse"] + ["".join(p) for p in itertools.product(
    ["ba", "ko", "mi", "tu", "se", "ra"], ["lo", "den", "pi", "var", "nu", "ssa"],
    ["t", "m", "ck", "ra", "lin"])][:180]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A demo folder from a random 64-px Stage II model (the page does not need accuracy)."""
    if _ort_error():
        pytest.skip(_ort_error())
    tmp = tmp_path_factory.mktemp("demo")
    vec = write_vec(tmp / "words.vec", WORDS, seed=1)
    ckpt = make_checkpoint(tmp / "stage2.pth", vec)
    make_images(tmp / "photos", n=8)
    out = tmp / "site"
    write_demo(ckpt, out, photos=tmp / "photos", n_gallery=6)
    return out


def _photos(folder: Path) -> list[str]:
    """Lossless test photos in three shapes (both passes, horizontal only, vertical only),
    plus the real JPEG when present; paths relative to the served folder."""
    rng = np.random.default_rng(0)
    (folder / "test").mkdir(exist_ok=True)
    names = []
    for w, h in ((150, 97), (150, 64), (64, 129)):
        yy, xx = np.mgrid[:h, :w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) % 64 * 4], -1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / "test" / f"gen{w}x{h}.png")
        names.append(f"test/gen{w}x{h}.png")
    if REAL_PHOTO.is_file():
        (folder / "test" / "real.jpg").write_bytes(REAL_PHOTO.read_bytes())
        names.insert(0, "test/real.jpg")
    return names


def test_folder_contents(demo):
    spec = json.loads((demo / "demo.json").read_text())
    for f in ("index.html", "demo.js", "model.int8.onnx", "export.json", "vocab.txt",
              "ort/ort.wasm.bundle.min.js", "ort/ort-wasm-simd-threaded.wasm"):
        assert (demo / f).is_file(), f
    words = (demo / "vocab.txt").read_text().split()
    assert words == WORDS  # all tag-clean, fewer than --vocab-size
    vocab = read_f16(demo / "vocab.f16", spec["dim"])
    assert vocab.shape == (len(words), 300)
    np.testing.assert_allclose(np.linalg.norm(vocab, axis=1), 1, atol=1e-5)
    assert spec["classes"]["names"] == ["zebra", "horse"]
    assert len(spec["gallery"]["items"]) == 6
    assert all((demo / it["thumb"]).is_file() for it in spec["gallery"]["items"])
    assert spec["input"]["shape"][2:] == [64, 64]


def test_missing_onnxruntime_web_names_npm_ci(tmp_path, capsys):
    vec = write_vec(tmp_path / "w.vec", WORDS, seed=1)
    ckpt = make_checkpoint(tmp_path / "stage2.pth", vec)
    code = main(["demo", "--model", str(ckpt), "--out", str(tmp_path / "site"),
                 "--node-modules", str(tmp_path / "none")])
    assert code == 2
    assert "npm ci" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


@needs_browser
def test_page_matches_python(demo, tmp_path):
    photos = _photos(demo)
    shot = tmp_path / "page.png"
    classes = "zebra, horse, balot+kodenm"  # a+b: the unit mean of both words
    results = check_demo(demo, photos, screenshot=shot, query="zebra", classes=classes,
                         repeat=5)
    wv = load_vectors(demo.parent / "words.vec", words=["balot+kodenm"])
    for r in results:
        assert r["state"] == "done", r["status"]
        py = page_results(demo, demo / r["photo"], k=5)
        x = load_image(str(demo / r["photo"]), 64).numpy().ravel()
        js = np.asarray(r["input"], np.float32)
        # Pillow's resample, reproduced: lossless photos give the same float32 tensor; a
        # JPEG may differ by the decoder's rounding (1/255 before normalisation).
        if r["photo"].endswith(".png"):
            assert np.array_equal(js, x), f"{r['photo']}: {np.abs(js - x).max()}"
        else:
            assert np.abs(js - x).max() <= 1 / 255 / 0.225 + 1e-6
        assert r["tags"][:5] == [w for w, _ in py["tags"]], r["photo"]
        e, p = np.asarray(r["result"]["embedding"]), np.asarray(py["embedding"])
        assert e @ p / np.linalg.norm(e) / np.linalg.norm(p) > 0.9999
        labels = dict(r["result"]["labels"])
        assert r["label"] == max(labels, key=labels.get)
        assert labels["zebra"] == pytest.approx(dict(py["labels"])["zebra"], abs=1e-5)
        two_words = float(wv.lookup(["balot+kodenm"])[0] @ p) / np.linalg.norm(p)
        assert labels["balot+kodenm"] == pytest.approx(two_words, abs=2e-3)
    spec = json.loads((demo / "demo.json").read_text())
    zebra = read_f16(demo / "classes.f16", spec["dim"])[0]
    gallery = np.argsort(-(read_f16(demo / "gallery.f16", spec["dim"]) @ zebra), kind="stable")
    assert results[0]["hits"] == gallery[:len(results[0]["hits"])].tolist() != []
    left, top, w, h = (int(v) for v in results[0]["tags_box"])
    with Image.open(shot) as im:
        area = np.asarray(im.convert("L").crop((left, top, left + w, top + h)))
    assert h > 50 and (area < 200).mean() > 0.02, "the tag list is blank in the screenshot"
    first, *runs = (run["total_ms"] for run in results[0]["result"]["runs"])
    print(f"\nin-browser time per photo: {statistics.median(runs):.1f} ms (median of "
          f"{len(runs)} after the first, {first:.1f} ms); folder {folder_size(demo) / 1e6:.1f} MB")

