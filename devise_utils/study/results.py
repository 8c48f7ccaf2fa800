"""What the study records: method names, one flat row per method, and per notebook the
record it writes.

The notebooks write results with :meth:`Run.record` and the report reads them back; both go
through :func:`check_record`, so a key spelled differently on the two sides, or one nobody
writes any more, is an error instead of a table that silently vanishes.
"""


from typing import Any, NotRequired, TypedDict

#: Display names of the zero-shot methods notebook 06 records beside DeViSE.
DEVISE_NAME = "DeViSE (Stage II)"
BASELINES = {"conse": "ConSE (Stage I, no Stage II)", "linear": "linear map (frozen features)",
             "prototypes": "semantic → visual prototypes (EXEM)",
             "gcn": "WordNet graph propagation (GCNZ)", "eszsl": "ESZSL (closed form)",
             "prototypes_backbone": "semantic → visual prototypes (EXEM), frozen backbone",
             "gcn_backbone": "WordNet graph propagation (GCNZ), frozen backbone",
             "eszsl_backbone": "ESZSL (closed form), frozen backbone",
             "conse_1k": "ConSE over the backbone's 1,000 ImageNet classes (no training)"}
#: Every method of the study, by key: DeViSE first.
METHODS = {"devise": DEVISE_NAME, **BASELINES}

#: The flat row of one method's zero-shot and GZSL numbers (:func:`method_row`).
METHOD_COLUMNS = ("method", "held_out_seen_top1", "zsl_top1", "zsl_top1_clean", "chance",
                  "gzsl_seen", "gzsl_unseen", "gzsl_H", "gzsl_H_calibrated", "gamma",
                  "gzsl_AUSUC", "gzsl_H_oracle")

#: Columns that hold fractions (the report shows them as percentages).
FRACTIONS = frozenset({
    "zsl_top1", "zsl_top1_clean", "held_out_seen_top1", "chance", "gzsl_seen", "gzsl_unseen",
    "gzsl_H", "gzsl_H_calibrated",
    "gzsl_AUSUC", "gzsl_H_oracle", "stage1_accuracy", "top1", "top3", "top5", "top10",
    "per_class_top1", "zsl_top1_fp32", "zsl_top1_int8", "fp32_zsl_top1", "onnx_int8_zsl_top1",
    "pte_int8_zsl_top1", "chance_unseen", "text_to_image_p@10_seen",
    "text_to_image_p@10_unseen", "image_to_image_p@10_unseen",
    "held-out seen (mean over rounds)", "held-out seen (sd over rounds)"})
#: Column endings that also mark fractions (sweep rows carry per-method columns).
FRACTION_SUFFIXES = ("_zsl_top1", "_accuracy", "_H", "_H_calibrated", "_AUSUC")


def is_fraction(column: str) -> bool:
    return column in FRACTIONS or column.endswith(FRACTION_SUFFIXES)


def method_row(method: str, res: dict[str, Any]) -> dict[str, Any]:
    """One method's headline numbers from its ``zero_shot`` and ``gzsl`` results."""
    z, g = res["zero_shot"], res["gzsl"]
    return {"method": method, "held_out_seen_top1": res.get("held_out_seen_top1"),
            "zsl_top1": z["per_class_top1"], "zsl_top1_clean": z.get("per_class_top1_clean"),
            "chance": z["chance"],
            "gzsl_seen": g["seen"], "gzsl_unseen": g["unseen"], "gzsl_H": g["H"],
            "gzsl_H_calibrated": g.get("H_calibrated"), "gamma": g.get("gamma"),
            "gzsl_AUSUC": g["AUSUC"], "gzsl_H_oracle": g["best_H"]}


#: A method's transductive rescorings (each reads the unlabelled unseen test images), by key.
TRANSDUCTIVE = {"zero_shot_transductive": "CSLS",
                "zero_shot_refined": "k-means rows"}


