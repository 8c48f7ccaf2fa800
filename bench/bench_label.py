"""What a user gets from ``label`` on real photos whose classes the backbone never saw.

One short run on caltech-zsl-dev (15 unseen classes outside ImageNet-1K; 112 px, 3 + 2
epochs: a quick check, not the recipe of bench_zsl.py), every method's zero-shot per-class
top-1 and held-out seen score, then ``export`` (the recommended method by default) and the
``label`` command on the exported ONNX, over every photo of each unseen class, with the
recommended method and with ``--method devise``. The label numbers must equal the run's own.

    python bench/bench_label.py [--work DIR]

Needs ../shared. Prints the rows; writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SHARED = Path(os.environ.get("DEVISE_SHARED", HERE.parent.parent / "shared"))
os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from devise_utils.apps.export import export_checkpoint  # noqa: E402
from devise_utils.core.config import make_config  # noqa: E402
from devise_utils.study.run import Run  # noqa: E402


def label_top1(onnx: Path, exp, method: str) -> float:
    """Per-class top-1 of ``label`` (top label) over every photo of each unseen class."""
    unseen, acc = exp.images("unseen"), []
    for c in exp.unseen:
        folder = os.path.dirname(unseen.loc[unseen["cls"] == c, "path"].iloc[0])
        p = subprocess.run([sys.executable, "-m", "devise_utils", "label", folder, "--model",
                            str(onnx), "--classes", ",".join(exp.unseen), "-k", "1",
                            "--method", method], capture_output=True, text=True, check=True,
                           cwd=HERE.parent)
        acc.append(np.mean([line.split()[1] == c for line in p.stdout.splitlines()]))
    return float(np.mean(acc))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/bench-label")
    work = Path(ap.parse_args().work)
    t0 = time.perf_counter()
    run = Run(make_config({
        "dataset": str(SHARED / "data/caltech-zsl-dev"),
        "vectors": str(SHARED / "vectors/caltech-zsl-dev.glove50.vec"),
        "weights": str(SHARED / "weights/squeezenet1_1-imagenet-onnxzoo.pth"),
        "class_synsets": str(HERE / "class_synsets" / "caltech-zsl-dev.txt"),
        "data_dir": str(work / "data"), "runs_dir": str(work / "runs"),
        "image_size": 112, "stage1_epochs": 3, "stage2_epochs": 2}))
    r = run.train().metrics()
    print("| method | held-out seen (chooses) | zero-shot, clean unseen |\n|---|---|---|")
    for key, res in {"devise": r, **r["baselines"]}.items():
        mark = " **(recommended)**" if key == r["recommended"] else ""
        print(f"| {key}{mark} | {100 * res['held_out_seen_top1']:.1f} | "
              f"{100 * res['zero_shot']['per_class_top1_clean']:.1f} |")
    export_checkpoint(run.cfg.run_dir / "stage2.pth", work / "export")
    onnx = work / "export" / f"{run.cfg.backbone}.onnx"
    for method in ("recommended", "devise"):
        print(f"label --method {method}: {100 * label_top1(onnx, run.data, method):.2f} %")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
