"""DDP on the CPU with gloo: two processes started by torchrun train in lockstep, and the
checkpoint that rank 0 writes resumes in a single process."""

import subprocess
import sys
import textwrap

import pytest

from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_checkpoint
from napari_cellseg.training.engine import StepEvent, TrainConfig, train

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import napari_cellseg.training.engine as engine

    real_step = engine._train_step
    def step(model, *args):
        losses = real_step(model, *args)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save({"weights": flat, "losses": losses}, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
        return losses
    engine._train_step = step
    cfg = engine.TrainConfig(dataset=sys.argv[1], out_dir=sys.argv[2], arch="resnet18", epochs=1, batch_size=1,
                             crop_size=64, lr=1e-3, warmup_steps=1, max_steps=2, device="cpu")
    events = list(engine.train(cfg))
    with open(os.path.join(sys.argv[2], f"events{os.environ['RANK']}.txt"), "w") as f:
        f.write(str(len(events)))  # a file per rank: the ranks' stdout lines interleave
    """
)


@pytest.fixture(scope="module")
def ddp_run(tiny_dataset_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tiny_dataset_module), str(out)],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tiny_dataset_module, out


def test_ranks_hold_identical_weights_after_a_step(ddp_run):
    _, out = ddp_run
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert torch.equal(r0["weights"], r1["weights"])
    assert r0["losses"] == r1["losses"]  # losses are averaged over ranks, so all stop together


def test_only_rank_zero_writes_and_reports(ddp_run):
    _, out = ddp_run
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt", "rank0.pt", "rank1.pt"]
    assert (out / "events1.txt").read_text() == "0" and int((out / "events0.txt").read_text()) > 0


def test_checkpoint_resumes_in_a_single_process(ddp_run):
    root, out = ddp_run
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 2
    flat = torch.cat([v.flatten() for k, v in ckpt["model"].items() if "running" not in k and "num_batches" not in k])
    assert torch.equal(flat, torch.load(out / "rank0.pt")["weights"])  # the checkpoint holds the ranks' weights
    cfg = TrainConfig(dataset=str(root), out_dir=str(out), arch="resnet18", epochs=2, batch_size=1, crop_size=64,
                      lr=1e-3, device="cpu", max_steps=3, val_limit=1, resume=str(out / "last.pt"))
    steps = [e.step for e in train(cfg) if isinstance(e, StepEvent)]
    assert steps == [3]
