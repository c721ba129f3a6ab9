"""``napari_cellseg.segment``: one call, one result object; the package import stays cheap."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import untrained_model

import napari_cellseg
from napari_cellseg.sample_data import SAMPLE_DATASET


def test_import_is_cheap_even_with_segment():
    code = ("import sys, napari_cellseg; assert 'torch' not in sys.modules, 'torch at import'; "
            "from napari_cellseg import segment; assert 'torch' not in sys.modules, 'torch before a call'; "
            "print(segment.__module__, napari_cellseg.Segmentation.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["napari_cellseg.api", "Segmentation"]
    with pytest.raises(AttributeError):
        napari_cellseg.no_such_thing  # noqa: B018


@pytest.fixture(scope="module")
def tiny():
    return untrained_model(class_names=["a", "b"], box_score_thresh=0.0, detections_per_img=10)


def test_builtin_model_on_a_sample_image(one_thread):
    from napari_cellseg.io.images import read_image

    path = sorted((SAMPLE_DATASET / "val").iterdir())[0] / "image.tif"
    result = napari_cellseg.segment(read_image(path), device="cpu")
    ids = set(np.unique(result.labels[result.labels > 0]).tolist())
    assert result.labels.shape == read_image(path).shape[:2] and len(ids) > 5
    assert set(result.classes) == ids == set(result.scores) and set(result.classes.values()) == {"nucleus"}
    table = result.table()
    assert [row["id"] for row in table] == sorted(ids)
    assert all(row["area"] == (result.labels == row["id"]).sum() for row in table)
    assert min(result.scores.values()) >= 0.5  # the default confidence


def test_a_stack_with_a_loaded_model_writes_like_predict(tiny, tmp_path):
    movie = np.random.default_rng(1).integers(0, 255, (3, 40, 48), dtype=np.uint8)  # reads as colour unless told
    result = napari_cellseg.segment(movie, tiny, score_thresh=0.0, mask_thresh=0.3, class_names=["x", "y"],
                                    stack=True)
    assert result.labels.shape == (3, 40, 48) and result.class_labels[1].shape == (3, 40, 48)
    merged = sum(result.class_labels.values())
    assert np.array_equal(result.labels, merged)
    table = result.table()
    assert {(row["plane"], row["id"]) for row in table} == {
        (p, int(i)) for p in range(3) for i in np.unique(result.labels[p]) if i}
    paths = result.write(tmp_path, "movie", ("labels", "csv"))
    assert sorted(p.name for p in paths) == ["movie_cells.csv", "movie_x.tif", "movie_y.tif"]


def test_colour_and_channel_first_images_are_one_plane(tiny):
    rgb = np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    assert napari_cellseg.segment(np.stack([rgb[..., 0]] * 5), tiny).labels.shape == (5, 40, 48)
    assert napari_cellseg.segment(rgb, tiny).labels.shape == (40, 48)
    assert napari_cellseg.segment(np.moveaxis(rgb, 2, 0), tiny).labels.shape == (40, 48)
    with pytest.raises(ValueError, match="2 classes but 1 class names"):
        napari_cellseg.segment(rgb, tiny, class_names=["only"])


def test_the_public_api_trains_loads_segments_and_evaluates(tiny_dataset, tmp_path, one_thread):
    """The notebook path end to end, through the package's own names only: ``train`` hands on a
    checkpoint, ``load_model`` loads it, ``segment`` takes what it returned, ``evaluate`` scores an
    exported results file the way ``napari-cellseg evaluate`` does."""
    import json

    from napari_cellseg.io.coco import labels_to_results
    from napari_cellseg.io.images import read_image

    events = []
    done = napari_cellseg.train(tiny_dataset, tmp_path / "run", progress=events.append, arch="resnet18", epochs=1,
                                batch_size=2, crop_size=64, warmup_steps=1, val_limit=1, device="cpu")
    assert isinstance(done, napari_cellseg.DoneEvent) and done.model.is_file() and events[-1] is done
    assert any(type(e).__name__ == "StepEvent" for e in events)
    model = napari_cellseg.load_model(done.model, device="cpu")
    assert model[1].class_names == ["class1", "class2"]
    val = sorted((tiny_dataset / "val").iterdir())
    rows = []
    for image_id, sample in enumerate(val, start=1):
        result = napari_cellseg.segment(read_image(sample / "image.tif"), model=model, score_thresh=0.0)
        assert result.class_names == ["class1", "class2"] and result.labels.shape == (64, 80)
        rows += labels_to_results(result.class_labels, image_id, result.scores)
    (tmp_path / "results.json").write_text(json.dumps(rows))
    metrics = napari_cellseg.evaluate(tmp_path / "results.json", tiny_dataset / "val")
    assert 0.0 <= metrics["AP50"] <= 1.0 and "matching" in metrics
    with pytest.raises(TypeError):
        napari_cellseg.train(tiny_dataset, tmp_path / "bad", no_such_option=1)
