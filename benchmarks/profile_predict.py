"""Where the time of one prediction goes: per network part (module hooks), mask pasting, labels.

Profiles ``CellMaskRCNN.detect`` on one image (a tile) with the detection cap given, then times
torchvision's full-size mask pasting (what ``forward`` adds) against ``inference.predict.paste_masks``
(crops only) and ``to_labels``. Also shows the tiled cost on a 2500 x 2000 mosaic: how many
detections the mask head computed and how many survived the tile-core filter.

    python benchmarks/profile_predict.py --size 1024 --cap 200
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg._torch import torch  # noqa: E402
from napari_cellseg.io.images import to_tensor  # noqa: E402
from napari_cellseg.inference.predict import paste_masks, predict  # noqa: E402
from napari_cellseg.inference.postprocess import to_labels  # noqa: E402
from napari_cellseg.inference.tiling import tile_grid  # noqa: E402
from torchvision.models.detection.roi_heads import paste_masks_in_image  # noqa: E402


def hook_times(model) -> tuple[dict, dict]:
    parts = {
        "backbone+fpn": model.backbone,
        "rpn": model.rpn,
        "box_roi_pool": model.roi_heads.box_roi_pool,
        "box_head": model.roi_heads.box_head,
        "box_predictor": model.roi_heads.box_predictor,
        "mask_roi_pool": model.roi_heads.mask_roi_pool,
        "mask_head": model.roi_heads.mask_head,
        "mask_predictor": model.roi_heads.mask_predictor,
        "roi_heads (all)": model.roi_heads,
    }
    totals: dict = defaultdict(float)
    calls: dict = defaultdict(int)
    starts: dict = {}
    def pre(name):
        def hook(module, inputs):
            starts[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(module, inputs, output):  # returns None: the output is left alone
            totals[name] += time.perf_counter() - starts[name]
            calls[name] += 1
        return hook

    for name, mod in parts.items():
        mod.register_forward_pre_hook(pre(name))
        mod.register_forward_hook(post(name))
    return totals, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cap", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiled", action="store_true", help="also profile a tiled 2500 x 2000 prediction")
    args = ap.parse_args()
    C.header("profile_predict")
    model = C.random_model(args.arch, score_thresh=0.0, detections=args.cap)
    image = C.mosaic(args.data, (args.size, args.size))
    tensor = to_tensor(image)
    totals, calls = hook_times(model)
    with torch.inference_mode():
        model.detect([tensor])  # warm-up
        totals.clear()
        calls.clear()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            det = model.detect([tensor])[0]
        total = (time.perf_counter() - t0) / args.repeats
    n = len(det["scores"])
    print(f"detect {args.size}x{args.size}, {n} detections: {C.fmt_s(total)} per call")
    for name, t in totals.items():
        print(f"  {name:16s} {C.fmt_s(t / args.repeats):>10s}  {100 * t / args.repeats / total:5.1f}%")

    shape = (args.size, args.size)
    masks, boxes = det["masks"], det["boxes"]
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        full = paste_masks_in_image(masks[:, None], boxes, shape, padding=1)
    t_full = (time.perf_counter() - t0) / args.repeats
    del full
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        crop_boxes, crops, kept = paste_masks(masks, boxes, shape)
    t_crop = (time.perf_counter() - t0) / args.repeats
    from napari_cellseg.io.raw import RawInstances

    raw = RawInstances(crop_boxes, det["scores"][kept].numpy(), det["labels"][kept].numpy(), crops, shape)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        to_labels(raw, 0.0, 0.5, classes=[1, 2])
    t_labels = (time.perf_counter() - t0) / args.repeats
    print(f"torchvision paste_masks_in_image (forward's extra step): {C.fmt_s(t_full)}")
    print(f"inference.paste_masks (crops only): {C.fmt_s(t_crop)}; to_labels: {C.fmt_s(t_labels)}")

    if args.tiled:
        big = C.mosaic(args.data, (2500, 2000))
        tiles = tile_grid((2500, 2000), 1024, 128)
        totals.clear()
        calls.clear()
        t0 = time.perf_counter()
        raw = predict(model, big, max_detections=args.cap)
        total = time.perf_counter() - t0
        print(f"tiled 2500x2000 ({len(tiles)} tiles of {tiles[0].shape}, covering "
              f"{sum(t.shape[0] * t.shape[1] for t in tiles) / 5e6:.2f}x the image's pixels), cap {args.cap}: "
              f"{C.fmt_s(total)}; instances kept {len(raw)} of up to {len(tiles) * args.cap} detected per tile")
        for name, t in totals.items():
            print(f"  {name:16s} {C.fmt_s(t):>10s}  {100 * t / total:5.1f}%")
        print(f"  mask head computed for {calls['mask_head']} tiles; detections per tile up to {args.cap}, "
              f"kept in cores: {len(raw)}")


if __name__ == "__main__":
    main()
