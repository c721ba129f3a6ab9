"""Copy a small, fixed subset of DSB2018 (CC0) into the package as offline sample data.

Run from the repository root: python scripts/make_sample_data.py ../shared/data/dsb2018
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

DEST = Path("napari_cellseg/sample_data/dsb2018_mini")


def smallest(folder: Path, n: int, class_file: str) -> list[Path]:
    dirs = [d for d in sorted(folder.iterdir()) if (d / class_file).exists()]
    return sorted(dirs, key=lambda d: sum(f.stat().st_size for f in d.iterdir()))[:n]


def main(src: Path) -> None:
    shutil.rmtree(DEST, ignore_errors=True)
    for split, counts in (("train", {"class1.tif": 10, "class2.tif": 2}), ("val", {"class1.tif": 3, "class2.tif": 1})):
        for class_file, n in counts.items():
            for d in smallest(src / split, n, class_file):
                shutil.copytree(d, DEST / split / d.name)
    mapping = json.loads((src / "test_image_name_to_ids.json").read_text())
    test = sorted(mapping, key=lambda e: (src / "test_release" / e["file_name"]).stat().st_size)[:4]
    (DEST / "test_release").mkdir(parents=True)
    for entry in test:
        shutil.copy(src / "test_release" / entry["file_name"], DEST / "test_release")
    (DEST / "test_image_name_to_ids.json").write_text(json.dumps(sorted(test, key=lambda e: e["id"]), indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
