"""Training throughput: ``engine.train`` vs a bare torchvision loop, and AMP vs fp32, in one run.

Comparisons (each side builds a fresh model from the same seed and sees the same images with the
same crops in the same order; the two sides run in lockstep, one step each in turn, alternating
which goes first, so machine load hits both alike and step k of both trains on the same batch):

1. ``engine``: ``engine.train`` (fp32, ``amp=False``) - decoded-image cache, clipping, LR schedule,
   loss bookkeeping - vs ``bare``: a torchvision-reference-style loop: a plain ``DataLoader`` over a
   ``Dataset`` that decodes the TIFFs on every access (no cache) and applies the same crop
   (``train_augment``), ``loss = sum(model(images, targets).values())``, AdamW, backward, step,
   the same linear LR warm-up, model in fp32. Target: engine / bare >= 1.0.
2. ``amp``: ``engine.train`` with ``amp=True`` (CUDA: fp16 + GradScaler; CPU: bf16) vs
   ``engine.train`` fp32. Target on GPU: >= 1.3x. On a CPU without native bf16 (AVX2 only) bf16 is
   ~30x slower, so by default this comparison is tiny there (2 steps at crop 128).

Images/s counts only optimisation steps after ``--warmup`` steps (each step's time includes its
data loading: for the engine, the time to its next ``StepEvent``; validation and checkpoints are
outside). CUDA is synchronised before every time stamp. ``--rounds`` repeats the comparison with
fresh models; the ratio is of the medians over rounds, and the median of the paired per-step
ratios is printed too.

    python benchmarks/bench_train.py --quick
    python benchmarks/bench_train.py --device cpu --arch resnet18 --steps 12 --rounds 3
    python benchmarks/bench_train.py --device cuda --arch resnet50_v2 --steps 30 --batch-size 4 --crop-size 512
    # the second epoch (decoded-image cache warm): a 40-image train/ subset (+ a val/ folder), warm-up = epoch 1
    python benchmarks/bench_train.py --data SUBSET40 --steps 19 --warmup 21 --skip-amp

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg._torch import torch  # noqa: E402
from napari_cellseg.training.amp import cpu_has_native_bf16  # noqa: E402
from napari_cellseg.training.dataset import collate, dataset_classes, instance_targets, split_samples
from napari_cellseg.io.samples import read_sample
from napari_cellseg.training.engine import LRSchedule, StepEvent, TrainConfig, train  # noqa: E402
from napari_cellseg.io.images import to_tensor  # noqa: E402
from napari_cellseg.devices import resolve_device  # noqa: E402
from napari_cellseg.model.network import ModelConfig, build_model  # noqa: E402
from napari_cellseg.training.transforms import train_augment  # noqa: E402

SEED = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(durations: list[float], batch: int) -> dict:
    d = np.asarray(durations, float)
    return {
        "images_per_s": batch * len(d) / float(d.sum()),
        "images_per_s_median_step": batch / float(np.median(d)),
        "step_s": [round(float(x), 4) for x in d],
    }


# ---------------------------------------------------------------------------------------- engine


def engine_steps(args, device: torch.device, out_dir: Path, total: int, crop: int, amp: bool):
    """``engine.train`` as a stepper: each ``next`` runs one optimisation step (data loading included)."""
    cfg = TrainConfig(
        dataset=str(args.data), out_dir=str(out_dir), arch=args.arch, weights="none", epochs=10**6,
        batch_size=args.batch_size, lr=args.lr, amp=amp, device=str(device), workers=args.workers, seed=SEED,
        crop_size=crop, max_steps=total, val_every=10**6, val_limit=1,
    )
    gen = train(cfg)
    try:
        for event in gen:
            if isinstance(event, StepEvent):
                _sync(device)
                yield
                if event.step >= total:
                    return  # before the end-of-run validation; closing saves last.pt (not timed)
    finally:
        gen.close()


# ---------------------------------------------------------------------------------------- bare loop


class DecodeEveryTime(torch.utils.data.Dataset):
    """torchvision-reference style: read the TIFFs on every access, same crop as the engine's."""

    def __init__(self, samples, crop: int) -> None:
        self.samples = list(samples)
        self.augment = train_augment(crop)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        image, labels = read_sample(self.samples[i])
        image, labels = self.augment(image, labels, np.random.default_rng((SEED, self.epoch, i)))  # the engine's crop
        masks, classes, boxes, _ = instance_targets(labels, image.shape)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(classes),
                  "masks": torch.from_numpy(masks)}
        return to_tensor(image), target


def bare_steps(args, device: torch.device, total: int, crop: int):
    """The bare loop as a stepper: each ``next`` loads one batch and runs one step."""
    train_samples, _ = split_samples(args.data, 0.1, SEED)
    names = [f"class{k}" for k in range(1, max(dataset_classes(train_samples)) + 1)]
    torch.manual_seed(SEED)
    model = build_model(ModelConfig(arch=args.arch, class_names=names)).to(device)
    model.train()
    dataset = DecodeEveryTime(train_samples, crop)
    # the engine's sample order: a seeded shuffle (DistributedSampler of one replica, epoch 0)
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=1, rank=0, shuffle=True, seed=SEED, drop_last=True
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers, collate_fn=collate,
        drop_last=True,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(100, total))  # the engine's warm-up
    done = 0
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        for images, targets in loader:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            _sync(device)
            done += 1
            yield
            if done >= total:
                return


# ---------------------------------------------------------------------------------------- comparison


