"""Where AMP pays: the training step alone, with the batches already on the device.

``bench_train.py`` times whole engine steps, data loading included; on a fast GPU the loader and
torchvision's per-image Python dominate short runs and hide what autocast does. This script takes
the loader out: it prepares ``--batches`` real training batches (DSB2018 crops, the engine's
augmentation) once, moves them to the device, and times ``engine._train_step`` (forward, loss,
GradScaler, clipping, AdamW) on them for several precision variants, one step of each in turn
(rotating which goes first), each variant with its own model built from the same seed:

- ``fp32``: no autocast (PyTorch defaults: cuDNN convolutions may use TF32 on Ampere and newer).
- ``fp32-strict``: TF32 off for convolutions and matmuls (what fp32 costs without tensor cores).
- ``fp16-backbone``: what the engine does (backbone + FPN under fp16 autocast, heads fp32, GradScaler).
- ``fp16-whole``: autocast over the whole forward, as torchvision's detection reference does.
- ``bf16-backbone`` / ``bf16-whole``: the same with bf16 (no GradScaler).

Prints median step time, images/s, the ratio to ``fp32`` and whether every loss stayed finite.

    python benchmarks/bench_amp.py --device cuda --arch resnet50_v2 --batch-size 4 --crop-size 512
    python benchmarks/bench_amp.py --quick      # smoke test on any device

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg import distributed as dist  # noqa: E402
from napari_cellseg._torch import torch  # noqa: E402
from napari_cellseg.training.dataset import CellDataset, collate, dataset_classes, split_samples  # noqa: E402
from napari_cellseg.training.engine import _train_step  # noqa: E402
from napari_cellseg.devices import resolve_device  # noqa: E402
from napari_cellseg.model.network import ModelConfig, build_model  # noqa: E402
from napari_cellseg.training.transforms import train_augment  # noqa: E402

SEED = 0
VARIANTS = ("fp32", "fp32-strict", "fp16-backbone", "fp16-whole", "bf16-backbone", "bf16-whole")


class WholeAutocast(torch.nn.Module):
    """Autocast over the whole forward (torchvision reference style); losses come back in fp32."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, images, targets):
        with torch.autocast(images[0].device.type, dtype=self.dtype):
            losses = self.model(images, targets)
        return {k: v.float() for k, v in losses.items()}


class Variant:
    """One precision setting: its own model, optimiser and GradScaler, and its step times."""

    def __init__(self, name: str, args, device: torch.device, class_names: list[str]) -> None:
        torch.manual_seed(SEED)
        model = build_model(ModelConfig(arch=args.arch, class_names=class_names)).to(device).train()
        self.name = name
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name.split("-")[0])
        self.strict = name == "fp32-strict"
        if name.endswith("-backbone"):
            model.amp_dtype = dtype
            self.model = model
        elif name.endswith("-whole"):
            self.model = WholeAutocast(model, dtype)
        else:
            self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=args.lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.times: list[float] = []
        self.finite = True

    @contextlib.contextmanager
    def precision_flags(self):
        """TF32 off for the strict variant only; the previous flags come back afterwards."""
        old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        if self.strict:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old

    def step(self, images, targets, device: torch.device, timed: bool) -> None:
        with self.precision_flags():
            _sync(device)
            t0 = time.perf_counter()
            losses = _train_step(self.model, images, targets, self.optimizer, self.scaler, self.params, 10.0,
                                 dist.Context())
            _sync(device)
        if timed:
            self.times.append(time.perf_counter() - t0)
        self.finite &= math.isfinite(losses["loss"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_batches(args, device: torch.device) -> tuple[list, list[str]]:
    """``--batches`` training batches with the engine's crops, moved to ``device`` once."""
    train_samples, _ = split_samples(Path(args.data), 0.1, SEED)
    dataset = CellDataset(train_samples, augment=train_augment(args.crop_size), seed=SEED)
    gen = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(dataset), generator=gen).tolist()
    batches = []
    for b in range(args.batches):
        idx = [order[(b * args.batch_size + i) % len(order)] for i in range(args.batch_size)]
        images, targets = collate([dataset[i] for i in idx])
        batches.append((
            [im.to(device) for im in images],
            [{k: v.to(device) for k, v in t.items()} for t in targets],
        ))
    return batches, [f"class{k}" for k in range(1, max(dataset_classes(train_samples)) + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default="resnet50_v2")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop-size", type=int, default=512)
    ap.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps per variant")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick algorithms per shape")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="smoke test: resnet18, tiny crops, 2 steps, 2 variants")
    args = ap.parse_args()
    if args.quick:
        args.arch, args.batch_size, args.crop_size, args.batches, args.warmup, args.steps = "resnet18", 2, 128, 2, 1, 2
        args.variants = ["fp32", "bf16-backbone"]

    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    info = C.header("bench_amp")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print("# settings: " + str(settings))
    batches, class_names = prepare_batches(args, device)
    variants = [Variant(name, args, device, class_names) for name in args.variants]
    for k, batch in zip(range(args.warmup + args.steps), itertools.cycle(batches)):
        shift = k % len(variants)
        for v in variants[shift:] + variants[:shift]:
            v.step(*batch, device, timed=k >= args.warmup)

    base = float(np.median(variants[0].times))
    summary = {"machine": info, "settings": settings, "variants": {}}
    for v in variants:
        med = float(np.median(v.times))
        row = {
            "median_step_s": round(med, 4), "images_per_s": round(args.batch_size / med, 2),
            "vs_" + variants[0].name: round(base / med, 3), "all_losses_finite": v.finite,
            "step_s": [round(t, 4) for t in v.times],
        }
        summary["variants"][v.name] = row
        print(f"{v.name:14s} median step {med * 1000:8.1f} ms  {row['images_per_s']:7.2f} images/s  "
              f"{row['vs_' + variants[0].name]:.3f}x vs {variants[0].name}  losses finite: {v.finite}")
    if device.type == "cuda":
        summary["machine"]["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    C.footer(info)
    C.dump_summary("amp", summary)


if __name__ == "__main__":
    main()
