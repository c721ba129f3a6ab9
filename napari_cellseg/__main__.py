"""``python -m napari_cellseg`` (and ``torchrun -m napari_cellseg train ...``)."""

from .cli import main

raise SystemExit(main())
