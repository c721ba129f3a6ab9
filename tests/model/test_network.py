import pytest

from napari_cellseg._torch import torch
from napari_cellseg.model.network import ARCHS, ModelConfig, build_model, set_detections_per_img, set_proposals


def tiny_config(**kw) -> ModelConfig:
    return ModelConfig(arch="resnet18", class_names=["a", "b"], **kw)


def test_config_round_trip_uses_plain_types():
    cfg = tiny_config(detections_per_img=500)
    d = cfg.to_dict()
    assert isinstance(d["anchor_sizes"], list)
    assert ModelConfig.from_dict(d) == cfg
    assert cfg.num_classes == 3


@pytest.mark.parametrize("bad", [dict(arch="vgg"), dict(anchor_sizes=(8, 16)), dict(detections_per_img=0)])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        build_model(tiny_config(**bad) if "arch" not in bad else ModelConfig(class_names=["a"], **bad))


def test_seed_defaults():
    cfg = ModelConfig()
    assert cfg.arch == "resnet50_v2"
    assert cfg.anchor_sizes == (8, 16, 32, 64, 128) and cfg.aspect_ratios == (0.5, 1.0, 2.0)
    assert cfg.detections_per_img == 200 and cfg.box_nms_thresh == 0.3


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_with_the_configured_heads(arch):
    model = build_model(ModelConfig(arch=arch, class_names=["a", "b", "c"]))
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.roi_heads.nms_thresh == 0.3


def test_light_model_trains_batchnorm_from_scratch():
    model = build_model(tiny_config())
    norms = [m for m in model.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.weight.requires_grad for m in norms)


def test_images_are_not_resized_by_default():
    model = build_model(tiny_config()).eval()
    batch, _ = model.transform([torch.rand(3, 256, 200)])
    assert batch.image_sizes == [(256, 200)]
    model.transform.image_scale = 2.0
    batch, _ = model.transform([torch.rand(3, 256, 200)])
    assert batch.image_sizes == [(512, 400)]


def test_detect_returns_unpasted_masks_in_input_coordinates():
    torch.manual_seed(0)
    model = build_model(tiny_config(box_score_thresh=0.0)).eval()
    model.transform.image_scale = 0.5
    (det,) = model.detect([torch.rand(3, 96, 128)])
    assert det["masks"].shape[1:] == (28, 28)
    assert len(det["boxes"]) == len(det["masks"]) > 0
    assert float(det["boxes"][:, 2].max()) <= 128.0 and float(det["boxes"][:, 3].max()) <= 96.0


def test_detect_keep_drops_boxes_before_the_mask_head():
    """Tiling discards detections outside a tile's core; their masks must not be computed."""
    torch.manual_seed(0)
    model = build_model(tiny_config(box_score_thresh=0.0)).eval()
    image = torch.rand(3, 96, 128)
    (full,) = model.detect([image])
    left = full["boxes"][:, 0] < 64
    assert 0 < int(left.sum()) < len(left)
    seen = []
    model.roi_heads.mask_head.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    (kept,) = model.detect([image], keep=lambda boxes: boxes[:, 0] < 64)
    assert seen == [int(left.sum())]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(kept[key], full[key][left])
    torch.testing.assert_close(kept["masks"], full["masks"][left], atol=1e-5, rtol=1e-4)


def test_backbone_autocasts_but_heads_stay_fp32():
    """bf16 box coding breaks on large images, so only backbone + FPN may run in bf16."""
    model = build_model(tiny_config())
    model.amp_dtype = torch.bfloat16
    seen = {}

    def record(name, pick):
        def hook(module, inputs, output):
            seen[name] = pick(output).dtype

        return hook

    model.backbone.body.conv1.register_forward_hook(record("conv1", lambda o: o))
    model.roi_heads.box_predictor.register_forward_hook(record("box", lambda o: o[1]))
    model.rpn.head.register_forward_hook(record("rpn", lambda o: o[1][0]))
    model.train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
              "masks": torch.zeros(1, 64, 64, dtype=torch.uint8)}
    target["masks"][0, 10:40, 10:30] = 1
    losses = model([torch.rand(3, 64, 64)], [target])
    assert seen == {"conv1": torch.bfloat16, "rpn": torch.float32, "box": torch.float32}
    assert all(torch.isfinite(v) for v in losses.values())


def test_detection_cap_can_be_raised_for_dense_images():
    model = build_model(tiny_config())
    set_detections_per_img(model, 800)
    assert model.roi_heads.detections_per_img == 800
    assert model.rpn._post_nms_top_n["testing"] >= 800


def test_proposals_are_set_apart_from_the_cap_and_checked():
    model = build_model(tiny_config())
    set_proposals(model, 300)
    assert model.rpn._pre_nms_top_n["testing"] == model.rpn._post_nms_top_n["testing"] == 300
    assert model.rpn._post_nms_top_n["training"] == 2000  # training keeps torchvision's
    with pytest.raises(ValueError, match="proposals"):
        set_proposals(model, 0)


def test_pretrained_weights_offline_give_a_clear_error(monkeypatch):
    from napari_cellseg.errors import CheckpointError
    import urllib.error
    from torchvision.models import ResNet18_Weights

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(CheckpointError, match="--weights none"):
        build_model(tiny_config(), weights="imagenet")


def test_an_image_scale_that_leaves_no_pixels_is_a_clear_error():
    """--image-scale 0.001 crashed inside torch's interpolate (0 x 0 output)."""
    model = build_model(tiny_config()).eval()
    model.transform.image_scale = 0.001
    with pytest.raises(ValueError, match="image scale 0.001 shrinks a 96 x 128 image below 8 pixels"):
        model.detect([torch.rand(3, 96, 128)])


@pytest.mark.parametrize("changes, words", [
    ({"class_names": ["../x"]}, "cannot be part of a file name"),
    ({"class_names": ["a", "a"]}, "unique"),
    ({"class_names": ["x" * 65]}, "at most 64"),
    ({"class_names": [f"c{i}" for i in range(101)]}, "at most 100"),
    ({"aspect_ratios": []}, "aspect_ratios"),
    ({"aspect_ratios": [-1]}, "aspect_ratios"),
    ({"box_nms_thresh": "0.3"}, "box_nms_thresh"),
    ({"box_nms_thresh": float("nan")}, "box_nms_thresh"),
    ({"detections_per_img": 10_001}, "10,000"),
    ({"detections_per_img": True}, "10,000"),
    ({"image_scale": 0.001}, "image scale"),
    ({"anchor_sizes": [8, 16, 32, 64, "x"]}, "anchor_sizes"),
])
def test_from_dict_validates_a_stored_config(changes, words):
    d = {**ModelConfig(arch="resnet18").to_dict(), **changes}
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        ModelConfig.from_dict(d)
    assert ModelConfig.from_dict(ModelConfig(arch="resnet18").to_dict()) == ModelConfig(arch="resnet18")


def test_masks_computed_in_chunks_equal_masks_at_once(monkeypatch):
    from napari_cellseg.model import network

    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    model.roi_heads.score_thresh = 0.0  # random weights: keep every detection
    image = [torch.rand(3, 96, 96)]
    whole = model.detect(image)[0]
    monkeypatch.setattr(network, "MASK_CHUNK", 3)
    chunked = model.detect(image)[0]
    assert len(whole["masks"]) > 3
    torch.testing.assert_close(chunked["masks"], whole["masks"])
    assert torch.equal(chunked["boxes"], whole["boxes"])
