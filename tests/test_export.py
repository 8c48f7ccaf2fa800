"""Mobile export: the model as exported, ONNX fp32 parity and int8 size, ExecuTorch .pte
(fp32 parity and int8 through ExecuTorch's own runtime), TorchScript, the table, the CLI,
and what int8 costs in zero-shot accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import make_checkpoint, make_images, write_vec

from devise_utils.apps.executorch_export import executorch_error
from devise_utils.apps.export import export_all, torch_embed
from devise_utils.apps.mobile_bench import mobile_table, quantized_zero_shot
from devise_utils.apps.mobile_graph import kept_bn_as_affine, mobile_ready
from devise_utils.apps.onnx_export import compact_onnx, export_onnx, quantize_int8
from devise_utils.apps.runtime import onnx_embed
from devise_utils.cli import main
from devise_utils.model.predict import as_batch

SIZE = 64
#: The size goal: int8 SqueezeNet 1.1 DeViSE (head_hidden 512, final BN, 300-d) on disk.
INT8_GOAL_BYTES = 1_500_000

needs_executorch = pytest.mark.skipif(executorch_error() is not None,
                                      reason=str(executorch_error()))


@pytest.fixture(scope="module")
def model():
    import torch

    from devise_utils.model.backbones import build_model

    torch.manual_seed(0)
    return build_model("squeezenet1_1", 300).eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((12, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(model, images, tmp_path_factory):
    return export_all(model, tmp_path_factory.mktemp("export"), SIZE, images, name="sq")


def _tiny():
    """A small conv net (image -> 300-d) whose ExecuTorch export takes seconds."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 300)).eval()


def _perturb_batchnorms(model) -> None:
    """Give every head BatchNorm trained-looking statistics (the defaults fold trivially)."""
    import torch

    g = torch.Generator().manual_seed(1)
    for bn in model.head.modules():
        if isinstance(bn, torch.nn.BatchNorm1d):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


# --- the model as exported -------------------------------------------------------------------

@pytest.mark.parametrize("final_bn", [True, False])
def test_mobile_ready_is_the_same_function_without_batchnorm(images, final_bn):
    import torch

    from devise_utils.model.backbones import build_model

    torch.manual_seed(0)
    m = build_model("squeezenet1_1", 50, head_hidden=64, final_bn=final_bn).eval()
    _perturb_batchnorms(m)
    ready = mobile_ready(m)
    kinds = [type(x).__name__ for x in ready.head]
    # BN -> Linear stays (folding it spoils int8), Linear -> BN folds, dropout goes
    assert kinds == ["GlobalConcatPool", "BatchNorm1d", "Linear", "ReLU", "BatchNorm1d",
                     "Linear"], kinds
    np.testing.assert_allclose(torch_embed(ready, images), torch_embed(m, images),
                               rtol=1e-4, atol=1e-4)
    assert not m.training and type(m.head[0]).__name__ == "AdaptiveConcatPool2d"  # untouched
    # for PT2E int8 the kept BatchNorms become fixed affines: no batch norm in the graph
    # (torchao then skips its slow conv-BN fold pass), still the same function
    affine = kept_bn_as_affine(mobile_ready(m))
    assert [type(x).__name__ for x in affine.head].count("FixedAffine") == 2
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in affine.modules())
    np.testing.assert_allclose(torch_embed(affine, images), torch_embed(m, images),
                               rtol=1e-4, atol=1e-4)


# --- ONNX ------------------------------------------------------------------------------------

def test_onnx_fp32_parity_and_dynamic_batch(model, images, exported):
    assert exported["fp32"]["min_cosine"] >= 0.999
    for n in (1, 5):  # exported with batch 1, runs any batch size
        out = onnx_embed(exported["onnx_fp32"], images[:n])
        np.testing.assert_allclose(out, torch_embed(model, images[:n]), rtol=1e-3, atol=1e-3)


def test_int8_is_smaller_and_agrees(exported):
    fp32, int8 = Path(exported["onnx_fp32"]), Path(exported["onnx_int8"])
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights: ~4x smaller
    assert exported["int8"]["mean_cosine"] > 0.98
    assert exported["int8"]["min_cosine"] <= exported["int8"]["mean_cosine"] <= 1.0
    assert not list(int8.parent.glob("*.pre.onnx")), "quantiser temp files left behind"


def test_int8_squeezenet_devise_meets_the_size_goal(exported):
    """SqueezeNet 1.1 + create_head(512) + final BN, 300-d, static int8: <= 1.5 MB."""
    size = Path(exported["onnx_int8"]).stat().st_size
    assert size <= INT8_GOAL_BYTES, f"int8 ONNX is {size / 1e6:.3f} MB"


