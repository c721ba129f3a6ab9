import math
from types import SimpleNamespace

import pytest

from napari_cellseg.training import engine
from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_checkpoint, save_checkpoint as engine_save
from napari_cellseg.training.engine import DoneEvent, EpochEvent, StepEvent, TrainConfig, train
from napari_cellseg.errors import TrainingError


def config(root, out, **kw) -> TrainConfig:
    base = dict(dataset=str(root), out_dir=str(out), arch="resnet18", epochs=1, batch_size=2, lr=1e-3,
                warmup_steps=1, crop_size=64, val_limit=1, device="cpu",
                roi_samples=64)  # a tiny crop holds few cells: 512 regions made ROIAlign's backward most of a step
    base.update(kw)
    return TrainConfig(**base)


def run(cfg, should_stop=None):
    return list(train(cfg, should_stop))


def test_one_epoch_yields_steps_validation_and_checkpoints(tiny_dataset, tmp_path):
    events = run(config(tiny_dataset, tmp_path / "run"))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [s.step for s in steps] == [1, 2]  # 4 training samples, batch 2
    assert all(math.isfinite(s.losses["loss"]) and "loss_mask" in s.losses for s in steps)
    (epoch,) = [e for e in events if isinstance(e, EpochEvent)]
    assert {"AP", "AP50", "AP75"} <= set(epoch.metrics)
    done = events[-1]
    assert isinstance(done, DoneEvent) and not done.cancelled
    assert done.last.exists() and done.best.exists()
    ckpt = load_checkpoint(done.last)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 2
    assert ckpt["config"]["class_names"] == ["class1", "class2"]
    assert {"optimizer", "scheduler", "scaler", "train_args"} <= set(ckpt)


def test_mosaic_crops_train_and_are_recorded(tiny_dataset, tmp_path, monkeypatch):
    """--mosaic reaches the training set (crop-sized mosaics) and the checkpoint's train_args."""
    made = []
    real = engine.CellDataset
    monkeypatch.setattr(engine, "CellDataset", lambda *a, **k: made.append(k) or real(*a, **k))
    events = run(config(tiny_dataset, tmp_path / "run", mosaic=1.0, val_every=10))
    assert made[0]["mosaic"] == 1.0 and made[0]["mosaic_size"] == 64
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert len(steps) == 2 and all(math.isfinite(s.losses["loss"]) for s in steps)
    assert load_checkpoint(events[-1].last)["train_args"]["mosaic"] == 1.0


def test_without_validation_the_run_hands_on_its_last_step(tiny_dataset, tmp_path, monkeypatch):
    """Few corrected images, no validation: no best.pt, the handed-on model holds the last step,
    and last.pt is written at a sensible pace (here: once, at the end), not after every epoch."""
    import shutil

    shutil.rmtree(tiny_dataset / "val")
    writes = []
    monkeypatch.setattr(engine, "save_checkpoint", lambda path, *a, **k: writes.append(path) or
                        engine_save(path, *a, **k))
    events = run(config(tiny_dataset, tmp_path / "run", epochs=100, max_steps=5, batch_size=1, val_fraction=0.0,
                        val_limit=None))
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert len(epochs) == 2 and all(e.val_images == 0 and not e.metrics and not e.best for e in epochs)
    assert [e.checkpoint for e in epochs] == [None, tmp_path / "run" / "last.pt"] and len(writes) == 1
    done = events[-1]
    assert done.best is None and not (tmp_path / "run" / "best.pt").exists()
    assert done.model == done.last == tmp_path / "run" / "last.pt"
    ckpt = load_checkpoint(done.model)
    assert ckpt["step"] == 5 and {"optimizer", "scheduler"} <= set(ckpt)  # the last step, resumable


def test_cancel_writes_last_even_between_paced_saves(tiny_dataset, tmp_path):
    import shutil

    shutil.rmtree(tiny_dataset / "val")
    steps = []
    events = run(config(tiny_dataset, tmp_path / "run", epochs=100, batch_size=1, val_fraction=0.0, val_limit=None),
                 should_stop=lambda: len(steps) >= 6 or steps.append(1))
    done = events[-1]
    assert done.cancelled and done.model == done.last and load_checkpoint(done.last)["step"] == 6


