"""Which torch device to run on: ``auto`` picks the fastest one present, a named one must exist."""

from __future__ import annotations

from ._torch import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; naming a device that is not there is an error."""
    name = str(name).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError("no CUDA GPU is available on this computer; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"there is no GPU {device.index}: this computer has {count} (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not _mps_available():
        raise ValueError("Apple MPS is not available on this computer; use 'cpu' or 'auto'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


__all__ = ["resolve_device"]
