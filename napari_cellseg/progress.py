"""The one progress/cancel contract of every long-running generator, and the one way to run one.

Long work (``inference.predict.iter_predict``, ``stacks.iter_predict_stack``, ``pipeline.iter_export``,
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

import time
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


class Eta:
    """Time left at the pace so far, for progress bars without one (the GUI's; tqdm has its own).

    ``text(done, total)`` is ``", about 2 min left"``, or ``""`` until a step has been timed; the
    clock restarts when ``total`` changes or ``done`` goes back (a new job). Only the steps seen
    since the restart count, so a slow first step (loading the model) does not skew the estimate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._total: int | None = None
        self._start, self._done0 = 0.0, 0

    def text(self, done: int, total: int) -> str:
        now = self._clock()
        if total != self._total or done < self._done0:
            self._total, self._start, self._done0 = total, now, done
            return ""
        steps = done - self._done0
        if steps <= 0 or done >= total:
            return ""
        return f", about {duration((now - self._start) / steps * (total - done))} left"


def duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"2 h 5 min"``: as precise as an estimate deserves."""
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def drain(steps: Generator[Any, Any, R], on_progress: Callable[[Any], None] | None = None) -> R:
    """Run a generator to the end, handing each yielded value to ``on_progress``; its return value."""
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)
