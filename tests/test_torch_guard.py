"""The triton/Mesa trap: torchvision imported after napari made an OpenGL context must not crash."""

import os
import subprocess
import sys

import pytest

GUARD = "import sys, napari_cellseg.model.network; print(sys.modules.get('triton', 'absent'))"

AFTER_GL = """
import numpy as np, napari, sys
viewer = napari.Viewer(show=True)
viewer.add_image(np.random.random((64, 64)))
viewer.screenshot()  # forces a real OpenGL context (Mesa)
from napari_cellseg.model.network import ModelConfig, build_model
model = build_model(ModelConfig(arch="resnet18", class_names=["a"]))
viewer.close()
print("ok", sys.modules.get("triton", "absent"))
"""


def test_triton_is_kept_out_without_cuda():
    out = subprocess.run([sys.executable, "-c", GUARD], capture_output=True, text=True, check=True).stdout
    assert out.strip() in ("None", "absent")


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (pytest-xvfb provides one)")
def test_torchvision_after_napari_opengl_does_not_segfault():
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.run([sys.executable, "-c", AFTER_GL], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] in ("ok None", "ok absent")
