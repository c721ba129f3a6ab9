"""Import torch and torchvision through here, never directly.

torchvision pulls in triton, whose bundled LLVM clashes with the LLVM of Mesa (llvmpipe) that
napari's OpenGL canvas has already loaded: the process segfaults. Without CUDA triton is useless,
so it is kept out of ``sys.modules`` before torchvision is imported.
"""

from __future__ import annotations

import sys

import torch

if not torch.cuda.is_available():
    sys.modules.setdefault("triton", None)  # `import triton` now raises ImportError; torch copes

import torchvision  # noqa: E402

__all__ = ["torch", "torchvision"]
