"""Training data from a HW3 dataset: targets for torchvision, the train/val split, the cached
torch dataset.

Finding and reading the samples is ``io.samples``'s; test images are segmented by
``inference.pipeline.export_items``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._torch import torch
from ..io.coco import instances
from ..errors import DatasetError
from ..io.images import to_tensor
from ..io.layout import IMAGE_NAME
from ..model.network import MAX_CLASSES
from ..io.samples import Sample, find_samples, read_sample
from .transforms import Augment, Labels, mosaic


def dataset_classes(samples: Sequence[Sample]) -> list[int]:
    """Sorted class ids that have a mask file in at least one sample."""
    return sorted({k for s in samples for k in s.mask_paths})


def check_class_count(samples: Sequence[Sample]) -> None:
    """Refuse a class number beyond ``MAX_CLASSES``, naming its file: a stray ``class1000000.tif``
    would otherwise size the network (and its memory) for a million classes."""
    for sample in samples:
        for class_id, path in sample.mask_paths.items():
            if class_id > MAX_CLASSES:
                raise DatasetError(
                    f"{path}: class {class_id} is beyond the {MAX_CLASSES} classes a model may have; "
                    "number the classes class1.tif, class2.tif, ... or remove the stray file"
                )


def split_samples(
    root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples: ``root/val`` when it exists, else a seeded split of ``root/train``.

    The split is deterministic for a given ``seed`` and keeps at least one validation sample when
    ``val_fraction > 0`` and there are two samples or more; ``val_fraction = 0`` means no validation.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a dataset folder (holding train/), found a file")
    train_dir = root / "train"
    if train_dir.exists() and not train_dir.is_dir():
        raise DatasetError(f"{train_dir}: expected the folder of training samples, found a file")
    if not train_dir.is_dir():
        raise DatasetError(
            f"{root}: no 'train' folder; expected the HW3 layout {train_dir}/<sample>/{IMAGE_NAME} "
            f"(+ classK.tif masks), optionally {root / 'val'}/ likewise"
        )
    train = find_samples(train_dir)
    if (root / "val").is_dir():
        return train, find_samples(root / "val")
    n_val = _n_val(len(train), val_fraction)
    chosen = set(np.random.default_rng(seed).permutation(len(train))[:n_val].tolist())
    return (
        [s for i, s in enumerate(train) if i not in chosen],
        [s for i, s in enumerate(train) if i in chosen],
    )


def _n_val(n: int, val_fraction: float) -> int:
    if n < 2 or val_fraction == 0:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


# ---------------------------------------------------------------------------------------- targets


def instance_targets(
    labels: Labels, shape: tuple[int, ...] | None = None, min_pixels: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Masks ``(N, H, W)`` uint8, class ids ``(N,)`` int64, boxes ``(N, 4)`` float32 xyxy, skipped count.

    Boxes have an exclusive max (a one-pixel instance at (y, x) is ``[x, y, x + 1, y + 1]``), so
    torchvision never sees a zero-width box. Each instance is found by its bounding slice
    (``scipy.ndimage.find_objects``): the work is the sum of box areas, not N full-image passes,
    which matters on 2500 px images with 700 cells. An id in several pieces is one instance; the
    same id in two classes is two. Instances with fewer than ``min_pixels`` pixels are skipped and
    counted (with the default 1 nothing present is skipped). ``shape`` gives ``H, W`` when
    ``labels`` is empty.
    """
    height, width = _labels_shape(labels, shape)
    crops: list[np.ndarray] = []
    classes: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    skipped = 0
    for class_id in sorted(labels):
        for crop, (y0, y1, x0, x1) in _instances(labels[class_id]):
            if int(np.count_nonzero(crop)) < min_pixels:
                skipped += 1
                continue
            crops.append(crop)
            classes.append(class_id)
            boxes.append((x0, y0, x1, y1))
    masks = np.zeros((len(crops), height, width), np.uint8)  # one allocation: N full-size masks are the bulk
    for mask, crop, (x0, y0, x1, y1) in zip(masks, crops, boxes):
        mask[y0:y1, x0:x1] = crop
    return masks, np.asarray(classes, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4), skipped


def _labels_shape(labels: Labels, shape: tuple[int, ...] | None) -> tuple[int, int]:
    shapes = {tuple(a.shape) for a in labels.values()}
    if len(shapes) > 1:
        raise ValueError(f"label images of one sample differ in size: {sorted(shapes)}")
    if shapes:
        (found,) = shapes
        if len(found) != 2:
            raise ValueError(f"a label image must be 2-D, got shape {found}")
        return found[0], found[1]
    if shape is None:
        return 0, 0
    return int(shape[0]), int(shape[1])


