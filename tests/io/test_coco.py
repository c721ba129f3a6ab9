"""Tests for napari_cellseg.io.coco: RLE exactness against pycocotools, round trips, file checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from napari_cellseg.io import coco
from napari_cellseg.io.rle import decode_mask, encode_mask
from napari_cellseg.errors import DatasetError
from conftest import DSB2018

MAPPING = DSB2018 / "test_image_name_to_ids.json"

small_shapes = st.tuples(st.integers(1, 9), st.integers(1, 9))


def reference_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def consecutive(images: list[np.ndarray]) -> list[np.ndarray]:
    """Make instance ids unique across class images and consecutive from 1, in class order."""
    out, next_id = [], 1
    for image in images:
        relabelled = np.zeros_like(image)
        for old in np.unique(image[image > 0]):
            relabelled[image == old] = next_id
            next_id += 1
        out.append(relabelled)
    return out


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """Column-major run lengths, background first (pycocotools' uncompressed layout)."""
    counts, current, length = [], False, 0
    for value in mask.T.ravel():
        if value != current:
            counts.append(length)
            current, length = value, 0
        length += 1
    return counts + [length]


# ---------------------------------------------------------------- RLE


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.bool_, small_shapes))
def test_encode_mask_is_byte_identical_to_pycocotools(mask: np.ndarray) -> None:
    assert encode_mask(mask) == reference_rle(mask)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.bool_, small_shapes))
def test_decode_mask_accepts_str_bytes_and_uncompressed(mask: np.ndarray) -> None:
    rle = reference_rle(mask)
    uncompressed = {"size": list(mask.shape), "counts": uncompressed_counts(mask)}
    for form in (rle, {**rle, "counts": rle["counts"].encode()}, uncompressed):
        decoded = decode_mask(form)
        assert decoded.dtype == bool and decoded.shape == mask.shape
        np.testing.assert_array_equal(decoded, mask)


def test_encode_mask_accepts_0_1_integers() -> None:
    mask = np.array([[0, 1, 1], [1, 0, 1]], dtype=np.int64)
    assert encode_mask(mask) == reference_rle(mask.astype(bool))


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [2, 2], "counts": [1, 2]},  # covers 3 of 4 pixels
        {"size": [2, 2], "counts": [5, -1]},  # negative run
        {"size": [2, 2], "counts": "\x01\x02"},  # not the RLE alphabet
        {"size": [2, 2], "counts": "o"},  # ends while "more digits" is set
        {"size": [2], "counts": "4"},
        {"counts": "4"},
    ],
)
def test_decode_mask_rejects_damaged_rle(rle: dict) -> None:
    with pytest.raises(ValueError):
        decode_mask(rle)


# ---------------------------------------------------------------- labels <-> results


def test_labels_to_results_format_scores_and_boxes() -> None:
    labels = {1: np.zeros((6, 5), np.int32), 2: np.zeros((6, 5), np.int32)}
    labels[1][1:3, 2:5] = 4
    labels[1][5, 0] = 7  # one pixel in a corner
    labels[2][0:6, 1] = 9
    results = coco.labels_to_results(labels, image_id=3, scores={4: 0.25})
    assert [tuple(r) for r in results] == [("image_id", "bbox", "score", "category_id", "segmentation")] * 3
    assert [(r["category_id"], r["score"]) for r in results] == [(1, 0.25), (1, 1.0), (2, 1.0)]
    for result, (k, i) in zip(results, [(1, 4), (1, 7), (2, 9)]):
        mask = labels[k] == i
        assert result["image_id"] == 3
        assert result["segmentation"] == reference_rle(mask)
        assert result["bbox"] == mask_utils.toBbox(reference_rle(mask)).tolist()
        assert all(isinstance(v, float) for v in result["bbox"])
    assert results[0]["bbox"] == [2.0, 1.0, 3.0, 2.0]


