"""Pack a training run's checkpoint as a built-in model: int8 weights, no optimizer, a model card.

Run: python scripts/pack_model.py RUN/last.pt napari_cellseg/weights/nuclei.pt --class-name nucleus \
        --description "..." --trained-on "..." [--metrics measured.json] [--train-dir DIR ...]
``--metrics`` embeds figures measured on the packed model (benchmarks/bench_nuclei.py writes them),
so ``napari-cellseg models`` reports what was measured, not what was hoped. ``--train-dir`` (one per
training folder) records the median object diameter of the training set in the config and card:
``scale.py`` brings images to it (without it, a run's own recorded diameter is kept).

When inference changes and the weights do not, measure the packed file again and replace its figures
(and its confidence, re-tuned with ``napari-cellseg tune``) with:
    python scripts/pack_model.py --new-figures napari_cellseg/weights/nuclei.pt MEASURED.json [CONFIDENCE]

Packing also writes the file's SHA-256 beside it (``nuclei.pt.sha256``), which every load of the
built-in model checks. A built-in file replaced by other means gets its digest with:
    python scripts/pack_model.py --digest-only napari_cellseg/weights/nuclei.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_cellseg._torch import torch
from napari_cellseg.atomic import atomic_path
from napari_cellseg.model.checkpoint import FORMAT, load_checkpoint, model_weights
from napari_cellseg.model.network import ModelConfig
from napari_cellseg.model.packing import pack_state_dict
from napari_cellseg.model.pretrained import write_digest
from napari_cellseg.inference.scale import label_areas, median_diameter


def training_diameter(folders: list[str]) -> tuple[float, int]:
    """Median equivalent diameter (px) of every instance of every sample in ``folders``, and the count."""
    from napari_cellseg.io.samples import find_samples, read_sample

    areas = [label_areas(labels) for folder in folders for sample in find_samples(folder)
             for labels in read_sample(sample)[1].values()]
    areas = np.concatenate(areas) if areas else np.zeros(0)
    diameter = median_diameter(areas)
    if diameter is None:
        raise SystemExit(f"no objects in {', '.join(folders)}")
    return round(diameter, 1), len(areas)


def card_metrics(measured: dict) -> dict:
    """``benchmarks/bench_nuclei.py --json`` output as the card's labelled figures."""
    labels = {"all": "DSB2018 val, all {n} images (class-agnostic)",
              "fluorescence": "DSB2018 val, {n} fluorescence images",
              "stained": "DSB2018 val, {n} stained images"}
    card = {labels[k].format(n=v["images"]): v for k, v in measured.items() if k in labels}
    card["evaluation"] = (
        f"COCO mask AP, scores >= 0.05, up to 1000 detections per image, mask threshold {measured['mask_thresh']}; "
        "TP/(TP+FP+FN), precision, recall, F1 and panoptic quality at IoU 0.5 for scores >= "
        f"{measured.get('score_thresh', 0.5)}; scale {measured.get('scale', 1)} (benchmarks/bench_nuclei.py)"
    )
    if "confidence_cv" in measured:
        cv = measured["confidence_cv"]
        card["confidence tuned on other images (2-fold, 3 random splits)"] = {
            "accuracy@0.5": round(cv["accuracy@0.5"], 4), "cuts": [s["cuts"] for s in cv["splits"]]}
    card["seconds_per_image_cpu"] = round(measured["seconds_per_image"], 2)
    return card


def previous_rounds(model: str) -> list[dict]:
    """The training rounds of the packed model a run continued from; a card from before rounds were
    recorded is one round (its steps, and its --time-limit minutes on one thread)."""
    card = load_checkpoint(model).get("card", {})
    if isinstance(card.get("rounds"), list):
        return [dict(r) for r in card["rounds"]]
    return [{"trained_on": card.get("trained_on"), "steps": int(card.get("steps", 0)),
             "minutes": card.get("train_args", {}).get("time_limit"), "threads": 1}]


