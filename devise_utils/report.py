"""Turn the notebooks' recorded results into results.md and index.html.

results.md puts the poster's numbers beside this run's, table by table, and
names the dataset and split so nobody mistakes a built-in run for AwA2.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from .study import POSTER

#: Columns holding fractions that read best as percentages.
PCT = {"poster", "this run", "chance", "stage1_accuracy", "top1", "top3", "top5", "top10",
       "top-3", "top-5", "zsl_top1", "gzsl_seen", "gzsl_unseen", "gzsl_H", "seen acc",
       "unseen acc", "H", "H (oracle calibration)", "AUSUC", "zsl_top1_fp32", "zsl_top1_int8",
       "change", "chance_unseen", "text_to_image_p@10_seen", "text_to_image_p@10_unseen",
       "image_to_image_p@10_unseen"}


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
    out += ["| " + " | ".join(_fmt(r.get(c), c in PCT) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _backbone_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The main run first, then notebook 04's same-budget comparison rows."""
    main = [{**res["03_stage2"]["summary"], "run": "main"}] if "03_stage2" in res else []
    return main + [{**r, "run": "comparison"} for r in res.get("04_backbones") or []]


def results_markdown(res: dict[str, Any]) -> str:
    data = res.get("00_data", {})
    params = res.get("status", {}).get("params", {})
    out = ["# DeViSE-Mobile results\n",
           f"Dataset: **{data.get('dataset', params.get('dataset', '?'))}**, split: "
           f"**{data.get('split', '?')}** ({len(data.get('seen', []))} seen / "
           f"{len(data.get('unseen', []))} unseen classes; images: {data.get('n_images', {})}). "
           f"Word vectors: `{data.get('vectors', '?')}`. Device: "
           f"{res.get('environment', {}).get('device', '?')}.\n"]
    if data.get("dataset") != "awa2":
        out.append("> The poster's numbers are for AwA2 (standard split, 40 seen / 10 unseen). "
                   "This run used another dataset, so only the protocol, not the values, is "
                   "comparable.\n")
    failed = res.get("status", {}).get("failed")
    if failed:
        out.append(f"**The run stopped at {failed}**; tables below hold what finished.\n")

    rows = _backbone_rows(res)
    out.append("## Stage I: classifier accuracy (seen classes, valid split)\n")
    out.append(md_table([{"run": r["run"], "backbone": r["backbone"],
                          "weights": r.get("weights"), "epochs": r.get("epochs"),
                          "poster": POSTER.get(r["backbone"], {}).get("stage1_accuracy"),
                          "this run": r["stage1_accuracy"]} for r in rows]))
    out.append("\n## Stage II: top-k by nearest class word vector (seen classes, valid split)\n")
    trow = []
    for r in rows:
        p = POSTER.get(r["backbone"], {})
        trow.append({"run": r["run"], "backbone": r["backbone"],
                     **{f"{k} (poster / run)": f"{_fmt(p.get(k), True)} / {_fmt(r[k], True)}"
                        for k in ("top1", "top3", "top5", "top10")}})
    out.append(md_table(trow))
    out.append("\n## Model size\n")
    out.append(md_table([{"run": r["run"], "backbone": r["backbone"],
                          "params M (poster)": POSTER.get(r["backbone"], {}).get("params_m"),
                          "params M (run)": round(r["params_m"], 2),
                          "MB (poster)": POSTER.get(r["backbone"], {}).get("mb"),
                          "MB state dict (run)": round(r["mb"], 2)} for r in rows]))
    zs = res.get("06_zero_shot", {})
    if zs:
        z, g = zs["zero_shot"], zs["gzsl"]
        out.append("\n## Zero-shot (unseen classes only): per-class mean top-1\n")
        out.append(md_table([{"split": data.get("split"),
                              "poster": POSTER["zero_shot_per_class_top1"],
                              "this run": z["per_class_top1"], "chance": z["chance"],
                              "top-3": z.get("top3"), "top-5": z.get("top5")}]))
        out.append("\n## Generalized zero-shot (all classes are candidates)\n")
        out.append(md_table([{"seen acc": g["seen"], "unseen acc": g["unseen"], "H": g["H"],
                              "AUSUC": g.get("AUSUC"),
                              "H (oracle calibration)": g.get("best_H")}]))
        out.append("\nUncalibrated, as in the poster's setting; AUSUC (Chao et al. 2016) sweeps "
                   "the calibration; the oracle H picks it on the test images (an upper bound).\n")
        if zs.get("proposed"):
            out.append("\n## Standard vs proposed split (Xian et al.)\n")
            out.append(md_table(zs["proposed"]))
        if zs.get("split_caveat"):
            out.append("\n## Split caveat: unseen classes that ImageNet-1K contains\n")
            out.append(md_table(zs["split_caveat"]))
        if zs.get("balance"):
            out.append("\n## Class balancing (loss weights) vs plain\n")
            out.append(md_table(zs["balance"], ["balance", "stage1_accuracy", "top1",
                                                "zsl_top1", "gzsl_H"]))
    s1 = res.get("02_stage1", {})
    if s1.get("frozen_sweep"):
        out.append("\n## Frozen layer groups (per stage)\n")
        out.append(md_table(s1["frozen_sweep"], ["stage", "stage1_frozen", "stage2_frozen",
                                                 "stage1_accuracy", "top1", "zsl_top1"]))
    s2 = res.get("03_stage2", {})
    if s2.get("bn_ablation"):
        out.append("\n## Final BatchNorm in the head: ablation\n")
        out.append(md_table(s2["bn_ablation"], ["final_bn", "stage1_accuracy", "top1", "top5",
                                                "zsl_top1"]))
    if res.get("05_pca"):
        p = res["05_pca"]
        out.append("\n## PCA convergence: mean cosine of image vectors to their class vector\n")
        out.append(md_table([{"epoch": e, "mean cos": c}
                             for e, c in zip(p["epochs"], p["mean_cos_own"])]))
    if res.get("07_search"):
        out.append("\n## Search\n")
        out.append(md_table(res["07_search"] if isinstance(res["07_search"], list)
                            else [res["07_search"]]))
    mob = res.get("08_mobile")
    if mob:
        out.append("\n## On a phone: size and single-thread CPU latency (batch 1)\n")
        out.append(md_table([{**r, "params": r["params"] / 1e6, "latency_ms": round(
            r["latency_ms"], 2), "min_cosine": f"{r['min_cosine']:.4f}",
            "mean_cosine": f"{r['mean_cosine']:.4f}"} for r in mob["table"]],
            ["backbone", "format", "image_size", "params", "mb", "latency_ms", "mean_cosine",
             "min_cosine"]))
        out.append("\n(params in millions; MB on disk; cosine to the PyTorch fp32 outputs on "
                   "sample images. Rows at a size other than the one the models were trained "
                   "at measure latency and size; their int8 parity is out of distribution.)\n")
        q = mob.get("int8_zero_shot")
        if q:
            out.append(md_table([q]))
    return "\n".join(out)


