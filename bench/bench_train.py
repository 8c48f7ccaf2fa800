"""Training throughput (images/s) per backbone, and raw JPEGs vs the resized cache.

Not a test: prints a table and writes bench/bench_train.json. Ratios are measured in
one run on one machine, so they compare like with like.

    python bench/bench_train.py                 # CPU, 224 px
    python bench/bench_train.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from devise_utils.data.prepare import prepare_cache  # noqa: E402
from devise_utils.model.backbones import BACKBONES, build_model  # noqa: E402
from devise_utils.model.predict import image_transform  # noqa: E402


def train_throughput(backbone: str, size: int, batch: int, steps: int, device: str,
                     channels_last: bool = True) -> float:
    """Images/s of forward + backward + Adam step on random batches (compute only), with
    the weights in NHWC (``channels_last``, as training uses them) or NCHW."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(backbone, 300).to(device, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.nn.functional.normalize(torch.randn(batch, 300, device=device), dim=1)

    def step():
        loss = 1 - torch.nn.functional.cosine_similarity(model(x), target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (cudnn autotune, allocator)
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def make_raw_jpegs(folder: Path, n: int, side: int = 1200) -> list[str]:
    """AwA2-sized photos (its JPEGs are typically ~1000-1600 px): noisy gradients."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = np.linspace(0, 255, side, dtype=np.float32)[None, :, None]
        img = (base + rng.normal(0, 40, (side * 3 // 4, side, 3))).clip(0, 255).astype(np.uint8)
        p = folder / "cls" / f"cls_{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p, quality=90)
        paths.append(str(p))
    return paths


def load_throughput(paths: list[str], size: int) -> float:
    """Images/s of decode + RGB + resize + crop + normalise (one core, as a loader worker)."""
    tf = image_transform(size)
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            tf(im.convert("RGB"))
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--images", type=int, default=60, help="raw JPEGs for the loading test")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True
    res: dict = {"device": (torch.cuda.get_device_name(0) if a.device == "cuda"
                            else f"cpu x{torch.get_num_threads()} ({platform.machine()})"),
                 "size": a.size, "batch": a.batch, "train_images_per_s": {}}
    nchw = {}
    for b in BACKBONES:
        res["train_images_per_s"][b] = round(train_throughput(b, a.size, a.batch, a.steps,
                                                              a.device), 1)
        nchw[b] = train_throughput(b, a.size, a.batch, a.steps, a.device, channels_last=False)
    # what NHWC weights (train.py, predict.py) buy over the default NCHW, per backbone
    res["channels_last_speedup"] = {b: round(res["train_images_per_s"][b] / v, 2)
                                    for b, v in nchw.items()}
    sq = res["train_images_per_s"]["squeezenet1_1"]
    res["squeezenet_x_faster_than"] = {b: round(sq / v, 2) for b, v in
                                    res["train_images_per_s"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_raw_jpegs(Path(tmp) / "raw", a.images)
        import pandas as pd

        table = pd.DataFrame({"path": raw, "cls": "cls"})
        cached, skipped = prepare_cache(table, Path(tmp) / "cache", short_side=256)
        raw_ips = load_throughput(raw, a.size)
        cache_ips = load_throughput(cached["path"].tolist(), a.size)
    res["load_images_per_s"] = {"raw_1200px_jpeg": round(raw_ips, 1),
                                "cache_256px": round(cache_ips, 1),
                                "cache_speedup": round(cache_ips / raw_ips, 2)}
    print(json.dumps(res, indent=2))
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