def new_figures(path: str, measured_json: str, cut: float | None = None) -> None:
    """Replace a packed model's measured figures (and, given ``cut``, the confidence its label images
    start at) after a change to inference, its weights untouched; refuses figures measured at another
    confidence than the one the file will hold."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    measured = json.loads(Path(measured_json).read_text())
    config = ModelConfig.from_dict(payload["config"])
    if cut is not None:
        config.score_thresh = cut
        config.validate()
    if measured.get("score_thresh") != config.score_thresh:
        raise SystemExit(f"{measured_json} was measured at confidence {measured.get('score_thresh')}, "
                         f"the model starts at {config.score_thresh}: measure it again")
    payload["config"], payload["card"]["metrics"] = config.to_dict(), card_metrics(measured)
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)
    write_digest(path)
    print(f"{path}: figures of {measured_json}, confidence {config.score_thresh}")


def main() -> None:
    if sys.argv[1:2] == ["--digest-only"]:
        for path in sys.argv[2:]:
            print(f"{write_digest(path)}: recorded the digest of {path}")
        return
    if sys.argv[1:2] == ["--new-figures"] and len(sys.argv) in (4, 5):
        new_figures(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) == 5 else None)
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--class-name", action="append", required=True, help="one per class, in order")
    p.add_argument("--description", required=True)
    p.add_argument("--trained-on", required=True)
    p.add_argument("--licence", default="weights: BSD-3-Clause; training data: CC0")
    p.add_argument("--recipe", default="scripts/train_nuclei.sh")
    p.add_argument("--metrics", help="figures measured on the packed model (benchmarks/bench_nuclei.py --json)")
    p.add_argument("--continues", metavar="MODEL",
                   help="the packed model this run started from (--init): its rounds of training are carried over, "
                        "so the card's total steps and CPU-hours count every session")
    p.add_argument("--minutes", type=float, help="minutes of training steps of this run (default: its --time-limit)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads the run trained with")
    p.add_argument("--device", metavar="NAME",
                   help="the accelerator the run trained on (e.g. 'NVIDIA H200'): its minutes count as GPU-hours")
    p.add_argument("--train-dir", action="append", default=[],
                   help="a training folder of samples (repeat for several): its median object diameter is recorded")
    args = p.parse_args()

    ckpt = load_checkpoint(args.checkpoint)
    config = ModelConfig.from_dict(ckpt["config"])
    if len(args.class_name) != len(config.class_names):
        raise SystemExit(f"the run has {len(config.class_names)} classes, {len(args.class_name)} names given")
    config.class_names = list(args.class_name)
    if args.train_dir:
        config.object_diameter, objects = training_diameter(args.train_dir)
        print(f"median object diameter of {objects} training objects: {config.object_diameter} px")
    train_args = ckpt.get("train_args", {})
    rounds = previous_rounds(args.continues) if args.continues else []
    minutes = args.minutes if args.minutes is not None else train_args.get("time_limit")
    rounds.append({"trained_on": args.trained_on, "steps": int(ckpt.get("step", 0)), "minutes": minutes,
                   **({"device": args.device} if args.device else {"threads": args.threads})})
    card = {
        "description": args.description,
        "trained_on": args.trained_on,
        "licence": args.licence,
        "recipe": args.recipe,
        "arch": config.arch,
        "classes": config.class_names,
        "object_diameter": config.object_diameter or None,
        "steps": int(ckpt.get("step", 0)),
        "epochs": int(ckpt.get("epoch", 0)),
        "rounds": rounds,
        "total_steps": sum(r["steps"] for r in rounds),
        "cpu_hours": round(sum((r["minutes"] or 0) * r["threads"] for r in rounds if "device" not in r) / 60, 2),
        "gpu_hours": round(sum(r["minutes"] or 0 for r in rounds if "device" in r) / 60, 2),
        "train_args": {k: v for k, v in train_args.items() if k not in ("dataset", "out_dir", "resume", "init")},
        "history": ckpt.get("history", []),
        "metrics": card_metrics(json.loads(Path(args.metrics).read_text())) if args.metrics else {},
    }
    payload = {"format": FORMAT, "config": config.to_dict(), "packed": pack_state_dict(model_weights(ckpt)),
               "card": card}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    write_digest(out)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, {len(payload['packed'])} tensors, card: {sorted(card)}")


if __name__ == "__main__":
    main()