def compare(name: str, make: dict, rounds: int, warmup: int, steps: int, batch: int, baseline: str) -> dict:
    """Run the configurations in lockstep: step k of each, alternating which goes first, so both
    see the same machine load; both process the same batch at step k, so step times pair up.
    ``rounds`` repeats the whole comparison with fresh models."""
    keys = list(make)
    per_round: dict[str, list[dict]] = {k: [] for k in keys}
    paired: list[float] = []
    other = [k for k in keys if k != baseline][0]
    for r in range(rounds):
        steppers = {k: make[k]() for k in keys}
        times: dict[str, list[float]] = {k: [] for k in keys}
        for s in range(warmup + steps):
            for k in keys if (s + r) % 2 == 0 else keys[::-1]:
                t0 = time.perf_counter()
                next(steppers[k])
                times[k].append(time.perf_counter() - t0)
        for stepper in steppers.values():
            stepper.close()
        for k in keys:
            per_round[k].append(_summary(times[k][warmup:], batch))
            print(f"  {name} round {r + 1} {k}: {per_round[k][-1]['images_per_s']:.3f} images/s "
                  f"(steps {per_round[k][-1]['step_s']})", flush=True)
        paired += [b / o for b, o in zip(times[baseline][warmup:], times[other][warmup:])]
    out: dict = {}
    for k in keys:
        out[k] = {
            "images_per_s": C.median([x["images_per_s"] for x in per_round[k]]),
            "images_per_s_median_step": C.median([x["images_per_s_median_step"] for x in per_round[k]]),
            "rounds": [round(x["images_per_s"], 4) for x in per_round[k]],
            "step_s": [x["step_s"] for x in per_round[k]],
        }
    key = f"{other}_vs_{baseline}"
    out[key] = out[other]["images_per_s"] / out[baseline]["images_per_s"]
    out[key + "_per_round"] = [
        round(a["images_per_s"] / b["images_per_s"], 4) for a, b in zip(per_round[other], per_round[baseline])
    ]
    out[key + "_paired_step_median"] = C.median(paired)
    print(
        f"{name}: {other} {out[other]['images_per_s']:.3f} images/s vs {baseline} "
        f"{out[baseline]['images_per_s']:.3f} images/s -> {out[key]:.3f}x "
        f"(per round {out[key + '_per_round']}; median of paired step ratios {out[key + '_paired_step_median']:.3f}x)"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="HW3 dataset root (train/, val/)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per run (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run (>= 1)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2, help="rounds per comparison (fresh models each)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (both sides)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--amp-steps", type=int, help="timed steps of the AMP comparison (default: --steps; "
                    "2 on a CPU without native bf16)")
    ap.add_argument("--amp-warmup", type=int, help="default: --warmup; 1 on a CPU without native bf16")
    ap.add_argument("--amp-crop-size", type=int, help="default: --crop-size; 128 on a CPU without native bf16")
    ap.add_argument("--amp-rounds", type=int, help="default: --rounds; 1 on a CPU without native bf16")
    ap.add_argument("--skip-bare", action="store_true", help="only the AMP comparison")
    ap.add_argument("--skip-amp", action="store_true", help="only engine vs bare")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 steps at crop 128, one round")
    args = ap.parse_args()
    if args.warmup < 1:
        ap.error("--warmup must be at least 1 (the first step's time includes the start-up)")
    if args.quick:
        args.steps, args.warmup, args.crop_size, args.rounds = 2, 1, 128, 1
    device = resolve_device(args.device)
    slow_bf16 = device.type == "cpu" and not cpu_has_native_bf16()
    amp_steps = args.amp_steps or (min(2, args.steps) if slow_bf16 else args.steps)
    amp_warmup = args.amp_warmup or (1 if slow_bf16 else args.warmup)
    amp_crop = args.amp_crop_size or (min(128, args.crop_size) if slow_bf16 else args.crop_size)
    amp_rounds = args.amp_rounds or (1 if slow_bf16 else args.rounds)
    if args.quick:
        amp_steps, amp_warmup, amp_rounds = 1, 1, 1

    info = C.header("bench_train")
    settings = {
        "device": str(device), "arch": args.arch, "steps": args.steps, "warmup": args.warmup,
        "batch_size": args.batch_size, "crop_size": args.crop_size, "rounds": args.rounds, "workers": args.workers,
        "amp": {"dtype": "fp16" if device.type == "cuda" else "bf16", "steps": amp_steps, "warmup": amp_warmup,
                "crop_size": amp_crop, "rounds": amp_rounds, "cpu_native_bf16": cpu_has_native_bf16()},
    }
    print("# settings: " + str(settings), flush=True)
    summary: dict = {"machine": info, "settings": settings}
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def engine(total, crop, amp):
            return lambda: engine_steps(args, device, Path(tmp, f"run{next(counter)}"), total, crop, amp)

        if not args.skip_bare:
            total = args.warmup + args.steps
            summary["engine_vs_bare"] = compare(
                "fp32 engine vs bare loop",
                {"bare": lambda: bare_steps(args, device, total, args.crop_size),
                 "engine": engine(total, args.crop_size, False)},
                args.rounds, args.warmup, args.steps, args.batch_size, "bare",
            )
        if not args.skip_amp:
            if slow_bf16:
                print("# note: this CPU has no native bf16 (AVX2 only): the AMP comparison is kept tiny", flush=True)
            total = amp_warmup + amp_steps
            summary["amp_vs_fp32"] = compare(
                f"AMP ({settings['amp']['dtype']}) vs fp32, crop {amp_crop}",
                {"fp32": engine(total, amp_crop, False), "amp": engine(total, amp_crop, True)},
                amp_rounds, amp_warmup, amp_steps, args.batch_size, "fp32",
            )
    C.footer(info)
    C.dump_summary("train", summary)


if __name__ == "__main__":
    main()
