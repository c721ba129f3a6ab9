import subprocess
import sys
from pathlib import Path

import pytest

from napari_cellseg._torch import torch
from napari_cellseg.errors import CheckpointError
from napari_cellseg.model.averaging import average_checkpoints, trained_steps
from napari_cellseg.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from napari_cellseg.model.network import ModelConfig, build_model

SCRIPT = Path(__file__).parents[2] / "scripts" / "average_weights.py"


def _run(tmp_path, name: str, seed: int, step: int, out_dir: str, **changes):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"arch": "resnet18", "class_names": ["nucleus"], **changes})
    model = build_model(cfg)
    path = save_checkpoint(tmp_path / name, model, cfg, step=step, epoch=step // 10,
                           train_args={"out_dir": out_dir, "seed": seed})
    return path, model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return [_run(tmp, f"run{i}.pt", seed=i, step=100 * (i + 1), out_dir=f"run{i}", score_thresh=0.5 + 0.1 * i)
            for i in range(3)]


def test_the_weights_are_the_mean_and_the_config_is_the_first_runs(runs, tmp_path):
    out = average_checkpoints([p for p, _ in runs], tmp_path / "soup.pt")
    soup, cfg = load_model(out)
    states = [m.state_dict() for _, m in runs]
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = (states[0][key] + states[1][key] + states[2][key]) / 3
            assert torch.allclose(value, expected, atol=1e-6), key
        else:
            assert torch.equal(value, states[0][key]), key
    assert cfg.score_thresh == pytest.approx(0.5)
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 100 + 200 + 300 and ckpt["epoch"] == 30
    assert [s["step"] for s in ckpt["averaged_from"]] == [100, 200, 300]
    assert "optimizer" not in ckpt  # a new starting point, not a resumable run


def test_snapshots_of_one_run_count_its_steps_once():
    snapshots = [{"step": 100, "train_args": {"out_dir": "a"}}, {"step": 250, "train_args": {"out_dir": "a"}},
                 {"step": 90, "train_args": {"out_dir": "b"}}, {"step": "many"}]
    assert trained_steps(snapshots) == 250 + 90


def test_another_architecture_or_class_list_is_refused(runs, tmp_path):
    other, _ = _run(tmp_path, "two.pt", seed=5, step=1, out_dir="x", class_names=["a", "b"])
    with pytest.raises(CheckpointError, match="another network .*class_names"):
        average_checkpoints([runs[0][0], other], tmp_path / "soup.pt")
    assert not (tmp_path / "soup.pt").exists()


def test_one_source_and_a_builtin_target_are_refused(runs, tmp_path):
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([runs[0][0]], tmp_path / "soup.pt")
    from napari_cellseg.model.pretrained import resolve_checkpoint

    with pytest.raises(CheckpointError, match="built-in model"):
        average_checkpoints([runs[0][0], runs[1][0]], resolve_checkpoint("nuclei"))


def test_the_script_writes_the_average_and_names_a_broken_source_in_one_line(runs, tmp_path):
    ok = subprocess.run([sys.executable, str(SCRIPT), str(runs[0][0]), str(runs[1][0]), "--out",
                         str(tmp_path / "soup.pt")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "mean of 2 checkpoints" in ok.stdout and (tmp_path / "soup.pt").is_file()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    bad = subprocess.run([sys.executable, str(SCRIPT), str(runs[0][0]), str(broken), "--out",
                          str(tmp_path / "other.pt")], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.startswith("error: ") and "broken.pt" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "other.pt").exists()


def test_a_packed_average_credits_every_run_in_its_card(runs, tmp_path):
    soup = average_checkpoints([runs[0][0], runs[1][0]], tmp_path / "soup.pt")
    packed = tmp_path / "packed.pt"
    done = subprocess.run([sys.executable, str(SCRIPT.with_name("pack_model.py")), str(soup), str(packed),
                           "--class-name", "nucleus", "--description", "test", "--trained-on", "noise",
                           "--minutes", "10", "--threads", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    card = load_checkpoint(packed)["card"]
    assert card["rounds"] == [{"trained_on": "noise", "steps": 300, "minutes": 10.0, "threads": 2,
                               "averaged_runs": 2}]
    assert card["total_steps"] == 300 and card["cpu_hours"] == pytest.approx(10 * 2 / 60, abs=0.01)
