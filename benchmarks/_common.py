"""Helpers shared by the benchmark scripts: machine description, timing, memory, test images.

Every speed figure is a ratio against a baseline run in the same process (or the same script
run), alternating baseline and candidate so drift in machine load hits both alike.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("CELLSEG_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared/data/dsb2018"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def other_load() -> str:
    """Other CPU-heavy jobs on the machine (training runs, test suites) that share the CPU."""
    try:
        out = subprocess.run(["pgrep", "-af", "napari_cellseg train|runs/cpu|pytest"], capture_output=True,
                             text=True, check=False).stdout
    except OSError:
        return "unknown"
    jobs = []
    for line in out.splitlines():
        pid, _, cmd = line.partition(" ")
        if int(pid) != os.getpid() and "pgrep" not in cmd:
            jobs.append(f"{pid}: {cmd[:90]}")
    return "; ".join(jobs) if jobs else "none"


def machine() -> dict[str, Any]:
    from napari_cellseg._torch import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "other_jobs": other_load(),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def header(title: str) -> dict[str, Any]:
    info = machine()
    print(f"# {title}")
    print("# machine: " + json.dumps(info))
    return info


def footer(info: dict[str, Any]) -> None:
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print("# load at end: " + json.dumps({"loadavg_end": info["loadavg_end"], "other_jobs": other_load()}))


# ---------------------------------------------------------------------------------------- timing


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def alternate(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each function ``repeats`` times, interleaved (ABAB, then BABA order on odd rounds), and
    return their wall times in seconds. ``warmup`` untimed rounds come first."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def fmt_s(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


# ---------------------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mb(x: float) -> float:
    return round(x / 2**20, 1)


def run_child(script: Path, args: Sequence[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``script`` in a fresh Python process; it prints one JSON line last, which is returned."""
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------- images and models


def dsb_image(data: Path, min_side: int = 0, largest: bool = True) -> tuple[str, np.ndarray]:
    """A real DSB2018 val image as H x W x 3 uint8 (the largest one fitting ``<= 1024`` per side by default)."""
    import tifffile

    from napari_cellseg.io.images import read_image

    best: tuple[int, Path] | None = None
    for path in sorted((data / "val").glob("*/image.tif")):
        with tifffile.TiffFile(path) as tif:
            h, w = tif.pages[0].shape[:2]
        if max(h, w) > 1024 or min(h, w) < min_side:
            continue
        area = h * w
        if best is None or (area > best[0] if largest else area < best[0]):
            best = (area, path)
    if best is None:
        raise SystemExit(f"no suitable image under {data}/val")
    return best[1].parent.name, read_image(best[1])


