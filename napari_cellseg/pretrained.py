"""Built-in models: every ``weights/<name>.pt`` in the package is a model usable by its name.

A name is accepted wherever a checkpoint path is (``load_model("nuclei")``, ``predict nuclei ...``,
``train --init nuclei``): a path to an existing file always wins over a name (a folder does not), so a user's own
``nuclei`` checkpoint file is never shadowed. Built-in files are packed (``packing.py``) and carry
a model card: what they were trained on and their measured accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "nuclei"
"""The model used when the user has none of their own: the Segment dock's first choice, the demo's."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    path: Path


def builtin_models() -> dict[str, BuiltinModel]:
    """The models shipped in the package, by name."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.stem: BuiltinModel(p.stem, p) for p in sorted(WEIGHTS_DIR.glob("*.pt"))}


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """The file behind a checkpoint path or a built-in model's name (an existing file wins)."""
    path = Path(path_or_name)
    if path.is_file():  # a folder called "nuclei" (a dataset, say) does not hide the model
        return path
    model = builtin_models().get(str(path_or_name))
    return model.path if model is not None else path


__all__ = ["DEFAULT_MODEL", "BuiltinModel", "builtin_models", "resolve_checkpoint"]