def test_instance_running_over_a_column_boundary_is_one_run() -> None:
    """Bottom of one column and top of the next are adjacent in column-major order."""
    image = np.zeros((4, 3), np.int32)
    image[2:, 0] = 1
    image[:, 1] = 1
    image[:1, 2] = 1
    (result,) = coco.labels_to_results({1: image}, 1)
    assert result["segmentation"] == reference_rle(image == 1)
    assert result["bbox"] == [0.0, 0.0, 3.0, 4.0]


def test_labels_to_results_skips_missing_ids_and_empty_images() -> None:
    image = np.zeros((3, 3), np.uint16)
    image[0, 0], image[2, 2] = 2, 5
    results = coco.labels_to_results({1: image, 2: np.zeros((3, 3), np.int32)}, 1)
    expected = [reference_rle(image == 2), reference_rle(image == 5)]
    assert [r["segmentation"] for r in results] == expected


def label_image_lists(shape: tuple[int, int]) -> st.SearchStrategy[list[np.ndarray]]:
    """1 to 3 class images of one shape, ids 0..5: pieces, single pixels and borders abound."""
    image = hnp.arrays(np.int32, shape, elements=st.integers(0, 5))
    return st.lists(image, min_size=1, max_size=3)


label_images = small_shapes.flatmap(label_image_lists)


@settings(max_examples=150, deadline=None)
@given(label_images, st.booleans())
def test_labels_results_labels_is_the_identity(images: list[np.ndarray], reverse: bool) -> None:
    """Random label images: border-touching, one-pixel and many-piece instances all survive."""
    images = consecutive(images)
    labels = {k: image for k, image in enumerate(images, start=1)}
    n = int(max(image.max() for image in images))
    # Distinct scores, descending with the id, so the ids come back unchanged.
    scores = {i: 1.0 - i / 100 for i in range(1, n + 1)}
    results = coco.labels_to_results(labels, 5, scores)
    if reverse:
        results = results[::-1]
    assert len(results) == n
    back, back_scores = coco.results_to_labels(results, 5, images[0].shape)
    present = {k for k, image in labels.items() if image.any()}
    assert set(back) == present
    for k in present:
        assert back[k].dtype == np.int32
        np.testing.assert_array_equal(back[k], labels[k])
    assert back_scores == scores


def test_results_to_labels_orders_by_score_and_resolves_overlaps() -> None:
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[0:3, 0:3], b[1:4, 1:4] = True, True
    results = [
        {"image_id": 1, "score": 0.4, "category_id": 1, "segmentation": encode_mask(a)},
        {"image_id": 1, "score": 0.9, "category_id": 1, "segmentation": encode_mask(b)},
        {"image_id": 2, "score": 1.0, "category_id": 1, "segmentation": encode_mask(a)},
    ]
    labels, scores = coco.results_to_labels(results, 1, (4, 4))
    assert scores == {1: 0.9, 2: 0.4}
    expected = np.where(b, 1, np.where(a, 2, 0))
    np.testing.assert_array_equal(labels[1], expected)


def test_results_to_labels_threshold_keeps_the_class_image() -> None:
    mask = np.eye(3, dtype=bool)
    results = [
        {"image_id": 1, "score": 0.2, "category_id": 2, "segmentation": encode_mask(mask)},
        {"image_id": 1, "score": 0.8, "category_id": 1, "segmentation": encode_mask(mask)},
    ]
    labels, scores = coco.results_to_labels(results, 1, (3, 3), score_thresh=0.5)
    assert scores == {1: 0.8}
    np.testing.assert_array_equal(labels[1], mask.astype(np.int32))
    assert not labels[2].any() and labels[2].shape == (3, 3)


def test_results_to_labels_rejects_a_mask_of_another_size() -> None:
    results = [{"image_id": 1, "score": 1.0, "category_id": 1,
                "segmentation": encode_mask(np.ones((3, 4), bool))}]
    with pytest.raises(DatasetError, match="4 x 3"):
        coco.results_to_labels(results, 1, (4, 3))


