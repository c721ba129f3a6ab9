"""Offline sample data shipped in the package (DSB2018 nuclei, CC0)."""

from pathlib import Path

SAMPLE_DATASET = Path(__file__).parent / "dsb2018_mini"
"""A tiny HW3-layout dataset: train/, val/, test_release/ and test_image_name_to_ids.json."""
