"""Faults: a training or export process killed outright, or interrupted, loses nothing it had finished.

The SIGKILL tests run the real CLI in a subprocess (``python -m napari_cellseg``), wait for it to
reach the point of interest by polling its files, and kill it without warning; a killed process
runs no ``finally`` and no ``atexit``, so only what was already on disk counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import save_untrained
from napari_cellseg.model import checkpoint as checkpoint_module
from napari_cellseg.training import engine
from napari_cellseg.inference import pipeline
from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_checkpoint, save_checkpoint
from napari_cellseg.cli.main import main
from napari_cellseg.model.network import ModelConfig, build_model

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")]

TRAIN = ["--arch", "resnet18", "--crop-size", "64", "--device", "cpu", "--val-limit", "1", "--detections", "10",
         "--no-amp", "--roi-samples", "64"]  # a 64 px crop holds few cells: 512 regions made ROIAlign most of a step


def _start(*argv: str, stderr: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(stderr, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "napari_cellseg", *argv], stdout=subprocess.DEVNULL,
                                stderr=err, env=env)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 60.0) -> None:
    """Poll ``ready()`` until true; fail (and stop the process) if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"never reached: {what} (exit status {proc.returncode})")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


# ---------------------------------------------------------------------------------------- training


def test_training_killed_mid_epoch_resumes_losing_at_most_that_epoch(tiny_dataset, tmp_path, capsys):
    run, log = tmp_path / "run", tmp_path / "train.log"
    proc = _start("train", str(tiny_dataset), "--out", str(run), "--epochs", "3", *TRAIN, stderr=log)
    last = run / "last.pt"
    # 4 training images, batch 2: 2 steps an epoch. The bar shows epoch=2 once epoch 2 has taken a step.
    _wait_for(proc, lambda: last.exists() and "epoch=2" in log.read_text(errors="replace"), "a step of epoch 2")
    # a second run into the folder, even told to overwrite, is refused while the first runs (issue 21, 3)
    assert main(["train", str(tiny_dataset), "--out", str(run), "--overwrite", *TRAIN]) == 1
    assert f"being written by another napari-cellseg process (pid {proc.pid}" in capsys.readouterr().err
    _kill(proc)
    assert (run / ".run.lock").read_text() == str(proc.pid)  # left behind by the killed run: taken over below

    ckpt = load_checkpoint(last)  # whole, never half-written
    assert ckpt["epoch"] in (1, 2)  # killed inside epoch 2: only that epoch's steps are lost
    assert ckpt["step"] == 2 * ckpt["epoch"] and len(ckpt["history"]) == ckpt["epoch"]
    killed_at = ckpt["epoch"]

    assert main(["train", str(tiny_dataset), "--out", str(run), "--epochs", "3", "--resume", str(last), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert f"at epoch {killed_at + 1}, step {2 * killed_at}" in out
    done = load_checkpoint(last)
    assert done["epoch"] == 3 and done["step"] == 6
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3]  # the counter went on from the checkpoint
    assert done["optimizer"]["state"] and done["scheduler"]["last_epoch"] == 6
    assert not (run / ".run.lock").exists()


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    config = ModelConfig(arch="resnet18", class_names=["a"])
    model = build_model(config)
    path = save_checkpoint(tmp_path / "last.pt", model, config, epoch=1)
    before = path.read_bytes()

    def dies_half_way(obj, target):
        Path(target).write_bytes(before[: len(before) // 2])  # half a file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, config, epoch=2)
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the temporary file went too


def test_the_next_save_removes_a_killed_writers_temporary_file(tmp_path):
    config = ModelConfig(arch="resnet18", class_names=["a"])
    model = build_model(config)
    stale = tmp_path / ".last.pt.k1ll3d.tmp"  # what SIGKILL during torch.save leaves behind
    stale.write_bytes(b"half a checkpoint")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    other = tmp_path / ".best.pt.k1ll3d.tmp"  # another file's: not ours to remove
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 60, time.time() - 60))
    save_checkpoint(tmp_path / "last.pt", model, config, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.k1ll3d.tmp", "last.pt"]


def test_ctrl_c_during_training_saves_the_work_and_exits_130(tiny_dataset, tmp_path, monkeypatch, capsys):
    real, steps = engine._train_step, []

    def interrupted_at_step_3(*args, **kwargs):
        if len(steps) == 2:
            raise KeyboardInterrupt
        steps.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_train_step", interrupted_at_step_3)
    run = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--out", str(run), "--epochs", "3", *TRAIN]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "napari-cellseg: interrupted"
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 2 and ckpt["epoch"] == 1  # epoch 1 kept; resume redoes the interrupted epoch


# ---------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("model") / "model.pt", detections_per_img=10)


def _test_folder(folder: Path, n: int, size: int = 192) -> Path:
    """``n`` TIFFs and their mapping file (``folder/mapping.json``)."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        tifffile.imwrite(folder / f"img_{i:02d}.tif", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        entries.append({"file_name": f"img_{i:02d}.tif", "id": i + 1, "height": size, "width": size})
    (folder / "mapping.json").write_text(json.dumps(entries))
    return folder / "mapping.json"


def test_export_killed_keeps_the_previous_submission_and_resumes(model_file, tmp_path, monkeypatch):
    images = tmp_path / "test_release"
    images.mkdir()
    n = 8
    mapping = _test_folder(images, n)
    out = tmp_path / "test-results.json"
    previous = b'[{"image_id": 1, "previous": true}]'
    out.write_bytes(previous)
    partial = tmp_path / "test-results.json.partial.jsonl"
    argv = ["export", str(model_file), str(images), "--out", str(out), "--mapping", str(mapping), "--device", "cpu"]

    proc = _start(*argv, stderr=tmp_path / "export.log")
    _wait_for(proc, lambda: partial.exists() and partial.read_text().count("\n") >= 2, "one finished image")
    _kill(proc)
    assert out.read_bytes() == previous  # the old submission is untouched until the new one is whole
    finished = partial.read_text().count('"name"')
    assert 1 <= finished < n

    segmented = []
    real = pipeline.segment_image
    monkeypatch.setattr(pipeline, "segment_image", lambda m, image, **kw: segmented.append(1) or real(m, image, **kw))
    assert main(argv) == 0
    assert len(segmented) == n - finished  # finished images were not redone
    results = json.loads(out.read_text())
    assert isinstance(results, list) and {r["image_id"] for r in results} <= set(range(1, n + 1))
    assert not partial.exists()


def test_ctrl_c_during_export_keeps_the_previous_submission(model_file, tmp_path, monkeypatch, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    mapping = _test_folder(images, 3, size=64)
    out = tmp_path / "test-results.json"
    out.write_text("[]")
    real, calls = pipeline.segment_image, []

    def interrupted_on_the_second(m, image, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(m, image, **kw)

    monkeypatch.setattr(pipeline, "segment_image", interrupted_on_the_second)
    argv = ["export", str(model_file), str(images), "--out", str(out), "--mapping", str(mapping), "--device", "cpu"]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "napari-cellseg: interrupted"
    assert out.read_text() == "[]"
    lines = (tmp_path / "test-results.json.partial.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["name"] == "img_00.tif"  # settings + the finished image


# ---------------------------------------------------------------------------------------- round 2 (issue 12)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("napari-cellseg: error: "), err
    assert sum(line.startswith("napari-cellseg: error: ") for line in err.splitlines()) == 1, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # torch on /dev/full
])
def test_training_on_a_full_disk_is_one_line(failure, tiny_dataset, tmp_path, monkeypatch, capsys):
    def disk_full(obj, target):
        Path(target).write_bytes(b"PK")
        raise failure

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    run = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--out", str(run), "--epochs", "1", "--max-steps", "1", *TRAIN]) == 1
    line = _one_error_line(capsys)
    assert str(run / "last.pt") in line and "the disk is full" in line
    # no half-written file left (a run folder left empty is removed with the run's lock)
    assert not run.exists() or not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_resuming_an_export_with_another_model_redoes_every_image(model_file, tmp_path, monkeypatch):
    from napari_cellseg.model.checkpoint import load_model

    images = tmp_path / "imgs"
    images.mkdir()
    items = pipeline.export_items(images, _test_folder(images, 3, size=64))
    out = tmp_path / "r.json"
    model_a, config = load_model(model_file)
    stop_after_one = iter([False, True])
    events = pipeline.iter_export(model_a, items, out, should_stop=lambda: next(stop_after_one))
    assert [n for n, _, _ in events] == [1]  # stopped: one image in the partial file
    torch.manual_seed(1)
    model_b = build_model(config).eval()  # same settings, other weights (a checkpoint path says nothing)
    segmented = []
    real = pipeline.segment_image
    monkeypatch.setattr(pipeline, "segment_image", lambda m, image, **kw: segmented.append(m) or real(m, image, **kw))
    list(pipeline.iter_export(model_b, items, out))
    assert len(segmented) == 3 and all(m is model_b for m in segmented)  # nothing of model A mixed in
    segmented.clear()
    stop_after_one = iter([False, True])
    list(pipeline.iter_export(model_b, items, out, should_stop=lambda: next(stop_after_one)))
    list(pipeline.iter_export(model_b, items, out))
    assert len(segmented) == 3  # the same model does resume: 1 + the 2 left


def test_export_never_writes_through_a_planted_partial_link(model_file, tiny_dataset, tmp_path, capsys):
    victim = tmp_path / "victim.tif"
    victim.write_bytes(b"an image someone needs")
    out = tmp_path / "r.json"
    (tmp_path / "r.json.partial.jsonl").symlink_to(victim)
    assert main(["export", str(model_file), str(tiny_dataset), "--out", str(out), "--device", "cpu"]) == 1
    assert "symbolic link" in _one_error_line(capsys)
    assert victim.read_bytes() == b"an image someone needs" and not out.exists()


def test_a_second_export_to_the_same_file_is_refused_at_once(model_file, tiny_dataset, tmp_path, capsys,
                                                              monkeypatch):
    out = tmp_path / "r.json"
    (tmp_path / "r.json.lock").write_text(str(os.getppid()))  # a live process holds it
    segmented = []
    monkeypatch.setattr(pipeline, "segment_image", lambda *a, **kw: segmented.append(1))
    assert main(["export", str(model_file), str(tiny_dataset), "--out", str(out), "--device", "cpu"]) == 1
    line = _one_error_line(capsys)
    assert "another napari-cellseg process" in line and str(out) in line
    assert not segmented and not out.exists()  # refused before any work