def test_resume_continues_the_schedule(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    run(config(tiny_dataset, out, epochs=2, max_steps=2))
    events = run(config(tiny_dataset, out, epochs=2, resume=str(out / "last.pt")))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [(s.epoch, s.step) for s in steps] == [(2, 3), (2, 4)]
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def test_same_seed_same_weights(tiny_dataset, tmp_path):
    weights = []
    for name in ("a", "b"):
        run(config(tiny_dataset, tmp_path / name, max_steps=1))
        weights.append(load_checkpoint(tmp_path / name / "last.pt")["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cancel_stops_within_a_step_and_keeps_the_work(tiny_dataset, tmp_path):
    seen = []
    events = run(config(tiny_dataset, tmp_path / "run", epochs=3), should_stop=lambda: len(seen) > 0 or seen.append(1))
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1]
    assert events[-1].cancelled
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 1 and ckpt["epoch"] == 0  # resume redoes the unfinished epoch


def test_closing_the_generator_saves_last(tiny_dataset, tmp_path):
    gen = train(config(tiny_dataset, tmp_path / "run", epochs=3))
    for event in gen:
        if isinstance(event, StepEvent):
            break
    gen.close()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(config(tiny_dataset, out, epochs=1))
    good = (out / "last.pt").read_bytes()
    real_step = engine._train_step
    calls = []

    def exploding(*args):
        losses = real_step(*args)
        calls.append(1)
        return {**losses, "loss": float("nan")} if len(calls) == 2 else losses

    monkeypatch.setattr(engine, "_train_step", exploding)
    with pytest.raises(TrainingError, match="loss became nan"):
        run(config(tiny_dataset, out, epochs=2, resume=str(out / "last.pt")))
    assert (out / "last.pt").read_bytes() == good


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(lr=-1.0), dict(max_steps=0),
                                 dict(zoom=(2.0, 1.0)), dict(zoom=(0.0, 1.0)), dict(zoom=(1.0, 9.0)),
                                 dict(mosaic=1.5), dict(mosaic=-0.1)])
def test_bad_settings_are_refused_before_work(tiny_dataset, tmp_path, bad):
    with pytest.raises(ValueError):
        run(config(tiny_dataset, tmp_path / "run", **bad))
    assert not (tmp_path / "run").exists()


def test_output_path_that_is_a_file_is_refused(tiny_dataset, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run(config(tiny_dataset, tmp_path / "file"))


def test_too_few_images_for_the_batch(tiny_dataset, tmp_path):
    with pytest.raises(TrainingError, match="too few"):
        run(config(tiny_dataset, tmp_path / "run", batch_size=8))


def test_time_limit_ends_training_and_fits_the_schedule(tiny_dataset, tmp_path, monkeypatch):
    clock = iter(range(0, 10**6, 30))  # every perf_counter() call advances 30 s
    monkeypatch.setattr(engine, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    events = run(config(tiny_dataset, tmp_path / "run", epochs=50, time_limit=2.0))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert 1 < len(steps) < 10 and steps[-1].step == steps[-1].total_steps
    assert steps[-1].lr == pytest.approx(1e-3 * 0.01)  # the cosine reached its end with the time
    assert isinstance(events[-1], DoneEvent) and not events[-1].cancelled


def test_lr_warms_up_then_decays():
    f = engine.LRSchedule(10, 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(50) < f(10) and f(100) == pytest.approx(0.01)


def test_warmup_shrinks_to_a_tenth_of_a_short_run():
    assert engine.scaled_warmup(100, 10_000) == 100  # a long run keeps the warm-up it asked for
    assert engine.scaled_warmup(100, 200) == 20
    assert engine.scaled_warmup(100, 5) == 0 and engine.scaled_warmup(0, 10_000) == 0


def test_a_short_run_leaves_the_warmup(tiny_dataset, tmp_path):
    # the default 100-step warm-up on a 2-step run used to keep the rate at 1-2% of the base
    events = run(config(tiny_dataset, tmp_path / "run", warmup_steps=100))
    first = next(e for e in events if isinstance(e, StepEvent))
    assert first.lr == pytest.approx(1e-3 * engine.LRSchedule(0, 2)(1))
    assert first.lr > 0.5e-3


def test_a_training_step_reports_progress_like_every_long_job():
    from napari_cellseg.progress import Progress

    event = engine.StepEvent(epoch=2, step=7, total_steps=40, losses={"loss": 1.0}, lr=1e-4, images_per_s=3.0)
    assert event.progress == Progress(7, 40, "epoch 2")


def test_a_second_run_into_the_same_folder_is_refused(tiny_dataset, tmp_path):
    """(3) Two runs into one new --out both exited 0 and last.pt held only the second's weights."""
    from napari_cellseg.errors import CellsegError

    out = tmp_path / "run"
    first = train(config(tiny_dataset, out, max_steps=2))
    assert isinstance(next(e for e in first if isinstance(e, StepEvent)), StepEvent)  # first run under way
    with pytest.raises(CellsegError, match="being written by another napari-cellseg process"):
        run(config(tiny_dataset, out))
    done = list(first)[-1]
    assert isinstance(done, DoneEvent) and done.last.exists() and not (out / ".run.lock").exists()
    with pytest.raises(ValueError, match="already holds the checkpoints"):  # and after it ended
        run(config(tiny_dataset, out))


def test_a_killed_runs_lock_is_taken_over(tiny_dataset, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".run.lock").write_text(dead.stdout.strip())
    done = run(config(tiny_dataset, out, max_steps=1))[-1]
    assert isinstance(done, DoneEvent) and done.last.exists() and not (out / ".run.lock").exists()
