"""torch's native libraries preloaded without the GIL: loaded, then the import still works."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from napari_cellseg.torch_libs import preload
loaded = preload()
import torch
print(",".join(loaded), "torch" in sys.modules, float(torch.ones(2).sum()), preload())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the library names checked are Linux's")
def test_preload_loads_torch_libraries_and_the_import_still_works():
    loaded, imported, total, again = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.split()
    assert {"libc10", "libtorch_cpu"} <= set(loaded.split(","))
    assert (imported, total, again) == ("True", "2.0", "[]")  # once torch is imported there is nothing to do
