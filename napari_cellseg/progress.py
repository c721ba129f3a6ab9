"""The one progress/cancel contract of every long-running generator, and the one way to run one.

Long work (``inference.iter_predict``, ``stacks.iter_predict_stack``, ``pipeline.iter_export``,
``sharding.iter_sharded_export``, the GUI jobs) is a generator that

- takes ``should_stop`` (a callable, checked between steps: tiles, planes, images) and then returns
  None, leaving what was finished on disk;
- yields ``Progress(done, total, name)`` after each step (a tuple, so ``done, total, name = p`` works);
- returns its result (generator return value) when it ran to the end.

``engine.train`` speaks events (steps, epochs, messages) but keeps the same cancel contract; its
``StepEvent.progress`` is a ``Progress``. ``drain`` runs any of them to the end: scripts, the CLI
(under a progress bar) and the GUI's synchronous mode use it instead of hand-written loops.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

R = TypeVar("R")

StopCheck = Callable[[], bool]
"""``should_stop``: returns True when the user asked to cancel."""


class Progress(NamedTuple):
    """``done`` of ``total`` steps finished; ``name`` says what the last step was (an image, a plane)."""

    done: int
    total: int
    name: str = ""


def stopped(should_stop: StopCheck | None) -> bool:
    """Whether ``should_stop`` (which may be None: never stop) asks to stop now."""
    return should_stop is not None and bool(should_stop())


def drain(steps: Generator[Any, Any, R], on_progress: Callable[[Any], None] | None = None) -> R:
    """Run a generator to the end, handing each yielded value to ``on_progress``; its return value."""
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)