def test_dense_image_matches_pycocotools() -> None:
    """400 squares on 2000 x 2000 through the per-crop path (its speed is in benchmarks/)."""
    image = np.zeros((2000, 2000), np.int32)
    for i in range(400):
        row, col = divmod(i, 20)
        image[row * 100 + 1 : row * 100 + 60, col * 100 : col * 100 + 45 + row] = i + 1
    results = coco.labels_to_results({1: image}, 1)
    for i in (0, 17, 399):
        assert results[i]["segmentation"] == reference_rle(image == i + 1)
    back, _ = coco.results_to_labels(results, 1, image.shape)
    np.testing.assert_array_equal(back[1], image)


# ---------------------------------------------------------------- mapping file


def write(tmp_path: Path, text: str, name: str = "map.json") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_mapping_reads_the_real_file() -> None:
    mapping = coco.load_mapping(MAPPING)
    entries = json.loads(MAPPING.read_text())
    assert len(mapping) == len(entries)
    first = entries[0]
    assert mapping[first["file_name"]] == {k: first[k] for k in ("id", "height", "width")}


ENTRY = {"file_name": "a.tif", "id": 1, "height": 4, "width": 5}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[{", "not valid JSON"),
        (json.dumps({"a.tif": 1}), "list"),
        (json.dumps([{"file_name": "a.tif", "id": 1}]), "needs keys"),
        (json.dumps([ENTRY, {**ENTRY, "file_name": "b.tif"}]), "id 1 is used twice"),
        (json.dumps([ENTRY, {**ENTRY, "id": 2}]), "a.tif is listed twice"),
        (json.dumps([{**ENTRY, "height": "4"}]), "integers"),
    ],
)
def test_load_mapping_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DatasetError, match=match) as info:
        coco.load_mapping(path)
    assert str(path) in str(info.value)


def test_load_mapping_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        coco.load_mapping(tmp_path / "nope.json")


def test_check_image_in_mapping() -> None:
    mapping = {"a.tif": {"id": 7, "height": 4, "width": 5}}
    assert coco.check_image_in_mapping(mapping, "a.tif", (4, 5)) == 7
    assert coco.check_image_in_mapping(mapping, Path("/data/test/a.tif"), (4, 5, 3)) == 7
    with pytest.raises(DatasetError, match="b.tif is not listed"):
        coco.check_image_in_mapping(mapping, "b.tif", (4, 5))
    with pytest.raises(DatasetError, match="5 x 4 but"):
        coco.check_image_in_mapping(mapping, "a.tif", (5, 4))


# ---------------------------------------------------------------- ground truth, JSON files


def test_ground_truth_structure() -> None:
    first = {1: np.zeros((5, 6), np.int32), 2: np.zeros((5, 6), np.int32)}
    first[1][0:2, 0:2], first[1][4, 5], first[2][1:4, 2] = 1, 3, 1
    second = {1: np.zeros((3, 2), np.int32)}
    second[1][1, 1] = 1
    gt = coco.ground_truth([(10, "a.tif", first), (11, "b.tif", second)], ["fluo", "bright"])
    assert gt["images"] == [
        {"id": 10, "file_name": "a.tif", "height": 5, "width": 6},
        {"id": 11, "file_name": "b.tif", "height": 3, "width": 2},
    ]
    assert gt["categories"] == [{"id": 1, "name": "fluo"}, {"id": 2, "name": "bright"}]
    anns = gt["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in anns] == [
        (1, 10, 1), (2, 10, 1), (3, 10, 2), (4, 11, 1)]
    masks = [first[1] == 1, first[1] == 3, first[2] == 1, second[1] == 1]
    for ann, mask in zip(anns, masks):
        rle = reference_rle(mask)
        assert ann["segmentation"] == rle
        assert ann["area"] == mask_utils.area(rle) == mask.sum()
        assert ann["bbox"] == mask_utils.toBbox(rle).tolist()
        assert ann["iscrowd"] == 0
    json.dumps(gt)  # plain JSON types only


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ({3: np.zeros((2, 2), np.int32)}, "class 3"),
        ({1: np.zeros((2, 2), np.int32), 2: np.zeros((3, 2), np.int32)}, "sizes"),
        ({}, "no label images"),
    ],
)
def test_ground_truth_errors_name_the_image(labels: dict, match: str) -> None:
    with pytest.raises(DatasetError, match=match) as info:
        coco.ground_truth([(1, "a.tif", labels)], ["fluo", "bright"])
    assert "a.tif" in str(info.value)


