"""Stage II losses: image embedding vs. the word vector of the image's class.

Both take ``(pred, y)`` like fastai losses: ``pred`` (B, D) image embeddings, ``y`` (B,)
seen-class indices into the class vectors registered as the buffer ``vecs``.

- :class:`CosineLoss`: ``1 - cos(pred, t_y)``, the study's Stage II regression.
- :class:`RankLoss`: DeViSE's hinge rank loss (Frome et al. 2013),
  ``sum_{j != y} max(0, margin - s(pred, t_y) + s(pred, t_j))``. Frome et al. score with
  the dot product of the linear map's output and unit word vectors; here ``s`` is the
  cosine by default (``normalize=True``). With a free-norm output (fastai head ending in
  BatchNorm) the dot-product loss can be cut by growing the norm of ``pred`` instead of
  turning it towards ``t_y``, and the margin then has no fixed scale; the cosine keeps the
  margin meaningful and the ranking is what zero-shot uses (nearest vector by cosine).
  Measured on frozen ImageNet SqueezeNet features of tiny-objects-50 (64 px, head 1024-512-50
  + final BN, 10 epochs, margin 0.1), leave-classes-out zero-shot per-class top-1 over two
  folds of 8 held-out seen classes: cosine 25.4 %, dot product 19.4 %. Against
  :class:`CosineLoss` on the same protocol the rank loss was not better (64 px: 25.4 vs
  25.9 %; 112 px: 27.0 vs 28.0 %).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _weighted_mean(loss: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
                   ) -> torch.Tensor:
    if weight is None:
        return loss.mean()
    w = weight.to(loss.device)[y]
    return (loss * w).sum() / w.sum()


class CosineLoss(nn.Module):
    """1 - cos(prediction, word vector of the image's class), optionally class-weighted."""

    def __init__(self, class_vecs: np.ndarray, weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("vecs", torch.as_tensor(class_vecs, dtype=torch.float32))
        self.weight = weight

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = 1 - F.cosine_similarity(pred, self.vecs.to(pred.device)[y], dim=1)
        return _weighted_mean(loss, y, self.weight)


class RankLoss(nn.Module):
    """DeViSE hinge rank loss over all other seen classes, optionally class-weighted.

    ``loss_i = sum_{j != y_i} max(0, margin - s(v_i, t_{y_i}) + s(v_i, t_j))`` with
    ``s`` the cosine (``normalize=True``, default) or the dot product with the unit class
    vectors (``normalize=False``, Frome et al.'s form). The class vectors are unit-normalised
    either way (as :mod:`devise_utils.data.vectors` serves them). Batch reduction: mean, or
    the ``weight``-weighted mean over the images' classes (as :class:`CosineLoss`).
    """

    def __init__(self, class_vecs: np.ndarray, weight: torch.Tensor | None = None,
                 margin: float = 0.1, normalize: bool = True):
        super().__init__()
        v = torch.as_tensor(np.asarray(class_vecs), dtype=torch.float32)
        self.register_buffer("vecs", F.normalize(v, dim=1))
        self.weight, self.margin, self.normalize = weight, float(margin), bool(normalize)

    def scores(self, pred: torch.Tensor) -> torch.Tensor:
        v = F.normalize(pred, dim=1) if self.normalize else pred
        return v @ self.vecs.to(pred.device).T

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = self.scores(pred)                                  # (B, C)
        pos = s.gather(1, y[:, None])                          # (B, 1)
        hinge = F.relu(self.margin - pos + s)                  # (B, C)
        hinge = hinge.masked_fill(F.one_hot(y, s.shape[1]).bool(), 0.0)  # j != y
        return _weighted_mean(hinge.sum(1), y, self.weight)
