"""Exceptions the CLI and the GUI turn into one clear line for the user."""


class CellsegError(Exception):
    """Base class: the message is written for a biologist and names the file at fault."""


class DatasetError(CellsegError):
    """A dataset folder, image, mask or mapping file is missing or malformed."""


class CheckpointError(CellsegError):
    """A checkpoint is missing, damaged, unsafe or does not fit the model."""


class TrainingError(CellsegError):
    """Training cannot go on (non-finite loss, out of memory); the last good checkpoint is kept."""


class OutputError(CellsegError):
    """An output file or folder cannot be written as asked (a folder where a file was meant, no
    permission, an earlier run's files, a name that is not a plain file name)."""


class LayerError(CellsegError):
    """What napari shows cannot be used as asked: no segmentation layer, a layer whose image or
    cell class is unknown, two layers for one class, or nothing segmented yet."""


def without_worker_traceback(exc: CellsegError) -> CellsegError:
    """The error as the user should read it: a DataLoader worker re-raises a bad file's one line
    prefixed with the worker's whole traceback, whose last line is ``module.Class: message``."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    last = text.strip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)


class DetectionCapWarning(UserWarning):
    """A tile held more detections than the cap allowed: some cells may be missing there. The CLI
    prints it as one line; the GUI shows ``RawInstances.capped_tiles`` in its status line."""
