"""Load torch's native libraries without holding the interpreter lock, before ``import torch``.

``import torch`` loads libtorch_cpu (and libtorch_cuda in a CUDA build) while holding the GIL: a
thread importing torch in the background stalled napari's GUI thread 0.39-0.48 s (the loader maps
and initialises about 1 GB of code). ``dlopen`` called through ctypes runs with the GIL released, and
the import then finds the libraries loaded: the longest stall fell to 0.12-0.13 s (2-core machine,
one core training). Best effort: on any failure the import loads them as it always does.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

LIBRARIES = ("libc10", "libtorch_cpu", "libc10_cuda", "libtorch_cuda", "libtorch")
"""In load order; each is loaded with what it links to (CUDA's own libraries included)."""
RTLD_NOW = 0x2  # RTLD_LOCAL (0): as the import itself loads them


def preload() -> list[str]:
    """Load torch's libraries found beside its package (Linux and macOS); returns those loaded.

    Imports nothing of torch, so it is cheap to call when torch is already imported or absent."""
    if "torch" in sys.modules or sys.platform not in ("linux", "darwin"):
        return []
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return []
    folder = Path(spec.origin).parent / "lib"
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    try:
        dlopen = ctypes.CDLL(None).dlopen  # a foreign call: ctypes releases the GIL around it
    except (OSError, AttributeError):
        return []
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    loaded = []
    for name in LIBRARIES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            if dlopen(str(path).encode(), RTLD_NOW):
                loaded.append(name)
            else:
                log.debug("could not preload %s; the import will load it", path)
    return loaded
