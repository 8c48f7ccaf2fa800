"""The study's report: results.json, results.md, index.html and each notebook's HTML.

results.md puts the poster's numbers beside this run's, table by table, and names the
dataset and split so nobody mistakes a built-in run for AwA2. index.html is the study at a
glance: the same tables (built once by :func:`tables`, rendered to Markdown and to HTML),
the key figures taken from the executed notebooks (cells tagged ``figure:<name>``) and
embedded as ``data:`` URIs so the page works from disk or moved, the dataset, split and
environment, and a link to every notebook's HTML.

Light on purpose: nothing heavy is imported at module level (nbconvert and torch only
inside the functions that need them), so writing results.md does not load torch.

``python -m devise_utils.report.report check reports/builtin`` renders index.html in headless
Chromium and fails unless every figure loads (``make check-report``);
``python -m devise_utils.report.report build reports/builtin`` re-writes a report's HTML,
results.md and index.html from what its notebooks recorded, without re-running them.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devise_utils.core.files import atomic_write, read_json, write_json
from devise_utils.report.poster import POSTER

#: Columns holding fractions that read best as percentages.
PCT = {"poster", "this run", "chance", "stage1_accuracy", "top1", "top3", "top5", "top10",
       "top-3", "top-5", "zsl_top1", "gzsl_seen", "gzsl_unseen", "gzsl_H", "gzsl_AUSUC",
       "seen acc", "unseen acc", "H", "H calibrated", "H (oracle calibration)", "AUSUC",
       "zsl_top1_fp32", "zsl_top1_int8", "change", "chance_unseen",
       "text_to_image_p@10_seen", "text_to_image_p@10_unseen", "image_to_image_p@10_unseen",
       "zero-shot top-1", "GZSL seen", "GZSL unseen", "H (uncalibrated)",
       "H oracle (upper bound)", "H_oracle_upper_bound"}
#: Column-name endings that also mark fractions (sweep rows grow per-method columns).
PCT_SUFFIXES = ("_zsl_top1", "_accuracy", "_H", "_H_calibrated", "_AUSUC", "_seen", "_unseen")


def _is_pct(column: str) -> bool:
    return column in PCT or column.endswith(PCT_SUFFIXES)


#: The figures index.html shows, in order: tag ``figure:<name>`` on a notebook cell whose
#: image outputs are the figure, and its caption.
FIGURES = (
    ("lr_curve", "Learning-rate finder: loss against learning rate, with fastai's suggestion"),
    ("training_curves", "Training curves: train/valid loss and the valid metric per epoch"),
    ("pca", "PCA convergence: image vectors against their class word vectors, "
            "early vs last epoch"),
    ("zero_shot_per_class", "Zero-shot top-1 per unseen class (dashed: chance)"),
    ("text_to_image", "Text → image search: an unseen class name (a zero-shot query) and a "
                      "seen one"),
)

#: Display names of the zero-shot baselines notebook 06 may record beside DeViSE.
DEVISE_NAME = "DeViSE (Stage II)"
BASELINES = {"conse": "ConSE (Stage I, no Stage II)", "linear": "linear map (frozen features)"}

#: nbconvert tags: cells removed from the notebook HTML (input and output); inputs hidden;
#: outputs hidden. ``parameters`` and papermill's ``injected-parameters`` are plumbing.
REMOVE_CELL_TAGS = ("parameters", "injected-parameters", "remove-cell")
REMOVE_INPUT_TAGS = ("remove-input", "hide-input")
REMOVE_OUTPUT_TAGS = ("remove-output", "hide-output")


# --------------------------------------------------------------------------- results.json

def environment() -> dict[str, Any]:
    """Where the run ran: python, torch, device, platform (torch is imported here only)."""
    env: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch
    except ImportError:
        env.update(torch="not installed", device=f"cpu ({_cpu()})")
    else:
        env.update(torch=torch.__version__,
                   device=(torch.cuda.get_device_name(0) if torch.cuda.is_available()
                           else f"cpu ({_cpu()})"))
    env.update(cpus=os.cpu_count(), platform=platform.platform(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return env


def _cpu() -> str:
    return platform.processor() or platform.machine()


def collect(report_dir: str | Path) -> dict[str, Any]:
    """Every notebook's recorded results (``report_dir/results/*.json``) in one dict."""
    return {p.stem: read_json(p) for p in sorted((Path(report_dir) / "results").glob("*.json"))}


