"""Shared fixtures: a tiny synthetic dataset in the HW3 layout, written fresh for each test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

DSB2018 = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"
"""The real DSB2018 dataset beside the checkout (present here and in CI, not in a user's clone)."""
UNTRAINED_DIAMETER = 1.0
"""``object_diameter`` of the untrained models tests segment with. Their random heads find specks of a
few px, which ``--scale auto`` (the default) would enlarge up to 4x, 16x the pixels, to bring them to
the size a model trained at the default diameter finds best (a 180 s test in CI). A model that says it
was trained at 1 px keeps its images at scale 1; auto still measures the first pass."""


def untrained_config(**changes):
    """A light two-class model's config: ResNet-18, trained at ``UNTRAINED_DIAMETER``; ``changes`` override."""
    from napari_cellseg.model.network import ModelConfig

    return ModelConfig(**{"arch": "resnet18", "class_names": ["class1", "class2"],
                          "object_diameter": UNTRAINED_DIAMETER, **changes})


def untrained_model(seed: int = 0, **changes):
    """An untrained light model in eval mode: fast, and its random heads still detect; ``seed`` fixes the
    heads, so every run (and ``save_untrained`` with the same arguments) gets the same detections."""
    from napari_cellseg._torch import torch
    from napari_cellseg.model.network import build_model

    torch.manual_seed(seed)
    return build_model(untrained_config(**changes)).eval()


def save_untrained(path: Path, seed: int = 0, **changes) -> Path:
    """``untrained_model(seed, **changes)`` saved as ``napari-cellseg train`` would: a checkpoint for the CLI
    and the GUI."""
    from napari_cellseg.model.checkpoint import save_checkpoint

    return save_checkpoint(path, untrained_model(seed, **changes), untrained_config(**changes))


TINY_SHAPE = (64, 80)
"""Height x width of every image in ``tiny_dataset``."""

# Per sample: {class id: [(kind, y0, x0, y1, x1), ...]}; instance ids are 1, 2, ... in list order.
# Class 1 cells are bright (fluorescence-like), class 2 cells are dark purple (stain-like).
_TRAIN = {
    "sample_0": {
        1: [("rect", 4, 4, 14, 16), ("ellipse", 30, 40, 46, 60), ("rect", 50, 6, 60, 14)],
        2: [("ellipse", 8, 50, 24, 74)],
    },
    "sample_1": {1: [("ellipse", 10, 10, 30, 30), ("rect", 40, 50, 56, 70)]},  # no class2.tif
    "sample_2": {1: [("rect", 20, 20, 28, 36)], 2: [("ellipse", 34, 4, 58, 28), ("rect", 2, 60, 12, 76)]},
    "sample_3": {2: [("ellipse", 16, 24, 48, 56)]},  # no class1.tif
}
_VAL = {
    "val_0": {1: [("ellipse", 6, 6, 22, 26), ("rect", 40, 44, 52, 64)], 2: [("rect", 30, 8, 44, 22)]},
    "val_1": {1: [("rect", 10, 50, 26, 70)]},  # no class2.tif
}
_COLOURS = {1: (230, 230, 230), 2: (120, 40, 140)}


def _shape_mask(kind: str, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    yy, xx = np.mgrid[: TINY_SHAPE[0], : TINY_SHAPE[1]]
    if kind == "rect":
        return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    cy, cx, ry, rx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _render(spec: dict[int, list[tuple]], rng: np.random.Generator) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """RGBA uint8 image and uint16 label images for one sample spec."""
    rgb = rng.integers(10, 40, (*TINY_SHAPE, 3)).astype(np.uint8)  # noisy dark background
    labels = {}
    for class_id, shapes in spec.items():
        labels[class_id] = np.zeros(TINY_SHAPE, np.uint16)
        for instance_id, shape in enumerate(shapes, start=1):
            mask = _shape_mask(*shape)
            labels[class_id][mask] = instance_id
            rgb[mask] = _COLOURS[class_id]
    return np.dstack([rgb, np.full(TINY_SHAPE, 255, np.uint8)]), labels


def _write_image(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, rgba, compression="lzw", photometric="rgb")


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A small deterministic HW3 dataset in ``tmp_path / "dataset"`` (see ``write_tiny_dataset``)."""
    return write_tiny_dataset(tmp_path / "dataset")


@pytest.fixture(scope="module")
def tiny_dataset_module(tmp_path_factory) -> Path:
    """``tiny_dataset`` shared by the tests of one module (for a model trained once per module)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "dataset")


def write_tiny_dataset(root: Path) -> Path:
    """Write a small deterministic HW3 dataset at ``root`` and return it.

    Layout (all images 64 x 80 RGBA uint8, LZW; masks uint16, deflate, 0 = background, ids 1..n):

    - ``train/sample_0``: class1 (3 instances) + class2 (1)
    - ``train/sample_1``: class1 (2), no class2.tif
    - ``train/sample_2``: class1 (1) + class2 (2)
    - ``train/sample_3``: class2 (1), no class1.tif
    - ``val/val_0``: class1 (2) + class2 (1); ``val/val_1``: class1 (1), no class2.tif
    - ``test_release/test_0.tif``, ``test_1.tif`` (no masks) and ``test_image_name_to_ids.json``
      (``[{"file_name", "id", "height", "width"}]``, ids 1 and 2)

    Class 1 cells are light grey, class 2 cells dark purple, on a dark noisy background, so a model
    can in principle learn them. Train has 4 + 2 + 3 + 1 = 10 instances (6 of class1, 4 of class2);
    no two instances overlap.
    """
    rng = np.random.default_rng(0)
    for split, samples in (("train", _TRAIN), ("val", _VAL)):
        for name, spec in samples.items():
            rgba, labels = _render(spec, rng)
            _write_image(root / split / name / "image.tif", rgba)
            for class_id, label_image in labels.items():
                tifffile.imwrite(root / split / name / f"class{class_id}.tif", label_image, compression="zlib")
    mapping = []
    for image_id, spec in enumerate((_TRAIN["sample_0"], _VAL["val_0"]), start=1):
        name = f"test_{image_id - 1}.tif"
        _write_image(root / "test_release" / name, _render(spec, rng)[0])
        mapping.append({"file_name": name, "id": image_id, "height": TINY_SHAPE[0], "width": TINY_SHAPE[1]})
    (root / "test_image_name_to_ids.json").write_text(json.dumps(mapping, indent=1), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: tiny convolutions gain nothing from threads, and on a
    busy 2-core CI box two threads wait on each other (measured 6-7x slower)."""
    from napari_cellseg._torch import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def errors():
    """Messages of the napari error notifications shown during a GUI test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    seen: list[str] = []

    def collect(notification):
        if notification.severity == NotificationSeverity.ERROR:
            seen.append(notification.message)

    notification_manager.notification_ready.connect(collect)
    yield seen
    notification_manager.notification_ready.disconnect(collect)


def quick(widget, dataset, out):
    """A Train widget set to the lightest settings that still train: resnet18, 64 px crops,
    batch 1 (4 steps an epoch on the tiny dataset), 1 validation image, CPU, no AMP."""
    from napari_cellseg.plugin.session import Device
    from napari_cellseg.plugin.train_widget import Amp

    widget.dataset.value = dataset
    widget.out_dir.value = out
    widget.arch.value = "resnet18"
    widget.epochs.value = 1
    widget.batch_size.value = 1
    widget.crop_size.value = 64
    widget.val_limit.value = 1
    widget.device.value = Device.cpu
    widget.amp.value = Amp.off
    return widget


@pytest.fixture(autouse=True)
def _no_modal_dialogs(monkeypatch):
    """A modal dialog nobody answers blocks the event loop for ever (CI stops at its time limit with
    no trace): here it fails the test at once. Tests that expect a question replace the asking
    function of their module (e.g. ``plugin.segment_widget.ask_discard``)."""
    try:
        from qtpy.QtWidgets import QMessageBox
    except Exception:  # no Qt binding: nothing can be modal
        yield
        return

    def modal(*args, **kwargs):
        pytest.fail(f"a modal dialog opened in a test: {args[1:3] if len(args) > 2 else args}")

    for name in ("question", "information", "warning", "critical", "exec", "exec_"):
        monkeypatch.setattr(QMessageBox, name, modal, raising=False)
    yield


MOVIE_SHAPE = (40, 48)


def write_movie(path, planes=3, axes="TYX"):
    """A grey ImageJ stack of ``planes`` random planes on ``axes``; returns its pixels."""
    data = np.random.default_rng(planes).integers(0, 255, (planes, *MOVIE_SHAPE), dtype=np.uint8)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})
    return data
