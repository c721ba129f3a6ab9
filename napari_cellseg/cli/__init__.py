"""The command line ``napari-cellseg train|predict|evaluate|export|...``."""
