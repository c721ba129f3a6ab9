"""Weight averaging: one network whose weights are the mean of several runs' (a "model soup").

Runs that continue the same weights with different seeds stay in one basin of the loss, so the mean of
their weights works as one network and usually scores like an ensemble of them at the cost of one
(Wortsman et al. 2022, "Model soups"; Izmailov et al. 2018, SWA, for snapshots of one run). The
sources are untrusted files: each is loaded and checked as any checkpoint is, and all must describe the
same network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._torch import torch
from ..errors import CheckpointError
from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .network import ModelConfig
from .pretrained import builtin_name, describe_checkpoint

SHAPING_FIELDS = ("arch", "class_names", "anchor_sizes", "aspect_ratios", "image_scale")
"""Config fields the sources must share: they decide which weights exist and what they mean."""


def _same_network(first: ModelConfig, other: ModelConfig, source: str) -> None:
    for name in SHAPING_FIELDS:
        a, b = getattr(first, name), getattr(other, name)
        if (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            raise CheckpointError(f"{source} is another network ({name} {b!r}, the first has {a!r}): only weights "
                                  "of one architecture and class list can be averaged")


def _count(value: Any) -> int:
    """A count read from an untrusted checkpoint: a whole non-negative number, else 0."""
    return int(value) if isinstance(value, int | float) and 0 <= value < float("inf") else 0


def trained_steps(checkpoints: Sequence[dict[str, Any]]) -> int:
    """Training steps behind the averaged weights: each run's furthest step, summed over runs (snapshots
    of one run share its output folder and count once)."""
    furthest: dict[str, int] = {}
    for i, ckpt in enumerate(checkpoints):
        args = ckpt.get("train_args") if isinstance(ckpt.get("train_args"), dict) else {}
        run = str(args.get("out_dir") or f"source {i}")
        furthest[run] = max(furthest.get(run, 0), _count(ckpt.get("step")))
    return sum(furthest.values())


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point weights; other tensors (counters) are the first's."""
    first = states[0]
    return {key: (torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
                  if value.is_floating_point() else value.clone())
            for key, value in first.items()}


def average_checkpoints(sources: Sequence[str | Path], out: str | Path) -> Path:
    """Write to ``out`` a checkpoint whose weights are the mean of ``sources``' (files or built-in names).

    The config (confidence included) is the first source's; ``step`` counts every run's training
    (``trained_steps``), so a packed model's card counts it; ``averaged_from`` names the sources.
    """
    if len(sources) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    if builtin_name(Path(out)) is not None:
        raise CheckpointError(f"{out} is a built-in model's file; write the averaged checkpoint elsewhere "
                              "(scripts/pack_model.py packs it as a built-in model)")
    checkpoints, models, configs = [], [], []
    for source in sources:
        ckpt = load_checkpoint(source)
        model, config = model_from_checkpoint(ckpt, describe_checkpoint(source))
        if configs:
            _same_network(configs[0], config, describe_checkpoint(source))
        checkpoints.append(ckpt)
        models.append(model)
        configs.append(config)
    soup = models[0]
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    train_args = checkpoints[0].get("train_args")
    return save_checkpoint(
        out, soup, configs[0], step=trained_steps(checkpoints),
        epoch=max(_count(c.get("epoch")) for c in checkpoints),
        train_args=train_args if isinstance(train_args, dict) else {},
        averaged_from=[{"source": str(s), "step": _count(c.get("step"))}
                       for s, c in zip(sources, checkpoints, strict=True)])


__all__ = ["SHAPING_FIELDS", "average_checkpoints", "average_state_dicts", "trained_steps"]
