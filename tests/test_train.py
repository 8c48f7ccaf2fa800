"""Stage I + Stage II on the built-in dataset, from scratch on the CPU, through Run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from devise_utils.core.config import make_config
from devise_utils.core.errors import NotTrainedError
from devise_utils.model import train
from devise_utils.model.backbones import build_model, load_model
from devise_utils.study.run import Run

ROOT = Path(__file__).resolve().parents[1]


def _cfg(builtin_dir, runs, **kw):
    return make_config({"data_dir": str(builtin_dir), "runs_dir": str(runs), **kw})


@pytest.fixture(scope="module")
def trained(builtin_dir, tmp_path_factory):
    # A small budget that still learns (measured: zero-shot 65 %, chance 17 %; 74 s).
    run = Run(_cfg(builtin_dir, tmp_path_factory.mktemp("runs"), stage1_epochs=4,
                   stage2_epochs=3, image_size=48))
    return run, run.train().metrics()


@pytest.mark.slow
def test_zero_shot_is_learned_on_builtin_and_beats_chance_for_every_method(trained):
    run, r = trained
    z = r["zero_shot"]
    # Unseen classes are new attribute combinations: transfer must beat chance by far.
    assert z["per_class_top1"] >= 2 * z["chance"], z
    assert r["stage1"]["accuracy"] >= 3 / len(r["seen"])
    assert r["stage2"]["top5"] > r["stage2"]["top1"] > 2 / len(r["seen"])
    n = r["n_images"]
    assert n["unseen"] > 0 and n["valid"] > 0 and n["test_seen"] > 0
    # GZSL is scored on the test-seen and unseen images only: valid images choose, never score.
    assert r["gzsl"]["n_images"] == n["test_seen"] + n["unseen"], (r["gzsl"], n)
    # Every report row is there and above chance: the baselines and calibrated GZSL.
    for name in ("conse", "linear"):
        b = r["baselines"][name]
        assert b["zero_shot"]["per_class_top1"] > b["zero_shot"]["chance"], (name, b["zero_shot"])
        assert 0 <= b["gzsl"]["H_calibrated"] <= 1 and b["gzsl"]["gamma"] is not None
    # Every method's gamma is chosen on its own scale (its choices are the calibration
    # round's), so calibrated H cannot collapse where an oracle gamma does well.
    for name, res in {"devise": r, **r["baselines"]}.items():
        g = res["gzsl"]
        if g["best_H"] > 0.10:
            assert g["H_calibrated"] > 0, (name, g)
    # Calibration (gamma from held-out seen classes) lifts H above the uncalibrated one.
    assert r["gzsl"]["H_calibrated"] > r["gzsl"]["H"], r["gzsl"]
    assert r["gzsl"]["H_calibrated"] <= r["gzsl"]["best_H"] + 1e-9  # the oracle bounds it
    # The gallery mode reads the unlabelled test images: its own row, named transductive.
    from devise_utils.study.evaluate import methods_table

    assert 0 <= r["zero_shot_refined"]["per_class_top1"] <= 1
    names = methods_table(r)["method"].tolist()
    assert "DeViSE (Stage II) (transductive: k-means rows)" in names
    assert sum("transductive" in n for n in names) >= 2


@pytest.mark.slow
def test_checkpoint_metadata_and_snapshots(trained):
    run, r = trained
    cfg = run.cfg
    model, meta = load_model(cfg.run_dir / "stage2.pth")
    assert meta["stage"] == 2 and meta["n_out"] == meta["dim"] == 300
    assert len(meta["vectors_sha256"]) == 64 and meta["classes"] == r["seen"]
    assert meta["config"]["seed"] == cfg.seed and meta["key"] == cfg.key()
    assert len(meta["history"]) == cfg.stage2_epochs
    assert model.image_size == cfg.image_size          # the model carries its input size
    x = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    assert model(x).shape == (2, 300)
    snaps = np.load(cfg.run_dir / "snapshots.npz")
    assert snaps["emb"].shape[0] == cfg.stage2_epochs
    assert snaps["emb"].shape[2] == 300


def test_metrics_of_an_untrained_run_is_a_clear_error_and_trains_nothing(builtin_dir, tmp_path):
    run = Run(_cfg(builtin_dir, tmp_path, max_per_class=8))
    with pytest.raises(NotTrainedError, match=r"train it first: Run\(cfg\)\.train_stage2\(\)"):
        run.metrics()
    with pytest.raises(NotTrainedError, match="Stage I"):
        run.embeddings  # noqa: B018
    assert not list(tmp_path.rglob("*.pth"))


@pytest.mark.slow
def test_same_config_same_history_on_cpu(builtin_dir, tmp_path):
    run = Run(_cfg(builtin_dir, tmp_path, max_per_class=12, stage1_epochs=1, stage2_epochs=1,
                   batch_size=32))
    s1 = run.train_stage1()
    a = train.train_stage2(run.data, s1).meta["history"]
    b = train.train_stage2(run.data, s1, force=True).meta["history"]
    assert a == b


@pytest.mark.slow
def test_interrupted_run_resumes_from_last_finished_stage(builtin_dir, tmp_path, monkeypatch):
    cfg = _cfg(builtin_dir, tmp_path, max_per_class=10, stage1_epochs=1, stage2_epochs=1,
               batch_size=32)
    real_fit = train._fit

    def crash_in_stage2(learn, exp, stage, s1):
        if stage == 2:
            raise KeyboardInterrupt
        return real_fit(learn, exp, stage, s1)

    monkeypatch.setattr(train, "_fit", crash_in_stage2)
    with pytest.raises(KeyboardInterrupt):
        Run(cfg).train()
    s1 = cfg.stage_dir(1) / "stage1.pth"
    assert s1.is_file() and not (cfg.run_dir / "stage2.pth").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    mtime = s1.stat().st_mtime_ns
    monkeypatch.setattr(train, "_fit", real_fit)
    Run(cfg).train()
    assert s1.stat().st_mtime_ns == mtime  # Stage I was not trained again
    assert (cfg.run_dir / "stage2.pth").is_file()


@pytest.mark.slow
def test_frozen_groups_stay_unchanged(builtin_dir, tmp_path):
    run = Run(_cfg(builtin_dir, tmp_path, max_per_class=10, stage1_epochs=1, stage1_frozen=2,
                   batch_size=32))
    model = run.train_stage1().model()
    train.seed_everything(run.cfg.seed)
    init = build_model(run.cfg.backbone, len(run.data.seen))
    frozen = init.body[:9].state_dict()   # squeezenet groups 0 and 1 = features[:9]
    trained = model.body[:9].state_dict()
    assert all(torch.equal(frozen[k], trained[k]) for k in frozen)
    # ...while the unfrozen last group did learn.
    assert not all(torch.equal(init.body[9:].state_dict()[k], model.body[9:].state_dict()[k])
                   for k in init.body[9:].state_dict())


@pytest.mark.slow
def test_every_methods_head_scores_what_the_metrics_report(trained):
    """label, tag and the export use a method through its head (feature model + map + class
    rows from the names): on the run's own unseen images it must give the run's numbers."""
    from devise_utils.model.predict import embed_paths
    from devise_utils.study import metrics as M
    from devise_utils.study.head import ZeroShotHead, rows_for

    run, r = trained
    exp = run.data
    feats = {"stage2": run.embeddings, "stage1_logits": run.stage1_logits,
             "stage1_penultimate": run.penultimate, "backbone": run.features}
    results = {"devise": r, **r["baselines"]}
    assert run.head().method == r["recommended"]
    for method, res in results.items():
        head = run.head(method)
        F = feats[head.features].of("unseen")
        G = head.image_vectors(F.X)
        S = M.scores(G, rows_for(head, exp.unseen, exp.vectors), head.metric)
        got = M.zero_shot_from_scores(S, F.cls.tolist(), exp.unseen)["per_class_top1"]
        assert got == pytest.approx(res["zero_shot"]["per_class_top1"], abs=1e-9), method
        # the torch model the export ships computes the features the head was fitted on
        x, _ = embed_paths(run.feature_model(head.features), F.path[:3].tolist(),
                           normalize=head.features == "stage2")
        np.testing.assert_allclose(x, F.X[:3], rtol=1e-4, atol=1e-4)
    head = run.head("prototypes")
    rows = head.class_rows(exp.seen[:2] + exp.unseen[:1],
                           head.S_seen[:2].tolist() + [[0.0] * head.S_seen.shape[1]])
    np.testing.assert_allclose(rows[:2], head.T_seen[:2])     # a seen class keeps its row
    X = feats[head.features].X[:2]
    again = ZeroShotHead.load(head.save(run.cfg.run_dir / "head.npz"))
    np.testing.assert_array_equal(again.image_vectors(X), head.image_vectors(X))


@pytest.mark.slow
def test_export_and_label_use_the_recommended_method_without_torch(trained, tmp_path, capsys):
    """``export`` writes the run's recommended method (feature model + head.npz) beside the
    Stage II model; ``label`` on that export uses it with torch unimportable, and labels the
    run's unseen images as the run's own scoring does."""
    import os
    import subprocess
    import sys

    from fakes import BLOCK

    from devise_utils.apps.export import export_checkpoint
    from devise_utils.cli import main
    from devise_utils.study import metrics as M
    from devise_utils.study.head import rows_for

    run, r = trained
    exp, rec = run.data, r["recommended"]
    out = tmp_path / "export"
    info = export_checkpoint(run.cfg.run_dir / "stage2.pth", out, log=lambda *a: None)
    assert info["method"] == rec and "held-out" in info["method_reason"]
    if rec == "devise":  # then check the path with a method that has a head
        assert info["head"] is None
        rec = "prototypes"
        info = export_checkpoint(run.cfg.run_dir / "stage2.pth", out, method=rec,
                                 log=lambda *a: None)
    assert (out / "head.npz").is_file() and info["head"]["method"] == rec
    unseen = exp.images("unseen").groupby("cls").head(4)
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in unseen["path"]:
        os.symlink(p, folder / os.path.basename(p))
    onnx = out / f"{run.cfg.backbone}.onnx"
    argv = ["label", str(folder), "--model", str(onnx), "--classes", ",".join(exp.unseen),
            "-k", "1"]
    code = BLOCK + f"from devise_utils.cli import main\nraise SystemExit(main({argv!r}))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert f"zero-shot method: {rec}" in res.stderr
    got = {}
    for line in res.stdout.splitlines():
        path, cls, _ = line.split()
        got[os.path.basename(path)] = cls
    # the run's own scoring of the same images (its cached features, PyTorch)
    head = run.head(rec)
    feats = {"stage1_penultimate": run.penultimate, "backbone": run.features,
             "stage1_logits": run.stage1_logits}[head.features]
    F = feats.where(np.isin(feats.path, unseen["path"].to_numpy()))
    S = M.scores(head.image_vectors(F.X), rows_for(head, exp.unseen, exp.vectors), head.metric)
    want = {os.path.basename(p): exp.unseen[j] for p, j in zip(F.path, S.argmax(1))}
    assert len(got) == len(want) == len(unseen)
    agree = np.mean([got[k] == want[k] for k in want])
    assert agree >= 0.9, (agree, got, want)
    # tag scores every vocabulary word through the same head (torch unimportable too)
    argv = ["tag", str(folder), "--model", str(onnx), "-k", "2"]
    code = BLOCK + f"from devise_utils.cli import main\nraise SystemExit(main({argv!r}))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and f"zero-shot method: {rec}" in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3 * len(unseen) and lines[0].endswith(".jpg"), lines[:6]
    assert main(["label", str(folder), "--model", str(onnx), "--classes", "zebra,horse",
                 "--method", "gcn_backbone" if rec != "gcn_backbone" else "eszsl"]) == 2
    assert "re-export with" in capsys.readouterr().err
    feature_model = next(iter(info["head"]["files"]))       # passed where the model belongs
    assert main(["index", str(folder), "--model", str(out / feature_model), "--out",
                 str(tmp_path / "index")]) == 2
    assert f"pass --model {onnx}" in capsys.readouterr().err
