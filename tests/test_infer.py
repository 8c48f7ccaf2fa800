"""Inference without the training stack: the one preprocessing (bit-equal to torchvision's),
exported models in onnxruntime (parity with PyTorch on real photos), the commands with
torch and fastai unimportable, and models that do not fit their index or vectors refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fakes import BLOCK, DIM, make_checkpoint, make_images, write_vec
from PIL import Image

from devise_utils.apps.infer import (
    open_model,
    read_sidecar,
    vector_file_dim,
)
from devise_utils.cli import main
from devise_utils.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["zebra", "horse", "tiger", "striped", "animal", "stripes", "grass", "water", "the",
         "spotted", "cat", "dog", "lion", "mane", "savanna", "river", "tree"]


def torchvision_transform(size: int):
    from torchvision import transforms as T

    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# --- the one preprocessing -------------------------------------------------------------------

@pytest.mark.parametrize("wh", [(72, 72), (64, 64), (65, 64), (63, 200), (300, 199), (17, 31)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
def test_preprocess_is_bit_identical_to_torchvision(wh, mode):
    rng = np.random.default_rng(sum(wh))
    im = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8)).convert(mode)
    for size in (64, 112):
        ref = torchvision_transform(size)(im.convert("RGB")).numpy()
        got = preprocess(im, size)
        assert got.dtype == np.float32 and got.shape == (3, size, size)
        np.testing.assert_array_equal(got, ref)


def test_preprocess_is_bit_identical_on_real_photos(shared):
    from devise_utils.model.predict import load_image

    photos = sorted((shared / "data").glob("*/JPEGImages/*/*.jpg"))[::97]  # sizes, grey ones
    assert len(photos) > 100
    for size in (64, 224):
        tf = torchvision_transform(size)
        for p in photos:
            with Image.open(p) as im:
                ref = tf(im.convert("RGB")).numpy()
                np.testing.assert_array_equal(preprocess(im, size), ref, err_msg=str(p))
            # the PyTorch path (training's snapshots, evaluation, export) is the same function
            np.testing.assert_array_equal(load_image(str(p), size).numpy(), ref)


# --- a tiny exported model -------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from devise_utils.apps.export import export_checkpoint

    d = tmp_path_factory.mktemp("infer")
    vec = write_vec(d / "words.vec", WORDS, seed=4)
    images = make_images(d / "photos", n=6)
    ckpt = make_checkpoint(d / "stage2.pth", vec)
    info = export_checkpoint(ckpt, d / "export", int8=True, images=str(d / "photos"))
    return {"dir": d, "vec": vec, "images": images, "ckpt": ckpt, "info": info,
            "onnx": Path(info["onnx_fp32"]), "int8": Path(info["onnx_int8"])}


def test_sidecar_gives_size_and_dim_and_names_each_file(world):
    side = read_sidecar(world["onnx"])
    assert side["image_size"] == 64 and side["dim"] == DIM
    assert side["file"]["format"] == "onnx-fp32"
    assert read_sidecar(world["int8"])["file"]["format"] == "onnx-int8"
    for path in (world["onnx"], world["int8"]):
        m = open_model(path)
        assert (m.image_size, m.dim, m.vectors) == (64, DIM, str(world["vec"]))
        assert m.lineage == open_model(world["ckpt"]).lineage  # the checkpoint it came from


def test_onnx_embeddings_match_pytorch(world):
    paths = [str(p) for p in world["images"]]
    ref, kept = open_model(world["ckpt"]).embed_paths(paths)
    for path, floor in ((world["onnx"], 0.9999), (world["int8"], 0.95)):
        emb, kept2 = open_model(path).embed_paths(paths)
        assert kept2 == kept and (emb * ref).sum(1).min() >= floor, path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_commands_take_an_exported_model(world, capsys, tmp_path):
    d, img = world["dir"], world["images"][1]
    outs = {}
    for name in ("ckpt", "onnx"):
        idx = tmp_path / f"index-{name}"
        rc, out, err = run_cli(capsys, "index", d / "photos", "--model", world[name], "--out",
                               idx, "--method", "exact")
        assert rc == 0 and "indexed 6 images" in out, err
        side = json.loads((idx / "index.json").read_text())["meta"]
        assert side["image_size"] == 64 and side["checkpoint_sha256"]
        outs[name] = [run_cli(capsys, *argv)[1] for argv in (
            ("search", "a striped animal", "--index", idx, "-k", "4"),
            ("search", "--image", img, "--index", idx, "-k", "3"),
            ("tag", img, "--model", world[name], "-k", "5", "--vocab-index", tmp_path / "v"),
            ("label", d / "photos", "--model", world[name], "--classes", "zebra,horse,cat"))]
    for torch_out, onnx_out in zip(outs["ckpt"], outs["onnx"]):
        assert _words(onnx_out) == _words(torch_out) and onnx_out
    # an index built by the checkpoint answers an image query made with its export
    rc, out, err = run_cli(capsys, "search", "--image", img, "--index", tmp_path / "index-ckpt",
                           "--model", world["int8"], "-k", "3")
    assert rc == 0 and len(out.splitlines()) == 3, err


def _words(out: str) -> list[str]:
    """The printed names (paths, words, labels) without the scores."""
    return [t for t in out.split() if not t.replace(".", "").replace("-", "").isdigit()]


# --- without torch ---------------------------------------------------------------------------

def test_commands_work_with_torch_and_fastai_unimportable(world, tmp_path):
    d, img, onnx = world["dir"], str(world["images"][0]), str(world["int8"])
    idx, vocab = str(tmp_path / "index"), str(tmp_path / "vocab")
    code = BLOCK + textwrap.dedent(f"""
        from devise_utils.cli import main
        runs = [["index", {str(d / "photos")!r}, "--model", {onnx!r}, "--out", {idx!r}],
                ["search", "a striped animal", "--index", {idx!r}, "-k", "2"],
                ["search", "--image", {img!r}, "--index", {idx!r}, "-k", "2"],
                ["tag", {img!r}, "--model", {onnx!r}, "-k", "3", "--vocab-index", {vocab!r}],
                ["label", {img!r}, "--model", {onnx!r}, "--classes", "zebra,horse"]]
        for argv in runs:
            assert main(argv) == 0, argv
        try:
            import torch  # noqa: F401
        except ImportError:
            print("no torch")
        # nor the data-science stack the study uses (time and memory of every call)
        heavy = ("torch", "fastai", "pandas", "sklearn", "matplotlib")
        assert not [m for m in sys.modules if m.split(".")[0] in heavy
                    and sys.modules[m] is not None]
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("indexed 6 images") and lines[-1] == "no torch"
    assert lines.count(img) == 1 and any(line.startswith(img + "  ") for line in lines)
    # a checkpoint still needs torch, and says so
    code = BLOCK + ("from devise_utils.cli import main\n"
                    f"main(['tag', {img!r}, '--model', {str(world['ckpt'])!r}])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode != 0 and "torch" in r.stderr


# --- models that do not fit --------------------------------------------------------------------

def test_another_dimension_is_refused_naming_both_files(world, capsys, tmp_path):
    other = tmp_path / "words50.vec"
    other.write_text("2 50\n" + "".join(f"{w} " + " ".join(["0.1"] * 50) + "\n"
                                        for w in ("zebra", "horse")))
    assert vector_file_dim(other) == 50 and vector_file_dim(world["vec"]) == DIM
    img = world["images"][0]
    for argv in (("tag", img, "--vocab-index", tmp_path / "v"), ("label", img, "--classes",
                 "zebra,horse"), ("index", world["dir"] / "photos", "--out", tmp_path / "i")):
        rc, _, err = run_cli(capsys, *argv, "--model", world["onnx"], "--vectors", other)
        assert rc == 2 and str(world["onnx"]) in err and str(other) in err, argv
        assert f"{DIM}-d" in err and "50-d" in err


def test_another_input_size_or_checkpoint_is_refused(world, capsys, tmp_path):
    from devise_utils.apps.export import export_checkpoint

    idx = tmp_path / "index"
    assert run_cli(capsys, "index", world["dir"] / "photos", "--model", world["onnx"],
                   "--out", idx, "--method", "exact")[0] == 0
    # the same checkpoint exported for 32-px inputs: a different input size
    small = make_checkpoint(tmp_path / "small" / "stage2.pth", world["vec"], image_size=32)
    exp = export_checkpoint(small, tmp_path / "small" / "export", images=str(world["dir"]))
    rc, _, err = run_cli(capsys, "search", "--image", world["images"][0], "--index", idx,
                         "--model", exp["onnx_fp32"])
    assert rc == 2 and exp["onnx_fp32"] in err and str(world["onnx"].resolve()) in err
    assert "32-px" in err and "64 px" in err
    other = make_checkpoint(tmp_path / "other.pth", world["vec"], seed=1)
    rc, _, err = run_cli(capsys, "search", "--image", world["images"][0], "--index", idx,
                         "--model", other)
    assert rc == 2 and str(other) in err and world["onnx"].name in err


def test_bad_sidecars_are_refused(world, tmp_path):
    import shutil

    d = tmp_path / "m"
    d.mkdir()
    model = d / world["onnx"].name
    shutil.copy(world["onnx"], model)
    with pytest.raises(FileNotFoundError, match="export.json"):
        open_model(model)
    info = json.loads((world["onnx"].parent / "export.json").read_text())
    for change, match in ((lambda i: i.update(dim=DIM + 1), "output dimension"),
                          (lambda i: i["input"].update(shape=["batch", 3, 32, 32]),
                           "input size"),
                          (lambda i: i["files"].pop(model.name), "not " + model.name),
                          (lambda i: i["files"][model.name].update(sha256="0" * 64),
                           "sha256 differs"),
                          (lambda i: i["input"].update(mean=[0.5, 0.5, 0.5]), "ImageNet")):
        bad = json.loads(json.dumps(info))
        change(bad)
        (d / "export.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            open_model(model)
    with pytest.raises(ValueError, match="neither an exported model"):
        open_model(tmp_path / "model.pt")


# --- parity with PyTorch on real photos ------------------------------------------------------

def test_onnx_parity_and_tags_on_real_photos(shared, tmp_path):
    """The ImageNet SqueezeNet body with a Stage II head: ONNX fp32 vs PyTorch on real
    photos (small Tiny ImageNet ones and larger, some grey, Caltech ones)."""
    import torch

    from devise_utils.apps import vocab
    from devise_utils.apps.export import export_checkpoint
    from devise_utils.model.backbones import build_model, save_checkpoint

    weights = shared / "weights" / "squeezenet1_1-imagenet-onnxzoo.pth"
    vec = shared / "vectors" / "glove-6b-50d.top20k.vec"
    photos = sorted((shared / "data" / "tiny-objects-50" / "JPEGImages").glob("*/*.jpg"))[::550]
    photos += sorted((shared / "data" / "caltech-zsl-dev" / "JPEGImages").glob("*/*.jpg"))[::100]
    if not (weights.is_file() and vec.is_file() and len(photos) > 40):
        pytest.skip("real weights, GloVe vectors or photos not found under ../shared")
    torch.manual_seed(0)
    model = build_model("squeezenet1_1", 50, weights=str(weights), head_hidden=512).eval()
    meta = {"stage": 2, "backbone": "squeezenet1_1", "n_out": 50, "dim": 50, "image_size": 64,
            "vectors": str(vec), "config": {"head_hidden": 512, "dropout": 0.25,
                                             "final_bn": True, "image_size": 64}}
    ckpt = save_checkpoint(model, meta, tmp_path / "stage2.pth")
    info = export_checkpoint(ckpt, tmp_path / "export", images=str(photos[0].parent))
    paths = [str(p) for p in photos]
    ref, kept = open_model(ckpt).embed_paths(paths)
    emb, kept2 = open_model(info["onnx_fp32"]).embed_paths(paths)
    assert kept2 == kept == paths
    assert (emb * ref).sum(1).min() >= 0.999
    words = vocab.open_index(vec, root=tmp_path)
    tags = [[w for w, _ in t] for t in words.search(ref, 5, exact=True)]
    assert [[w for w, _ in t] for t in words.search(emb, 5, exact=True)] == tags
