"""Notebook 08's questions about the study's own models: what each backbone and format
costs on a phone, and what int8 costs in zero-shot accuracy."""

from __future__ import annotations

from typing import Any

import pandas as pd

from devise_utils.apps.mobile_bench import mobile_table as export_table
from devise_utils.apps.mobile_bench import quantized_zero_shot
from devise_utils.core.config import Config
from devise_utils.model.predict import as_batch
from devise_utils.study.run import Run
from devise_utils.study.sweeps import comparison_config


def mobile_table(cfg: Config, image_sizes: tuple[int, ...] = (224,), runs: int = 20,
                 phone_size: int = 224) -> pd.DataFrame:
    """The poster's size table made real: params, MB on disk and single-thread CPU latency
    per backbone and format, for notebook 04's Stage II models, at each image size. ONNX
    for every backbone and size; ExecuTorch (slow to lower: ~20 s per int8 model) for the
    study's own backbone at ``phone_size``, the poster's and a phone camera app's input."""

    runs_ = {b: Run(comparison_config(cfg, b)).train() for b in cfg.compare_backbones}
    samples = next(iter(runs_.values())).data.sample_paths(32)
    tables = []
    for size in image_sizes:
        x = as_batch(samples, size)
        for b, r in runs_.items():
            own = b == cfg.backbone and size == phone_size
            formats = cfg.mobile_formats if own else ("onnx",)
            t = export_table({b: r.stage2.model()}, size, x, runs=runs, formats=formats)
            tables.append(t.assign(image_size=size))
    return pd.concat(tables, ignore_index=True).rename(columns={"model": "backbone"})


def int8_zero_shot(run: Run) -> dict[str, Any]:
    """What int8 costs in zero-shot top-1: the run's Stage II model in PyTorch fp32 vs int8
    ONNX vs int8 ExecuTorch, on the run's unseen images (calibrated on seen training images)."""

    exp, model = run.data, run.stage2.model()
    unseen = run.embeddings.of("unseen")
    return quantized_zero_shot(model, unseen.path.tolist(), unseen.cls.tolist(),
                               exp.unseen, exp.class_vectors(exp.unseen),
                               exp.sample_paths(32, split="train"), model.image_size,
                               fp32_emb=unseen.X,
                               executorch="executorch" in run.cfg.mobile_formats)
