"""Which rows the sweeps and ablations train: from scratch (the quick built-in run) the
questions of fine-tuning a pretrained body are left out; with weights every row is there."""

from __future__ import annotations

import pandas as pd

from devise_utils.core.config import PRETRAINED_RECIPE, make_config
from devise_utils.study import sweeps

WEIGHTS = "some-backbone.pth"  # never read: these tests train nothing


def test_recipe_ablations_from_scratch_and_pretrained():
    scratch = sweeps.recipe_ablations(make_config({}))
    assert list(scratch) == ["this run", "final BatchNorm off", "loss rank",
                             "Stage II body frozen"]
    pre = sweeps.recipe_ablations(make_config({"weights": WEIGHTS}))
    assert list(pre)[:4] == ["this run", "final BatchNorm off", "loss rank",
                             "Stage II body trained"]  # the recipe freezes it: poster's row
    assert pre["Stage I label smoothing 0.1"] == {"label_smoothing": 0.1}
    assert pre["Stage I mixup 0.4"] == {"mixup": 0.4}
    small = sweeps.recipe_ablations(make_config({"weights": WEIGHTS, "image_size": 64}))
    assert small["input 112 px (upsampled)"] == {"image_size": 112}   # tiny photos
    big = sweeps.recipe_ablations(make_config({"weights": WEIGHTS, "image_size": 176}))
    assert not any("upsampled" in k for k in big)  # 304 px would test the budget, not photos
    assert len(big) == len(small) - 1


def test_frozen_sweep_rows(monkeypatch):
    trained = []

    def fake_row(cfg, **kw):
        trained.append((cfg.stage1_frozen, cfg.stage2_frozen, cfg.max_per_class))
        return {"top1": 0.5}

    monkeypatch.setattr(sweeps, "run_row", fake_row)
    t = sweeps.frozen_sweep(make_config({}))
    # from scratch a frozen Stage I group is random filters: only Stage II is swept
    assert trained == [(0, 0, None), (0, 0, None), (0, 3, None)]
    assert list(t["stage"]) == ["I", "II", "II"]
    trained.clear()
    t = sweeps.frozen_sweep(make_config({"weights": WEIGHTS}))
    budget = PRETRAINED_RECIPE["sweep_max_per_class"]
    assert trained == [(0, 3, budget), (2, 3, budget), (0, 0, budget), (0, 3, budget)]
    assert isinstance(t, pd.DataFrame) and len(t) == 4


def test_split_comparison_trains_both_splits_where_the_data_has_them(shared, builtin_dir,
                                                                     monkeypatch, tmp_path):
    trained = []
    monkeypatch.setattr(sweeps, "run_row",
                        lambda cfg, **kw: trained.append((cfg.split, cfg.max_per_class)) or {})
    real = make_config({"dataset": str(shared / "data/awa2-real-mini"),
                        "vectors": str(shared / "vectors/fasttext-wiki-news-subwords-300"
                                                  ".awa2-classes.vec"),
                        "data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                        "sweep_max_per_class": 12})
    t = sweeps.split_comparison(real)
    assert list(t["split"]) == ["standard", "proposed"]
    assert trained == [("standard", 12), ("proposed", 12)]   # on the sweep budget
    # Nothing to compare: a run already on the proposed split, or no proposed-split class.
    assert sweeps.split_comparison(real.replace(split="proposed")) is None
    assert sweeps.split_comparison(make_config({"data_dir": str(builtin_dir)})) is None
    assert len(trained) == 2
