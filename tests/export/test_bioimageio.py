"""The bioimage.io package: validated by bioimageio.spec, its ONNX weights reproduce its test outputs."""

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec")
onnxruntime = pytest.importorskip("onnxruntime")

from napari_cellseg.model.checkpoint import save_checkpoint  # noqa: E402
from napari_cellseg.cli.main import main  # noqa: E402
from napari_cellseg.errors import OutputError  # noqa: E402
from napari_cellseg.model.network import ModelConfig, build_model  # noqa: E402


def test_package_round_trips_on_a_tiny_model(tmp_path, one_thread):
    from bioimageio.spec import load_description

    from napari_cellseg._torch import torch

    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", class_names=["a", "b"], box_score_thresh=0.0, detections_per_img=10)
    save_checkpoint(tmp_path / "tiny.pt", build_model(config), config)
    out = tmp_path / "package"
    assert main(["export-model", str(tmp_path / "tiny.pt"), "--format", "bioimageio", "--out", str(out)]) == 0
    expected = {"rdf.yaml", "model.onnx", "README.md", "cover.png", "test_image.npy", "test_boxes.npy",
                "test_labels.npy", "test_scores.npy", "test_masks.npy"}
    assert {p.name for p in out.iterdir()} >= expected
    description = load_description(out / "rdf.yaml")
    assert description.validation_summary.status == "valid-format"
    import yaml

    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert description.license == "BSD-3-Clause" and "score order" in rdf["config"]["napari_cellseg"]["postprocessing"]
    assert "## Post-processing" in (out / "README.md").read_text()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["boxes", "labels", "scores", "masks"], {"image": np.load(out / "test_image.npy")})
    for name, value in zip(["boxes", "labels", "scores", "masks"], got):
        want = np.load(out / f"test_{name}.npy")
        assert value.shape == want.shape and len(want) > 0
        np.testing.assert_allclose(value, want, atol=1e-3)
    with pytest.raises(OutputError, match="new or empty folder"):
        from napari_cellseg.export.bioimageio import export_bioimageio

        export_bioimageio(build_model(config), config, "tiny", out)
