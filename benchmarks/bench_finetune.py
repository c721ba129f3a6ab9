"""Fine-tuning on a few images of a new domain: the human-in-the-loop gain, simulated on DSB2018.

The stained (class2) images stand in for a lab's new microscope. For each N, the first N stained
train images (seeded order; ground truth standing in for the user's corrections, classes merged)
fine-tune a start model for the same budget; AP50 is scored, class-agnostic, on the stained val
images, which are never trained on. N = 0 is the start model as it is.

Run (the issue's tables):
  python benchmarks/bench_finetune.py --n 20 --init nuclei none --steps 60        # --init vs random
  python benchmarks/bench_finetune.py --n 0 5 10 20 --init nuclei --minutes 10    # the loop, AP50 vs N
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import DEFAULT_DATA
from bench_nuclei import figures, score

from napari_cellseg._torch import torch
from napari_cellseg.checkpoint import load_model
from napari_cellseg.data import find_samples, read_sample
from napari_cellseg.engine import DoneEvent, TrainConfig, train
from napari_cellseg.pipeline import samples_ground_truth
from napari_cellseg.sample_writer import merge_classes, save_sample

STAINED = 2


def stained(folder: Path) -> list:
    return [s for s in find_samples(folder) if STAINED in s.mask_paths]


def corrected_set(samples: list, n: int, dest: Path, seed: int = 0) -> Path:
    """The first ``n`` samples in a seeded order, classes merged, as a dataset with no validation."""
    order = np.random.default_rng(seed).permutation(len(samples))[:n]
    for i in order:
        image, labels = read_sample(samples[i])
        save_sample(image, merge_classes(labels), dest / "train", samples[i].name, replace=True)
    return dest


def fine_tune(data: Path, init: str, out: Path, args) -> tuple[Path, int, float]:
    cfg = TrainConfig(
        dataset=str(data), out_dir=str(out), init=None if init == "none" else init, arch="resnet18",
        epochs=10**4, max_steps=args.steps, time_limit=args.minutes, batch_size=2, lr=args.lr,
        warmup_steps=10, crop_size=256, augment="strong", val_fraction=0.0, detections_per_img=500,
        roi_samples=128, device="cpu", amp=False, seed=args.seed,
    )
    tick, done, steps = time.perf_counter(), None, 0
    for event in train(cfg):
        steps = getattr(event, "step", steps)
        done = event if isinstance(event, DoneEvent) else done
    return done.last, steps, time.perf_counter() - tick


def plot(rows: list[dict], out: str) -> None:
    """AP50 on the held-out stained images against the number of corrected images, one line per
    start model and budget."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    shipped = [r["AP50"] for r in rows if r["n"] == 0]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["n"] > 0:
            budget = f"{r['steps']} steps" if r["steps"] < 1000 else "time"
            start = "random weights" if r["init"] == "none" else r["init"]
            groups.setdefault(f"from {start}, {budget}", []).append(r)
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r["n"])
        ax.plot([r["n"] for r in group], [r["AP50"] for r in group], "o-", label=label)
    if shipped:
        ax.axhline(shipped[0], color="grey", linestyle="--", label="nuclei as shipped")
    ax.set_xlabel("corrected stained images (N)")
    ax.set_ylabel("AP50, 18 stained val images")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n", type=int, nargs="+", default=[0, 5, 10, 20])
    p.add_argument("--init", nargs="+", default=["nuclei"], help="start models: built-in name, checkpoint or none")
    p.add_argument("--steps", type=int, help="training steps per run")
    p.add_argument("--minutes", type=float, help="or: minutes of training per run (the CPU budget)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, help="score on the first N stained val images only (a quick check)")
    p.add_argument("--json", help="write the table here")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="only plot AP50 vs N from earlier --json files (to --out)")
    p.add_argument("--out", default="finetune_ap50.png")
    args = p.parse_args()
    if args.plot:
        plot([row for path in args.plot for row in json.loads(Path(path).read_text())], args.out)
        return
    if (args.steps is None) == (args.minutes is None):
        p.error("give --steps or --minutes")
    torch.set_num_threads(args.threads)

    train_pool, held_out = stained(Path(args.data) / "train"), stained(Path(args.data) / "val")[: args.limit]
    gt = samples_ground_truth(held_out, ["class1", "class2"])
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for init in args.init:
            for n in args.n:
                if n == 0:
                    if init == "none":
                        continue
                    checkpoint, steps, seconds = init, 0, 0.0
                else:
                    data = corrected_set(train_pool, n, Path(work) / f"n{n}")
                    checkpoint, steps, seconds = fine_tune(data, init, Path(work) / f"run-{init}-{n}", args)
                model, _ = load_model(checkpoint)
                results, _ = score(model, held_out, mask_thresh=0.5)
                row = {"init": init, "n": n, "steps": steps, "train_minutes": seconds / 60, **figures(gt, results)}
                rows.append(row)
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
    sys.stdout.write(f"\nstained val images: {len(held_out)}; stained train pool: {len(train_pool)}\n")
    sys.stdout.write("| start | N corrected | steps | train min | AP50 | AP | TP/(TP+FP+FN) |\n"
                     "|---|---|---|---|---|---|---|\n")
    for r in rows:
        sys.stdout.write(f"| {r['init']} | {r['n']} | {r['steps']} | {r['train_minutes']:.1f} | {r['AP50']:.3f} | "
                         f"{r['AP']:.3f} | {r['accuracy@0.5']:.3f} |\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
