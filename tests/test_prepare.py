"""The image cache: every colour mode made RGB, big images shrunk, bad files skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from devise_utils import cli
from devise_utils.core.config import Config
from devise_utils.data.experiment import image_size_for
from devise_utils.data.prepare import cache_dir_for, prepare_cache, prepared_table

SIZE = 64


def _gradient(w: int, h: int) -> np.ndarray:
    return np.add.outer(np.linspace(0, 1, h), np.linspace(0, 1, w))[..., None] / 2


def make_images(folder: Path) -> dict[str, Path]:
    """One image per awkward case, plus two files that cannot be read."""
    folder.mkdir(parents=True)
    rgb = Image.fromarray((_gradient(120, 90) * [255, 128, 0]).astype(np.uint8), "RGB")
    paths = {k: folder / n for k, n in {
        "gray": "gray.jpg", "cmyk": "cmyk.jpg", "palette": "palette.png", "rgba": "rgba.png",
        "sixteen": "sixteen.png", "small": "small.jpg", "truncated": "truncated.jpg",
        "text": "text.jpg"}.items()}
    rgb.convert("L").save(paths["gray"])
    rgb.resize((160, 100)).convert("CMYK").save(paths["cmyk"])
    rgb.quantize(16).save(paths["palette"])
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(120) < 60, 0, 255).astype(np.uint8)[None]
                                  .repeat(90, 0), "L"))
    rgba.save(paths["rgba"])
    Image.fromarray((np.full((80, 100), 32768)).astype(np.uint16)).save(paths["sixteen"])
    rgb.resize((50, 40)).save(paths["small"])
    big = folder / "big.jpg"
    Image.fromarray((np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
                    ).save(big)
    paths["truncated"].write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    big.unlink()
    paths["text"].write_text("this is not a JPEG\n")
    return paths


def test_prepare_cache_converts_shrinks_and_skips(tmp_path):
    paths = make_images(tmp_path / "src" / "zebra")
    table = pd.DataFrame({"path": [str(p) for p in paths.values()], "cls": "zebra"})
    cache = tmp_path / "cache"
    out, skipped = prepare_cache(table, cache, short_side=SIZE, workers=2)

    assert {Path(p).name for p, _ in skipped} == {"truncated.jpg", "text.jpg"}
    assert all(reason for _, reason in skipped)
    tsv = (cache / "skipped.tsv").read_text().splitlines()
    assert tsv[0] == "path\treason" and {Path(x.split("\t")[0]).name for x in tsv[1:]} == {
        "truncated.jpg", "text.jpg"}
    assert len(out) == 6 and set(out.columns) >= {"path", "cls", "source"}
    assert not any("truncated" in p or "text" in p for p in out["path"])
    got = {}
    for _, row in out.iterrows():
        p = Path(row["path"])
        assert p.parent == cache / "zebra" and p.suffix == ".jpg" and Path(row["source"]).is_file()
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            got[Path(row["source"]).stem] = im.copy()
    assert got["gray"].size == (85, 64) and got["cmyk"].size == (102, 64)  # aspect kept
    assert got["palette"].size == got["rgba"].size == (85, 64)
    assert got["small"].size == (50, 40)  # never upsampled
    assert got["sixteen"].size == (80, 64)
    assert abs(np.asarray(got["sixteen"]).mean() - 128) < 3  # scaled, not clipped to white
    rgba = np.asarray(got["rgba"], dtype=float)
    assert rgba[:, :35].min() > 240  # transparent half composited over white
    gray = np.asarray(got["gray"], dtype=float)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() < 3  # grey stays grey
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave nothing behind
    assert sorted(p.name for p in paths["gray"].parent.iterdir()) == sorted(
        p.name for p in paths.values())  # the source folder is never written

    # A re-run does no work: nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.jpg")}
    out2, skipped2 = prepare_cache(table, cache, short_side=SIZE, workers=2)
    assert out2.equals(out) and skipped2 == skipped
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.jpg")} == stamps
    # A source that changed since is cached again.
    future = paths["gray"].stat().st_mtime + 100
    os.utime(paths["gray"], (future, future))
    prepare_cache(table, cache, short_side=SIZE)
    cached = cache / "zebra" / "gray.jpg"
    assert cached.stat().st_mtime_ns != stamps[cached]
    assert (cache / "zebra" / "palette.png.jpg").stat().st_mtime_ns == stamps[
        cache / "zebra" / "palette.png.jpg"]


def make_dataset(root: Path) -> Path:
    make_images(root / "JPEGImages" / "zebra")
    for c, n in (("horse", 6), ("okapi", 3)):
        d = root / "JPEGImages" / c
        d.mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (100, 80), (40 * k, 90, 200)).save(d / f"{c}_{10001 + k}.jpg")
    (root / "classes.txt").write_text("1\tzebra\n2\thorse\n3\tokapi\n")
    (root / "trainclasses.txt").write_text("zebra\nhorse\n")
    (root / "testclasses.txt").write_text("okapi\n")
    return root


def test_cache_dir_depends_on_dataset_path_and_size(tmp_path):
    cfg = Config(data_dir=str(tmp_path / "data"), cache_size=128)
    a, b = cache_dir_for(cfg, tmp_path / "x" / "awa"), cache_dir_for(cfg, tmp_path / "y" / "awa")
    assert a != b and a.parent == b.parent == tmp_path / "data" / "cache"
    assert a.name.startswith("awa-") and a.name.endswith("-128")
    assert cache_dir_for(cfg.replace(cache_size=64), tmp_path / "x" / "awa") != a
    assert cache_dir_for(cfg, tmp_path / "x" / "awa" / ".." / "awa") == a


def test_prepared_table_drops_skipped_rows(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    cfg = Config(dataset=str(root), data_dir=str(tmp_path / "data"), cache_size=SIZE, seed=1)
    t = prepared_table(cfg)
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().out
    assert len(t) == 6 + 6 + 3
    assert all(Path(p).is_relative_to(cache_dir_for(cfg, root)) for p in t["path"])
    assert set(t["split"]) == {"train", "valid", "test_seen", "unseen"}
    assert set(t.loc[t["split"] == "unseen", "cls"]) == {"okapi"}


def test_cli_prepare(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    data = tmp_path / "data"
    argv = ["prepare", "--dataset", str(root), "--data-dir", str(data), "--size", "32",
            "--workers", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "unseen:      3 images,   1 classes" in out
    assert "skipped: 2 file(s)" in out and "text.jpg" in out and "truncated.jpg" in out
    cache = cache_dir_for(Config(data_dir=str(data), cache_size=32), root)
    assert len(list(cache.rglob("*.jpg"))) == 15
    assert cli.main(["prepare", "--dataset", str(tmp_path / "nope"), "--data-dir", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_input_size_is_chosen_from_the_photos_and_says_why(tmp_path):
    root = make_dataset(tmp_path / "ds")                  # 100x80 photos (and broken ones)
    cfg = Config(dataset=str(root), data_dir=str(tmp_path / "data"))
    assert image_size_for(cfg)[0] == 80                    # the short side, a multiple of 16
    size, why = image_size_for(cfg.replace(max_image_size=64))
    assert size == 64 and "max_image_size" in why
    size, why = image_size_for(cfg.replace(epoch_pixels=2e4))  # ~10 training photos
    assert size in (32, 48) and "CPU budget" in why, (size, why)
