"""Sample data and the npe2 manifest, from the editable install and from a built wheel."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import npe2
import numpy as np
import pytest

from napari_cellseg.plugin.open_sample import brightfield_sample, fluorescence_sample
from napari_cellseg.sample_data import SAMPLE_DATASET

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("load", "class_id"), [(fluorescence_sample, 1), (brightfield_sample, 2)])
def test_samples_are_real_images_with_their_truth(load, class_id):
    (image, image_meta, kind), *labels = load()
    assert kind == "image" and image.dtype == np.uint8 and image.ndim == 3 and image_meta["rgb"]
    assert Path(image_meta["metadata"]["cellseg"]["source"]).is_relative_to(SAMPLE_DATASET)
    assert [meta["metadata"]["cellseg"]["class_id"] for _, meta, _ in labels] == [class_id]
    truth = labels[0][0]
    assert truth.shape == image.shape[:2] and truth.max() >= 3  # several real nuclei
    assert image.std() > 5  # a real picture, not a blank


def test_open_sample_through_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellseg", "brightfield")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert viewer.layers[1].name == "class2 (ground truth)"


def check_manifest(manifest: npe2.PluginManifest) -> None:
    contributions = manifest.contributions
    names = [w.display_name for w in contributions.widgets]
    assert names == ["Cell segmentation"]  # one dock: four open at once needed 663 x 1770 px
    assert {s.key for s in contributions.sample_data} == {"fluorescence", "brightfield"}
    assert contributions.readers[0].accepts_directories and contributions.writers[0].filename_extensions == [".json"]
    for command in contributions.commands:  # every command points at something that exists
        module, _, name = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), command.python_name


def test_manifest_from_the_installed_distribution():
    manifest = npe2.PluginManifest.from_distribution("napari-cellseg")
    check_manifest(manifest)
    manager = npe2.PluginManager()
    manager.discover()
    assert manager.get_manifest("napari-cellseg").name == "napari-cellseg"


def test_manifest_and_sample_data_are_in_the_wheel(tmp_path):
    source = tmp_path / "src"  # build from a copy: the build leaves files behind
    shutil.copytree(ROOT / "napari_cellseg", source / "napari_cellseg", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "whl"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "whl").glob("napari_cellseg-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        zf.extractall(tmp_path / "site")
    assert "napari_cellseg/plugin/napari.yaml" in names
    root = SAMPLE_DATASET.parents[1]
    shipped = {str(p.relative_to(root).as_posix()) for p in SAMPLE_DATASET.rglob("*") if p.is_file()}
    assert {f"napari_cellseg/{p}" for p in shipped} <= names and len(shipped) > 30
    assert "napari-cellseg = napari_cellseg.plugin:napari.yaml" in entry_points
    # npe2 reads the manifest of the unpacked wheel (not of the editable checkout)
    probe = (
        "import importlib.metadata as md, npe2, napari_cellseg;"
        "dist = md.distribution('napari-cellseg');"
        "m = npe2.PluginManifest.from_distribution('napari-cellseg');"
        "print(napari_cellseg.__file__); print(len(m.contributions.widgets))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    module_file, widgets = out.stdout.split()
    assert Path(module_file).is_relative_to(tmp_path / "site") and widgets == "1"
    check_manifest(npe2.PluginManifest.from_file(tmp_path / "site" / "napari_cellseg" / "plugin" / "napari.yaml"))
