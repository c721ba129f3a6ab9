"""The napari plugin: every widget, the session, layers, jobs, reader, writer and samples.

The only subpackage that imports Qt or napari."""
