"""napari sample data (File > Open Sample): real DSB2018 nuclei shipped in the package, with their
ground-truth masks - one fluorescence image (class 1) and one stained brightfield image (class 2)."""

from __future__ import annotations

from pathlib import Path

from .reader import read_sample_folder
from ..sample_data import SAMPLE_DATASET

FLUORESCENCE = "06350c7cc618be442c15706db7a68e91f313758d224de4608f9b960106d4f9ca"
BRIGHTFIELD = "bf4a61bb81589c9a67e3343408befd3e135af5e88b50c17f998f2131d24bc271"


def sample_folder(name: str) -> Path:
    return SAMPLE_DATASET / "val" / name


def fluorescence_sample() -> list[tuple]:
    """Fluorescent nuclei (19 cells of class 1) and their ground truth."""
    return read_sample_folder(sample_folder(FLUORESCENCE))


def brightfield_sample() -> list[tuple]:
    """Stained nuclei in brightfield (class 2) and their ground truth."""
    return read_sample_folder(sample_folder(BRIGHTFIELD))
