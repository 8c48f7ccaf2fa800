"""Image files on disk: which suffixes count as images, and every image under a folder.

Kept apart from :mod:`devise_utils.data.awa2` (which needs pandas) so that the commands
users run on an exported model import only what they use.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(folder: str | Path) -> list[str]:
    """Every image under ``folder`` (recursive, sorted) or ``folder`` itself if a file."""
    folder = Path(folder)
    if folder.is_file():
        return [str(folder)]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; give a folder of images")
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {folder}")
    return files