def index_html(res: dict[str, Any], notebooks: Sequence[str]) -> str:
    """A small landing page: status of each notebook, links, headline numbers."""
    st = res.get("status", {}).get("notebooks", {})
    items = []
    for nb in notebooks:
        s = st.get(nb)
        mark = "not run" if s is None else ("ok" if s["ok"] else "FAILED: " + (s["error"] or ""))
        secs = f" ({s['seconds']} s)" if s else ""
        link = (f'<a href="{html.escape(nb[:-6])}.html">{html.escape(nb)}</a>' if s
                else html.escape(nb))
        items.append(f"<li>{link} — {html.escape(mark)}{secs}</li>")
    head = []
    zs = res.get("06_zero_shot", {})
    s2 = res.get("03_stage2", {})
    s1 = res.get("02_stage1", {})
    if s1:
        head.append(("Stage I accuracy", s1.get("accuracy")))
    if s2:
        head += [(f"Stage II {k}", s2.get(k)) for k in ("top1", "top3", "top5", "top10")]
    if zs:
        head += [("Zero-shot per-class top-1", zs["zero_shot"]["per_class_top1"]),
                 ("GZSL H", zs["gzsl"]["H"])]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v, True)}</td></tr>"
                   for k, v in head)
    data = res.get("00_data", {})
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>DeViSE-Mobile report</title>
<style>body{{font-family:sans-serif;max-width:52em;margin:2em auto}}td{{padding:2px 12px}}</style>
</head><body><h1>DeViSE-Mobile report</h1>
<p>Dataset <b>{html.escape(str(data.get('dataset', '?')))}</b>, split
<b>{html.escape(str(data.get('split', '?')))}</b>.
Full tables: <a href="results.md">results.md</a>, <a href="results.json">results.json</a>.</p>
<h2>Headline numbers</h2><table>{rows}</table>
<h2>Notebooks</h2><ol start="0">{''.join(items)}</ol>
</body></html>
"""
