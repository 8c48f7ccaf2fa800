"""The study's tables, built once from the recorded results and rendered to Markdown
(results.md) and HTML (index.html): the poster's numbers beside this run's."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devise_utils.report.poster import POSTER
from devise_utils.study.results import (
    BASELINES,
    DEVISE_NAME,
    METHODS,
    basis_summary,
    is_fraction,
    method_row,
    read_records,
    transductive_rows,
)

#: Column headers as the reader sees them (the records use the short names).
LABELS = {"zsl_top1": "zero-shot top-1", "zsl_top1_clean": "zero-shot top-1, clean unseen",
          "held_out_seen_top1": "held-out seen (chooses)",
          "gzsl_seen": "GZSL seen", "gzsl_unseen": "GZSL unseen",
          "gzsl_H": "H (uncalibrated)", "gzsl_H_calibrated": "H calibrated", "gamma": "γ",
          "gzsl_AUSUC": "AUSUC", "gzsl_H_oracle": "H oracle (upper bound)"}
#: Columns of the report's own making that hold fractions (the records' are in FRACTIONS).
SHOWN_AS_PCT = {"poster", "this run", "top-3", "top-5", "seen acc", "unseen acc", "H",
                "H calibrated", "H (oracle calibration)", "AUSUC"}


def _is_pct(column: str) -> bool:
    return column in SHOWN_AS_PCT or is_fraction(column)


def _label(column: str) -> str:
    return LABELS.get(column, column)


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
    out = ["| " + " | ".join(_label(c) for c in cols) + " |", "|" + "---|" * len(cols)]
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

    head = "".join(('<th class="num">' if c in num else "<th>") + f"{html.escape(_label(c))}</th>"
                   for c in cols)
    body = "".join("<tr>" + "".join(td(r, c) for c in cols) + "</tr>\n" for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def _present(rows: Sequence[dict[str, Any]], wanted: Sequence[str]) -> list[str]:
    """The ``wanted`` columns that some row has (sweep rows differ by what they vary)."""
    return [c for c in wanted if any(c in r for r in rows)]


def tables(res: dict[str, Any]) -> list[Table]:
    """Every table of the report, built once from results.json's content (each notebook's
    record checked against its schema first)."""
    rec = read_records(res)
    return [*_model_tables(rec), *_zero_shot_tables(rec), *_sweep_tables(rec),
            *_other_tables(rec)]


def _model_tables(rec: dict[str, Any]) -> list[Table]:
    """Stage I, Stage II and model size: the main run, then notebook 04's comparison."""
    rows = ([{**rec["03_stage2"]["summary"], "run": "main"}] if "03_stage2" in rec else [])
    rows += [{**r, "run": "comparison"} for r in rec.get("04_backbones", [])]
    if not rows:
        return []
    poster = {r["backbone"]: POSTER.get(r["backbone"], {}) for r in rows}
    stage1 = [{"run": r["run"], "backbone": r["backbone"], "weights": r["weights"],
               "epochs": r["epochs"], "poster": poster[r["backbone"]].get("stage1_accuracy"),
               "this run": r["stage1_accuracy"]} for r in rows]
    topk = [{"run": r["run"], "backbone": r["backbone"],
             **{f"{k} (poster / run)": f"{_fmt(poster[r['backbone']].get(k), True)} / "
                                       f"{_fmt(r[k], True)}" for k in ("top1", "top3", "top5",
                                                                       "top10")}}
            for r in rows]
    size = [{"run": r["run"], "backbone": r["backbone"],
             "params M (poster)": poster[r["backbone"]].get("params_m"),
             "params M (run)": round(r["params_m"], 2),
             "MB (poster)": poster[r["backbone"]].get("mb"),
             "MB state dict (run)": round(r["mb"], 2)} for r in rows]
    return [Table("stage1", "Stage I: classifier accuracy (seen classes, valid split)", stage1,
                  note=_at_chance_note(rows, len(rec.get("00_data", {}).get("seen", []))),
                  glance=True),
            Table("stage2", "Stage II: top-k by nearest class word vector (seen classes, "
                            "valid split)", topk, glance=True),
            Table("size", "Model size", size, glance=True)]


def _at_chance_note(rows: Sequence[dict[str, Any]], n_seen: int) -> str:
    """Say plainly which rows did not learn (Stage I within 1.5x chance) and why, so a reader
    does not take an untrained comparison row for a finding."""
    if not n_seen:
        return ""
    chance = 1 / n_seen
    flat = [r for r in rows if r["stage1_accuracy"] <= 1.5 * chance]
    if not flat:
        return ""
    names = ", ".join(f"{r['backbone']} ({r['weights']}, {r['epochs']} epochs)" for r in flat)
    return (f"At chance ({100 * chance:.1f} %): {names}. From random weights on this budget "
            "(the compare_* parameters: few images per class, few epochs) a large network does "
            "not learn; the row measures the budget, not the backbone. With pretrained weights "
            "(--weights) or a larger compare_* budget every backbone learns.")


