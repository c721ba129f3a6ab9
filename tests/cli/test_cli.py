"""The command line end to end on a tiny dataset, and its one-line errors."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import save_untrained
from napari_cellseg.cli.main import main
from napari_cellseg.io.samples import find_samples
from napari_cellseg.inference.pipeline import samples_ground_truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """A light model trained for 2 steps through the CLI (shared by the tests below)."""
    root = request.getfixturevalue("tiny_dataset_module")
    out = tmp_path_factory.mktemp("run")
    code = main(["train", str(root), "--out", str(out), "--arch", "resnet18", "--epochs", "1",
                 "--max-steps", "2", "--crop-size", "64", "--val-limit", "1", "--device", "cpu", "--lr", "1e-3"])
    assert code == 0
    return root, out / "last.pt"


@pytest.mark.parametrize("extra", [[], ["--tta"], ["--scale", "1.5"], ["--diameter", "30"]])
def test_export_writes_the_exact_submission_format(trained, tmp_path, extra):
    root, ckpt = trained
    out = tmp_path / "test-results.json"
    args = ["export", str(ckpt), str(root), "--out", str(out), "--score-thresh", "0.0", "--device", "cpu", *extra]
    assert main(args) == 0
    results = json.loads(out.read_text())
    mapping = {e["file_name"]: e for e in json.loads((root / "test_image_name_to_ids.json").read_text())}
    assert {r["image_id"] for r in results} <= {e["id"] for e in mapping.values()}
    for r in results:
        assert list(r) == ["image_id", "bbox", "score", "category_id", "segmentation"]
        assert r["segmentation"]["size"] == [64, 80] and isinstance(r["segmentation"]["counts"], str)
        assert len(r["bbox"]) == 4 and 0.0 <= r["score"] <= 1.0 and r["category_id"] in (1, 2)
    assert not list(tmp_path.glob("*.partial.jsonl"))


def test_end_to_end_val_results_load_and_evaluate_with_pycocotools(trained, tmp_path, capsys):
    root, ckpt = trained
    out = tmp_path / "val.json"
    assert main(["export", str(ckpt), str(root / "val"), "--out", str(out), "--score-thresh", "0.0",
                 "--device", "cpu"]) == 0
    gt = COCO()
    gt.dataset = samples_ground_truth(find_samples(root / "val"), ["class1", "class2"])
    gt.createIndex()
    results = json.loads(out.read_text())
    if results:
        ev = COCOeval(gt, gt.loadRes(results), "segm")
        ev.evaluate(), ev.accumulate()
    capsys.readouterr()
    assert main(["evaluate", str(out), str(root / "val")]) == 0
    report = capsys.readouterr().out
    assert "AP50" in report and "standard cap" in report
    assert "TP/(TP+FP+FN) @IoU 0.5, score >= 0.5" in report and "PQ class1" in report


def test_predict_writes_a_label_image_per_class(trained, tmp_path):
    root, ckpt = trained
    assert main(["predict", str(ckpt), str(root / "test_release"), "--out", str(tmp_path), "--device", "cpu"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.tif"))
    assert names == ["test_0_class1.tif", "test_0_class2.tif", "test_1_class1.tif", "test_1_class2.tif"]


def test_predict_takes_a_folder_of_png_and_jpeg_images(trained, tmp_path):
    from PIL import Image

    from napari_cellseg.io.images import read_image

    root, ckpt = trained
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, name in enumerate(["a.png", "b.jpg", "c.JPEG"]):
        Image.fromarray(read_image(root / "test_release" / f"test_{i % 2}.tif")).save(pictures / name)
    (pictures / "notes.txt").write_text("not an image")
    out = tmp_path / "labels"
    assert main(["predict", str(ckpt), str(pictures), "--out", str(out), "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == [f"{stem}_class{k}.tif" for stem in "abc" for k in (1, 2)]
    results = tmp_path / "results.json"
    assert main(["export", str(ckpt), str(pictures), "--out", str(results), "--device", "cpu"]) == 0
    entries = json.loads(Path(f"{results}.images.json").read_text())
    assert [(e["file_name"], e["id"]) for e in entries] == [("a.png", 1), ("b.jpg", 2), ("c.JPEG", 3)]


def test_help_shows_every_default(monkeypatch, capsys):
    """Each option with a default says it in --help (a CPU user sees resnet50_v2 and 512 px before training)."""
    from napari_cellseg.cli.main import build_parser

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no default cut by wrapping
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                said = f"(default: {action.default})" in text or "default:" in (action.help or "")
                assert said, f"{name} {action.option_strings[0]} does not show its default"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "(default: resnet50_v2)" in out and "(default: 512)" in out and "(default: 50)" in out


def test_predict_streams_large_images_tile_by_tile(trained, tmp_path, monkeypatch, capsys):
    """Above ``streaming.STREAM_ABOVE`` pixels the labels are written tile by tile (uint32 TIFFs)."""
    root, ckpt = trained
    monkeypatch.setattr("napari_cellseg.inference.streaming.STREAM_ABOVE", 100)
    assert main(["predict", str(ckpt), str(root / "test_release"), "--out", str(tmp_path), "--device", "cpu",
                 "--tile-size", "48"]) == 0
    labels = tifffile.imread(tmp_path / "test_0_class1.tif")
    assert labels.dtype == np.uint32 and labels.shape == (64, 80)
    assert "tiles" in capsys.readouterr().err  # the per-tile bar


def test_bad_input_is_one_line_and_non_zero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "napari_cellseg", "train", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "o"), "--arch", "resnet18"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("napari-cellseg: error:") and "missing" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--epochs", "-1"], ["--batch-size", "0"]])
def test_bad_numbers_are_refused_by_the_parser(tmp_path, args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none.pt"), str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and len(err.strip().splitlines()) == 1


def test_predict_formats_hold_the_cells_of_the_label_images(tmp_path):
    """--format labels,imagej,geojson,csv: the same cells, by id and class, in every file."""
    import csv

    import numpy as np
    import roifile
    import tifffile

    save_untrained(tmp_path / "m.pt", class_names=["a", "b"], box_score_thresh=0.0, detections_per_img=10)
    tifffile.imwrite(tmp_path / "img.tif", np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "img.tif"), "--out", str(out), "--score-thresh",
                 "0", "--mask-thresh", "0.3", "--device", "cpu", "--format", "labels,imagej,geojson,csv"]) == 0
    truth = {(name, int(i)) for name in ("a", "b") for i in np.unique(tifffile.imread(out / f"img_{name}.tif")) if i}
    assert truth, "the random model should find something at score 0"
    rows = list(csv.DictReader(open(out / "img_cells.csv", encoding="utf-8")))
    assert {(r["class"], int(r["id"])) for r in rows} == truth and len(rows) == len(truth)
    features = json.loads((out / "img_cells.geojson").read_text())["features"]
    props = [f["properties"] for f in features]
    assert {(p["classification"]["name"], p["measurements"]["id"]) for p in props} == truth
    assert {r.name for r in roifile.roiread(out / "img_cells.zip")} == {f"{k}-{i}" for k, i in truth}


def test_predict_refuses_an_unknown_format(tmp_path, capsys):
    assert pytest.raises(SystemExit, main, ["predict", "x.pt", str(tmp_path), "--out", str(tmp_path),
                                            "--format", "labels,png"]).value.code == 2
    assert "unknown output format png" in capsys.readouterr().err


def test_init_keeps_the_source_settings_unless_an_option_is_given(tmp_path):
    """``--detections`` and ``--roi-samples`` default to the --init model's (None here), so only an
    option the user typed changes them."""
    from napari_cellseg.cli.main import build_parser
    from napari_cellseg.cli.commands import train_config

    base = ["train", str(tmp_path), "--out", str(tmp_path / "o"), "--init", "nuclei"]
    cfg = train_config(build_parser().parse_args(base))
    assert cfg.detections_per_img is None and cfg.roi_samples is None
    cfg = train_config(build_parser().parse_args([*base, "--detections", "50", "--roi-samples", "64"]))
    assert (cfg.detections_per_img, cfg.roi_samples) == (50, 64)
    assert cfg.zoom is None
    assert train_config(build_parser().parse_args([*base, "--zoom", "1", "3"])).zoom == [1.0, 3.0]
    assert cfg.mosaic == 0.0 and train_config(build_parser().parse_args([*base, "--mosaic", "0.5"])).mosaic == 0.5


def test_train_says_which_checkpoint_to_use(trained, capsys, tmp_path):
    root, _ = trained
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--arch", "resnet18", "--epochs", "1",
                 "--max-steps", "1", "--crop-size", "64", "--val-limit", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "best validation AP" in out and f"model to use: {tmp_path / 'run' / 'best.pt'}" in out


@pytest.mark.parametrize("args, message", [(["--scale", "big"], "expected 'auto' or a number"),
                                           (["--scale", "0"], "positive number"),
                                           (["--diameter", "0"], "between 1 and 2000 pixels")])
def test_bad_scale_and_diameter_are_refused_by_the_parser(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "nuclei", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cells_lost_to_the_detection_cap_are_one_warning_line(monkeypatch, capsys):
    import warnings

    from napari_cellseg.cli import model_commands
    from napari_cellseg.errors import DetectionCapWarning

    def lossy(args) -> int:
        for _ in range(2):  # two images, the same message: both are said
            warnings.warn(DetectionCapWarning("1 of 4 tile(s) hit the limit of 500 detections"), stacklevel=1)
        return 0

    monkeypatch.setattr(model_commands, "models", lossy)
    assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["napari-cellseg: warning: 1 of 4 tile(s) hit the limit of 500 detections"] * 2


def test_tune_writes_a_copy_at_the_best_cut_and_label_images_start_there(trained, tmp_path, capsys):
    """``tune`` keeps the input, writes the chosen cut into a copy; predict's default confidence is the
    copy's (the same labels as asking for that cut), export's stays 0.5 (COCO AP ranks every detection)."""
    from napari_cellseg.inference.tuning import CUTS
    from napari_cellseg.model.checkpoint import load_model, save_with_config

    root, ckpt = trained
    before = ckpt.read_bytes()
    out = tmp_path / "tuned.pt"
    assert main(["tune", str(ckpt), str(root), "--out", str(out), "--device", "cpu", "--scale", "1"]) == 0
    text = capsys.readouterr().out
    cut = load_model(out)[1].score_thresh
    assert cut in CUTS and f"chosen confidence {cut:.2f} on 2 image(s)" in text and "TP/(TP+FP+FN)" in text
    assert ckpt.read_bytes() == before

    # random heads that detect (0.54-0.64 here; the 2-step model finds nothing yet)
    ckpt = save_untrained(tmp_path / "random.pt", detections_per_img=20)
    mid = save_with_config(ckpt, tmp_path / "mid.pt", score_thresh=0.58)
    image = root / "test_release" / "test_0.tif"

    def cells(model, *extra) -> int:
        folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        assert main(["predict", str(model), str(image), "--out", str(folder), "--device", "cpu", "--scale", "1",
                     *extra]) == 0
        return sum(len(np.unique(tifffile.imread(f))) - 1 for f in folder.glob("*.tif"))

    assert 0 < cells(mid) == cells(ckpt, "--score-thresh", "0.58") < cells(ckpt)  # untuned: 0.5
    assert cells(mid, "--score-thresh", "0.5") == cells(ckpt)  # an explicit value wins

    results = tmp_path / "results.json"
    assert main(["export", str(mid), str(root), "--out", str(results), "--device", "cpu", "--scale", "1"]) == 0
    scores = [r["score"] for r in json.loads(results.read_text())]
    assert min(scores) >= 0.5 and min(scores) < 0.58  # export keeps its own 0.5


def test_tune_without_ground_truth_is_one_line(trained, tmp_path, capsys):
    root, ckpt = trained
    assert main(["tune", str(ckpt), str(root / "test_release"), "--out", str(tmp_path / "t.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("napari-cellseg: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.pt").exists()
