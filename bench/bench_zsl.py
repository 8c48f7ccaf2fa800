"""The zero-shot evidence table: dataset x class semantics x method, on real photos.

Each dataset is trained once with the pretrained recipe (README's real-photo command: the
real ImageNet SqueezeNet 1.1, the input size chosen from the photos), then every class
semantics is scored on the same models: DeViSE, ConSE and the linear map use the class
names as always, the transfer methods use each semantics. The column that chooses is the
held-out seen score (seen classes held out in the calibration round); zero-shot over all
unseen classes and over the clean ones (never seen by the ImageNet backbone), calibrated H
and AUSUC are shown beside it, never used to choose.

    python bench/bench_zsl.py [--datasets caltech-zsl-dev tiny-objects-50 awa2-real-mini]
        [--runs DIR] [--data DIR] [--out bench/zsl.json]

Needs ../shared (photos, vectors, weights, WordNet). Writes the rows as JSON and prints
the table in Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench.real_sets import DATASETS, SHARED, WEIGHTS, pct  # noqa: E402

os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from devise_utils.core.config import make_config  # noqa: E402
from devise_utils.study.results import METHODS  # noqa: E402
from devise_utils.study.run import Run  # noqa: E402

SEMANTICS = ("name", "name+synonyms", "name+gloss", "name+hypernyms",
             "name+synonyms+gloss+hypernyms")
#: Methods that use the class semantics; the others always use the class names.
SEMANTIC_METHODS = ("prototypes", "gcn", "eszsl", "prototypes_backbone", "gcn_backbone",
                    "eszsl_backbone")


def rows_for(dataset: str, runs: Path, data: Path) -> list[dict]:
    folder, vectors, synsets = DATASETS[dataset]
    cfg = make_config({"dataset": str(SHARED / folder), "vectors": str(SHARED / vectors),
                       "weights": str(SHARED / WEIGHTS), "runs_dir": str(runs),
                       "data_dir": str(data),
                       "class_synsets": str(synsets) if synsets else None})
    t0 = time.perf_counter()
    base = Run(cfg)
    base.train()
    out = []
    for semantics in SEMANTICS:
        r = Run(base.cfg.replace(semantics=semantics)).metrics()
        results = {"devise": r, **r["baselines"]}
        for key, res in results.items():
            if semantics != "name" and key not in SEMANTIC_METHODS:
                continue  # the class names only: one row, under "name"
            z, g = res["zero_shot"], res["gzsl"]
            out.append({
                "dataset": dataset, "image_size": base.cfg.image_size,
                "semantics": semantics if key in SEMANTIC_METHODS else "name (always)",
                "method": METHODS[key], "held_out_seen": res.get("held_out_seen_top1"),
                "zsl_unseen": z["per_class_top1"], "zsl_clean": z.get("per_class_top1_clean"),
                "H_calibrated": g.get("H_calibrated"), "AUSUC": g["AUSUC"],
                "recommended": key == r["recommended"], "chance": z["chance"],
                "clean": sum(not o["imagenet"] for o in r["unseen_overlap"]),
                "unseen": len(r["unseen_overlap"])})
        print(f"{dataset} / {semantics}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def markdown(rows: list[dict]) -> str:
    head = ("| dataset | semantics | method | held-out seen (chooses) | zero-shot, all unseen |"
            " zero-shot, clean unseen | H calibrated | AUSUC |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        mark = " **(recommended)**" if r["recommended"] and r["semantics"] in (
            "name", "name (always)") else ""
        lines.append(f"| {r['dataset']} | {r['semantics']} | {r['method']}{mark} | "
                     f"{pct(r['held_out_seen'])} | {pct(r['zsl_unseen'])} | "
                     f"{pct(r['zsl_clean'])} | {pct(r['H_calibrated'])} | {pct(r['AUSUC'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--runs", default=str(HERE.parent / "runs"))
    ap.add_argument("--data", default=str(HERE.parent / "data"))
    ap.add_argument("--out", default=str(HERE / "zsl.json"))
    a = ap.parse_args()
    if not (SHARED / WEIGHTS).is_file():
        print(f"needs ../shared (set DEVISE_SHARED): {SHARED / WEIGHTS} not found")
        return 2
    rows = []
    for d in a.datasets:
        rows += rows_for(d, Path(a.runs), Path(a.data))
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
