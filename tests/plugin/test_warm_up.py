"""The warm-up: imports off the GUI thread once the dock is drawn, then the garbage collector's
freeze (``plugin.warm_up``), checked in a fresh process as a user meets them."""

from __future__ import annotations

_NO_TORCH_ON_THE_GUI_THREAD = """
import sys, threading, traceback
gui_imports = []

class Watch:  # records who imports torch: the warm-up thread may, the GUI thread must not
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "matplotlib") and threading.current_thread() is threading.main_thread():
            gui_imports.append("".join(traceback.format_stack(limit=12)))
        return None

sys.meta_path.insert(0, Watch())
import napari_cellseg.plugin.main_widget
assert "torch" not in sys.modules and "matplotlib" not in sys.modules, "importing the plugin imported them"
import gc, weakref
import napari, numpy as np
from napari_cellseg.plugin import warm_up
viewer = napari.Viewer(show=False)
early = weakref.ref(viewer.add_image(np.zeros((8, 8)), name="early"))  # open before the freeze
_, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
warm_up.warm_up().join(120)
from qtpy.QtWidgets import QApplication
def pump(seconds):
    for _ in range(int(seconds * 100)):
        QApplication.processEvents()
        threading.Event().wait(0.01)
pump(0.4)  # the Train tab's hardware default and plot arrive once the warm-up is done
assert not gui_imports, gui_imports[0]
frozen = gc.get_freeze_count() > 100_000
viewer.layers.remove("early")
pump(1.0)
print("torch" in sys.modules, main.train.arch.value, main.train.plot.steps == [], frozen, early() is None)
viewer.close()
"""


def test_the_dock_imports_no_torch_in_the_gui_thread_then_freezes_what_exists():
    """Adding the dock imported torch in the GUI thread through the Train tab (a 3.0 s freeze), and
    matplotlib for the Train tab's plot; after the warm-up the objects alive are frozen out of the
    collector's sweeps, and a layer open before the freeze is still reclaimed once removed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", _NO_TORCH_ON_THE_GUI_THREAD], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    warmed, arch, plot, frozen, collected = done.stdout.split()[-5:]
    assert warmed == "True" and arch == "resnet18"  # warmed off the GUI thread; no GPU here: the small network
    assert plot == "True"  # the plot came once matplotlib was loaded
    assert frozen == "True"  # what the imports made is out of the collector's sweeps
    assert collected == "True"  # a layer open at the freeze is still reclaimed once removed
