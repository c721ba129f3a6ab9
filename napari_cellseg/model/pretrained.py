"""Built-in models: every ``weights/<name>.pt`` in the package is a model usable by its name.

A name is accepted wherever a checkpoint path is (``load_model("nuclei")``, ``predict nuclei ...``,
``train --init nuclei``): a path to an existing file always wins over a name (a folder does not), so a user's own
``nuclei`` checkpoint file is never shadowed. Built-in files are packed (``packing.py``) and carry
a model card: what they were trained on and their measured accuracy. Each ships with its SHA-256
digest beside it (``<name>.pt.sha256``, ``sha256sum`` format, written by ``scripts/pack_model.py``):
a built-in file that was changed or damaged after packing is refused, never used with wrong weights.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
DEFAULT_MODEL = "nuclei"
"""The model used when the user has none of their own: the Segment dock's first choice, the demo's."""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    path: Path


DIGEST_SUFFIX = ".sha256"
"""``weights/<name>.pt.sha256`` holds the built-in file's digest (``sha256sum -c`` checks it too)."""


def builtin_models() -> dict[str, BuiltinModel]:
    """The models shipped in the package, by name: plain files only (a folder named ``x.pt`` or a
    link is no model; one stray entry must not hide the others)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.stem: BuiltinModel(p.stem, p) for p in sorted(WEIGHTS_DIR.glob("*.pt"))
            if p.is_file() and not p.is_symlink()}


def builtin_name(path: str | os.PathLike) -> str | None:
    """The built-in model's name if ``path`` is a built-in model's file, else None."""
    path = Path(path).resolve()
    return next((m.name for m in builtin_models().values() if m.path.resolve() == path), None)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digest_file(path: str | os.PathLike) -> Path:
    """Where a built-in model's recorded digest lives."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def recorded_digest(path: str | os.PathLike) -> str | None:
    """The digest recorded for a built-in model's file, or None when there is none (or it is unreadable)."""
    try:
        text = digest_file(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


def write_digest(path: str | os.PathLike) -> Path:
    """Record ``path``'s digest beside it (``scripts/pack_model.py`` calls this after packing)."""
    from ..atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(digest_file(path), f"{file_digest(path)}  {path.name}\n")
    return digest_file(path)


def describe_checkpoint(path_or_name: str | os.PathLike) -> str:
    """A checkpoint in the user's words: ``the built-in model 'nuclei'``, or a local file that takes
    a built-in model's name called what it is (``./nuclei`` is the user's file, not the model)."""
    path = resolve_checkpoint(path_or_name)
    name = builtin_name(path)
    if name is not None:
        return f"the built-in model {name!r} ({path})"
    if str(path_or_name) in builtin_models():
        return (f"the file {path.absolute()} (a file in the current folder named like the built-in model "
                f"{str(path_or_name)!r} is used instead of it; rename the file to use the built-in model)")
    return str(path)


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """The file behind a checkpoint path or a built-in model's name (an existing file wins)."""
    path = Path(path_or_name)
    if path.is_file():  # a folder called "nuclei" (a dataset, say) does not hide the model
        return path
    model = builtin_models().get(str(path_or_name))
    return model.path if model is not None else path


__all__ = ["DEFAULT_MODEL", "BuiltinModel", "builtin_models", "builtin_name", "resolve_checkpoint", "file_digest",
           "recorded_digest", "write_digest", "describe_checkpoint"]
