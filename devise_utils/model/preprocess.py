"""The image preprocessing of inference, in NumPy and PIL only (no torch).

Training's valid set, evaluation, search and every exported model see an image through
:func:`preprocess`: resize the short side to ``size`` (PIL bilinear, antialiased), crop the
centre ``size`` x ``size``, scale to [0, 1] and ImageNet-normalise, channels first. It is
the function torchvision's ``Resize(size), CenterCrop(size), ToTensor(), Normalize(mean,
std)`` computes on a PIL image, step for step (same output sizes, same rounding of the
crop offset, the same float32 operations), so the PyTorch path
(:func:`devise_utils.model.predict.image_transform`) uses this function and the ONNX path needs
no torch; ``tests/test_infer.py`` checks the two are bit-identical on real photos.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = np.array(IMAGENET_MEAN, np.float32)
_STD = np.array(IMAGENET_STD, np.float32)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side ``size`` and the aspect ratio kept (long side
    truncated), as torchvision's ``Resize(int)`` computes it."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image as a normalised float32 (3, size, size) array (any mode -> RGB)."""
    if size < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    im = image if image.mode == "RGB" else image.convert("RGB")
    new = resized_size(*im.size, size)
    if new != im.size:
        im = im.resize(new, Image.BILINEAR)
    w, h = im.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    x = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return (x - _MEAN[:, None, None]) / _STD[:, None, None]


def load_array(path: str | Path, size: int) -> np.ndarray:
    """One image file as :func:`preprocess` gives it."""
    with Image.open(path) as im:
        return preprocess(im, size)


def read_batches(paths: Sequence[str], size: int, batch_size: int = 64
                 ) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(N, 3, size, size) batches of the readable images and their paths, in order.

    An unreadable or corrupt file is skipped with a warning, never fatal (a photo folder
    always has one); a batch with no readable image is not yielded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        xs, kept = [], []
        for p in paths[start:start + batch_size]:
            try:
                xs.append(load_array(p, size))
            except Exception as e:  # noqa: BLE001 - any decoder error means "skip it"
                warnings.warn(f"skipping unreadable image {p}: {e}", stacklevel=2)
                continue
            kept.append(str(p))
        if xs:
            yield np.stack(xs), kept


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
        x = np.stack([load_array(p, image_size) for p in paths])
    if x.ndim != 4 or x.shape[1:] != (3, image_size, image_size):
        raise ValueError(f"sample images must be (N, 3, {image_size}, {image_size}), "
                         f"got {x.shape}")
    return np.ascontiguousarray(x)
