"""The real-photo evidence table of docs/results.md: dataset x recipe x method, one run each.

Rows: each dataset, the poster's recipe and the recipe chosen for real photos
(``config.POSTER_RECIPE`` / ``config.PRETRAINED_RECIPE``), and three methods scored on the
same images: DeViSE (Stage II), ConSE (Stage I only) and the ridge linear map on frozen
features. Columns: Stage I accuracy, top-1/5 among seen classes (valid images), zero-shot
per-class top-1 (unseen classes only), calibrated GZSL H (gamma from a pseudo-unseen round
of seen classes), AUSUC, and training time. Not a test: it trains real models.

    python bench/bench_recipes.py                       # tiny-objects-50 and awa2-real-mini
    python bench/bench_recipes.py --datasets awa2-real-mini --recipes best

Writes bench/recipes.json (not committed) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from devise_utils.core.config import POSTER_RECIPE, PRETRAINED_RECIPE, ROOT, make_config  # noqa: E402
from devise_utils.study.evaluate import seen_topk  # noqa: E402
from devise_utils.study.run import Run  # noqa: E402

SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "weights/squeezenet1_1-imagenet-onnxzoo.pth"
DATASETS = {
    "tiny-objects-50": (SHARED / "data/tiny-objects-50",
                        SHARED / "vectors/glove-6b-50d.top20k.vec"),
    "awa2-real-mini": (SHARED / "data/awa2-real-mini",
                       SHARED / "vectors/fasttext-wiki-news-subwords-300.awa2-classes.vec"),
}
RECIPES = {"poster": POSTER_RECIPE, "best": PRETRAINED_RECIPE}
METHODS = {"devise": "DeViSE", "conse": "ConSE", "linear": "linear map"}


def rows_for(dataset: str, recipe: str, runs: Path, data: Path) -> list[dict]:
    root, vectors = DATASETS[dataset]
    cfg = make_config({"dataset": str(root), "vectors": str(vectors), "weights": str(WEIGHTS),
                       "runs_dir": str(runs), "data_dir": str(data), **RECIPES[recipe]},
                      recipe=False)
    t0 = time.perf_counter()
    run = Run(cfg).train()
    r = run.metrics()
    wall = time.perf_counter() - t0
    s1_s = run.stage1.metrics["train_seconds"]
    frames = {"devise": run.embeddings, **run.baseline_embeddings()}
    out = []
    for key, name in METHODS.items():
        res = r if key == "devise" else r["baselines"][key]
        topk = seen_topk(run.data, frames[key])
        out.append({
            "dataset": dataset, "recipe": recipe, "method": name,
            "stage1_acc": r["stage1"]["accuracy"] if key != "linear" else None,
            "top1": topk["top1"], "top5": topk["top5"],
            "zsl_top1": res["zero_shot"]["per_class_top1"],
            "chance": res["zero_shot"]["chance"],
            "H_calibrated": res["gzsl"].get("H_calibrated"), "AUSUC": res["gzsl"]["AUSUC"],
            "train_s": {"devise": r["train_seconds"], "conse": s1_s}.get(key),
            "wall_s_with_calibration_round": round(wall, 1),
        })
    return out


def markdown(rows: list[dict]) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    head = ("| dataset | recipe | method | Stage I | top-1 | top-5 | zero-shot (chance) | "
            "H calibrated | AUSUC | train s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['recipe']} | {r['method']} | {pct(r['stage1_acc'])}"
                     f" | {pct(r['top1'])} | {pct(r['top5'])} | {pct(r['zsl_top1'])} "
                     f"({pct(r['chance'])}) | {pct(r['H_calibrated'])} | {pct(r['AUSUC'])} | "
                     f"{'–' if r['train_s'] is None else round(r['train_s'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--runs", default=str(ROOT / "runs"),
                    help="model cache (shared with the pipeline: what it trained is reused)")
    ap.add_argument("--data-dir", default=str(ROOT / "data"), help="image cache")
    ap.add_argument("--out", default=str(Path(__file__).with_name("recipes.json")))
    a = ap.parse_args()
    if not WEIGHTS.is_file():
        raise SystemExit(f"needs the real data in {SHARED} (set DEVISE_SHARED)")
    rows = []
    for d in a.datasets:
        for rec in a.recipes:
            rows += rows_for(d, rec, Path(a.runs), Path(a.data_dir))
            print("\n".join(markdown(rows[-3:]).splitlines()[-3:]), flush=True)
    Path(a.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
