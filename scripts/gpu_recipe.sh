#!/usr/bin/env bash
# The GPU recipe: resnet50_v2, fp16 AMP, from scratch (or --weights coco where the internet is
# reachable), on a HW3 dataset; then the val AP and the test_release submission.
#   scripts/gpu_recipe.sh DATASET OUT_DIR [STEPS]
# Multi-GPU: set NPROC (e.g. NPROC=4) to train on that many GPUs with torchrun (NCCL, DDP).
set -euo pipefail
data=$1 out=$2 steps=${3:-3000} nproc=${NPROC:-1} device=${DEVICE:-cuda} batch=${BATCH:-8}
launch=(python -m napari_cellseg)
[ -n "${NPROC:-}" ] && launch=(torchrun --standalone --nproc_per_node "$nproc" -m napari_cellseg)
"${launch[@]}" train "$data" --out "$out/run" --arch resnet50_v2 --device "$device" --amp \
    --batch-size "$batch" --crop-size 384 --lr 4e-4 --epochs 1000 --max-steps "$steps" --workers 6 \
    --detections 500 --val-every 5 ${EXTRA:-}
python -m napari_cellseg export "$out/run/best.pt" "$data/val" --device "$device" --out "$out/val-results.json" --score-thresh 0.05 --restart
python -m napari_cellseg evaluate "$out/val-results.json" "$data/val"
python -m napari_cellseg export "$out/run/best.pt" "$data" --device "$device" --out "$out/test-results.json" --score-thresh 0.05 --restart
