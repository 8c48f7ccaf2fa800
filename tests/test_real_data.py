"""Real photos (AwA2 layout), real fastText vectors and real ImageNet SqueezeNet weights."""

from __future__ import annotations

import pytest

from devise_utils.core.config import make_config
from devise_utils.study.run import Run


@pytest.mark.slow
def test_short_run_on_real_awa2_mini_with_baselines(shared, tmp_path):
    run = Run(make_config({
        "dataset": str(shared / "data/awa2-real-mini"),
        "vectors": str(shared / "vectors/fasttext-wiki-news-subwords-300.awa2-classes.vec"),
        "weights": str(shared / "weights/squeezenet1_1-imagenet-onnxzoo.pth"),
        "data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
        "image_size": 112, "stage1_epochs": 3, "stage2_epochs": 2, "stage1_frozen": 2,
        "stage2_frozen": 2}))
    r = run.train().metrics(calibrate=False)
    chance = 1 / len(r["seen"])
    assert len(r["seen"]) == 14 and len(r["unseen"]) == 5
    # Transfer from ImageNet: far above chance after a few epochs on ~800 photos
    # (measured: Stage I 0.69, Stage II top-1 0.65, top-5 0.90; chance 0.07 and 0.36).
    assert r["stage1"]["accuracy"] >= 5 * chance, r["stage1"]["accuracy"]
    assert r["stage2"]["top1"] >= 5 * chance, r["stage2"]
    assert r["stage2"]["top5"] >= 2 * 5 * chance, r["stage2"]
    # The linear map on frozen ImageNet features transfers to the 5 unseen classes.
    lin = r["baselines"]["linear"]["zero_shot"]
    assert lin["per_class_top1"] > 1.5 * lin["chance"], lin
    # The cache lives under data_dir, never inside the read-only ../shared.
    assert (tmp_path / "data" / "cache").is_dir()
