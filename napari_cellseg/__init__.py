"""napari-cellseg: cell instance segmentation with Mask R-CNN, as a library, a CLI and a napari plugin.

Importing the package is cheap (napari imports it to discover the plugin); torch loads with the
first call that needs it. The public API, one call per job (``api.py``)::

    import napari_cellseg
    result = napari_cellseg.segment(image)  # built-in "nuclei" model
    result.labels, result.classes, result.scores, result.table()
    model = napari_cellseg.load_model("my_run/best.pt")
    done = napari_cellseg.train("dataset/", "my_run", init="nuclei", epochs=20)
    metrics = napari_cellseg.evaluate("results.json", "dataset/val")

The subpackages, bottom up: ``io`` (files), ``model``, ``evaluation``, ``inference``, ``training``
and ``export``, then the faces ``cli`` and ``plugin`` (napari; the only one that imports Qt).
"""

__version__ = "0.1.0"

_PUBLIC = {  # name -> module that holds it, imported on first use
    "segment": "api", "Segmentation": "api", "load_model": "api", "train": "api", "evaluate": "api",
    "TrainConfig": "training.config", "DoneEvent": "training.engine",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    """The public names are imported on first use, keeping ``import napari_cellseg`` cheap."""
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
