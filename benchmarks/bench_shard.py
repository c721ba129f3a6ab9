"""Export of a folder: ``torchrun --nproc_per_node 2`` vs one process, wall time of the whole command.

Three commands on the same folder (random RGB images, a random-weights resnet18 model with
``--detections`` junk detections per image), alternated over ``--repeats`` rounds:

- ``one-1t``: ``python -m napari_cellseg export`` with one torch thread (the baseline);
- ``one-2t``: the same with two threads (one process using both cores the other way);
- ``two-1t``: ``torchrun --standalone --nproc_per_node 2 -m napari_cellseg export``, one thread each.

Wall time includes starting Python, importing torch and loading the model (about the same for
each command, paid in parallel by the two processes). Every run uses ``--restart``, and the
sharded submission is checked byte for byte against the single-process one. The CPU is shared
with other jobs: the load average at start and end is printed.

    python benchmarks/bench_shard.py             # 24 images of 256 x 256
    python benchmarks/bench_shard.py --quick     # 6 images of 96 x 96, one round
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def make_inputs(root: Path, images: int, size: int, detections: int) -> tuple[Path, Path]:
    import tifffile

    from napari_cellseg._torch import torch
    from napari_cellseg.model.checkpoint import save_checkpoint
    from napari_cellseg.model.network import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", class_names=["class1", "class2"], box_score_thresh=0.0,
                         detections_per_img=detections)
    ckpt = save_checkpoint(root / "random.pt", build_model(config), config)
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        tifffile.imwrite(folder / f"img_{i:03d}.tif", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return ckpt, folder


def command(kind: str, ckpt: Path, folder: Path, out: Path) -> tuple[list[str], dict[str, str]]:
    export = ["export", str(ckpt), str(folder), "--out", str(out), "--restart", "--device", "cpu",
              "--score-thresh", "0"]
    env = {**os.environ, "PYTHONPATH": str(C.REPO), "OMP_NUM_THREADS": "2" if kind == "one-2t" else "1"}
    if kind.startswith("two"):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "napari_cellseg", *export], env
    return [sys.executable, "-m", "napari_cellseg", *export], env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--detections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.repeats = 6, 96, 1
    info = C.header(f"export of {args.images} images of {args.size} x {args.size}: 2 processes vs 1")
    kinds = ["one-1t", "two-1t", "one-2t"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt, folder = make_inputs(root, args.images, args.size, args.detections)
        for r in range(args.repeats):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                cmd, env = command(kind, ckpt, folder, root / f"{kind}.json")
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                times[kind].append(time.perf_counter() - t0)
                print(f"round {r + 1} {kind}: {times[kind][-1]:.1f} s", flush=True)
        same = (root / "two-1t.json").read_bytes() == (root / "one-1t.json").read_bytes()
    C.footer(info)
    med = {k: round(C.median(v), 1) for k, v in times.items()}
    summary = {"machine": info, "images": args.images, "size": args.size, "detections": args.detections,
               "median_s": med, "times_s": {k: [round(x, 1) for x in v] for k, v in times.items()},
               "speedup_two_vs_one_1t": round(med["one-1t"] / med["two-1t"], 2),
               "speedup_two_vs_one_2t": round(med["one-2t"] / med["two-1t"], 2),
               "sharded_submission_identical": same}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
