"""A corpus of bad input, each case proved to end in one clear line that names the file and the problem.

From the library: the right ``CellsegError`` kind. From the CLI: exit status 1 and one line
``napari-cellseg: error: ...`` on stderr, no traceback, and nothing written half-way. The bad files
are generated here (``badfiles.py``), into ``tmp_path``. Awkward but valid input (16-bit, float,
2-channel images, a PNG saved as .tif, empty masks, one-pixel and many-piece instances, non-ASCII
names) must work.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

import badfiles
from conftest import TINY_SHAPE, write_tiny_dataset, save_untrained
from napari_cellseg.io import coco
from napari_cellseg.inference import pipeline
from napari_cellseg.io.rle import encode_mask
from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from napari_cellseg.cli.main import main
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.training.dataset import instance_targets, split_samples
from napari_cellseg.errors import CheckpointError, DatasetError
from napari_cellseg.io.images import read_image, read_image_size, read_labels
from napari_cellseg.model.network import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

PREFIX = "napari-cellseg: error: "
IS_ROOT = os.name == "posix" and os.geteuid() == 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained light model (2 classes) saved as napari-cellseg train would: enough for the CLI."""
    return save_untrained(tmp_path_factory.mktemp("ckpt") / "model.pt", detections_per_img=10)


def cli_error(capsys, *argv, progress: bool = False) -> str:
    """Run the CLI in-process; it must exit 1 with one error line (after a progress bar if ``progress``)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith(PREFIX)]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert progress or len(lines) == 1, err
    return errors[0]


def assert_names(message: str, path: Path, *words: str) -> None:
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def empty_results(tmp_path: Path) -> Path:
    return badfiles.write_json(tmp_path / "results.json", [])


# ---------------------------------------------------------------------------------------- images

BAD_IMAGES = {  # case -> words the message must hold
    "empty": ("empty (0 bytes)",),
    "random_bytes": ("not an image file",),
    "truncated": ("damaged or truncated", "failed to read"),
    "truncated_lzw": ("damaged or truncated",),
    "one_pixel": ("only 1 x 1 pixels",),
    "z_stack": ("stack of shape (5, 64, 80)", "2-D slice"),
    "t_stack": ("stack of shape (3, 64, 80)",),
    "plain_stack": ("stack of shape (12, 64, 80)",),
    "huge_header": ("declares 100000 x 100000 pixels",),
    "huge_decoded": ("4.0 GiB in memory once decoded", "cut it into tiles"),
    # (14) these were told "this is a stack ... save one 2-D slice", though stacks are read
    "zero_planes": ("holds no pixels", "(0, 64, 80)"),
    "six_channels": ("has 6 channels", "axes CYX", "one RGB or grey image"),
    "six_channels_last": ("has 6 channels", "axes YXS"),
    "cielab": ("CIELAB colour model", "save it as RGB"),  # (5) refused, not read as RGB
}
GOOD_IMAGES = ["png_named_tif", "jpeg_named_tif", "uint16", "float32", "two_channel", "two_channel_last", "cmyk",
               "palette", "white_is_zero"]


@pytest.mark.filterwarnings("ignore:.*writing zero-size array")
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_library_and_cli(case, tmp_path, capsys):
    path = badfiles.IMAGE_MAKERS[case](tmp_path / "gt" / "s0" / "image.tif")
    with pytest.raises(DatasetError) as info:
        read_image(path)
    assert_names(str(info.value), path, *BAD_IMAGES[case])
    badfiles.one_sample_folder(tmp_path / "gt", image_maker=lambda p: p)  # adds the mask next to it
    message = cli_error(capsys, "evaluate", empty_results(tmp_path), tmp_path / "gt")
    assert_names(message, path, *BAD_IMAGES[case])


@pytest.mark.parametrize("case", GOOD_IMAGES)
def test_awkward_images_work_normalised(case, tmp_path, capsys):
    path = badfiles.IMAGE_MAKERS[case](tmp_path / "gt" / "s0" / "image.tif")
    image = read_image(path)
    assert image.shape == (*TINY_SHAPE, 3) and image.dtype == np.uint8
    assert read_image_size(path) == TINY_SHAPE
    if case in ("uint16", "float32", "two_channel", "two_channel_last"):  # stretched to the full range, grey
        assert image.min() == 0 and image.max() == 255
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    if case == "png_named_tif":  # read by content, pixel for pixel
        np.testing.assert_array_equal(image, badfiles.rgb())
    badfiles.one_sample_folder(tmp_path / "gt", image_maker=lambda p: p)
    assert main(["evaluate", str(empty_results(tmp_path)), str(tmp_path / "gt")]) == 0
    assert "COCO mask AP" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["cmyk", "palette", "white_is_zero"])
def test_tiff_colour_models_are_honoured(case, tmp_path):
    """(5) CMYK was read as RGBA (the image inverted), a palette TIFF as its raw indices."""
    image = read_image(badfiles.IMAGE_MAKERS[case](tmp_path / "x.tif"))
    if case == "cmyk":
        assert np.abs(image.astype(int) - badfiles.rgb()).max() <= 1
    elif case == "palette":
        np.testing.assert_array_equal(image[0, :4], [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]])
    else:
        np.testing.assert_array_equal(image[..., 0], badfiles.rgb()[..., 0])


@pytest.mark.filterwarnings("ignore:.*writing zero-size array")
def test_predict_on_a_stack_of_zero_planes_and_six_channels(checkpoint, tmp_path, capsys):
    """(14) predict reads stacks: the message must not tell the user to save one 2-D slice."""
    for maker, words in ((badfiles.zero_planes, "holds no pixels"), (badfiles.six_channels, "has 6 channels")):
        folder = tmp_path / maker.__name__
        path = maker(folder / "x.tif")
        message = cli_error(capsys, "predict", checkpoint, folder, "--out", tmp_path / "out", "--device", "cpu",
                            progress=True)
        assert_names(message, path, words)
        assert "2-D slice" not in message
    assert not (tmp_path / "out").exists()


def test_predict_segments_a_16_bit_and_a_float_image(checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    badfiles.uint16(folder / "a.tif")
    badfiles.float32(folder / "b.tif")
    assert main(["predict", str(checkpoint), str(folder), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a_class1.tif", "a_class2.tif", "b_class1.tif", "b_class2.tif"]
    assert tifffile.imread(tmp_path / "out" / "a_class1.tif").shape == TINY_SHAPE


@pytest.mark.parametrize("maker", [badfiles.huge_header, badfiles.huge_png_header])
def test_huge_declared_size_is_refused_before_allocating(maker, tmp_path):
    path = maker(tmp_path / ("huge.tif" if maker is badfiles.huge_header else "huge.png"))
    assert path.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="100000 x 100000|too large"):
            read_image(path)
        with pytest.raises(DatasetError):
            read_image_size(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # the 10 GB the header declares was never asked for


def test_bad_image_in_predict_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys):
    path = tmp_path / "stack.tif"  # predict takes T or Z stacks (stacks.py), not both at once
    tifffile.imwrite(path, np.zeros((2, 3, 64, 80), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    message = cli_error(capsys, "predict", checkpoint, path, "--out", out, "--device", "cpu", progress=True)
    assert_names(message, path, "time points and slices")
    assert not out.exists()


# ---------------------------------------------------------------------------------------- masks

BAD_MASKS = {
    "wrong_size": ("32 x 40", "64 x 80"),
    "fractional": ("whole instance ids", "probability map"),
    "negative": ("negative",),
    "jpeg": ("JPEG", "TIFF or PNG"),
}
GOOD_MASKS = {"all_zero": 0, "one_pixel_instances": 3, "pieces": 1, "float_whole": 2}  # -> instances


@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_bad_mask_library_and_cli(case, tmp_path, capsys):
    badfiles.one_sample_folder(tmp_path / "gt", masks={1: badfiles.MASK_MAKERS[case]})
    path = tmp_path / "gt" / "s0" / "class1.tif"
    with pytest.raises(DatasetError) as info:
        read_labels(path, shape=(*TINY_SHAPE, 3))
    assert_names(str(info.value), path, *BAD_MASKS[case])
    message = cli_error(capsys, "evaluate", empty_results(tmp_path), tmp_path / "gt")
    assert_names(message, path, *BAD_MASKS[case])


@pytest.mark.parametrize("case", sorted(GOOD_MASKS))
def test_awkward_masks_are_valid(case, tmp_path, capsys):
    badfiles.one_sample_folder(tmp_path / "gt", masks={1: badfiles.MASK_MAKERS[case]})
    (sample,) = find_samples(tmp_path / "gt")
    image, labels = read_sample(sample)
    masks, classes, boxes, skipped = instance_targets(labels, image.shape)
    assert len(masks) == GOOD_MASKS[case] and skipped == 0
    if case == "one_pixel_instances":
        assert (boxes[:, 2:] - boxes[:, :2] == 1).all() and (masks.sum(axis=(1, 2)) == 1).all()
    if case == "pieces":  # three pieces, one instance whose box spans them all
        assert boxes.tolist() == [[0.0, 2.0, 70.0, 64.0]] and masks[0].sum() == 16 + 40 + 12
    gt = pipeline.samples_ground_truth([sample], ["class1"])
    assert len(gt["annotations"]) == GOOD_MASKS[case]
    assert main(["evaluate", str(empty_results(tmp_path)), str(tmp_path / "gt")]) == 0


def test_same_id_in_two_class_files_is_two_instances(tmp_path):
    labels = np.zeros(TINY_SHAPE, np.uint16)
    labels[5:15, 5:15] = 1
    other = np.zeros(TINY_SHAPE, np.uint16)
    other[40:50, 40:60] = 1
    badfiles.one_sample_folder(tmp_path / "gt", masks={1: lambda p: badfiles.mask(p, labels),
                                                       2: lambda p: badfiles.mask(p, other)})
    (sample,) = find_samples(tmp_path / "gt")
    image, read = read_sample(sample)
    masks, classes, _, _ = instance_targets(read, image.shape)
    assert classes.tolist() == [1, 2] and [m.sum() for m in masks] == [100, 200]
    gt = pipeline.samples_ground_truth([sample], ["class1", "class2"])
    assert [a["category_id"] for a in gt["annotations"]] == [1, 2]


def test_bad_mask_in_a_data_loader_worker_is_one_line(tmp_path, capsys):
    """A worker process re-raises the error with its whole traceback inside; the user sees one line."""
    root = write_tiny_dataset(tmp_path / "ds")
    for sample in (root / "train").iterdir():
        badfiles.mask_negative(sample / "class1.tif")
    message = cli_error(capsys, "train", root, "--out", tmp_path / "run", "--arch", "resnet18", "--epochs", "1",
                        "--crop-size", "64", "--device", "cpu", "--workers", "1", "--no-amp", progress=True)
    assert "class1.tif: a mask must not hold negative values" in message
    assert "Original Traceback" not in message and "File " not in message
    assert not list((tmp_path / "run").glob("*.pt"))


# ---------------------------------------------------------------------------------------- dataset folders


def _layouts(tmp: Path) -> dict[str, tuple[Path, Path, str]]:
    """case -> (dataset root, path the message names, word it holds)."""
    cases = {}
    (tmp / "empty").mkdir()
    cases["empty folder"] = (tmp / "empty", tmp / "empty", "no 'train' folder")
    (tmp / "only_val" / "val" / "v0").mkdir(parents=True)
    cases["no train/"] = (tmp / "only_val", tmp / "only_val", "no 'train' folder")
    cases["missing folder"] = (tmp / "nowhere", tmp / "nowhere", "not found")
    (tmp / "a_file").write_text("x")
    cases["dataset is a file"] = (tmp / "a_file", tmp / "a_file", "found a file")
    (tmp / "train_file").mkdir()
    (tmp / "train_file" / "train").write_text("x")
    cases["train/ is a file"] = (tmp / "train_file", tmp / "train_file" / "train", "found a file")
    (tmp / "empty_train" / "train").mkdir(parents=True)
    (tmp / "empty_train" / "train" / "notes.txt").write_text("stray files are not samples")
    cases["no samples"] = (tmp / "empty_train", tmp / "empty_train" / "train", "no sample folders")
    no_image = write_tiny_dataset(tmp / "no_image")
    (no_image / "train" / "sample_1" / "image.tif").unlink()
    cases["sample without image.tif"] = (no_image, no_image / "train" / "sample_1", "has no image.tif")
    image_dir = write_tiny_dataset(tmp / "image_dir")
    (image_dir / "train" / "sample_2" / "image.tif").unlink()
    (image_dir / "train" / "sample_2" / "image.tif").mkdir()
    cases["image.tif is a folder"] = (image_dir, image_dir / "train" / "sample_2" / "image.tif", "is a folder")
    return cases


CASES = ["empty folder", "no train/", "missing folder", "dataset is a file", "train/ is a file", "no samples",
         "sample without image.tif", "image.tif is a folder"]


@pytest.mark.parametrize("case", CASES)
def test_bad_dataset_folder_library_and_cli(case, tmp_path, capsys):
    root, named, word = _layouts(tmp_path)[case]
    with pytest.raises(DatasetError) as info:
        split_samples(root)
    assert_names(str(info.value), named, word)
    out = tmp_path / "run"
    message = cli_error(capsys, "train", root, "--out", out, "--arch", "resnet18", "--device", "cpu")
    assert_names(message, named, word)
    assert not out.exists()  # a failed start leaves no run folder behind


def test_stray_files_beside_samples_are_ignored(tiny_dataset):
    (tiny_dataset / "train" / "README.txt").write_text("notes")
    (tiny_dataset / "train" / ".DS_Store").write_bytes(b"\0\1")
    (tiny_dataset / "train" / ".ipynb_checkpoints").mkdir()
    assert len(split_samples(tiny_dataset)[0]) == 4


@pytest.mark.skipif(IS_ROOT or os.name != "posix", reason="root reads and writes anything")
def test_unreadable_files_and_folders(tiny_dataset, tmp_path, capsys):
    image = tiny_dataset / "train" / "sample_0" / "image.tif"
    image.chmod(0o000)
    try:
        with pytest.raises(DatasetError, match="permission denied"):
            read_image(image)
    finally:
        image.chmod(0o644)
    folder = tiny_dataset / "train"
    folder.chmod(0o000)
    try:
        message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--arch", "resnet18")
        assert_names(message, folder, "permission denied")
    finally:
        folder.chmod(0o755)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    message = cli_error(capsys, "train", tiny_dataset, "--out", locked / "run", "--arch", "resnet18")
    assert_names(message, locked, "permission denied")


def test_non_ascii_and_space_names_work_end_to_end(tmp_path, capsys):
    """Train one step, export and evaluate with accents, CJK and spaces in every name."""
    root = write_tiny_dataset(tmp_path / "données de test" / "jeu n°1")
    (root / "train" / "sample_0").rename(root / "train" / "échantillon 0")
    (root / "train" / "sample_1").rename(root / "train" / "細胞 1")
    (root / "test_release" / "test_0.tif").rename(root / "test_release" / "tëst 0 µm.tif")
    mapping = json.loads((root / "test_image_name_to_ids.json").read_text(encoding="utf-8"))
    mapping[0]["file_name"] = "tëst 0 µm.tif"
    (root / "test_image_name_to_ids.json").write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    run = tmp_path / "sortie ü" / "run 1"
    assert main(["train", str(root), "--out", str(run), "--arch", "resnet18", "--epochs", "1", "--max-steps", "1",
                 "--crop-size", "64", "--device", "cpu", "--val-limit", "1", "--no-amp", "--detections", "10"]) == 0
    out = tmp_path / "résultats 1.json"
    assert main(["export", str(run / "last.pt"), str(root), "--out", str(out), "--device", "cpu"]) == 0
    assert {r["image_id"] for r in json.loads(out.read_text(encoding="utf-8"))} <= {1, 2}
    assert main(["evaluate", str(out), str(root / "val")]) == 0
    capsys.readouterr()


# ---------------------------------------------------------------------------------------- mapping JSON


def _mapping_cases(root: Path) -> dict[str, tuple[object, str]]:
    entries = json.loads((root / "test_image_name_to_ids.json").read_text())
    return {
        "malformed": ("[{", "not valid JSON"),
        "not a list": ({"test_0.tif": 1}, "must hold a list"),
        "missing a test image": (entries[:1], "test_1.tif"),
        "duplicate ids": ([dict(e, id=1) for e in entries], "id 1 is used twice"),
        "duplicate names": ([entries[0], dict(entries[0], id=7)], "listed twice"),
        "wrong height": ([dict(e, height=99) for e in entries], "says 99x80"),
        "wrong width": ([dict(e, width=81) for e in entries], "says 64x81"),
        "missing key": ([{"file_name": "test_0.tif", "id": 1}], "needs keys"),
        "id not a number": ([dict(e, id=str(e["id"])) for e in entries], "must be integers"),
        "image outside the folder": ([entries[0], dict(entries[1], file_name="../train/sample_0/image.tif")],
                                     "not a path"),
        "absolute path": ([entries[0], dict(entries[1], file_name=str(root / "x.tif"))], "not a path"),
        "image missing from the folder": ([*entries, dict(entries[0], file_name="gone.tif", id=3)],
                                          "--allow-missing"),
        "nested thousands deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # was RecursionError
        "plane number not ASCII digits": ([*entries, dict(entries[0], file_name="test_0.tif#\u00b2", id=3)],
                                          "test_0.tif#\u00b2"),  # passed isdigit(), then int() failed
    }


MAPPING_CASES = ["malformed", "not a list", "missing a test image", "duplicate ids", "duplicate names",
                 "wrong height", "wrong width", "missing key", "id not a number", "image outside the folder",
                 "absolute path", "image missing from the folder", "nested thousands deep",
                 "plane number not ASCII digits"]


@pytest.mark.parametrize("case", MAPPING_CASES)
def test_bad_mapping_library_and_cli(case, tiny_dataset, tmp_path, checkpoint, capsys):
    mapping = tiny_dataset / "test_image_name_to_ids.json"
    content, word = _mapping_cases(tiny_dataset)[case]
    mapping.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DatasetError) as info:
        pipeline.export_items(tiny_dataset)
    assert_names(str(info.value), mapping, word)
    out = tmp_path / "out" / "test-results.json"
    message = cli_error(capsys, "export", checkpoint, tiny_dataset, "--out", out, "--device", "cpu")
    assert_names(message, mapping, word)
    assert not (tmp_path / "out").exists()  # refused before anything, even the resume log, is written


# ---------------------------------------------------------------------------------------- COCO JSON


def _result(**changes) -> dict:
    mask = np.zeros(TINY_SHAPE, bool)
    mask[10:20, 10:30] = True
    return {"image_id": 1, "bbox": [10.0, 10.0, 20.0, 10.0], "score": 0.9, "category_id": 1,
            "segmentation": encode_mask(mask), **changes}


RESULT_CASES = {  # case -> (file content, words)
    "malformed": ('[{"image_id": 1,', ("not valid JSON",)),
    "binary": (b"\x89\xff\x00garbage", ("not valid JSON",)),
    "not a list": ({"annotations": []}, ("must hold a list",)),
    "missing keys": ([{"image_id": 1, "score": 0.5}], ("entry 0", "needs keys")),
    "RLE of another image size": ([_result(segmentation=encode_mask(np.ones((10, 10), bool)))],
                                  ("entry 0", "10 x 10", "64 x 80")),
    "RLE runs do not fit its size": ([_result(segmentation={"size": [64, 80], "counts": [100, 5]})],
                                     ("entry 0", "bad segmentation", "105 pixels")),
    "RLE garbage": ([_result(segmentation={"size": [64, 80], "counts": "\x01\x02"})], ("bad segmentation",)),
    "absurd category": ([_result(), _result(category_id=20000)], ("entry 1", "class 20000 is not a class number")),
    "score NaN": ('[{"image_id": 1, "category_id": 1, "score": NaN, "segmentation": {"size": [64, 80], '
                  '"counts": [5120]}}]', ("score must be a finite number",)),
    "image id not in the ground truth": ([_result(image_id=42)], ("image id 42",)),
    "nested thousands deep": ("[" * 100_000 + "]" * 100_000, ("nested too deeply",)),
}


@pytest.mark.parametrize("case", sorted(RESULT_CASES))
def test_bad_results_json_evaluate(case, tiny_dataset, tmp_path, capsys):
    content, words = RESULT_CASES[case]
    path = tmp_path / "results.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    message = cli_error(capsys, "evaluate", path, tiny_dataset / "val")
    assert_names(message, path, *words)


def test_bad_results_json_import_with_the_mapping(tiny_dataset, tmp_path):
    """What opening a submission next to its mapping file checks (the napari reader's path)."""
    mapping = coco.load_mapping(tiny_dataset / "test_image_name_to_ids.json")
    ids = {e["id"] for e in mapping.values()}
    sizes = {e["id"]: (e["height"], e["width"]) for e in mapping.values()}
    path = badfiles.write_json(tmp_path / "r.json", [_result(), _result(image_id=77)])
    with pytest.raises(DatasetError, match=r"entry 1: image id 77 is not in the mapping file") as info:
        coco.read_results(path, mapping_ids=ids, image_sizes=sizes)
    assert str(path) in str(info.value)
    wrong = encode_mask(np.ones((80, 64), bool))  # transposed: the classic height/width mix-up
    badfiles.write_json(path, [_result(segmentation=wrong)])
    with pytest.raises(DatasetError, match=r"entry 0: the mask is 80 x 64 but image 1 is 64 x 80"):
        coco.read_results(path, mapping_ids=ids, image_sizes=sizes)
    badfiles.write_json(path, [_result(category_id=0)])
    with pytest.raises(DatasetError, match="category 0 is not one of 1..2"):
        coco.read_results(path, num_classes=2)
    good = coco.read_results(badfiles.write_json(path, [_result()]), mapping_ids=ids, image_sizes=sizes)
    assert len(good) == 1


# ---------------------------------------------------------------------------------------- checkpoints


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def bad_checkpoints(checkpoint, tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """case -> (checkpoint file, words the message must hold); a pickled exploit would touch ``pwned``."""
    good, tmp = checkpoint, tmp_path_factory.mktemp("bad_ckpt")
    marker = tmp / "pwned"
    ckpt = load_checkpoint(good)
    paths = {}

    def write(name: str, obj) -> Path:
        torch.save(obj, tmp / name)
        return tmp / name

    paths["missing"] = (tmp / "missing.pt", ("checkpoint not found",))
    (tmp / "empty.pt").write_bytes(b"")
    paths["empty"] = (tmp / "empty.pt", ("damaged or truncated",))
    (tmp / "truncated.pt").write_bytes(good.read_bytes()[:20_000])
    paths["truncated"] = (tmp / "truncated.pt", ("damaged or truncated",))
    (tmp / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    paths["random bytes"] = (tmp / "random.pt", ("damaged or not a PyTorch checkpoint",))
    (tmp / "notes.pt").write_text("these are not weights\n" * 20)
    paths["text file"] = (tmp / "notes.pt", ("damaged",))
    paths["plain state_dict"] = (write("bare.pt", ckpt["model"]), ("not a napari-cellseg checkpoint",))
    paths["code in torch.save"] = (write("evil.pt", {"format": "napari-cellseg/1", "x": _Exploit(marker)}),
                                   ("could run code",))
    (tmp / "evil.pkl").write_bytes(pickle.dumps({"model": _Exploit(marker)}))
    paths["code in a plain pickle"] = (tmp / "evil.pkl", ("damaged or not a PyTorch checkpoint",))
    paths["another class count"] = (
        write("classes.pt", {**ckpt, "config": {**ckpt["config"], "class_names": ["a", "b", "c"]}}),
        ("does not fit", "weights of another shape", "cls_score"),
    )
    paths["another architecture"] = (
        write("arch.pt", {**ckpt, "config": {**ckpt["config"], "arch": "resnet50"}}),
        ("does not fit", "weights missing"),
    )
    paths["overwritten tensor bytes"] = (badfiles.overwritten_tensor(good, tmp / "overwritten.pt"),
                                         ("is damaged", "fails its checksum"))
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    for value in ("nan", "inf"):
        broken = {**ckpt["model"], first: torch.full_like(ckpt["model"][first], float(value))}
        paths[f"{value} weights"] = (write(f"{value}.pt", {**ckpt, "model": broken}), ("not finite", first))
    no_config = write("noconfig.pt", {"format": ckpt["format"], "model": ckpt["model"]})
    paths["no config"] = (no_config, ("is incomplete", "'config'"))
    for n, (case, (key, value, words)) in enumerate(HOSTILE_CONFIGS.items()):
        config = {**ckpt["config"], key: value}
        paths[case] = (write(f"hostile_{n}.pt", {**ckpt, "config": config}),
                       ("unusable model configuration", *words))
    return paths


HOSTILE_CONFIGS = {  # case -> (config key, value, words): each crashed, or wrote files elsewhere, before
    "class name with ../": ("class_names", ["../../outside", "class2"], ("'../../outside'", "file name")),
    "class name with a slash": ("class_names", ["a/b", "class2"], ("file name",)),
    "class name with NUL": ("class_names", ["a\0b", "class2"], ("file name",)),
    "empty class name": ("class_names", ["", "class2"], ("non-empty",)),
    "duplicate class names": ("class_names", ["class1", "CLASS1"], ("unique",)),
    "no aspect ratios": ("aspect_ratios", [], ("aspect_ratios",)),
    "100,000 aspect ratios": ("aspect_ratios", [1.0] * 100_000, ("aspect_ratios needs 3", "100000 values")),
    "one aspect ratio for a 3-anchor head": ("aspect_ratios", [1.0], ("aspect_ratios needs 3", "proposal head")),
    "class name with a bidi override": ("class_names", ["nu\u202egnp.exe", "class2"],
                                        ("file name", "text-direction", "\\\\u202e")),
    "class name with a C1 control": ("class_names", ["a\x9bb", "class2"], ("file name",)),
    "class name with a zero-width space": ("class_names", ["class\u200b1", "class1"], ("file name",)),
    "NMS threshold as text": ("box_nms_thresh", "0.3", ("box_nms_thresh", "between 0 and 1")),
    "a billion detections": ("detections_per_img", 10**9, ("10,000",)),
    "detections as 1e9": ("detections_per_img", 1e9, ("10,000",)),
}


CHECKPOINT_CASES = ["missing", "empty", "truncated", "random bytes", "text file", "plain state_dict",
                    "code in torch.save", "code in a plain pickle", "another class count", "another architecture",
                    "no config", "overwritten tensor bytes", "nan weights", "inf weights", *HOSTILE_CONFIGS]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_bad_checkpoint_library_and_cli(case, bad_checkpoints, tiny_dataset_module, tmp_path, capsys):
    path, words = bad_checkpoints[case]
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert_names(str(info.value), path, *words)
    out = tmp_path / "out"
    for argv in (["predict", path, tiny_dataset_module / "test_release", "--out", out],
                 ["export", path, tiny_dataset_module, "--out", out / "test-results.json"]):
        assert_names(cli_error(capsys, *argv, "--device", "cpu"), path, *words)
    assert not out.exists()
    assert not (path.parent / "pwned").exists()  # nothing ran while loading


def test_code_in_a_checkpoint_is_refused_in_a_real_process(tiny_dataset, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "napari-cellseg/1", "model": _Exploit(marker)}, evil)
    proc = subprocess.run([sys.executable, "-m", "napari_cellseg", "export", str(evil), str(tiny_dataset), "--out",
                           str(tmp_path / "r.json"), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(PREFIX) and len(proc.stderr.strip().splitlines()) == 1
    assert "could run code" in proc.stderr and str(evil) in proc.stderr
    assert not marker.exists() and not (tmp_path / "r.json").exists()


def test_resume_from_a_checkpoint_with_fewer_classes_than_the_dataset(checkpoint, tiny_dataset, tmp_path, capsys):
    labels = np.zeros(TINY_SHAPE, np.uint16)
    labels[5:20, 5:20] = 1
    badfiles.mask(tiny_dataset / "train" / "sample_1" / "class3.tif", labels)
    message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--resume", checkpoint,
                        "--device", "cpu", "--crop-size", "64")
    assert_names(message, checkpoint, "trained for 2 classes", "class3.tif")
    assert not (tmp_path / "run").exists()


def test_resume_with_a_bad_checkpoint_writes_nothing(tiny_dataset, tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "napari-cellseg/1", "x": _Exploit(tmp_path / "pwned")}, evil)
    message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--resume", evil, "--arch",
                        "resnet18", "--device", "cpu")
    assert_names(message, evil, "could run code")
    assert not (tmp_path / "run").exists() and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------- CLI arguments


@pytest.mark.parametrize("args, words", [
    (["--epochs", "-1"], "argument --epochs: must be at least 1, got -1"),
    (["--epochs", "ten"], "argument --epochs: expected a whole number, got 'ten'"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--crop-size", "0"], "argument --crop-size: must be at least 1"),
    (["--arch", "vgg"], "argument --arch: invalid choice: 'vgg'"),
])
def test_bad_train_arguments_are_one_usage_line(args, words, tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", str(tiny_dataset), "--out", str(tmp_path / "run"), *args])
    assert info.value.code == 2  # argparse's usage-error status
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and len(err.strip().splitlines()) == 1 and words in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, words", [
    (["--score-thresh", "1.5"], "must be between 0 and 1, got 1.5"),
    (["--mask-thresh", "high"], "expected a number, got 'high'"),
    (["--tile-size", "0"], "must be at least 1"),
])
def test_bad_export_arguments_are_one_usage_line(args, words, tiny_dataset, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", str(checkpoint), str(tiny_dataset), "--out", str(tmp_path / "r.json"), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(PREFIX) and len(err.strip().splitlines()) == 1 and words in err


@pytest.mark.parametrize("args, words", [
    (["--lr", "-0.1"], "learning rate must be positive"),
    (["--lr", "0"], "learning rate must be positive"),
    (["--workers", "-2"], "workers cannot be negative"),
])
def test_bad_train_settings_are_one_line(args, words, tiny_dataset, tmp_path, capsys):
    message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--arch", "resnet18", *args)
    assert words in message
    assert not (tmp_path / "run").exists()


def test_output_paths_that_cannot_be_written(tiny_dataset, checkpoint, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("precious")
    under_file = a_file / "sub" / "run"  # what an unwritable folder looks like to root, too
    for out, words in ((a_file, "is a file, not a folder"), (under_file, "is a file")):
        message = cli_error(capsys, "train", tiny_dataset, "--out", out, "--arch", "resnet18", "--device", "cpu")
        assert_names(message, a_file, "output folder", words)
        message = cli_error(capsys, "predict", checkpoint, tiny_dataset / "test_release", "--out", out,
                            "--device", "cpu")
        assert_names(message, a_file, "output folder", words)
    message = cli_error(capsys, "export", checkpoint, tiny_dataset, "--out", a_file / "r.json", "--device", "cpu")
    assert_names(message, a_file, "is a file")
    message = cli_error(capsys, "export", checkpoint, tiny_dataset, "--out", tmp_path, "--device", "cpu")
    assert_names(message, tmp_path, "is a folder")
    assert a_file.read_text() == "precious"


# ---------------------------------------------------------------------------------------- round 2 (issue 12)


def test_a_hostile_class_name_writes_nothing_outside_out(bad_checkpoints, tiny_dataset, tmp_path, capsys):
    """Class names become file names: ``../../outside`` used to write ``<image>_../../outside.tif``."""
    path, _ = bad_checkpoints["class name with ../"]
    out = tmp_path / "a" / "b" / "out"
    before = sorted(tmp_path.rglob("*"))
    message = cli_error(capsys, "predict", path, tiny_dataset / "test_release", "--out", out, "--device", "cpu")
    assert_names(message, path, "class name")
    assert sorted(tmp_path.rglob("*")) == before  # no label file anywhere, not even the output folder


def test_predict_refuses_images_that_would_share_label_files(checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    for name in ("x.tif", "x.TIF", "x.tiff"):
        badfiles.uint16(folder / name)
    message = cli_error(capsys, "predict", checkpoint, folder, "--out", tmp_path / "out", "--device", "cpu")
    assert "x_<class>.tif" in message and "rename one" in message
    assert not (tmp_path / "out").exists()


def test_a_stray_class_number_is_refused_not_allocated(tiny_dataset, tmp_path, capsys):
    stray = badfiles.mask(tiny_dataset / "train" / "sample_1" / "class1000000.tif", np.zeros(TINY_SHAPE, np.uint16))
    message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--arch", "resnet18",
                        "--device", "cpu")
    assert_names(message, stray, "class 1000000", "100 classes")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, words", [
    (["--image-scale", "0.001"], "image scale must be between 0.05 and 8"),
    (["--time-limit", "inf"], "time limit must be a positive number of minutes"),
    (["--time-limit", "nan"], "time limit must be a positive number of minutes"),
    (["--detections", "1000000000"], "from 1 to 10,000"),
])
def test_extreme_train_settings_are_one_line(args, words, tiny_dataset, tmp_path, capsys):
    message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--arch", "resnet18", *args)
    assert words in message
    assert not (tmp_path / "run").exists()


def test_resume_from_a_checkpoint_without_training_state(tiny_dataset, tmp_path, capsys):
    config = ModelConfig(arch="resnet18", class_names=["class1", "class2"], detections_per_img=10)
    best = save_checkpoint(tmp_path / "best.pt", build_model(config), config, epoch=3, history=[])
    message = cli_error(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--resume", best,
                        "--device", "cpu", "--crop-size", "64")
    assert_names(message, best, "no training state", "resume from the run's last.pt")
    assert not (tmp_path / "run").exists()


def test_train_refuses_to_replace_an_earlier_run_unless_told(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"an earlier run's model")
    message = cli_error(capsys, "train", tiny_dataset, "--out", run, "--arch", "resnet18", "--device", "cpu")
    assert_names(message, run, "best.pt", "--overwrite", "--resume")
    assert (run / "best.pt").read_bytes() == b"an earlier run's model"
    argv = ["train", str(tiny_dataset), "--out", str(run), "--arch", "resnet18", "--device", "cpu", "--crop-size",
            "64", "--max-steps", "1", "--epochs", "1", "--val-limit", "1", "--detections", "10", "--no-amp"]
    assert main([*argv, "--overwrite"]) == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 1 and "optimizer" in ckpt  # last.pt: what resume needs
    best = load_checkpoint(run / "best.pt")  # replaced by this run's, which holds what inference needs only
    assert "optimizer" not in best and "scheduler" not in best and "scaler" not in best and best["history"]


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "run").mkdir(parents=True)
    (out / "run" / "precious.tif").write_bytes(b"a week of annotation")
    message = cli_error(capsys, "demo", "--out", out, "--device", "cpu")
    assert_names(message, out, "did not make", "new or empty folder")
    assert (out / "run" / "precious.tif").read_bytes() == b"a week of annotation"
    assert sorted(p.name for p in out.rglob("*")) == ["precious.tif", "run"]


