"""devise_utils: the library behind the DeViSE-Mobile study (notebooks are the story)."""

import os as _os

# Set before torch/OpenMP start: on small shared CPUs busy-waiting OpenMP threads
# slow training 10-40x.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import warnings as _warnings  # noqa: E402

# fastai imports trip torch's jit deprecation notice on every import; it is noise here.
_warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")

from devise_utils.core.config import Config  # noqa: E402

__all__ = ["Config"]
__version__ = "0.1.0"