def _zero_shot_tables(rec: dict[str, Any]) -> list[Table]:
    """Notebook 06: zero-shot, GZSL and every method beside DeViSE on the same images."""
    zs = rec.get("06_zero_shot")
    if not zs:
        return []
    z, g = zs["zero_shot"], zs["gzsl"]
    out = [Table("zero_shot", "Zero-shot (unseen classes only): per-class mean top-1", [
        {"split": rec.get("00_data", {}).get("split"),
         "poster": POSTER["zero_shot_per_class_top1"], "this run": z["per_class_top1"],
         "chance": z["chance"], "top-3": z.get("top3"), "top-5": z.get("top5")}], glance=True)]
    row = {"seen acc": g["seen"], "unseen acc": g["unseen"], "H": g["H"]}
    if "H_calibrated" in g:
        row.update({"H calibrated": g["H_calibrated"], "γ": g.get("gamma")})
    row.update({"AUSUC": g["AUSUC"], "H (oracle calibration)": g["best_H"]})
    out.append(Table("gzsl", "Generalized zero-shot (all classes are candidates)", [row],
                     note="H is uncalibrated, as in the poster's setting"
                          + ("; H calibrated subtracts γ from seen-class scores, γ chosen "
                             "without unseen-class images" if "H_calibrated" in g else "")
                          + "; AUSUC (Chao et al. 2016) sweeps the calibration; the oracle H "
                            "picks it on the test images (an upper bound, not a result).",
                     glance=True))
    base = [k for k in BASELINES if zs.get(k)]
    if base:
        named = [(DEVISE_NAME, zs)] + [(BASELINES[k], zs[k]) for k in base]
        rows = [method_row(n, r) for n, r in named]
        rows += [row for n, r in named for row in transductive_rows(n, r)]
        out.append(Table("baselines", "Every method on the same images (zero-shot and "
                                      "generalized zero-shot)", rows,
                         note=_methods_note(zs), glance=True))
    if zs.get("conse_1k"):
        out.append(Table("basis_1k", "ConSE over the backbone's 1,000 ImageNet classes: the "
                                     "basis and what left it", [
            basis_summary(zs["conse_1k"]["chosen"])],
            note="Kernel and T chosen on rounds of held-out seen classes, each round with its "
                 "held-out classes' own 1K classes taken out; then every 1K class that is an "
                 "unseen class, a hyponym of one, or matches one by name or synonym leaves "
                 "the basis before the unseen classes are scored. The frozen pretrained "
                 "network reads the photos at its own 224 px."))
    if zs.get("proposed"):
        out.append(Table("proposed", "Standard vs proposed split (Xian et al.)", zs["proposed"],
                         _present(zs["proposed"], [
                             "split", "backbone", "weights", "stage1_accuracy", "top1",
                             "zsl_top1", "conse_zsl_top1", "linear_zsl_top1", "gzsl_H",
                             "gzsl_H_calibrated", "gzsl_AUSUC"])))
    if zs.get("unseen_overlap"):
        out.append(Table("overlap", "Which unseen classes the backbone has seen (ImageNet-1K "
                                    "by name and WordNet)", [
            {"unseen class": r["class"], "seen by the backbone": r["imagenet"],
             "why": "; ".join(r["reasons"]), "nearest ImageNet class": r.get("nearest_1k"),
             "its relation": r.get("relation")} for r in zs["unseen_overlap"]], glance=True))
    if zs.get("split_caveat"):
        out.append(Table("split_caveat", "Split caveat: unseen classes that ImageNet-1K "
                                         "contains", zs["split_caveat"]))
    return out


#: The gain over plain ConSE (per-class top-1 points) that the chosen method aims for: on
#: unseen classes the backbone never saw (DGP's margin over ConSE on ImageNet 2-hop), and
#: on unseen classes it saw but which left the 1K basis.
TARGET_GAIN = {"clean": 18.0, "all": 10.0}


def target_line(zs: dict[str, Any]) -> str:
    """The chosen method against plain ConSE from the same Stage I, on the clean unseen
    classes where there are some: the gain in points and whether it meets the target."""
    rec, conse = zs.get("recommended"), zs.get("conse")
    res = zs if rec == "devise" else zs.get(rec or "")
    if not res or not conse:
        return ""
    key = ("per_class_top1_clean" if res["zero_shot"].get("per_class_top1_clean") is not None
           and conse["zero_shot"].get("per_class_top1_clean") is not None else "per_class_top1")
    a, b = 100 * res["zero_shot"][key], 100 * conse["zero_shot"][key]
    clean = key.endswith("clean")
    where = "clean unseen classes" if clean else "all unseen classes"
    target = TARGET_GAIN["clean" if clean else "all"]
    verdict = "met" if a - b >= target else "not met"
    return (f"On the {where}: {a:.1f} % against plain ConSE's {b:.1f} % ({a - b:+.1f} points; "
            f"the target of +{target:.0f} is {verdict}). ")


