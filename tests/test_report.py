"""The report a reader opens: results.md, index.html (tables, embedded figures, status),
each notebook's HTML (no parameters cell, no library warnings), and a real headless-browser
check that the page's figures load. Fast: a fake report, no training."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from devise_utils.report import build, check, tables
from devise_utils.report import html as html_
from devise_utils.study.results import RecordError, check_record

CHROMIUM = check.find_chromium()
ENV = {"python": "3.11.9", "torch": "2.14.1", "device": "cpu (x86_64)", "platform": "Linux"}
NOTEBOOKS = ["00_data_prep.ipynb", "01_lr_finder.ipynb", "02_stage1_classifier.ipynb",
             "03_stage2_embedding.ipynb", "06_zero_shot.ipynb"]


def png(width: int = 6, height: int = 4, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid tiny PNG (one colour), without PIL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PNG_B64 = base64.b64encode(png()).decode()


def summary_row(backbone: str, **kw) -> dict:
    row = {"backbone": backbone, "weights": "none", "split": "standard", "epochs": "8+6",
           "params_m": 1.4023, "mb": 5.652, "stage1_accuracy": 0.6931, "top1": 0.7129,
           "top3": 0.9901, "top5": 0.9901, "top10": 1.0, "zsl_top1": 0.5908,
           "gzsl_seen": 0.7019, "gzsl_unseen": 0.003, "gzsl_H": 0.006, "gzsl_AUSUC": 0.2442,
           "train_s": 61.0}
    return {**row, **kw}


def fake_results(baselines: bool = True) -> dict:
    """The notebooks' records as results/<name>.json holds them."""
    gz = {"seen": 0.7019, "unseen": 0.003, "H": 0.006, "AUSUC": 0.2442, "best_H": 0.359,
          "best_calibration": 0.21, "H_calibrated": 0.3012, "gamma": 0.18}
    zs = {"zero_shot": {"per_class_top1": 0.5908, "chance": 1 / 6, "top3": 0.9, "top5": 1.0,
                        "per_class": {"zebra": 0.6, "okapi": 0.58}},
          "gzsl": gz,
          "balance": [{"balance": "none", **summary_row("squeezenet1_1")},
                      {"balance": "weights", **summary_row("squeezenet1_1", top1=0.703)}],
          "split_caveat": [], "proposed": None,
          "methods": [{"method": "DeViSE (Stage II)", "zsl_top1": 0.5908}]}  # a display copy
    if baselines:
        for name, top1 in (("conse", 0.4412), ("linear", 0.3876)):
            zs[name] = {"zero_shot": {"per_class_top1": top1, "chance": 1 / 6,
                                      "per_class": {"zebra": top1}},
                        "gzsl": {"seen": 0.65, "unseen": 0.05, "H": 0.0929, "best_H": 0.25,
                                 "H_calibrated": 0.2, "gamma": 0.3, "AUSUC": 0.15}}
    return {
        "00_data": {"dataset": "builtin", "split": "standard",
                    "seen": [f"seen{i}" for i in range(18)],
                    "unseen": ["zebra", "okapi", "c3", "c4", "c5", "c6"],
                    "n_images": {"train": 900, "valid": 101, "unseen": 333},
                    "vectors": "data/builtin/vectors.vec", "dim": 300, "weights": "none",
                    "image_size": 64},
        "01_lr_find": {"stage1_suggestion": 0.0012, "stage1_lr": 0.003},
        "02_stage1": {"accuracy": 0.6931, "per_class": {}, "frozen_sweep": [
            {"stage": "I", "stage1_frozen": 0, "stage2_frozen": 0, **summary_row("x")}]},
        "03_stage2": {"top1": 0.7129, "top3": 0.9901, "top5": 0.9901, "top10": 1.0,
                      "per_class_top1": 0.7, "model_path": "runs/x/stage2.pth",
                      "summary": summary_row("squeezenet1_1"),
                      "ablations": [{"variant": "this run", **summary_row("squeezenet1_1")},
                                    {"variant": "loss rank", **summary_row("squeezenet1_1",
                                                                           top1=0.6535)}]},
        "04_backbones": [summary_row("squeezenet1_1", epochs="5+3"),
                         summary_row("resnet34", params_m=21.8, mb=87.9, epochs="5+3")],
        "05_pca": {"epoch": [1, 2, 3], "mean_cos_own": [0.2, 0.5, 0.8],
                   "mean_cos_nearest_other": [0.1, 0.2, 0.3], "top1": [0.3, 0.6, 0.9]},
        "06_zero_shot": zs,
        "07_search": {"k": 10, "n_images": 1334, "text_to_image_p@10_seen": 0.8,
                      "text_to_image_p@10_unseen": 0.4, "image_to_image_p@10_unseen": 0.5,
                      "chance_unseen": 0.17},
    }


