"""Evaluation by file name: one function for the CLI, the GUI and validation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_cellseg.evaluation import evaluate
from napari_cellseg.cli.main import main
from napari_cellseg.io.coco import labels_to_results, write_json
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.errors import DatasetError


def perfect_results(samples, ids=None) -> list[dict]:
    """The ground truth of ``samples`` as results, numbered 1..n (or by ``ids``)."""
    results = []
    for n, sample in enumerate(samples, start=1):
        for k, labels in read_sample(sample)[1].items():
            results += labels_to_results({k: labels}, (ids or {}).get(sample.name, n), {})
    return results


def test_results_are_matched_by_name_not_by_number(tiny_dataset):
    samples = find_samples(tiny_dataset / "val")
    truth = evaluate.samples_truth(samples)
    reversed_ids = {"val_0": 2, "val_1": 1}  # numbered the other way round: the names still match
    results = perfect_results(samples, reversed_ids)
    metrics = evaluate.evaluate(results, {2: "val_0", 1: "val_1.tif"}, truth)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["num_images"] == 2
    with pytest.raises(DatasetError, match=r"^test_0.tif, test_1.tif \(2 of the 2 images of the results\) not in"):
        evaluate.evaluate(results, {1: "test_0.tif", 2: "test_1.tif"}, truth)
    with pytest.raises(DatasetError, match="image id 1, which is not one of"):
        evaluate.evaluate(results, {2: "val_0"}, truth)


def test_a_test_submission_is_refused_against_val(tiny_dataset, tmp_path, capsys):
    test_results = tmp_path / "test-results.json"
    write_json(test_results, perfect_results(find_samples(tiny_dataset / "val")))  # ids 1, 2 like the test images
    mapping = tiny_dataset / "test_image_name_to_ids.json"
    assert main(["evaluate", str(test_results), str(tiny_dataset / "val"), "--mapping", str(mapping)]) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("napari-cellseg: error: test_0.tif, test_1.tif") and "\n" not in message
    assert "val" in message and "other images" in message

    entries = json.loads(mapping.read_text())  # test images of another size: the sizes give it away
    for entry in entries:
        entry["height"], entry["width"] = 32, 40
    mapping.write_text(json.dumps(entries))
    small = [labels_to_results({1: np.pad(np.ones((4, 4), np.int32), ((0, 28), (0, 36)))}, i, {}) for i in (1, 2)]
    write_json(test_results, small[0] + small[1])
    assert main(["evaluate", str(test_results), str(tiny_dataset / "val")]) == 1
    message = capsys.readouterr().err
    assert "numbered like the test images of test_image_name_to_ids.json" in message and "test_0.tif" in message


def test_a_missing_highest_class_and_absent_classes(tiny_dataset, tmp_path, capsys):
    val = tiny_dataset / "val"
    samples = find_samples(val)
    results = perfect_results(samples)
    extra = np.zeros((64, 80), np.int32)
    extra[0:4, 0:4] = 1
    results += labels_to_results({3: extra}, 1, {1: 0.2})  # a class-3 cell: val has no class3.tif
    path = tmp_path / "results.json"
    write_json(path, results)
    assert main(["evaluate", str(path), str(val)]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[1] for line in out.splitlines() if line.strip().startswith("AP class")]
    assert rows == ["class1", "class2", "class3"] and "n/a (no ground truth)" in out

    for sample in (val / "val_0", val / "val_1"):  # class 2 nowhere in the truth nor the results
        (sample / "class2.tif").unlink(missing_ok=True)
    write_json(path, [r for r in results if r["category_id"] == 1])
    assert main(["evaluate", str(path), str(val)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if "AP class" in line]
    assert rows == [["AP", "class1", "1.0000"]]


def test_a_stray_class_file_is_refused_in_one_line(tiny_dataset, tmp_path, capsys):
    val = tiny_dataset / "val"
    shutil.copy(val / "val_0" / "class1.tif", val / "val_0" / "class20000.tif")
    path = tmp_path / "results.json"
    write_json(path, perfect_results(find_samples(val)))
    assert main(["evaluate", str(path), str(val)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "class20000.tif: class 20000 is not a class number" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_name_key():
    assert {evaluate.name_key(n) for n in ("test_0.tif", "test_0", "a/b/test_0.TIF", "test_0.tiff")} == {"test_0"}
    assert evaluate.name_key("c9a4.d2") == "c9a4.d2"  # a dot in a sample name is not a suffix


def test_validation_scores_through_the_same_function(tiny_dataset, monkeypatch):
    from napari_cellseg.inference import pipeline

    samples = find_samples(tiny_dataset / "val")
    order = [read_sample(s)[1] for s in samples]  # a "model" that returns the truth, image by image
    monkeypatch.setattr(pipeline, "segment_image", lambda model, image, **kwargs: (order.pop(0), {}))
    called = []
    real = evaluate.evaluate
    monkeypatch.setattr(pipeline, "evaluate_by_name", lambda *a, **k: called.append(a[1]) or real(*a, **k))
    metrics = pipeline.validate(None, samples, ["class1", "class2"])
    assert called == [{1: "val_0", 2: "val_1"}] and metrics["AP"] == pytest.approx(1.0)
