"""The main job end to end: every notebook through papermill into a report."""

from __future__ import annotations

import json

import pytest

from devise_utils import pipeline

TINY = ["--set", "max_per_class=8", "--set", "stage1_epochs=1", "--set", "stage2_epochs=2",
        "--set", "image_size=32", "--set", "compare_max_per_class=6",
        "--set", "compare_image_size=32",
        "--set", "compare_stage1_epochs=1", "--set", "compare_stage2_epochs=1",
        "--set", 'compare_backbones=["squeezenet1_1", "efficientnet_lite0"]']


def _check_report(out, results):
    names = [nb.name for nb in pipeline.notebooks()]
    for nb in names:
        assert (out / nb).is_file() and (out / nb).with_suffix(".html").is_file(), nb
    for f in ("index.html", "results.json", "results.md"):
        assert (out / f).stat().st_size > 0, f
    assert results["status"]["failed"] is None
    assert all(s["ok"] for s in results["status"]["notebooks"].values())
    s2, zs = results["03_stage2"], results["06_zero_shot"]
    for k in ("top1", "top3", "top5", "top10"):
        assert 0 <= s2[k] <= 1
    assert s2["top1"] <= s2["top3"] <= s2["top5"] <= s2["top10"]
    assert 0 <= results["02_stage1"]["accuracy"] <= 1
    assert 0 <= zs["zero_shot"]["per_class_top1"] <= 1 and 0 <= zs["gzsl"]["H"] <= 1
    md = (out / "results.md").read_text()
    assert "80.60 %" in md and "67.36 %" in md   # the poster's numbers stand beside the run's
    index = (out / "index.html").read_text()
    assert all(f'href="{n[:-6]}.html"' in index for n in names)


@pytest.mark.slow
def test_pipeline_tiny_builtin_run_writes_every_report_file(builtin_dir, tmp_path):
    out = tmp_path / "report"
    rc = pipeline.main(["--data-dir", str(builtin_dir), "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(out), *TINY])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    _check_report(out, results)
    assert results["00_data"]["dataset"] == "builtin"
    # --from resumes: earlier executed notebooks are kept as they were, later ones re-run.
    first = (out / "00_data_prep.ipynb").stat().st_mtime_ns
    last = (out / "08_mobile.ipynb").stat().st_mtime_ns
    assert pipeline.main(["--data-dir", str(builtin_dir), "--runs-dir", str(tmp_path / "runs"),
                          "--out", str(out), "--from", "8", *TINY]) == 0
    assert (out / "00_data_prep.ipynb").stat().st_mtime_ns == first
    assert (out / "08_mobile.ipynb").stat().st_mtime_ns > last
    _check_report(out, json.loads((out / "results.json").read_text()))


@pytest.mark.slow
def test_pipeline_failure_stops_and_keeps_the_executed_notebook(builtin_dir, tmp_path):
    out = tmp_path / "report"
    rc = pipeline.main(["--data-dir", str(builtin_dir), "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(out), "--set", "backbone=no_such_net", *TINY])
    assert rc == 1
    status = json.loads((out / "status.json").read_text())
    failed = status["failed"]
    assert failed and failed != "00_data_prep.ipynb"
    assert "unknown backbone" in status["notebooks"][failed]["error"]
    assert (out / failed).is_file() and (out / failed).with_suffix(".html").is_file()
    assert (out / "00_data_prep.ipynb").is_file()     # what ran before is kept


@pytest.mark.slow
def test_pipeline_on_real_photos_vectors_and_weights(shared, tmp_path):
    out = tmp_path / "report"
    rc = pipeline.main([
        "--dataset", str(shared / "data/awa2-real-mini"),
        "--vectors", str(shared / "vectors/fasttext-wiki-news-subwords-300.awa2-classes.vec"),
        "--weights", str(shared / "weights/squeezenet1_1-imagenet-onnxzoo.pth"),
        "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"),
        "--out", str(out), *TINY, "--set", "image_size=64", "--set", "max_per_class=20"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    _check_report(out, results)
    caveat = results["06_zero_shot"]["split_caveat"]
    assert {r["split"] for r in caveat} == {"standard", "proposed"}
    assert results["06_zero_shot"]["proposed"]          # standard vs proposed was run