def write_reports(report_dir: str | Path, status: dict[str, Any],
                  notebook_names: Sequence[str], *,
                  env: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write results.json, results.md and index.html into ``report_dir``.

    ``status``: the pipeline's run status (params, per-notebook ok/seconds/error, failed);
    ``notebook_names``: every notebook of the study in order (``"00_data_prep.ipynb"``, ...),
    run or not; ``env``: the environment entry, default :func:`environment` (imports torch,
    so tests pass their own). Figures come from the executed notebooks in ``report_dir``.
    Returns the results dict written to results.json.
    """
    report_dir = Path(report_dir)
    env = environment() if env is None else env
    results = {"status": status, "environment": env, **collect(report_dir)}
    write_json(report_dir / "results.json", results)
    md = results_markdown(results)
    atomic_write(report_dir / "results.md", lambda p: p.write_text(md, encoding="utf-8"))
    page = index_html(results, notebook_names, find_figures(report_dir, notebook_names))
    atomic_write(report_dir / "index.html", lambda p: p.write_text(page, encoding="utf-8"))
    return results


# --------------------------------------------------------------------------- notebook HTML

def _drop_stderr(nb, resources):
    """nbconvert preprocessor: drop stderr streams (library warnings and notices such as
    nmslib's "compile me with SSE/AVX" or torch/fastai UserWarnings); errors stay."""
    for cell in nb.cells:
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb, resources


def notebook_html(nb_path: str | Path) -> Path:
    """nbconvert an executed notebook into a standalone HTML page beside it (same stem).

    Hidden: the ``parameters`` cell and papermill's ``injected-parameters`` cell (input and
    output), cells tagged ``remove-cell``, inputs tagged ``remove-input``/``hide-input``,
    outputs tagged ``remove-output``/``hide-output``, and every stderr stream output
    (library warnings). Code and its results otherwise stay: they tell the story.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    nb_path = Path(nb_path)
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = set(REMOVE_CELL_TAGS)
    c.TagRemovePreprocessor.remove_input_tags = set(REMOVE_INPUT_TAGS)
    c.TagRemovePreprocessor.remove_all_outputs_tags = set(REMOVE_OUTPUT_TAGS)
    exporter = HTMLExporter(config=c)
    exporter.register_preprocessor(_drop_stderr, enabled=True)
    nb = nbformat.read(nb_path, as_version=4)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
    out = nb_path.with_suffix(".html")
    atomic_write(out, lambda p: p.write_text(body, encoding="utf-8"))
    return out


# --------------------------------------------------------------------------- figures

@dataclass
class Figure:
    name: str         # the tag's name: figure:<name>
    notebook: str     # "02_stage1_classifier.ipynb"
    mime: str         # image/png or image/jpeg
    data: str         # base64

    @property
    def uri(self) -> str:
        return f"data:{self.mime};base64,{self.data}"


def find_figures(report_dir: str | Path, notebook_names: Sequence[str]
                 ) -> dict[str, list[Figure]]:
    """The image outputs of cells tagged ``figure:<name>`` in the executed notebooks of
    ``report_dir``, by name, in notebook order (a cell with several images gives several)."""
    out: dict[str, list[Figure]] = {}
    for name in notebook_names:
        try:
            nb = json.loads((Path(report_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for cell in nb.get("cells", []):
            tags = dict.fromkeys(t[len("figure:"):] for t in cell.get("metadata", {}).get(
                "tags", []) if t.startswith("figure:"))
            for tag in tags:
                for o in cell.get("outputs", []):
                    data = o.get("data", {})
                    for mime in ("image/png", "image/jpeg"):
                        if mime in data:
                            b64 = data[mime]
                            b64 = "".join(b64) if isinstance(b64, list) else str(b64)
                            out.setdefault(tag, []).append(
                                Figure(tag, name, mime, re.sub(r"\s+", "", b64)))
                            break
    return out


# --------------------------------------------------------------------------- tables

@dataclass
class Table:
    """One table of the report, rendered to Markdown (results.md) and HTML (index.html)."""

    key: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[str] | None = None
    note: str = ""
    glance: bool = False   # among the poster-vs-run tables at the top of index.html

    @property
    def cols(self) -> list[str]:
        return list(self.columns or (self.rows[0].keys() if self.rows else []))


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):  # None or NaN
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{100 * v:.2f} %" if pct else f"{v:.4g}"
    return str(v)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table; columns named in ``PCT`` are shown as percentages."""
    if not rows:
        return "_(none)_\n"
    cols = list(columns or rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c), _is_pct(c)).replace("|", "\\|") for c in cols)
            + " |" for r in rows]
    return "\n".join(out) + "\n"


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The same table as :func:`md_table`, as HTML (numbers right-aligned)."""
    if not rows:
        return "<p><i>(none)</i></p>\n"
    cols = list(columns or rows[0].keys())

    def numeric(v: Any) -> bool:
        return (isinstance(v, int | float) and not isinstance(v, bool)) or (
            isinstance(v, str) and re.fullmatch(r"[–\d.\s%/]+", v) is not None)

    num = {c for c in cols if all(numeric(r.get(c)) or r.get(c) is None for r in rows)}

    def td(r: dict[str, Any], c: str) -> str:
        cls = " ".join(filter(None, ["num" if c in num else "", "poster" if c == "poster" else ""]))
        attr = f' class="{cls}"' if cls else ""
        return f"<td{attr}>{html.escape(_fmt(r.get(c), _is_pct(c)))}</td>"

    head = "".join(('<th class="num">' if c in num else "<th>") + f"{html.escape(c)}</th>"
                   for c in cols)
    body = "".join("<tr>" + "".join(td(r, c) for c in cols) + "</tr>\n" for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def _present(rows: Sequence[dict[str, Any]], wanted: Sequence[str]) -> list[str]:
    """The ``wanted`` columns that some row has (records gain and lose columns)."""
    return [c for c in wanted if any(c in r for r in rows)]


def _backbone_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The main run first, then notebook 04's same-budget comparison rows."""
    main = ([{**res["03_stage2"]["summary"], "run": "main"}]
            if "summary" in res.get("03_stage2", {}) else [])
    return main + [{**r, "run": "comparison"} for r in res.get("04_backbones") or []]


