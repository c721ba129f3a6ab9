"""The CPU fast path (``fastpath``) against a bare torchvision forward of the same weights.

Speed: the built-in ``nuclei`` model on the first ``--images`` DSB val images at native scale.
Per image, in rotating order so machine load hits all alike: the baseline ``model([tensor])``
(eval, ``no_grad``: torchvision's eager forward with full-size pasted masks, the tensor made
beforehand), ``predict`` + ``to_labels`` (the default fast path) and the same under
``fastpath.exact()`` (the plain path). Reported: the ratio of the summed times, and the median of
the per-round ratios. Target: fast / forward <= 0.5.

Accuracy (``--ap``): COCO mask AP50 on the whole val folder with the fast path and the exact path
(class-agnostic, score >= 0.05, mask >= 0.5). Target: |delta| <= 0.005.

    python benchmarks/bench_fastpath.py --images 10 --rounds 3 [--ap]
    python benchmarks/bench_fastpath.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg._torch import torch  # noqa: E402
from napari_cellseg.model.checkpoint import load_model  # noqa: E402
from napari_cellseg.io.samples import find_samples, read_sample  # noqa: E402
from napari_cellseg.inference.fastpath import exact  # noqa: E402
from napari_cellseg.io.images import to_tensor  # noqa: E402
from napari_cellseg.inference.predict import predict  # noqa: E402
from napari_cellseg.io.coco import labels_to_results  # noqa: E402
from napari_cellseg.evaluation.evaluate import evaluate, samples_truth  # noqa: E402
from napari_cellseg.inference.pipeline import segment_image  # noqa: E402
from napari_cellseg.inference.postprocess import to_labels  # noqa: E402


def speed(model, images, rounds: int) -> dict:
    tensors = [to_tensor(im) for im in images]

    def forward(i):
        with torch.no_grad():
            model([tensors[i]])

    def fast(i):
        to_labels(predict(model, images[i]), 0.05, 0.5)

    def plain(i):
        with exact():
            to_labels(predict(model, images[i]), 0.05, 0.5)

    fns = {"forward": forward, "fast": fast, "exact": plain}
    for fn in fns.values():
        fn(0)  # warm-up
    times = {name: [] for name in fns}
    names = list(fns)
    step = 0
    for _ in range(rounds):
        for i in range(len(images)):
            order = names[step % 3:] + names[:step % 3]
            step += 1
            for name in order:
                t0 = time.perf_counter()
                fns[name](i)
                times[name].append(time.perf_counter() - t0)
    total = {name: sum(ts) for name, ts in times.items()}
    per_round = sorted(f / b for f, b in zip(times["fast"], times["forward"]))
    res = {
        "images": len(images), "rounds": rounds, "total_s": total,
        "fast_vs_forward": total["fast"] / total["forward"],
        "exact_vs_forward": total["exact"] / total["forward"],
        "fast_vs_exact": total["fast"] / total["exact"],
        "fast_vs_forward_per_image_median": C.median(per_round),
    }
    print(f"{len(images)} images x {rounds} rounds: forward {C.fmt_s(total['forward'])}, fast predict "
          f"{C.fmt_s(total['fast'])}, exact predict {C.fmt_s(total['exact'])} -> fast/forward "
          f"{res['fast_vs_forward']:.3f} (per-image median {res['fast_vs_forward_per_image_median']:.3f}), "
          f"exact/forward {res['exact_vs_forward']:.3f}, fast/exact {res['fast_vs_exact']:.3f}")
    return res


def accuracy(model, data: Path, limit: int | None) -> dict:
    """Class-agnostic COCO mask AP on val (as the built-in model's figures), fast vs exact path."""
    samples = find_samples(data / "val")[:limit]
    truth = samples_truth(samples)
    names = {i: s.name for i, s in enumerate(samples, start=1)}

    def results() -> list:
        out = []
        for image_id, sample in enumerate(samples, start=1):
            labels, scores = segment_image(model, read_sample(sample)[0], score_thresh=0.05, mask_thresh=0.5)
            out += labels_to_results(labels, image_id, scores)
        return out

    t0 = time.perf_counter()
    fast = evaluate(results(), names, truth, class_agnostic=True)
    t_fast = time.perf_counter() - t0
    with exact():
        t0 = time.perf_counter()
        plain = evaluate(results(), names, truth, class_agnostic=True)
        t_exact = time.perf_counter() - t0
    res = {"val_images": len(samples), "ap50_fast": fast["AP50"], "ap50_exact": plain["AP50"],
           "ap_fast": fast["AP"], "ap_exact": plain["AP"], "delta_ap50": fast["AP50"] - plain["AP50"],
           "validate_s_fast": t_fast, "validate_s_exact": t_exact}
    print(f"val ({len(samples)} images, class-agnostic): AP50 fast {fast['AP50']:.4f} vs exact {plain['AP50']:.4f} "
          f"(delta {res['delta_ap50']:+.4f}); AP {fast['AP']:.4f} vs {plain['AP']:.4f}; "
          f"segment + evaluate {C.fmt_s(t_fast)} vs {C.fmt_s(t_exact)}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--images", type=int, default=10, help="0: accuracy only")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ap", action="store_true", help="also AP50 on val, fast vs exact")
    ap.add_argument("--ap-images", type=int, default=None, help="first N val images for --ap (default all)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.images, args.rounds, args.ap_images = 2, 1, 3
    info = C.header("bench_fastpath")
    model, _ = load_model(args.model)
    images = [read_sample(s)[0] for s in find_samples(args.data / "val")[: args.images]]
    summary = {"machine": info, "speed": speed(model, images, args.rounds) if images else None}
    if args.ap or args.quick:
        summary["accuracy"] = accuracy(model, args.data, args.ap_images)
    C.footer(info)
    C.dump_summary("bench_fastpath", summary)


if __name__ == "__main__":
    main()
