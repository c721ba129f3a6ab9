"""ONNX export of the whole detector, checked in onnxruntime, and run in place of the torch model."""

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from napari_cellseg.model.checkpoint import load_model, save_checkpoint, weights_digest  # noqa: E402
from napari_cellseg.cli.main import main  # noqa: E402
from napari_cellseg.errors import CheckpointError  # noqa: E402
from napari_cellseg.model.network import ModelConfig, build_model  # noqa: E402
from napari_cellseg.model.onnx_model import OnnxModel  # noqa: E402
from napari_cellseg.inference.pipeline import segment_image  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread):
    """A tiny random model saved as a checkpoint and exported once through the CLI."""
    from napari_cellseg._torch import torch

    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", class_names=["a", "b"], box_score_thresh=0.0, detections_per_img=10)
    save_checkpoint(folder / "m.pt", build_model(config), config)
    assert main(["export-model", str(folder / "m.pt"), "--format", "onnx", "--out", str(folder / "m.onnx")]) == 0
    return folder


@pytest.fixture(autouse=True)
def torch_as_exported(monkeypatch):
    """Compare with torch as the graph was exported: its fixed detection cap of 10 (the torch model's
    follows the tile's area and is raised when hit), torchvision's exact heads (not the CPU fast
    path) and scale 1 (the graph's resize is fixed at export)."""
    from napari_cellseg.inference import fastpath, predict

    monkeypatch.setattr(predict, "MAX_DETECTIONS", 10)
    with fastpath.exact():
        yield


@pytest.mark.parametrize("shape", [(64, 80), (90, 70)])
def test_onnx_gives_the_torch_labels_at_any_size(exported, shape):
    torch_model, _ = load_model(exported / "m.pt")
    onnx_model, config = load_model(exported / "m.onnx")
    assert isinstance(onnx_model, OnnxModel) and config.class_names == ["a", "b"]
    image = np.random.default_rng(shape[0]).integers(0, 255, (*shape, 3), dtype=np.uint8)
    want, want_scores = segment_image(torch_model, image, score_thresh=0.0, mask_thresh=0.3, scale=1)
    got, got_scores = segment_image(onnx_model, image, score_thresh=0.0, mask_thresh=0.3, scale=1)
    assert want_scores and set(got_scores) == set(want_scores)
    assert np.allclose(list(got_scores.values()), list(want_scores.values()), atol=1e-4)
    for k in (1, 2):
        assert (got[k] != want[k]).mean() < 0.002  # a mask probability may round to the other uint8 step


def test_onnx_tiles_like_torch(exported):
    """Tiling filters detections per tile after the network (``keep``), as the torch model does."""
    torch_model, _ = load_model(exported / "m.pt")
    onnx_model, _ = load_model(exported / "m.onnx")
    image = np.random.default_rng(5).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    want, _ = segment_image(torch_model, image, score_thresh=0.0, tile_size=64, overlap=16, scale=1)
    got, _ = segment_image(onnx_model, image, score_thresh=0.0, tile_size=64, overlap=16, scale=1)
    assert all((got[k] != want[k]).mean() < 0.002 for k in (1, 2))


def test_predict_accepts_the_onnx_file(exported, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "img.tif", np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8))
    assert main(["predict", str(exported / "m.onnx"), str(tmp_path / "img.tif"), "--out", str(tmp_path / "out"),
                 "--score-thresh", "0", "--device", "cpu", "--format", "labels,csv"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img_a.tif", "img_b.tif", "img_cells.csv"]


def test_each_onnx_file_has_its_own_identity(exported, tmp_path):
    first = weights_digest(load_model(exported / "m.onnx")[0])
    copy = tmp_path / "copy.onnx"
    data = (exported / "m.onnx").read_bytes()
    copy.write_bytes(data)
    assert weights_digest(load_model(copy)[0]) == first  # the same file, the same model
    assert first != weights_digest(load_model(exported / "m.pt")[0])


def test_a_foreign_or_damaged_onnx_file_is_refused(exported, tmp_path):
    import onnx

    graph = onnx.load(str(exported / "m.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(tmp_path / "foreign.onnx"))
    with pytest.raises(CheckpointError, match="not an ONNX model exported by napari-cellseg"):
        load_model(tmp_path / "foreign.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a usable ONNX model"):
        load_model(tmp_path / "bad.onnx")