def _instances(label_image: np.ndarray) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Yield (boolean crop, (y0, y1, x0, x1)) per instance id, in id order (``coco.instances``)."""
    for _, (ys, xs), crop in instances(label_image):
        yield crop, (ys.start, ys.stop, xs.start, xs.stop)


# ---------------------------------------------------------------------------------------- dataset


class CellDataset(torch.utils.data.Dataset):
    """Samples -> (image tensor, torchvision target), with seeded augmentation and a decode cache.

    Reproducible whatever the worker count: sample ``i`` in epoch ``e`` is augmented with
    ``np.random.default_rng((seed, e, i))``. The epoch lives in a shared-memory tensor, so
    ``set_epoch`` reaches persistent DataLoader workers. Instances left with fewer than
    ``min_pixels`` after augmentation are dropped from the target. With ``mosaic`` p, a sample is
    instead, with probability p, four augmented samples (itself and three drawn at random) in the
    quadrants of one ``mosaic_size`` image (``transforms.mosaic``). Decoded ``(image, labels)`` are
    kept in an LRU cache of at most ``cache_bytes`` per process (each worker has its own; keep
    workers persistent to benefit); cached arrays are read-only so an augmentation that writes in
    place fails loudly instead of corrupting the cache.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        augment: Augment | None = None,
        seed: int = 0,
        cache_bytes: int = 2 * 2**30,
        *,
        min_pixels: int = 1,
        mosaic: float = 0.0,
        mosaic_size: int = 512,
    ) -> None:
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic must be a probability between 0 and 1, got {mosaic}")
        if mosaic and augment is None:
            raise ValueError("a mosaic is an augmentation: give augment too")
        self.samples = list(samples)
        self.augment = augment
        self.seed = int(seed)
        self.cache_bytes = int(cache_bytes)
        self.min_pixels = int(min_pixels)
        self.mosaic = float(mosaic)
        self.mosaic_size = int(mosaic_size)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: OrderedDict[int, tuple[np.ndarray, Labels]] = OrderedDict()
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch so augmentations differ between epochs yet stay reproducible."""
        self._epoch[0] = int(epoch)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, labels = self._augmented(i, i)
        if self.mosaic:
            rng = np.random.default_rng((self.seed, self.epoch, i, len(self)))
            if rng.random() < self.mosaic:
                others = rng.integers(0, len(self), 3)
                parts = [(image, labels), *(self._augmented(int(j), i) for j in others)]
                image, labels = mosaic(parts, self.mosaic_size, rng)
        masks, classes, boxes, _ = instance_targets(labels, image.shape, self.min_pixels)
        if not image.flags.writeable:  # torch.from_numpy warns on read-only (cached) arrays
            image = image.copy()
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(classes),
            "masks": torch.from_numpy(masks),
            "image_id": torch.tensor(i, dtype=torch.int64),
        }
        return to_tensor(image), target

    def _augmented(self, i: int, slot: int) -> tuple[np.ndarray, Labels]:
        """Sample ``i`` augmented with its own stream for item ``slot`` of this epoch (as is, without augment)."""
        image, labels = self._decoded(i)
        if self.augment is None:
            return image, labels
        key = (self.seed, self.epoch, i) if i == slot else (self.seed, self.epoch, slot, i)
        return self.augment(image, labels, np.random.default_rng(key))

    def _decoded(self, i: int) -> tuple[np.ndarray, Labels]:
        """Read sample ``i`` through the LRU cache."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        image, labels = read_sample(self.samples[i])
        size = image.nbytes + sum(a.nbytes for a in labels.values())
        if size > self.cache_bytes:
            return image, labels
        for array in (image, *labels.values()):
            array.setflags(write=False)
        self._cache[i] = (image, labels)
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, (old_image, old_labels) = self._cache.popitem(last=False)
            self._cached_bytes -= old_image.nbytes + sum(a.nbytes for a in old_labels.values())
        return image, labels

    def __getstate__(self) -> dict[str, Any]:
        """Workers start with an empty cache: pickling GBs of pixels to spawned workers is slower than reading."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        state["_cached_bytes"] = 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (deepcopy, plain pickle) gets its epoch in shared memory again, for its own workers."""
        self.__dict__.update(state)
        self._epoch.share_memory_()


def collate(batch: Sequence[tuple[Any, Any]]) -> tuple[list, list]:
    """Detection batches are lists: images differ in size and targets in instance count."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets


__all__ = [
    "dataset_classes",
    "check_class_count",
    "split_samples",
    "instance_targets",
    "CellDataset",
    "collate",
]
