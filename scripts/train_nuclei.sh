#!/usr/bin/env bash
# Continue training the built-in `nuclei` model on DSB2018 (CC0) on a CPU: every run starts from the
# shipped weights (all of them, same single class) so each session adds training time.
# Usage: scripts/train_nuclei.sh DSB2018_ROOT EXTRA_ROOT WORK_DIR [MINUTES] [THREADS] [LR] [MOSAIC]
# LR: the peak learning rate (default 3e-4, which restarts the schedule; a short round that only
# continues the shipped weights wants a low one, e.g. 5e-5: see docs/model-nuclei.md, rounds 5 and 6).
# MOSAIC: the share of crops made of four images' crops (default 0; docs/model-nuclei.md, round 15).
# Resumable: run it again after an interruption and it continues from WORK_DIR/run/last.pt, for MINUTES
# more (the time limit is per process): pass the minutes left.
# Ships nothing by itself: scripts/ship_nuclei.sh packs and measures the result, and keeps it only when
# val/ improves.
set -euo pipefail
src=$1 extra=$2 work=$3 minutes=${4:-105} lr=${6:-3e-4} mosaic=${7:-0}
export OMP_NUM_THREADS=${5:-${OMP_NUM_THREADS:-1}}   # 2 when the machine is otherwise idle
if [ ! -d "$work/data/train" ]; then   # one class: fluorescence and stained nuclei merged (see docs/model-nuclei.md)
    python scripts/merge_classes.py "$src/train" "$extra/train" "$work/data/train" --repeat-stained 2
    python scripts/merge_classes.py "$src/val" "$work/data/val"   # monitored only, never used to pick weights
fi
start=(--init nuclei)
[ -f "$work/run/last.pt" ] && start=(--resume "$work/run/last.pt")
napari-cellseg train "$work/data" --out "$work/run" --arch resnet18 --crop-size 256 --batch-size 4 --lr "$lr" \
    --epochs 200 --time-limit "$minutes" --val-limit 20 --val-every 4 --detections 500 --roi-samples 128 \
    --augment strong --zoom 1 3 --mosaic "$mosaic" --workers 1 "${start[@]}"
