"""napari-cellseg: cell instance segmentation with Mask R-CNN, as a library, a CLI and a napari plugin.

Importing the package is cheap (napari imports it to discover the plugin); torch loads with the
first core module that needs it.
"""

__version__ = "0.1.0"