def _gzsl_row(method: str, r: dict[str, Any]) -> dict[str, Any]:
    z, g = r.get("zero_shot") or {}, r.get("gzsl") or {}
    return {"method": method, "zero-shot top-1": z.get("per_class_top1"),
            "chance": z.get("chance"), "GZSL seen": g.get("seen"),
            "GZSL unseen": g.get("unseen"), "H (uncalibrated)": g.get("H"),
            "H calibrated": g.get("H_calibrated"), "γ": g.get("gamma"),
            "AUSUC": g.get("AUSUC"),
            "H oracle (upper bound)": g.get("best_H")}


def tables(res: dict[str, Any]) -> list[Table]:
    """Every table of the report, built once from results.json's content."""
    out: list[Table] = []
    data = res.get("00_data", {})
    rows = _backbone_rows(res)
    if rows:
        out.append(Table("stage1", "Stage I: classifier accuracy (seen classes, valid split)", [
            {"run": r["run"], "backbone": r["backbone"], "weights": r.get("weights"),
             "epochs": r.get("epochs"),
             "poster": POSTER.get(r["backbone"], {}).get("stage1_accuracy"),
             "this run": r.get("stage1_accuracy")} for r in rows], glance=True))
        trow = []
        for r in rows:
            p = POSTER.get(r["backbone"], {})
            trow.append({"run": r["run"], "backbone": r["backbone"],
                         **{f"{k} (poster / run)": f"{_fmt(p.get(k), True)} / "
                                                   f"{_fmt(r.get(k), True)}"
                            for k in ("top1", "top3", "top5", "top10")}})
        out.append(Table("stage2", "Stage II: top-k by nearest class word vector (seen "
                                   "classes, valid split)", trow, glance=True))
        out.append(Table("size", "Model size", [
            {"run": r["run"], "backbone": r["backbone"],
             "params M (poster)": POSTER.get(r["backbone"], {}).get("params_m"),
             "params M (run)": round(r["params_m"], 2) if "params_m" in r else None,
             "MB (poster)": POSTER.get(r["backbone"], {}).get("mb"),
             "MB state dict (run)": round(r["mb"], 2) if "mb" in r else None} for r in rows],
            glance=True))
    zs = res.get("06_zero_shot", {})
    if zs.get("zero_shot"):
        z = zs["zero_shot"]
        out.append(Table("zero_shot", "Zero-shot (unseen classes only): per-class mean top-1", [
            {"split": data.get("split"), "poster": POSTER["zero_shot_per_class_top1"],
             "this run": z.get("per_class_top1"), "chance": z.get("chance"),
             "top-3": z.get("top3"), "top-5": z.get("top5")}], glance=True))
    if zs.get("gzsl"):
        g = zs["gzsl"]
        row = {"seen acc": g.get("seen"), "unseen acc": g.get("unseen"), "H": g.get("H")}
        if "H_calibrated" in g:
            row.update({"H calibrated": g["H_calibrated"], "γ": g.get("gamma")})
        row.update({"AUSUC": g.get("AUSUC"), "H (oracle calibration)": g.get("best_H")})
        out.append(Table("gzsl", "Generalized zero-shot (all classes are candidates)", [row],
                         note="H is uncalibrated, as in the poster's setting"
                              + ("; H calibrated subtracts γ from seen-class scores, γ chosen "
                                 "without unseen-class images" if "H_calibrated" in g else "")
                              + "; AUSUC (Chao et al. 2016) sweeps the calibration; the "
                                "oracle H picks it on the test images (an upper bound, not "
                                "a result).", glance=True))
    base = [k for k in BASELINES if zs.get(k)]
    if base and (zs.get("zero_shot") or zs.get("gzsl")):
        out.append(Table("baselines", "DeViSE vs baselines (zero-shot and generalized "
                                      "zero-shot)",
                         [_gzsl_row(DEVISE_NAME, zs)]
                         + [_gzsl_row(BASELINES[k], zs[k]) for k in base],
                         note="Same images, classes and word vectors for every method. H "
                              "(uncalibrated) is the poster's setting; H calibrated subtracts "
                              "γ from seen-class scores, γ chosen with seen classes held out "
                              "as pseudo-unseen (no unseen-class image used); the oracle H "
                              "picks γ on the test images, so it is an upper bound, not a "
                              "result.",
                         glance=True))
    if zs.get("proposed"):
        rows_ = zs["proposed"]
        out.append(Table("proposed", "Standard vs proposed split (Xian et al.)", rows_,
                         _present(rows_, ["split", "backbone", "weights", "stage1_accuracy",
                                          "top1", "zsl_top1", "conse_zsl_top1",
                                          "linear_zsl_top1", "gzsl_H", "gzsl_H_calibrated",
                                          "gzsl_AUSUC"])))
    if zs.get("split_caveat"):
        out.append(Table("split_caveat", "Split caveat: unseen classes that ImageNet-1K "
                                         "contains", zs["split_caveat"]))
    if zs.get("balance"):
        out.append(Table("balance", "Class balancing (loss weights) vs plain", zs["balance"],
                         _present(zs["balance"], ["balance", "stage1_accuracy", "top1",
                                                  "zsl_top1", "gzsl_H", "gzsl_H_calibrated"])))
    s1 = res.get("02_stage1", {})
    if s1.get("frozen_sweep"):
        out.append(Table("frozen", "Frozen layer groups (per stage)", s1["frozen_sweep"],
                         _present(s1["frozen_sweep"], ["stage", "stage1_frozen",
                                                       "stage2_frozen", "stage1_accuracy",
                                                       "top1", "zsl_top1"])))
    s2 = res.get("03_stage2", {})
    if s2.get("ablations"):
        out.append(Table("ablations", "Stage II recipe ablations (one change each)",
                         s2["ablations"],
                         _present(s2["ablations"], ["variant", "stage1_accuracy", "top1",
                                                    "top5", "zsl_top1", "gzsl_H_calibrated",
                                                    "train_s"]),
                         note="Chosen on the seen-class columns (Stage II top-1); the zero-shot "
                              "column is shown, never used to choose."))
    if s2.get("bn_ablation"):
        out.append(Table("bn", "Final BatchNorm in the head: ablation", s2["bn_ablation"],
                         _present(s2["bn_ablation"], ["final_bn", "stage1_accuracy", "top1",
                                                      "top5", "zsl_top1"])))
    p = res.get("05_pca") or {}
    epochs = p.get("epochs", p.get("epoch"))
    if epochs and p.get("mean_cos_own"):
        other = p.get("mean_cos_nearest_other") or [None] * len(epochs)
        out.append(Table("pca", "PCA convergence: mean cosine of image vectors to their "
                                "class vector (and to the nearest other)",
                         [{"epoch": e, "mean_cos_own": c, "mean_cos_nearest_other": o}
                          for e, c, o in zip(epochs, p["mean_cos_own"], other)]))
    if res.get("07_search"):
        s = res["07_search"]
        out.append(Table("search", "Search", s if isinstance(s, list) else [s]))
    mob = res.get("08_mobile")
    if mob and mob.get("table"):
        out.append(Table("mobile", "On a phone: size and single-thread CPU latency (batch 1)", [
            {**r, "params": r["params"] / 1e6, "latency_ms": round(r["latency_ms"], 2),
             "min_cosine": f"{r['min_cosine']:.4f}", "mean_cosine": f"{r['mean_cosine']:.4f}"}
            for r in mob["table"]],
            ["backbone", "format", "image_size", "params", "mb", "latency_ms", "mean_cosine",
             "min_cosine"],
            note="params in millions; MB on disk; cosine to the PyTorch fp32 outputs on "
                 "sample images. Rows at a size other than the one the models were trained "
                 "at measure latency and size; their int8 parity is out of distribution."))
        if mob.get("int8_zero_shot"):
            out.append(Table("int8", "What int8 costs in zero-shot accuracy",
                             [mob["int8_zero_shot"]]))
    return out


