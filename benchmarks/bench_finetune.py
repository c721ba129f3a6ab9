"""Fine-tuning on a few images of a new domain: the human-in-the-loop gain, simulated on DSB2018.

The stained (class2) images stand in for a lab's new microscope. For each N, the first N stained
train images (seeded order; ground truth standing in for the user's corrections, classes merged)
fine-tune a start model for the same budget; AP50 is scored, class-agnostic, on the stained val
images, which are never trained on. N = 0 is the start model as it is.

``--task two-class`` asks what a start model is worth where the HW3 task needs it: N train images,
half fluorescence (class1) and half stained (class2), keep their classes; per-class AP50 (the mean
over the two classes, as HW3 scores it) on the first ``--limit`` val images of each class. N = 0 is
the start model with its heads made for two classes (``checkpoint.init_model``), untrained.

Run (the issue's tables):
  python benchmarks/bench_finetune.py --n 20 --init nuclei none --steps 60        # --init vs random
  python benchmarks/bench_finetune.py --n 20 --init nuclei --steps 40 --zoom 1 3  # at nuclei's own zoom
  python benchmarks/bench_finetune.py --n 0 5 10 20 --init nuclei --minutes 10    # the loop, AP50 vs N
  python benchmarks/bench_finetune.py --task two-class --n 0 5 10 20 --init nuclei none --steps 60 --limit 18
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
from napari_cellseg.model.checkpoint import init_model, load_model
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.training.engine import DoneEvent, TrainConfig, train
from napari_cellseg.evaluation.metrics import evaluate
from napari_cellseg.inference.pipeline import samples_ground_truth
from napari_cellseg.training.sample_writer import merge_classes, save_sample

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


def two_class_set(pools: list[list], n: int, dest: Path, seed: int = 0) -> Path:
    """``n`` samples, half from each class's pool (seeded order), their classes kept."""
    rng = np.random.default_rng(seed)
    for pool, count in zip(pools, (n - n // 2, n // 2)):
        for i in rng.permutation(len(pool))[:count]:
            image, labels = read_sample(pool[i])
            save_sample(image, labels, dest / "train", pool[i].name, replace=True)
    return dest


def two_class_figures(gt: dict, results: list[dict]) -> dict:
    """Per-class AP50 (mean over the classes) and each class's, plus the class-agnostic AP50."""
    m = evaluate(gt, results, max_dets=1000)
    agnostic = figures(gt, results, 0.5)
    per_class = {f"AP_{k}": v for k, v in m["AP_per_class"].items()}
    return {"AP50": m["AP50"], "AP": m["AP"], "AP50_agnostic": agnostic["AP50"], **per_class,
            **{f"AP50_{k}": _class_ap50(gt, results, i) for i, k in enumerate(("class1", "class2"), start=1)},
            "images": m["num_images"]}


def _class_ap50(gt: dict, results: list[dict], class_id: int) -> float:
    """AP50 of one class: the evaluation with the other class's ground truth and results left out."""
    sub = dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] == class_id],
               categories=[c for c in gt["categories"] if c["id"] == class_id])
    return evaluate(sub, [r for r in results if r["category_id"] == class_id], max_dets=1000)["AP50"]


def fine_tune(data: Path, init: str, out: Path, args) -> tuple[Path, int, float]:
    cfg = TrainConfig(
        dataset=str(data), out_dir=str(out), init=None if init == "none" else init, arch="resnet18",
        epochs=10**4, max_steps=args.steps, time_limit=args.minutes, batch_size=2, lr=args.lr,
        warmup_steps=10, crop_size=256, augment="strong", val_fraction=0.0, detections_per_img=500,
        roi_samples=128, device="cpu", amp=False, seed=args.seed, overwrite=True,
        zoom=None if args.zoom is None else tuple(args.zoom),
    )
    tick, done, steps = time.perf_counter(), None, 0
    for event in train(cfg):
        steps = getattr(event, "step", steps)
        done = event if isinstance(event, DoneEvent) else done
    return done.model, steps, time.perf_counter() - tick


def plot(rows: list[dict], out: str) -> None:
    """AP50 on the held-out stained images against the number of corrected images, one line per
    start model and budget."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    two = rows[0].get("task") == "two-class"
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
        ax.axhline(shipped[0], color="grey", linestyle="--",
                   label="nuclei, two-class heads, untrained" if two else "nuclei as shipped")
    ax.set_xlabel("training images, half of each class (N)" if two else "corrected stained images (N)")
    ax.set_ylabel(f"per-class AP50, {rows[0]['images']} val images" if two else "AP50, 18 stained val images")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--task", choices=["stained", "two-class"], default="stained")
    p.add_argument("--n", type=int, nargs="+", default=[0, 5, 10, 20])
    p.add_argument("--init", nargs="+", default=["nuclei"], help="start models: built-in name, checkpoint or none")
    p.add_argument("--steps", type=int, help="training steps per run")
    p.add_argument("--minutes", type=float, help="or: minutes of training per run (the CPU budget)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--zoom", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="training zoom (default: the strong preset's, 0.5-2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int,
                   help="score on the first N stained (two-class: N of each class) val images only")
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

    data_root = Path(args.data)
    two = args.task == "two-class"
    if two:
        pools = [[s for s in find_samples(data_root / "train") if k in s.mask_paths] for k in (1, 2)]
        val = find_samples(data_root / "val")
        held_out = [s for k in (1, 2) for s in [x for x in val if k in x.mask_paths][: args.limit]]
    else:
        train_pool, held_out = stained(data_root / "train"), stained(data_root / "val")[: args.limit]
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
                    data = (two_class_set(pools, n, Path(work) / f"n{n}") if two
                            else corrected_set(train_pool, n, Path(work) / f"n{n}"))
                    checkpoint, steps, seconds = fine_tune(data, init, Path(work) / f"run-{init}-{n}", args)
                if two and n == 0:
                    model = init_model(checkpoint, ["class1", "class2"])[0].eval()
                else:
                    model, _ = load_model(checkpoint)
                results, _ = score(model, held_out, mask_thresh=0.5)
                measured = two_class_figures(gt, results) if two else figures(gt, results, 0.5)
                row = {"task": args.task, "init": init, "n": n, "steps": steps, "train_minutes": seconds / 60,
                       "zoom": args.zoom, **measured}
                rows.append(row)
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
    if two:
        sys.stdout.write(f"\nval images: {len(held_out)} ({args.limit or 'all'} per class)\n"
                         "| start | N | steps | train min | per-class AP50 | class1 | class2 | class-agnostic |\n"
                         "|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            sys.stdout.write(f"| {r['init']} | {r['n']} | {r['steps']} | {r['train_minutes']:.1f} | {r['AP50']:.3f} | "
                             f"{r['AP50_class1']:.3f} | {r['AP50_class2']:.3f} | {r['AP50_agnostic']:.3f} |\n")
    else:
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
