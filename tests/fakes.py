"""Small stand-ins shared by tests: images, a word-vector file, a Stage II checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIM = 300
#: Prepended to a subprocess's code: `import torch` (or fastai, ExecuTorch) then fails.
BLOCK = """
import sys
class _Blocked:  # as if they were not installed: `import torch` raises ImportError
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "fastai", "torchao", "executorch"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, _Blocked())
"""


def make_images(folder: Path, n: int = 6, size: int = 72) -> list[Path]:
    """Small striped/solid colour pictures (sub-folders stand for classes)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        a = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
        if i % 2:
            a[:, ::8] = 255 - a[:, ::8]  # stripes
        p = folder / ("striped" if i % 2 else "plain") / f"img{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def write_vec(path: Path, words: list[str], seed: int) -> Path:
    vecs = np.random.default_rng(seed).standard_normal((len(words), DIM))
    lines = [f"{len(words)} {DIM}"] + [w + " " + " ".join(f"{v:.5f}" for v in row)
                                       for w, row in zip(words, vecs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_checkpoint(path: Path, vectors: Path, seed: int = 0, image_size: int = 64) -> Path:
    """A tiny random Stage II SqueezeNet checkpoint, saved as training would save it."""
    import torch

    from devise_utils.core.config import Config
    from devise_utils.data.vectors import file_sha256
    from devise_utils.model.backbones import build_model, save_checkpoint

    torch.manual_seed(seed)
    cfg = Config(head_hidden=32, image_size=image_size)
    model = build_model("squeezenet1_1", DIM, head_hidden=cfg.head_hidden).eval()
    meta = {"stage": 2, "backbone": "squeezenet1_1", "n_out": DIM, "dim": DIM,
            "image_size": image_size, "classes": ["zebra", "horse"], "vectors": str(vectors),
            "vectors_sha256": file_sha256(vectors), "config": cfg.to_dict(), "metrics": {}}
    return save_checkpoint(model, meta, path)
