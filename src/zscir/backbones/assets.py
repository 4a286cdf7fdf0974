"""Where the package's shipped files live: ``zscir/assets/<name>`` (models, their method checkpoints).

One owner for the path, so that the registry (world-clip), the LiT models (lit-clipart) and the method
factories (checkpoints trained per built-in model) all find the same folder, installed or editable.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_model_dir(name: str = "world-clip") -> Path:
    """Folder of a model (or a checkpoint) shipped inside the package (``zscir/assets/<name>``)."""
    return Path(str(resources.files("zscir") / "assets" / name))
