"""The study beyond one run: ablations, sweeps and the backbone comparison.

Every row is a full :class:`~devise_utils.study.run.Run`, trained explicitly here (or loaded
from the cache when an earlier notebook already trained it), then scored by the same
:meth:`Run.metrics` as the main run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from devise_utils.core.config import Config
from devise_utils.data.awa2 import has_proposed_split
from devise_utils.model.backbones import weights_for
from devise_utils.model.train import class_weights
from devise_utils.study.results import DEVISE_NAME, method_row
from devise_utils.study.run import Run


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """One flat row of the headline numbers of :meth:`Run.metrics`."""
    c = r["config"]
    row = {
        "backbone": r["backbone"], "weights": Path(c["weights"]).name, "split": r["split"],
        "epochs": f"{c['stage1_epochs']}+{c['stage2_epochs']}",
        "params_m": r["model"]["params"] / 1e6, "mb": r["model"]["mb"],
        "stage1_accuracy": r["stage1"]["accuracy"],
        **{k: r["stage2"][k] for k in ("top1", "top3", "top5", "top10")},
        **{k: v for k, v in method_row(DEVISE_NAME, r).items() if k != "method"},
        "train_s": r["train_seconds"],
    }
    for name, b in (r.get("baselines") or {}).items():
        row[f"{name}_zsl_top1"] = b["zero_shot"]["per_class_top1"]
    return row


def run_row(cfg: Config, *, baselines: bool = True, calibrate: bool = False) -> dict[str, Any]:
    """Train (or load) one configuration and return its summary row. Ablation rows skip
    the calibration round by default (it trains the configuration a second time)."""
    return summary(Run(cfg).train().metrics(baselines=baselines, calibrate=calibrate))


def sweep_config(cfg: Config, **changes: Any) -> Config:
    """An ablation row's config: ``changes`` on ``cfg``, on the sweep budget
    (``sweep_max_per_class`` images per class, when set, so sweeps fit a CPU on large data)."""
    if cfg.sweep_max_per_class is not None:
        changes = {"max_per_class": cfg.sweep_max_per_class, **changes}
    return cfg.replace(**changes)


def sweep(cfg: Config, field: str, values: list[Any], **metrics_kw: Any) -> pd.DataFrame:
    """One full run per value of ``field`` (all else as ``cfg``, on the sweep budget)."""
    return pd.DataFrame([{field: v, **run_row(sweep_config(cfg, **{field: v}), **metrics_kw)}
                         for v in values])


def split_comparison(cfg: Config) -> pd.DataFrame | None:
    """Xian et al.'s proposed split beside the standard one, both on the sweep budget: the
    standard split's unseen AwA2 classes are mostly ImageNet-1K classes, the proposed ones are
    not. None where the dataset holds no proposed-split class or ``cfg`` already uses it."""
    if cfg.split != "standard" or not has_proposed_split(cfg):
        return None
    return sweep(cfg, "split", ["standard", "proposed"])


def balance_sweep(cfg: Config, **metrics_kw: Any) -> pd.DataFrame:
    """Class balancing (inverse-frequency loss weights) against the plain run, on the sweep
    budget. Where that budget's training classes are already balanced (every weight within
    5 % of 1), a weighted run would only repeat the plain one, so it is not trained."""
    w = class_weights(Run(sweep_config(cfg, balance="none")).data)
    values = ["none"] if float(w.max() - w.min()) < 0.05 else ["none", "weights"]
    return sweep(cfg, "balance", values, **metrics_kw)


def frozen_sweep(cfg: Config, stage1: tuple[int, ...] | None = None,
                 stage2: tuple[int, ...] = (0, 3), **metrics_kw: Any) -> pd.DataFrame:
    """The poster's search over frozen layer groups, per stage (others as ``cfg``).

    ``stage1`` default: (0, 2) with a pretrained body; (0,) from scratch, where a frozen
    Stage I group would be random filters (the question is one of transfer learning)."""
    if stage1 is None:
        stage1 = (0, 2) if cfg.pretrained else (0,)
    a = sweep(cfg, "stage1_frozen", list(stage1), **metrics_kw).assign(stage="I")
    b = sweep(cfg, "stage2_frozen", list(stage2), **metrics_kw).assign(stage="II")
    return pd.concat([a, b], ignore_index=True)




def comparison_config(cfg: Config, backbone: str) -> Config:
    """``cfg`` on the backbone comparison's budget (the ``compare_*`` parameters)."""
    return cfg.replace(backbone=backbone, weights=weights_for(backbone, cfg),
                       max_per_class=cfg.compare_max_per_class,
                       image_size=cfg.compare_image_size,
                       stage1_epochs=cfg.compare_stage1_epochs,
                       stage2_epochs=cfg.compare_stage2_epochs)


def backbone_comparison(cfg: Config) -> pd.DataFrame:
    """Same data, epochs and schedule for every backbone in ``cfg.compare_backbones``."""
    return pd.DataFrame([run_row(comparison_config(cfg, b), baselines=False)
                         for b in cfg.compare_backbones])


def recipe_rows(cfg: Config, variants: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Ablation rows: each variant's changes applied to ``cfg``, trained and scored."""
    return pd.DataFrame([{"variant": name, **run_row(sweep_config(cfg, **changes))}
                         for name, changes in variants.items()])


#: The largest input the upsampled-photos row trains at: ImageNet's own training size.
UPSAMPLE_UP_TO = 224


def recipe_ablations(cfg: Config) -> dict[str, dict[str, Any]]:
    """The recipe's one-change variants (notebook 03): the poster's final BatchNorm, the
    Stage II loss, how much of the body Stage II trains and, with an ImageNet backbone, the
    questions of fine-tuning it on few photos per class: Stage I regularisation (label
    smoothing, mixup) and photos upsampled to 1.75x the input size (ImageNet filters expect
    larger objects than small photos hold; it costs about 3x the time), asked only while
    that stays within ImageNet's own 224 px: beyond it the row tests the CPU budget, not
    small photos. From scratch (the quick built-in run) those rows are left out, to keep
    that run within its time."""
    rows = {
        "this run": {},
        "final BatchNorm " + ("off" if cfg.final_bn else "on"): {"final_bn": not cfg.final_bn},
        "loss " + ("rank" if cfg.loss == "cosine" else "cosine"):
            {"loss": "rank" if cfg.loss == "cosine" else "cosine"},
        "Stage II body " + ("frozen" if cfg.stage2_frozen < 3 else "trained"):
            {"stage2_frozen": 3 if cfg.stage2_frozen < 3 else 0},
    }
    if cfg.pretrained:
        size = cfg.image_size * 7 // 4 // 8 * 8
        rows.update({
            "Stage I label smoothing " + ("off" if cfg.label_smoothing else "0.1"):
                {"label_smoothing": 0.0 if cfg.label_smoothing else 0.1},
            "Stage I mixup " + ("off" if cfg.mixup else "0.4"):
                {"mixup": 0.0 if cfg.mixup else 0.4},
        })
        if size <= UPSAMPLE_UP_TO:
            rows[f"input {size} px (upsampled)"] = {"image_size": size}
    return rows


