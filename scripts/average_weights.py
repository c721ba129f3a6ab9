"""Average the weights of several runs that continued the same model (a "model soup") into one checkpoint.

Run: python scripts/average_weights.py RUN1/last.pt RUN2/last.pt [...] --out SOUP/run/last.pt
The result is a checkpoint like a run's (config and confidence of the first source; ``step`` counts
every run's steps, so ``pack_model.py`` credits them all); pack and measure it as any run's
(``scripts/ship_nuclei.sh``). See ``napari_cellseg/model/averaging.py`` for why it works.
"""

from __future__ import annotations

import argparse

from napari_cellseg.errors import CheckpointError
from napari_cellseg.model.averaging import average_checkpoints


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints of one architecture and class list")
    p.add_argument("--out", required=True, help="the averaged checkpoint to write")
    args = p.parse_args()
    try:
        out = average_checkpoints(args.checkpoints, args.out)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{out}: the mean of {len(args.checkpoints)} checkpoints' weights")


if __name__ == "__main__":
    main()
