"""scripts/device_round.py carries training data and weights to a GPU machine and back, and
scripts/pack_model.py records such a round: the data must arrive bit for bit (the shipped model was
trained on what unpack-data wrote), and a GPU round's minutes must not count as CPU-hours."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch

from conftest import save_untrained, write_tiny_dataset

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _device_round():
    spec = importlib.util.spec_from_file_location("device_round", SCRIPTS / "device_round.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tifs(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): tifffile.imread(p) for p in sorted(root.rglob("*.tif"))}


def test_data_arrives_bit_for_bit(tmp_path):
    """RGBA and grey RGB images (sent as one channel), uint16 masks, a repeated sample sent by name,
    and only the first ``n_val`` val samples."""
    src = write_tiny_dataset(tmp_path / "src")
    shutil.rmtree(src / "test_release")
    grey = np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)
    tifffile.imwrite(src / "train" / "sample_1" / "image.tif", np.stack([grey] * 3, -1))
    shutil.copytree(src / "train" / "sample_0", src / "train" / "sample_0_rep1")
    dr = _device_round()
    dr.pack_data(str(src), str(tmp_path / "data.tar"), n_val=1)
    dr.unpack_data(str(tmp_path / "data.tar"), str(tmp_path / "out"))
    sent, arrived = _tifs(src), _tifs(tmp_path / "out")
    assert set(arrived) == {k for k in sent if not k.startswith("val/val_1")}
    for name, image in arrived.items():
        assert image.dtype == sent[name].dtype and np.array_equal(image, sent[name]), name
    assert arrived["train/sample_1/image.tif"].shape == (64, 80, 3)


def test_slim_weights_come_back_as_fp32_within_fp16(tmp_path):
    ckpt_path = save_untrained(tmp_path / "last.pt")
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt.update(step=7, epoch=1, history=[{"epoch": 1, "AP": 0.5}], optimizer={"state": {}, "param_groups": []})
    torch.save(ckpt, ckpt_path)
    dr = _device_round()
    dr.slim(str(ckpt_path), str(tmp_path / "A"))
    dr.unslim(str(tmp_path / "A"), str(tmp_path / "back.pt"))
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert "optimizer" not in back and back["step"] == 7 and back["config"] == ckpt["config"]
    for name, tensor in ckpt["model"].items():
        assert back["model"][name].dtype == tensor.dtype
        assert torch.allclose(back["model"][name].float(), tensor.float(), rtol=1e-3, atol=1e-4), name


def test_a_gpu_round_counts_as_gpu_hours(tmp_path):
    """Continuing the built-in model for 7.5 GPU-minutes keeps its CPU-hours and adds 0.12 GPU-hours."""
    run = save_untrained(tmp_path / "run.pt", class_names=["nucleus"])
    out = tmp_path / "packed.pt"
    subprocess.run([sys.executable, str(SCRIPTS / "pack_model.py"), str(run), str(out), "--class-name", "nucleus",
                    "--description", "d", "--trained-on", "t", "--continues", "nuclei", "--minutes", "7.5",
                    "--device", "NVIDIA H200"], check=True, capture_output=True)
    before = torch.load(SCRIPTS.parent / "napari_cellseg" / "weights" / "nuclei.pt", weights_only=True)["card"]
    card = torch.load(out, weights_only=True)["card"]
    assert card["rounds"][:-1] == before["rounds"]
    assert card["rounds"][-1] == {"trained_on": "t", "steps": 0, "minutes": 7.5, "device": "NVIDIA H200"}
    assert card["cpu_hours"] == before["cpu_hours"]
    gpu_minutes = sum(r["minutes"] for r in before["rounds"] if "device" in r)
    assert card["gpu_hours"] == round((gpu_minutes + 7.5) / 60, 2)
