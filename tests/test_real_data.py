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
    # ConSE over the backbone's own 1,000 classes, with the 5 unseen classes (all ImageNet-1K
    # classes) taken out of its basis first: still far above chance (46.7 % measured by
    # bench/bench_basis1k.py on these photos), and not by recall of the classes it dropped.
    b1k = r["baselines"]["conse_1k"]
    out = {e["wnid"] for e in b1k["chosen"]["excluded_1k"]}
    assert {"n02481823", "n02510455", "n02128385", "n02123394", "n02395406"} <= out
    assert b1k["zero_shot"]["per_class_top1"] > 1.5 * b1k["zero_shot"]["chance"], b1k
    # its head (label, export) scores the unseen photos exactly as the run did
    import numpy as np

    from devise_utils.study.head import rows_for

    head = run.head("conse_1k")
    assert not head.keep[[e["index"] for e in b1k["chosen"]["excluded_1k"]]].any()
    unseen = run.imagenet_logits.of("unseen")
    S = head.scores(head.image_vectors(unseen.X), rows_for(head, r["unseen"], None))
    pc = {c: float(np.mean(np.array(r["unseen"])[S.argmax(1)][unseen.cls == c] == c))
          for c in r["unseen"]}
    assert pc == pytest.approx(b1k["zero_shot"]["per_class"], abs=1e-9)
    # exported (the pretrained network as ONNX at 224 px, plus head.npz), then labelled
    # through onnxruntime: the same labels as the run's own scoring
    import os

    from devise_utils.apps.export import export_checkpoint
    from devise_utils.apps.infer import open_labeller
    from devise_utils.apps.search import label_folder

    out = tmp_path / "export"
    info = export_checkpoint(run.cfg.run_dir / "stage2.pth", out, method="conse_1k",
                             n_images=8, log=lambda *a: None)
    assert info["head"]["image_size"] == 224 and info["head"]["rows_from"] == "basis"
    photos = tmp_path / "photos"
    photos.mkdir()
    some = unseen.where(np.isin(np.arange(len(unseen)), np.arange(0, len(unseen), 7)))
    for p in some.path:
        os.symlink(p, photos / os.path.basename(p))
    model = open_labeller(out / "squeezenet1_1.onnx", log=lambda *a: None)
    assert model.image_size == 224 and model.head.method == "conse_1k"
    got = label_folder(model, photos, r["unseen"], None, 1)
    want = np.array(r["unseen"])[S.argmax(1)][np.isin(unseen.path, some.path)]
    agree = np.mean([got[str(photos / os.path.basename(p))][0][0] == w
                     for p, w in zip(some.path, want)])
    assert agree >= 0.9, agree