def mosaic(data: Path, shape: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 uint8 image tiled from real DSB2018 val images (the larger, denser ones first)."""
    from napari_cellseg.io.images import read_image

    paths = sorted((data / "val").glob("*/image.tif"))
    images = [read_image(p) for p in paths]
    images.sort(key=lambda a: -a.shape[0] * a.shape[1])
    out = np.zeros((*shape, 3), np.uint8)
    y, k = 0, 0
    while y < shape[0]:
        x, row_h = 0, 0
        while x < shape[1]:
            img = images[k % len(images)]
            k += 1
            h, w = min(img.shape[0], shape[0] - y), min(img.shape[1], shape[1] - x)
            out[y : y + h, x : x + w] = img[:h, :w]
            x += w
            row_h = max(row_h, h)
        y += row_h
    return out


def random_model(arch: str, seed: int = 0, score_thresh: float = 0.0, detections: int = 200):
    """The network with random weights (seeded). With ``score_thresh=0`` it keeps up to
    ``detections`` junk detections per image: the count, not the quality, drives the cost."""
    from napari_cellseg._torch import torch
    from napari_cellseg.model.network import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch=arch, class_names=["class1", "class2"], box_score_thresh=score_thresh, detections_per_img=detections
    )
    model = build_model(cfg)
    model.eval()
    return model


def load_model(checkpoint: str | None, arch: str, seed: int = 0, score_thresh: float = 0.0, detections: int = 200):
    """The trained model of ``checkpoint`` when given, else ``random_model``."""
    if not checkpoint:
        return random_model(arch, seed, score_thresh, detections)
    from napari_cellseg.model.checkpoint import load_checkpoint, model_from_checkpoint

    model, _ = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    model.eval()
    return model


def synthetic_raw(shape: tuple[int, int], n: int, seed: int = 0, side: tuple[int, int] = (12, 60)):
    """``n`` cell-like instances (blob probabilities in boxes of ``side`` px) at random places."""
    from napari_cellseg.io.raw import RawInstances

    rng = np.random.default_rng(seed)
    boxes, masks = [], []
    for _ in range(n):
        h, w = rng.integers(side[0], side[1] + 1, 2)
        y0, x0 = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        yy, xx = np.mgrid[:h, :w]
        d = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
        masks.append(np.clip(255 * (1.2 - d), 0, 255).astype(np.uint8))
        boxes.append((x0, y0, x0 + w, y0 + h))
    scores = np.sort(rng.uniform(0, 1, n))[::-1]
    return RawInstances(np.array(boxes), scores, rng.integers(1, 3, n), masks, shape)


def dump_summary(name: str, summary: dict[str, Any]) -> None:
    """The one JSON line each script ends with (for BENCHMARKS.md and the lead's GPU run)."""
    print(json.dumps({"benchmark": name, **summary}, default=float))


def write_figures(figures: dict[str, Any], path: str | None = None) -> None:
    """Print a benchmark's figures as indented JSON and, with ``path``, save the same text there."""
    text = json.dumps(figures, indent=1)
    sys.stdout.write(text + "\n")
    if path:
        Path(path).write_text(text)


# ---------------------------------------------------------------------------------------- GUI stalls


def _waiting(frame) -> bool:
    """A thread parked in a lock, queue or sleep (it does not hold the GIL)."""
    return Path(frame.f_code.co_filename).name in ("threading.py", "queue.py", "selectors.py", "thread.py") or \
        frame.f_code.co_name in ("wait", "sleep", "_wait_for_tstate_lock", "get")


class StallRecorder:
    """The longest time the GUI thread could not run its event loop, phase by phase: a 10 ms QTimer
    ticks throughout and a phase's stall is the longest gap between its ticks (the gap that spans
    the phase's first call included). With ``why``, a watchdog thread samples the GUI thread's stack
    every 5 ms while no tick came for 100 ms, so each phase also names the code that held the thread,
    and the innermost frame of every other thread not parked in a wait (``[thread name]``): the one
    holding the GIL, when a C call holds it, is among them.
    Needs a QApplication (a napari viewer made one)."""

    def __init__(self, interval_ms: int = 10, why: bool = False) -> None:
        import threading
        from collections import Counter

        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication

        self.app = QApplication.instance()
        self.ticks: list[float] = []
        self.stalls: dict[str, float] = {}
        self.calls: dict[str, float] = {}
        self.causes: dict[str, list[tuple[str, int]]] = {}
        self._samples: Counter = Counter()
        self._timer = QTimer()
        self._timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self._timer.start(interval_ms)
        self._gui = threading.main_thread().ident
        if why:
            threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def _watch(self) -> None:
        import threading
        import traceback

        while True:
            time.sleep(0.005)
            if self.ticks and time.perf_counter() - self.ticks[-1] > 0.1:
                frame = sys._current_frames().get(self._gui)
                if frame is not None:  # the innermost line of ours (what we can change) and the innermost line
                    stack = traceback.extract_stack(frame)
                    ours = [f for f in stack if "napari_cellseg" in f.filename and "benchmarks" not in f.filename]
                    where = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in (*ours[-1:], stack[-1])]
                    self._samples[" ... ".join(where)] += 1
                for ident, other in sys._current_frames().items():  # the thread holding the GIL is among these
                    name = next((t.name for t in threading.enumerate() if t.ident == ident), "?")
                    if ident not in (self._gui, threading.get_ident()) and not _waiting(other):
                        self._samples[f"[{name}] {Path(other.f_code.co_filename).name}:{other.f_lineno} "
                                      f"{other.f_code.co_name}"] += 1

    def settle(self, seconds: float = 0.3) -> None:
        """Run the event loop for ``seconds``."""
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.app.processEvents()
            time.sleep(0.002)

    def mark(self) -> int:
        """Where a phase starts: pass it to ``wait``."""
        self._samples.clear()
        return len(self.ticks)

    def wait(self, phase: str, busy: Callable[[], bool], start: int) -> float:
        """Run the event loop while ``busy()``, then record the phase's longest gap (ms)."""
        start = max(0, start - 1)
        while busy():
            self.app.processEvents()
            time.sleep(0.002)
        self.settle(0.1)
        gaps = [b - a for a, b in zip(self.ticks[start:], self.ticks[start + 1:])]
        self.stalls[phase] = round(max(gaps, default=0.0) * 1000, 1)
        if self._samples:  # each sample is about 5 ms of a stall over 100 ms
            self.causes[phase] = self._samples.most_common(8)
        return self.stalls[phase]

    def timed(self, phase: str, action: Callable[[], Any]) -> Any:
        """Call ``action`` in the GUI thread: its own time and the phase's longest gap."""
        self.settle(0.05)
        start = self.mark()
        tick = time.perf_counter()
        value = action()
        self.calls[phase] = round((time.perf_counter() - tick) * 1000, 1)
        self.wait(phase, lambda: False, start)
        return value

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"longest_stall_ms": self.stalls, "call_ms": self.calls}
        if self.causes:
            out["stall_causes"] = self.causes
        return out
