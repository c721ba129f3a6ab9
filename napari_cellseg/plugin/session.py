"""What the widgets of one viewer share, and the one way they run long work.

- ``Device``, ``path_or_none``: option helpers every widget uses.
- ``session_for(viewer)``: per-viewer state (the last trained checkpoint, the segmented folder),
  kept in a ``WeakKeyDictionary`` keyed by the viewer - two viewers never see each other's
  model, and a closed viewer takes its session with it. Widgets listen to ``session.events``.
- ``run(widget, factory, on_yield=...)``: drives a core generator in napari's ``thread_worker``
  (or synchronously when ``widget.synchronous`` is set, for tests). Expected errors (bad folder,
  damaged file, out of memory) become one-line napari notifications, never a traceback; layers
  are touched only in the callbacks, which run in the GUI thread.
- ``report(exc)``: the user's one line for an error, after logging it (``napari_cellseg`` logger):
  anything but a ``CellsegError`` with its traceback, so a bug behind a one-line message can be
  traced; with ``NAPARI_CELLSEG_DEBUG`` set, every error with its traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, QThreadPool
from psygnal import evented

from .tooltips import GUI_WORDS, OS_ERRORS
from ..defaults import MASK_THRESH, SCORE_THRESH
from ..errors import CellsegError
from ..io.layout import image_name

USER_ERRORS = (CellsegError, ValueError, OSError, MemoryError, RuntimeError)
"""Errors caused by the input or the machine: shown as one line, the widget stays usable."""

log = logging.getLogger("napari_cellseg")


class Device(Enum):
    """Where the network runs (``devices.resolve_device`` names)."""

    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


def path_or_none(edit) -> Path | None:
    """The path typed in a magicgui FileEdit, or None when it is empty (``.value`` gives the cwd)."""
    text = edit.line_edit.value.strip()
    return Path(text).expanduser() if text else None


@dataclass(eq=False)
class ImageResult:
    """One segmented image: the model's raw output, and the labels as the user left them.

    ``reviewed`` (class id -> label image) and ``reviewed_scores`` (class id -> {id: score}) hold
    the classes the user edited by hand, so edits survive stepping through a folder; the other
    classes come from ``raw`` at the thresholds of the moment.
    """

    path: Path | None
    raw: Any  # inference.RawInstances (kept untyped so importing this module stays cheap)
    class_names: list[str]
    reviewed: dict[int, np.ndarray] | None = None
    reviewed_scores: dict[int, dict[int, float]] | None = None

    @property
    def name(self) -> str:
        return _display_name(self.path)

    def labels_and_scores(
        self, score_thresh: float, mask_thresh: float
    ) -> tuple[dict[int, np.ndarray], dict[int, dict[int, float]]]:
        """Label image and {id: score} per class: the reviewed ones, the rest from ``raw`` now."""
        from ..inference.postprocess import instance_scores, to_labels

        reviewed = self.reviewed or {}
        classes = [k for k in range(1, len(self.class_names) + 1) if k not in reviewed]
        labels = to_labels(self.raw, score_thresh, mask_thresh, classes=classes) if classes else {}
        model = instance_scores(self.raw)
        scores = {k: model for k in labels}
        labels.update(reviewed)
        scores.update({k: (self.reviewed_scores or {}).get(k, model) for k in reviewed})
        return labels, scores


def short_name(name: str, width: int = 28) -> str:
    """A long file name (DSB2018's are 64-character hashes) shortened in the middle for a dock."""
    return name if len(name) <= width else f"{name[: width // 2 - 1]}...{name[-(width // 2 - 2):]}"


def _display_name(path: Path | None) -> str:
    if path is None:
        return "image"
    return image_name(path)


@evented
@dataclass
class Session:
    """Per-viewer state; ``session.events.last_checkpoint`` fires when training saves a model.

    ``score_thresh`` and ``mask_thresh`` follow the Segment widget's sliders: the folder export
    thresholds the images nobody edited with them.
    """

    last_checkpoint: Path | None = None
    folder_results: list = field(default_factory=list)  # list[ImageResult]
    folder_exported: bool = False  # the folder review was exported and not edited since
    score_thresh: float = SCORE_THRESH
    mask_thresh: float = MASK_THRESH


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unwrapped(obj):
    """napari gives a plugin's widget its viewer as a proxy, and each layer read through it as a new
    proxy object: compare with ``==`` (it reaches the object), and key or ``id`` the object itself."""
    return getattr(obj, "__wrapped__", obj)


def session_for(viewer) -> Session:
    """The session of ``viewer`` (created on first use; it lives as long as the viewer, not the proxy)."""
    viewer = unwrapped(viewer)
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


@dataclass
class Failed:
    """Yielded by ``guarded`` in place of an expected exception."""

    message: str


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (the core writes them for the user), in GUI words:
    an operating-system error says what went wrong with which file, not ``[Errno 2] ...``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        meaning = OS_ERRORS.get(errno.errorcode.get(exc.errno, ""), (exc.strerror or "").lower())
        return gui_words(f"{exc.filename}: {meaning}" if exc.filename else meaning or type(exc).__name__)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return gui_words(first or type(exc).__name__)


def report(exc: BaseException) -> str:
    """Log ``exc`` (see the module docstring) and return the one line the user sees."""
    message = one_line(exc)
    if os.environ.get("NAPARI_CELLSEG_DEBUG") or not isinstance(exc, CellsegError):
        log.error("%s (%s)", message, type(exc).__name__, exc_info=exc)
    else:
        log.info("%s", message)
    return message


def gui_words(message: str) -> str:
    """``message`` with the command-line options it names replaced by the widgets' own words."""
    for cli, gui in GUI_WORDS.items():
        message = message.replace(cli, gui)
    return message


def short_path(path: Path | str | None) -> str:
    """A path short enough for a narrow dock: its folder and file name (the full path goes in a tooltip)."""
    if path is None:
        return "none"
    path = Path(path)
    return str(Path(path.parent.name, path.name)) if path.parent.name else str(path)


def folder_size(folder: Path | str) -> int:
    """Bytes the files directly in ``folder`` take (a run folder holds a few checkpoints, no subfolders)."""
    total = 0
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        try:
            total += entry.stat().st_size if entry.is_file() else 0
        except OSError:  # a checkpoint being replaced right now
            pass
    return total


def human_size(size: int) -> str:
    """``size`` bytes as a biologist reads it: 390 MB, 1.2 GB."""
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    units = ((1e6, "MB"), (1e3, "kB"), (1, "bytes"))
    return next(f"{size / scale:.0f} {unit}" for scale, unit in units if size >= scale or scale == 1)


DOCK_WIDTH = 310
"""Preferred width of a dock (px): on a 1366 px laptop screen the image canvas keeps half the window."""


def keep_narrow(container) -> None:
    """Stop long texts from widening a dock: wrapping labels take the width they are given, combo
    boxes stop sizing to their longest item, and file boxes show the end of a long path (the file
    name) with the whole path in their tooltip."""
    from magicgui.widgets import FileEdit
    from qtpy.QtWidgets import QComboBox, QLabel, QSizePolicy

    if container.native.property("cellseg_narrow"):
        return  # once per widget, whether it is a dock of its own or a tab of the main dock
    container.native.setProperty("cellseg_narrow", True)
    labels = container.native.findChildren(QLabel)
    for label in labels:
        if label.wordWrap():
            label.setMinimumWidth(60)  # wraps to the dock instead of widening it
            policy = label.sizePolicy()
            policy.setHorizontalPolicy(QSizePolicy.Policy.Expanding)
            label.setSizePolicy(policy)
    # magicgui sizes the option names before napari's style sheet enlarges the font ("dataset folde"):
    # they are sized again when shown, all to the widest so the boxes stay aligned
    names = [label for label in labels if label.objectName() == "magicgui.QLabel" and not label.wordWrap()]
    aligner = _AlignNames(names, container.native)
    for label in names:
        label.installEventFilter(aligner)
    for combo in container.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    for widget in _all_widgets(container):
        if isinstance(widget, FileEdit):
            _show_full_path(widget)


def diameter_box(tooltip: str):
    """The Segment tab's nucleus diameter (px): 0 shows as 'auto' (``scale.py`` measures the nuclei)."""
    from magicgui.widgets import FloatSpinBox

    box = FloatSpinBox(value=0, min=0, max=2000, step=1, label="nucleus diameter", tooltip=tooltip)
    box.native.setSpecialValueText("auto")
    return box


class _AlignNames(QObject):
    """Gives the option names of a dock one width, measured in the font they are shown with."""

    def __init__(self, labels: list, parent) -> None:
        super().__init__(parent)
        self.labels = labels

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Show:
            shown = [label for label in self.labels if label.text()]
            width = max((label.fontMetrics().horizontalAdvance(label.text()) for label in shown), default=0) + 6
            for label in shown:
                if label.maximumWidth() != width:
                    label.setFixedWidth(width)  # a fixed column: a wrapping value beside it gets the rest
        return False


def _all_widgets(container):
    from magicgui.widgets import Container

    for widget in container:
        yield widget
        if isinstance(widget, Container):
            yield from _all_widgets(widget)


def _show_full_path(edit) -> None:
    """Tooltip of a FileEdit: its help text, then the whole path; the box scrolls to the file name."""
    help_text = edit.tooltip or ""
    line = edit.line_edit.native
    button = edit.choose_btn
    button.tooltip = f"{button.text} ({help_text})" if help_text else button.text
    button.text = "Browse..."  # "Choose directory" took a third of a narrow dock

    def update(*_: Any) -> None:
        text = edit.line_edit.value.strip()
        line.setToolTip(f"{help_text}\n\n{text}" if text and help_text else text or help_text)
        if not line.hasFocus():
            line.setCursorPosition(len(line.text()))

    line.textChanged.connect(update)
    update()


def guarded(factory: Callable[[], Iterator[Any]]) -> Generator[Any, None, Any]:
    """Run the generator made by ``factory``; an expected error becomes a yielded ``Failed``."""
    try:
        return (yield from factory())
    except USER_ERRORS as exc:
        yield Failed(report(exc))
        return None


def run(
    widget,
    factory: Callable[[], Iterator[Any]],
    *,
    on_yield: Callable[[Any], None],
    on_return: Callable[[Any], None] | None = None,
    on_done: Callable[[], None] | None = None,
    on_error: Callable[[str], None] | None = None,
):
    """Drive ``factory()`` off the GUI thread; ``on_done`` always runs last (re-enable the widget).

    An expected error is shown as a notification and passed to ``on_error`` (its one line).

    Returns the worker (None when ``widget.synchronous``: then everything ran before returning).
    """

    def dispatch(item: Any) -> None:
        if isinstance(item, Failed):
            show_error(item.message)
            if on_error is not None:
                on_error(item.message)
        else:
            on_yield(item)

    def returned(value: Any) -> None:
        if on_return is not None:
            on_return(value)

    def finished() -> None:
        if on_done is not None:
            on_done()

    if getattr(widget, "synchronous", False):
        from ..progress import drain

        try:
            returned(drain(guarded(factory), dispatch))
        finally:
            finished()
        return None

    worker = thread_worker(guarded, start_thread=False)(factory)
    worker.yielded.connect(dispatch)
    worker.returned.connect(returned)
    worker.finished.connect(finished)
    keep_pool_threads_free()
    worker.start()
    return worker


FREE_POOL_THREADS = 2


def keep_pool_threads_free() -> None:
    """Let Qt's global thread pool (where workers run) grow so ``FREE_POOL_THREADS`` stay idle.

    Why: Qt converts large images, e.g. the window's backing store on a repaint, in chunks on that
    pool and waits for them while the GUI thread holds Python's GIL. On 2 cores the pool has 2
    threads; with a training and a segmenting worker on them (fine-tune, then re-segment), both
    waited for the GIL and the conversion for a free thread: a frozen window (seen in CI, stacks
    taken with py-spy)."""
    pool = QThreadPool.globalInstance()
    pool.setMaxThreadCount(max(pool.maxThreadCount(), pool.activeThreadCount() + 1 + FREE_POOL_THREADS))
