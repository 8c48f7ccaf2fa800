"""Mobile export: ONNX fp32 parity, int8 size and agreement, TorchScript, the table, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import make_checkpoint, make_images, write_vec

from devise_utils.cli import main
from devise_utils.export import (
    as_batch,
    export_all,
    mobile_table,
    onnx_embed,
    quantize_int8,
    torch_embed,
)

SIZE = 64


@pytest.fixture(scope="module")
def model():
    import torch

    from devise_utils.models import build_model

    torch.manual_seed(0)
    return build_model("squeezenet1_1", 300).eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((12, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(model, images, tmp_path_factory):
    return export_all(model, tmp_path_factory.mktemp("export"), SIZE, images, name="sq")


def test_onnx_fp32_parity_and_dynamic_batch(model, images, exported):
    assert exported["fp32"]["min_cosine"] >= 0.999
    for n in (1, 5):  # exported with batch 1, runs any batch size
        out = onnx_embed(exported["onnx_fp32"], images[:n])
        np.testing.assert_allclose(out, torch_embed(model, images[:n]), rtol=1e-3, atol=1e-3)


def test_int8_is_smaller_and_agrees(exported):
    from pathlib import Path

    fp32, int8 = Path(exported["onnx_fp32"]), Path(exported["onnx_int8"])
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights: ~4x smaller
    assert exported["int8"]["mean_cosine"] > 0.98
    assert exported["int8"]["min_cosine"] <= exported["int8"]["mean_cosine"] <= 1.0
    assert not list(int8.parent.glob("*.pre.onnx")), "quantiser temp files left behind"


def test_torchscript_parity(exported):
    assert exported["torchscript"].endswith(".ptl")
    assert exported["torchscript_parity"]["min_cosine"] >= 0.999


def test_mobile_table(model, images):
    t = mobile_table({"sq": model}, SIZE, images[:6], runs=3)
    assert list(t["format"]) == ["onnx-fp32", "onnx-int8", "torchscript"]
    assert (t["params"] == sum(p.numel() for p in model.parameters())).all()
    assert (t["latency_ms"] > 0).all() and (t["mb"] > 0).all()
    by = t.set_index("format")
    assert by.loc["onnx-int8", "mb"] < by.loc["onnx-fp32", "mb"]
    assert by.loc["onnx-fp32", "min_cosine"] >= 0.999


def test_bad_inputs(tmp_path, exported):
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        as_batch(np.zeros((2, 3, 32, 32)), SIZE)
    with pytest.raises(ValueError, match="no sample images"):
        as_batch([], SIZE)
    with pytest.raises(ValueError, match="calibration needs sample images"):
        quantize_int8(exported["onnx_fp32"], tmp_path / "q.onnx", np.zeros((0, 3, SIZE, SIZE)))


def test_cli_export(tmp_path, capsys):
    vec = write_vec(tmp_path / "words.vec", ["zebra", "horse"], seed=0)
    ckpt = make_checkpoint(tmp_path / "stage2.pth", vec, image_size=SIZE)
    make_images(tmp_path / "photos", n=8)
    out = tmp_path / "mobile"
    rc = main(["export", "--model", str(ckpt), "--out", str(out), "--int8",
               "--images", str(tmp_path / "photos")])
    printed = capsys.readouterr().out
    assert rc == 0 and "fp32 parity" in printed
    info = json.loads((out / "export.json").read_text())
    assert info["fp32"]["min_cosine"] >= 0.999 and info["n_samples"] == 8
    assert info["input"]["shape"] == ["batch", 3, SIZE, SIZE] and info["dim"] == 300
    for key in ("onnx_fp32", "onnx_int8", "torchscript"):
        assert (out / info[key].split("/")[-1]).is_file()
    # the zero-shot hook reads image paths in batches at the exported size
    from devise_utils.search import image_files

    paths = image_files(tmp_path / "photos")
    by_path = onnx_embed(info["onnx_int8"], paths, batch_size=3)
    assert by_path.shape == (8, 300)
    np.testing.assert_allclose(by_path, onnx_embed(info["onnx_int8"], as_batch(paths, SIZE)),
                               atol=1e-5)
    (tmp_path / "empty").mkdir()
    rc = main(["export", "--model", str(ckpt), "--out", str(out), "--images",
               str(tmp_path / "empty")])
    assert rc == 2 and "no images" in capsys.readouterr().err


@pytest.mark.shared
def test_int8_on_real_photos_and_imagenet_weights(shared, tmp_path):
    """Real ImageNet SqueezeNet on real photos at 224 px: int8 stays close to fp32."""
    import torch

    from devise_utils.models import build_model
    from devise_utils.search import image_files

    torch.manual_seed(0)
    weights = shared / "weights" / "squeezenet1_1-imagenet-onnxzoo.pth"
    model = build_model("squeezenet1_1", 300, weights=str(weights)).eval()
    files = image_files(shared / "data" / "awa2-real-mini" / "JPEGImages")[::34]  # all classes
    rep = export_all(model, tmp_path, 224, files, torchscript=False)
    assert rep["fp32"]["min_cosine"] >= 0.999
    assert rep["int8"]["mean_cosine"] >= 0.99
