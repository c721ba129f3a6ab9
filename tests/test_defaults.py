"""The named inference defaults are the ones every face starts from."""

from __future__ import annotations

import inspect

from napari_cellseg import defaults
from napari_cellseg.cli.main import build_parser
from napari_cellseg.model.network import ModelConfig
from napari_cellseg.inference.postprocess import to_labels


def test_the_cli_and_to_labels_start_from_the_named_defaults():
    args = build_parser().parse_args(["export", "ckpt.pt", "data", "--out", "r.json"])
    assert (args.score_thresh, args.mask_thresh, args.tile_size) == (
        defaults.SCORE_THRESH, defaults.MASK_THRESH, defaults.TILE_SIZE
    )
    params = inspect.signature(to_labels).parameters
    assert params["score_thresh"].default == defaults.SCORE_THRESH
    assert params["mask_thresh"].default == defaults.MASK_THRESH


def test_the_detector_floor_is_the_models_and_overlap_shrinks_for_small_tiles():
    assert ModelConfig().box_score_thresh == defaults.DETECTOR_SCORE_FLOOR
    assert defaults.overlap_for(defaults.TILE_SIZE) == defaults.OVERLAP
    assert defaults.overlap_for(64) == 16


def test_the_confidence_tooltip_states_the_detector_floor():
    from napari_cellseg.plugin.tooltips import SEGMENT

    assert "0.05" in SEGMENT["score"].format(floor=defaults.DETECTOR_SCORE_FLOOR)
