"""ConSE over the backbone's own 1,000 ImageNet classes, on real photos, with no training.

For each dataset the frozen ImageNet SqueezeNet 1.1 reads every photo at 224 px (its own
size; tiny-objects-50's 64-px photos are upsampled). The kernel (WordNet, word vectors, a
sentence encoder's "name: gloss", or sums of them) and T are chosen on 8 rounds of held-out
SEEN classes (their train images), each round with its held-out classes' own 1K classes
taken out of the basis. Then every 1K class that is
an unseen class, a hyponym of one, or matches one by name or synonym leaves the basis, and
the unseen photos are labelled among the unseen classes (per-class mean top-1).

Beside it: plain ConSE (Stage I, no Stage II) as ``bench/bench_zsl.py`` recorded it in
``bench/zsl.json``, on the same unseen photos (every photo of every unseen class); the study's
own run (notebook 06) scores both in one run. Every other kernel x T is shown on the unseen
classes too, for the reader only: the choice never sees those numbers.

    python -m bench.bench_basis1k [--datasets caltech-zsl-dev tiny-objects-50 awa2-real-mini]
        [--data DIR] [--out bench/basis1k.json]

Needs ../shared (photos, vectors, weights, WordNet). Prints the table in Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.real_sets import DATASETS, SHARED, WEIGHTS, pct

HERE = Path(__file__).resolve().parent
CONSE = "ConSE (Stage I, no Stage II)"


def recorded(dataset: str) -> dict[str, float | None]:
    """Plain ConSE of bench_zsl.py's recorded table (and the input size Stage I had)."""
    rows = [r for r in json.loads((HERE / "zsl.json").read_text()) if r["dataset"] == dataset]
    conse = next((r for r in rows if r["method"] == CONSE), None)
    return {"conse": conse and conse["zsl_unseen"], "conse_size": conse and conse["image_size"]}


def row_for(dataset: str, data: Path) -> dict:
    from devise_utils.core.config import make_config
    from devise_utils.data.experiment import experiment
    from devise_utils.model.backbones import imagenet_classifier
    from devise_utils.study import basis1k as B
    from devise_utils.study import metrics as M
    from devise_utils.study import semantics as S_
    from devise_utils.study.embedded import Embedded
    from devise_utils.study.evaluate import embed_table
    from devise_utils.study.methods import basis_kernels_for, basis_method

    folder, vectors, fixes = DATASETS[dataset]
    cfg = make_config({"dataset": str(SHARED / folder), "vectors": str(SHARED / vectors),
                       "weights": str(SHARED / WEIGHTS), "data_dir": str(data)})
    exp = experiment(cfg)
    t0 = time.perf_counter()
    cache = data / f"{dataset}-imagenet-logits-{B.BASIS_IMAGE_SIZE}.npz"
    cached = cache.is_file()
    if cached:
        logits = Embedded.load(cache)
    else:
        logits = embed_table(exp.table, imagenet_classifier(cfg.backbone, cfg.weights),
                             cfg.batch_size, normalize=False, image_size=B.BASIS_IMAGE_SIZE)
        logits.save(cache)
    t_logits = time.perf_counter() - t0
    wn = S_.wordnet()
    synsets = S_.class_synsets(exp.classes, S_.read_class_synsets(fixes, wn), wn)
    kernels = basis_kernels_for(exp, True, synsets)
    emb, rows, chosen = basis_method(logits, exp.seen, exp.unseen, synsets, kernels, cfg.seed)
    n = len(exp.seen)
    unseen = emb.of("unseen")
    top1 = M.zero_shot_from_scores(unseen.X @ rows[n:].T, unseen.cls.tolist(),
                                   exp.unseen)["per_class_top1"]
    # every setting on the unseen classes: shown, never used to choose
    keep = B.keep_mask([r["index"] for r in chosen["excluded_1k"]])
    lu = logits.of("unseen")
    grid = []
    for g in chosen["grid"]:
        K = B.combined(g["kernel"], kernels, keep)[:, n:]
        s = B.scores(lu.X, K, keep, g["T"])
        grid.append({**g, "unseen": M.zero_shot_from_scores(s, lu.cls.tolist(),
                                                            exp.unseen)["per_class_top1"]})
    return {"dataset": dataset, "image_size": B.BASIS_IMAGE_SIZE, "n_unseen": len(exp.unseen),
            "n_unseen_images": len(unseen), "kernels": sorted(kernels),
            "chosen_kernel": chosen["kernel"], "chosen_T": chosen["T"],
            "held_out_mean": chosen["held_out_rounds_mean"],
            "held_out_std": chosen["held_out_rounds_std"], "n_rounds": chosen["n_rounds"],
            "zsl_unseen": top1, "chance": 1 / len(exp.unseen),
            "excluded_1k": len(chosen["excluded_1k"]),
            "excluded_wnids": [r["wnid"] for r in chosen["excluded_1k"]],
            "grid": grid, "logits_seconds": None if cached else round(t_logits, 1),
            **recorded(dataset)}


def markdown(rows: list[dict]) -> str:
    lines = ["| dataset | chosen (kernel, T) | held-out seen, mean ± sd over rounds | "
             "1K classes taken out | ConSE-1K, unseen | plain ConSE (recorded) | gain |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = None if r["conse"] is None else r["zsl_unseen"] - r["conse"]
        lines.append(
            f"| {r['dataset']} | {r['chosen_kernel']}, T={r['chosen_T']} | "
            f"{pct(r['held_out_mean'])} ± {pct(r['held_out_std'])} ({r['n_rounds']}) | "
            f"{r['excluded_1k']} | {pct(r['zsl_unseen'])} | {pct(r['conse'])} | "
            f"{'–' if gain is None else f'{100 * gain:+.1f}'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--data", default=str(HERE.parent / "data"))
    ap.add_argument("--out", default=str(HERE / "basis1k.json"))
    a = ap.parse_args()
    if not (SHARED / WEIGHTS).is_file():
        print(f"needs ../shared (set DEVISE_SHARED): {SHARED / WEIGHTS} not found")
        return 2
    os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
    rows = []
    for d in a.datasets:
        rows.append(row_for(d, Path(a.data)))
        t = rows[-1]["logits_seconds"]
        print(f"{d}: done ({'cached' if t is None else f'{t} s of'} 1K logits)", flush=True)
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    for r in rows:
        print(f"\n{r['dataset']}: every setting on the unseen classes (not used to choose)")
        print(", ".join(f"{g['kernel']}/T={g['T']}: held-out {pct(g['mean'])}, unseen "
                        f"{pct(g['unseen'])}" for g in r["grid"]))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
