"""The built-in ``nuclei`` model: in the package within its size budget, usable by name everywhere,
and a starting point for fine-tuning to other classes (``init``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import (
    CLASS_SPECIFIC, init_model, load_checkpoint, load_model, model_card, save_checkpoint,
)
from napari_cellseg.cli.main import main
from napari_cellseg.training.engine import DoneEvent, InfoEvent, TrainConfig, train
from napari_cellseg.errors import CheckpointError
from napari_cellseg.io.images import read_image
from napari_cellseg.inference.predict import predict
from napari_cellseg.model.network import ModelConfig, build_model
from napari_cellseg.model.pretrained import DEFAULT_MODEL, WEIGHTS_DIR, builtin_models, resolve_checkpoint
from napari_cellseg.sample_data import SAMPLE_DATASET

BUDGET = 25 * 10**6


def test_shipped_models_fit_the_size_budget():
    assert DEFAULT_MODEL in builtin_models()
    assert sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir()) <= BUDGET


def test_nuclei_loads_by_name_and_carries_its_card():
    model, config = load_model("nuclei")
    assert config.class_names == ["nucleus"] and config.arch == "resnet18" and not model.training
    card = model_card("nuclei")
    assert "DSB2018" in card["trained_on"] and card["steps"] > 0 and card["recipe"]
    assert "packed" in load_checkpoint("nuclei") and "optimizer" not in load_checkpoint("nuclei")


def test_nuclei_finds_nuclei_in_a_sample_image(one_thread):
    """The product promise: good masks before any training (a held-out sample val image)."""
    model, _ = load_model("nuclei")
    sample = sorted((SAMPLE_DATASET / "val").iterdir())[0]
    raw = predict(model, read_image(sample / "image.tif"))
    truth = _count_instances(sample)
    confident = int((np.asarray(raw.scores) >= 0.5).sum())
    assert truth > 0 and 0.5 * truth <= confident <= 2 * truth


def _count_instances(sample: Path) -> int:
    from napari_cellseg.io.images import read_labels

    return sum(len(np.unique(read_labels(p))) - 1 for p in sample.glob("class*.tif"))


def test_an_existing_file_wins_over_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("nuclei") == builtin_models()["nuclei"].path
    Path("nuclei").write_bytes(b"not a checkpoint")
    assert resolve_checkpoint("nuclei") == Path("nuclei")
    with pytest.raises(CheckpointError, match="damaged|not a PyTorch") as err:
        load_model("nuclei")
    # (17) the message said "checkpoint nuclei is damaged", as if the built-in model were
    assert str(tmp_path / "nuclei") in str(err.value) and "named like the built-in model" in str(err.value)


def test_a_folder_of_that_name_does_not_hide_the_builtin_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("nuclei").mkdir()  # e.g. the user's dataset folder
    assert resolve_checkpoint("nuclei") == builtin_models()["nuclei"].path
    assert load_model("nuclei")[1].class_names == ["nucleus"]


def test_unknown_name_lists_the_builtin_models():
    with pytest.raises(CheckpointError, match="built-in models: nuclei"):
        load_model("no-such-model")


def test_init_remakes_only_the_class_heads_when_the_classes_differ():
    model, config, remade = init_model("nuclei", ["a", "b", "c", "d"], detections_per_img=300)
    assert remade and config.num_classes == 5 and config.detections_per_img == 300
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    kept, _ = load_model("nuclei")
    theirs, ours = kept.state_dict(), model.state_dict()
    for name, value in ours.items():
        if name.startswith(CLASS_SPECIFIC):
            assert value.shape != theirs[name].shape
        else:
            assert torch.equal(value, theirs[name]), name


def test_four_class_heads_start_from_the_source_and_find_its_cells():
    """1 -> 4 classes: the first forward finds nuclei's cells, each class with the same boxes and
    masks, its score split four ways (background vs cell unchanged)."""
    source, _ = load_model("nuclei")
    model, config, remade = init_model("nuclei", ["class1", "class2", "class3", "class4"])
    assert remade and config.class_names == ["class1", "class2", "class3", "class4"]
    image = read_image(SAMPLE_DATASET / "val" / sorted(p.name for p in (SAMPLE_DATASET / "val").iterdir())[0]
                       / "image.tif")[:128, :128, :3]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
    theirs, ours = source.detect([x])[0], model.eval().detect([x])[0]
    found = theirs["scores"] >= 4 * config.box_score_thresh  # a quarter of these still passes the floor
    assert found.sum() >= 1
    for k in range(1, 5):
        mine = ours["labels"] == k
        torch.testing.assert_close(ours["boxes"][mine], theirs["boxes"][found], atol=1e-3, rtol=0)
        torch.testing.assert_close(ours["masks"][mine], theirs["masks"][found], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours["scores"][mine] * 4, theirs["scores"][found], atol=1e-5, rtol=0)


def test_init_keeps_a_class_of_the_same_name(tmp_path):
    cfg = ModelConfig(arch="resnet18", class_names=["nucleus", "mitosis"])
    source = build_model(cfg)
    path = save_checkpoint(tmp_path / "source.pt", source, cfg)
    model, config, remade = init_model(path, ["mitosis", "debris"])
    assert remade and config.class_names == ["mitosis", "debris"]
    theirs, ours = source.state_dict(), model.state_dict()
    key = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert torch.equal(ours[key][1], theirs[key][2])  # mitosis is mitosis
    assert torch.allclose(ours[key][2], theirs[key][1:].mean(0))  # a new class: the mean of the source's
    assert torch.equal(ours[key][0], theirs[key][0])  # background kept
    boxes = "roi_heads.box_predictor.bbox_pred.weight"
    assert torch.equal(ours[boxes][4:8], theirs[boxes][8:12])  # 4 box coordinates per class


def test_init_with_the_same_classes_keeps_everything(tmp_path):
    cfg = ModelConfig(arch="resnet18", class_names=["x", "y"], detections_per_img=321, roi_samples=64)
    source = build_model(cfg)
    path = save_checkpoint(tmp_path / "run.pt", source, cfg)
    model, config, remade = init_model(path, ["class1", "class2"], detections_per_img=None)
    assert not remade and config.class_names == ["x", "y"]  # a dataset's default names give way
    assert (config.detections_per_img, config.roi_samples) == (321, 64)  # None keeps the source's
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    _, config, remade = init_model(path, ["class1"])  # corrections that lack class 2 keep it
    assert not remade and config.class_names == ["x", "y"]


def _four_class_dataset(tiny_dataset: Path) -> Path:
    """The tiny dataset with classes 3 and 4 as well (HW3 has four)."""
    train = tiny_dataset / "train"
    shutil.move(train / "sample_1" / "class1.tif", train / "sample_1" / "class3.tif")
    shutil.move(train / "sample_3" / "class2.tif", train / "sample_3" / "class4.tif")
    return tiny_dataset


def test_fine_tuning_nuclei_on_four_classes(tiny_dataset, tmp_path, one_thread):
    data = _four_class_dataset(tiny_dataset)
    cfg = TrainConfig(dataset=str(data), out_dir=str(tmp_path / "run"), init="nuclei", epochs=1, max_steps=2,
                      batch_size=1, crop_size=64, val_limit=1, device="cpu", amp=False)
    events = list(train(cfg))
    assert any(isinstance(e, InfoEvent) and "re-made for 4 classes" in e.message for e in events)
    done = events[-1]
    assert isinstance(done, DoneEvent) and not done.cancelled
    model, config = load_model(done.last)
    assert config.class_names == ["class1", "class2", "class3", "class4"] and config.arch == "resnet18"
    assert (config.detections_per_img, config.roi_samples) == (500, 128)  # nuclei's, no option given


def test_fine_tuning_nuclei_on_one_class_keeps_its_name(tiny_dataset, tmp_path, one_thread):
    for mask in (tiny_dataset / "train").glob("*/class2.tif"):
        mask.unlink()
    for mask in (tiny_dataset / "val").glob("*/class2.tif"):
        mask.unlink()
    cfg = TrainConfig(dataset=str(tiny_dataset), out_dir=str(tmp_path / "run"), init="nuclei", epochs=1, max_steps=1,
                      batch_size=1, crop_size=64, val_limit=1, device="cpu", amp=False,
                      detections_per_img=77)
    done = list(train(cfg))[-1]
    config = load_model(done.model)[1]
    assert config.class_names == ["nucleus"] and config.detections_per_img == 77 and config.roi_samples == 128


def test_init_and_resume_together_are_refused(tiny_dataset, tmp_path):
    cfg = TrainConfig(dataset=str(tiny_dataset), out_dir=str(tmp_path), init="nuclei", resume="last.pt")
    with pytest.raises(ValueError, match="either resume"):
        list(train(cfg))


def test_cli_models_lists_the_card(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nuclei") and "trained on: DSB2018" in out and "MB" in out


def test_cli_predict_with_the_builtin_model(tmp_path, one_thread):
    image = sorted((SAMPLE_DATASET / "test_release").iterdir())[0]
    assert main(["predict", "nuclei", str(image), "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [f"{image.stem}_nucleus.tif"]


def test_demo_segments_the_samples_with_the_builtin_model(tmp_path, capsys, one_thread):
    """The README's first command: no training, a submission and an AP50 on unseen sample images."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "with the built-in model 'nuclei' (no training)" in text and "AP all classes" in text
    ap50 = float(text.split("(never trained on): ")[1].split()[0])
    assert 0.0 <= ap50 <= 1.0
    assert (out / "test-results.json").is_file() and (out / "val-results.json").is_file()
    overlay = out / "overlay.png"
    assert f"(outlines on the image): {overlay}" in text
    from PIL import Image

    picture = np.asarray(Image.open(overlay))
    assert picture.ndim == 3 and (picture == [255, 255, 0]).all(axis=2).any()  # outlines drawn