def test_compact_onnx_changes_bytes_not_outputs(model, images, tmp_path):
    import onnx

    fp32 = export_onnx(model, tmp_path / "m.onnx", SIZE)
    q = quantize_int8(fp32, tmp_path / "q.onnx", images[:4])  # compacted
    again = compact_onnx(q, tmp_path / "q2.onnx")  # idempotent
    assert again.stat().st_size == q.stat().st_size
    g = onnx.load(str(q)).graph
    assert max(len(t.name) for t in g.initializer) <= 4 and not any(n.name for n in g.node)
    assert [i.name for i in g.input] == ["image"] and [o.name for o in g.output] == ["embedding"]
    # no constant (weight, bias) DequantizeLinear carries an all-zero zero-point any more
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    const_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(const_dq) >= 50  # 26 convs + 2 linears, weights and biases
    assert all(len(n.input) == 2 or inits[n.input[2]].any() for n in const_dq)
    np.testing.assert_array_equal(onnx_embed(q, images), onnx_embed(again, images))


# --- ExecuTorch ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pte(model, images, tmp_path_factory):
    if executorch_error():
        pytest.skip(executorch_error())
    return export_all(model, tmp_path_factory.mktemp("pte"), SIZE, images, name="sq",
                      formats=("executorch",))


@needs_executorch
def test_executorch_fp32_parity_in_its_runtime(pte):
    """The .pte, lowered to XNNPACK and run by executorch.runtime, matches PyTorch."""
    assert pte["pte_fp32"].endswith(".pte")
    assert pte["pte_fp32_parity"]["min_cosine"] >= 0.999


@needs_executorch
def test_executorch_int8_runs_and_is_smaller(pte, model, images):
    from devise_utils.apps.executorch_export import pte_embed

    fp32, int8 = Path(pte["pte_fp32"]), Path(pte["pte_int8"])
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size
    assert int8.stat().st_size <= INT8_GOAL_BYTES
    out = pte_embed(int8, images[:3])
    assert out.shape == (3, 300) and np.isfinite(out).all()
    assert pte["pte_int8_parity"]["mean_cosine"] > 0.98  # noise calibration; real: 0.997


def test_executorch_absent_is_a_clear_error(monkeypatch, model):
    from devise_utils.apps import executorch_export as et
    from devise_utils.apps import export as ex

    for module in (et, ex):
        monkeypatch.setattr(module, "executorch_error", lambda: "ExecuTorch is not usable here (x)")
    with pytest.raises(RuntimeError, match="not usable here"):
        et.export_executorch(model, "unused.pte", SIZE)
    assert ex.checked_formats(None) == ("onnx",)  # the table leaves it out, it does not fail


# --- TorchScript, the table ------------------------------------------------------------------

def test_torchscript_parity(exported):
    assert exported["torchscript"].endswith(".ptl")
    assert exported["torchscript_parity"]["min_cosine"] >= 0.999


def test_mobile_table(model, images):
    t = mobile_table({"sq": model}, SIZE, images[:6], runs=3, formats=("onnx", "torchscript"))
    assert list(t["format"]) == ["onnx-fp32", "onnx-int8", "torchscript"]
    assert (t["params"] == sum(p.numel() for p in model.parameters())).all()
    assert (t["latency_ms"] > 0).all() and (t["mb"] > 0).all()
    by = t.set_index("format")
    assert by.loc["onnx-int8", "mb"] < by.loc["onnx-fp32", "mb"]
    assert by.loc["onnx-fp32", "min_cosine"] >= 0.999


@needs_executorch
def test_mobile_table_has_executorch_rows_by_default(images):
    t = mobile_table({"tiny": _tiny()}, SIZE, images[:6], runs=3)
    assert list(t["format"]) == ["onnx-fp32", "onnx-int8", "executorch-fp32", "executorch-int8"]
    by = t.set_index("format")
    assert by.loc["executorch-fp32", "min_cosine"] >= 0.999
    assert by.loc["executorch-int8", "mb"] < by.loc["executorch-fp32", "mb"]
    assert (t["latency_ms"] > 0).all()


def test_bad_inputs(tmp_path, exported):
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        as_batch(np.zeros((2, 3, 32, 32)), SIZE)
    with pytest.raises(ValueError, match="no sample images"):
        as_batch([], SIZE)
    with pytest.raises(ValueError, match="calibration needs sample images"):
        quantize_int8(exported["onnx_fp32"], tmp_path / "q.onnx", np.zeros((0, 3, SIZE, SIZE)))
    with pytest.raises(ValueError, match="unknown export format"):
        export_all(None, tmp_path, SIZE, np.zeros((1, 3, SIZE, SIZE)), formats=("tflite",))