def fake_notebook(path: Path) -> Path:
    """An executed notebook as papermill leaves it: the parameters cell, the injected
    parameters, a library's stderr notice and warning, and a cell tagged as a figure."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    cells = [
        new_markdown_cell("# 01 · Learning-rate finder\n\nThe story of the notebook."),
        new_code_cell('dataset = "builtin"  # DEFAULT_PARAMETER_MARKER',
                      metadata={"tags": ["parameters"]}),
        new_code_cell('dataset = "INJECTED_PARAMETER_MARKER"',
                      metadata={"tags": ["injected-parameters"]}),
        new_code_cell("import nmslib\nres = train.lr_find(cfg, stage=1)", outputs=[
            new_output("stream", name="stderr",
                       text="[WARN] This is not an optimized version: compile me with "
                            "SSE/AVX STDERR_NOTICE_MARKER\n"),
            new_output("stream", name="stderr",
                       text="/x/fastai/learner.py:1: UserWarning: STDERR_WARNING_MARKER\n"),
            new_output("stream", name="stdout", text="suggested LR: 1.20e-03 STDOUT_MARKER\n"),
        ]),
        new_code_cell("plots.lr_find_plot(res);", metadata={"tags": ["figure:lr_curve"]},
                      outputs=[new_output("display_data", data={
                          "image/png": PNG_B64, "text/plain": "<Figure size 600x350>"})]),
    ]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return path


def fake_report(tmp_path: Path, baselines: bool = True, failed: bool = False) -> Path:
    out = tmp_path / "report"
    (out / "results").mkdir(parents=True)
    for name, rec in fake_results(baselines).items():
        (out / "results" / f"{name}.json").write_text(json.dumps(rec), encoding="utf-8")
    fake_notebook(out / "01_lr_finder.ipynb")
    st = {"params": {"dataset": "builtin", "report_dir": str(out)}, "seconds": 394.0,
          "failed": "06_zero_shot.ipynb" if failed else None,
          "notebooks": {n: {"ok": True, "seconds": 12.5, "error": None} for n in NOTEBOOKS}}
    if failed:
        st["notebooks"]["06_zero_shot.ipynb"] = {"ok": False, "seconds": 3.0,
                                                 "error": "ValueError: boom"}
    (out / "status.json").write_text(json.dumps(st), encoding="utf-8")
    html_.notebook_html(out / "01_lr_finder.ipynb")
    build.write_reports(out, st, NOTEBOOKS + ["07_search.ipynb"], env=ENV)
    return out


@pytest.fixture
def built(tmp_path) -> Path:
    return fake_report(tmp_path)


def test_report_module_imports_nothing_heavy():
    code = ("import sys, devise_utils.report.build, devise_utils.report.poster; "
            "heavy = {'torch', 'fastai', 'nbconvert', 'nmslib', 'matplotlib', 'pandas'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_results_md_has_the_poster_tables_beside_the_run(built):
    md = (built / "results.md").read_text()
    assert "80.60 % / 71.29 %" in md           # Stage II top-1: poster / run
    assert "67.36 %" in md and "59.08 %" in md  # zero-shot: poster, run
    assert "89.05 %" in md and "69.31 %" in md  # Stage I
    assert "## Every method on the same images" in md and "| ConSE (Stage I, no Stage II) |" in md
    assert "44.12 %" in md and "38.76 %" in md   # the baselines' zero-shot top-1
    assert "## Stage II recipe ablations" in md and "65.35 %" in md
    assert "| 3 | 0.8 | 0.3 |" in md                # PCA convergence as numbers
    assert "30.12 %" in md                      # DeViSE's calibrated H
    assert "upper bound" in md
    results = json.loads((built / "results.json").read_text())
    assert results["environment"] == ENV and results["06_zero_shot"]["conse"]


def test_index_html_is_the_study_at_a_glance(built):
    page = (built / "index.html").read_text()
    # The same tables as results.md (built once), poster beside run.
    for title in [t.title for t in tables.tables(json.loads(
            (built / "results.json").read_text())) if t.glance]:
        assert title in page.replace("&amp;", "&")
    assert "80.60 % / 71.29 %" in page and "67.36 %" in page
    assert "Every method on the same images" in page and "H oracle (upper bound)" in page
    # The tagged figure is embedded; the others are named as missing, not broken.
    assert f"data:image/png;base64,{PNG_B64}" in page
    assert 'class="missing missing-figure" data-figure="pca"' in page
    assert "<img" in page and 'src="http' not in page and "<link" not in page
    # Dataset, split, environment, and every notebook with its status and time.
    assert "builtin" in page and "standard" in page and "zebra" in page
    assert "2.14.1" in page and "cpu (x86_64)" in page
    for nb in NOTEBOOKS:
        assert f'href="{nb[:-6]}.html"' in page
    assert "12.5 s" in page and "6 min 34 s" in page
    assert "07_search</td><td class=\"skip\">not run" in page


def test_reports_without_baselines_or_after_a_failure(tmp_path):
    out = fake_report(tmp_path, baselines=False, failed=True)
    md, page = (out / "results.md").read_text(), (out / "index.html").read_text()
    assert "baselines" not in md and "baselines" not in page.split("More tables")[0]
    assert "stopped at 06_zero_shot.ipynb" in md and "stopped at" in page
    assert "ValueError: boom" in page and 'class="bad">failed' in page
    # Nothing recorded at all still gives a page.
    empty = html_.index_html({"status": {}}, NOTEBOOKS)
    assert "No results recorded yet" in empty and "_(none)_" not in tables.results_markdown({})


def test_notebook_html_hides_parameters_and_library_warnings(built):
    page = (built / "01_lr_finder.html").read_text()
    assert "DEFAULT_PARAMETER_MARKER" not in page and "INJECTED_PARAMETER_MARKER" not in page
    assert "STDERR_NOTICE_MARKER" not in page and "STDERR_WARNING_MARKER" not in page
    assert "SSE/AVX" not in page and "UserWarning" not in page
    assert "STDOUT_MARKER" in page                   # results stay
    assert "lr_find_plot" in page and "Learning-rate finder" in page   # code and story stay
    assert PNG_B64 in page                           # figure embedded
    assert "<title>01_lr_finder</title>" in page


def test_find_figures_by_tag(built):
    figs = html_.find_figures(built, NOTEBOOKS)
    assert list(figs) == ["lr_curve"]
    (f,) = figs["lr_curve"]
    assert f.notebook == "01_lr_finder.ipynb" and base64.b64decode(f.data) == png()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                             "(apt-get install chromium)")
def test_index_html_renders_in_headless_chromium(built, tmp_path):
    shot = tmp_path / "index.png"
    r = check.check_report(built, screenshot=shot, allow_missing=True)
    assert r["images"] == r["loaded"] == 1 and r["sizes"] == [[6, 4]]
    assert r["figures"] == ["lr_curve"] and "pca" in r["missing_figures"]
    assert r["tables"] >= 6 and shot.read_bytes()[:4] == b"\x89PNG"
    # Strict mode fails while figures of the study are absent; a broken image fails too.
    with pytest.raises(check.ReportCheckError, match="figures missing"):
        check.check_report(built)
    page = (built / "index.html").read_text().replace(PNG_B64, PNG_B64[:40])
    (built / "index.html").write_text(page)
    with pytest.raises(check.ReportCheckError, match="did not load"):
        check.check_report(built, allow_missing=True)


def test_a_record_that_drifts_from_its_schema_is_an_error_naming_the_keys():
    res = fake_results()
    good = tables.tables(res)
    assert {t.key for t in good} >= {"stage1", "zero_shot", "baselines", "pca", "search"}
    drifted = {**res, "03_stage2": {**res["03_stage2"], "bn_ablation": []}}
    with pytest.raises(RecordError, match=r"unknown \['bn_ablation'\]"):
        tables.tables(drifted)
    missing = {**res, "07_search": {k: v for k, v in res["07_search"].items() if k != "k"}}
    with pytest.raises(RecordError, match=r"missing \['k'\]"):
        tables.tables(missing)
    with pytest.raises(RecordError, match="unknown record '09_new'"):
        check_record("09_new", {})


def test_a_comparison_row_at_chance_is_explained():
    res = fake_results()
    res["04_backbones"][1]["stage1_accuracy"] = 0.06        # 18 seen classes: chance 5.6 %
    note = next(t for t in tables.tables(res) if t.key == "stage1").note
    assert note.startswith("At chance (5.6 %): resnet34") and "not learn" in note
    assert next(t for t in tables.tables(fake_results()) if t.key == "stage1").note == ""


def test_target_line_compares_the_chosen_method_with_plain_conse():
    from devise_utils.report.tables import target_line

    def res(all_, clean):
        return {"zero_shot": {"per_class_top1": all_, "per_class_top1_clean": clean}}

    zs = {"recommended": "prototypes", "prototypes": res(0.5, 0.30), "conse": res(0.4, 0.20),
          **res(0.45, 0.25)}
    assert target_line(zs) == ("On the clean unseen classes: 30.0 % against plain ConSE's "
                               "20.0 % (+10.0 points; the target of +18 is not met). ")
    zs["conse_1k"] = res(0.6, 0.45)
    zs["recommended"] = "conse_1k"
    assert "45.0 % against plain ConSE's 20.0 % (+25.0 points; the target of +18 is met)" \
        in target_line(zs)
    zs = {"recommended": "devise", "conse": res(0.40, None), **res(0.44, None)}
    assert "all unseen classes: 44.0 % against plain ConSE's 40.0 % (+4.0 points; the " \
           "target of +10 is not met)" in target_line(zs)
    zs = {"recommended": "devise", "conse": res(0.30, None), **res(0.41, None)}
    assert "(+11.0 points; the target of +10 is met)" in target_line(zs)
    assert target_line({"recommended": "devise", **res(0.4, None)}) == ""


def test_the_1k_basis_table_names_what_left_the_basis():
    res = fake_results()
    zs = res["06_zero_shot"]
    zs["conse_1k"] = {**zs["conse"], "chosen": {
        "kernel": "wordnet+words", "T": 50, "held_out_rounds_mean": 0.54,
        "held_out_rounds_std": 0.08, "n_rounds": 8, "image_size": 224, "excluded_1k": [
            {"wnid": "n04465501", "index": 866, "category": "tractor",
             "why": "tractor: synset"}]}}
    t = next(t for t in tables.tables(res) if t.key == "basis_1k")
    (row,) = t.rows
    assert row["1K classes taken out"] == 1 and "n04465501 tractor" in row["taken out"]
    assert row["held-out seen (sd over rounds)"] == 0.08 and row["rounds"] == 8
    base = next(t for t in tables.tables(res) if t.key == "baselines")
    assert any(r["method"].startswith("ConSE over the backbone's 1,000") for r in base.rows)
