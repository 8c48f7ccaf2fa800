"""The model as exported: the Stage II embedder in the fewest ops a phone runtime takes.

The head's BatchNorms are folded into its Linear layers (eval mode), dropout is dropped and
fastai's adaptive concat pool is written as a global max/avg pool (core ATen, so XNNPACK
takes it). Every exporter starts from :func:`mobile_ready`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def quiet():
    """Silence the exporters' and quantiser's advisory chatter (deprecations, BN axis notes)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            root.setLevel(level)


def _bn_affine(bn) -> tuple[Any, Any]:
    """Eval-mode BatchNorm as y = s * x + t."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        s = bn.weight.detach() * s
    t = -bn.running_mean * s
    if bn.affine:
        t = t + bn.bias.detach()
    return s, t


@lru_cache(maxsize=1)
def _global_concat_pool_class():

    class GlobalConcatPool(nn.Module):
        """fastai's ``AdaptiveConcatPool2d(1)`` + ``Flatten``: [max, avg] over the whole map.
        For ``torch.export`` (ExecuTorch) a max/avg pool whose kernel is the map: the
        adaptive max pool is not core ATen and XNNPACK would leave it out. Traced (ONNX,
        TorchScript) the adaptive pools, which ONNX writes as GlobalMax/AveragePool."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.jit.is_tracing():
                mx, av = F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)
            else:
                k = x.shape[-2:]
                mx, av = F.max_pool2d(x, k), F.avg_pool2d(x, k)
            return torch.cat([mx, av], 1).flatten(1)

    return GlobalConcatPool


@lru_cache(maxsize=1)
def fixed_affine_class():

    class FixedAffine(nn.Module):
        """An eval-mode ``BatchNorm1d`` as ``x * scale + shift`` (the same function)."""

        def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
            super().__init__()
            self.register_buffer("scale", scale.detach().clone())
            self.register_buffer("shift", shift.detach().clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale + self.shift

    return FixedAffine


def kept_bn_as_affine(model):
    """``model`` (a :func:`mobile_ready` copy) with the head's remaining BatchNorms as
    :class:`FixedAffine` layers. For PT2E int8: torchao's ``convert_pt2e`` runs a conv-BN
    QAT fold pass (about 100 pattern graphs exported) whenever the graph holds a batch
    norm, which tripled the int8 lowering time; the affine is left out of quantisation,
    so it stays in fp32 as the BatchNorm did (outputs and int8 parity are unchanged)."""
    if not isinstance(getattr(model, "head", None), nn.Sequential):
        return model
    affine = fixed_affine_class()
    model.head = nn.Sequential(*[affine(*_bn_affine(m)) if isinstance(m, nn.BatchNorm1d)
                                 else m for m in model.head])
    return model


def mobile_ready(model):
    """A copy of ``model`` (eval) that computes the same function in fewer ops and bytes.

    In the head: dropout removed; a ``BatchNorm1d`` that follows a ``Linear`` (the
    poster's final BN) folded into it (scaled rows, shifted bias); fastai's
    ``AdaptiveConcatPool2d(1) + Flatten`` replaced by a global max/avg pool. The body is
    untouched (the exporters fold its BatchNorms into the convolutions themselves).

    A BatchNorm *before* a Linear is kept: folding it scales the Linear's columns by
    gamma/sqrt(var), and a trained head has near-dead features (tiny var) whose columns
    then dwarf the rest, so per-channel int8 weights lose everything else (it took the
    default built-in run's int8 zero-shot top-1 from 66 % to 22-25 %).
    """
    m = copy.deepcopy(model).cpu().eval()
    head = getattr(m, "head", None)
    if not isinstance(head, nn.Sequential):
        return m
    pool = _global_concat_pool_class()
    layers: list[nn.Module] = []
    for mod in head:
        if isinstance(mod, nn.Dropout):
            continue
        if (type(mod).__name__ == "AdaptiveConcatPool2d"
                and getattr(mod, "size", None) in (1, (1, 1))):
            layers.append(pool())
            continue
        if type(mod).__name__ == "Flatten" and layers and isinstance(layers[-1], pool):
            continue  # the pool already flattens
        layers.append(mod)
    out: list[nn.Module] = []
    with torch.no_grad():
        for mod in layers:
            bn1d = isinstance(mod, nn.BatchNorm1d) and mod.track_running_stats
            if bn1d and out and isinstance(out[-1], nn.Linear):  # Linear -> BN
                s, t = _bn_affine(mod)
                out[-1].weight.mul_(s[:, None])
                out[-1].bias.mul_(s).add_(t)
                continue
            if isinstance(mod, nn.Linear):
                lin = nn.Linear(mod.in_features, mod.out_features, bias=True)
                lin.weight.copy_(mod.weight)
                lin.bias.copy_(mod.bias if mod.bias is not None else torch.zeros(mod.out_features))
                out.append(lin)
                continue
            out.append(mod)
    m.head = nn.Sequential(*out)
    return m.eval()