# --- what int8 costs in zero-shot accuracy ---------------------------------------------------

def test_quantized_zero_shot(tmp_path):
    """fp32 is exactly metrics.zero_shot of the PyTorch embeddings; int8 stays near it."""
    from devise_utils.study.metrics import zero_shot

    paths = make_images(tmp_path / "photos", n=8, size=48)
    labels = [p.parent.name for p in paths]
    classes = ["plain", "striped"]
    model, size = _tiny(), 32
    emb = torch_embed(model, as_batch(paths, size))
    vecs = np.stack([emb[[lab == c for lab in labels]].mean(0) for c in classes])
    q = quantized_zero_shot(model, paths, labels, classes, vecs, paths[:4], size)
    fp32 = zero_shot(emb, labels, classes, vecs)["per_class_top1"]
    assert q["fp32_zsl_top1"] == pytest.approx(fp32) and fp32 >= 0.5
    assert q["n_images"] == 8 and q["n_classes"] == 2
    # 4 images a class: one image changing its label moves a class by 0.25
    assert abs(q["onnx_int8_zsl_top1"] - fp32) <= 0.25 and 0 < q["onnx_int8_mb"] < 0.1
    if executorch_error() is None:
        assert abs(q["pte_int8_zsl_top1"] - fp32) <= 0.25 and 0 < q["pte_int8_mb"] < 0.1
    else:
        assert q["pte_int8_zsl_top1"] is None
    with pytest.raises(ValueError, match="labels"):
        quantized_zero_shot(model, paths, labels[:3], classes, vecs, paths, size,
                            executorch=False)


# --- the command line ------------------------------------------------------------------------

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
    assert info["formats"] == ["onnx"]  # the default
    for key in ("onnx_fp32", "onnx_int8"):
        assert (out / info[key].split("/")[-1]).is_file()
    # the zero-shot hook reads image paths in batches at the exported size
    from devise_utils.data.awa2 import image_files

    paths = image_files(tmp_path / "photos")
    by_path = onnx_embed(info["onnx_int8"], paths, batch_size=3)
    assert by_path.shape == (8, 300)
    np.testing.assert_allclose(by_path, onnx_embed(info["onnx_int8"], as_batch(paths, SIZE)),
                               atol=1e-5)
    (tmp_path / "empty").mkdir()
    rc = main(["export", "--model", str(ckpt), "--out", str(out), "--images",
               str(tmp_path / "empty")])
    assert rc == 2 and "no images" in capsys.readouterr().err


@needs_executorch
def test_cli_export_executorch(tmp_path, capsys):
    from devise_utils.apps.executorch_export import pte_embed
    from devise_utils.data.awa2 import image_files
    from devise_utils.model.backbones import load_embedder as load_model

    vec = write_vec(tmp_path / "words.vec", ["zebra", "horse"], seed=0)
    ckpt = make_checkpoint(tmp_path / "stage2.pth", vec, image_size=32)
    make_images(tmp_path / "photos", n=4)
    out = tmp_path / "mobile"
    rc = main(["export", "--model", str(ckpt), "--out", str(out), "--format", "executorch",
               "--images", str(tmp_path / "photos")])
    assert rc == 0 and "pte_fp32" in capsys.readouterr().out
    info = json.loads((out / "export.json").read_text())
    assert info["formats"] == ["executorch"] and "onnx_fp32" not in info
    assert info["pte_fp32_parity"]["min_cosine"] >= 0.999
    paths = image_files(tmp_path / "photos")  # paths in, read at the exported size
    model, _ = load_model(ckpt)
    np.testing.assert_allclose(pte_embed(info["pte_fp32"], paths),
                               torch_embed(model, as_batch(paths, 32)), rtol=1e-3, atol=1e-3)


@pytest.mark.shared
def test_int8_on_real_photos_and_imagenet_weights(shared, tmp_path):
    """Real ImageNet SqueezeNet on real photos at 224 px: int8 stays close to fp32."""
    import torch

    from devise_utils.data.awa2 import image_files
    from devise_utils.model.backbones import build_model

    torch.manual_seed(0)
    weights = shared / "weights" / "squeezenet1_1-imagenet-onnxzoo.pth"
    model = build_model("squeezenet1_1", 300, weights=str(weights)).eval()
    files = image_files(shared / "data" / "awa2-real-mini" / "JPEGImages")[::34]  # all classes
    rep = export_all(model, tmp_path, 224, files, formats=("onnx",))
    assert rep["fp32"]["min_cosine"] >= 0.999
    assert rep["int8"]["mean_cosine"] >= 0.99
    assert Path(rep["onnx_int8"]).stat().st_size <= INT8_GOAL_BYTES
