"""to_labels: stable ids, higher score wins, the exact threshold rule, classes, and a brute-force twin."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_cellseg.io.raw import RawInstances
from napari_cellseg.inference.postprocess import MIN_OWNED, instance_scores, mask_level, to_labels


def instance_classes(raw) -> dict[int, int]:
    """Label id -> class id (instance i is label i + 1)."""
    return {i + 1: int(c) for i, c in enumerate(raw.labels)}


def _raw(boxes, scores, labels, masks, shape=(12, 12)) -> RawInstances:
    return RawInstances(np.array(boxes).reshape(-1, 4), scores, labels, [np.asarray(m, np.uint8) for m in masks], shape)


def _square(box, value=255) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.full((y1 - y0, x1 - x0), value, np.uint8)


def _three_apart() -> RawInstances:
    boxes = [[0, 0, 3, 3], [5, 0, 8, 3], [0, 5, 3, 8]]
    return _raw(boxes, [0.9, 0.7, 0.4], [1, 1, 2], [_square(b) for b in boxes])


@pytest.mark.parametrize("thresh, level", [(0.0, 0), (0.5, 128), (0.6, 153), (1.0, 255), (153 / 255, 153)])
def test_mask_level_is_the_smallest_value_whose_probability_reaches_the_threshold(thresh, level):
    assert mask_level(thresh) == level
    assert level / 255 >= thresh - 1e-9 and (level == 0 or (level - 1) / 255 < thresh)


@pytest.mark.parametrize("thresh", [-0.1, 1.01])
def test_mask_level_rejects_thresholds_outside_0_1(thresh):
    with pytest.raises(ValueError):
        mask_level(thresh)


def test_mask_threshold_keeps_pixels_at_or_above_it():
    mask = np.array([[152, 153, 127, 128]], np.uint8)
    raw = _raw([[0, 0, 4, 1]], [0.9], [1], [mask], shape=(1, 4))
    assert to_labels(raw, 0.5, 0.6)[1].tolist() == [[0, 1, 0, 0]]
    assert to_labels(raw, 0.5, 0.5)[1].tolist() == [[1, 1, 0, 1]]
    assert to_labels(raw, 0.5, 0.0)[1].tolist() == [[1, 1, 1, 1]]


def test_ids_are_stable_whatever_the_score_threshold():
    raw = _three_apart()
    low = to_labels(raw, score_thresh=0.0)
    high = to_labels(raw, score_thresh=0.5)
    assert set(np.unique(low[1])) == {0, 1, 2} and set(np.unique(low[2])) == {0, 3}
    assert set(np.unique(high[1])) == {0, 1, 2}
    assert not high[2].any()  # class 2's only instance is below the threshold: an empty image
    assert low[1].dtype == np.int32 and low[1].shape == (12, 12)


def test_score_threshold_is_inclusive():
    raw = _three_apart()
    assert 3 in to_labels(raw, score_thresh=np.float32(0.4))[2]


def test_overlap_goes_to_the_higher_score_across_classes():
    boxes = [[0, 0, 6, 6], [3, 3, 9, 9]]
    raw = _raw(boxes, [0.9, 0.8], [2, 1], [_square(b) for b in boxes])
    out = to_labels(raw, 0.5, 0.5)
    assert out[2][4, 4] == 1 and out[1][4, 4] == 0
    assert out[1][8, 8] == 2
    assert ((out[1] > 0) & (out[2] > 0)).sum() == 0


def test_an_instance_hidden_or_empty_at_the_threshold_is_dropped():
    boxes = [[0, 0, 6, 6], [1, 1, 4, 4], [8, 8, 10, 10]]
    masks = [_square(boxes[0]), _square(boxes[1]), _square(boxes[2], value=100)]
    out = to_labels(_raw(boxes, [0.9, 0.8, 0.7], [1, 1, 1], masks), 0.5, 0.5)
    assert set(np.unique(out[1])) == {0, 1}


def test_an_instance_mostly_under_a_better_one_is_dropped_as_its_duplicate():
    """Half or more of its mask still free keeps it (only the free part); less drops it whole."""
    boxes = [[0, 0, 6, 6], [3, 0, 9, 6], [0, 1, 6, 7]]  # 2: 18 of 36 free; 3: 6 of 36 free
    out = to_labels(_raw(boxes, [0.9, 0.8, 0.7], [1, 1, 1], [_square(b) for b in boxes]), 0.5, 0.5)[1]
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out[:6, 6:9] == 2).all() and (out[:6, :6] == 1).all() and not out[6].any()
    alone = to_labels(_raw(boxes[2:], [0.7], [1], [_square(boxes[2])]), 0.5, 0.5)[1]
    assert (alone[1:7, :6] == 1).all()  # the same instance without the others is kept whole


def test_classes_default_to_those_present_and_missing_ones_are_blank():
    raw = _three_apart()
    assert sorted(to_labels(raw)) == [1, 2]
    out = to_labels(raw, 0.0, classes=[1, 2, 3])
    assert sorted(out) == [1, 2, 3] and not out[3].any()
    assert to_labels(RawInstances.empty((4, 5))) == {}
    blank = to_labels(RawInstances.empty((4, 5)), classes=range(1, 3))
    assert sorted(blank) == [1, 2] and all(a.shape == (4, 5) and not a.any() for a in blank.values())


def test_classes_not_asked_for_do_not_hide_the_others():
    boxes = [[0, 0, 6, 6], [0, 0, 6, 6]]
    raw = _raw(boxes, [0.9, 0.8], [1, 2], [_square(b) for b in boxes])
    out = to_labels(raw, 0.5, 0.5, classes=[2])
    assert list(out) == [2] and (out[2][:6, :6] == 2).all()


def test_scores_and_classes_by_label_id():
    raw = _three_apart()
    assert instance_scores(raw) == pytest.approx({1: 0.9, 2: 0.7, 3: 0.4})
    assert instance_classes(raw) == {1: 1, 2: 1, 3: 2}


# --- property: equal to a brute-force per-pixel reference ---------------------------------------


@st.composite
def raw_instances(draw) -> RawInstances:
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    n = draw(st.integers(0, 8))
    boxes, masks = [], []
    for _ in range(n):
        x0, y0 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        x1, y1 = draw(st.integers(x0 + 1, w)), draw(st.integers(y0 + 1, h))
        size = (y1 - y0) * (x1 - x0)
        values = draw(st.lists(st.integers(0, 255), min_size=size, max_size=size))
        boxes.append([x0, y0, x1, y1])
        masks.append(np.array(values, np.uint8).reshape(y1 - y0, x1 - x0))
    scores = sorted(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), reverse=True)
    labels = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    return _raw(boxes, scores, labels, masks, shape=(h, w))


def _reference(raw: RawInstances, score_thresh: float, mask_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image twin of the rules: instances in score order, each painting its mask pixels
    (value / 255 >= mask_thresh, with 1e-6 of slack on the 0..255 scale) that nobody owns yet, and
    only when those are at least ``MIN_OWNED`` of its mask (and at least one pixel)."""
    owner = np.zeros(raw.image_shape, np.int32)
    for i, (x0, y0, x1, y1) in enumerate(raw.boxes):
        if raw.scores[i] < score_thresh:
            continue
        mask = np.zeros(raw.image_shape, bool)
        mask[y0:y1, x0:x1] = raw.masks[i] >= mask_thresh * 255 - 1e-6
        free = mask & (owner == 0)
        if free.sum() and free.sum() >= MIN_OWNED * mask.sum():
            owner[free] = i + 1
    cls = np.where(owner > 0, np.concatenate([[0], raw.labels])[owner], 0)
    return owner, cls


