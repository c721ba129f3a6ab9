"""Helpers every widget shares: one-line messages in the GUI's words, short names for the docks."""

from __future__ import annotations

from napari_cellseg._gui_session import one_line, short_name
from napari_cellseg.errors import DatasetError


def test_os_errors_read_without_errno():
    error = FileNotFoundError(2, "No such file or directory", "/data/run/best.pt")
    assert one_line(error) == "no such file or directory: /data/run/best.pt"
    assert one_line(PermissionError(13, "Permission denied")) == "permission denied"
    assert one_line(DatasetError("val/: no sample folders in it\nmore detail")) == "val/: no sample folders in it"


def test_short_names_keep_both_ends():
    name = "06350c7cc618be442c15706db7a68e91f313758d224de4608f9b960106d4f9ca"
    short = short_name(name)
    assert len(short) <= 28 and short.startswith("06350c7cc618") and short.endswith("06d4f9ca")
    assert short_name("test_0.tif") == "test_0.tif"