def _methods_note(zs: dict[str, Any]) -> str:
    rec = zs.get("recommended")
    return ((f"Recommended (best held-out seen score): {METHODS.get(rec, rec)}. " if rec else "")
            + target_line(zs)
            + "Same images and classes for every method; every number is inductive except "
              "rows marked transductive (CSLS over the unlabelled test images; k-means rows: "
              "each unseen class's row moved by k-means onto them, label --transductive). "
              "Held-out seen: zero-shot on seen classes held out in "
              "the calibration round (the score that chooses). Clean unseen: the unseen "
              "classes the backbone never saw. H (uncalibrated) is the poster's setting; H "
              "calibrated subtracts γ from seen-class scores, γ chosen in that round (no "
              "test-seen or unseen image used); the oracle H picks γ on the test images over "
              "every γ where a decision changes, so it bounds any calibrated H.")


def _sweep_tables(rec: dict[str, Any]) -> list[Table]:
    """One-change-each rows: class balancing, frozen groups, Stage II recipe ablations."""
    out = []
    bal = rec.get("06_zero_shot", {}).get("balance")
    if bal:
        out.append(Table("balance", "Class balancing (loss weights) vs plain", bal,
                         _present(bal, ["balance", "stage1_accuracy", "top1", "zsl_top1",
                                        "gzsl_H", "gzsl_H_calibrated"])))
    frozen = rec.get("02_stage1", {}).get("frozen_sweep")
    if frozen:
        out.append(Table("frozen", "Frozen layer groups (per stage)", frozen,
                         _present(frozen, ["stage", "stage1_frozen", "stage2_frozen",
                                           "stage1_accuracy", "top1", "zsl_top1"])))
    abl = rec.get("03_stage2", {}).get("ablations")
    if abl:
        out.append(Table("ablations", "Stage II recipe ablations (one change each)", abl,
                         _present(abl, ["variant", "stage1_accuracy", "top1", "top5",
                                        "zsl_top1", "gzsl_H_calibrated", "train_s"]),
                         note="Chosen on the seen-class columns (Stage II top-1); the zero-shot "
                              "column is shown, never used to choose."))
    return out


def _other_tables(rec: dict[str, Any]) -> list[Table]:
    """PCA convergence as numbers, search quality, the phone formats and int8's cost."""
    out = []
    if p := rec.get("05_pca"):
        out.append(Table("pca", "PCA convergence: mean cosine of image vectors to their "
                                "class vector (and to the nearest other)",
                         [{"epoch": e, "mean_cos_own": c, "mean_cos_nearest_other": o}
                          for e, c, o in zip(p["epoch"], p["mean_cos_own"],
                                             p["mean_cos_nearest_other"])]))
    if s := rec.get("07_search"):
        out.append(Table("search", "Search", [s]))
    if mob := rec.get("08_mobile"):
        out.append(Table("mobile", "On a phone: size and single-thread CPU latency (batch 1)", [
            {**r, "params": r["params"] / 1e6, "latency_ms": round(r["latency_ms"], 2),
             "min_cosine": f"{r['min_cosine']:.4f}", "mean_cosine": f"{r['mean_cosine']:.4f}"}
            for r in mob["table"]],
            ["backbone", "format", "image_size", "params", "mb", "latency_ms", "mean_cosine",
             "min_cosine"],
            note="params in millions; MB on disk; cosine to the PyTorch fp32 outputs on "
                 "sample images. Rows at a size other than the one the models were trained "
                 "at measure latency and size; their int8 parity is out of distribution."))
        out.append(Table("int8", "What int8 costs in zero-shot accuracy",
                         [mob["int8_zero_shot"]]))
    return out


def dataset_line(res: dict[str, Any]) -> tuple[str, str, str]:
    data = res.get("00_data", {})
    params = res.get("status", {}).get("params", {})
    return (str(data.get("dataset", params.get("dataset", "?"))), str(data.get("split", "?")),
            f"{len(data.get('seen', []))} seen / {len(data.get('unseen', []))} unseen classes")


AWA2_NOTE = ("The poster's numbers are for AwA2 (standard split, 40 seen / 10 unseen). This run "
             "used another dataset, so only the protocol, not the values, is comparable.")


def results_markdown(res: dict[str, Any]) -> str:
    """results.md: every table of :func:`tables`, poster beside run."""
    data = res.get("00_data", {})
    dataset, split, classes = dataset_line(res)
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
