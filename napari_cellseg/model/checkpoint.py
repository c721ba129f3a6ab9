"""One-file checkpoints: the weights, the model config to rebuild them, and the state to resume.

Loaded with ``torch.load(weights_only=True)``: a checkpoint downloaded from the internet cannot run
code. Weights are checked before use: the zip's checksums (overwritten bytes), a built-in model's
recorded digest, and finite values (a NaN weight gives empty labels, not an error).
Saved through a temporary file and an atomic rename: a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

from .._torch import torch
from ..atomic import atomic_path
from ..defaults import SCORE_THRESH
from ..errors import CheckpointError
from ..io.layout import default_class_names
from .network import CellMaskRCNN, ModelConfig, build_model
from .packing import unpack_state_dict
from .pretrained import (
    builtin_models, builtin_name, describe_checkpoint, file_digest, recorded_digest, resolve_checkpoint,
)

CLASS_SPECIFIC = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
"""Weights whose shape depends on the number of classes: re-made from the source's when fine-tuning
to other classes (``informed_heads``)."""

FORMAT = "napari-cellseg/1"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: ModelConfig, **state: Any) -> Path:
    """Write ``model``'s weights, ``config`` and any resume ``state`` (optimizer, epoch, ...)."""
    payload = {"format": FORMAT, "config": config.to_dict(), "model": unwrap(model).state_dict()}
    for key, value in state.items():
        payload[key] = value.state_dict() if hasattr(value, "state_dict") else value
    return _write(Path(path), payload)


def save_with_config(source: str | Path, out: str | Path, **changes: Any) -> Path:
    """A copy of the checkpoint ``source`` (a file or a built-in model) with ``changes`` made to its
    config (e.g. ``score_thresh``); weights, training state and model card are kept as they are."""
    out = Path(out)
    if builtin_name(out) is not None:
        raise CheckpointError(f"{out} is a built-in model's file; write the new checkpoint elsewhere")
    ckpt = load_checkpoint(source)
    config = dataclasses.replace(ModelConfig.from_dict(ckpt["config"]), **changes)
    config.validate()
    return _write(out, dict(ckpt, config=config.to_dict()))


