"""The main job end to end: every notebook through papermill into a report.

One tiny built-in pipeline run is shared by every test that reads its outputs.
"""

from __future__ import annotations

import json

import pytest
from conftest import SMOKE, smoke_params

from devise_utils import pipeline
from devise_utils.study.results import BASELINES, METHODS

#: The small budget nbval runs the notebooks on too (conftest.py).
TINY = [a for k, v in SMOKE.items() for a in ("--set", f"{k}={json.dumps(v)}")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The smoke pipeline, on the data and model cache nbval reuses after this file."""
    out = tmp_path_factory.mktemp("pipeline") / "report"
    shared = smoke_params()
    args = ["--data-dir", shared["data_dir"], "--runs-dir", shared["runs_dir"], "--out", str(out),
            *TINY]
    lines: list[str] = []
    status = pipeline.run(pipeline.params_from_args(pipeline.parse_args(args)), out,
                          log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    return out, status, lines, args


def _results(out):
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_every_report_file_is_written_and_every_notebook_ran(report):
    out, status, _, _ = report
    assert status["failed"] is None, status
    for nb in pipeline.notebooks():
        assert (out / nb.name).is_file() and (out / nb.name).with_suffix(".html").is_file()
    for f in ("index.html", "results.json", "results.md"):
        assert (out / f).stat().st_size > 0, f
    index = (out / "index.html").read_text()
    assert all(f'href="{nb.stem}.html"' in index for nb in pipeline.notebooks())


@pytest.mark.slow
def test_results_hold_every_method_and_the_posters_numbers_beside_them(report):
    out = report[0]
    r = _results(out)
    assert r["00_data"]["dataset"] == "builtin"
    s2, zs = r["03_stage2"], r["06_zero_shot"]
    for method in ("conse", "linear"):        # baselines beside DeViSE, per class
        assert set(zs[method]["zero_shot"]["per_class"]) == set(r["00_data"]["unseen"])
        assert "H_calibrated" in zs[method]["gzsl"]
    assert "H_calibrated" in zs["gzsl"] and "gamma" in zs["gzsl"]
    md = (out / "results.md").read_text()
    # The run's own numbers reach results.md, each beside the poster's: the table rows are
    # read back from what the notebooks recorded, not retyped.
    assert f"| 80.60 % / {100 * s2['top1']:.2f} % |" in md
    split, top1 = r["00_data"]["split"], zs["zero_shot"]["per_class_top1"]
    zrow = f"| {split} | 67.36 % | {100 * top1:.2f} % |"
    assert zrow in md, zrow
    c = zs["conse"]
    conse = (f"| {BASELINES['conse']} | {100 * c['held_out_seen_top1']:.2f} % | "
             f"{100 * c['zero_shot']['per_class_top1']:.2f} % |")
    assert conse in md, conse
    assert zs["recommended"] in METHODS and len(zs["unseen_overlap"]) == len(r["00_data"]["unseen"])


@pytest.mark.slow
def test_progress_is_streamed_per_epoch_and_papermill_is_quiet(report):
    lines = report[2]
    assert any("Stage I epoch 1/1" in ln for ln in lines), lines[:20]
    assert any("Stage II epoch 1/1" in ln for ln in lines)
    assert not any("Unable to parse" in ln or "unknown parameter" in ln for ln in lines)


@pytest.mark.slow
def test_from_resumes_keeping_earlier_notebooks(report):
    out, _, _, args = report
    first = (out / "00_data_prep.ipynb").stat().st_mtime_ns
    last = (out / "08_mobile.ipynb").stat().st_mtime_ns
    assert pipeline.main([*args, "--from", "8"]) == 0
    assert (out / "00_data_prep.ipynb").stat().st_mtime_ns == first
    assert (out / "08_mobile.ipynb").stat().st_mtime_ns > last
    assert _results(out)["status"]["failed"] is None


@pytest.mark.slow
def test_failure_stops_and_keeps_the_executed_notebook(builtin_dir, tmp_path, monkeypatch):
    # A vector file without the dataset's class words: the pipeline's pre-flight refuses it
    # (tests/test_preflight.py); with that turned off here, the first notebook's Run refuses
    # it, naming the missing words, and the pipeline stops there.
    vec = tmp_path / "other.vec"
    vec.write_text("1 3\nzebra 0.1 0.2 0.3\n", encoding="utf-8")
    out = tmp_path / "report"
    monkeypatch.setattr(pipeline, "preflight", lambda cfg, **k: None)  # this process only
    rc = pipeline.main(["--data-dir", str(builtin_dir), "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(out), "--vectors", str(vec), *TINY])
    assert rc == 1
    status = json.loads((out / "status.json").read_text())
    failed = status["failed"]
    assert failed == "00_data_prep.ipynb"
    assert "no vector" in status["notebooks"][failed]["error"]
    assert (out / failed).is_file() and (out / failed).with_suffix(".html").is_file()
    assert not (out / "01_lr_finder.ipynb").exists()     # nothing ran after the failure


def test_real_photos_have_both_splits_and_the_imagenet_caveat(shared, tmp_path):
    # What notebook 06 shows on real AwA2-layout data, without training: both splits exist,
    # and the standard split's unseen classes are flagged as ImageNet-1K classes.
    from devise_utils.core.config import make_config
    from devise_utils.data.awa2 import has_proposed_split
    from devise_utils.study import analysis
    from devise_utils.study.run import Run

    cfg = make_config({"dataset": str(shared / "data/awa2-real-mini"),
                       "vectors": str(shared / "vectors/fasttext-wiki-news-subwords-300"
                                                 ".awa2-classes.vec"),
                       "data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs")})
    caveat = analysis.split_caveat(cfg)
    assert set(caveat["split"]) == {"standard", "proposed"}
    std = caveat[caveat["split"] == "standard"]
    assert std["imagenet_1k_class"].all() and len(std) == 5
    assert has_proposed_split(cfg)
    proposed = Run(cfg.replace(split="proposed")).data
    assert set(proposed.unseen).isdisjoint(std["unseen_class"])
