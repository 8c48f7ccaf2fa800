"""The evaluation protocol, applied to what a run has already produced (it never trains).

Stage I accuracy on the seen valid split; Stage II top-1/3/5/10 on the same images among
seen class vectors (the poster's table); zero-shot per-class mean top-1 among unseen
classes only; generalized zero-shot (all classes as candidates) uncalibrated, calibrated
and as a seen-unseen curve; per-class accuracies and confusion matrices. Every method
(DeViSE and the baselines) is scored by the same function on the same images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from devise_utils.data.experiment import Experiment
from devise_utils.model.backbones import backbone_body, count_params
from devise_utils.model.predict import embed_paths
from devise_utils.model.train import StageResult
from devise_utils.study import metrics as M
from devise_utils.study import transfer as T
from devise_utils.study.baselines import conse_embed, fit_linear_map
from devise_utils.study.embedded import Embedded
from devise_utils.study.results import BASELINES, DEVISE_NAME, method_row, transductive_rows


def embed_table(table: pd.DataFrame, model, batch_size: int, device: str = "cpu",
                normalize: bool = True, num_workers: int = 0,
                image_size: int | None = None) -> Embedded:
    """``model``'s output for every readable image of ``table`` (unit vectors, or raw outputs
    such as logits and features with ``normalize=False``), at ``image_size`` (default: the
    model's own)."""
    out, kept = embed_paths(model, table["path"].tolist(), batch_size, device, num_workers,
                            normalize=normalize, image_size=image_size)
    return Embedded.of_table(table.set_index("path").loc[kept].reset_index(), out)


def stored_outputs(table: pd.DataFrame, store: Path, model_fn, batch_size: int,
                   device: str = "cpu", image_size: int | None = None) -> Embedded:
    """A frozen model's raw outputs for every readable image of ``table``, kept per image in
    ``store`` (one file for every run on the same photos: the sweeps, the calibration round
    and the main run share it), so each photo is read once. ``model_fn()`` builds the model,
    only when some photo is missing."""
    have = Embedded.load(store) if store.is_file() else None
    known = set(have.path.tolist()) if have is not None else set()
    todo = table[~table["path"].isin(known)]
    if len(todo):
        new = embed_table(todo, model_fn(), batch_size, device, normalize=False,
                          image_size=image_size)
        have = new if have is None else Embedded(
            np.concatenate([have.X, new.X]), np.concatenate([have.path, new.path]),
            np.concatenate([have.cls, new.cls]), np.concatenate([have.split, new.split]))
        have.save(store)
    row = {p: i for i, p in enumerate(have.path.tolist())}
    kept = table[table["path"].isin(row)]
    return Embedded.of_table(kept, have.X[[row[p] for p in kept["path"]]])


def image_embeddings(exp: Experiment, s2: StageResult, device: str = "cpu") -> Embedded:
    """Stage II embeddings of every image of the run."""
    return embed_table(exp.table, s2.model(), exp.cfg.batch_size, device,
                       num_workers=exp.cfg.num_workers)


def backbone_features(exp: Experiment, model, device: str = "cpu") -> Embedded:
    """Pooled body features (before the head) of every image: the linear map's input."""
    return embed_table(exp.table, backbone_body(model), exp.cfg.batch_size, device,
                       normalize=False)


def conse_vectors(exp: Experiment, logits: Embedded, top: int) -> Embedded:
    """ConSE image vectors from Stage I's softmax over the seen classes (no Stage II)."""
    return logits.with_vectors(
        conse_embed(softmax(logits.X, axis=1), exp.class_vectors(exp.seen), top))


def linear_map_vectors(exp: Experiment, features: Embedded) -> Embedded:
    """Ridge map from features to class vectors, fitted on the train images of the seen
    classes (lambda by leave-classes-out among them); applied to the held-out images."""
    train = features.of("train")
    lm = fit_linear_map(train.X, train.labels(exp.seen), exp.class_vectors(exp.seen),
                        seed=exp.cfg.seed)
    test = features.of("valid", "test_seen", "unseen")
    return test.with_vectors(lm.embed(test.X))


def stage1_eval(exp: Experiment, logits: Embedded) -> dict[str, Any]:
    """Stage I classifier on the valid split: accuracy, per-class accuracy, confusion.
    ``logits``: the Stage I outputs of the valid images (columns in seen order)."""
    y, pred = logits.labels(exp.seen), logits.X.argmax(1)
    pc = M.per_class_accuracy(pred, y, len(exp.seen))
    return {"accuracy": float(np.mean(pred == y)),
            "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(exp.seen, pc)},
            "confusion": M.confusion(pred, y, len(exp.seen)).tolist(), "n_images": len(y)}


def score_method(exp: Experiment, emb: Embedded, calibration: dict[str, Any] | None = None,
                 csls_k: int = 0, class_matrix: np.ndarray | None = None,
                 metric: str = "cosine") -> dict[str, Any]:
    """Zero-shot and GZSL numbers of one method: its image vectors ``emb`` scored against one
    row per class (``class_matrix``, seen then unseen; default the class word vectors) by
    ``metric`` (cosine, or dot for classifier weights).

    Zero-shot is scored on the unseen images among the unseen classes; GZSL on the
    test-seen and unseen images among all classes. Every headline number is inductive.
    ``calibration``: the pseudo-unseen round's scores (``val_scores``, ``val_y``,
    ``val_unseen_cols``) from which calibrated stacking picks gamma (no test image used).
    ``csls_k`` > 0 adds ``zero_shot_transductive``: CSLS over the unlabelled unseen test
    images; a cosine-scored method also gets ``zero_shot_refined``: its unseen rows moved
    by k-means onto those images (the gallery mode of ``label --transductive``). Both are
    transductive numbers, kept apart from the headline.
    """
    classes = class_matrix if class_matrix is not None else exp.class_vectors()
    unseen, n_seen = emb.of("unseen"), len(exp.seen)
    unseen_scores = M.scores(unseen.X, classes[n_seen:], metric)
    out: dict[str, Any] = {
        "zero_shot": M.zero_shot_from_scores(unseen_scores, unseen.cls.tolist(), exp.unseen),
        "zero_shot_confusion": M.confusion(unseen_scores.argmax(1), unseen.labels(exp.unseen),
                                           len(exp.unseen)).tolist()}
    if csls_k and metric == "cosine":
        out["zero_shot_transductive"] = M.zero_shot_from_scores(
            M.csls_scores(unseen.X, classes[n_seen:], k=csls_k), unseen.cls.tolist(),
            exp.unseen)
    if metric == "cosine":  # the gallery mode: rows moved onto the unlabelled photos
        refined = T.kmeans_refine(unseen.X, classes[n_seen:], metric="cosine")
        out["zero_shot_refined"] = M.zero_shot_from_scores(
            M.scores(unseen.X, refined, metric), unseen.cls.tolist(), exp.unseen)
    test = emb.of("test_seen", "unseen")
    cols = np.arange(len(exp.classes)) >= n_seen
    scores, y = M.scores(test.X, classes, metric), test.labels(exp.classes)
    gzsl = {k: v for k, v in M.gzsl_accuracy(scores, y, cols).items() if k != "gamma"}
    curve = M.seen_unseen_curve(scores, y, cols)
    gzsl.update(AUSUC=curve["AUSUC"], best_H=curve["best_H"], n_images=len(y))
    if calibration is not None:
        cal = M.calibrated_gzsl(calibration["val_scores"], calibration["val_y"],
                                calibration["val_unseen_cols"], scores, y, cols)
        gzsl.update(seen_calibrated=cal["seen"], unseen_calibrated=cal["unseen"],
                    H_calibrated=cal["H"], gamma=cal["gamma"])
    return {**out, "gzsl": gzsl, "gzsl_curve": curve}


def seen_topk(exp: Experiment, emb: Embedded) -> dict[str, Any]:
    """The poster's Stage II table: top-k of valid images among the seen class vectors."""
    valid = emb.of("valid")
    r = M.zero_shot(valid.X, valid.cls.tolist(), exp.seen, exp.class_vectors(exp.seen))
    return {k: r[k] for k in ("top1", "top3", "top5", "top10", "per_class_top1")}


def model_size(s: StageResult) -> dict[str, float]:
    return {"params": count_params(s.model()), "mb": s.path.stat().st_size / 1e6}


def methods_table(r: dict[str, Any]) -> pd.DataFrame:
    """DeViSE and the baselines side by side (zero-shot and GZSL) from :meth:`Run.metrics`."""
    named = [(DEVISE_NAME, r)] + [(BASELINES.get(k, k), res)
                                  for k, res in (r.get("baselines") or {}).items()]
    rows = [method_row(name, res) for name, res in named]
    rows += [row for name, res in named for row in transductive_rows(name, res)]
    return pd.DataFrame(rows)
