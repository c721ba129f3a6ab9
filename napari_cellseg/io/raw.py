"""``RawInstances``: what the network found in one image, kept compact for re-thresholding; and
``Labels``, the labels convention every module shares.

numpy only, on purpose: the slider path (``postprocess.to_labels``) and the GUI session hold raw
instances without importing torch, so moving a slider never loads the deep-learning stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Labels = dict[int, np.ndarray]
"""Class id (1..K) -> H x W int32 instance image (0 = background): what a sample holds, what
``postprocess.to_labels`` returns and napari shows, one convention everywhere."""


@dataclass
class RawInstances:
    """What the network found in one image, sorted by score (instance ``i`` becomes label ``i + 1``).

    ``boxes`` are the integer bounds ``[x0, y0, x1, y1]`` (x1, y1 exclusive, inside the image) of
    each mask crop; ``masks[i]`` is the crop, probability x 255 as uint8, of shape
    ``(y1 - y0, x1 - x0)``. These boxes are the crops, slightly larger than the detector's boxes.
    ``scale`` is the factor the image was segmented at (``scale.py``); ``capped_tiles`` counts the
    tiles whose detections hit the cap (cells may be missing there), so the CLI and GUI can say so.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: list[np.ndarray]
    image_shape: tuple[int, int]
    scale: float = 1.0
    capped_tiles: int = 0

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.int32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int32).reshape(-1)
        self.masks = list(self.masks)
        self.image_shape = (int(self.image_shape[0]), int(self.image_shape[1]))
        n = len(self.scores)
        if not len(self.boxes) == len(self.labels) == len(self.masks) == n:
            raise ValueError("RawInstances needs as many boxes, labels and masks as scores")

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays: what keeping this result alive costs."""
        arrays = self.boxes.nbytes + self.scores.nbytes + self.labels.nbytes
        return arrays + sum(m.nbytes for m in self.masks)

    def select(self, indices: Sequence[int] | np.ndarray) -> RawInstances:
        """The instances at ``indices`` (ints or a boolean mask), in the order given."""
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.intp).reshape(-1)
        return RawInstances(
            self.boxes[idx], self.scores[idx], self.labels[idx], [self.masks[i] for i in idx], self.image_shape,
            self.scale, self.capped_tiles,
        )

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> RawInstances:
        """No instances in an image of ``shape`` (H, W)."""
        return cls(np.zeros((0, 4), np.int32), np.zeros(0, np.float32), np.zeros(0, np.int32), [], shape)

    @classmethod
    def concatenate(cls, parts: Sequence[RawInstances], shape: tuple[int, int]) -> RawInstances:
        """Merge per-tile results and re-sort by score (stable: ties keep their order); capped
        tiles add up, the scale is the first part's."""
        if not parts:
            return cls.empty(shape)
        merged = cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [m for p in parts for m in p.masks],
            shape,
            parts[0].scale,
            sum(p.capped_tiles for p in parts),
        )
        return merged.select(np.argsort(-merged.scores, kind="stable"))


__all__ = ["RawInstances"]
