"""Pre-flight: every bad input is refused, naming the file and the fix, before anything runs.

Each test breaks one input of a tiny AwA2-layout folder (decodable 8-px photos, a 4-d vector
file) and checks the error, its message, and that nothing was trained or written.
docs/reliability.md lists these rows.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from devise_utils import pipeline
from devise_utils.core.config import make_config
from devise_utils.core.errors import DataError
from devise_utils.data.vectors import MissingVectorsError, VectorsError
from devise_utils.model.backbones import (
    WeightsFileError,
    WeightsUnavailableError,
    expected_shapes,
)
from devise_utils.study import preflight as P
from devise_utils.study.run import Run

SEEN, UNSEEN = ["zebra", "lion", "polar+bear"], ["pig", "otter"]
DIM = 4


def _jpeg(path: Path, colour: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (colour, 40, 200 - colour)).save(path)


def make_tree(root: Path, seen=SEEN, unseen=UNSEEN) -> Path:
    classes = [*seen, *unseen]
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{i}\t{c}\n" for i, c in enumerate(classes, 1)))
    (root / "trainclasses.txt").write_text("".join(f"{c}\n" for c in seen))
    (root / "testclasses.txt").write_text("".join(f"{c}\n" for c in unseen))
    for k, c in enumerate(classes):
        for n in range(2):
            _jpeg(root / "JPEGImages" / c / f"{c}_{10001 + n}.jpg", 20 * k + n)
    return root


def write_vec(path: Path, rows: dict[str, list], header: str | None = "auto") -> Path:
    lines = [f"{len(rows)} {DIM}"] if header == "auto" else ([header] if header else [])
    lines += [w + " " + " ".join(str(x) for x in v) for w, v in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_rows() -> dict[str, list]:
    words = ["zebra", "lion", "polar", "bear", "pig", "otter"]
    rng = np.random.default_rng(0)
    return {w: [round(float(x), 4) for x in rng.standard_normal(DIM)] for w in words}


@pytest.fixture
def case(tmp_path):
    """(params, tmp_path): a valid tiny dataset and vector file; runs/ and data/ unwritten."""
    root = make_tree(tmp_path / "awa")
    vec = write_vec(tmp_path / "v.vec", good_rows())
    params = {"dataset": str(root), "vectors": str(vec), "data_dir": str(tmp_path / "data"),
              "runs_dir": str(tmp_path / "runs")}
    return params, tmp_path


def refused(params: dict, tmp_path: Path, error=DataError, match: str = "") -> str:
    """Pre-flight, Run and the pipeline all refuse ``params``; nothing is written."""
    cfg = make_config(params)
    with pytest.raises(error, match=match) as e:
        P.preflight(cfg)
    with pytest.raises(error, match=match):
        Run(cfg)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
    return str(e.value)


def test_valid_inputs_pass_and_are_remembered(case):
    params, tmp_path = case
    cfg = make_config(params)
    got = P.preflight(cfg)
    assert got.seen == tuple(SEEN) and got.unseen == tuple(UNSEEN) and got.dim == DIM
    assert P.preflight(cfg) is got          # same files: not read again
    Run(cfg)
    assert not (tmp_path / "runs").exists()


# -- weights ----------------------------------------------------------------------------------

def test_weights_text_file(case):
    params, tmp_path = case
    (tmp_path / "bad.pth").write_text("hello world\n")
    msg = refused({**params, "weights": str(tmp_path / "bad.pth")}, tmp_path, WeightsFileError,
                  "bad.pth is not a file written by torch.save")
    assert "'imagenet' or 'none'" in msg


def test_weights_of_another_architecture(case):
    params, tmp_path = case
    path = tmp_path / "resnet34.pth"  # ResNet34's names, tiny tensors
    torch.save({k: torch.zeros(1) for k in expected_shapes("resnet34")}, path)
    msg = refused({**params, "weights": str(path)}, tmp_path, WeightsFileError,
                  "resnet34.pth is not a squeezenet1_1 state dict")
    assert "52 missing (e.g. features.0.weight" in msg
    assert "218 unexpected (e.g. conv1.weight" in msg and "(214 more)" in msg
    assert "set backbone=resnet34" in msg


def test_weights_truncated(case):
    params, tmp_path = case
    path = tmp_path / "cut.pth"
    torch.save({k: torch.zeros(s) for k, s in expected_shapes("squeezenet1_1").items()}, path)
    path.write_bytes(path.read_bytes()[:4096])
    refused({**params, "weights": str(path)}, tmp_path, WeightsFileError,
            "cut.pth is a damaged or truncated torch.save archive")


def test_weights_holding_nan_a_checkpoint_or_a_pickled_model(case):
    params, tmp_path = case
    state = {k: torch.zeros(s) for k, s in expected_shapes("squeezenet1_1").items()}
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    refused({**params, "weights": str(tmp_path / "nan.pth")}, tmp_path, WeightsFileError,
            r"nan.pth holds NaN or infinity in 1 tensor\(s\) \(features.0.weight\)")
    torch.save({"epoch": 3, "state_dict": {"a": torch.zeros(1)}}, tmp_path / "ckpt.pth")
    refused({**params, "weights": str(tmp_path / "ckpt.pth")}, tmp_path, WeightsFileError,
            "ckpt.pth is a training checkpoint; its 'state_dict' entry")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")
    refused({**params, "weights": str(tmp_path / "model.pth")}, tmp_path, WeightsFileError,
            r"model.pth holds Python objects.*model.state_dict\(\)")


def test_imagenet_without_network(case, monkeypatch):
    import torchvision.models as tvm

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(tvm.ResNet34_Weights.DEFAULT), "get_state_dict", offline)
    params, tmp_path = case
    refused({**params, "backbone": "resnet34", "weights": "imagenet"}, tmp_path,
            WeightsUnavailableError, r"ImageNet weights for resnet34.*--weights FILE")


# -- word vectors -----------------------------------------------------------------------------

@pytest.mark.parametrize("value,match", [
    ("nan", r"v.vec: line 6: the vector of 'pig' holds NaN or infinity"),
    ("inf", r"v.vec: line 6: the vector of 'pig' holds NaN or infinity"),
    ("1e39", r"too large for float32"),
    ("x1", r"v.vec: line 6: 'x1' in the vector of 'pig' is not a number"),
])
def test_vectors_with_a_bad_number(case, value, match):
    params, tmp_path = case
    rows = good_rows()
    rows["pig"][1] = value
    write_vec(tmp_path / "v.vec", rows)
    refused(params, tmp_path, VectorsError, match)


def test_vectors_all_zero_class_vector(case):
    params, tmp_path = case
    write_vec(tmp_path / "v.vec", {**good_rows(), "otter": [0, 0, 0, 0]})
    refused(params, tmp_path, VectorsError, r"line 7: 'otter' has an all-zero vector")


def test_vectors_two_classes_on_one_vector(case):
    params, tmp_path = case  # bear+polar averages the same two words as polar+bear
    make_tree(tmp_path / "awa2", seen=[*SEEN, "bear+polar"])
    msg = refused({**params, "dataset": str(tmp_path / "awa2")}, tmp_path, VectorsError,
                  r"1 pair\(s\) of classes get the same vector from .*v.vec: 'polar\+bear' = "
                  r"'bear\+polar'")
    assert "Rename one class" in msg


def test_vectors_duplicate_word_with_another_row(case):
    params, tmp_path = case
    rows = good_rows()
    text = write_vec(tmp_path / "v.vec", rows).read_text()
    (tmp_path / "v.vec").write_text(text.replace(f"{len(rows)} {DIM}", f"{len(rows) + 1} {DIM}")
                                    + "lion 1 2 3 4\n")
    refused(params, tmp_path, VectorsError,
            r"v.vec: the word 'lion' is on line 3 and again on line 8 with a different vector")


def test_vectors_empty_file(case):
    params, tmp_path = case
    (tmp_path / "v.vec").write_bytes(b"")
    refused(params, tmp_path, VectorsError, r"v.vec is empty; is it a fastText .vec/.txt file")


@pytest.mark.parametrize("header,match", [
    ("9 4", r"header \(line 1\) says 9 words but the file holds 6 rows.*'6 4'"),
    ("6 300", r"line 2 has 4 numbers for 'zebra', expected 300 \(the header on line 1 says"
              r".*fix the header to '6 4'"),
])
def test_vectors_header_disagrees_with_rows(case, header, match):
    params, tmp_path = case
    write_vec(tmp_path / "v.vec", good_rows(), header=header)
    refused(params, tmp_path, VectorsError, match)


def test_vectors_not_utf8(case):
    params, tmp_path = case
    path = tmp_path / "v.vec"
    path.write_bytes(path.read_bytes().replace(b"otter", b"ott\xe9r"))
    refused(params, tmp_path, VectorsError, r"v.vec: line 7 is not UTF-8 text.*iconv")


def test_vectors_missing_a_class_word_is_bad_input(case):
    params, tmp_path = case
    rows = good_rows()
    del rows["otter"]
    write_vec(tmp_path / "v.vec", rows)
    msg = refused(params, tmp_path, MissingVectorsError, r"1 word\(s\) have no vector in")
    assert "otter" in msg


# -- dataset ----------------------------------------------------------------------------------

def test_dataset_with_one_seen_class(case):
    params, tmp_path = case
    make_tree(tmp_path / "one", seen=["zebra"])
    refused({**params, "dataset": str(tmp_path / "one")}, tmp_path, DataError,
            r"one/trainclasses.txt: 1 seen class\(es\), need at least 2")


def test_dataset_without_unseen_class(case):
    params, tmp_path = case
    make_tree(tmp_path / "none", unseen=[])
    refused({**params, "dataset": str(tmp_path / "none")}, tmp_path, DataError,
            r"none/testclasses.txt: no unseen class, need at least 1")


def test_dataset_class_both_seen_and_unseen(case):
    params, tmp_path = case
    root = Path(params["dataset"])
    (root / "testclasses.txt").write_text("pig\notter\nlion\n")
    refused(params, tmp_path, DataError, r"testclasses.txt repeats seen class\(es\).*lion")


def test_dataset_class_whose_every_photo_is_unreadable(case):
    params, tmp_path = case
    for p in (Path(params["dataset"]) / "JPEGImages" / "otter").iterdir():
        p.write_bytes(p.read_bytes()[:40])   # truncated JPEGs
    refused(params, tmp_path, DataError, r"no photo of class\(es\) otter under .* decoded")


def test_dataset_class_names_that_differ_only_in_case(case):
    params, tmp_path = case
    make_tree(tmp_path / "case", unseen=["pig", "Zebra"])
    refused({**params, "dataset": str(tmp_path / "case")}, tmp_path, DataError,
            r"classes.txt: classes 'zebra' \(line 1\) and 'Zebra' \(line 5\) differ only in case")


def test_dataset_class_names_not_utf8(case):
    params, tmp_path = case
    path = Path(params["dataset"]) / "trainclasses.txt"
    path.write_bytes(path.read_bytes().replace(b"lion", b"li\xf6n"))
    refused(params, tmp_path, DataError, r"trainclasses.txt: line 2 is not UTF-8 text")


# -- semantics (WordNet) ----------------------------------------------------------------------

def test_wordnet_absent_when_semantics_need_it(case, monkeypatch):
    import nltk

    params, tmp_path = case
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-data")])
    (Path(params["dataset"]) / P.CLASS_SYNSETS).write_text("zebra\tn02391049\n")
    P.preflight(make_config(params))  # class names alone: no WordNet needed
    refused({**params, "semantics": "name+gloss"}, tmp_path, DataError,
            r"'name\+gloss', which needs WordNet: WordNet is not installed.*nltk.download")


def test_unknown_semantic_part_or_synsets_file(case):
    from devise_utils.core.config import ConfigError

    params, tmp_path = case
    refused({**params, "semantics": "name+glos"}, tmp_path, ConfigError,
            r"parameter 'semantics': unknown part\(s\) glos; join parts of name, synonyms")
    refused({**params, "class_synsets": str(tmp_path / "nope.txt")}, tmp_path, ConfigError,
            r"parameter 'class_synsets': .*nope.txt is not a file")


def test_class_synsets_with_an_unknown_wordnet_id(case, monkeypatch, shared):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(shared / "nltk_data"), *nltk.data.path])
    params, tmp_path = case
    (Path(params["dataset"]) / P.CLASS_SYNSETS).write_text("zebra\tn02391049\nlion\tn99999999\n")
    refused(params, tmp_path, DataError, r"class_synsets.txt: line 2.*n99999999")
    (Path(params["dataset"]) / P.CLASS_SYNSETS).write_text("zebra\tn02391049\nokapi\tn02411206\n")
    refused(params, tmp_path, DataError, r"class_synsets.txt names class\(es\) not in .*okapi")


# -- the pipeline refuses before its first notebook -------------------------------------------

def test_pipeline_exits_2_with_the_message_and_writes_nothing(case, capsys):
    params, tmp_path = case
    (tmp_path / "bad.pth").write_text("hello world\n")
    out = tmp_path / "report"
    rc = pipeline.main(["--dataset", params["dataset"], "--vectors", params["vectors"],
                        "--weights", str(tmp_path / "bad.pth"), "--data-dir",
                        params["data_dir"], "--runs-dir", params["runs_dir"], "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: weights file" in err and "bad.pth is not a file written by torch.save" in err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()
    rc = pipeline.main(["--weights", str(tmp_path / "bad.pth"), "--data-dir",  # built-in data
                        params["data_dir"], "--runs-dir", params["runs_dir"], "--out", str(out)])
    assert rc == 2 and "bad.pth" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before the built-in dataset is made


def test_pipeline_checks_every_compared_backbone(case, monkeypatch):
    import torchvision.models as tvm

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(tvm.ResNet34_Weights.DEFAULT), "get_state_dict", offline)
    monkeypatch.setattr(type(tvm.SqueezeNet1_1_Weights.DEFAULT), "get_state_dict",
                        lambda *a, **k: {k: torch.zeros(s) for k, s in
                                         expected_shapes("squeezenet1_1").items()})
    params, _ = case  # squeezenet's ImageNet weights are there, resnet34's (notebook 04) not
    cfg = make_config({**params, "weights": "imagenet"})
    P.preflight(cfg)
    with pytest.raises(WeightsUnavailableError, match="ImageNet weights for resnet34"):
        pipeline.check(cfg)


# -- exported models (.onnx) against the index or vectors they are used with ------------------

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A 32-px -> 7-d image embedder exported like apps/onnx_export.py does (dynamic batch)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 7)).eval()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), input_names=["image"],
                      output_names=["embedding"], dynamic_axes={"image": {0: "batch"}},
                      dynamo=False)
    return path


def test_exported_model_against_index_and_vectors(tiny_onnx, tmp_path):
    from devise_utils.apps.index import EmbeddingIndex
    from devise_utils.apps.runtime import ExportMismatchError, check_onnx, onnx_embed

    def index(dim: int, size: int) -> Path:
        vecs = np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32)
        ix = EmbeddingIndex(vecs, ["a", "b", "c"], {"image_size": size}, method="exact")
        return ix.save(tmp_path / f"ix{dim}-{size}")

    EmbeddingIndex.load(index(7, 32), model=tiny_onnx)  # fits
    with pytest.raises(ExportMismatchError, match=r"m.onnx takes 32x32 images but 64x64 are "
                                                  r"expected by the index .*ix7-64"):
        EmbeddingIndex.load(index(7, 64), model=tiny_onnx)
    with pytest.raises(ExportMismatchError, match=r"m.onnx outputs 7-d embeddings but 300-d"):
        EmbeddingIndex.load(index(300, 32), model=tiny_onnx)
    with pytest.raises(ExportMismatchError, match=r"outputs 7-d embeddings but 4-d are expected "
                                                  r"by v.vec"):
        check_onnx(tiny_onnx, dim=DIM, against="v.vec")
    with pytest.raises(ExportMismatchError, match=r"takes \(N, 3, 32, 32\) images, got an array "
                                                  r"of shape \(2, 3, 64, 64\)"):
        onnx_embed(tiny_onnx, np.zeros((2, 3, 64, 64), np.float32))
    (tmp_path / "x.onnx").write_text("hello")
    with pytest.raises(ExportMismatchError, match=r"x.onnx is not an ONNX model"):
        check_onnx(tmp_path / "x.onnx")
