"""The command line end to end on a tiny dataset, and its one-line errors."""

import json
import subprocess
import sys

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from napari_cellseg.cli import main
from napari_cellseg.data import find_samples
from napari_cellseg.pipeline import samples_ground_truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """A light model trained for 2 steps through the CLI (shared by the tests below)."""
    root = request.getfixturevalue("tiny_dataset_module")
    out = tmp_path_factory.mktemp("run")
    code = main(["train", str(root), "--out", str(out), "--arch", "resnet18", "--epochs", "1",
                 "--max-steps", "2", "--crop-size", "64", "--val-limit", "1", "--device", "cpu", "--lr", "1e-3"])
    assert code == 0
    return root, out / "last.pt"


@pytest.mark.parametrize("extra", [[], ["--flip-tta"], ["--scale", "1.5"], ["--diameter", "30"]])
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


@pytest.mark.parametrize("args, message", [(["--scale", "big"], "expected 'auto' or a number"),
                                           (["--scale", "0"], "positive number"),
                                           (["--diameter", "0"], "between 1 and 2000 pixels")])
def test_bad_scale_and_diameter_are_refused_by_the_parser(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "nuclei", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cells_lost_to_the_detection_cap_are_one_warning_line(monkeypatch, capsys):
    import warnings

    from napari_cellseg import cli_commands
    from napari_cellseg.errors import DetectionCapWarning

    def lossy(args) -> int:
        for _ in range(2):  # two images, the same message: both are said
            warnings.warn(DetectionCapWarning("1 of 4 tile(s) hit the limit of 500 detections"), stacklevel=1)
        return 0

    monkeypatch.setattr(cli_commands, "models", lossy)
    assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["napari-cellseg: warning: 1 of 4 tile(s) hit the limit of 500 detections"] * 2
