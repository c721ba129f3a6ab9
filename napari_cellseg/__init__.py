"""napari-cellseg: cell instance segmentation with Mask R-CNN, as a library, a CLI and a napari plugin.

Importing the package is cheap (napari imports it to discover the plugin); torch loads with the
first core module that needs it - for ``segment`` on its first use:

    import napari_cellseg
    result = napari_cellseg.segment(image)  # built-in "nuclei" model
    result.labels, result.classes, result.scores, result.table()
"""

__version__ = "0.1.0"

__all__ = ["segment", "Segmentation", "__version__"]


def __getattr__(name: str):
    """``segment`` and ``Segmentation`` are imported on first use (``api``), keeping the import cheap."""
    if name in ("segment", "Segmentation"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
