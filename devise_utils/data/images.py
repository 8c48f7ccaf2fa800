"""Image files on disk: which suffixes count as images, and every image under a folder.

Kept apart from :mod:`devise_utils.data.awa2` (which needs pandas) so that the commands
users run on an exported model import only what they use.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(folder: str | Path) -> list[str]:
    """Every image under ``folder`` (recursive, sorted) or ``folder`` itself if a file."""
    folder = Path(folder)
    if folder.is_file():
        return [str(folder)]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; give a folder of images")
    files = sorted(_walk_images(folder))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {folder}")
    return files


def _walk_images(folder: Path) -> list[str]:
    """Image paths under ``folder``, through symlinked folders too (``Path.rglob`` on Python
    3.11 does not follow them, so a dataset of linked class folders looked empty); a folder
    whose real path was already walked is skipped, so a link cycle ends."""
    seen: set[str] = set()
    found: list[str] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []  # a cycle, or a second link to a walked folder: don't descend
            continue
        seen.add(real)
        dirs.sort()  # which of two links to one folder is kept does not vary by file system
        found.extend(os.path.join(root, n) for n in names
                     if os.path.splitext(n)[1].lower() in IMAGE_EXTS)
    return found
