"""Every help text the napari widgets show, in one place, written for the person at the microscope.

Widgets look texts up by the option's name (``TRAIN["epochs"]``); changing a text never means
hunting through widget code.
"""

from __future__ import annotations

TRAIN = {
    "dataset": (
        "The folder with your annotated images, laid out as train/<sample>/image.tif plus one "
        "classK.tif mask per cell type (and optionally val/ the same way). The shipped sample "
        "data (File > Open Sample) shows the layout."
    ),
    "arch": (
        "The network. resnet18 is light and trains on an ordinary computer; resnet50 and "
        "resnet50_v2 are more accurate but want a graphics card (GPU)."
    ),
    "epochs": "How many times training goes through all your training images.",
    "batch_size": (
        "Images per training step. Larger is smoother but needs more memory; lower it if you see "
        "'out of memory'."
    ),
    "lr": (
        "Learning rate: how big each correction step is. If the loss jumps around or becomes "
        "'nan', lower it (e.g. 0.0001 -> 0.00003)."
    ),
    "device": (
        "Where the computation runs. auto picks a graphics card (CUDA or Apple MPS) when there "
        "is one, otherwise the processor (CPU, slow)."
    ),
    "amp": (
        "Mixed precision: faster and lighter on graphics cards. auto uses it where it helps; "
        "switch it off if the loss becomes 'nan'."
    ),
    "crop_size": (
        "Side in pixels of the random pieces cut from each image for training. Smaller is faster "
        "and needs less memory; it should still hold several whole cells."
    ),
    "max_steps": "Stop after this many steps in all (0 = no limit, train all epochs). Handy for a quick test.",
    "val_limit": (
        "Check the model on at most this many validation images after each epoch (0 = all). "
        "Fewer is faster; the score is then rougher."
    ),
    "out_dir": (
        "Where the trained model is saved: last.pt after each epoch (at most once a minute), at the end "
        "and on cancel; best.pt whenever the validation score improves. Without validation images there "
        "is no best.pt and Segment gets last.pt."
    ),
    "init": (
        "Start from random weights (a new network), or fine-tune a model that already finds cells: the "
        "built-in 'nuclei' model or a model you trained. Fine-tuning needs far fewer images and steps; "
        "its class names are kept, and when your classes differ each new class starts from the model's "
        "cells, so only which class is which has to be learned."
    ),
    "init_file": "The model file (.pt) to fine-tune, e.g. the best.pt of an earlier run.",
    "resume": "Optional: a last.pt from an earlier run, to continue that training where it stopped.",
    "start": "Start training. While it runs this button cancels; the model trained so far is kept as last.pt.",
    "use_cancelled": (
        "A cancelled training's model is not used on its own: Segment keeps the model it had. "
        "Click to segment with the cancelled training's last weights (last.pt) instead."
    ),
    "plot": (
        "Left: the training losses per step (should go down). "
        "Right: validation AP and AP50 per epoch (should go up)."
    ),
}

SEGMENT = {
    "model": (
        "The model that finds the cells. 'nuclei' is built in (trained on the DSB2018 nuclei images, "
        "fluorescence and stained): it works before any training. Pick 'a checkpoint file...' for a "
        "model you trained; after training here, your new model is chosen for you."
    ),
    "checkpoint": (
        "The trained model file (.pt). After training in this window it is filled in with the "
        "model you just trained."
    ),
    "image": "The image layer to segment. Greyscale, colour and RGBA images all work.",
    "channel": (
        "For an image of several channels: the one to segment (e.g. the nuclear stain, DAPI or Hoechst), "
        "or all of them merged (each stretched, the brightest kept). Channels are never taken for planes."
    ),
    "device": TRAIN["device"],
    "run": "Find the cells in the chosen image. Click again to cancel.",
    "tta": (
        "Test-time augmentation: also segment the image mirrored left-right, up-down and both, and once "
        "1.4x larger, and merge the five views: cells the views agree on are kept with averaged "
        "outlines, the rest count for less. About 4.5 times the time; on DSB2018 val it raises the "
        "built-in model's AP50 from 0.860 to 0.867 and its AP from 0.590 to 0.598."
    ),
    "diameter": (
        "Typical nucleus diameter in pixels. 'auto' (0): the model first measures the nuclei and, when "
        "they are much smaller than the size it segments best, segments again at the scale that "
        "brings them to that size (shown in the status line). Set it when auto guesses wrong."
    ),
    "score": (
        "Confidence: hide cells the model is less sure about than this (how sure it is of the cell "
        "times how sure of its outline). Moving it is instant; "
        "the model does not run again. Below {floor:g} it shows little more: the model itself "
        "already drops cells it is less sure of than that. A model tuned with napari-cellseg tune "
        "sets it to its own best value when its first result arrives."
    ),
    "mask": (
        "Mask threshold: how confident each pixel must be to belong to its cell. Higher gives "
        "tighter outlines. Instant, like the confidence slider."
    ),
    "folder": (
        "A folder of images to segment in one go: a folder of TIFF, PNG or JPEG files such as test_release/, "
        "or a folder of samples such as val/."
    ),
    "run_folder": "Segment every image of the folder. Click again to cancel; finished images are kept.",
    "review": "Step through the segmented folder. Your edits on each image are kept when you move on.",
    "discard_title": "Discard your edits?",
    "discard_review": (
        "You edited {names} in the folder review and have not exported them since. A new folder run "
        "replaces that review.\n\nDiscard those edits (Yes) or keep reviewing (No)?"
    ),
    "discard_rerun": (
        "You edited {names} by hand. The new segmentation of this image would replace those "
        "layers.\n\nDiscard the edits and show the new segmentation (Yes), or keep the edits (No)?"
    ),
    "discard": (
        "You edited {names} by hand. Moving the slider redraws the cells from the model and "
        "would throw those edits away.\n\nDiscard the edits (Yes) or keep them and leave "
        "{names} as it is (No)?"
    ),
}

