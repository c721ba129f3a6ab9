"""What the widgets of one viewer share, and the one way they run long work.

- ``Device``, ``path_or_none``: option helpers every widget uses.
- ``session_for(viewer)``: per-viewer state (the last trained checkpoint, the segmented folder),
  kept in a ``WeakKeyDictionary`` keyed by the viewer - two viewers never see each other's
  model, and a closed viewer takes its session with it. Widgets listen to ``session.events``.
- ``run(widget, factory, on_yield=...)``: drives a core generator in napari's ``thread_worker``
  (or synchronously when ``widget.synchronous`` is set, for tests). Expected errors (bad folder,
  damaged file, out of memory) become one-line napari notifications, never a traceback; layers
  are touched only in the callbacks, which run in the GUI thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from psygnal import evented

from .errors import CellsegError

USER_ERRORS = (CellsegError, ValueError, OSError, MemoryError, RuntimeError)
"""Errors caused by the input or the machine: shown as one line, the widget stays usable."""


class Device(Enum):
    """Where the network runs (``inference.resolve_device`` names)."""

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
        from .postprocess import instance_scores, to_labels

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
    return path.parent.name if path.name.lower() in ("image.tif", "image.tiff") else path.name


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
    score_thresh: float = 0.5
    mask_thresh: float = 0.6


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> Session:
    """The session of ``viewer`` (created on first use)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


@dataclass
class Failed:
    """Yielded by ``guarded`` in place of an expected exception."""

    message: str


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (the core writes them for the user)."""
    if isinstance(exc, OSError) and exc.strerror:  # not "[Errno 2] ...": the reason, then the file
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror[0].lower()}{exc.strerror[1:]}{where}"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, CellsegError) and first:
        return first
    return first or type(exc).__name__


def guarded(factory: Callable[[], Iterator[Any]]) -> Generator[Any, None, Any]:
    """Run the generator made by ``factory``; an expected error becomes a yielded ``Failed``."""
    try:
        return (yield from factory())
    except USER_ERRORS as exc:
        yield Failed(one_line(exc))
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
        gen = guarded(factory)
        try:
            while True:
                dispatch(next(gen))
        except StopIteration as stop:
            returned(stop.value)
        finally:
            finished()
        return None

    worker = thread_worker(guarded, start_thread=False)(factory)
    worker.yielded.connect(dispatch)
    worker.returned.connect(returned)
    worker.finished.connect(finished)
    worker.start()
    return worker