def _write(path: Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` through a temporary file and a rename; a failure is one ``CheckpointError``."""
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as exc:
        raise CheckpointError(_write_failure(path, exc)) from None
    except RuntimeError as exc:  # torch's zip writer reports a failed write (ENOSPC) as RuntimeError
        if not any(w in str(exc) for w in ("inline_container", "PytorchStreamWriter", "write")):
            raise
        raise CheckpointError(_write_failure(path, exc)) from None
    return path


def _write_failure(path: Path, exc: Exception) -> str:
    """One line for a checkpoint that could not be written; a full disk is the usual cause."""
    try:
        nearly_full = shutil.disk_usage(path.parent).free < 64 * 2**20
    except OSError:
        nearly_full = False
    full_errnos = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if nearly_full or (isinstance(exc, OSError) and exc.errno in full_errnos):
        return (f"could not save the checkpoint {path}: the disk is full (or your quota is used up); "
                "free some space, then resume from the last checkpoint that was saved")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
    return f"could not save the checkpoint {path}: {reason}"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's weights (names, shapes, dtypes and bytes): the model's identity,
    whichever file or built-in name it came from, e.g. so an export never mixes two models."""
    digest = hashlib.sha256()
    for name, tensor in unwrap(model).state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a napari-cellseg checkpoint (a path or a built-in model's name) safely; every failure
    is one clear ``CheckpointError``."""
    asked, path = path, resolve_checkpoint(path)
    if path.is_dir():  # "not found" misled a user who had picked the run folder
        inside = ", ".join(sorted(p.name for p in path.glob("*.pt"))[:3]) or "no .pt file"
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; pick the .pt file in it ({inside})")
    if not path.is_file():
        names = ", ".join(builtin_models()) or "none installed"
        raise CheckpointError(f"checkpoint not found: {path} (built-in models: {names})")
    shown = describe_checkpoint(asked)
    try:
        _check_integrity(path, shown)
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # A reference to code (GLOBAL), or a well-formed torch archive whose pickle the weights-only
        # reader refuses, is unsafe; anything else is not a checkpoint at all.
        if "GLOBAL" in str(exc) or zipfile.is_zipfile(path):
            raise CheckpointError(
                f"refused to load {shown}: it holds Python objects that could run code, "
                "not plain weights. Use a checkpoint written by napari-cellseg train."
            ) from None
        raise CheckpointError(f"{shown} is damaged or not a PyTorch checkpoint (unreadable data)") from None
    except PermissionError:
        raise CheckpointError(f"{shown}: permission denied; cannot read it") from None
    except (MemoryError, CheckpointError):
        raise
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, KeyError, BadZipFile... for damaged files
        raise CheckpointError(f"{shown} is damaged or truncated ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{shown} is not a napari-cellseg checkpoint (a bare state_dict has no model configuration); "
            "use a checkpoint written by napari-cellseg train"
        )
    return ckpt


def _check_integrity(path: Path, shown: str) -> None:
    """Refuse a file whose bytes changed after it was written: a built-in model must match its
    recorded digest; any zip checkpoint (torch's format) must pass its own CRC checks."""
    if builtin_name(path) is not None:
        recorded = recorded_digest(path)
        if recorded is None:
            raise CheckpointError(f"{shown} has no recorded digest ({path.name}.sha256 is missing); "
                                  "reinstall napari-cellseg")
        if file_digest(path) != recorded:
            raise CheckpointError(f"{shown} does not match its recorded digest: the file was changed or "
                                  "damaged after it was packed; reinstall napari-cellseg")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
            bad = "its index"
        if bad is not None:
            raise CheckpointError(f"{shown} is damaged: {bad} fails its checksum (the bytes were changed "
                                  "after it was saved); use another copy or train again")


RESUME_STATE = ("optimizer", "scheduler", "scaler", "epoch", "step")
"""What ``last.pt`` holds beyond the weights so that a resumed run goes on exactly where it stopped;
``best.pt`` leaves it out (it is for inference)."""


def check_resumable(ckpt: dict[str, Any], source: str | Path) -> None:
    """Refuse to resume from a checkpoint without training state, e.g. a ``best.pt``."""
    missing = [key for key in RESUME_STATE if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{source} holds no training state ({missing[0]}), only what inference needs (best.pt is "
            "saved that way); resume from the run's last.pt instead"
        )


def model_from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> tuple[CellMaskRCNN, ModelConfig]:
    """Rebuild the network described by ``ckpt['config']`` and load its weights."""
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except KeyError as exc:
        raise CheckpointError(f"{source} is incomplete: it has no {exc.args[0]!r} entry") from None
    except (TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source} has an unusable model configuration: {first}") from None
    try:
        model = build_model(config)
        state = model_weights(ckpt)
        mismatch = _weights_mismatch(model.state_dict(), state)
        if mismatch:
            raise ValueError(mismatch)
        broken = _non_finite(state)
        if broken:
            raise CheckpointError(f"{source} is unusable: {broken}")
        model.load_state_dict(state)
    except KeyError as exc:
        raise CheckpointError(f"{source} is incomplete: it has no {exc.args[0]!r} entry") from None
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source} does not fit its model configuration: {first}") from None
    return model, config


def model_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a checkpoint, packed (built-in models) or plain (training runs)."""
    if "packed" in ckpt:
        if not isinstance(ckpt["packed"], dict):
            raise ValueError("its packed weights are not a table of tensors")
        return unpack_state_dict(ckpt["packed"])
    if not isinstance(ckpt["model"], dict):
        raise ValueError("its weights are not a table of tensors")
    return ckpt["model"]


CARD_TEXT = ("description", "trained_on", "licence", "recipe", "arch")
"""The card's text fields; each is kept only when it is text, cut to ``_CARD_CHARS``."""
_CARD_CHARS = 2000


def model_card(path_or_name: str | Path) -> dict[str, Any]:
    """A packed model's card: what it was trained on, the recipe, measured accuracy ({} if none).

    A card is untrusted input like the rest of the file: only fields of the expected type are kept
    (text, a list of class names, ``{split: {figure: number}}``, whole step counts), each bounded,
    so whoever shows it needs no checks of its own. Text is returned as written; show it with
    ``layout.printable`` (a card may hold terminal escapes)."""
    card = load_checkpoint(path_or_name).get("card", {})
    if not isinstance(card, dict):
        return {}
    typed: dict[str, Any] = {k: card[k][:_CARD_CHARS] for k in CARD_TEXT if isinstance(card.get(k), str)}
    classes = card.get("classes")
    if isinstance(classes, list):
        typed["classes"] = [str(c)[:80] for c in classes[:100] if isinstance(c, (str, int)) and not isinstance(c, bool)]
    metrics = card.get("metrics")
    if isinstance(metrics, dict):
        typed["metrics"] = {str(split)[:200]: {str(k)[:80]: float(v) for k, v in list(figures.items())[:50]
                                               if _finite_number(v)}
                            for split, figures in list(metrics.items())[:50] if isinstance(figures, dict)}
    for key in ("steps", "epochs"):
        if isinstance(card.get(key), int) and not isinstance(card[key], bool):
            typed[key] = card[key]
    return typed


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def init_model(source: str | Path, class_names: list[str], **changes: Any) -> tuple[CellMaskRCNN, ModelConfig, bool]:
    """A model for ``class_names`` that starts from ``source``'s weights (a checkpoint or built-in name).

    Why nothing starts random: the source already finds cells, so every class head starts from it
    (``informed_heads``) and fine-tuning only has to learn which class is which. Names a dataset
    only numbers (``class1``, ... as ``layout.default_class_names`` gives them) give way to the
    source's classes when it has as many or more, so ``nucleus`` stays ``nucleus`` and a class the
    corrected images happen to lack is not dropped (class k of such a dataset is the source's class k,
    as when resuming). ``changes`` sets inference fields such as ``detections_per_img``; a ``None``
    keeps the source's value; a tuned confidence is not kept. Returns the model, its config and
    whether the class heads were re-made. Unlike resuming, no schedule or optimizer state is carried
    over: this starts a new run.
    """
    kept, old = model_from_checkpoint(load_checkpoint(source), describe_checkpoint(source))  # validated, weights loaded
    names = list(class_names)
    if len(names) <= len(old.class_names) and names == default_class_names(len(names)):
        names = list(old.class_names)  # the dataset has no names of its own, nor more classes
    changes = {k: v for k, v in changes.items() if v is not None}
    # a tuned confidence (``tune``) was chosen for the source's scores, not for those of the run to come
    config = ModelConfig.from_dict({**old.to_dict(), **changes, "class_names": names, "score_thresh": SCORE_THRESH})
    model = build_model(config)
    remake = names != old.class_names
    state = kept.state_dict()
    if remake:
        state.update(informed_heads(state, old.class_names, names))
    model.load_state_dict(state)
    return model, config, remake


def _non_finite(state: dict[str, Any]) -> str | None:
    """A NaN or Inf weight makes every score NaN (no cells, exit 0): name the first such tensor."""
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            return f"{bad} weight(s) of {name} are not finite numbers (NaN or Inf); it was saved from a diverged run"
    return None


def informed_heads(
    state: dict[str, torch.Tensor], old_names: list[str], new_names: list[str]
) -> dict[str, torch.Tensor]:
    """The class-specific weights (``CLASS_SPECIFIC``) for ``new_names``, taken from ``old_names``'.

    Each new class copies the source class of the same name, else the mean of all source classes
    (class logits, box regression and mask logits); background is kept. Class logit biases drop by
    log(number of new classes sharing a source class), so the shares of one source class add up
    to its old probability: background vs cell is unchanged, and a cell the source scored ``s``
    gets ``s / k`` in each of the ``k`` classes copied from it until training tells them apart.
    """
    sources = [[old_names.index(n) + 1] if n in old_names else list(range(1, len(old_names) + 1)) for n in new_names]
    shares = {i: sum(i in src for src in sources) for i in range(1, len(old_names) + 1)}
    heads = {}
    for key, value in state.items():
        if not key.startswith(CLASS_SPECIFIC):
            continue
        rows = value.shape[0] // (len(old_names) + 1)  # 4 box coordinates per class, else 1
        blocks = value.reshape(len(old_names) + 1, rows, *value.shape[1:])
        made = [blocks[0]]
        for src in sources:
            block = blocks[src].mean(0)
            if key.endswith("cls_score.bias"):
                block = block - torch.tensor([math.log(shares[i]) for i in src]).mean()
            made.append(block)
        heads[key] = torch.stack(made).reshape(-1, *value.shape[1:]).clone()
    return heads


def _weights_mismatch(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> str | None:
    """One line on how the saved weights differ from the configured model, or None when they fit.

    torch's own message lists every tensor over many lines; this counts them and names one.
    """
    missing = [k for k in expected if k not in found]
    unknown = [k for k in found if k not in expected]
    resized = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unknown or resized):
        return None
    parts = [f"{len(v)} {what}" for v, what in ((missing, "weights missing"), (unknown, "unknown weights"),
                                                  (resized, "weights of another shape")) if v]
    if resized:
        k = resized[0]
        example = f"{k} is {tuple(found[k].shape)}, the model needs {tuple(expected[k].shape)}"
    else:
        example = f"{(missing or unknown)[0]}"
    return (f"{', '.join(parts)} (e.g. {example}); it was saved for another architecture or number of "
            "classes than its configuration says")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CellMaskRCNN, ModelConfig]:
    """Load a checkpoint (or a built-in model by name, e.g. ``"nuclei"``) in eval mode on ``device``;
    a ``.onnx`` file exported by ``export-model`` loads as an ``onnx_model.OnnxModel``."""
    if str(path).lower().endswith(".onnx"):
        from .onnx_model import load_onnx

        return load_onnx(path, device)
    model, config = model_from_checkpoint(load_checkpoint(path), describe_checkpoint(path))
    return model.to(device).eval(), config