def transductive_rows(method: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    """The same method's zero-shot rescored using the unlabelled test images (CSLS; k-means
    refinement of its class rows): transductive numbers, so rows of their own, named as
    such, never the headline."""
    return [{**dict.fromkeys(METHOD_COLUMNS), "method": f"{method} (transductive: {how})",
             "zsl_top1": res[key]["per_class_top1"], "chance": res[key]["chance"]}
            for key, how in TRANSDUCTIVE.items() if res.get(key)]


# --- one typed record per notebook -----------------------------------------------------------

class DataRecord(TypedDict):
    dataset: str
    split: str
    seen: list[str]
    unseen: list[str]
    n_images: dict[str, int]
    vectors: str
    dim: int
    weights: str
    image_size: int
    image_size_reason: NotRequired[str]


class LrFindRecord(TypedDict):
    stage1_suggestion: float
    stage1_lr: float | None


class Stage1Record(TypedDict):
    accuracy: float
    per_class: dict[str, float | None]
    frozen_sweep: NotRequired[list[dict[str, Any]] | None]


class Stage2Record(TypedDict):
    top1: float
    top3: float
    top5: float
    top10: float
    per_class_top1: float
    summary: dict[str, Any]
    model_path: str
    ablations: NotRequired[list[dict[str, Any]] | None]


class PcaRecord(TypedDict):
    epoch: list[int]
    mean_cos_own: list[float]
    mean_cos_nearest_other: list[float]
    top1: list[float]


class ZeroShotRecord(TypedDict):
    zero_shot: dict[str, Any]
    gzsl: dict[str, Any]
    held_out_seen_top1: NotRequired[float | None]
    zero_shot_transductive: NotRequired[dict[str, Any]]
    zero_shot_refined: NotRequired[dict[str, Any]]
    methods: list[dict[str, Any]]
    conse: NotRequired[dict[str, Any]]
    linear: NotRequired[dict[str, Any]]
    prototypes: NotRequired[dict[str, Any]]
    gcn: NotRequired[dict[str, Any]]
    eszsl: NotRequired[dict[str, Any]]
    prototypes_backbone: NotRequired[dict[str, Any]]
    gcn_backbone: NotRequired[dict[str, Any]]
    eszsl_backbone: NotRequired[dict[str, Any]]
    conse_1k: NotRequired[dict[str, Any]]
    recommended: NotRequired[str | None]
    unseen_overlap: NotRequired[list[dict[str, Any]]]
    balance: NotRequired[list[dict[str, Any]] | None]
    split_caveat: NotRequired[list[dict[str, Any]] | None]
    proposed: NotRequired[list[dict[str, Any]] | None]


SearchRecord = TypedDict("SearchRecord", {
    "k": int, "n_images": int, "text_to_image_p@10_seen": float,
    "text_to_image_p@10_unseen": float, "image_to_image_p@10_unseen": float,
    "chance_unseen": float})


class MobileRecord(TypedDict):
    table: list[dict[str, Any]]
    int8_zero_shot: dict[str, Any]


#: Each notebook's record: its name (``results/<name>.json``) and type. ``04_backbones`` is
#: a list of :func:`~devise_utils.study.sweeps.summary` rows.
RECORDS: dict[str, type | None] = {
    "00_data": DataRecord, "01_lr_find": LrFindRecord, "02_stage1": Stage1Record,
    "03_stage2": Stage2Record, "04_backbones": None, "05_pca": PcaRecord,
    "06_zero_shot": ZeroShotRecord, "07_search": SearchRecord, "08_mobile": MobileRecord,
}


class RecordError(KeyError):
    """A notebook's record does not match its schema in :data:`RECORDS`."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


def check_record(name: str, data: Any) -> Any:
    """``data`` if it is a valid record ``name``; otherwise a :class:`RecordError` naming the
    missing or unknown keys and where the schema lives."""
    if name not in RECORDS:
        raise RecordError(f"unknown record {name!r}; the records are {', '.join(RECORDS)} "
                          "(devise_utils/study/results.py)")
    schema = RECORDS[name]
    if schema is None:
        if not isinstance(data, list):
            raise RecordError(f"record {name!r} is a list of rows, got {type(data).__name__}")
        return data
    if not isinstance(data, dict):
        raise RecordError(f"record {name!r} is a dict, got {type(data).__name__}")
    missing = sorted(schema.__required_keys__ - data.keys())
    unknown = sorted(data.keys() - schema.__required_keys__ - schema.__optional_keys__)
    if missing or unknown:
        raise RecordError(f"record {name!r} does not match {schema.__name__} in "
                          f"devise_utils/study/results.py: missing {missing}, unknown {unknown}")
    return data


def read_records(results: dict[str, Any]) -> dict[str, Any]:
    """The notebook records in a results.json dict, each checked; absent ones left out (a
    run that stopped early has fewer)."""
    return {name: check_record(name, results[name]) for name in RECORDS if name in results}


def basis_summary(chosen: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs of a run's 1K basis: its choice, the spread of the held-out
    rounds that made it, the input size, and which ImageNet classes were taken out."""
    ex = chosen["excluded_1k"]
    return {"kernel": chosen["kernel"], "T": chosen["T"],
            "held-out seen (mean over rounds)": chosen["held_out_rounds_mean"],
            "held-out seen (sd over rounds)": chosen["held_out_rounds_std"],
            "rounds": chosen["n_rounds"], "input px": chosen["image_size"],
            "1K classes taken out": len(ex),
            "taken out": "; ".join(f"{r['wnid']} {r['category']} ({r['why']})"
                                   for r in ex[:12]) + ("; ..." if len(ex) > 12 else "")}