def test_evaluate_class_agnostic_merges_the_classes(tmp_path, capsys, one_thread):
    out = tmp_path / "val.json"
    assert main(["export", "nuclei", str(SAMPLE_DATASET / "val"), "--out", str(out), "--device", "cpu",
                 "--score-thresh", "0.05"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), str(SAMPLE_DATASET / "val"), "--class-agnostic"]) == 0
    merged = capsys.readouterr().out
    assert "AP all classes" in merged and "AP class2" not in merged


# ------------------------------------------------------------ the shipped file and its digest (issue 21)


def test_every_shipped_model_matches_its_recorded_digest():
    """(4) The shipped model had no digest. After replacing a weights file, record its digest with
    ``python scripts/pack_model.py --digest-only napari_cellseg/weights/<name>.pt``."""
    from napari_cellseg.model.pretrained import file_digest, recorded_digest

    for model in builtin_models().values():
        assert recorded_digest(model.path) == file_digest(model.path), model.path


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    """A copy of the package's weights folder that a test may damage."""
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, folder)
    monkeypatch.setattr("napari_cellseg.model.pretrained.WEIGHTS_DIR", folder)
    return folder


def test_a_changed_builtin_file_is_refused(weights_dir):
    """(4) A built-in file with other bytes than were packed must not pass as the model."""
    path = weights_dir / "nuclei.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="built-in model 'nuclei' .* does not match its recorded digest"):
        load_model("nuclei")
    (weights_dir / "nuclei.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="no recorded digest"):
        load_model("nuclei")


def test_one_bad_entry_in_weights_does_not_hide_the_others(weights_dir, capsys):
    """(7) Junk, a folder named x.pt or a link stopped the whole listing and hid nuclei."""
    (weights_dir / "junk.pt").write_bytes(b"junk")
    (weights_dir / "x.pt").mkdir()
    (weights_dir / "link.pt").symlink_to(weights_dir / "nuclei.pt")
    assert sorted(builtin_models()) == ["junk", "nuclei"]
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "junk  (unusable: " in out and "\nnuclei  (" in out and "trained on: DSB2018" in out


def _card_model(weights_dir: Path, card) -> None:
    from napari_cellseg.model.checkpoint import FORMAT
    from napari_cellseg.model.pretrained import write_digest

    path = weights_dir / "odd.pt"
    torch.save({"format": FORMAT, "config": {}, "model": {}, "card": card}, path)
    write_digest(path)


@pytest.mark.parametrize("card", [
    {"metrics": {"val": {"AP50": 0.5}}},  # no AP
    {"classes": [1, 2]},  # int class names
    {"metrics": [["val", 0.5]]},  # metrics as a list
    {"metrics": {"val": {"AP50": "0.9", "AP": 0.1}}},  # AP50 as a string
    {"arch": ["resnet18"], "description": 7, "classes": "nucleus"},
    "not a card",
])
def test_models_lists_a_card_of_any_shape(weights_dir, capsys, card):
    """(6) The card's types were trusted: KeyError/TypeError/AttributeError."""
    _card_model(weights_dir, card)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "\nodd  (" in out and "nuclei  (" in out
    assert "AP50 0.900" not in out  # a figure given as text is not shown as measured


def test_models_prints_card_text_escaped(weights_dir, capsys):
    """(12) Card text reached the terminal raw: ANSI escapes, carriage returns, bidi overrides."""
    _card_model(weights_dir, {"description": "ok\x1b[2J\rfake\u202e", "classes": ["a\x1b[31m"],
                              "metrics": {"\x1b[1mval": {"AP50": 0.5, "AP": 0.25}}})
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "ok\\u001b[2J\\u000dfake\\u202e" in out and "AP50 0.500  AP 0.250" in out
