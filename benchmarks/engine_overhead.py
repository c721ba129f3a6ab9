"""The engine's per-step extras measured alone: gradient clipping, and the TIFF decoding the cache saves.

    python benchmarks/engine_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg._torch import torch  # noqa: E402
from napari_cellseg.io.samples import read_sample
from napari_cellseg.training.dataset import split_samples


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    C.header("engine_overhead")
    model = C.random_model(arch)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    for foreach in (None, True):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 10.0, foreach=foreach)
            times.append(time.perf_counter() - t0)
        print(f"clip_grad_norm_ foreach={foreach}: median {statistics.median(times) * 1000:.1f} ms over "
              f"{len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.1f} M params")
    train, _ = split_samples(C.DEFAULT_DATA, 0.1, 0)
    times = []
    for sample in train[:60]:
        t0 = time.perf_counter()
        read_sample(sample)
        times.append(time.perf_counter() - t0)
    print(f"read_sample (TIFF decode, image + class masks) over 60 train samples: median "
          f"{statistics.median(times) * 1000:.1f} ms, mean {statistics.mean(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
