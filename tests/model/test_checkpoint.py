import os
import pickle

import pytest

import badfiles

from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from napari_cellseg.errors import CheckpointError
from napari_cellseg.model.network import ModelConfig, build_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = ModelConfig(arch="resnet18", class_names=["nucleus"])
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt", model, cfg, optimizer=opt, epoch=3)
    return path, model, cfg


def test_round_trip_restores_weights_config_and_state(saved):
    path, model, cfg = saved
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and "state" in ckpt["optimizer"]
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg and not loaded.training
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_no_temporary_files_left_behind(saved):
    path = saved[0]
    assert sorted(os.listdir(path.parent)) == ["last.pt"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(saved, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(saved[0].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_checkpoint(bad)


def test_plain_state_dict_is_refused(saved, tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(saved[1].state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a napari-cellseg checkpoint"):
        load_checkpoint(bare)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/napari_cellseg_pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the hostile pickle's protocol
def test_pickle_that_runs_code_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "napari-cellseg/1", "payload": _Exploit()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    if os.path.exists("/tmp/napari_cellseg_pwned"):
        os.remove("/tmp/napari_cellseg_pwned")
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(evil)
    assert not os.path.exists("/tmp/napari_cellseg_pwned")


def test_checkpoint_from_another_class_count_is_refused(saved, tmp_path):
    ckpt = load_checkpoint(saved[0])
    ckpt["config"]["class_names"] = ["a", "b", "c"]
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(other)


# ------------------------------------------------------------ damaged weights never pass (issue 21)


def test_overwritten_tensors_are_refused_by_the_zip_checksums(saved, tmp_path):
    """(4) Overwritten weights loaded and predicted 0 cells with exit 0."""
    damaged = badfiles.overwritten_tensor(saved[0], tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=r"damaged.pt is damaged: .* fails its checksum"):
        load_model(damaged)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    """(4) NaN/Inf weights gave empty labels with exit 0; now they name the tensor."""
    cfg = ModelConfig(arch="resnet18", class_names=["nucleus"])
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight[0, 0] = value
    path = save_checkpoint(tmp_path / "diverged.pt", model, cfg)
    with pytest.raises(CheckpointError, match=r"diverged.pt is unusable: .*cls_score.weight are not finite numbers"):
        load_model(path)


def test_a_folder_is_named_as_a_folder_not_missing(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file; pick the \.pt file in it \(best"):
        load_checkpoint(tmp_path)


def test_a_tuned_copy_changes_the_confidence_only_and_keeps_the_source(saved, tmp_path):
    from napari_cellseg.inference.postprocess import model_confidence
    from napari_cellseg.model.checkpoint import save_with_config

    path, model, cfg = saved
    before = path.read_bytes()
    out = save_with_config(path, tmp_path / "tuned.pt", score_thresh=0.85)
    assert path.read_bytes() == before  # the input is kept as it was
    tuned, tuned_cfg = load_model(out)
    assert tuned_cfg.score_thresh == 0.85 and model_confidence(tuned) == 0.85
    assert tuned_cfg == ModelConfig.from_dict({**cfg.to_dict(), "score_thresh": 0.85})
    assert load_checkpoint(out)["epoch"] == 3  # training state kept: a tuned last.pt still resumes
    for (k, a), b in zip(model.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(a, b), k
    assert model_confidence(load_model(path)[0]) == 0.5  # untuned: the default
    with pytest.raises(ValueError, match="score_thresh"):
        save_with_config(path, tmp_path / "bad.pt", score_thresh=1.5)
    assert not (tmp_path / "bad.pt").exists()


def test_a_tuned_copy_never_overwrites_a_builtin_model(tmp_path):
    from napari_cellseg.model.checkpoint import save_with_config
    from napari_cellseg.model.pretrained import builtin_models

    target = builtin_models()["nuclei"].path
    before = target.stat().st_mtime_ns
    with pytest.raises(CheckpointError, match="built-in model's file"):
        save_with_config("nuclei", target, score_thresh=0.7)
    assert target.stat().st_mtime_ns == before


def test_a_new_run_from_a_tuned_model_starts_at_the_default_confidence(saved, tmp_path):
    from napari_cellseg.model.checkpoint import init_model, save_with_config

    tuned = save_with_config(saved[0], tmp_path / "tuned.pt", score_thresh=0.8)
    model, config, _ = init_model(tuned, ["nucleus"])
    assert config.score_thresh == 0.5 and model.score_thresh == 0.5
