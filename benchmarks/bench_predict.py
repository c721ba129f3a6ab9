"""Prediction speed against torchvision, re-threshold (slider) time, and the size of raw predictions.

Figures (all in one run, baseline and candidate alternated, medians over repeats):

1. predict an image to label layers (``inference.predict.predict`` + ``postprocess.to_labels``) vs the bare
   torchvision forward of the same model on the same image (``model.eval(); model([tensor])``,
   which pastes every mask into a full-size float image). Target: <= 1.05x.
2. re-threshold (``to_labels`` alone, as when a slider moves) on a 1000 x 1000 image with 300
   instances. Target: <= 20 ms median.
3. the 2500 x 2000 image with 700+ instances (Scale issue): time per image (tiled predict),
   re-threshold time, and the bytes kept by ``RawInstances`` vs torchvision's N x H x W float32
   masks (N * H * W * 4 bytes, computed; measured at 1000 x 1000 / 300 instances, where it fits).
   Target: <= 50 MB.

Random weights with ``box_score_thresh=0`` and a raised detection cap give the requested number of
(junk) detections; the cost depends on their number and box sizes, not on their quality. Boxes of
a random model are anchor-sized (8-128 px) like cells; their size distribution is printed.

    python benchmarks/bench_predict.py                 # full
    python benchmarks/bench_predict.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg._torch import torch  # noqa: E402
from napari_cellseg.io.images import to_tensor  # noqa: E402
from napari_cellseg.inference.predict import predict  # noqa: E402
from napari_cellseg.io.raw import RawInstances  # noqa: E402
from napari_cellseg.inference.postprocess import to_labels  # noqa: E402


def box_stats(raw: RawInstances) -> dict:
    if not len(raw):
        return {}
    side = np.sqrt((raw.boxes[:, 2] - raw.boxes[:, 0]) * (raw.boxes[:, 3] - raw.boxes[:, 1]))
    return {"crop_side_px_median": float(np.median(side)), "crop_side_px_p90": float(np.percentile(side, 90))}


# ---------------------------------------------------------------------------------------- 1. predict vs forward


def predict_vs_forward(model, name: str, image: np.ndarray, repeats: int, score_thresh: float) -> dict:
    tensor = to_tensor(image)
    out: dict = {}

    def forward():
        with torch.no_grad():
            out["forward"] = model([tensor])[0]

    def ours():
        raw = predict(model, image)
        out["labels"] = to_labels(raw, score_thresh=score_thresh, mask_thresh=0.5)
        out["raw"] = raw

    def detect_only():
        with torch.inference_mode():
            model.detect([to_tensor(image)])

    times = C.alternate({"forward": forward, "predict+to_labels": ours, "detect": detect_only}, repeats)
    fwd, cand = C.median(times["forward"]), C.median(times["predict+to_labels"])
    per_round = [c / f for c, f in zip(times["predict+to_labels"], times["forward"])]
    n_fwd = int(len(out["forward"]["scores"]))
    res = {
        "image": name,
        "shape": list(image.shape[:2]),
        "instances": len(out["raw"]),
        "forward_instances": n_fwd,
        "forward_s": fwd,
        "ours_s": cand,
        "detect_only_s": C.median(times["detect"]),
        "ratio": cand / fwd,
        "ratio_per_round_median": C.median(per_round),
        "forward_masks_bytes": int(out["forward"]["masks"].numel() * out["forward"]["masks"].element_size()),
        "raw_bytes": out["raw"].nbytes,
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }
    print(
        f"predict {name} {image.shape[0]}x{image.shape[1]} ({res['instances']} instances, forward {n_fwd}): "
        f"forward {C.fmt_s(fwd)}, predict+to_labels {C.fmt_s(cand)} (detect alone {C.fmt_s(res['detect_only_s'])}) "
        f"-> ratio {res['ratio']:.3f} (per-round median {res['ratio_per_round_median']:.3f})"
    )
    return res


# ---------------------------------------------------------------------------------------- 2. re-threshold


SLIDER = [(s, m) for s in (0.0, 0.3, 0.5, 0.7, 0.05, 0.4) for m in (0.5, 0.3, 0.6, 0.8, 0.45)]
"""Slider positions (score, mask) visited in turn: low score thresholds paint every instance."""


def rethreshold(raw: RawInstances, calls: int) -> dict:
    """Median / p90 / max time of ``to_labels`` over slider positions, and at the worst position."""
    classes = [1, 2]
    to_labels(raw, 0.0, 0.5, classes=classes)  # warm-up
    times = []
    for k in range(calls):
        s, m = SLIDER[k % len(SLIDER)]
        t0 = time.perf_counter()
        to_labels(raw, s, m, classes=classes)
        times.append(time.perf_counter() - t0)
    worst = []
    for _ in range(max(5, calls // 4)):
        t0 = time.perf_counter()
        to_labels(raw, 0.0, 0.0, classes=classes)  # every instance painted, whole crops
        worst.append(time.perf_counter() - t0)
    return {
        "instances": len(raw),
        "median_ms": C.median(times) * 1000,
        "p90_ms": float(np.percentile(times, 90)) * 1000,
        "max_ms": max(times) * 1000,
        "all_instances_median_ms": C.median(worst) * 1000,
        **box_stats(raw),
    }


def rethreshold_report(label: str, raw: RawInstances, calls: int) -> dict:
    res = rethreshold(raw, calls)
    print(
        f"re-threshold {label}: {res['instances']} instances, median {res['median_ms']:.2f} ms, "
        f"p90 {res['p90_ms']:.2f} ms, max {res['max_ms']:.2f} ms; all instances painted: "
        f"{res['all_instances_median_ms']:.2f} ms; crop side median {res.get('crop_side_px_median', 0):.0f} px"
    )
    return res


# ---------------------------------------------------------------------------------------- 3. large image


def large_image(model, image: np.ndarray, n_target: int, cap: int, repeats: int, calls: int) -> dict:
    h, w = image.shape[:2]
    times, raw = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        raw = predict(model, image, max_detections=cap)
        times.append(time.perf_counter() - t0)
    assert raw is not None
    res = {"shape": [h, w], "tile_cap": cap, "instances_found": len(raw), "predict_s": C.median(times),
           "predict_all_s": [round(t, 2) for t in times]}
    t0 = time.perf_counter()
    to_labels(raw, 0.5, 0.6, classes=[1, 2])
    res["first_to_labels_ms"] = (time.perf_counter() - t0) * 1000
    if len(raw) > n_target:
        raw = raw.select(np.arange(n_target))  # the best n_target, as a score slider would keep
    res["rethreshold"] = rethreshold_report(f"{h}x{w}", raw, calls)
    n = len(raw)
    dense = n * h * w * 4
    # numpy objects around the crops (their data is counted in nbytes when the array owns it)
    overhead = sum(sys.getsizeof(m) - (m.nbytes if m.flags.owndata else 0) for m in raw.masks)
    overhead += sys.getsizeof(raw.masks)
    res.update(
        instances=n,
        raw_bytes=raw.nbytes,
        raw_bytes_with_python_objects=raw.nbytes + overhead,
        torchvision_masks_bytes_computed=dense,
        memory_ratio=dense / max(raw.nbytes, 1),
        **box_stats(raw),
    )
    print(
        f"large image {h}x{w}: {res['instances_found']} instances found (tile cap {cap}), kept {n}; predict "
        f"{C.fmt_s(res['predict_s'])} per image; raw predictions {C.mb(raw.nbytes)} MB "
        f"({C.mb(res['raw_bytes_with_python_objects'])} MB with Python objects) vs torchvision N*H*W*4 = "
        f"{C.mb(dense)} MB ({res['memory_ratio']:.0f}x)"
    )
    return res


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--checkpoint", help="also time predict vs forward with this trained model")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per configuration (after 1 warm-up)")
    ap.add_argument("--calls", type=int, default=60, help="to_labels calls per re-threshold figure")
    ap.add_argument("--large-repeats", type=int, default=2)
    ap.add_argument("--parts", default="predict,rethreshold,large",
                    help="comma-separated subset of: predict (1.), rethreshold (2.), large (3.)")
    ap.add_argument("--quick", action="store_true", help="smoke test: small images, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.calls, args.large_repeats = 1, 10, 1

    info = C.header("bench_predict")
    summary: dict = {"machine": info, "arch": args.arch}

    parts = set(args.parts.split(","))
    # 1. predict vs forward, random weights (detection cap 200 reached) and a trained model if given
    if "predict" in parts:
        predict_part(args, summary)
    if "rethreshold" in parts:
        rethreshold_part(args, summary)
    if "large" in parts:
        large_part(args, summary)
    C.footer(info)
    C.dump_summary("predict", summary)


def predict_part(args, summary: dict) -> None:
    model = C.random_model(args.arch, score_thresh=0.05, detections=200)
    images = [C.dsb_image(args.data, largest=True), C.dsb_image(args.data, min_side=500, largest=False)]
    if args.quick:
        images = [C.dsb_image(args.data, largest=False)]
    summary["predict"] = [predict_vs_forward(model, n, im, args.repeats, 0.05) for n, im in images]
    if args.checkpoint:
        trained = C.load_model(args.checkpoint, args.arch)
        thresh = float(trained.roi_heads.score_thresh)
        summary["predict_trained"] = [
            predict_vs_forward(trained, n, im, args.repeats, thresh) for n, im in images
        ]
        del trained


def rethreshold_part(args, summary: dict) -> None:
    # 2. re-threshold on 1000 x 1000 with 300 instances: network output and synthetic cell-sized crops
    shape = (500, 500) if args.quick else (1000, 1000)
    n300 = 50 if args.quick else 300
    dense_model = C.random_model(args.arch, score_thresh=0.0, detections=n300)
    image = C.mosaic(args.data, shape)
    raw = predict(dense_model, image, max_detections=n300)
    summary["rethreshold_1000"] = {
        "network": rethreshold_report(f"{shape[0]}x{shape[1]} (network output)", raw, args.calls),
        "synthetic": rethreshold_report(
            f"{shape[0]}x{shape[1]} (synthetic cells 12-60 px)", C.synthetic_raw(shape, n300), args.calls
        ),
    }
    with torch.no_grad():
        fwd = dense_model([to_tensor(image)])[0]
    summary["rethreshold_1000"]["torchvision_masks_bytes_measured"] = int(fwd["masks"].numel() * 4)
    summary["rethreshold_1000"]["raw_bytes"] = raw.nbytes
    print(
        f"memory at {shape[0]}x{shape[1]}: torchvision masks {C.mb(fwd['masks'].numel() * 4)} MB "
        f"({fwd['masks'].shape[0]} instances, measured tensor) vs RawInstances {C.mb(raw.nbytes)} MB ({len(raw)})"
    )
    del fwd


def large_part(args, summary: dict) -> None:
    # 3. the 2500 x 2000 image with 700+ instances
    big = (1250, 1000) if args.quick else (2500, 2000)
    n_target = 100 if args.quick else 700
    cap = 40 if args.quick else 250
    big_model = C.random_model(args.arch, score_thresh=0.0, detections=cap)
    summary["large"] = large_image(big_model, C.mosaic(args.data, big), n_target, cap, args.large_repeats, args.calls)
    summary["large"]["rethreshold_synthetic"] = rethreshold_report(
        f"{big[0]}x{big[1]} (synthetic cells 12-60 px)", C.synthetic_raw(big, n_target), args.calls
    )


if __name__ == "__main__":
    main()
