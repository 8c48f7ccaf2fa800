"""What the study records: the method names and, per notebook, the results it writes.

One module that both the notebooks (which write results) and the report (which reads them)
import, so a name or key is spelled once.
"""

from __future__ import annotations

#: Display names of the zero-shot baselines notebook 06 may record beside DeViSE.
DEVISE_NAME = "DeViSE (Stage II)"


BASELINES = {"conse": "ConSE (Stage I, no Stage II)", "linear": "linear map (frozen features)"}
