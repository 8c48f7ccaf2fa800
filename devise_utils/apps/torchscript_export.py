"""TorchScript lite-interpreter export (.ptl): only for apps that still ship PyTorch Mobile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.jit.mobile import _load_for_lite_interpreter
from torch.utils.mobile_optimizer import optimize_for_mobile

from devise_utils.apps.mobile_graph import mobile_ready, quiet


def export_torchscript(model, path: str | Path, image_size: int | None = None) -> Path:
    """Traced, frozen TorchScript for PyTorch Mobile's lite interpreter (``.ptl``).

    ``optimize_for_mobile`` is used where torch was built with XNNPACK (this
    torch build lacks it); otherwise the frozen graph is saved as is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = mobile_ready(model)
    with quiet(), torch.no_grad():
        size = image_size or model.image_size
        traced = torch.jit.trace(model, torch.zeros(1, 3, size, size))
        try:
            script = optimize_for_mobile(traced)
        except RuntimeError:  # "XNNPACK is not enabled"
            script = torch.jit.freeze(traced)
        script._save_for_lite_interpreter(str(path))
    return path


def torchscript_embed(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Raw embeddings from a ``.ptl`` file, run by PyTorch's mobile (lite) interpreter."""
    module = _load_for_lite_interpreter(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()
