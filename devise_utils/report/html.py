"""The report as HTML: each executed notebook through nbconvert, and index.html, the study
at a glance (tables, key figures embedded as ``data:`` URIs so the page works moved, the
dataset, split and environment, a link to every notebook)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devise_utils.core.files import atomic_write
from devise_utils.report.tables import AWA2_NOTE, Table, dataset_line, html_table, tables

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


#: nbconvert tags: cells removed from the notebook HTML (input and output); inputs hidden;
#: outputs hidden. ``parameters`` and papermill's ``injected-parameters`` are plumbing.
REMOVE_CELL_TAGS = ("parameters", "injected-parameters", "remove-cell")


REMOVE_INPUT_TAGS = ("remove-input", "hide-input")


REMOVE_OUTPUT_TAGS = ("remove-output", "hide-output")


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


def _run_state(status: dict[str, Any], n_notebooks: int, device: str) -> str:
    """One line: how far the run got, in what time, on what device."""
    esc, st = html.escape, status.get("notebooks", {})
    if status.get("failed"):
        return (f'<p class="fail">The run <b>stopped at {esc(status["failed"])}</b>; the '
                "tables and figures below hold what finished.</p>")
    n_ok = sum(1 for s in st.values() if s.get("ok"))
    secs = status.get("seconds", sum(s.get("seconds") or 0 for s in st.values()))
    return (f'<p class="sub">{n_ok} of {n_notebooks} notebooks ran, in '
            f"{_minutes(secs)}, on {esc(device)}.</p>")


def _notebook_rows(status: dict[str, Any], notebook_names: Sequence[str]) -> str:
    """A row per notebook: its HTML, ok or failed, its time and error."""
    esc, st, rows = html.escape, status.get("notebooks", {}), []
    for nb in notebook_names:
        s = st.get(nb)
        stem = esc(nb[:-6] if nb.endswith(".ipynb") else nb)
        if s is None:
            rows.append(f'<tr><td>{stem}</td><td class="skip">not run</td><td></td>'
                        "<td></td></tr>")
            continue
        mark = '<span class="ok">ok</span>' if s.get("ok") else '<span class="bad">failed</span>'
        rows.append(f'<tr><td><a href="{stem}.html">{stem}</a></td><td>{mark}</td>'
                    f'<td class="num">{esc(_minutes(s.get("seconds")))}</td>'
                    f"<td>{esc(s.get('error') or '')}</td></tr>")
    return "\n".join(rows)


def index_html(res: dict[str, Any], notebook_names: Sequence[str],
               figures: dict[str, list[Figure]] | None = None) -> str:
    """index.html: the poster-vs-run tables, the key figures (embedded), the dataset,
    split and environment, and each notebook's HTML with its status and time."""
    esc = html.escape
    status = res.get("status", {})
    data = res.get("00_data", {})
    env = res.get("environment", {})
    dataset, split, classes = dataset_line(res)
    all_tables = tables(res)
    state = _run_state(status, len(notebook_names), str(env.get("device", "?")))
    awa2 = "" if data.get("dataset") == "awa2" else f'<p class="warn">{esc(AWA2_NOTE)}</p>'
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
{_notebook_rows(status, notebook_names)}
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
