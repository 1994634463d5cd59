"""Count what the fetched real sets hold, through the project's own loaders, into ``docs/results/real_data_sets.json``.

For each set found under ``--root`` (layout in ``tests/real_data/conftest.py``): where it was fetched from,
its counts per split, class and task after the project's default patient-level split (``data.split_seed``
0), the file-name patterns seen, and set-specific checks (Kermany: person numbers that occur in both official
folders; mini-MIAS: the converter's summary). ``docs/real-data.md`` quotes this file through
:mod:`benchmarks.real_data.report`.

Usage::

    python -m benchmarks.real_data.sets --root /work/data [--mias-manifest /work/data/mini-mias-512/manifest.csv]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks.real_data.mini_mias import summary
from mtmedformer.atomic import atomic_write_json
from mtmedformer.config import load_config
from mtmedformer.data.sources import describe_records, load_records

REPO_ROOT = Path(__file__).resolve().parents[2]

# Where each set was fetched from (public GitHub snapshots, see docs/real-data.md), and its licence as stated.
SOURCES: dict[str, dict[str, str]] = {
    "mini_mias": {
        "repository": "theidentity/MammogramVisualization",
        "commit": "a2e6552222e9e311eb172167482761effe1fc049",
        "path": "data/pgm (Info.txt, Licence.txt, mdb001-mdb322.pgm)",
        "licence": "MIAS MiniMammographic Database licence (Licence.txt in the set): research use only, "
        "modification allowed, no renting/leasing/selling, cite Suckling et al. 1994",
    },
    "kermany": {
        "repository": "waliatushar/ai-pneumonia-detection",
        "commit": "362d6d1be840461d0f26253972ec86bbc8533772",
        "path": "dataset/{train,test}/{NORMAL,PNEUMONIA}",
        "licence": "the snapshot states none; the original (Kermany, Zhang, Goldbaum, Mendeley Data "
        "10.17632/rscbjbr9sj.2) is published under CC BY 4.0",
    },
}


def _pattern(name: str) -> str:
    return re.sub(r"\d+", "N", name)


def kermany(root: Path) -> dict:
    """Counts of the Kermany folders as published, read by ``data.source: kermany`` with the defaults."""
    cfg = load_config(None, ["data.source=kermany", f"data.path={root}", "data.classes=[normal,pneumonia]"])
    records = load_records(cfg.data)
    by_folder = Counter((r.extra["official_split"], r.label) for r in records)
    number = {}
    for record in records:
        number.setdefault(record.extra["official_split"], set()).add(record.patient_id.split("/", 1)[1])
    return {
        "source": SOURCES["kermany"],
        "official_folders": {f"{s}/{label}": n for (s, label), n in sorted(by_folder.items())},
        "file_name_patterns": dict(Counter(_pattern(r.image.name) for r in records).most_common()),
        "numbers_in_both_official_folders": len(number.get("train", set()) & number.get("test", set())),
        "image_sizes": dict(Counter(_size(r.image) for r in records[::50]).most_common(3)),
        "splits": describe_records(records),
    }


def _size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return f"{image.width}x{image.height} {image.mode}"


def mini_mias(manifest: Path) -> dict:
    """Counts of the converted mini-MIAS manifest, read by ``data.source: manifest``."""
    cfg = load_config(None, ["data.source=manifest", f"data.path={manifest}"])
    records = load_records(cfg.data)
    return {
        "source": SOURCES["mini_mias"],
        "manifest": str(manifest),
        "converted": summary(manifest),
        "image_sizes": dict(Counter(_size(r.image) for r in records[::20]).most_common(3)),
        "splits": describe_records(records),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Count every set present; write the JSON; print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding the fetched sets")
    parser.add_argument("--mias-manifest", type=Path, help="converted mini-MIAS manifest (default: under --root)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results" / "real_data_sets.json")
    args = parser.parse_args(argv)
    sets: dict[str, dict] = {}
    manifest = args.mias_manifest or args.root / "mini-mias-512" / "manifest.csv"
    if manifest.is_file():
        sets["mini_mias"] = mini_mias(manifest)
    if (args.root / "kermany").is_dir():
        sets["kermany"] = kermany(args.root / "kermany")
    sets["rsna"] = {"source": None, "note": "no public snapshot with the stage-2 DICOMs was found"}
    atomic_write_json(args.out, sets)
    print(json.dumps(sets, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
