"""Stage II heads on cached Stage I features: a fast research loop for "what transfers".

With the pretrained recipe Stage II trains the head only (``stage2_frozen=3``), so a Stage II
variant is a head on fixed Stage I body features. This caches those features once (clean,
plus ``--aug`` augmented passes over the training images, as Stage II sees them) for the
main run and for its calibration round (the same recipe with 20 % of the seen classes held
out as pseudo-unseen), then trains each head variant with fastai in seconds instead of
minutes. Every variant is scored twice:

- **select**: zero-shot per-class top-1 on the calibration round's pseudo-unseen classes
  (seen classes only: the number to choose by);
- **test**: zero-shot per-class top-1 on the real unseen classes (shown, never chosen by).

ConSE (top-T of Stage I's softmax) is scored on the same images beside the heads. Variants:
the Stage II loss (cosine; a softmax over temperature-scaled cosines to the seen class
vectors, alone or with the most frequent vocabulary words as extra negatives; the hinge
rank loss), epochs, augmentation, the final BatchNorm; each scored with
plain cosine, with CSLS, and with the class vectors centred on the seen-class mean (a
non-transductive hubness correction). Not a test: it trains models.

    python bench/bench_heads.py                    # tiny-objects-50, the pretrained recipe
    python bench/bench_heads.py --runs /tmp/run/runs --data /tmp/run/data

Writes bench/heads.json (not committed) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from devise_utils.core.config import ROOT, make_config  # noqa: E402
from devise_utils.data.vectors import load_vectors, parts  # noqa: E402
from devise_utils.model.losses import CosineLoss, RankLoss  # noqa: E402
from devise_utils.model.train import _stage_model, dataloaders, seed_everything  # noqa: E402
from devise_utils.study import metrics as M  # noqa: E402
from devise_utils.study.evaluate import conse_vectors, embed_table  # noqa: E402
from devise_utils.study.run import Run  # noqa: E402

SHARED = Path(os.environ.get("DEVISE_SHARED", ROOT.parent / "shared"))
PARAMS = {"dataset": str(SHARED / "data/tiny-objects-50"),
          "vectors": str(SHARED / "vectors/glove-6b-50d.top20k.vec"),
          "weights": str(SHARED / "weights/squeezenet1_1-imagenet-onnxzoo.pth")}


class SoftmaxCosineLoss(torch.nn.Module):
    """Cross-entropy over ``cos(pred, t_c) / tau`` for the seen classes c (a smooth rank loss)."""

    def __init__(self, class_vecs: np.ndarray, tau: float):
        super().__init__()
        self.register_buffer("vecs", F.normalize(torch.as_tensor(class_vecs).float(), dim=1))
        self.tau = tau

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(F.normalize(pred, dim=1) @ self.vecs.T / self.tau, y)


class VocabNegativesLoss(SoftmaxCosineLoss):
    """The softmax over cosines with the ``k`` most frequent vocabulary words as extra
    negatives (the run's class words left out, its held-out ones included): the head is
    asked to place each image nearest its class word among many words, not among 40."""

    def __init__(self, class_vecs: np.ndarray, d: dict, vectors: Path, k: int, tau: float):
        banned = {p for c in [*d["seen"], *d["unseen"]] for p in [c, *parts(c)]}
        wv = _vocabulary(str(vectors))
        negs = wv.vectors[[i for i, w in enumerate(wv.words[:k]) if w not in banned]]
        super().__init__(np.concatenate([class_vecs, negs]), tau)


@lru_cache(maxsize=1)
def _vocabulary(path: str):
    return load_vectors(path, top_n=20_000, hash_file=False)


def cached_features(run: Run, path: Path, n_aug: int) -> dict:
    """Concat-pooled Stage I body features of every image (and ``n_aug`` augmented passes
    over the training images), labels and class vectors; cached in ``path``."""
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {k: z[k] for k in z.files}
    exp, s1 = run.data, run.train_stage1()
    model = s1.model().eval()
    body = torch.nn.Sequential(model.body, model.head[0], model.head[1])  # pool + flatten
    body.image_size = model.image_size
    feats = embed_table(exp.table, body, exp.cfg.batch_size, normalize=False)
    ax, ay, train = [], [], dataloaders(exp, "cpu").train
    with torch.no_grad():
        for _ in range(n_aug):  # each pass draws new augmentations
            for xb, yb in train:
                ax.append(body(xb.as_subclass(torch.Tensor)).numpy())
                ay.append(yb.as_subclass(torch.Tensor).numpy())
    d = {"X": feats.X, "cls": feats.cls, "split": feats.split,
         "AX": np.concatenate(ax), "AY": np.concatenate(ay), "seen": np.array(exp.seen),
         "unseen": np.array(exp.unseen), "V": exp.class_vectors()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **d)
    return d


def train_head(run: Run, d: dict, loss: str, epochs: int, aug: bool, final_bn: bool
               ) -> np.ndarray:
    """A Stage II head (initialised from Stage I, as Stage II is) trained with fastai on the
    cached features; returns its outputs for every image."""
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner

    cfg = run.cfg.replace(final_bn=final_bn)
    seed_everything(cfg.seed)
    head = _stage_model(Run(cfg).data, 2, run.train_stage1()).head[2:]
    seen = list(d["seen"])
    vecs = d["V"][: len(seen)]
    idx = {c: i for i, c in enumerate(seen)}
    if aug:
        x, y = d["AX"], d["AY"]
    else:
        tr = d["split"] == "train"
        x, y = d["X"][tr], np.array([idx[c] for c in d["cls"][tr]])
    va = d["split"] == "valid"
    ds = [list(zip(torch.as_tensor(a).float(), torch.as_tensor(b).long())) for a, b in
          ((x, y), (d["X"][va], np.array([idx[c] for c in d["cls"][va]])))]
    dls = DataLoaders.from_dsets(*ds, bs=cfg.batch_size, device="cpu")
    kind, *args = loss.split(":")
    loss_fn = {"cosine": lambda: CosineLoss(vecs), "rank": lambda: RankLoss(vecs),
               "softmax": lambda: SoftmaxCosineLoss(vecs, float(args[0])),
               "vocab": lambda: VocabNegativesLoss(vecs, d, run.data.vectors_path,
                                                   int(args[0]), float(args[1]))}[kind]()
    learn = Learner(dls, head, loss_func=loss_fn)
    # an epoch over the augmented copies is as long as one over the training images
    steps = epochs * int((d["split"] == "train").sum()) // cfg.batch_size
    n_epochs = max(1, round(steps / len(dls.train)))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(n_epochs, cfg.stage2_lr)
    head.eval()
    with torch.no_grad():
        return head(torch.as_tensor(d["X"]).float()).numpy()


def zsl(d: dict, emb: np.ndarray, split: np.ndarray, cls: np.ndarray, how: str) -> float:
    """Zero-shot per-class top-1 among the unseen classes: plain cosine, CSLS (k=10, over
    the unseen images) or cosine with vectors centred on the mean seen-class vector."""
    n = len(d["seen"])
    vu, u = d["V"][n:], split == "unseen"
    e = emb[u]
    if how == "csls":
        s = M.csls_scores(e, vu, k=10)
    elif how == "centred":
        mu = d["V"][:n].mean(0)
        s = M.cosine_scores(e - mu, vu - mu)
    else:
        s = M.cosine_scores(e, vu)
    return M.zero_shot_from_scores(s, cls[u].tolist(), list(d["unseen"]))["per_class_top1"]


def seen_top1(d: dict, emb: np.ndarray, split: np.ndarray, cls: np.ndarray) -> float:
    n, v = len(d["seen"]), split == "valid"
    return M.zero_shot(emb[v], cls[v].tolist(), list(d["seen"]), d["V"][:n])["top1"]


HEADS = {  # name: (loss, epochs, augmented features, final BatchNorm)
    "cosine (the recipe)": ("cosine", 4, True, True),
    "cosine, 2 epochs": ("cosine", 2, True, True),
    "cosine, 10 epochs": ("cosine", 10, True, True),
    "cosine, no augmentation": ("cosine", 4, False, True),
    "cosine, final BN off": ("cosine", 4, True, False),
    "softmax tau 0.1": ("softmax:0.1", 4, True, True),
    "softmax tau 0.2": ("softmax:0.2", 4, True, True),
    "softmax tau 0.5": ("softmax:0.5", 4, True, True),
    "rank (margin 0.1)": ("rank", 4, True, True),
    "softmax tau 0.1, 5k vocabulary negatives": ("vocab:5000:0.1", 4, True, True),
    "softmax tau 0.05, 20k vocabulary negatives": ("vocab:20000:0.05", 4, True, True),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "runs"), help="model cache (the pipeline's)")
    p.add_argument("--data", default=str(ROOT / "data"), help="data dir (image cache)")
    p.add_argument("--aug", type=int, default=2, help="augmented passes over train images")
    p.add_argument("--out", default=str(Path(__file__).with_name("heads.json")))
    a = p.parse_args(argv)
    cfg = make_config({**PARAMS, "runs_dir": a.runs, "data_dir": a.data})
    rows = []
    runs = {"select": Run(cfg.replace(holdout_round=True)), "test": Run(cfg)}
    data = {k: cached_features(r, Path(a.runs) / "bench-heads" / f"{r.cfg.key(1)}.npz", a.aug)
            for k, r in runs.items()}
    for name, (loss, epochs, aug, bn) in HEADS.items():
        row, t0 = {"variant": f"DeViSE head: {name}"}, time.perf_counter()
        for k, d in data.items():
            emb = train_head(runs[k], d, loss, epochs, aug, bn)
            for how in ("cosine", "csls", "centred"):
                row[f"{k}_{how}"] = zsl(d, emb, d["split"], d["cls"], how)
            row[f"{k}_seen_top1"] = seen_top1(d, emb, d["split"], d["cls"])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(row, flush=True)
    for T in (3, 5, 10):
        row = {"variant": f"ConSE T={T} (Stage I only)"}
        for k, d in data.items():
            vecs = conse_vectors(runs[k].data, runs[k].stage1_logits, T)  # as notebook 06
            emb, split, cls = vecs.X, vecs.split, vecs.cls
            for how in ("cosine", "csls", "centred"):
                row[f"{k}_{how}"] = zsl(d, emb, split, cls, how)
            row[f"{k}_seen_top1"] = seen_top1(d, emb, split, cls)
        rows.append(row)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    cols = [f"{k}_{h}" for k in ("select", "test") for h in ("cosine", "csls", "centred")]
    print("\n| variant | " + " | ".join(cols) + " | seen top-1 (test run) |")
    print("|---|" + "---|" * (len(cols) + 1))
    for r in rows:
        print(f"| {r['variant']} | " + " | ".join(f"{100 * r[c]:.1f}" for c in cols)
              + f" | {100 * r['test_seen_top1']:.1f} |")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
