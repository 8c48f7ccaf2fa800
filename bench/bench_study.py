"""The study at real size, every backbone on one budget (docs/results.md, earlier GPU checks).

Not a test: trains Stage I + II per backbone (and split) through the package (fastai,
cached under --runs), prints one JSON row each and writes bench/bench_study.json.

    python bench/bench_study.py --device cuda --size 224 --epochs 10 8 \
        --weights efficientnet_lite0=imagenet
    python bench/bench_study.py --device cuda --dataset ../shared/data/awa2-real-mini \
        --vectors ../shared/vectors/fasttext-wiki-news-subwords-300.awa2-classes.vec \
        --weights ../shared/weights/squeezenet1_1-imagenet-onnxzoo.pth --splits standard proposed
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from devise_utils.core.config import BACKBONES, make_config  # noqa: E402
from devise_utils.model.backbones import weights_for  # noqa: E402
from devise_utils.study.sweeps import run_row  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, nargs=2, default=(10, 8), metavar=("STAGE1", "STAGE2"))
    ap.add_argument("--workers", type=int, default=min(6, os.cpu_count() or 1))
    ap.add_argument("--runs", default="/tmp/devise-bench-runs")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dataset", default="builtin")
    ap.add_argument("--vectors", default=None)
    ap.add_argument("--weights", nargs="+", default=["none"], metavar="[BACKBONE=]WEIGHTS",
                    help="none, imagenet or a file; plain = for --backbones[0], the others get "
                         "comparable weights (backbones.weights_for); BACKBONE=W sets one")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--splits", nargs="+", default=["standard"])
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    a = ap.parse_args()
    rows = []
    per = dict(w.split("=", 1) for w in a.weights if "=" in w)
    plain = [w for w in a.weights if "=" not in w]
    base = make_config({"device": a.device, "image_size": a.size, "stage1_epochs": a.epochs[0],
                        "stage2_epochs": a.epochs[1], "num_workers": a.workers,
                        "dataset": a.dataset, "vectors": a.vectors,
                        "weights": plain[0] if plain else "none",
                        "backbone": a.backbones[0], "runs_dir": a.runs,
                        **({"data_dir": a.data_dir} if a.data_dir else {})})
    for split in a.splits:
        for b in a.backbones:
            cfg = base.replace(backbone=b, split=split,
                               weights=per.get(b) or weights_for(b, base))
            t0 = time.perf_counter()
            row = {**run_row(cfg, calibrate=True), "wall_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    cfg = base
    Path(a.out).write_text(json.dumps({"device": cfg.resolved_device(), "image_size": a.size,
                                       "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
