"""The settings a user starts from, named once (the networks, the inference defaults): the CLI's
option defaults, the Segment sliders, the session's copy for Export, ``to_labels``, ``segment_image``
and export all read them here, so changing one default changes it everywhere. Standard library only.
"""

from __future__ import annotations

SCORE_THRESH = 0.5
"""Confidence: a detected cell scoring below this is left out."""
MASK_THRESH = 0.6
"""Mask threshold: a pixel whose probability of belonging to its cell is below this is left out."""
TILE_SIZE = 1024
"""Images larger than this are segmented tile by tile (pixels per side)."""
OVERLAP = 128
"""Tiles overlap by this much (pixels) so a cell on a tile edge is seen whole in one tile."""
ARCHS = ("resnet50", "resnet50_v2", "resnet18")
"""The networks (``model.network``); ``resnet18`` is the light model for CPUs: ResNet-18 body, FPN of
128 channels, slim heads. Named here so that the Train tab lists them without importing torch."""
DETECTOR_SCORE_FLOOR = 0.05
"""The detector's own score floor (``ModelConfig.box_score_thresh``): cells below it are dropped
inside the network, so a confidence threshold below it changes nothing."""


def overlap_for(tile_size: int) -> int:
    """The overlap used with ``tile_size``: the default, smaller for small (test-sized) tiles."""
    return min(OVERLAP, tile_size // 4)
