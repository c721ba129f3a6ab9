"""Carry a training round of the built-in model to a lent GPU machine (the `device` tool) and back.

Its limits shape this: 64 MiB travel with the working tree (the repository included), no imagecodecs
there (the HW3 TIFFs are LZW), at most 16 MiB per returned file. So:

    python scripts/device_round.py pack-data WORK/data .gpu/nuc.tar --val 20   # here: 41 MB for 622+20 samples
    python scripts/device_round.py unpack-data .gpu/nuc.tar /tmp/data          # there: uncompressed TIFFs
    python scripts/device_round.py slim /tmp/A/last.pt $OUT/A                  # there: fp16 weights, 15 MiB parts
    python scripts/device_round.py unslim /work/.device/N/A WORK/run/last.pt   # here: a last.pt to ship_nuclei.sh

``scripts/device_round.sh`` is the device side of one call. Samples named ``*_repN`` (stained samples
seen twice, ``merge_classes.py --repeat-stained``) travel as names and are copied back there.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import lzma
import os
import re
import shutil
import tarfile

import numpy as np
import tifffile
import torch

PART_BYTES = 15 * 2**20


def _filters(delta: int) -> list[dict]:
    """LZMA, after a byte-delta filter of ``delta`` (one pixel) where that compresses better."""
    return ([{"id": lzma.FILTER_DELTA, "dist": delta}] if delta else []) + [{"id": lzma.FILTER_LZMA2, "preset": 9}]


def _repeat_of(name: str) -> str | None:
    """The sample that ``name`` repeats (``merge_classes.py --repeat-stained`` names copies ``NAME_repN``)."""
    match = re.fullmatch(r"(.+)_rep\d+", name)
    return match[1] if match else None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack_data(src: str, out: str, n_val: int) -> None:
    """train/ and the first ``n_val`` val/ samples as LZMA'd raw arrays; grey RGB images as one channel."""
    with tarfile.open(out, "w") as tar:
        for split in ("train", "val"):
            names = sorted(os.listdir(f"{src}/{split}"))[: None if split == "train" else n_val]
            for name in names:
                if _repeat_of(name) in names:
                    _add(tar, f"rep/{split}/{name}", b"")
                    continue
                for file in sorted(os.listdir(f"{src}/{split}/{name}")):
                    a = tifffile.imread(f"{src}/{split}/{name}/{file}")
                    grey = a.ndim == 3 and bool((a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all())
                    if grey:
                        a = np.ascontiguousarray(a[..., 0])
                    pixel = 1 if a.ndim == 2 else a.shape[-1] * a.itemsize
                    _, delta, data = min((len(c), d, c) for d in (0, pixel) for c in
                                         [lzma.compress(a.tobytes(), format=lzma.FORMAT_RAW, filters=_filters(d))])
                    meta = {"shape": a.shape, "dtype": a.dtype.str, "grey": grey, "delta": delta}
                    _add(tar, f"{split}/{name}/{file}.json", json.dumps(meta).encode())
                    _add(tar, f"{split}/{name}/{file}.xz", data)
    print(f"{out}: {os.path.getsize(out) / 1e6:.1f} MB")


def unpack_data(src: str, out: str) -> None:
    """The HW3 folders again, as uncompressed TIFFs (readable without imagecodecs)."""
    reps, meta = [], {}
    with tarfile.open(src) as tar:
        for member in tar:
            if member.name.startswith("rep/"):
                reps.append(member.name[4:])
                continue
            data = tar.extractfile(member).read()
            if member.name.endswith(".json"):
                meta = json.loads(data)
                continue
            raw = lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_filters(meta["delta"]))
            a = np.frombuffer(raw, meta["dtype"]).reshape(meta["shape"])
            path = f"{out}/{member.name[:-3]}"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tifffile.imwrite(path, np.stack([a] * 3, -1) if meta["grey"] else a)
    for rep in reps:
        split, name = rep.split("/")
        shutil.copytree(f"{out}/{split}/{_repeat_of(name)}", f"{out}/{rep}")
    print("unpacked", {s: len(os.listdir(f"{out}/{s}")) for s in ("train", "val")})


def slim(src: str, prefix: str) -> None:
    """last.pt without optimizer state, float weights as fp16 (packing makes them int8 anyway), in parts."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler")}
    keep["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    buffer = io.BytesIO()
    torch.save(keep, buffer)
    data = buffer.getvalue()
    for i in range(0, len(data), PART_BYTES):
        with open(f"{prefix}.part{i // PART_BYTES}", "wb") as f:
            f.write(data[i:i + PART_BYTES])
    print(f"{src}: step {ckpt['step']}, epoch {ckpt['epoch']}, history {ckpt['history']}")


def unslim(prefix: str, out: str) -> None:
    """A checkpoint with fp32 weights from slim's parts (no optimizer: pack, tune and bench need none)."""
    parts = sorted(glob.glob(f"{prefix}.part*"), key=lambda p: int(p.rsplit("part", 1)[1]))
    data = b"".join(open(p, "rb").read() for p in parts)
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    ckpt["model"] = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(ckpt, out)
    print(f"{out}: step {ckpt['step']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("pack-data")
    s.add_argument("src"), s.add_argument("out"), s.add_argument("--val", type=int, default=20)
    s = sub.add_parser("unpack-data")
    s.add_argument("src"), s.add_argument("out")
    s = sub.add_parser("slim")
    s.add_argument("src"), s.add_argument("prefix")
    s = sub.add_parser("unslim")
    s.add_argument("prefix"), s.add_argument("out")
    a = p.parse_args()
    if a.command == "pack-data":
        pack_data(a.src, a.out, a.val)
    elif a.command == "unpack-data":
        unpack_data(a.src, a.out)
    elif a.command == "slim":
        slim(a.src, a.prefix)
    else:
        unslim(a.prefix, a.out)


if __name__ == "__main__":
    main()
