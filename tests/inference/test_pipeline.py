import json

import numpy as np
import pytest

from napari_cellseg.inference import pipeline
from napari_cellseg.io.samples import find_samples
from napari_cellseg.errors import DatasetError
from conftest import untrained_model


@pytest.fixture(scope="module")
def model():
    return untrained_model(box_score_thresh=0.0)


def test_segment_image_gives_every_class_and_scores(model):
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    labels, scores = pipeline.segment_image(model, image, score_thresh=0.0, mask_thresh=0.5)
    assert sorted(labels) == [1, 2]
    ids = set(np.unique(np.concatenate([lab.ravel() for lab in labels.values()]))) - {0}
    assert ids <= set(scores)


def test_export_items_of_a_hw3_root_use_the_mapping(tiny_dataset):
    items = pipeline.export_items(tiny_dataset)
    assert [(i.image_id, i.name, i.shape) for i in items] == [(1, "test_0.tif", (64, 80)), (2, "test_1.tif", (64, 80))]


def test_export_items_of_a_sample_folder_number_samples(tiny_dataset):
    items = pipeline.export_items(tiny_dataset / "val")
    assert [(i.image_id, i.name) for i in items] == [(1, "val_0"), (2, "val_1")]
    gt = pipeline.samples_ground_truth(find_samples(tiny_dataset / "val"), ["class1", "class2"])
    assert [(im["id"], im["file_name"]) for im in gt["images"]] == [(1, "val_0"), (2, "val_1")]


def test_image_missing_from_the_mapping_is_named(tiny_dataset):
    mapping = tiny_dataset / "test_image_name_to_ids.json"
    entries = json.loads(mapping.read_text())
    mapping.write_text(json.dumps(entries[:1]))
    with pytest.raises(DatasetError, match="test_1.tif"):
        pipeline.export_items(tiny_dataset)


def test_export_resumes_without_redoing_finished_images(tiny_dataset, tmp_path, model, monkeypatch):
    items = pipeline.export_items(tiny_dataset)
    out = tmp_path / "results.json"
    events = pipeline.iter_export(model, items, out, score_thresh=0.0)
    assert next(events)[0] == 1
    events.close()  # interrupted after the first image
    assert not out.exists() and (tmp_path / "results.json.partial.jsonl").exists()
    segmented = []
    real = pipeline.segment_image
    monkeypatch.setattr(pipeline, "segment_image", lambda m, image, **kw: segmented.append(1) or real(m, image, **kw))
    assert [n for n, _, _ in pipeline.iter_export(model, items, out, score_thresh=0.0)] == [1, 2]
    assert len(segmented) == 1
    assert isinstance(json.loads(out.read_text()), list)
    assert not (tmp_path / "results.json.partial.jsonl").exists()


def test_resumed_export_after_a_torn_line_equals_an_uninterrupted_one(tiny_dataset, tmp_path, model):
    """Killed mid-write, the partial file ends in half a line; it is cut off, the image is redone,
    and the submission streamed from the partial file is byte for byte the uninterrupted one."""
    items = pipeline.export_items(tiny_dataset)
    whole = tmp_path / "whole.json"
    assert list(pipeline.iter_export(model, items, whole, score_thresh=0.0, resume=False))
    out = tmp_path / "results.json"
    events = pipeline.iter_export(model, items, out, score_thresh=0.0)
    next(events)
    events.close()
    partial = tmp_path / "results.json.partial.jsonl"
    with open(partial, "ab") as f:
        f.write(b'{"name":"test_1.tif","results":[{"image_id":2,"bb')
    events = pipeline.iter_export(model, items, out, score_thresh=0.0)
    assert [n for n, _, _ in events] == [1, 2]
    assert out.read_bytes() == whole.read_bytes()
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {1, 2}


def test_interrupted_export_keeps_the_previous_submission(tiny_dataset, tmp_path, model):
    out = tmp_path / "results.json"
    out.write_text("[]")
    events = pipeline.iter_export(model, pipeline.export_items(tiny_dataset), out, resume=False)
    next(events)
    events.close()
    assert out.read_text() == "[]"


def test_mapping_size_mismatch_is_reported(tiny_dataset, tmp_path, model):
    mapping = tiny_dataset / "test_image_name_to_ids.json"
    entries = json.loads(mapping.read_text())
    entries[0]["height"] = 99
    mapping.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match="mapping file says 99x80"):
        list(pipeline.iter_export(model, pipeline.export_items(tiny_dataset), tmp_path / "r.json"))