def test_demo_takes_a_new_folder_and_its_own_again(tmp_path):
    from napari_cellseg.cli.commands import DEMO_MARK, _claim_demo_folder

    out = tmp_path / "new"
    _claim_demo_folder(out)
    (out / "run").mkdir()
    _claim_demo_folder(out)  # an earlier demo's folder: fine
    assert (out / DEMO_MARK).is_file()


def test_validation_with_a_cell_free_sample(checkpoint, tiny_dataset):
    """A sample with no classK.tif is legal (an image without cells); validation used to stop on it."""
    for mask in (tiny_dataset / "val" / "val_1").glob("class*.tif"):
        mask.unlink()
    model, config = load_model(checkpoint)
    samples = find_samples(tiny_dataset / "val")
    assert not samples[1].mask_paths
    metrics = pipeline.validate(model, samples, config.class_names)
    assert "AP" in metrics
    gt = pipeline.samples_ground_truth(samples, config.class_names)
    assert [img["height"] for img in gt["images"]] == [TINY_SHAPE[0]] * 2
    assert {a["image_id"] for a in gt["annotations"]} == {1}


def test_huge_instance_ids_cost_no_memory(tmp_path):
    labels = np.zeros(TINY_SHAPE, np.int64)
    labels[5:15, 5:15] = 2**31 - 1  # the largest id the mask reader accepts
    labels[20:30, 20:30] = 2**25
    badfiles.mask(tmp_path / "s" / "class1.tif", labels.astype(np.uint32))
    read = read_labels(tmp_path / "s" / "class1.tif")
    tracemalloc.start()
    try:
        results = coco.labels_to_results({1: read}, 1, scores={2**31 - 1: 0.9, 2**25: 0.8})
        gt = coco.ground_truth([(1, "s", {1: read})], ["class1"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # one slot per possible id would be 16 GB
    assert sorted(r["score"] for r in results) == [0.8, 0.9]  # ids kept: the score table still applies
    assert [r["bbox"] for r in sorted(results, key=lambda r: r["score"])] == [[20.0, 20.0, 10.0, 10.0],
                                                                              [5.0, 5.0, 10.0, 10.0]]
    assert len(gt["annotations"]) == 2


def test_negative_ids_are_reported_not_dropped():
    labels = np.zeros(TINY_SHAPE, np.int32)
    labels[5:15, 5:15] = -3
    labels[20:30, 20:30] = 1
    with pytest.raises(DatasetError, match="negative id -3"):
        coco.labels_to_results({1: labels}, 1)


def test_write_labels_refuses_ids_that_do_not_fit(tmp_path):
    from napari_cellseg.io.images import write_labels

    labels = np.zeros(TINY_SHAPE, np.int64)
    labels[5:15, 5:15] = 2**32  # would wrap to 0 (background) in uint32
    with pytest.raises(ValueError, match="does not fit a label TIFF"):
        write_labels(tmp_path / "l.tif", labels)
    labels[5:15, 5:15] = -1
    with pytest.raises(ValueError, match="negative ids"):
        write_labels(tmp_path / "l.tif", labels)
    assert not list(tmp_path.iterdir())


def test_rle_counts_beyond_int64_are_one_line(tiny_dataset, tmp_path, capsys):
    path = badfiles.write_json(tmp_path / "r.json", [_result(segmentation={"size": [64, 80], "counts": [2**70, 5]})])
    message = cli_error(capsys, "evaluate", path, tiny_dataset / "val")
    assert_names(message, path, "entry 0", "run length outside 0..5120")


def test_export_with_allow_missing_exports_the_images_present(checkpoint, tiny_dataset, tmp_path, capsys):
    mapping = tiny_dataset / "test_image_name_to_ids.json"
    entries = json.loads(mapping.read_text())
    mapping.write_text(json.dumps([*entries, dict(entries[0], file_name="gone.tif", id=3)]))
    out = tmp_path / "r.json"
    assert main(["export", str(checkpoint), str(tiny_dataset), "--out", str(out), "--device", "cpu",
                 "--allow-missing"]) == 0
    assert {r["image_id"] for r in json.loads(out.read_text())} <= {1, 2}
    printed = capsys.readouterr().out
    assert "for 2 images" in printed and "gone.tif" in printed
    assert "1 image(s) of the mapping file were not found" in printed


# ------------------------------------------------------------ round 3 (issue 21): outputs, names, messages


def test_predict_never_writes_among_its_input_images(checkpoint, tmp_path, capsys):
    """(1) --out set to the image folder wrote a_class1.tif over an input of that name, then
    segmented it as an image."""
    folder = tmp_path / "images"
    badfiles.uint16(folder / "a.tif")
    victim = badfiles.uint16(folder / "a_class1.tif")
    before = victim.read_bytes()
    for out in (folder, tmp_path / "link"):
        if out.name == "link":
            out.symlink_to(folder)
        message = cli_error(capsys, "predict", checkpoint, folder, "--out", out, "--device", "cpu")
        assert_names(message, out, "is the image folder itself", "another folder")
    assert victim.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["a.tif", "a_class1.tif"]


def test_export_into_a_new_folder(checkpoint, tiny_dataset_module, tmp_path, capsys):
    """(13) export --out newdir/res.json failed with [Errno 2] ... res.json.lock."""
    out = tmp_path / "new" / "deeper" / "res.json"
    assert main(["export", str(checkpoint), str(tiny_dataset_module / "val"), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert isinstance(json.loads(out.read_text()), list)
    assert sorted(p.name for p in out.parent.iterdir()) == ["res.json"]
