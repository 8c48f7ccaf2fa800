"""Image side at inference: preprocessing and batched embedding of image files.

One path turns images into unit-norm word-space vectors for evaluation, search
and export parity, so all three see exactly the same preprocessing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the short side, centre-crop, ImageNet-normalise (as fastai's valid set)."""
    return T.Compose([
        T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    ])


def load_image(path: str, size: int) -> torch.Tensor:
    """One image as a normalised (3, size, size) tensor; any mode (L, CMYK, P, RGBA) -> RGB."""
    with Image.open(path) as im:
        return image_transform(size)(im.convert("RGB"))


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.tf = list(paths), image_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as im:
                return self.tf(im.convert("RGB")), i
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


def as_batch(sample_images: Sequence[str | Path] | np.ndarray, image_size: int) -> np.ndarray:
    """Preprocessed float32 (N, 3, S, S) from image paths, or an array/tensor checked as such."""
    if isinstance(sample_images, (str, Path)):
        raise TypeError("sample_images must be a list of paths or an array, not one path")
    if hasattr(sample_images, "shape"):  # ndarray or torch tensor
        x = np.asarray(sample_images.detach().cpu() if hasattr(sample_images, "detach")
                       else sample_images, dtype=np.float32)
    else:

        paths = list(sample_images)
        if not paths:
            raise ValueError("no sample images given (needed for calibration and parity)")
        x = np.stack([load_image(str(p), image_size).numpy() for p in paths])
    if x.ndim != 4 or x.shape[1:] != (3, image_size, image_size):
        raise ValueError(f"sample images must be (N, 3, {image_size}, {image_size}), "
                         f"got {x.shape}")
    return np.ascontiguousarray(x)
