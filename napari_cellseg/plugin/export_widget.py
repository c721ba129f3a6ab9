"""Export & Evaluate widget: segmentations (edited or not) -> COCO results JSON, and COCO AP.

What is exported, chosen in "source":
- "visible layers": every visible Labels layer made by the Segment widget (a stack plane by
  plane) or opened from a results file, grouped by the image it belongs to (``plugin.writer.group_layers``);
- "segmented folder": every image of the Segment widget's folder run, with the edits made in
  the review and the current slider values for the rest (``ImageResult.labels_and_scores``).

Both become results through ``plugin.writer.to_results`` (``coco.labels_to_results``; image ids from
the mapping file, or for the user's own images from ``<results>.images.json``)
and are written by ``coco.write_json`` (atomic). Evaluate compares the same
results with ground truth by image name through ``evaluation.evaluate.evaluate`` (the CLI's function too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, Select
from napari.layers import Labels
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QHeaderView, QMessageBox, QTableWidget, QTableWidgetItem

from . import session
from .session import path_or_none, short_name
from .reader import GROUND_TRUTH, PREDICTION, layer_meta
from .tooltips import EXPORT as TIPS
from .writer import ImageLabels, group_layers, to_results
from ..errors import DatasetError, LayerError
from ..io.layout import IMAGE_NAME, PLANE_SEPARATOR, class_name, ids_file, image_name, is_sample_image
from ..progress import Progress

LAYERS, FOLDER = "visible layers", "segmented folder"
CELL_FORMATS = ["imagej", "geojson", "csv"]
"""Per-cell files written beside the results file (``export.cells``)."""


def ask_several(parent, names: list[str]) -> bool:
    """True when the user means to export the visible layers of several images (tests monkeypatch this)."""
    text = (f"The visible segmentation layers belong to {len(names)} images: {', '.join(names)}.\n\n"
            "Export all of them into one results file (Yes), or not now (No: hide the layers of the images "
            "you do not want, then export again)?")
    buttons = QMessageBox.Yes | QMessageBox.No
    answer = QMessageBox.question(parent, "Export several images?", text, buttons, QMessageBox.No)
    return answer == QMessageBox.Yes


def covered(groups: list[ImageLabels]) -> str:
    """'3 images (a.tif, b.tif, c.tif)': which images an export or evaluation covers."""
    names = [short_name(image_name(g.source)) if g.source is not None else "an unnamed image" for g in groups]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{len(names)} image{'s' if len(names) != 1 else ''} ({shown})"


# ------------------------------------------------------------------ pure generators (worker side)


def export_events(groups: list[ImageLabels], out: Path, mapping: Path | None, cell_formats: tuple[str, ...] = (),
                  class_names: list[str] | None = None) -> Iterator[Progress]:
    """Encode every image's labels, then write ``out`` atomically; returns the number of cells.
    ``cell_formats`` (``imagej``, ``geojson``, ``csv``) also writes ``<image>_cells.*`` beside ``out``
    for each image (``export.cells``, as ``predict --format``)."""
    from ..io.coco import write_json

    results: list[dict] = []
    for n, group in enumerate(groups, start=1):
        results += to_results([group], mapping, ids_file=ids_file(out))
        if cell_formats:
            _write_cell_files(group, n, out.parent, cell_formats, class_names or [])
        yield Progress(n, len(groups), "image")
    write_json(out, results)
    return len(results)


def _write_cell_files(group: ImageLabels, n: int, folder: Path, formats: tuple[str, ...], names: list[str]) -> None:
    """One image's cells, measured on the image file when it is still there (class by class: the
    same id may be drawn in two classes, each with its own score)."""
    from ..export.cells import find_cells, write_cells
    from ..io.images import read_image

    image = read_image(group.source) if group.source is not None and group.source.is_file() else None
    names = names + [class_name(k) for k in range(len(names) + 1, max(group.labels, default=0) + 1)]
    cells = []
    for k in sorted(group.labels):
        cells += find_cells({k: group.labels[k]}, group.scores.get(k, {}), names, image)
    cells.sort(key=lambda c: c.id)
    stem = Path(image_name(group.source)).stem if group.source is not None else f"image{n}"
    write_cells(folder, stem, cells, formats)


def evaluate_events(
    groups: list[ImageLabels], class_names: list[str], truth_folder: Path | None, truth_json: Path | None,
    score_thresh: float = 0.0,
) -> Iterator[Progress]:
    """COCO mask AP of ``groups`` against the ground truth, matched by image name
    (``evaluation.evaluate.evaluate``, as the CLI); returns the metrics dict. The labels hold the cells kept
    at the confidence slider (``score_thresh``), which the matching figures are reported at."""
    from ..io.coco import labels_to_results
    from ..evaluation.evaluate import evaluate

    results, names = [], {}
    for n, group in enumerate(groups, start=1):
        if group.source is None:
            raise LayerError("the image of these labels is unknown (not opened from a file); open it from its file")
        names[n] = image_name(group.source)
        for k in sorted(group.labels):
            results += labels_to_results({k: group.labels[k]}, n, group.scores.get(k, {}))
        yield Progress(n, len(groups), "image")
    if truth_json is not None:
        from ..io.coco import load_json

        gt = load_json(truth_json, "Ground-truth file")
        if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
            raise DatasetError(f"{truth_json.name} is not COCO ground truth (needs images, annotations, categories)")
        label = truth_json.name
    else:
        gt, label = sample_truth(groups, class_names, truth_folder)
    return evaluate(results, names, gt, class_names=class_names, only_matched=True, score_thresh=score_thresh,
                    results_label="the segmentation", truth_label=label)


def sample_truth(groups: list[ImageLabels], class_names: list[str], folder: Path | None) -> tuple[dict, str]:
    """Ground truth from HW3 sample folders: ``folder`` (one sample or a folder of them), or else
    the sample folder each segmented image came from; and how to name it in a message."""
    from ..io.samples import find_samples, read_sample_dir
    from ..evaluation.evaluate import samples_truth

    if folder is not None:
        samples = [read_sample_dir(folder)] if (folder / IMAGE_NAME).is_file() else find_samples(folder)
        label = f"{folder.name}/"
    else:
        sources = [g.source for g in groups if g.source is not None and is_sample_image(g.source)]
        if not sources:
            raise DatasetError("no ground truth: choose a sample folder or a COCO ground-truth .json")
        samples = [read_sample_dir(s.parent) for s in dict.fromkeys(sources)]
        label = "the sample folders of the images"
    return samples_truth(samples, class_names), label


# ------------------------------------------------------------------ the widget


class ExportWidget(Container):
    """Dock widget: what to export, mapping file, results file, Export; ground truth, Evaluate."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session = session.session_for(napari_viewer)
        self.synchronous = False
        self.source = ComboBox(choices=[LAYERS, FOLDER], value=LAYERS, label="source", tooltip=TIPS["export_layers"])
        self.mapping = FileEdit(mode="r", filter="*.json", label="mapping file", tooltip=TIPS["mapping"])
        self.out = FileEdit(mode="w", filter="*.json", label="results file", tooltip=TIPS["out"])
        self.cell_files = Select(choices=CELL_FORMATS, value=[], label="per-cell files", tooltip=TIPS["cell_files"])
        self.cell_files.native.setMaximumHeight(64)
        self.export_button = PushButton(text="Export results", tooltip=TIPS["export_layers"])
        self.truth_folder = FileEdit(mode="d", label="truth folder", tooltip=TIPS["ground_truth"])
        self.truth_json = FileEdit(mode="r", filter="*.json", label="truth .json", tooltip=TIPS["ground_truth"])
        self.evaluate_button = PushButton(text="Evaluate", tooltip=TIPS["evaluate"])
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="", label="status")
        self.extend([self.source, self.mapping, self.out, self.cell_files, self.export_button, self.truth_folder,
                     self.truth_json, self.evaluate_button, self.progress, self.status])
        self.status.native.setWordWrap(True)
        session.keep_narrow(self)  # long file names must not widen the dock
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["metric", "value"])
        header = self.table.horizontalHeader()  # the names take the room: "TP/(TP+FP+FN) @IoU 0.5, score >= 0.5"
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setToolTip(TIPS["table"])
        self.table.setMinimumHeight(140)
        self.native.layout().addWidget(self.table)
        self.export_button.changed.connect(self.export)
        self.evaluate_button.changed.connect(self.evaluate)
        self.metrics: dict | None = None
        self.written: Path | None = None
        self._worker = None

    # ------------------------------------------------------------------ what to export

    def prediction_layers(self) -> list[Labels]:
        """Visible Labels layers holding segmentations (ground-truth layers are left out)."""
        return [
            layer for layer in self.viewer.layers
            if isinstance(layer, Labels) and layer.visible and layer_meta(layer).get("role", PREDICTION) != GROUND_TRUTH
            and layer_meta(layer).get("class_id")
        ]

    def collect(self) -> tuple[list[ImageLabels], list[str]]:
        """Copies of what to export (taken in the GUI thread) and the class names."""
        if self.source.value == FOLDER:
            results = list(self.session.folder_results)
            if not results:
                raise LayerError("no segmented folder yet: use 'Segment folder' in the Segment widget")
            groups = []
            for result in results:
                labels, scores = result.labels_and_scores(self.session.score_thresh, self.session.mask_thresh)
                groups.append(ImageLabels(result.path, {k: v.copy() for k, v in labels.items()}, scores))
            return groups, list(results[0].class_names)
        layers = self.prediction_layers()
        if not layers:
            raise LayerError("no visible segmentation layers: segment an image first, or open a results file")
        names = {int(layer_meta(la)["class_id"]): layer_meta(la).get("class_name") for la in layers}
        class_names = [names.get(k) or class_name(k) for k in range(1, max(names) + 1)]
        return group_layers([(la.name, la.data, la.metadata, la.features) for la in layers]), class_names

    # ------------------------------------------------------------------ actions

    def error(self, message: str) -> None:
        """An error in a notification and in the dock's status line (a toast vanishes)."""
        self.status.value = f"stopped: {message}"
        session.show_error(message)

    def export(self) -> None:
        self.status.value = ""
        try:
            out = path_or_none(self.out)
            if out is None:
                raise ValueError("choose the results file to write (e.g. test-results.json)")
            if out.suffix.lower() != ".json":
                out = out.with_suffix(".json")
            groups, class_names = self.collect()
        except session.USER_ERRORS as exc:
            self.error(session.report(exc))
            return
        names = [image_name(g.source) if g.source is not None else "an unnamed image" for g in groups]
        files = {str(g.source).rsplit(PLANE_SEPARATOR, 1)[0] for g in groups}  # a stack's planes: one file
        if self.source.value == LAYERS and len(files) > 1 and not ask_several(self.native, names):
            self.status.value = f"not exported: the visible layers cover {covered(groups)}"
            return
        mapping, folder = path_or_none(self.mapping), self.source.value == FOLDER
        self.status.value = f"exporting {covered(groups)}"

        def written(count) -> None:
            if count is not None:
                self.written = out
                self.session.folder_exported = self.session.folder_exported or folder
                self.status.value = f"wrote {count} cells of {covered(groups)} to {out}"
                show_info(self.status.value)

        cell_formats = tuple(self.cell_files.value)
        self._start(lambda: export_events(groups, out, mapping, cell_formats, class_names), written)

    def evaluate(self) -> None:
        self.status.value = ""
        self.metrics = None
        self.table.setRowCount(0)  # no figures of an earlier evaluation next to a new message
        try:
            groups, class_names = self.collect()
        except session.USER_ERRORS as exc:
            self.error(session.report(exc))
            return
        truth_folder, truth_json = path_or_none(self.truth_folder), path_or_none(self.truth_json)
        self.status.value = f"evaluating {covered(groups)}"
        self._start(lambda: evaluate_events(groups, class_names, truth_folder, truth_json, self.session.score_thresh),
                    self._show_metrics)

    def _start(self, factory, on_return) -> None:
        if self._worker is not None:
            return
        for button in (self.export_button, self.evaluate_button):
            button.enabled = False

        def progress(item) -> None:
            self.progress.max, self.progress.value = item.total, item.done

        def done() -> None:
            self._worker = None
            self.export_button.enabled = self.evaluate_button.enabled = True

        def failed(message: str) -> None:
            self.status.value = f"stopped: {message}"

        self._worker = True
        self._worker = session.run(
            self, factory, on_yield=progress, on_return=on_return, on_done=done, on_error=failed
        ) or None

    def _show_metrics(self, metrics: dict | None) -> None:
        if metrics is None:
            return
        self.metrics = metrics
        from ..evaluation.metrics import metric_rows

        rows = metric_rows(metrics)
        self.table.setRowCount(len(rows))
        for row, (name, value) in enumerate(rows):
            item = QTableWidgetItem(name)
            item.setToolTip(name)  # whole, where the dock is too narrow for it
            self.table.setItem(row, 0, item)
            figure = QTableWidgetItem("n/a" if value is None else f"{value:.3f}")
            if value is None:
                figure.setToolTip("none of these in the ground truth")
            self.table.setItem(row, 1, figure)
        cells = metrics.get("num_detections", 0)
        done = self.status.value.replace("evaluating", "evaluated")
        self.status.value = f"{done}: {cells} cells against their ground truth"
