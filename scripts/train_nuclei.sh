#!/usr/bin/env bash
# Rebuild the built-in `nuclei` model from DSB2018 (CC0), from random weights, on a CPU.
# Usage: scripts/train_nuclei.sh DSB2018_ROOT WORK_DIR [MINUTES]
# Resumable: run it again after an interruption and it continues from WORK_DIR/run/last.pt.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # the shipped run: one thread (robust on a shared 2-core machine)
src=$1 work=$2 minutes=${3:-105}
if [ ! -d "$work/data/train" ]; then   # one class: fluorescence and stained nuclei merged (see docs/model-nuclei.md)
    python scripts/merge_classes.py "$src/train" "$work/data/train"
    python scripts/merge_classes.py "$src/val" "$work/data/val"   # monitored only, never used to pick weights
fi
resume=()
[ -f "$work/run/last.pt" ] && resume=(--resume "$work/run/last.pt")
napari-cellseg train "$work/data" --out "$work/run" --arch resnet18 --crop-size 256 --batch-size 4 --lr 6e-4 \
    --epochs 200 --time-limit "$minutes" --val-limit 20 --val-every 4 --detections 500 --roi-samples 128 \
    --augment strong --workers 1 "${resume[@]}"
# Pack the last weights (not the best on val: val is the test set) into the package, int8; measure the
# packed model on val/ and pack again with the figures in its card (what `napari-cellseg models` shows).
pack() {
    python scripts/pack_model.py "$work/run/last.pt" napari_cellseg/weights/nuclei.pt --class-name nucleus \
        --description "Nuclei in fluorescence and stained (brightfield, H&E) microscopy, one class" \
        --trained-on "DSB2018 stage1_train (train/ split, 473 images), CC0" "$@"
}
pack
(cd benchmarks && python bench_nuclei.py --model nuclei --val "$src/val" --threads 1 --json "$work/val.json")
pack --metrics "$work/val.json"
