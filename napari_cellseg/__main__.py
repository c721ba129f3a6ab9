"""``python -m napari_cellseg`` (and ``torchrun -m napari_cellseg train ...``)."""

from .cli.main import main

raise SystemExit(main())
