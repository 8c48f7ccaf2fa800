"""Finding the images under a folder (``devise_utils.data.images.image_files``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from devise_utils.data.images import image_files


def _jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 30, 30)).save(path, "JPEG")
    return path


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_follows_symlinked_folders_once_and_survives_a_cycle(tmp_path):
    """Class folders that are symlinks (a common way to assemble a dataset) are walked, and
    a link back to a parent neither loops forever nor lists an image twice."""
    real = tmp_path / "store" / "zebra"
    _jpeg(real / "z1.jpg")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "zebra").symlink_to(real, target_is_directory=True)  # only way to the image
    (real / "loop").symlink_to(photos, target_is_directory=True)  # cycle: back to the top
    (photos / "notes.txt").write_text("not an image")

    files = image_files(photos)

    assert files == [str(photos / "zebra" / "z1.jpg")]
    assert files == sorted(files)


def test_keeps_its_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        image_files(tmp_path / "empty")