EXPORT = {
    "mapping": (
        "The file that gives each test image its number (test_image_name_to_ids.json). "
        "Left empty, it is looked for next to the image and one folder up; your own images, "
        "which no such file lists, get numbers kept in <results file>.images.json beside it."
    ),
    "out": "The results file to write, in the COCO format of the challenge (e.g. test-results.json).",
    "export_layers": (
        "Write the visible segmentation layers (with your edits) to the results file. Cells "
        "you drew by hand get confidence 1.0; the model's cells keep their confidence."
    ),
    "cell_files": (
        "Also write, beside the results file, per image: imagej = a Fiji ROI set (<image>_cells.zip, open it "
        "in the ROI Manager), geojson = QuPath detections (<image>_cells.geojson, drag onto the image), "
        "csv = a table with a row per cell (area, centroid, box, mean intensity, score). Ctrl-click for several."
    ),
    "export_folder": "Write all images of the segmented folder (with your reviewed edits) to one results file.",
    "ground_truth": (
        "The correct answer to compare with: a sample folder (image.tif + classK.tif), a folder "
        "of such samples (e.g. val/), or a COCO ground-truth .json. Left empty, the sample "
        "folder of the image is used when it has masks."
    ),
    "evaluate": "Score the segmentation against the ground truth: COCO mask AP (0 = nothing right, 1 = perfect).",
    "table": "AP averages over overlap levels 0.50-0.95; AP50 counts a cell found when it overlaps the truth by half.",
}

TRAIN.update({
    "advanced": (
        "Show the finer training options (batch size, learning rate, crop size, ...). The defaults suit most data."
    ),
    "replace_title": "Replace the earlier training?",
    "replace": (
        "The output folder {folder} already holds a trained model ({files}).\n\n"
        "Replace it: the new training overwrites those files.\n"
        "New folder: train into {new} instead and keep the earlier model.\n"
        "Cancel: do not start."
    ),
    "run_size": "Space the trained models take on disk in the output folder.",
})

GUI_WORDS = {
    "(use --amp to force bf16)": "(set mixed precision to 'on' in the advanced options to force bf16)",
    "or train without AMP": "or set mixed precision to 'off' in the advanced options",
    "Train with --weights none": "Train without pretrained weights",
}
"""Phrases of core messages that name command-line options, in the words of the napari widgets."""

OS_ERRORS = {
    "ENOENT": "not found",
    "ENOTDIR": "is not a folder",
    "EISDIR": "is a folder, not a file",
    "EACCES": "you have no permission to use it",
    "EPERM": "you have no permission to use it",
    "ENOSPC": "the disk is full",
    "EROFS": "the disk is read-only",
    "EEXIST": "already exists",
}
"""What an operating-system error means, for the status line (by ``errno`` name)."""


FINETUNE = {
    "folder": (
        "A folder for your corrected images (made if new). Each image you add is saved in it as a "
        "training sample (train/<image>/image.tif + classK.tif), the layout the Train tab reads."
    ),
    "add": (
        "Save the image shown in Segment, with its masks as you corrected them, into the training set. "
        "Nothing already there is overwritten without asking."
    ),
    "steps": "How long to fine-tune. 0 picks about 30 steps per corrected image (60 to 400).",
    "tune": (
        "Fine-tune the model Segment uses on the training set (settings for a few images: short, "
        "gentle, strong augmentation). Progress, plots and Cancel are in the Train tab; then Segment "
        "uses the new model on this image."
    ),
    "replace": "{folder} already holds a sample named {name}. Replace it with the image as it is now?",
}