# --------------------------------------------------------------------------- results.md

def _dataset_line(res: dict[str, Any]) -> tuple[str, str, str]:
    data = res.get("00_data", {})
    params = res.get("status", {}).get("params", {})
    return (str(data.get("dataset", params.get("dataset", "?"))), str(data.get("split", "?")),
            f"{len(data.get('seen', []))} seen / {len(data.get('unseen', []))} unseen classes")


AWA2_NOTE = ("The poster's numbers are for AwA2 (standard split, 40 seen / 10 unseen). This run "
             "used another dataset, so only the protocol, not the values, is comparable.")


def results_markdown(res: dict[str, Any]) -> str:
    """results.md: every table of :func:`tables`, poster beside run."""
    data = res.get("00_data", {})
    dataset, split, classes = _dataset_line(res)
    images = ", ".join(f"{k} {v}" for k, v in data.get("n_images", {}).items()) or "?"
    out = ["# DeViSE-Mobile results\n",
           f"Dataset: **{dataset}**, split: **{split}** ({classes}; images: {images}). "
           f"Word vectors: `{data.get('vectors', '?')}`. Device: "
           f"{res.get('environment', {}).get('device', '?')}.\n"]
    if data.get("dataset") != "awa2":
        out.append(f"> {AWA2_NOTE}\n")
    failed = res.get("status", {}).get("failed")
    if failed:
        out.append(f"**The run stopped at {failed}**; tables below hold what finished.\n")
    for t in tables(res):
        out.append(f"\n## {t.title}\n")
        out.append(md_table(t.rows, t.columns))
        if t.note:
            out.append(f"\n{t.note}\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- index.html

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#1d2330;max-width:64em;margin:1.5em auto;padding:0 1.2em}
h1{margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #dde2ea;padding-bottom:.2em}
h3{margin:1.3em 0 .4em;font-size:1.02em}
.sub{color:#556;margin-top:0}
.note{color:#445;font-size:.92em;max-width:52em}
.warn{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em .8em}
.fail{background:#fdeaea;border-left:4px solid #c62828;padding:.5em .8em}
table{border-collapse:collapse;margin:.3em 0 .6em;font-size:.93em}
th,td{padding:3px 10px;border-bottom:1px solid #e5e8ee;text-align:left;vertical-align:top}
th{background:#f3f5f9;font-weight:600} th.num{text-align:right}
table.kv th{background:none;font-weight:600;color:#445;white-space:nowrap;padding-right:1.5em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.poster{color:#555}
figure{margin:1.2em 0 1.8em} figure img{max-width:100%;height:auto;display:block;
 border:1px solid #e5e8ee;margin-bottom:.3em}
figcaption{font-size:.92em;color:#334}
.missing{color:#8a5a00;font-style:italic}
.ok{color:#1b7a2f;font-weight:600} .bad{color:#c62828;font-weight:600} .skip{color:#777}
details{margin:1em 0} summary{cursor:pointer;font-weight:600}
code{background:#f3f5f9;padding:0 3px;border-radius:3px}
"""


def _html_tables(ts: Sequence[Table], level: int = 3) -> str:
    out = []
    for t in ts:
        out.append(f"<h{level}>{html.escape(t.title)}</h{level}>\n" + html_table(t.rows, t.columns))
        if t.note:
            out.append(f'<p class="note">{html.escape(t.note)}</p>\n')
    return "".join(out)


def _figures_html(figs: dict[str, list[Figure]]) -> str:
    out = []
    names = [n for n, _ in FIGURES] + sorted(set(figs) - {n for n, _ in FIGURES})
    captions = dict(FIGURES)
    for name in names:
        caption = captions.get(name, name.replace("_", " "))
        found = figs.get(name)
        if not found:
            out.append(f'<p class="missing missing-figure" data-figure="{html.escape(name)}">'
                       f"Figure not available: {html.escape(caption)} (no executed notebook "
                       f"has a cell tagged <code>figure:{html.escape(name)}</code> with an "
                       f"image output).</p>\n")
            continue
        imgs = "".join(f'<img src="{f.uri}" alt="{html.escape(caption)}" '
                       f'data-figure="{html.escape(name)}">' for f in found)
        nbs = list(dict.fromkeys(f.notebook for f in found))
        links = ", ".join(f'<a href="{html.escape(n[:-6])}.html">{html.escape(n[:-6])}</a>'
                          for n in nbs)
        out.append(f"<figure>{imgs}<figcaption>{html.escape(caption)} — from {links}"
                   f"</figcaption></figure>\n")
    return "".join(out)


def _kv_table(d: dict[str, Any]) -> str:
    """Two columns, name and value (dataset, environment, parameters)."""
    rows = "".join(f'<tr><th scope="row">{html.escape(str(k))}</th><td>'
                   f"{html.escape(v if isinstance(v, str) else json.dumps(v))}</td></tr>\n"
                   for k, v in d.items())
    return f'<table class="kv"><tbody>\n{rows}</tbody></table>\n'



def _minutes(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {int(round(s % 60))} s"


def index_html(res: dict[str, Any], notebook_names: Sequence[str],
               figures: dict[str, list[Figure]] | None = None) -> str:
    """index.html: the poster-vs-run tables, the key figures (embedded), the dataset,
    split and environment, and each notebook's HTML with its status and time."""
    esc = html.escape
    status = res.get("status", {})
    st = status.get("notebooks", {})
    data = res.get("00_data", {})
    env = res.get("environment", {})
    dataset, split, classes = _dataset_line(res)
    all_tables = tables(res)

    n_ok = sum(1 for s in st.values() if s.get("ok"))
    if status.get("failed"):
        state = (f'<p class="fail">The run <b>stopped at {esc(status["failed"])}</b>; the '
                 "tables and figures below hold what finished.</p>")
    else:
        secs = status.get("seconds", sum(s.get("seconds") or 0 for s in st.values()))
        state = (f'<p class="sub">{n_ok} of {len(notebook_names)} notebooks ran, in '
                 f"{_minutes(secs)}, on {esc(str(env.get('device', '?')))}.</p>")
    awa2 = "" if data.get("dataset") == "awa2" else f'<p class="warn">{esc(AWA2_NOTE)}</p>'

    nb_rows = []
    for nb in notebook_names:
        s = st.get(nb)
        stem = esc(nb[:-6] if nb.endswith(".ipynb") else nb)
        if s is None:
            nb_rows.append(f'<tr><td>{stem}</td><td class="skip">not run</td><td></td>'
                           "<td></td></tr>")
            continue
        mark = '<span class="ok">ok</span>' if s.get("ok") else '<span class="bad">failed</span>'
        nb_rows.append(f'<tr><td><a href="{stem}.html">{stem}</a></td><td>{mark}</td>'
                       f'<td class="num">{esc(_minutes(s.get("seconds")))}</td>'
                       f"<td>{esc(s.get('error') or '')}</td></tr>")

    n_img = data.get("n_images", {})
    ds_rows = {"dataset": dataset, "split": split, "classes": classes,
               "images": ", ".join(f"{k} {v}" for k, v in n_img.items()) or "?",
               "seen classes": ", ".join(data.get("seen", [])) or "?",
               "unseen classes": ", ".join(data.get("unseen", [])) or "?",
               "word vectors": f"{data.get('vectors', '?')}"
                               + (f" ({data['dim']}-d)" if data.get("dim") else "")}
    params = {k: v for k, v in status.get("params", {}).items() if k != "report_dir"}

    glance = [t for t in all_tables if t.glance]
    rest = [t for t in all_tables if not t.glance]
    figs = _figures_html(figures or {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DeViSE-Mobile report: {esc(dataset)}, {esc(split)} split</title>
<style>{CSS}</style>
</head><body>
<h1>DeViSE-Mobile report</h1>
<p class="sub">Deep visual-semantic embeddings on a mobile-sized network: dataset
<b>{esc(dataset)}</b>, <b>{esc(split)}</b> split ({esc(classes)}).</p>
{state}
{awa2}
<h2 id="tables">Poster vs this run</h2>
{_html_tables(glance) or '<p class="missing">No results recorded yet.</p>'}
<h2 id="figures">Key figures</h2>
{figs}
<h2 id="data">Dataset, split and environment</h2>
<h3>Dataset and split</h3>
{_kv_table(ds_rows)}
<h3>Environment</h3>
{_kv_table(env) if env else '<p class="missing">not recorded</p>'}
<details><summary>Run parameters</summary>
{_kv_table(params) if params else '<p>(defaults)</p>'}
</details>
<h2 id="notebooks">Notebooks</h2>
<table><thead><tr><th>notebook</th><th>status</th><th>time</th><th>error</th></tr></thead>
<tbody>
{chr(10).join(nb_rows)}
</tbody></table>
<h2 id="more">More tables</h2>
<details><summary>Ablations, splits, search and mobile export ({len(rest)} tables, as in
results.md)</summary>
{_html_tables(rest)}
</details>
<p class="note">Everything here is also in <a href="results.md">results.md</a> and
<a href="results.json">results.json</a>.</p>
</body></html>
"""


# --------------------------------------------------------------------------- browser check

#: Flags that work for headless Chromium in a container, as root, offline.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio")

#: Run in the page after load: what the images did, written into the DOM for --dump-dom.
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var r = {
    title: document.title,
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt || i.src.slice(0, 80); }),
    external: imgs.filter(function (i) { return i.src.slice(0, 5) !== 'data:'; })
                  .map(function (i) { return i.src.slice(0, 120); }),
    sizes: imgs.map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
    figures: imgs.map(function (i) { return i.getAttribute('data-figure'); }),
    missing_figures: Array.prototype.map.call(
      document.querySelectorAll('.missing-figure'),
      function (e) { return e.getAttribute('data-figure'); }),
    tables: document.querySelectorAll('table').length,
    height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)
  };
  var pre = document.createElement('pre');
  pre.id = 'devise-report-check';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


class ReportCheckError(AssertionError):
    """The rendered report failed the browser check."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if exe := shutil.which(name):
            return exe
    return None


def _chromium(exe: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="devise-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def browser_check(index: str | Path, *, screenshot: str | Path | None = None,
                  chromium: str | None = None, timeout: float = 120,
                  width: int = 1280) -> dict[str, Any]:
    """Render ``index`` (an index.html) in headless Chromium; return what the page did:
    ``images``, ``loaded``, ``broken``, ``external`` (img srcs that are not data: URIs),
    ``missing_figures``, ``tables``, ``height``. ``screenshot``: also save a full-page PNG.

    The page is loaded from a temporary copy with a probe script added (and a ``<base>``
    pointing at the report folder), so the report itself is not changed.
    """
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("headless Chromium not found; on Debian/Ubuntu: "
                                "apt-get install -y chromium")
    index = Path(index).resolve()
    page = index.read_text(encoding="utf-8")
    inject = f'<base href="{index.parent.as_uri()}/">{_PROBE}'
    m = re.search(r"<head[^>]*>", page, re.I)
    page = page[:m.end()] + inject + page[m.end():] if m else inject + page
    with tempfile.TemporaryDirectory(prefix="devise-check-") as tmp:
        probe_page = Path(tmp) / "index.html"
        probe_page.write_text(page, encoding="utf-8")
        p = _chromium(exe, ["--virtual-time-budget=10000", f"--window-size={width},900",
                            "--dump-dom", probe_page.as_uri()], timeout)
    m = re.search(r'<pre id="devise-report-check">(.*?)</pre>', p.stdout, re.S)
    if p.returncode != 0 or not m:
        raise ReportCheckError(f"Chromium did not render {index} (exit {p.returncode}):\n"
                               + p.stderr[-2000:])
    result = json.loads(html.unescape(m.group(1)))
    if screenshot:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        height = min(max(int(result.get("height") or 900), 600), 16000)
        s = _chromium(exe, ["--virtual-time-budget=10000", f"--window-size={width},{height}",
                            f"--screenshot={screenshot}", index.as_uri()], timeout)
        if s.returncode != 0 or not screenshot.is_file():
            raise ReportCheckError(f"Chromium could not screenshot {index}:\n"
                                   + s.stderr[-2000:])
        result["screenshot"] = str(screenshot)
    return result


def check_report(report: str | Path, *, screenshot: str | Path | None = None,
                 allow_missing: bool = False, chromium: str | None = None) -> dict[str, Any]:
    """:func:`browser_check` a report (its folder or its index.html) and raise
    :class:`ReportCheckError` unless every image loads from a ``data:`` URI, tables render,
    and (unless ``allow_missing``) every figure of :data:`FIGURES` is there."""
    report = Path(report)
    index = report if report.suffix in (".html", ".htm") else report / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found (make reports writes it)")
    r = browser_check(index, screenshot=screenshot, chromium=chromium)
    problems = []
    if r["broken"]:
        problems.append(f"{len(r['broken'])} of {r['images']} images did not load: "
                        f"{r['broken']}")
    if r["external"]:
        problems.append(f"images not embedded (the page breaks when moved): {r['external']}")
    if r["missing_figures"] and not allow_missing:
        problems.append(f"figures missing from the report: {r['missing_figures']}")
    if not r["images"] and not allow_missing:
        problems.append("no figures at all")
    if not r["tables"]:
        problems.append("no tables rendered")
    if problems:
        raise ReportCheckError(f"{index}: " + "; ".join(problems))
    return r


# --------------------------------------------------------------------------- command line

def rebuild(report_dir: str | Path, notebook_names: Sequence[str] | None = None
            ) -> dict[str, Any]:
    """Re-write every executed notebook's HTML and the report files of ``report_dir`` from
    its status.json and recorded results (no notebook is re-run; the environment recorded
    in results.json is kept)."""
    report_dir = Path(report_dir)
    status = read_json(report_dir / "status.json")
    if notebook_names is None:
        from devise_utils.pipeline import notebooks

        notebook_names = sorted({nb.name for nb in notebooks()} | set(status.get("notebooks", {})))
    for name in notebook_names:
        if (report_dir / name).is_file():
            notebook_html(report_dir / name)
    old = report_dir / "results.json"
    env = read_json(old).get("environment") if old.is_file() else None
    return write_reports(report_dir, status, notebook_names, env=env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devise_utils.report.report",
                                description="Check or rebuild a study report.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="render index.html in headless Chromium; fail unless "
                                     "every figure loads")
    c.add_argument("report", help="a report folder (reports/<run>) or its index.html")
    c.add_argument("--screenshot", help="also save a full-page PNG screenshot here")
    c.add_argument("--allow-missing", action="store_true",
                   help="do not fail when a figure of the study is absent")
    b = sub.add_parser("build", help="re-write a report's HTML, results.md and index.html "
                                     "from its recorded results (no notebook is re-run)")
    b.add_argument("report", help="a report folder (reports/<run>)")
    a = p.parse_args(argv)
    if a.cmd == "build":
        rebuild(a.report)
        print(f"written: {Path(a.report) / 'index.html'}")
        return 0
    try:
        r = check_report(a.report, screenshot=a.screenshot, allow_missing=a.allow_missing)
    except (ReportCheckError, FileNotFoundError) as e:
        print(f"report check FAILED: {e}", file=sys.stderr)
        return 1
    print(f"report check ok: {r['loaded']}/{r['images']} figures loaded "
          f"({', '.join(str(f) for f in r['figures'])}), {r['tables']} tables"
          + (f"; {len(r['missing_figures'])} figures absent: {r['missing_figures']}"
             if r["missing_figures"] else "")
          + (f"; screenshot {r['screenshot']}" if r.get("screenshot") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
