"""Image side at inference: preprocessing and batched embedding of image files.

One path turns images into unit-norm word-space vectors for evaluation, search
and export parity, so all three see exactly the same preprocessing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from PIL import Image
from torch import nn

from devise_utils.model.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_batch,
    load_array,
    preprocess,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "as_batch", "image_transform", "load_image",
           "embed_paths", "embed_tensor"]


def image_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the short side, centre-crop, ImageNet-normalise (as fastai's valid set):
    :func:`~devise_utils.model.preprocess.preprocess` as a tensor, the one preprocessing
    the exported models are run with too (torchvision's transforms compute the same bits)."""
    if size < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    return partial(_as_tensor, size=size)  # a partial, not a lambda: DataLoader workers pickle it


def _as_tensor(im: Image.Image, size: int) -> torch.Tensor:
    return torch.from_numpy(preprocess(im, size))


def load_image(path: str, size: int) -> torch.Tensor:
    """One image as a normalised (3, size, size) tensor; any mode (L, CMYK, P, RGBA) -> RGB."""
    return torch.from_numpy(load_array(path, size))


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.tf = list(paths), image_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as im:
                return self.tf(im), i
        except Exception as e:  # corrupt or unreadable: reported and skipped, never fatal
            warnings.warn(f"skipping unreadable image {self.paths[i]}: {e}", stacklevel=1)
            return None, i


def _collate(batch):
    good = [(x, i) for x, i in batch if x is not None]
    if not good:
        return None, []
    return torch.stack([x for x, _ in good]), [i for _, i in good]


@torch.no_grad()
def embed_tensor(model: nn.Module, x: torch.Tensor, normalize: bool = True) -> np.ndarray:
    """Unit-norm embeddings of a preprocessed batch (model put in eval mode); raw outputs
    (logits, features) with ``normalize=False``."""
    model.eval()
    dev = next(model.parameters()).device
    out = model(x.to(dev)).float()
    return (torch.nn.functional.normalize(out, dim=1) if normalize else out).cpu().numpy()


def embed_paths(model: nn.Module, paths: Sequence[str], batch_size: int = 64,
                device: str = "cpu", num_workers: int = 0, *, image_size: int | None = None,
                normalize: bool = True) -> tuple[np.ndarray, list[str]]:
    """Embed image files at the model's own input size (``model.image_size``); returns
    (N, D) unit-norm rows and the paths that were readable."""
    image_size = image_size or model.image_size
    model = model.to(device, memory_format=torch.channels_last).eval()  # NHWC: faster on CPU
    loader = torch.utils.data.DataLoader(_Files(paths, image_size), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=_collate)
    embs, kept = [], []
    for x, idx in loader:
        if x is None:
            continue
        embs.append(embed_tensor(model, x, normalize))
        kept.extend(paths[i] for i in idx)
    if not embs:
        dim = model(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1]
        return np.zeros((0, dim), np.float32), []
    return np.concatenate(embs), kept
