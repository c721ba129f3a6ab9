"""The scale decision: factors from a diameter, auto's first-pass measure, and that every path uses it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellseg.model.checkpoint import load_model
from napari_cellseg.io.images import read_image
from napari_cellseg.inference.predict import predict
from napari_cellseg.progress import drain
from napari_cellseg.io.raw import RawInstances
from napari_cellseg.sample_data import SAMPLE_DATASET
from napari_cellseg.inference.scale import (
    AIM, DEFAULT_DIAMETER, auto_factor, fixed_factor, found_diameter, iter_predict_scaled, median_diameter,
    model_diameter, parse_scale, scale_note, target_diameter,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Model:
    """Only what the factor needs: the training diameter a checkpoint may record."""

    def __init__(self, diameter: float = 0.0) -> None:
        self.object_diameter = diameter


@pytest.fixture(scope="module")
def nuclei(one_thread):
    return load_model("nuclei")[0]


@pytest.fixture(scope="module")
def sample_image() -> np.ndarray:
    """A held-out sample val image whose nuclei are ~16 px across (near the model's 19.6 px)."""
    return read_image(sorted((SAMPLE_DATASET / "val").iterdir())[0] / "image.tif")


def test_a_checkpoint_without_a_diameter_falls_back_to_the_documented_default():
    assert model_diameter(_Model()) == DEFAULT_DIAMETER
    assert model_diameter(_Model(30.0)) == 30.0


def test_diameter_sets_the_factor_that_brings_nuclei_to_the_size_the_model_segments_best():
    assert target_diameter(_Model(30.0)) == pytest.approx(AIM * 30.0)
    assert fixed_factor(_Model(30.0), diameter=15) == pytest.approx(2.0 * AIM)
    assert fixed_factor(_Model(), diameter=AIM * DEFAULT_DIAMETER / 2) == pytest.approx(2.0)
    assert fixed_factor(_Model(), scale=0.75, diameter=None) == 0.75
    assert fixed_factor(_Model(), scale="auto") is None
    assert fixed_factor(_Model(30.0), scale=3.0, diameter=AIM * 30) == pytest.approx(1.0)  # the diameter wins
    with pytest.raises(ValueError, match="between 1 and 2000"):
        fixed_factor(_Model(), diameter=0.5)
    with pytest.raises(ValueError, match="between 0.05 and 8"):
        fixed_factor(_Model(), scale=20.0)
    with pytest.raises(ValueError, match="needs scale"):
        fixed_factor(_Model(400.0), diameter=2)


def test_parse_scale_takes_auto_or_a_positive_number():
    assert parse_scale("AUTO") == "auto" and parse_scale("1.5") == 1.5
    for bad in ("big", "0", "-2", "nan"):
        with pytest.raises(ValueError):
            parse_scale(bad)


def test_auto_factor_is_clamped_and_a_no_op_near_one():
    assert auto_factor(10.0, 20.0) == 2.0
    assert auto_factor(5.0, 20.0) == 4.0 and auto_factor(4.0, 20.0) == 4.0  # clamped at 4x
    assert auto_factor(100.0, 20.0) == 1.0  # large nuclei: never shrunk (it cost AP on val)
    assert auto_factor(13.0, 20.0) == pytest.approx(1.538)
    assert auto_factor(18.0, 20.0) == 1.0 and auto_factor(23.0, 20.0) == 1.0  # within 1.25x: no second pass
    assert auto_factor(None, 20.0) == 1.0


def test_found_diameter_measures_confident_masks_only():
    square = np.full((10, 10), 255, np.uint8)  # 100 px: equivalent diameter sqrt(400 / pi)
    big = np.full((40, 40), 255, np.uint8)
    raw = RawInstances(np.tile([0, 0, 10, 10], (4, 1)), [0.9, 0.8, 0.7, 0.1], [1] * 4,
                       [square, square, square, big], (64, 64))
    assert found_diameter(raw) == pytest.approx(np.sqrt(400 / np.pi))
    assert found_diameter(raw.select([0, 1, 3])) is None  # two confident cells measure nothing
    assert median_diameter([np.pi * 25, np.pi * 100, np.pi * 400]) == pytest.approx(20.0)


def test_auto_keeps_the_first_pass_when_nuclei_already_fit(nuclei, sample_image):
    large = np.ascontiguousarray(sample_image.repeat(2, axis=0).repeat(2, axis=1))  # nuclei ~32 px across
    raw = drain(iter_predict_scaled(nuclei, large))
    plain = predict(nuclei, large)
    assert raw.scale == 1.0 and scale_note(raw) == ""
    np.testing.assert_array_equal(raw.scores, plain.scores)


def test_auto_enlarges_small_nuclei_to_the_trained_size(nuclei, sample_image):
    small = np.ascontiguousarray(sample_image[::2, ::2])  # nuclei ~8 px across
    progress = []
    raw = drain(iter_predict_scaled(nuclei, small), progress.append)
    first = auto_factor(found_diameter(predict(nuclei, small)), target_diameter(nuclei))
    assert raw.scale == first and 3.0 <= raw.scale <= 4.0 and "scale" in scale_note(raw)
    assert progress[0].name == "measuring nuclei" and progress[-1].name == "tile"
    assert nuclei.transform.image_scale == 1.0  # the model's own scale comes back
    assert (raw.scores >= 0.5).sum() >= 0.8 * (predict(nuclei, sample_image).scores >= 0.5).sum()


def test_a_fixed_scale_keeps_tiles_the_same_size_for_the_network(nuclei, sample_image):
    crop, progress = np.ascontiguousarray(sample_image[:128, :128]), []
    raw = drain(iter_predict_scaled(nuclei, crop, scale=2.0, tile_size=128, overlap=0), progress.append)
    assert raw.scale == 2.0 and raw.image_shape == (128, 128)
    assert progress[-1].total == 4  # 128 px image in 64 px tiles (128 network px): 2 x 2
