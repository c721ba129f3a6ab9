#!/usr/bin/env bash
# The device side of one GPU round of the built-in nuclei model (the `device` tool's run; see
# scripts/device_round.py for the trip there and back): two runs from the shipped weights at once on one
# GPU (each is bound by its own Python process and data loading), then their weights and a short log.
# Here, first (.gpu/ in .git/info/exclude): python scripts/device_round.py pack-data WORK/data .gpu/nuc.tar
# and the wheel of what that machine lacks: python -m pip download --no-deps --only-binary=:all:
#   --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .gpu/whl pycocotools
# There: bash scripts/device_round.sh, with carry [".gpu"]. MIN: minutes of training steps per run.
# A smoke run here: MIN=0.2 DEVICE=cpu PACK=small.tar OUT=/tmp/out bash scripts/device_round.sh
set -u
export PYTHONUNBUFFERED=1 MIN=${MIN:-7.5} DEVICE=${DEVICE:-cuda} PACK=${PACK:-.gpu/nuc.tar}
T0=$SECONDS
if [ -d .gpu/whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nproc
python3 -c "import torch, torchvision, pycocotools; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" || exit 1
rm -rf /tmp/data /tmp/A /tmp/B
python3 scripts/device_round.py unpack-data "$PACK" /tmp/data || exit 1
echo "unpacked at $((SECONDS - T0)) s"
common=(--arch resnet18 --crop-size 256 --epochs 1000 --time-limit "$MIN" --val-limit 20 --val-every 40
        --detections 500 --augment strong --zoom 1 3 --mosaic 1.0 --workers 6 --init nuclei --device "$DEVICE"
        --amp --warmup-steps 200 --batch-size 16)
train() {   # NAME LR ROI_SAMPLES; SIGINT (last.pt saved) if it outlasts its time limit by 70 s
    timeout -s INT "$(python3 -c "print(int($MIN * 60 + 70))")" python3 -m napari_cellseg train /tmp/data \
        --out "/tmp/$1" --lr "$2" --roi-samples "$3" "${common[@]}" > "/tmp/$1.log" 2>&1
    echo "$1: exit $? at $((SECONDS - T0)) s"
}
train A "${LR_A:-3e-4}" 128 &
sleep 2; train B "${LR_B:-1e-4}" 512 &
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
wait
for r in A B; do
    echo "== $r"; tr '\r' '\n' < "/tmp/$r.log" | grep -v "^ *$" | grep -v "^train:" | tail -40
    tr '\r' '\n' < "/tmp/$r.log" | grep "^train:" | tail -1
    [ -f "/tmp/$r/last.pt" ] && python3 scripts/device_round.py slim "/tmp/$r/last.pt" "$OUT/$r"
done 2>&1 | tee "$OUT/logs.txt"
echo "done at $((SECONDS - T0)) s"