@settings(max_examples=80, deadline=None)
@given(raw=raw_instances(), score_thresh=st.floats(0, 1), mask_thresh=st.floats(0, 1))
def test_to_labels_matches_the_per_pixel_rule_and_never_overlaps(raw, score_thresh, mask_thresh):
    out = to_labels(raw, score_thresh, mask_thresh)
    assert sorted(out) == sorted(set(raw.labels.tolist()))
    stacked = np.stack(list(out.values())) if out else np.zeros((0, *raw.image_shape), np.int32)
    assert ((stacked > 0).sum(axis=0) <= 1).all()  # no pixel in two instances, across classes
    kept = set(np.unique(stacked).tolist()) - {0}
    assert kept <= {i + 1 for i, s in enumerate(raw.scores) if s >= score_thresh}
    owner, cls = _reference(raw, score_thresh, mask_thresh)
    np.testing.assert_array_equal(stacked.sum(axis=0) if out else owner * 0, owner)
    for c, image in out.items():
        np.testing.assert_array_equal(image > 0, cls == c)


@settings(max_examples=60, deadline=None)
@given(raw=raw_instances(), score_thresh=st.floats(0, 1), mask_thresh=st.floats(0, 1),
       asked=st.sets(st.integers(1, 4), max_size=4))
def test_to_labels_for_some_classes_never_overlaps_and_exports_as_shown(raw, score_thresh, mask_thresh, asked):
    """Any subset of classes: no pixel in two instances, nothing from classes not asked for, and the
    COCO export of what is shown reads back as the same instances (ids renumbered by score)."""
    from napari_cellseg.io.coco import labels_to_results, results_to_labels

    out = to_labels(raw, score_thresh, mask_thresh, classes=asked)
    assert sorted(out) == sorted(asked)
    stacked = np.stack(list(out.values())) if out else np.zeros((0, *raw.image_shape), np.int32)
    assert ((stacked > 0).sum(axis=0) <= 1).all()
    classes = instance_classes(raw)
    for c, image in out.items():
        assert all(classes[i] == c for i in np.unique(image[image > 0]).tolist())
    back, _ = results_to_labels(labels_to_results(out, 1, instance_scores(raw)), 1, raw.image_shape)

    def instances(image: np.ndarray) -> set[frozenset[int]]:
        return {frozenset(np.flatnonzero(image == i).tolist()) for i in np.unique(image[image > 0]).tolist()}

    for c, image in out.items():
        assert instances(back.get(c, np.zeros_like(image))) == instances(image)