def test_write_json_is_compact_valid_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    coco.write_json(path, [{"a": 1, "b": [1.5, 2]}])
    assert path.read_text() == '[{"a":1,"b":[1.5,2]}]'
    with pytest.raises(ValueError):
        coco.write_json(path, [float("nan")])
    assert path.read_text() == '[{"a":1,"b":[1.5,2]}]'  # the old file survives
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def sample_results() -> list[dict]:
    labels = {1: np.zeros((4, 4), np.int32)}
    labels[1][1:3, 1:3] = 1
    labels[1][0, 3] = 2
    return coco.labels_to_results(labels, 1, {1: 0.5})


def test_read_results_round_trip_and_normalises_uncompressed(tmp_path: Path) -> None:
    results = sample_results()
    uncompressed = {**results[1], "segmentation": {"size": [4, 4], "counts": [12, 1, 3]}}
    path = tmp_path / "r.json"
    coco.write_json(path, results + [uncompressed])
    back = coco.read_results(path, mapping_ids={1}, num_classes=1)
    assert back[:2] == results
    assert back[2]["segmentation"] == results[1]["segmentation"]


@pytest.mark.parametrize(
    ("content", "kwargs", "match"),
    [
        ("{", {}, "not valid JSON"),
        ({"image_id": 1}, {}, "list"),
        ([{"image_id": 1, "score": 1.0, "category_id": 1}], {}, "needs keys"),
        ("bad_rle", {}, "bad segmentation"),
        ("category", {"num_classes": 1}, "category 2"),
        ("image", {"mapping_ids": {1}}, "image id 9"),
        ("score", {}, "score"),
    ],
)
def test_read_results_errors_name_the_file(
    tmp_path: Path, content: object, kwargs: dict, match: str
) -> None:
    result = sample_results()[0]
    variants = {
        "bad_rle": {**result, "segmentation": {**result["segmentation"], "size": [5, 4]}},
        "category": {**result, "category_id": 2},
        "image": {**result, "image_id": 9},
        "score": {**result, "score": "high"},
    }
    path = tmp_path / "r.json"
    if isinstance(content, str) and content in variants:
        path.write_text(json.dumps([result, variants[content]]))
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DatasetError, match=match) as info:
        coco.read_results(path, **kwargs)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=60, deadline=None)
@given(label_images)
def test_labels_survive_the_results_file_and_the_ground_truth(images: list[np.ndarray]) -> None:
    """Labels -> RLE -> a JSON file on disk -> checked read -> labels is the identity, and each
    ground-truth annotation decodes to exactly its instance."""
    import tempfile

    images = consecutive(images)
    labels = {k: image for k, image in enumerate(images, start=1)}
    shape = images[0].shape
    n = int(max(image.max() for image in images))
    scores = {i: 1.0 - i / 100 for i in range(1, n + 1)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        coco.write_json(path, coco.labels_to_results(labels, 3, scores))
        results = coco.read_results(path, mapping_ids={3}, num_classes=len(labels), image_sizes={3: shape})
    back, back_scores = coco.results_to_labels(results, 3, shape)
    for k, image in labels.items():
        if image.any():
            np.testing.assert_array_equal(back[k], image)
    assert back_scores == scores
    gt = coco.ground_truth([(3, "x", labels)], [f"c{k}" for k in labels])
    assert len(gt["annotations"]) == n
    for ann in gt["annotations"]:
        mask = decode_mask(ann["segmentation"])
        ids = np.unique(labels[ann["category_id"]][mask])
        assert len(ids) == 1 and ids[0] > 0
        np.testing.assert_array_equal(mask, labels[ann["category_id"]] == ids[0])
        assert ann["area"] == int(mask.sum())
